"""One self-contained HTML report of a model: summary, card, derivation, circuit, rankings, views.

``report(weights, *, text=None, path=None)`` returns one HTML page (and writes it, atomically,
when ``path`` is given) that needs nothing but a browser: CSS inline, the derivation in
MathML (drawn by the browser itself), the circuit diagrams and every plot as inline SVG with
text as paths, and the interactive views' scripts inline (the CircuitsVis bundle once, from
the installed package) — no font, no request of any kind, and a Content-Security-Policy of
``default-src 'none'`` tells the browser so. Sections, in order (``report_sections.SECTIONS``):

0. a one-screen summary: the model in one line, the circuit found (or "none found"), the
   top terms, the detected heads;
1. the model card (architecture, config, how it was trained; the full record folded);
2. the derivation of the logits and of the strongest induction head's scores, in MathML
   (folded: the full listing of every term);
3. the circuit diagram (``render.dot.diagram``), the induction circuit highlighted;
4. ranked terms (``evaluate``: Frobenius norm of each path's virtual weight matrix);
5. detected heads (previous-token, induction, duplicate; from activations and from weights);
6. composition scores (Q/K/V heatmaps, baseline marked) and the strongest pairs, each beside
   its baseline, those not above it marked;
7. OV eigenvalues with copying scores;
8. an attribution of a sample text: attention patterns, top paths, nodes, edges, the top
   paths as a circuit, and why the induction head attends where it does;
9. interactive views (``render.interactive``): attention per head with hover, the prompt
   coloured by a path's contribution, the top paths as a clickable graph;
10. term importance by order (loss keeping paths up to depth n).

A section that does not apply to a model (a 1-layer model has no composition) says why in
one line instead of failing the report; without CircuitsVis installed the attention and
prompt views are such a line. All text is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .._files import check_output_path, write_atomic
from ..errors import PathexpandError
from ..models import load
from .markup import escape, unavailable
from .report_sections import DEFAULT_TEXT, SECTIONS, Context, sample_tokens

__all__ = ["report", "DEFAULT_TEXT", "SECTIONS", "CSP"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""The page's Content-Security-Policy: inline styles and data: images only, no requests."""

CSP_SCRIPTS = CSP + "; script-src 'unsafe-inline'"
"""The same with the page's own inline scripts (the interactive views): still no requests."""


def report(weights, *, text: str | None = None, path=None, progress: bool = False,
           sections: Sequence[str] | None = None) -> str:
    """One self-contained HTML page about ``weights`` (see the module docstring); returns it.

    ``weights``: ``Weights`` or anything ``pe.load`` takes (a bundled model name). ``text``
    (text, or one prompt's token ids):
    the sample for the attribution sections (default: ``DEFAULT_TEXT`` with a tokenizer, else
    repeated random tokens). ``path``: also write the page there, atomically (checked before
    any work: an ``.html`` path in an existing, writable folder). ``progress``: a progress
    bar on stderr, one step per section. ``sections``: ids from ``SECTIONS`` (default all).

    >>> page = pe.render.report("attn-only-2l", path="report.html")   # doctest: +SKIP
    """
    out = check_output(path) if path is not None else None
    chosen = _choose(sections)
    w = load(weights)
    from ..architecture import Architecture

    tokens, labels, sample_text = sample_tokens(w, text)
    ctx = Context(w, tokens, labels, sample_text, Architecture.from_weights(w))
    parts = []
    with _Steps(progress, len(chosen)) as step:
        for key, title, build in chosen:
            step(title)
            parts.append((key, title, _build(build, ctx)))
    page = _page(ctx, parts)
    if out is not None:
        write_atomic(out, page)
    return page


def _choose(sections):
    keys = [key for key, _, _ in SECTIONS]
    if sections is None:
        return list(SECTIONS)
    if isinstance(sections, str):
        sections = [sections]
    unknown = [s for s in sections if s not in keys]
    if unknown:
        raise PathexpandError(f"unknown report section(s) {unknown}; sections are {keys}")
    return [s for s in SECTIONS if s[0] in sections]


def _build(build: Callable[[Context], str], ctx: Context) -> str:
    """A section's HTML, or one line saying why it is not shown for this model."""
    try:
        return build(ctx)
    except PathexpandError as exc:
        return unavailable(f"not shown: {exc}")


# the page -----------------------------------------------------------------------------------------
def _css() -> str:
    from importlib.resources import files

    return files("pathexpand.render").joinpath("report.css").read_text(encoding="utf-8")


def _page(ctx: Context, parts: list[tuple[str, str, str]]) -> str:
    from .. import __version__
    from .interactive import VIEW_CSS, page_scripts

    name = ctx.weights.name or "weights"
    nav = "".join(f'<li><a href="#{key}">{escape(title)}</a></li>' for key, title, _ in parts)
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>' for key, title, content in parts
    )
    scripts = page_scripts(ctx.views)     # the CircuitsVis bundle at most once, after the views
    kept = ("the CircuitsVis bundle and a few lines of our own script, inline" if "CircuitsVis" in scripts
            else "a few lines of script, inline" if scripts else "no scripts")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP_SCRIPTS if scripts else CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pathexpand report: {escape(name)}</title>"
        f"<style>{_css()}{VIEW_CSS if ctx.views else ''}</style></head><body>"
        f"<header><h1>{escape(name)}</h1><p>{escape(ctx.arch)}: the model written as a sum over "
        "paths, and which paths matter.</p></header>"
        f"<nav><ol>{nav}</ol></nav><main>{body}</main>"
        f"<footer>Made by pathexpand {escape(__version__)}: <code>pathexpand report "
        f"{escape(name)}</code>. One self-contained file: {kept}; no fonts, no requests.</footer>"
        f"{scripts}</body></html>\n"
    )


# writing --------------------------------------------------------------------------------------------
def check_output(path) -> Path:
    """``path`` as a ``Path`` if it names an ``.html`` file in an existing, writable folder."""
    out = check_output_path(path, "report.html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise PathexpandError(f"the report is HTML: give a path ending in .html, got {str(path)!r}")
    return out


class _Steps:
    """A rich progress bar on stderr, one step per section (only when stderr is a terminal)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self.bar = self.task = None
        self.started = False

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=True)
        if console.is_terminal:  # a bar is for people watching; pipes and logs stay clean
            self.bar = Progress(TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console, transient=True)
            self.task = self.bar.add_task("report", total=self.total)
            self.bar.start()
        return self

    def __call__(self, title: str) -> None:
        if self.bar is None:
            return
        if self.started:
            self.bar.advance(self.task)
        self.started = True
        self.bar.update(self.task, description=title, refresh=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.advance(self.task)
            self.bar.stop()
        return False
