"""``evaluate``: a data-free number for every term of an expansion, as a ``Ranking``.

Each term's virtual weight matrix comes from its path (``numeric.circuits``), always
factored, e.g. ``("embed", "L0H1", "L1H0")`` → ``W_E W_OV^{0,1} W_OV^{1,0} W_U``; score terms
``X_q W_Q W_Kᵀ X_kᵀ`` (before ``/√d_head``). Metrics:

* ``frobenius`` — ‖M‖_F (share = value / Σ values);
* ``spectral`` — σ_max(M);
* ``copying`` — the paper's Re Σλ / Σ|λ| over M's eigenvalues (square terms only: the full
  OV circuit ``W_E ⋯ W_U``, embed×embed score terms, residual-scope terms; NaN otherwise),
  with ``positive_share`` = Σ_{Re λ>0}|λ| / Σ|λ|.

Speed: terms are grouped by the shape of their chain and evaluated in batches; the
vocabulary-sized ends are reduced once per call — for the (orthogonally invariant) norms
``W_E`` is replaced by ``R_E`` with ``R_Eᵀ R_E = W_Eᵀ W_E`` and ``W_U`` by ``L_U`` with
``L_U L_Uᵀ = W_U W_Uᵀ`` (both ``d_model × d_model``); for eigenvalues the chain is rotated so
that ``W_U W_E`` (``d_model × d_model``) is formed once. No ``vocab × vocab`` matrix is built.

``baseline="random"`` adds, per term, the mean metric over ``n_null`` draws in which every
weight factor other than the embeddings and unembedding is replaced by a Gaussian matrix
of the same shape and Frobenius norm (seeded), and the ratio value / null: how much more
aligned the term's weights are than chance.

Data-free caveats, stated in the ranking's notes: MLP paths use the linearised MLP
``W_in W_out`` (gates = 1; ``mlp="refuse"`` raises instead); LayerNorm readers keep
``C diag(w)`` but not the per-position ``1/σ``; the remainder of a depth-limited
expansion is not evaluated.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ..architecture import Architecture
from ..errors import PathexpandError, check_int
from ..models import load
from ._progress import progress as track
from .circuits import SCOPES, CircuitContext, Key, term_keys
from .factored import Factored
from .ranking import Ranking, Row

__all__ = ["METRICS", "Ranking", "Row", "evaluate"]

METRICS = ("frobenius", "spectral", "copying")
MAX_TERMS = 2_000_000
_OUTER_LEFT = ("W_E", "W_pos")
_OUTER_RIGHT = ("W_U", "W_U~")
_NULL_ELEMENTS = 2**25  # factor elements sampled at once for baseline="random"
_CACHE_ELEMENTS = 2**26  # shared sub-chain products kept per evaluate() call (256 MB in float32)


def evaluate(
    expansion,
    weights,
    metric: str = "frobenius",
    *,
    scope: str = "full",
    positional: bool = False,
    baseline: str | None = None,
    mlp: str = "linear",
    n_null: int = 16,
    seed: int = 0,
    batch_size: int = 2048,
    progress: bool = False,
    device=None,
    dtype=None,
) -> Ranking:
    """One ``Ranking`` row per term of ``expansion`` (an ``Expansion``, selection or list of terms).

    ``metric``: ``"frobenius"``, ``"spectral"`` or ``"copying"`` (module docstring).
    ``scope="residual"`` evaluates the residual-to-residual part (no ``W_E``/``W_pos``/``W_U``).
    ``positional=True`` keeps only the terms whose every source is ``pos``: for scores,
    ``(W_pos ⋯) W_QK (W_pos ⋯)ᵀ``, ``n_ctx × n_ctx`` positional attention structure
    (previous-token heads show here). Rows are sorted by value, largest first.
    """
    w = load(weights)
    if metric not in METRICS:
        raise PathexpandError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if scope not in SCOPES:
        raise PathexpandError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    if baseline not in (None, "random"):
        raise PathexpandError(f"baseline must be None or 'random', got {baseline!r}")
    if mlp not in ("linear", "refuse"):
        raise PathexpandError(f"mlp must be 'linear' or 'refuse', got {mlp!r}")
    check_int("n_null", n_null, 1), check_int("batch_size", batch_size, 1), check_int("seed", seed, 0)
    arch = _check_arch(expansion, w)
    terms = _terms(expansion, positional, arch)
    ctx = CircuitContext(w, device=device, dtype=dtype)
    ev = _Evaluator(ctx, metric, baseline, int(n_null), int(seed))

    rows: list[Row | None] = [None] * len(terms)
    groups: dict[tuple, list[tuple[int, list[Key]]]] = defaultdict(list)
    notes = _notes(metric, scope, w, terms, baseline, n_null, seed)
    for i, term in enumerate(terms):
        if getattr(term, "is_remainder", False):
            rows[i] = _row(term, math.nan, {})
            continue
        keys = term_keys(term, arch, scope=scope, mlp=mlp)
        if keys is None:  # b_U in residual scope
            rows[i] = _row(term, math.nan, {})
            continue
        sig = tuple((name, len(index), tr) for name, index, tr in keys)
        groups[sig].append((i, keys))

    chunks = [(sig, members[s : s + batch_size]) for sig, members in groups.items()
              for s in range(0, len(members), batch_size)]
    for sig, members in track(chunks, progress, f"evaluating {len(terms)} terms"):
        vals, extra = ev.run(sig, [k for _, k in members])
        for j, (i, _) in enumerate(members):
            rows[i] = _row(terms[i], vals[j], {k: v[j] for k, v in extra.items()})
    target = getattr(expansion, "target", None) or "terms"
    title = f"{metric} of {'logit' if target == 'logits' else target} terms" + (
        f" — {w.name}" if w.name else "")
    return Ranking(rows, title=title, value_label=metric, notes=notes,
                   shares=metric != "copying").sort_by("value")


# -------------------------------------------------------------------------------------------
class _Evaluator:
    """Batched metric of chains of factor keys, with vocabulary-sized ends reduced once."""

    def __init__(self, ctx: CircuitContext, metric: str, baseline, n_null: int, seed: int):
        self.ctx, self.metric, self.baseline, self.n_null, self.seed = ctx, metric, baseline, n_null, seed
        self._roots: dict[tuple, torch.Tensor] = {}
        self._cached_elements = 0
        self._calls = 0

    def _remember(self, key: tuple, t: torch.Tensor) -> None:
        """Cache a sub-chain result; past ``_CACHE_ELEMENTS`` the cache starts over (bounded memory)."""
        if self._cached_elements + t.numel() > _CACHE_ELEMENTS:
            keep = {k: v for k, v in self._roots.items() if k[0] in ("left", "right", "cyclic")}
            self._roots = keep
            self._cached_elements = sum(v.numel() for v in keep.values())
        self._roots[key] = t
        self._cached_elements += t.numel()

    def run(self, sig: tuple, keys: list[list[Key]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        first, last = keys[0][0], keys[0][-1]
        left_outer = first[0] in _OUTER_LEFT and not first[2]
        right_outer = (last[0] in _OUTER_RIGHT and not last[2]) or (last[0] in _OUTER_LEFT and last[2])
        if len(keys[0]) == 1:
            right_outer = right_outer and not left_outer  # a lone W_E is both ends: keep it whole
        if self.metric == "copying":
            value, extra = self._copying_cached(keys, left_outer, right_outer)
        else:
            value, extra = self._norm_cached(keys, left_outer, right_outer), {}
        if self.baseline == "random":  # random factors per term: nothing to share, small batches
            step = max(1, _NULL_ELEMENTS // (self.n_null * max(1, self._chain_elements(keys[0]))))
            null = np.concatenate([
                self._null([self._gather([k[p] for k in part]) for p in range(len(sig))],
                           keys[0], first, last, left_outer, right_outer, len(part))
                for part in (keys[i : i + step] for i in range(0, len(keys), step))])
            extra["null"] = null
            with np.errstate(invalid="ignore", divide="ignore"):
                extra["ratio"] = value / null
        return value, extra

    # cached sub-chains: each distinct prefix/suffix (e.g. W_E W_V^{0,3}) is reduced once ----------
    def _norm_cached(self, keys: list[list[Key]], left_outer: bool, right_outer: bool) -> np.ndarray:
        """‖·‖_F or σ_max of every chain: core = (prefix root) (suffix root), both cached.

        A prefix P is replaced by a thin R with RᵀR = PᵀP and a suffix S by L with LLᵀ = SSᵀ
        (orthogonal invariance keeps both norms); R, L are built factor by factor, compressed
        by QR whenever they grow wider than the chain is thin, and shared by every term with
        the same prefix/suffix (per head for depth 2), so a term costs one small product.
        """
        n, k = len(keys), len(keys[0])
        j = max(1, k // 2)
        prefixes = [tuple(t[:j]) for t in keys]
        suffixes = [tuple(t[j:]) for t in keys] if j < k else None
        if suffixes is not None:
            unique = list(dict.fromkeys(suffixes))
            where = {s: i for i, s in enumerate(unique)}
            S_all = torch.stack([self._suffix_root(s, right_outer) for s in unique])
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, pre in enumerate(prefixes):
            groups[pre].append(i)
        out = np.empty(n)
        for pre, idx in groups.items():
            P = self._prefix_root(pre, left_outer)
            if suffixes is None:
                core = P.expand(len(idx), *P.shape)
            else:
                sel = torch.tensor([where[suffixes[i]] for i in idx], device=S_all.device)
                core = P @ S_all[sel]  # [m, r1, r2]
            core = core.to(torch.float64)
            if self.metric == "frobenius":
                v = torch.linalg.matrix_norm(core)
            elif min(core.shape[-2:]) == 0:
                v = torch.zeros(core.shape[0], dtype=torch.float64)
            else:
                v = torch.linalg.matrix_norm(core, ord=2)
            out[idx] = v.cpu().numpy()
        return out

    def _prefix_root(self, keys: tuple, outer: bool) -> torch.Tensor:
        """R with RᵀR = PᵀP for P the product of ``keys``; ``rows(R) ≤ cols(R)``."""
        ck = ("prefix", keys)
        if ck in self._roots:
            return self._roots[ck]
        if len(keys) == 1:
            R = self._left_root(keys[0][0]) if outer else self.ctx.tensor(keys[0])
        else:
            R = self._prefix_root(keys[:-1], outer) @ self.ctx.tensor(keys[-1])
        if R.shape[-2] > R.shape[-1]:
            R = torch.linalg.qr(R, mode="r")[1]
        self._remember(ck, R)
        return R

    def _suffix_root(self, keys: tuple, outer: bool) -> torch.Tensor:
        """L with LLᵀ = SSᵀ for S the product of ``keys``; ``cols(L) ≤ rows(L)``."""
        ck = ("suffix", keys)
        if ck in self._roots:
            return self._roots[ck]
        if len(keys) == 1:
            last = keys[0]
            if outer:
                L = self._left_root(last[0]).mT if last[2] else self._right_root(last[0])
            else:
                L = self.ctx.tensor(last)
        else:
            L = self.ctx.tensor(keys[0]) @ self._suffix_root(keys[1:], outer)
        if L.shape[-1] > L.shape[-2]:
            L = torch.linalg.qr(L.mT, mode="r")[1].mT
        self._remember(ck, L)
        return L

    def _copying_cached(self, keys: list[list[Key]], left_outer: bool, right_outer: bool):
        """Re Σλ/Σ|λ|: the chain (closed through ``T S`` when both ends are outer) rotated to
        start at its thinnest point and split there into X Y; eig(X Y) = eig(Y X)."""
        from .weight_detect import _copying_stats

        n = len(keys)
        k0 = keys[0]
        rows = self.ctx.tensor(k0[0]).shape[-2]
        cols = self.ctx.tensor(k0[-1]).shape[-1]
        if rows != cols:
            nan = np.full(n, math.nan)
            return nan, {"positive_share": nan.copy()}
        chains = []
        for t in keys:
            c = list(t[1:-1]) + [("__cyclic__", (t[-1], t[0]), False)] if left_outer and right_outer else list(t)
            chains.append(c)
        dims = [self._shape(c)[0] for c in chains[0]]  # rows of each factor = dims d_0 .. d_{k-1}
        p = int(np.argmin(dims))
        chains = [c[p:] + c[:p] for c in chains]
        dims = dims[p:] + dims[:p]
        if len(dims) > 1:
            inner = dims[1:]
            j = 1 + int(np.argmin(inner))
            X = torch.stack([self._product(tuple(c[:j])) for c in chains])
            Y = torch.stack([self._product(tuple(c[j:])) for c in chains])
            core = X @ Y
        else:
            core = torch.stack([self._product(tuple(c)) for c in chains])
        score, pos = _copying_stats(torch.linalg.eigvals(core.to(torch.float64)))
        return score.cpu().numpy(), {"positive_share": pos.cpu().numpy()}

    def _shape(self, key) -> tuple[int, int]:
        return tuple(self._tensor(key).shape[-2:])

    def _tensor(self, key) -> torch.Tensor:
        if key[0] == "__cyclic__":
            return self._cyclic(*key[1])
        return self.ctx.tensor(key)

    def _product(self, keys: tuple) -> torch.Tensor:
        """Product of ``keys`` left to right, every proper prefix cached."""
        ck = ("product", keys)
        if ck in self._roots:
            return self._roots[ck]
        if len(keys) == 1:
            out = self._tensor(keys[0])
        else:
            out = self._product(keys[:-1]) @ self._tensor(keys[-1])
        self._remember(ck, out)
        return out

    def _chain_elements(self, keys: list[Key]) -> int:
        """Elements of one term's per-term factors (the ones the null replaces and batches)."""
        return sum(self.ctx.tensor(k).shape[-2] * self.ctx.tensor(k).shape[-1] for k in keys if k[1])

    def _gather(self, keys: list[Key]) -> torch.Tensor:
        name, index, transposed = keys[0]
        if not index:
            return self.ctx.tensor(keys[0])
        t = self.ctx.get(name)
        idx = [torch.tensor([k[1][a] for k in keys], device=t.device) for a in range(len(index))]
        g = t[tuple(idx)]
        return g.mT if transposed else g

    # outer reductions ---------------------------------------------------------------------
    def _left_root(self, name: str) -> torch.Tensor:
        """R with Rᵀ R = SᵀS (``d_model × d_model``) for a tall S, else S itself."""
        key = ("left", name)
        if key not in self._roots:
            S = self.ctx.get(name)
            if S.shape[0] <= S.shape[1]:
                self._roots[key] = S
            else:
                lam, V = torch.linalg.eigh((S.mT @ S).to(torch.float64))
                R = lam.clamp_min(0).sqrt()[:, None] * V.mT
                self._roots[key] = R.to(S.dtype)
        return self._roots[key]

    def _right_root(self, name: str) -> torch.Tensor:
        """L with L Lᵀ = T Tᵀ for a wide T (``W_U``), else T itself."""
        key = ("right", name)
        if key not in self._roots:
            T = self.ctx.get(name)
            if T.shape[1] <= T.shape[0]:
                self._roots[key] = T
            else:
                lam, V = torch.linalg.eigh((T @ T.mT).to(torch.float64))
                self._roots[key] = (V * lam.clamp_min(0).sqrt()[None, :]).to(T.dtype)
        return self._roots[key]

    def _cyclic(self, last: Key, first: Key) -> torch.Tensor:
        """T S (``d_model × d_model``) for the chain's last and first outer factors."""
        key = ("cyclic", last, first)
        if key not in self._roots:
            self._roots[key] = self.ctx.tensor(last) @ self.ctx.tensor(first)
        return self._roots[key]

    def _ends(self, factors, first, last, left_outer, right_outer):
        f = list(factors)
        if left_outer:
            f[0] = self._left_root(first[0])
        if right_outer:
            f[-1] = self._left_root(last[0]).mT if last[2] else self._right_root(last[0])
        return f

    # metrics ------------------------------------------------------------------------------
    def _metric(self, factors, first, last, left_outer, right_outer, n):
        if self.metric == "copying":
            return self._copying(factors, first, last, left_outer, right_outer, n)
        M = Factored(*self._ends(factors, first, last, left_outer, right_outer))
        v = M.norm() if self.metric == "frobenius" else M.spectral_norm()
        return _per_term(v, n), {}

    def _copying(self, factors, first, last, left_outer, right_outer, n):
        from .weight_detect import _copying_stats

        rows = factors[0].shape[-2]
        cols = factors[-1].shape[-1]
        if left_outer and right_outer:
            square = rows == cols
            chain = list(factors[1:-1]) + [self._cyclic(last, first)] if square else None
        else:
            square = rows == cols
            chain = list(factors) if square else None
        if chain is None:
            nan = np.full(n, math.nan)
            return nan, {"positive_share": nan.copy()}
        score, pos = _copying_stats(Factored(*chain).eigenvalues())
        return _per_term(score, n), {"positive_share": _per_term(pos, n)}

    def _null(self, factors, keys, first, last, left_outer, right_outer, n) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls)
        self._calls += 1
        out = []
        for i, f in enumerate(factors):
            fixed = (i == 0 and left_outer) or (i == len(factors) - 1 and right_outer) or keys[i][0] == "I"
            if fixed:
                out.append(f)
                continue
            batch = f.shape[:-2] if f.ndim > 2 else (1,)  # [n_null, n | 1, rows, cols]
            G = torch.randn((self.n_null, *batch, *f.shape[-2:]), generator=g, dtype=torch.float64)
            G = G.to(device=f.device, dtype=f.dtype)
            scale = torch.linalg.matrix_norm(f) / torch.linalg.matrix_norm(G)
            out.append(G * scale[..., None, None])
        vals, _ = self._metric(out, first, last, left_outer, right_outer, 1)
        if vals.size == 1:  # nothing random in this chain (e.g. W_E W_U): the null is the value
            return np.full(n, float(vals[0]))
        vals = np.broadcast_to(vals.reshape(self.n_null, -1), (self.n_null, n))
        return np.nanmean(vals, axis=0)


