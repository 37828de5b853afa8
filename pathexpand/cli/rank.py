"""``pathexpand rank``: rank a model's path terms by a data-free metric of their weights."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import DEFAULT_MODEL, app, console, fail, load_model, print_json

__all__ = ["rank"]

_EXAMPLES = f"""
Examples:

  pathexpand rank                                   # {DEFAULT_MODEL}, logit terms by ‖W‖_F

  pathexpand rank --metric copying --top 5          # Re Σλ/Σ|λ| of each full OV circuit

  pathexpand rank --scores L1H0 --metric spectral   # the head's Q/K-composition terms

  pathexpand rank --scores L0H0 --positional        # W_pos W_QK W_posᵀ terms only

  pathexpand rank --scope residual --json           # W_OV products without W_E/W_U

  pathexpand rank MODEL --scores L1H0 --offset -1   # rotary model: W_Q R̃_Δ W_Kᵀ at Δ = j − i = −1
"""

# beyond this many logit terms the expansion is cut at depth 2 unless --max-depth says otherwise
_AUTO_DEPTH_ABOVE = 20_000


@app.command("rank", epilog=_EXAMPLES)
def rank(
    model: Annotated[str | None, typer.Argument(
        help=f"Bundled model name or weights file (.safetensors/.npz); default {DEFAULT_MODEL}.")] = None,
    metric: Annotated[str, typer.Option(help="frobenius, spectral or copying.")] = "frobenius",
    scope: Annotated[str, typer.Option(
        help="full (W_E … W_U) or residual (W_OV products only).")] = "full",
    scores: Annotated[str | None, typer.Option(
        help="Rank this head's attention-score terms (e.g. L1H0) instead of the logit terms.")] = None,
    top: Annotated[int, typer.Option(help="Show the K highest-ranked terms (0: all).")] = 10,
    max_depth: Annotated[int | None, typer.Option(
        help="Cut paths deeper than this into a remainder (automatic, 2, for very large models).")] = None,
    positional: Annotated[bool, typer.Option(
        help="Only terms whose sources are all `pos` (positional structure, e.g. previous-token).")] = False,
    baseline: Annotated[str | None, typer.Option(
        help="random: add each term's null (Gaussian weights of equal norms) and value/null.")] = None,
    offset: Annotated[int | None, typer.Option(
        help="Rotary models, with --scores: the key's position minus the query's (−1: the previous "
             "token); the score terms are W_Q R̃_Δ W_Kᵀ at that offset.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Write JSON instead of a table.")] = False,
) -> None:
    """Rank MODEL's path terms by a data-free metric of their virtual weight matrices."""
    if top < 0:
        fail(f"--top must be >= 0, got {top}")
    if max_depth is not None and max_depth < 0:
        fail(f"--max-depth must be >= 0, got {max_depth}")
    from ..numeric.evaluate import METRICS

    if metric not in METRICS:
        fail(f"--metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if scope not in ("full", "residual"):
        fail(f"--scope must be full or residual; got {scope!r}")
    if baseline not in (None, "random"):
        fail(f"--baseline must be random (or omitted); got {baseline!r}")
    ranking = _ranking(model, metric, scope, scores, max_depth, positional, baseline, offset,
                       progress=not as_json)
    shown = ranking[:top] if top else ranking
    if as_json:
        import json

        doc = json.loads(ranking.to_json())
        doc.update(model=model or DEFAULT_MODEL, metric=metric, scope=scope, head=scores, offset=offset,
                   n_terms=len(ranking), rows=doc["rows"][: top or None])
        print_json(doc)
        return
    out = console()
    out.print(shown.rich_table(width=out.width))
    if top and len(ranking) > top:
        out.print(f"[dim]{top} of {len(ranking)} terms shown; --top 0 for all[/dim]")


def _ranking(model, metric, scope, head, max_depth, positional, baseline, offset=None, *, progress: bool):
    from ..architecture import Architecture
    from ..numeric.evaluate import evaluate
    from ..symbolic import expand_logits, expand_scores

    weights = load_model(model)
    arch = Architecture.from_weights(weights)
    rotary = weights.config.positional == "rotary"
    if offset is not None and not (rotary and head is not None):
        fail("--offset is for the score terms (--scores HEAD) of a rotary model; "
             f"this {'ranking has no score terms' if rotary else f'model has positional={weights.config.positional!r}'}")
    if rotary and head is not None and offset is None:
        arch.check_head(head)
        fail(f"{head} reads rotated queries and keys: its score terms depend on "
             "the offset between key and query; pass --offset (e.g. --offset -1 for the previous token)")
    if rotary and positional:
        fail("--positional picks W_pos terms; a rotary model has no W_pos (positions rotate queries and keys)")
    if head is not None:
        arch.check_head(head)
        exp = expand_scores(arch, head, max_depth=max_depth)
    else:
        exp = expand_logits(arch, max_depth=max_depth)
    if max_depth is None and exp.n_terms > _AUTO_DEPTH_ABOVE:
        exp = (expand_scores(arch, head, max_depth=2) if head else expand_logits(arch, max_depth=2))
    from rich.console import Console

    show = progress and Console(stderr=True).is_terminal
    ranking = evaluate(exp, weights, metric, scope=scope, positional=positional, baseline=baseline,
                       offset=offset, progress=show)
    name = weights.name or model or DEFAULT_MODEL
    ranking.title = f"{ranking.title.split(' — ')[0]} — {name}"
    return ranking
