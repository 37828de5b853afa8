"""Rendering: printers for derivations (LaTeX, Markdown, MathML, text), diagrams, plots, the
HTML report and its interactive views (``attention_view``, ``prompt_view``, ``path_graph_view``).

The printers are light (sympy only) and imported here; the diagram and plot modules need
graphviz/matplotlib and are imported on first use of their names (module ``__getattr__``),
so ``import pathexpand.render`` loads neither.
"""

from __future__ import annotations

import importlib

from .latex import PathLatexPrinter, to_latex
from .markdown import to_markdown
from .mathml import PathMathMLPrinter, to_mathml
from .text import PathTextPrinter, to_text

__all__ = [
    "PathLatexPrinter",
    "PathMathMLPrinter",
    "PathTextPrinter",
    "to_latex",
    "to_markdown",
    "to_mathml",
    "to_text",
]

# heavy renderers (graphviz, matplotlib): public name -> module, imported on first access
_LAZY: dict[str, str] = {
    "diagram": ".dot",
    "report": ".html",
    "attention_view": ".interactive",
    "prompt_view": ".interactive",
    "path_graph_view": ".interactive",
    **{
        name: ".plots"
        for name in (
            "composition_heatmaps",
            "eigenvalue_plot",
            "ov_eigenvalues",
            "attention_patterns",
            "head_scores_heatmap",
            "ranking_bars",
            "order_importance_curve",
        )
    },
}
_SUBMODULES = ("dot", "plots", "html", "interactive")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pathexpand.render' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_LAZY) | set(_SUBMODULES))
