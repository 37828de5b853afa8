"""``pathexpand diagram``: draw a model's circuit (a term, the top terms, a prompt's top paths).

With no option: the model's most important circuit — for a model with two or more layers of
heads, the induction circuit found from K-composition scores (the earlier head whose output
the later head's key reads most), else the top terms by ``evaluate``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ._app import DEFAULT_MODEL, app, fail, load_model

__all__ = ["diagram", "default_circuit", "has_composition", "induction_circuit"]

_EXAMPLES = f"""
Examples:

  pathexpand diagram -o circuit.svg   (induction circuit of {DEFAULT_MODEL})

  pathexpand diagram --term 'L1H0∘L0H1' -o virtual.png

  pathexpand diagram --top 5 -o top.pdf   (strongest terms by ‖W‖_F)

  pathexpand diagram --scores L1H0 --top 4 -o scores.svg

  pathexpand diagram --text 'def f(x): return x' -o prompt.svg
"""

_MAX_LOGIT_TERMS = 20_000


@contextmanager
def _status(message: str):
    """A spinner on stderr while long work runs (silent when stderr is not a terminal)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


@app.command("diagram", epilog=_EXAMPLES)
def diagram(
    model: Annotated[str | None, typer.Argument(
        help=f"Bundled model name or weights file (.safetensors/.npz); default {DEFAULT_MODEL}.")
    ] = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Output file; the format comes from the suffix: .svg .png .pdf .dot")
    ] = Path("circuit.svg"),
    term: Annotated[str | None, typer.Option(
        help="Draw one term by name: 'L1H0∘L0H1', 'pos:L0H2', "
             "or with --scores 'q:direct · k:L0H0'.")
    ] = None,
    top: Annotated[int | None, typer.Option(
        help="Draw the K strongest terms (by ‖W‖_F), or with --text the K strongest paths.")
    ] = None,
    text: Annotated[str | None, typer.Option(
        help="Attribute this prompt and draw its strongest paths (default 5).")] = None,
    target: Annotated[str | None, typer.Option(
        help="With --text: the token whose logit is explained (default: the model's prediction).")
    ] = None,
    scores: Annotated[str | None, typer.Option(
        help="Terms of this head's attention score (e.g. L1H0) instead of the logits.")] = None,
    layout: Annotated[str, typer.Option(help="layers (bottom to top) or left-right.")] = "layers",
    max_edges: Annotated[int, typer.Option(
        help="Besides the highlighted terms, draw this many of the strongest other reads, faded.")
    ] = 8,
) -> None:
    """Draw a circuit diagram of MODEL with Graphviz: a term, the top terms, a prompt's paths."""
    from ..render.dot import LAYOUTS, check_writable, write

    path = check_writable(output)  # before any heavy work: fail fast, write nothing
    if term is not None and (top is not None or text is not None):
        fail("--term draws one term; do not combine it with --top or --text")
    if text is not None and scores is not None:
        fail("--scores with --text is not supported; draw the prompt's logit paths (--text) "
             "or a head's score terms (--scores with --term or --top)")
    if target is not None and text is None:
        fail("--target goes with --text (the prompt whose logit it explains)")
    if top is not None and top < 1:
        fail(f"--top must be a positive number of terms, got {top}")
    if max_edges < 0:
        fail(f"--max-edges must be >= 0, got {max_edges}")
    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    with _status("loading the model"):
        weights = load_model(model)
    from ..architecture import Architecture

    arch = Architecture.from_weights(weights)
    if scores is not None:
        arch.check_head(scores)
    name = weights.name or (model or DEFAULT_MODEL)
    if text is not None:
        graph, highlight, title = _attribution(weights, text, target, top or 5, name)
    elif term is not None:
        graph, highlight, title = _one_term(weights, arch, term, scores, name)
    elif top is not None or scores is not None:
        graph, highlight, title = _top_terms(weights, arch, top or 5, scores, name)
    else:
        graph, highlight, title = default_circuit(weights, arch, name)
    from ..render.dot import diagram as draw

    with _status(f"drawing {path.name}"):
        dig = draw(graph, highlight=highlight, layout=layout, max_edges=max_edges, title=title)
        write(dig, path)
    typer.echo(f"wrote {path} ({title})")


