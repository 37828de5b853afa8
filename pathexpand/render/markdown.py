"""Markdown for path expansions: headings, prose, and ``$$`` math blocks (MathJax/KaTeX).

The math is the LaTeX printer's, in ``aligned`` environments (what MathJax and KaTeX
support); prose stays Unicode.
"""

from __future__ import annotations

from ..symbolic.derivation import Step
from ..symbolic.expansion import Expansion, Selection
from .latex import PathLatexPrinter, latex_rows
from .notation import expansion_steps, make_printer, markdown_prose, selection_lines

__all__ = ["to_markdown"]


def _math_block(printer: PathLatexPrinter, expr) -> list[str]:
    rows = latex_rows(printer, expr)
    return ["$$", r"\begin{aligned}", " \\\\\n".join(rows), r"\end{aligned}", "$$"]


def _steps(steps: list[Step], printer: PathLatexPrinter, title: str, level: int) -> str:
    h = "#" * level
    out = [f"{h} {title}", ""]
    for i, step in enumerate(steps, 1):
        out += [f"{h}# {i}. {markdown_prose(step.title)}", ""]
        if step.text:
            out += [markdown_prose(step.text), ""]
        out += _math_block(printer, step.expr) + [""]
    return "\n".join(out)


def to_markdown(obj, *, heading_level: int = 2, **settings) -> str:
    """Markdown of an ``Expansion`` (its derivation), a ``Selection``, a term or an expression.

    ``heading_level`` is the level of the title heading (steps one deeper); other settings
    go to the LaTeX printer (``summarize_above``, ``form``).
    """
    printer = make_printer(PathLatexPrinter, {**settings, "text": "mathjax"})
    if isinstance(obj, Expansion):
        steps, title = expansion_steps(obj, printer)
        return _steps(steps, printer, title, heading_level)
    if isinstance(obj, Selection):
        return "\n".join(_math_block(printer, selection_lines(obj, printer))) + "\n"
    if isinstance(obj, Step):
        return _steps([obj], printer, obj.title, heading_level)
    return f"${printer.doprint(obj)}$"
