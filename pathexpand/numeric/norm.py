"""Normalization in one place: how a norm acts in the forward pass, frozen, as a circuit's
reader and writer, and when folded. Every caller (``forward``, ``frozen``, ``circuits``,
``folding``, the detectors) uses these functions; nothing else writes a norm.

``kind`` is the model's ``normalization``: ``None`` (no norm), ``"LN"`` (LayerNorm with weight
``w`` and bias ``b``), ``"RMS"`` (RMSNorm: weight ``w``, no bias, no centring), or ``"LNPre"`` /
``"RMSPre"`` (the same with ``w`` and ``b`` folded into the weights that read them).
``C = I − 11ᵀ/d_model`` centres over ``d_model`` for LayerNorm; for RMSNorm ``C = I``.

- **forward** (``apply``): ``y = C x / σ · w + b`` with ``σ = sqrt(mean((C x)²) + eps)`` per
  position (RMSNorm: ``y = x / σ · w``, ``σ = sqrt(mean(x²) + eps)``);
- **frozen** (``read``, ``read_T``): with ``σ`` recorded the norm is the linear map
  ``x ↦ C x / σ ⊙ w`` per position; its bias ``b`` is a source of its own;
- **reader** (``reader``): data-free circuits keep ``C diag(w)`` in every matrix ``W`` that reads
  the norm's output and drop the per-position ``1/σ``, which only data can give:
  ``W ↦ C diag(w) W`` (exactly what folding gives the reader);
- **writer** (``writer``): what a normalised reader sees of a matrix writing to the residual
  stream is its centred part ``W C`` (TransformerLens's ``center_writing_weights``; ``W`` for
  RMSNorm, which does not centre);
- **folding** (``fold``): ``LN(x) W + b_W = LNPre(x) (C diag(w) W) + (b W + b_W)``.

Tensors are torch; ``axis`` names the ``d_model`` axis of a weight matrix.
"""

from __future__ import annotations

import torch

from ..errors import PathexpandError
from .weights import NORMALIZATIONS as KINDS

__all__ = ["KINDS", "apply", "centres", "fold", "has_bias", "has_weight", "read", "read_T", "reader",
           "sigma", "writer"]

def _check(kind) -> None:
    if kind not in KINDS:
        raise PathexpandError(f"normalization must be one of {KINDS}, got {kind!r}")


def centres(kind) -> bool:
    """True when the norm subtracts the mean over ``d_model`` (LayerNorm does, RMSNorm not)."""
    _check(kind)
    return kind in ("LN", "LNPre")


def has_weight(kind) -> bool:
    """True when the norm multiplies by a stored weight ``w`` (``"LN"``, ``"RMS"``)."""
    _check(kind)
    return kind in ("LN", "RMS")


def has_bias(kind) -> bool:
    """True when the norm adds a stored bias ``b`` (LayerNorm only)."""
    _check(kind)
    return kind == "LN"


def _centre(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    return x - x.mean(axis, keepdim=True)


# forward -------------------------------------------------------------------------------------
def sigma(x: torch.Tensor, kind, eps: float) -> torch.Tensor:
    """The per-position scale ``σ = sqrt(mean((C x)²) + eps)``: ``[..., pos, d] → [..., pos]``."""
    _check(kind)
    return ((_centre(x) if centres(kind) else x).pow(2).mean(-1) + eps).sqrt()


def apply(x: torch.Tensor, kind, w, b, eps: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The norm in the forward pass: ``(y, σ)`` with ``y = C x / σ · w + b`` (``σ`` None, ``y = x``
    without a norm; ``LNPre``/``RMSPre`` have no ``w``, ``b``; RMSNorm no ``C``, no ``b``).
    ``x`` is ``[..., pos, d_model]``."""
    _check(kind)
    if kind is None:
        return x, None
    if centres(kind):
        x = _centre(x)
    s = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()                 # [..., pos, 1]
    y = x / s
    if has_weight(kind):
        y = y * w
    if has_bias(kind):
        y = y + b
    return y, s[..., 0]


# frozen ---------------------------------------------------------------------------------------
def read(f: torch.Tensor, kind, inv_sigma, w) -> torch.Tensor:
    """Frozen norm, bias left out: ``f_p ↦ C f_p / σ_p ⊙ w``; ``inv_sigma`` broadcasts as
    ``[..., pos, 1]``. The identity without a norm."""
    _check(kind)
    if kind is None:
        return f
    f = (_centre(f) if centres(kind) else f) * inv_sigma
    return f * w if has_weight(kind) else f


def read_T(g: torch.Tensor, kind, inv_sigma, w) -> torch.Tensor:
    """Transpose of ``read``: ``g_p ↦ C (w ⊙ g_p) / σ_p``."""
    _check(kind)
    if kind is None:
        return g
    if has_weight(kind):
        g = g * w
    return (_centre(g) if centres(kind) else g) * inv_sigma


# circuits ---------------------------------------------------------------------------------------
def reader(W: torch.Tensor, kind, w=None, *, axis: int = -2) -> torch.Tensor:
    """A matrix that reads the norm's output, as a data-free circuit sees it: ``C diag(w) W``
    (``C W`` for ``LNPre``, ``diag(w) W`` for RMSNorm, ``W`` without a norm or for ``RMSPre``); ``axis`` is ``W``'s ``d_model`` axis and
    ``w`` broadcasts along it (give it shaped to do so when ``W`` is stacked)."""
    _check(kind)
    if kind is None:
        return W
    if has_weight(kind):
        W = W * w
    return _centre(W, axis) if centres(kind) else W


def writer(W: torch.Tensor, kind, *, axis: int = -1) -> torch.Tensor:
    """A matrix that writes to the residual stream, as a normalised reader sees it: ``W C``
    (centred over ``d_model``, its ``axis``); ``W`` itself without a centring norm."""
    return _centre(W, axis) if centres(kind) else W


# folding -----------------------------------------------------------------------------------------
def fold(W: torch.Tensor, b_W: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, *,
         axis: int, center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a norm's ``w``, ``b`` into a reader ``W`` (``d_model`` on ``axis``) with bias
    ``b_W``: ``(C diag(w) W, b_W + b W)``; ``center=False`` leaves out ``C`` (RMSNorm, or
    LayerNorm folded without centring); ``b=None``: a norm without bias (RMSNorm)."""
    shape = [1] * W.ndim
    shape[axis] = -1
    b_new = b_W if b is None else b_W + torch.tensordot(b, W, dims=([0], [axis]))
    W_new = reader(W, "LN", w.reshape(shape), axis=axis) if center else W * w.reshape(shape)
    return W_new, b_new