def has_composition(arch) -> bool:
    """Heads in at least two layers: some head can read another's output."""
    return sum(1 for h in arch.n_heads if h) >= 2


def default_circuit(weights, arch, model: str):
    """``(graph, highlight, title)`` drawn when nothing is asked for: the induction circuit,
    or the top 5 terms of a model with heads in fewer than two layers."""
    if has_composition(arch):
        return induction_circuit(weights, arch, model)
    return _top_terms(weights, arch, 5, None, model)


def _one_term(weights, arch, name: str, head: str | None, model: str):
    from ..graph import path_graph
    from ..symbolic import expand_logits, expand_scores

    exp = expand_scores(arch, head) if head else expand_logits(arch)
    term = exp[name]  # UnknownHeadError (exit 2) names what exists
    composition = _composition(weights, arch)
    graph = path_graph(weights, composition=composition)
    where = f"{head} score term" if head else "term"
    return graph, [term], f"{model}: {where} {term.name}"


def _composition(weights, arch):
    if not has_composition(arch):
        return None
    from ..numeric.composition import composition_scores

    with _status("computing composition scores"):
        return composition_scores(weights)


def _top_terms(weights, arch, k: int, head: str | None, model: str):
    from ..graph import path_graph
    from ..numeric.evaluate import evaluate
    from ..symbolic import expand_logits, expand_scores

    if head:
        exp = expand_scores(arch, head)
    else:
        exp = expand_logits(arch)
        for depth in (2, 1):  # a big model: rank the shallow terms (the rest is the remainder)
            if len(exp) > _MAX_LOGIT_TERMS:
                exp = expand_logits(arch, max_depth=depth)
    with _status(f"evaluating {len(exp):,} terms"):
        ranking = evaluate(exp, weights, metric="frobenius")
    best = [r for r in ranking.top(len(ranking)) if r.name != "remainder"][:k]
    terms = [exp[r.name] for r in best]
    rows = [dict(r.to_dict(), head=head) if head else r for r in ranking if r.name != "remainder"]
    graph = path_graph(weights, ranking=rows)
    what = f"{head}'s score terms" if head else "terms"
    return graph, terms, f"{model}: top {len(terms)} {what} by ‖W‖_F"


def _attribution(weights, text: str, target, k: int, model: str):
    from ..graph import path_graph
    from ..numeric.attribute import attribute
    from ..numeric.topk import top_k_paths

    with _status("attributing the prompt"):
        res = attribute(weights, text, target=target, views=("node", "edge"))
        best = top_k_paths(weights, text, target=target, k=k)
    graph = path_graph(weights, attribution=res)
    return graph, list(best.paths), f"{model}: top {len(best.paths)} paths of {res.target_label}"


def induction_circuit(weights, arch=None, model: str | None = None):
    """``(graph, highlight, title)`` of the induction circuit found from K-composition.

    The ordered pair of heads (earlier layer → later layer) with the largest K-composition
    score: the earlier head is the previous-token head, the later the induction head.
    Highlighted: the key side (token → previous-token head → induction head's key), the
    query side (token → induction head's query), the induction head's OV path to the logits,
    and, with positions, the previous-token head's positional QK term.
    """
    import numpy as np

    from ..architecture import Architecture
    from ..graph import path_graph
    from ..names import head_name
    from ..render.dot import induction_highlight

    arch = arch or Architecture.from_weights(weights)
    cs = _composition(weights, arch)
    if cs is None:
        from ..errors import PathexpandError

        raise PathexpandError("an induction circuit needs heads in two layers")
    k = np.where(cs.mask, cs["k"], -np.inf)
    l1, h1, l2, h2 = (int(i) for i in np.unravel_index(np.argmax(k), k.shape))
    prev, ind = head_name(l1, h1), head_name(l2, h2)
    highlight = induction_highlight(arch, prev, ind)
    graph = path_graph(weights, composition=cs)
    title = (f"{model + ': ' if model else ''}induction circuit {prev} → {ind} "
             f"(K-composition {float(cs['k'][l1, h1, l2, h2]):.2f})")
    return graph, highlight, title