def _per_term(v: torch.Tensor, n: int) -> np.ndarray:
    """Values ``[..., n]`` (or a shared scalar) as a float64 numpy vector of length n."""
    a = v.detach().double().cpu().numpy()
    if a.ndim == 0:
        return np.full(n, float(a))
    a = a.reshape(-1)
    if a.size == 1 and n != 1:
        return np.full(n, float(a[0]))
    return a


def _row(term, value: float, extra: dict[str, Any]) -> Row:
    if hasattr(term, "query_path"):
        extra = {"key_path": tuple(term.key_path), "softmax_invariant": term.softmax_invariant, **extra}
        path = tuple(term.query_path)
    else:
        path = tuple(term.path)
    depth = term.depth
    return Row(term.name, term.kind, int(depth), path, float(value),
               extra={k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in extra.items()})


def _check_arch(expansion, w) -> Architecture:
    aw = Architecture.from_weights(w)
    ea = getattr(expansion, "arch", None)
    if ea is None:
        return aw
    fields = ("n_layers", "n_heads", "mlp", "layernorm", "positional")
    diff = [f for f in fields if getattr(ea, f) != getattr(aw, f)]
    if diff:
        raise PathexpandError(
            "the expansion's architecture does not match the weights: "
            + ", ".join(f"{f} {getattr(ea, f)!r} vs {getattr(aw, f)!r}" for f in diff)
            + "; expand pe.Architecture.from_weights(weights) instead"
        )
    return ea


