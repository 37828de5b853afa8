"""The one input rule for tokens: text, ids (list, numpy, torch) or a ``.npy`` file of ids.

``as_tokens(weights, tokens)`` gives ids ``[batch, pos]`` (a single prompt gains a batch axis)
for every function that reads tokens (``forward``, ``attribute``, ``top_k_paths``, ...):

- a ``str`` (or a list of equal-length ``str``) is text, encoded by ``weights.tokenizer``;
- a ``pathlib.Path`` (any ``os.PathLike``) is a ``.npy`` file of integer ids, memory-mapped and
  never unpickled: work that streams in batches reads one batch of it at a time;
- anything else is ids: a list, a numpy array or a torch tensor of integers.

Range checks (``0 ≤ id < d_vocab``, ``pos ≤ n_ctx``) run per batch in ``to_tensor``, so a
memory-mapped file is not read whole just to be checked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PathexpandError, check_int

__all__ = ["as_tokens", "batches", "load_token_file", "to_tensor", "torch_device"]


def as_tokens(weights, tokens: Any) -> np.ndarray:
    """Token ids ``[batch, pos]`` (int64, or a read-only memory map for a token file)."""
    if isinstance(tokens, os.PathLike):
        a = load_token_file(tokens)
    elif isinstance(tokens, str) and tokens.lower().endswith(".npy") and Path(tokens).is_file():
        raise PathexpandError(
            f"{tokens!r} is a string, which is text; it names a .npy file: pass "
            f"pathlib.Path({tokens!r}) to read token ids from it"
        )
    elif isinstance(tokens, str) or (
        isinstance(tokens, (list, tuple)) and tokens and all(isinstance(t, str) for t in tokens)
    ):
        a = _encode(weights, [tokens] if isinstance(tokens, str) else list(tokens))
    else:
        a = _ids(tokens)
    return _batch_shape(a)


def _encode(weights, texts: list[str]) -> np.ndarray:
    tok = getattr(weights, "tokenizer", None)
    if tok is None:
        raise PathexpandError(
            "tokens were given as text but this model has no tokenizer; pass token ids "
            "(a list of ints, an array, or a pathlib.Path to a .npy file)"
        )
    ids = [tok.encode(t) for t in texts]
    if len({len(i) for i in ids}) != 1:
        raise PathexpandError(
            f"texts encode to different lengths {[len(i) for i in ids]}; a batch needs equal lengths"
        )
    if not ids[0]:
        raise PathexpandError("the text is empty; give at least one token")
    return np.asarray(ids, dtype=np.int64)


def _ids(tokens) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(tokens, torch.Tensor):
        t = tokens.detach()
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise PathexpandError(f"tokens must be integer ids, got a tensor of dtype {t.dtype}")
        return t.cpu().numpy().astype(np.int64)
    try:
        a = tokens if isinstance(tokens, np.memmap) else np.asarray(tokens)
    except (ValueError, TypeError):
        raise PathexpandError(f"tokens must be a rectangular array of integer ids, got {_short(tokens)}") from None
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        if a.size == 0 and a.dtype == np.float64:      # [] reads as float64: say it is empty
            return a.astype(np.int64)
        raise PathexpandError(f"tokens must be integer ids, got dtype {a.dtype}: {_short(a)}")
    return a if isinstance(a, np.memmap) else a.astype(np.int64)


def _batch_shape(a: np.ndarray) -> np.ndarray:
    """``a`` as ``[batch, pos]`` (a single prompt ``[pos]`` gains a batch axis), non-empty."""
    shape = list(a.shape)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise PathexpandError(f"tokens must be [pos] or [batch, pos], got shape {shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise PathexpandError(f"tokens must hold at least one token, got shape {shape}")
    return a


def load_token_file(path) -> np.ndarray:
    """Token ids ``[batch, pos]`` or ``[pos]`` from a ``.npy`` file, memory-mapped, never unpickled."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise PathexpandError(f"a token file must be a .npy array of integer ids, got {str(path)!r}")
    if not path.is_file():
        raise PathexpandError(f"token file {str(path)!r} does not exist")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PathexpandError(f"{str(path)!r} is not a readable .npy array of token ids: {exc}") from None
    if not isinstance(a, np.ndarray) or a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise PathexpandError(
            f"token file {str(path)!r} must hold integer ids, got dtype {getattr(a, 'dtype', type(a))}"
        )
    return a


def to_tensor(ids, config, device=None):
    """Checked ids ``[batch, pos]`` as an int64 torch tensor on ``device``: every id in
    ``[0, d_vocab)``, at most ``n_ctx`` positions."""
    import torch

    t = torch.as_tensor(np.ascontiguousarray(ids, dtype=np.int64), device=torch_device(device))
    n = t.shape[1]
    if n > config.n_ctx:
        raise PathexpandError(f"{n} tokens is longer than the model's context n_ctx={config.n_ctx}")
    bad = (t < 0) | (t >= config.d_vocab)
    if bool(bad.any()):
        raise PathexpandError(
            f"token id {int(t[bad][0])} is out of range; ids must be in [0, {config.d_vocab})"
        )
    return t


def torch_device(device):
    """``device`` (None: the CPU) as a ``torch.device`` this machine has, else a
    ``PathexpandError`` naming what is available."""
    import torch

    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PathexpandError(f"device must be like 'cpu' or 'cuda:0', got {device!r}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            have = "no CUDA device" if n == 0 else f"CUDA devices 0..{n - 1}"
            raise PathexpandError(f"device {device!r} is not available here ({have}); use 'cpu'")
    elif dev.type not in ("cpu", "mps", "xpu", "meta"):
        raise PathexpandError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return dev


def batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` covering ``range(n)`` in steps of ``batch_size`` (None: one batch)."""
    step = n if batch_size is None else check_int("batch_size", batch_size, 1)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _short(a) -> str:
    try:
        flat = np.ravel(np.asarray(a, dtype=object))
    except (ValueError, TypeError):
        text = repr(a)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"{flat[:6].tolist()}{' ...' if flat.size > 6 else ''}"
