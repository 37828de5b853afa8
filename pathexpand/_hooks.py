"""The one late-bound link from a layer to a layer on its right, set by the package root.

Every public function that takes a model takes the same things — ``Weights``, a bundled name,
a weights file, a TransformerLens or Hugging Face model — through one conversion, ``pe.load``.
``pe.load`` lives in ``pathexpand.models``, to the right of ``numeric``; so numeric code never
imports it and calls ``load_model`` instead, which the package root (``pathexpand/__init__``,
the one module that wires the layers together) points at ``pathexpand.models.load``. Nothing
else here; stdlib only, so ``import pathexpand`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["load_model", "set_loader"]

_loader: Callable[[Any], Any] | None = None


def set_loader(loader: Callable[[Any], Any]) -> None:
    """Called once by the package root with a function that imports and calls ``pe.load``."""
    global _loader
    _loader = loader


def load_model(source: Any) -> Any:
    """``pe.load(source)`` (``Weights`` from a name, file or model object)."""
    if _loader is None:  # pragma: no cover - the root always sets it before any submodule runs
        raise RuntimeError("pathexpand's loader is not set; import pathexpand first")
    return _loader(source)
