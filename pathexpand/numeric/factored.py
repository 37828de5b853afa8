"""``Factored``: a matrix product F_1 F_2 ⋯ F_k kept as its factors, batched over leading axes.

A full OV circuit ``W_E W_V W_O W_U`` is ``[d_vocab, d_vocab]`` (10 GB for GPT-2) but has
rank ≤ d_head; every question about it is answered from small matrices:

* Frobenius norm through Gram matrices, ‖AB‖²_F = tr(AᵀA · BBᵀ) = Σ (AᵀA) ∘ (BBᵀ), split
  at the smallest inner dimension;
* spectral norm from the eigenvalues of the ``r × r`` matrix ``G_L^{1/2} G_R G_L^{1/2}``;
* SVD through a QR of each side, then an SVD of the small core ``R_A R_Bᵀ``;
* eigenvalues through the ``AB``/``BA`` identity: the non-zero eigenvalues of F_1 ⋯ F_k
  are those of its cyclic rotation F_{j+1} ⋯ F_k F_1 ⋯ F_j, taken at the smallest ``d_j``;
* products of sub-chains in the cheapest order (matrix-chain dynamic programme whose costs
  count the leading batch axes, so a factor without batch axes — ``W_E`` — is reduced once,
  not once per head).

Factors keep their own leading (batch) shapes, which broadcast like torch's ``matmul``:
``Factored(W_E, W_V, W_O, W_U)`` with ``W_V`` ``[L, H, d_model, d_head]`` is the
``[L, H, d_vocab, d_vocab]`` stack of every head's full OV circuit, and ``W_E W_E ᵀ``-sized
work is never repeated per head.

Precision: large Grams are accumulated in the factors' dtype; the small reductions that
follow (traces, eigen-decompositions of Grams) run in float64. With float64 factors every
result is accurate to ~1e-12 relative; with float32 factors the Frobenius and spectral norms
carry an absolute error ≈ 1e-7·‖F_1‖⋯‖F_k‖ (the cancellation in tr(AᵀA·BBᵀ)), which is
relative 1e-7 unless the product nearly vanishes. Pass ``dtype=torch.float64`` when that
matters.

>>> import torch
>>> A, B = torch.randn(1000, 8, dtype=torch.float64), torch.randn(8, 1000, dtype=torch.float64)
>>> M = Factored(A, B)
>>> bool(torch.isclose(M.norm(), torch.linalg.matrix_norm(A @ B)))
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..errors import PathexpandError, ShapeError

__all__ = ["DEFAULT_MAX_ELEMENTS", "Factored"]

DEFAULT_MAX_ELEMENTS = 2**24  # .dense() refuses more elements than this unless asked
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _as_tensor(x: Any, device, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        with warnings.catch_warnings():  # read-only Weights arrays: shared, never written to
            warnings.simplefilter("ignore", UserWarning)
            t = torch.as_tensor(np.asarray(x))
    if dtype is not None or device is not None:
        t = t.to(device=device, dtype=dtype)
    return t


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


class Factored:
    """The product ``F_1 F_2 ⋯ F_k`` of torch matrices, shape ``[..., m, n]``, kept factored.

    ``Factored(*factors, device=None, dtype=None, memo=None)``: each factor is
    ``[..., d_{i-1}, d_i]`` (numpy or torch; a ``Factored`` contributes its own factors). Leading
    axes broadcast. ``dtype`` defaults to the factors' common floating dtype. ``memo``: a dict
    shared by many chains (the batched shared-prefix mode): the Gram of a sub-chain made of the
    very same factor tensors is computed once for all of them (``evaluate`` ranks thousands of
    terms that share their prefixes and suffixes this way).

    Views are properties (``.T``, ``.shape``, ``.factors``); anything that computes is a
    method (``.norm()``, ``.svd()``, ``.eigenvalues()``, ``.dense()``). ``@`` with a dense
    matrix or another ``Factored`` just extends the chain: the association is chosen when a
    result is computed, by cost.
    """

    __array_ufunc__ = None  # make numpy defer `ndarray @ Factored` to __rmatmul__

    def __init__(self, *factors: Any, device=None, dtype=None, memo: dict | None = None):
        flat: list[Any] = []
        for f in factors:
            flat.extend(f.factors if isinstance(f, Factored) else [f])
        if not flat:
            raise PathexpandError("Factored needs at least one factor, got none")
        ts = [_as_tensor(f, device, None) for f in flat]
        if any(t.is_complex() for t in ts) or (dtype is not None and dtype.is_complex):
            raise PathexpandError("Factored holds real floating-point factors; got a complex one")
        if dtype is None:
            dtype = ts[0].dtype
            for t in ts[1:]:
                dtype = torch.promote_types(dtype, t.dtype)
            if not dtype.is_floating_point:
                dtype = torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise PathexpandError(f"Factored holds real floating-point factors; got dtype {dtype}")
        device = device if device is not None else ts[0].device
        ts = [t.to(device=device, dtype=dtype) for t in ts]
        for i, t in enumerate(ts):
            if t.ndim < 2:
                raise ShapeError(
                    f"factor {i} must be a matrix [..., rows, cols], got shape {_shape_str(t.shape)}"
                )
        for i in range(len(ts) - 1):
            a, b = ts[i], ts[i + 1]
            if a.shape[-1] != b.shape[-2]:
                raise ShapeError(
                    f"factors {i} and {i + 1} do not chain: {_shape_str(a.shape)} @ "
                    f"{_shape_str(b.shape)} (inner sizes {a.shape[-1]} != {b.shape[-2]})"
                )
        try:
            batch = torch.broadcast_shapes(*(t.shape[:-2] for t in ts))
        except RuntimeError:
            raise ShapeError(
                "leading (batch) axes of the factors do not broadcast: "
                + ", ".join(_shape_str(t.shape) for t in ts)
            ) from None
        self._factors: tuple[torch.Tensor, ...] = tuple(ts)
        self._batch = torch.Size(batch)
        self._cache: dict = {}
        self._memo = memo

    # views -------------------------------------------------------------------------------
    @property
    def factors(self) -> tuple[torch.Tensor, ...]:
        """The factors ``(F_1, ..., F_k)``, each with its own (broadcastable) leading axes."""
        return self._factors

    @property
    def dims(self) -> tuple[int, ...]:
        """``(d_0, d_1, ..., d_k)``: F_i is ``[d_{i-1}, d_i]``; the matrix is ``[d_0, d_k]``."""
        return (self._factors[0].shape[-2],) + tuple(f.shape[-1] for f in self._factors)

    @property
    def batch_shape(self) -> torch.Size:
        """Broadcast leading axes, e.g. ``[n_layers, n_heads]``."""
        return self._batch

    @property
    def shape(self) -> torch.Size:
        """``[*batch_shape, m, n]``."""
        return torch.Size(tuple(self._batch) + (self.ldim, self.rdim))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def ldim(self) -> int:
        """Number of rows ``m``."""
        return self._factors[0].shape[-2]

    @property
    def rdim(self) -> int:
        """Number of columns ``n``."""
        return self._factors[-1].shape[-1]

    @property
    def rank_bound(self) -> int:
        """Smallest dimension of the chain: an upper bound on the rank."""
        return min(self.dims)

    @property
    def dtype(self) -> torch.dtype:
        return self._factors[0].dtype

    @property
    def device(self) -> torch.device:
        return self._factors[0].device

    @property
    def T(self) -> Factored:
        """Transpose: ``F_kᵀ ⋯ F_1ᵀ`` (no copy)."""
        return Factored(*(f.mT for f in reversed(self._factors)))

    def to(self, device=None, dtype=None) -> Factored:
        """The same product with factors moved/cast."""
        return Factored(*self._factors, device=device, dtype=dtype)

    def __repr__(self) -> str:
        dims = "×".join(str(d) for d in self.dims)
        return (
            f"Factored(shape={_shape_str(self.shape)}, chain {dims}, rank ≤ {self.rank_bound}, "
            f"dtype={str(self.dtype).replace('torch.', '')})"
        )

    def __len__(self) -> int:
        if not self._batch:
            raise TypeError("len() of an unbatched Factored; use .shape")
        return self._batch[0]

    # algebra -----------------------------------------------------------------------------
    def __matmul__(self, other: Any):
        if isinstance(other, Factored):
            self._check_inner(self.shape, other.shape)
            return Factored(*self._factors, *other.factors)
        t = _as_tensor(other, self.device, self.dtype)
        if t.ndim == 1:  # vector: collapse right to left
            if t.shape[0] != self.rdim:
                self._check_inner(self.shape, t.shape)
            v = t.unsqueeze(-1)
            for f in reversed(self._factors):
                v = f @ v
            return v.squeeze(-1)
        self._check_inner(self.shape, t.shape)
        return Factored(*self._factors, t)

    def __rmatmul__(self, other: Any):
        t = _as_tensor(other, self.device, self.dtype)
        if t.ndim == 1:
            if t.shape[0] != self.ldim:
                self._check_inner(t.shape, self.shape)
            v = t.unsqueeze(-2)
            for f in self._factors:
                v = v @ f
            return v.squeeze(-2)
        self._check_inner(t.shape, self.shape)
        return Factored(t, *self._factors)

    @staticmethod
    def _check_inner(left, right) -> None:
        if left[-1] != right[-2 if len(right) > 1 else 0]:
            raise ShapeError(
                f"cannot multiply {_shape_str(left)} @ {_shape_str(right)}: "
                f"inner sizes {left[-1]} != {right[-2 if len(right) > 1 else 0]}"
            )

    def __mul__(self, scalar: Any) -> Factored:
        if isinstance(scalar, bool) or not isinstance(scalar, (int, float, torch.Tensor, np.number)):
            return NotImplemented
        if isinstance(scalar, torch.Tensor) and scalar.numel() != 1:
            raise ShapeError(
                f"Factored * x needs a scalar, got a tensor of shape {_shape_str(scalar.shape)}; "
                "use @ for matrix products"
            )
        f0 = self._factors[0] * scalar
        return Factored(f0, *self._factors[1:])

    __rmul__ = __mul__

    def __neg__(self) -> Factored:
        return self * -1

    def __getitem__(self, index) -> Factored:
        """Index the leading (batch) axes only: ``ov[1, 4]`` is head L1H4's matrix."""
        if not isinstance(index, tuple):
            index = (index,)
        nb = len(self._batch)
        if len(index) > nb:
            raise IndexError(
                f"index {index} has {len(index)} entries but this Factored has {nb} batch "
                f"axes (shape {_shape_str(self.shape)}); use .row(i)/.col(j) for entries"
            )
        for ax, ix in enumerate(index):
            if not isinstance(ix, (int, slice, np.integer)):
                raise IndexError(f"batch index must be ints or slices, got {ix!r}")
            if isinstance(ix, (int, np.integer)) and not -self._batch[ax] <= ix < self._batch[ax]:
                raise IndexError(
                    f"index {int(ix)} is out of range for batch axis {ax} of size {self._batch[ax]}"
                )
        out = []
        for f in self._factors:
            g = f.reshape((1,) * (nb - (f.ndim - 2)) + tuple(f.shape))
            sel: list[Any] = []
            for ax, ix in enumerate(index):
                if g.shape[ax] == 1 and self._batch[ax] != 1:
                    sel.append(0 if isinstance(ix, (int, np.integer)) else slice(None))
                else:
                    sel.append(int(ix) if isinstance(ix, (int, np.integer)) else ix)
            out.append(g[tuple(sel)])
        return Factored(*out)

    # products ------------------------------------------------------------------------------
    def dense(self, max_elements: int | None = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
        """The product as one tensor ``[..., m, n]``; refuses above ``max_elements`` (None: no limit)."""
        n = _numel(self.shape)
        if max_elements is not None and n > max_elements:
            gb = n * self._factors[0].element_size() / 1e9
            raise PathexpandError(
                f"the dense matrix {_shape_str(self.shape)} has {n:.3g} elements ({gb:.3g} GB in "
                f"{str(self.dtype).replace('torch.', '')}), above max_elements={max_elements:.3g}; "
                "use the factored methods (.norm(), .svd(), .eigenvalues(), .row()) or pass "
                "dense(max_elements=...) to allow it"
            )
        return _chain(self._factors)

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two factors ``(A, B)`` with ``A @ B`` the matrix, split at the smallest inner size.

        ``A`` is ``[..., m, r]`` and ``B`` ``[..., r, n]`` with ``r = min(d_1..d_{k-1})`` (the
        identity is used on one side when ``m`` or ``n`` is smaller). Cached.
        """
        if "pair" not in self._cache:
            j = self._split_at_min()
            A = _chain(self._factors[:j]) if j > 0 else None
            B = _chain(self._factors[j:]) if j < len(self._factors) else None
            if A is None:
                A = torch.eye(self.ldim, dtype=self.dtype, device=self.device)
            if B is None:
                B = torch.eye(self.rdim, dtype=self.dtype, device=self.device)
            self._cache["pair"] = (A, B)
        return self._cache["pair"]

    def _split_at_min(self) -> int:
        dims = self.dims
        interior = lambda j: 0 if 0 < j < len(dims) - 1 else 1
        return min(range(len(dims)), key=lambda j: (dims[j], interior(j)))

    def thin(self) -> Factored:
        """The same matrix up to orthogonal maps on its left and right, with no tall first or
        wide last factor: ``F_1`` taller than wide becomes ``R`` with ``RᵀR = F_1ᵀF_1`` and ``F_k``
        wider than tall becomes ``L`` with ``LLᵀ = F_kF_kᵀ`` (square roots of ``d × d`` Grams).

        Norms, spectral norms and singular values are unchanged (``‖Q M P‖ = ‖M‖`` for orthogonal
        ``Q``, ``P``); rows, columns and eigenvalues are not. Build it once to share the
        vocabulary-sized reduction of ``W_E``/``W_U`` among many chains.
        """
        f = list(self._factors)
        if f[0].shape[-2] > f[0].shape[-1]:
            f[0] = _gram_root(f[0].mT @ f[0]).mT
        if f[-1].shape[-1] > f[-1].shape[-2]:
            f[-1] = _gram_root(f[-1] @ f[-1].mT)
        return Factored(*f)

    # norms ---------------------------------------------------------------------------------
    def norm(self) -> torch.Tensor:
        """Frobenius norm ``[...]``: ‖F_1⋯F_k‖_F² = Σ G_L ∘ G_R, Grams at the cheapest split."""
        if "norm" not in self._cache:
            plan = self._norm_plan()
            if plan == "dense":
                d = _chain(self._factors, self._memo).to(torch.float64)
                val = torch.linalg.matrix_norm(d)
            else:
                GL, GR = self._grams(plan)
                if GL is None:
                    sq = _diag_sum(GR)
                elif GR is None:
                    sq = _diag_sum(GL)
                else:
                    sq = _contract(GL, GR)
                val = sq.clamp_min(0).sqrt()
            self._cache["norm"] = val.to(self.dtype).expand(self._batch).clone()
        return self._cache["norm"]

    def _norm_plan(self):
        dims, k = self.dims, len(self._factors)
        batches = [f.shape[:-2] for f in self._factors]
        out_batch = _numel(self._batch)
        dense = _chain_cost(dims, batches) if self._memo is None else _memo_plan(self._factors, self._memo)[0]
        best = ("dense", dense + out_batch * dims[0] * dims[-1])
        for j in range(k + 1):
            c = self._gram_cost(j) + out_batch * dims[j] * dims[j]
            if c < best[1]:
                best = (j, c)
        return best[0]

    def _gram_cost(self, j: int) -> int:
        left, right = self._gram_chains(j)
        cost = 0
        for side, half, ch in (("L", self._factors[:j], left), ("R", self._factors[j:], right)):
            if ch and not (self._memo is not None and _key(side, half) in self._memo):
                cost += _chain_cost(*_dims_batches(ch))
        return cost

    def _gram_chains(self, j: int):
        F = self._factors
        left = [f.mT for f in reversed(F[:j])] + list(F[:j]) if j > 0 else []
        right = list(F[j:]) + [f.mT for f in reversed(F[j:])] if j < len(F) else []
        return left, right

    def _grams(self, j: int):
        """``(G_L, G_R)`` at split ``j`` in float64: G_L = LᵀL, G_R = RRᵀ (None at an end)."""
        key = ("grams", j)
        if key not in self._cache:
            left, right = self._gram_chains(j)
            GL = self._shared("L", self._factors[:j], left) if left else None
            GR = self._shared("R", self._factors[j:], right) if right else None
            self._cache[key] = (GL, GR)
        return self._cache[key]

    def _shared(self, side: str, half, chain) -> torch.Tensor:
        """The Gram of one half, from ``memo`` when another chain with the same factor tensors
        made it (the entry keeps those tensors alive, so their addresses stay theirs)."""
        if self._memo is None:
            return _sym(_chain(chain).to(torch.float64))
        key = _key(side, half)
        hit = self._memo.get(key)
        if hit is None:
            hit = (tuple(half), _sym(_chain(chain).to(torch.float64)))
            self._memo[key] = hit
        return hit[1]

    def singular_values(self) -> torch.Tensor:
        """Singular values ``[..., r]`` (descending; ``r`` the smallest chain size), from ``svd()``."""
        return self.svd()[1]

    def spectral_norm(self) -> torch.Tensor:
        """Largest singular value ``[...]``: σ_max² = λ_max(G_L^{1/2} G_R G_L^{1/2}) at the smallest split."""
        if "spectral" not in self._cache:
            j = self._split_at_min()
            GL, GR = self._grams(j)
            if GL is None or GR is None:
                G = GR if GL is None else GL
                lam = torch.linalg.eigvalsh(G)[..., -1]
            else:
                w, V = torch.linalg.eigh(GL)
                S = V * w.clamp_min(0).sqrt().unsqueeze(-2)  # G_L = S Sᵀ
                core = _sym(S.mT @ GR @ S)
                lam = torch.linalg.eigvalsh(core)[..., -1]
            val = lam.clamp_min(0).sqrt().to(self.dtype)
            self._cache["spectral"] = val.expand(self._batch).clone()
        return self._cache["spectral"]

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U, S, V)`` with ``U diag(S) Vᵀ`` the matrix: QR of each side, SVD of the small core.

        ``U`` is ``[..., m, r]``, ``S`` ``[..., r]`` descending, ``V`` ``[..., n, r]`` with
        ``r = min(m, n, smallest inner size)``. Cached on the instance.
        """
        if "svd" not in self._cache:
            A, B = self.pair()
            Qa, Ra = torch.linalg.qr(A)
            Qb, Rb = torch.linalg.qr(B.mT)
            core = Ra @ Rb.mT
            Uc, S, Vch = torch.linalg.svd(core, full_matrices=False)
            U = Qa @ Uc
            V = Qb @ Vch.mT
            shape = tuple(self._batch)
            self._cache["svd"] = (
                U.expand(shape + U.shape[-2:]),
                S.expand(shape + S.shape[-1:]),
                V.expand(shape + V.shape[-2:]),
            )
        return self._cache["svd"]

    # square matrices -----------------------------------------------------------------------
    def _require_square(self, what: str) -> None:
        if self.ldim != self.rdim:
            raise ShapeError(f"{what} needs a square matrix, got shape {_shape_str(self.shape)}")

    def _rotation(self) -> tuple[int, torch.Tensor]:
        """Smallest cyclic rotation F_{j+1}⋯F_k F_1⋯F_j (``[..., d_j, d_j]``) and ``j``."""
        if "rotation" not in self._cache:
            dims, k = self.dims, len(self._factors)
            j = min(range(k), key=lambda i: dims[i])
            rot = self._factors[j:] + self._factors[:j]
            self._cache["rotation"] = (j, _chain(rot))
        return self._cache["rotation"]

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues (complex) ``[..., r]``, largest |λ| first; the matrix's others are 0.

        The non-zero eigenvalues of ``AB`` equal those of ``BA`` (if ``BAv = λv`` then
        ``AB(Av) = λAv``), so they come from the smallest cyclic rotation of the chain.
        """
        self._require_square("eigenvalues()")
        if "eig" not in self._cache:
            _, rot = self._rotation()
            lam = torch.linalg.eigvals(rot.to(torch.float64))
            order = torch.argsort(lam.abs(), dim=-1, descending=True)
            lam = torch.gather(lam, -1, order)
            cdt = torch.complex128 if self.dtype == torch.float64 else torch.complex64
            lam = lam.to(cdt)
            self._cache["eig"] = lam.expand(tuple(self._batch) + lam.shape[-1:]).clone()
        return self._cache["eig"]

    def trace(self) -> torch.Tensor:
        """Trace ``[...]``, from the smallest cyclic rotation (tr(AB) = tr(BA))."""
        self._require_square("trace()")
        _, rot = self._rotation()
        return _diag_sum(rot).expand(self._batch).clone()

    def diag(self) -> torch.Tensor:
        """Diagonal ``[..., m]``: diag(AB)_i = Σ_r A_ir B_ri, without building the matrix."""
        self._require_square("diag()")
        A, B = self.pair()
        d = (A * B.mT).sum(-1)
        return d.expand(tuple(self._batch) + (self.ldim,)).clone()

    def row(self, i: int) -> torch.Tensor:
        """Row ``i`` ``[..., n]``: e_iᵀ F_1 ⋯ F_k, multiplied left to right."""
        i = self._check_index(i, self.ldim, "row")
        v = self._factors[0][..., i : i + 1, :]
        for f in self._factors[1:]:
            v = v @ f
        v = v.squeeze(-2)
        return v.expand(tuple(self._batch) + (self.rdim,)).clone()

    def col(self, j: int) -> torch.Tensor:
        """Column ``j`` ``[..., m]``: F_1 ⋯ F_k e_j, multiplied right to left."""
        j = self._check_index(j, self.rdim, "column")
        v = self._factors[-1][..., :, j : j + 1]
        for f in reversed(self._factors[:-1]):
            v = f @ v
        v = v.squeeze(-1)
        return v.expand(tuple(self._batch) + (self.ldim,)).clone()

    def _check_index(self, i, size: int, what: str) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise PathexpandError(f"{what} index must be an int, got {i!r}")
        if not -size <= i < size:
            raise IndexError(
                f"{what} {int(i)} is out of range for a matrix of shape {_shape_str(self.shape)}"
            )
        return int(i) % size


# helpers ---------------------------------------------------------------------------------
def _sym(G: torch.Tensor) -> torch.Tensor:
    return (G + G.mT) / 2


def _gram_root(G: torch.Tensor) -> torch.Tensor:
    """``S`` with ``S Sᵀ = G`` for a symmetric PSD ``G`` ``[..., d, d]`` (eigh in float64)."""
    lam, V = torch.linalg.eigh(_sym(G.to(torch.float64)))
    return (V * lam.clamp_min(0).sqrt().unsqueeze(-2)).to(G.dtype)


def _diag_sum(G: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(G, dim1=-2, dim2=-1).sum(-1)


def _dims_batches(factors):
    dims = (factors[0].shape[-2],) + tuple(f.shape[-1] for f in factors)
    return dims, [f.shape[:-2] for f in factors]


@lru_cache(maxsize=512)
def _plan(dims: tuple[int, ...], batches: tuple[tuple[int, ...], ...]):
    """Matrix-chain order: (cost, split table) minimising multiply-adds, batch sizes counted."""
    k = len(batches)
    bs = [[()] * k for _ in range(k)]
    for i in range(k):
        acc = torch.Size(batches[i])
        for j in range(i, k):
            if j > i:
                acc = torch.broadcast_shapes(acc, batches[j])
            bs[i][j] = tuple(acc)
    cost = [[0] * k for _ in range(k)]
    split = [[0] * k for _ in range(k)]
    for length in range(2, k + 1):
        for i in range(k - length + 1):
            j = i + length - 1
            nb = _numel(bs[i][j])
            best, arg = None, i
            for s in range(i, j):
                c = cost[i][s] + cost[s + 1][j] + nb * dims[i] * dims[s + 1] * dims[j + 1]
                if best is None or c < best:
                    best, arg = c, s
            cost[i][j], split[i][j] = best, arg
    return cost[0][k - 1] if k else 0, split


def _chain_cost(dims, batches) -> int:
    return _plan(tuple(dims), tuple(tuple(b) for b in batches))[0]


def _chain(factors: Sequence[torch.Tensor], memo: dict | None = None) -> torch.Tensor:
    """Product of the factors in the cheapest order (batch-aware matrix-chain DP); with ``memo``,
    sub-products another chain made of the same tensors are reused (and cost nothing)."""
    factors = list(factors)
    if len(factors) == 1:
        return factors[0]
    if memo is None:
        dims, batches = _dims_batches(factors)
        _, split = _plan(tuple(dims), tuple(tuple(b) for b in batches))
    else:
        _, split = _memo_plan(factors, memo)

    def mul(i: int, j: int) -> torch.Tensor:
        if i == j:
            return factors[i]
        key = _key("P", factors[i:j + 1]) if memo is not None else None
        if key is not None and key in memo:
            return memo[key][1]
        s = split[i][j]
        out = _mm(mul(i, s), mul(s + 1, j))
        if key is not None:
            memo[key] = (tuple(factors[i:j + 1]), out)
        return out

    return mul(0, len(factors) - 1)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with broadcast batch axes, never materialising a broadcast copy: axes only ``a``
    has join its rows, axes only ``b`` has join its columns, shared axes stay the batch (torch's
    ``@`` would expand the other operand along them: [H, H, 1, e] @ [1, H, e, d] copies H·e·d
    per H)."""
    nb = max(a.ndim, b.ndim) - 2
    A = a.reshape((1,) * (nb + 2 - a.ndim) + tuple(a.shape))
    B = b.reshape((1,) * (nb + 2 - b.ndim) + tuple(b.shape))
    only_a = [i for i in range(nb) if A.shape[i] != 1 and B.shape[i] == 1]
    only_b = [i for i in range(nb) if B.shape[i] != 1 and A.shape[i] == 1]
    if not only_a and not only_b:
        return a @ b
    both = [i for i in range(nb) if A.shape[i] != 1 and B.shape[i] != 1]
    ones = [i for i in range(nb) if A.shape[i] == 1 and B.shape[i] == 1]
    m, k, n = A.shape[-2], A.shape[-1], B.shape[-1]
    size = lambda T, axes: [T.shape[i] for i in axes]      # noqa: E731
    nboth = _numel(size(A, both))
    A2 = A.permute(*both, *only_a, *ones, *only_b, nb, nb + 1).reshape(nboth, -1, k)   # rows: only_a · m
    B2 = B.permute(*both, *ones, *only_a, nb, *only_b, nb + 1).reshape(nboth, k, -1)   # cols: only_b · n
    C = torch.bmm(A2, B2).reshape(*size(A, both), *size(A, only_a), m, *size(B, only_b), n)
    order = both + only_a + ["m"] + only_b + ["n"]                                    # C's axes
    C = C.permute(*[order.index(i) for i in range(nb) if i not in ones], order.index("m"), order.index("n"))
    full = [A.shape[i] if A.shape[i] != 1 else B.shape[i] for i in range(nb)]
    return C.reshape(*full, m, n)


def _key(tag: str, factors) -> tuple:
    """A memo key naming these very tensors (address, shape, strides, dtype) in order."""
    return (tag,) + tuple((f.data_ptr(), tuple(f.shape), tuple(f.stride()), f.dtype) for f in factors)


def _memo_plan(factors, memo: dict):
    """``_plan`` where a sub-chain whose product is in ``memo`` costs nothing."""
    dims, batches = _dims_batches(factors)
    k = len(factors)
    bs = [[()] * k for _ in range(k)]
    for i in range(k):
        acc = torch.Size(batches[i])
        for j in range(i, k):
            if j > i:
                acc = torch.broadcast_shapes(acc, batches[j])
            bs[i][j] = tuple(acc)
    cost = [[0] * k for _ in range(k)]
    split = [[0] * k for _ in range(k)]
    for length in range(2, k + 1):
        for i in range(k - length + 1):
            j = i + length - 1
            if _key("P", factors[i:j + 1]) in memo:
                cost[i][j] = 0
                continue
            nb = _numel(bs[i][j])
            best, arg = None, i
            for s in range(i, j):
                c = cost[i][s] + cost[s + 1][j] + nb * dims[i] * dims[s + 1] * dims[j + 1]
                if best is None or c < best:
                    best, arg = c, s
            cost[i][j], split[i][j] = best, arg
    return (cost[0][k - 1] if k else 0), split


def _contract(GL: torch.Tensor, GR: torch.Tensor) -> torch.Tensor:
    """Σ_{xy} GL[..., x, y] GR[..., x, y] with batch broadcasting done as one GEMM (einsum).

    Batch axes present (size > 1) on one side only become free indices, never copies, so
    ``[L, H, 1, 1, d, d]`` against ``[1, 1, L, H, d, d]`` costs one ``[LH, d²] @ [d², LH]``.
    """
    nb = max(GL.ndim, GR.ndim) - 2
    a = GL.reshape((1,) * (nb - (GL.ndim - 2)) + tuple(GL.shape[:-2]) + (-1,))
    b = GR.reshape((1,) * (nb - (GR.ndim - 2)) + tuple(GR.shape[:-2]) + (-1,))
    full = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    if nb + 1 > len(_LETTERS):
        raise ShapeError(f"too many batch axes ({nb}) to contract")
    sa, sb, so = [], [], []
    a_shape, b_shape = [], []
    for ax in range(nb):
        letter = _LETTERS[ax]
        if a.shape[ax] != 1:
            sa.append(letter)
            a_shape.append(a.shape[ax])
        if b.shape[ax] != 1:
            sb.append(letter)
            b_shape.append(b.shape[ax])
        if full[ax] != 1:
            so.append(letter)
    x = _LETTERS[nb]
    a2 = a.reshape(a_shape + [a.shape[-1]])
    b2 = b.reshape(b_shape + [b.shape[-1]])
    out = torch.einsum(f"{''.join(sa)}{x},{''.join(sb)}{x}->{''.join(so)}", a2, b2)
    return out.reshape(full)
