"""``pathexpand report``: one self-contained HTML page about a model (``pe.render.report``)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

import typer

from ._app import DEFAULT_MODEL, app, load_model, prompt, read_text, read_tokens

__all__ = ["report"]

_EXAMPLES = f"""
Examples:

  pathexpand report -o report.html   ({DEFAULT_MODEL}, the default model)

  pathexpand report attn-only-1l -o one-layer.html

  pathexpand report --text 'def add(a, b): return add(a, b)' -o report.html

  pathexpand report --sections summary,interactive -o views.html

Open the file in any browser; it needs no server and no network.
"""


@app.command("report", epilog=_EXAMPLES)
def report(
    model: Annotated[str | None, typer.Argument(
        help=f"Bundled model name or weights file (.safetensors/.npz); default {DEFAULT_MODEL}.")] = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The HTML file to write (written whole or not at all).")
    ] = Path("report.html"),
    text: Annotated[str | None, typer.Option(
        help="Sample text for the attribution sections (\\n, \\t, \\\\ read as newline, tab, "
             "backslash); default: a repeated Python snippet.", callback=read_text)] = None,
    tokens: Annotated[str | None, typer.Option(
        help="The sample as comma-separated token ids instead of --text.")] = None,
    sections: Annotated[str | None, typer.Option(
        help="Comma-separated section ids to include (default all): summary, card, derivation, "
             "diagram, terms, heads, composition, eigenvalues, attribution, interactive, order.")] = None,
) -> None:
    """Write one self-contained HTML report of MODEL: summary, card, derivation, circuit, rankings,
    heads, interactive views."""
    from ..render.html import check_output
    from ..render.html import report as make_report
    from ..render.interactive import CIRCUITSVIS_MISSING

    path = check_output(output)  # before any work: fail fast, write nothing
    chosen = None if sections is None else [s.strip() for s in sections.split(",") if s.strip()]
    weights = load_model(model)
    sample = prompt(weights, text, read_tokens(tokens))
    page = make_report(weights, text=sample, path=path, progress=True, sections=chosen)
    size = len(page.encode("utf-8"))
    missing = ("; without CircuitsVis: no attention heatmaps or prompt colours"
               if html.escape(CIRCUITSVIS_MISSING) in page else "")
    typer.echo(f"wrote {path} ({size / 1024:.0f} KiB, model {weights.name or model or DEFAULT_MODEL}{missing})")
