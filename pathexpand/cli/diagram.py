"""``pathexpand diagram``: draw a model's circuit (a term, the top terms, a prompt's top paths).

With no option: ``render.dot.default_circuit`` — the induction circuit ``pe.induction_circuit``
names (the same one the report and the demo draw), or the top terms by ``evaluate`` with a
title saying that no induction circuit was found.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ._app import DEFAULT_MODEL, app, fail, load_model, prompt, read_text, read_tokens

__all__ = ["diagram"]

_EXAMPLES = f"""
Examples:

  pathexpand diagram -o circuit.svg   (induction circuit of {DEFAULT_MODEL})

  pathexpand diagram --term 'L1H0∘L0H1' -o virtual.png

  pathexpand diagram --top 5 -o top.pdf   (strongest terms by ‖W‖_F)

  pathexpand diagram --scores L1H0 --top 4 -o scores.svg

  pathexpand diagram --text 'def f(x): return x' -o prompt.svg
"""

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
        help="Draw one term by name: 'L1H0∘L0H1' (or 'L1H0@L0H1'), 'pos:L0H2', "
             "or with --scores 'q:direct · k:L0H0'.")
    ] = None,
    top: Annotated[int | None, typer.Option(
        help="Draw the K strongest terms (by ‖W‖_F), or with --text the K strongest paths.")
    ] = None,
    text: Annotated[str | None, typer.Option(
        help="Attribute this prompt and draw its strongest paths (default 5); \\n, \\t, \\\\ "
             "read as newline, tab, backslash.", callback=read_text)] = None,
    tokens: Annotated[str | None, typer.Option(
        help="The prompt as comma-separated token ids instead of --text.")] = None,
    target: Annotated[str | None, typer.Option(
        help="With --text: the token whose logit is explained (default: the model's prediction).",
        callback=read_text)] = None,
    scores: Annotated[str | None, typer.Option(
        help="Terms of this head's attention score (e.g. L1H0) instead of the logits.")] = None,
    layout: Annotated[str, typer.Option(help="layers (bottom to top) or left-right.")] = "layers",
    max_edges: Annotated[int, typer.Option(
        help="Besides the highlighted terms, draw this many of the strongest other reads, faded "
             "(default none).")
    ] = 0,
) -> None:
    """Draw a circuit diagram of MODEL with Graphviz: a term, the top terms, a prompt's paths."""
    from ..render.dot import LAYOUTS, check_writable, write

    path = check_writable(output)  # before any heavy work: fail fast, write nothing
    ids = read_tokens(tokens)
    given = text is not None or ids is not None
    if term is not None and (top is not None or given):
        fail("--term draws one term; do not combine it with --top, --text or --tokens")
    if given and scores is not None:
        fail("--scores with --text is not supported; draw the prompt's logit paths (--text) "
             "or a head's score terms (--scores with --term or --top)")
    if target is not None and not given:
        fail("--target goes with --text or --tokens (the prompt whose logit it explains)")
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
    if given:
        sample = prompt(weights, text, ids)
        if target is not None and weights.tokenizer is None:
            try:
                target = int(target)
            except ValueError:
                fail(f"this model has no tokenizer: give --target as an integer id, got {target!r}")
        graph, highlight, title = _attribution(weights, sample, target, top or 5, name)
    elif term is not None:
        graph, highlight, title = _one_term(weights, arch, term, scores, name)
    elif top is not None or scores is not None:
        from ..render.dot import top_terms

        with _status("evaluating terms"):
            graph, highlight, title = top_terms(weights, top or 5, scores)
        title = f"{name}: {title}"
    else:
        from ..render.dot import default_circuit

        with _status("finding the induction circuit"):
            graph, highlight, title, _ = default_circuit(weights)
        title = f"{name}: {title}"
    from ..render.dot import diagram as draw

    with _status(f"drawing {path.name}"):
        dig = draw(graph, highlight=highlight, layout=layout, max_edges=max_edges, title=title)
        write(dig, path)
    typer.echo(f"wrote {path} ({title})")


def _one_term(weights, arch, name: str, head: str | None, model: str):
    from ..graph import path_graph
    from ..numeric.composition import composition_scores
    from ..symbolic import expand_logits, expand_scores

    exp = expand_scores(arch, head) if head else expand_logits(arch)
    term = exp[name]  # UnknownHeadError (exit 2) names what exists
    composition = None
    if sum(1 for h in arch.n_heads if h) >= 2:
        with _status("computing composition scores"):
            composition = composition_scores(weights)
    graph = path_graph(weights, ranking=composition)
    where = f"{head} score term" if head else "term"
    return graph, [term], f"{model}: {where} {term.name}"


def _attribution(weights, text: str, target, k: int, model: str):
    from ..graph import path_graph
    from ..numeric.attribute import attribute
    from ..numeric.topk import top_k_paths

    with _status("attributing the prompt"):
        res = attribute(weights, text, target=target, views=("node", "edge"))
        best = top_k_paths(weights, text, target=target, k=k)
    graph = path_graph(weights, ranking=res)
    what = (f"top {len(best.paths)} paths" if best.certified
            else f"largest {len(best.paths)} paths found (not certified: search stopped)")
    return graph, list(best.paths), f"{model}: {what} of {res.target_label}"
