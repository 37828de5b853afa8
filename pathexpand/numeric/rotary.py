"""Rotary positions in one place: the rotation the forward pass applies to queries and keys,
its transpose, and the relative rotation a QK circuit sees.

Right-multiplying like the rest of the code: a query or key row ``u`` (``[d_head]``) at position
``p`` becomes ``u R_p``. ``R_p`` rotates the first ``rotary_dim`` dims of each head in pairs by
the angles ``p · θ_m``, ``θ_m = rotary_base^(−2m/rotary_dim)`` for ``m < rotary_dim/2``, and
leaves the other dims alone. The pairs are dims ``(m, m + rotary_dim/2)`` ("halves", Hugging
Face's ``rotate_half`` in Llama and GPT-NeoX) or ``(2m, 2m + 1)`` with
``rotary_adjacent_pairs`` (GPT-J, llama.cpp). In a pair ``(a, b)``:
``a' = a cos − b sin``, ``b' = b cos + a sin`` (TransformerLens's and Hugging Face's formula).

Rotations compose: ``R_p R_qᵀ = R_{p−q}``, so a query at ``i`` meets a key at ``j`` through
``q_i k_jᵀ = x_i W_Q R_i R_jᵀ W_Kᵀ x_jᵀ = x_i W_Q R̃_{j−i} W_Kᵀ x_jᵀ`` with the relative rotation
``R̃_Δ = R_{−Δ}`` (``relative``): the QK circuit is a function of the offset ``Δ = j − i``
(``Δ = −1``: the previous token). As ``rotary_base → ∞`` every pair but the first stops
turning (``θ_m → 0`` for ``m ≥ 1``); the first pair turns by ``Δ`` radians whatever the base
(``θ_0 = 1``), so the limit is the unrotated circuit only on the other dims.
"""

from __future__ import annotations

import torch

from ..errors import PathexpandError

__all__ = ["SUMMARY_OFFSETS", "angles", "relative", "rotate", "rotate_T", "summary_offsets"]

SUMMARY_OFFSETS = 16  # a rotary summary averages the offsets Δ = 0, −1, …, −15 (the nearest keys)


def _need(config) -> None:
    if config.positional != "rotary":
        raise PathexpandError(
            f"this model has positional={config.positional!r}, not rotary positions"
        )


def angles(config, positions, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """``p · θ_m`` for each position: ``[n] → [n, rotary_dim/2]`` (float64 unless ``dtype``)."""
    _need(config)
    r = config.rotary_dim
    pos = torch.as_tensor(positions, dtype=torch.float64, device=device)
    theta = config.rotary_base ** (-torch.arange(0, r, 2, dtype=torch.float64, device=device) / r)
    return (pos[:, None] * theta).to(dtype)                                   # [n, r/2]


def _cos_sin(config, positions, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin laid out along the rotated dims: ``[n, rotary_dim]``."""
    a = angles(config, positions, device=like.device)
    a = a.repeat_interleave(2, -1) if config.rotary_adjacent_pairs else torch.cat([a, a], -1)
    return a.cos().to(like.dtype), a.sin().to(like.dtype)


def _turn(x: torch.Tensor, adjacent: bool) -> torch.Tensor:
    """The quarter turn ``J`` of each pair: ``(a, b) ↦ (−b, a)``."""
    if adjacent:
        pairs = x.unflatten(-1, (-1, 2))
        return torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


def rotate(x: torch.Tensor, config, positions=None, *, inverse: bool = False) -> torch.Tensor:
    """``u ↦ u R_p`` on the last axis of ``x`` ``[..., n, d_head]`` at ``positions`` (default
    ``0..n−1``); ``inverse=True`` applies ``R_pᵀ = R_{−p}``."""
    _need(config)
    n, r = x.shape[-2], config.rotary_dim
    positions = torch.arange(n) if positions is None else positions
    cos, sin = _cos_sin(config, positions, x)                                 # [n, r]
    if inverse:
        sin = -sin
    head, rest = x[..., :r], x[..., r:]
    turned = head * cos + _turn(head, config.rotary_adjacent_pairs) * sin
    return torch.cat([turned, rest], -1) if rest.shape[-1] else turned


def rotate_T(x: torch.Tensor, config, positions=None) -> torch.Tensor:
    """Transpose of ``rotate``: ``g ↦ g R_pᵀ`` (a rotation's transpose is its inverse)."""
    return rotate(x, config, positions, inverse=True)


def summary_offsets(config, n: int | None = None) -> list[int]:
    """The offsets a summary over offsets averages: ``Δ = 0, −1, …, −(m − 1)`` with ``m =
    min(n, n_ctx)`` (``n`` default ``SUMMARY_OFFSETS``): a query and its nearest ``m`` keys."""
    _need(config)
    m = min(SUMMARY_OFFSETS if n is None else int(n), config.n_ctx)
    return [-k for k in range(m)]


def relative(config, offsets, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """The relative rotations ``R̃_Δ = R_{−Δ}``, ``[d_head, d_head]`` each, for offsets
    ``Δ = j − i`` (key position minus query position): ``[len(offsets), d_head, d_head]``."""
    _need(config)
    offsets = torch.as_tensor(offsets, dtype=torch.float64).reshape(-1)
    e = config.d_head
    basis = torch.eye(e, dtype=dtype, device=device)[:, None, :].expand(e, len(offsets), e)
    return rotate(basis, config, -offsets).transpose(0, 1)          # row a of R_p is e_a R_p
