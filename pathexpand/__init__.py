"""pathexpand: a transformer written as a sum over paths, and which paths matter.

>>> import pathexpand as pe
>>> exp = pe.expand_logits(pe.Architecture(2, 4))     # derive (sympy, no weights)
>>> len(exp)                                          # Π_l (1 + H_l) paths from W_E, +W_pos
50

Everything heavy (torch, graphviz, matplotlib) is imported on first use of the name
that needs it, so ``import pathexpand`` stays light.
"""

from __future__ import annotations

import importlib

from . import _hooks
from .architecture import Architecture
from .errors import (
    MissingDependencyError,
    PathexpandError,
    ShapeError,
    UnknownHeadError,
    UnsupportedArchitecture,
    WeightsFileError,
)

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access, like einops backends)
_LAZY = {
    # symbolic
    "expand_logits": "pathexpand.symbolic",
    "expand_scores": "pathexpand.symbolic",
    "Expansion": "pathexpand.symbolic",
    "Term": "pathexpand.symbolic",
    "ScoreTerm": "pathexpand.symbolic",
    # graph
    "PathGraph": "pathexpand.graph",
    "path_graph": "pathexpand.graph",
    "paths": "pathexpand.graph",
    "subgraph_of": "pathexpand.graph",
    "strongest_paths": "pathexpand.graph",
    # results
    "Ranking": "pathexpand.ranking",
    # numeric
    "Config": "pathexpand.numeric.weights",
    "Weights": "pathexpand.numeric.weights",
    "forward": "pathexpand.numeric.forward",
    "run_with_cache": "pathexpand.numeric.forward",
    "Cache": "pathexpand.numeric.forward",
    "fold_layernorm": "pathexpand.numeric.folding",
    "process_weights": "pathexpand.numeric.folding",
    "Factored": "pathexpand.numeric.factored",
    "circuit": "pathexpand.numeric.circuits",
    "evaluate": "pathexpand.numeric.evaluate",
    "composition_scores": "pathexpand.numeric.composition",
    "copying_scores": "pathexpand.numeric.detect",
    "detect_heads": "pathexpand.numeric.detect",
    "induction_circuit": "pathexpand.numeric.detect",
    "attribute": "pathexpand.numeric.attribute",
    "source_contributions": "pathexpand.numeric.attribute",
    "attribute_scores": "pathexpand.numeric.attribute_scores",
    "top_k_paths": "pathexpand.numeric.topk",
    "order_importance": "pathexpand.numeric.order",
    # models
    "load": "pathexpand.models",
    "save": "pathexpand.models",
    "list_models": "pathexpand.models",
}
_SUBMODULES = ("render", "symbolic", "numeric", "models", "graph", "names", "cli")

__all__ = [
    "Architecture",
    "PathexpandError",
    "UnknownHeadError",
    "ShapeError",
    "UnsupportedArchitecture",
    "WeightsFileError",
    "MissingDependencyError",
    *_LAZY,
]


def _load_model(source):
    """``pathexpand.models.load``, imported on first use: the root wires numeric to its loader."""
    from .models import load

    return load(source)


_hooks.set_loader(_load_model)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"pathexpand.{name}")
    raise AttributeError(f"module 'pathexpand' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