def _terms(expansion, positional: bool, arch) -> list:
    n = getattr(expansion, "n_terms", None)
    if n is not None and n > MAX_TERMS:
        raise PathexpandError(
            f"this expansion has {n:.3g} terms; evaluate at most {MAX_TERMS:,} — pass "
            "max_depth= to expand_logits/expand_scores (deeper paths go to the remainder)"
        )
    terms = list(expansion)
    if positional:
        if arch.positional is None:
            raise PathexpandError("positional=True needs a model with positional embeddings")

        def is_pos(t):
            if getattr(t, "is_remainder", False):
                return False
            if hasattr(t, "query_path"):
                return t.query_path[0] == "pos" and t.key_path[0] == "pos"
            return t.path[0] == "pos"

        terms = [t for t in terms if is_pos(t)]
    return terms


def _notes(metric, scope, w, terms, baseline, n_null, seed) -> list[str]:
    notes = []
    if scope == "residual":
        notes.append("scope residual: W_E/W_pos and W_U dropped (residual stream to residual stream)")
    if any(hasattr(t, "query_path") for t in terms):
        notes.append("score terms: X_q W_Q W_Kᵀ X_kᵀ before the 1/√d_head scale; path = query side")
    if any(getattr(t, "kind", "") == "mlp" or any(str(n).startswith("MLP") for n in getattr(t, "nodes", ()))
           for t in terms):
        notes.append("MLP paths: linearised MLP W_in W_out (gates frozen at 1, data-free)")
    if w.config.normalization is not None:
        notes.append("LayerNorm: readers include C diag(w); the per-position 1/σ is omitted (data-free)")
    rem = [t for t in terms if getattr(t, "is_remainder", False)]
    if rem:
        notes.append("remainder: the sum of every cut path, not evaluated")
    if metric == "copying":
        notes.append("copying = Re Σλ / Σ|λ|; NaN for non-square terms")
    if baseline == "random":
        notes.append(f"null: weight factors (not W_E/W_pos/W_U) replaced by Gaussian matrices of equal "
                     f"Frobenius norm, mean of {n_null} draws (seed {seed}); ratio = value / null")
    return notes
