"""Certified top-k paths: best-first branch and bound over path prefixes.

GPT-2 small has 13¹² paths per source, too many to list. Every prefix of a path is itself
a path (stop it there and read the logits), so the search tree's nodes are paths: a node
``P`` with field ``f`` (what ``P`` adds to the residual stream) has value ``⟨r, f⟩`` and
children ``P + (N,)`` for every node ``N`` of a later stage.

**The bound.** Every extension of ``P`` adds ``⟨b, f⟩`` where ``b = M_1ᵀ ⋯ M_mᵀ r`` is the
backward vector of its suffix ``M_1 … M_m``. Per position, ``|⟨b, f⟩| ≤ Σ_p ‖b_p‖ ‖f_p‖``,
and the per-position norms of any suffix's ``b`` are bounded elementwise by ``β``:

- the readout: ``β[p] = ‖r_p‖`` (the target's gradient at the final residual stream);
- a frozen head ``f ↦ A · diag(1/σ) · f · M`` with ``M = C diag(w) W_V W_O``:
  ``‖(Nᵀb)_p‖ ≤ (‖M‖₂ / σ_p) Σ_q A_qp ‖b_q‖`` (``A ≥ 0``; ``‖M‖₂`` exact via a QR of
  ``C diag(w) W_V`` and an SVD of ``R W_O``);
- a frozen MLP, per position ``f_p ↦ f_p L diag(g_p) W_out / σ_p`` with ``L = C diag(w) W_in``:
  ``‖(Nᵀb)_p‖ ≤ c_p ‖b_p‖ / σ_p`` where ``c_p = ‖L diag(g_p) W_out‖₂`` is computed exactly
  (top eigenvalue of the ``d × d`` Gram matrix per position) up to ``2·10¹⁰`` flops a layer,
  else bounded by ``min(‖L diag(g_p) W_out‖_F, ‖L‖₂ max|g_p| ‖W_out‖₂)``
  (``‖·‖_F² = gᵀ((LᵀL) ∘ (W_out W_outᵀ))g``: no ``d × d`` matrix per position).

These maps are monotone in ``β``, so ``β*_s`` = elementwise max over the stages ``≥ s`` of
(skip, or each node's map applied to ``β_{s+1}``) bounds every non-empty suffix starting at
stage ``≥ s``. An elementwise max over suffixes that weigh different positions adds up
their masses, so a second, scalar bound caps each suffix's total ``Σ_p ‖b_p‖ ≤ ν*_s``: in
the max-over-positions norm a frozen pattern is a contraction (rows ``≥ 0`` summing to 1),
and ``Σ_p (Nᵀb)_p = Σ_q w_q ‖b_q‖`` with ``w_q = ‖M‖₂ Σ_p A_qp / σ_p`` for a head and
``c_q / σ_q`` for the MLP, maximised over the previous stage's ``(β, ν)`` (``suffix_bounds``).
Then ``|any strict extension of P| ≤ max {Σ_p ‖f_p‖ x_p : 0 ≤ x ≤ β*_{next}, Σ x ≤ ν*_{next}}``,
a fractional knapsack (``SuffixBounds.of``).

**Pairs.** A product of per-node norms forgets direction: two maps rarely align their top
singular vectors, so ``‖M_N M_N'‖₂`` is often well below ``‖M_N‖₂ ‖M_N'‖₂``, and along a deep
model the composite of many stages shrinks where the product of their norms grows. So the
dynamic programme splits every suffix into consecutive pairs of nodes and charges each pair
its composite norm (``_pair_ratios``: per head pair from ``e × e`` factors, per position where
an MLP takes part), nearest stage pairs first within a flop budget and, in a timed search,
within three quarters of ``budget_seconds``. Bounds are computed in float64 and widened by
``1 + 10⁻⁹`` (float64) or ``1 + 10⁻⁴`` (float32) against rounding.

The search pops the prefix with the largest bound until that bound is no larger than the
k-th largest ``|value|`` found (then the listed paths are the true top-k), or a budget
runs out. The **certificate** is the largest ``|contribution|`` any unlisted path can have:
the max of the bounds left in the queue or pruned and the ``|value|`` of evaluated paths
that did not make the list.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import PathexpandError, check_int, check_number
from ..names import path_info
from ..ranking import Ranking, Result
from . import norm
from ._progress import progress as progress_bar
from ._progress import progress_counter
from .frozen import CONSTANTS, Frozen, freeze
from .targets import own_target, resolve_target
from .tokens import as_tokens
from .weights import as_weights

__all__ = ["top_k_paths", "TopK", "SuffixBounds", "suffix_bounds", "target_bounds"]

_FIELD_BYTES = 2**28  # keep prefix fields in the queue up to this much, then replay paths


@dataclass(repr=False)  # repr: Result's one-line summary
class TopK(Result):
    """The ``k`` largest paths (by ``|contribution|``) with a proof about the rest.

    ``values`` are exact contributions (summed over prompts and target positions);
    ``certificate`` bounds ``|contribution|`` of every unlisted path; ``certified`` says the
    listed paths are the true top-k (the search finished: ``certificate ≤ |values[-1]|``).
    When a budget stopped the search first they are only the largest found, and every output
    (``summary``, the ranking's title and notes, ``to_dict``) says so, with the bound beside the
    k-th listed value.
    ``total`` is the sum over all paths (the target minus its constants ``b_U``,
    ``ln_final.b``); ``explained = Σ values / total``.
    """

    paths: list[tuple[str, ...]]
    values: np.ndarray
    certificate: float
    complete: bool
    total: float
    output: float
    constants: dict[str, float]
    visited: int
    expanded: int
    seconds: float
    target_label: str
    stopped_by: str | None = None
    notes: list[str] = field(default_factory=list)
    path_values: np.ndarray | None = None   # [k, batch, T]: each listed path per prompt and position

    @property
    def explained(self) -> float:
        """Share of the target (without constants) the listed paths explain."""
        return float(self.values.sum() / self.total) if self.total else float("nan")

    @property
    def names(self) -> list[str]:
        return [path_info(p)[0] for p in self.paths]

    @property
    def certified(self) -> bool:
        """True when the listed paths are proven to be the top k (the search finished)."""
        return bool(self.complete)

    @property
    def n_certified(self) -> int:
        """How many of the leading listed paths are proven to be the largest of all paths:
        those with ``|value| ≥ certificate`` (every path listed, when the search finished)."""
        if self.complete:
            return len(self.paths)
        return int((np.abs(self.values) >= self.certificate).sum())

    def status(self) -> str:
        """One line: certified, or not, with the bound beside the k-th listed value."""
        kth = float(np.abs(self.values).min()) if len(self.values) else float("nan")
        if self.certified:
            return (f"certified top {len(self.paths)}: no unlisted path exceeds |c| = "
                    f"{self.certificate:.3g} (k-th listed |c| = {kth:.3g})")
        proven = (f"; the first {self.n_certified} are proven the largest" if self.n_certified
                  else "")
        gap = (f"({self.certificate / kth:.3g}× apart)" if kth > 0
               else "(the k-th listed |c| is 0)" if kth == 0 else "(none listed)")
        return (f"NOT certified: the search stopped ({self.stopped_by}) before it could prove "
                f"these are the top {len(self.paths)}; an unlisted path may reach |c| = "
                f"{self.certificate:.3g}, against a k-th listed |c| of {kth:.3g} "
                f"{gap}{proven}")

    def title(self) -> str:
        """The ranking's title: "top paths of …" when certified, else "largest paths found (not
        certified) of …" (also the title of ``Attribution.ranking("path")`` past ``max_paths``)."""
        return (f"top paths of {self.target_label}" if self.certified
                else f"largest paths found (not certified) of {self.target_label}")

    def ranking(self) -> Ranking:
        """The listed paths as a ``Ranking`` (largest ``|value|`` first); its title and notes say
        whether they are certified."""
        rows = [dict(zip(("name", "kind", "depth"), path_info(p)), path=p, value=float(v))
                for p, v in zip(self.paths, self.values)]
        title = self.title()
        shares = self.total > 0
        share_note = ("share = contribution / the sum over every path (the target minus its "
                      "constants)" if shares else "no share column: the sum over every path is "
                      f"{self.total:.4g}, and fractions of a negative or zero whole would flip sign")
        return Ranking(rows, total=self.total if shares else None, shares=shares, title=title,
                       value_label="contribution", notes=(self.status(), share_note, *self.notes),
                       by_magnitude=True)

    def summary(self) -> str:
        return (f"paths of {self.target_label}: {self.status()}; explained {self.explained:.1%}, "
                f"{self.visited} prefixes visited")

    def to_dict(self) -> dict:
        return {
            "target": self.target_label,
            "paths": self.to_records(),
            "certificate": self.certificate,
            "complete": self.complete,
            "certified": self.certified,
            "status": self.status(),
            "explained": self.explained,
            "total": self.total,
            "output": self.output,
            "constants": self.constants,
            "visited": self.visited,
            "expanded": self.expanded,
            "n_certified": self.n_certified,
            "seconds": self.seconds,
            "stopped_by": self.stopped_by,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        rows = [f"  {r.name:<28} {r.value:+.4g}" for r in self.ranking()]
        return "\n".join([self.summary(), *rows])


@dataclass(frozen=True)
class SuffixBounds:
    """Per stage ``s``, what every non-empty suffix starting at a stage ``≥ s`` can do to a field.

    A suffix's backward vector ``b`` (``value = ⟨b, f⟩``) has per-position norms ``‖b_p‖`` that
    lie, for every such suffix, below ``beta[s]`` (elementwise, ``[S + 1, b, n]``) and sum to at
    most ``nu[s]`` (``[S + 1]``). So every strict extension of a prefix ending at stage
    ``last`` with field ``f`` has ``|value| ≤ max {Σ_p ‖f_p‖ x_p : 0 ≤ x ≤ beta[last + 1],
    Σ x ≤ nu[last + 1]}`` — a fractional knapsack (``of``), never larger than either the
    per-position bound ``Σ_p ‖f_p‖ beta_p`` or the max-over-positions bound ``max_p ‖f_p‖ · nu``.
    """

    beta: object   # torch [S + 1, b, n], float64
    nu: object     # torch [S + 1], float64

    def of(self, norms, last: int):
        """Bound on ``|value|`` of every strict extension of prefixes ending at stage ``last``
        whose fields have per-position norms ``norms`` ``[*, b, n]``: ``[*]`` (float64)."""
        return _knapsack(norms.double().flatten(-2), self.beta[last + 1].flatten(), self.nu[last + 1])


def _knapsack(a, cap, budget):
    """``max Σ a_i x_i`` over ``0 ≤ x ≤ cap``, ``Σ x ≤ budget`` (``a, cap ≥ 0``): fill the
    largest ``a`` first. ``a`` ``[*, m]``, ``cap`` ``[m]`` or ``[*, m]``, ``budget`` scalar or
    ``[*]`` → ``[*]``."""
    import torch

    a_sorted, order = torch.sort(a, dim=-1, descending=True)
    c = torch.broadcast_to(cap, a.shape).gather(-1, order)
    before = torch.cumsum(c, -1) - c                          # capacity used by larger a's
    budget = torch.as_tensor(budget, dtype=c.dtype, device=c.device)
    x = torch.minimum(c, (budget[..., None] - before).clamp_min(0))
    return (a_sorted * x).sum(-1)


def target_bounds(fz: Frozen, tgt, *, deadline: float | None = None, progress: bool = False) -> SuffixBounds:
    """``suffix_bounds`` for one scalar target (summed over prompts and positions)."""
    import torch

    r = tgt.readout_vectors(fz).sum(0)                                 # [b, n, d]
    rho = torch.linalg.vector_norm(r.double(), dim=-1)                 # [b, n]
    return suffix_bounds(fz, rho, deadline=deadline, progress=progress)


def suffix_bounds(fz: Frozen, rho, *, deadline: float | None = None, progress: bool = False) -> SuffixBounds:
    """Bounds of every non-empty suffix, per stage, by dynamic programming from the readout.

    ``rho`` ``[b, n]``: per-position norms of the readout vector (the empty suffix). A node
    ``N`` maps a suffix's per-position norms ``β`` to at most ``N♯(β)`` (``_node_bounds``) and
    their sum to at most ``c_N · max {Σ_q a^N_q x_q : x ≤ β, Σ x ≤ ν}`` (a frozen pattern's
    rows are non-negative and sum to one; ``_node_sum_weights``). A suffix starting at stage
    ``s`` is one node ``N`` there, or ``N`` then a node ``N'`` of a later stage ``t`` then any
    suffix from ``t + 1``; for the pair, ``N♯(r ⊙ N'♯(β_{t+1}))`` with ``r ≤ 1`` the ratio of
    the pair's composite operator norm to the product of theirs (``_pair_ratios``; ``r = 1``
    where not computed: past ``_PAIR_FLOPS`` or the ``time.monotonic()`` ``deadline``). Over
    all suffixes the bounds are maxima: elementwise for ``β``, scalar for ``ν``.
    """
    import torch

    S = len(fz.stages)
    rho = rho.double()
    cache: dict = {}
    maps = [_stage_maps(fz, st, cache) for st in fz.stages]
    ratios = _pair_ratios(fz, maps, cache, deadline, progress)
    beta = [torch.zeros_like(rho) for _ in range(S + 1)]
    nu = [torch.zeros((), dtype=torch.float64, device=rho.device) for _ in range(S + 1)]
    ys, y_sums = [None] * S, [None] * S      # per later stage t: N'♯(β_{t+1}) [k_t, b, n], its sum bound [k_t]
    for st in reversed(fz.stages):
        s = st.index
        k = _n_nodes(maps[s])
        x = rho.expand(k, *rho.shape).clone()                      # what node N of stage s reads: [k, b, n]
        x_sum = rho.sum().expand(k).clone()                        # [k]
        for t in range(s + 1, S):
            r = ratios.get((s, t))
            if r is None:
                x = torch.maximum(x, ys[t].amax(0))
                x_sum = torch.maximum(x_sum, y_sums[t].max())
                continue
            y = r * ys[t][None]                                    # [k, k_t, b, n]
            y_sum = torch.minimum(y.flatten(2).sum(-1), r.flatten(2).amax(-1) * y_sums[t][None])
            x = torch.maximum(x, y.amax(1))
            x_sum = torch.maximum(x_sum, y_sum.amax(1))
        mapped = _node_bounds(maps[s], x)                          # [k, b, n]
        weights = _node_sum_weights(maps[s])                       # [k, b, n]
        sums = torch.minimum(mapped.flatten(1).sum(-1), _knapsack(weights.flatten(1), x.flatten(1), x_sum))
        beta[s] = torch.maximum(beta[s + 1], mapped.amax(0))
        nu[s] = torch.maximum(nu[s + 1], sums.max())
        after = torch.maximum(rho, beta[s + 1])                    # every suffix from s + 1, the empty one too
        ys[s] = _node_bounds(maps[s], after.expand(k, *rho.shape))
        y_sums[s] = torch.minimum(ys[s].flatten(1).sum(-1), _knapsack(
            weights.flatten(1), after.flatten(), torch.maximum(rho.sum(), nu[s + 1])))
    return SuffixBounds(torch.stack(beta), torch.stack(nu))


def _n_nodes(maps) -> int:
    c_heads, _, c_mlp = maps
    return (0 if c_heads is None else len(c_heads)) + (c_mlp is not None)


def _stage_maps(fz: Frozen, st, cache=None):
    """What bounds a stage's node maps on per-position norms, all float64:
    ``(c_heads [H] or None, A [b, H, q, k] or None, c_mlp [b, n] or None)`` with the norms'
    ``1/σ`` folded in (``A_qp/σ_p`` for heads, ``c_p/σ_p`` for the MLP)."""
    l = st.layer
    normed = fz.config.normalization is not None
    c_heads = A = c_mlp = None
    if st.has_heads:
        c_heads = _head_norms(fz, l, cache)                                # [H]
        A = fz.patterns[:, l].double()                                     # [b, H, q, k]
        if normed:
            A = A * fz.inv_scale[f"blocks.{l}.ln1"][..., 0].double()[:, None, None, :]
    if st.has_mlp:
        c_mlp = _mlp_norms(fz, l, cache)                                   # [b, n]
        if normed:
            c_mlp = c_mlp * fz.inv_scale[f"blocks.{l}.ln2"][..., 0].double()
    return c_heads, A, c_mlp


def _node_sum_weights(maps):
    """Per node ``N`` of a stage, ``w`` with ``Σ_p N♯(β)_p = Σ_q w_q β_q``: ``[k, b, n]``
    (a head: ``c_h Σ_p A_qp / σ_p``; the MLP: ``c_p / σ_p``)."""
    import torch

    c_heads, A, c_mlp = maps
    parts = []
    if c_heads is not None:
        parts.append(c_heads[:, None, None] * A.sum(-1).movedim(1, 0))    # [H, b, q]
    if c_mlp is not None:
        parts.append(c_mlp[None])                                          # [1, b, n]
    return torch.cat(parts)


def _node_bounds(maps, beta):
    """``N♯(β_N)`` for every node ``N`` of a stage, each on its own ``β_N`` (``beta`` ``[k, b, n]``):
    ``[k, b, n]`` (a head: ``(c_h/σ_p) Σ_q A_qp β_q``; the MLP: ``(c_p/σ_p) β_p``)."""
    import torch

    c_heads, A, c_mlp = maps
    parts = []
    H = 0 if c_heads is None else len(c_heads)
    if c_heads is not None:
        parts.append(c_heads[:, None, None] * torch.einsum("bhqk,hbq->hbk", A, beta[:H]))
    if c_mlp is not None:
        parts.append((c_mlp * beta[H])[None])
    return torch.cat(parts)


def _read_matrix(fz: Frozen, name: str, W):
    """``C diag(w) W`` (the norm's read folded into the next weight, ``numeric.norm.reader``), float64."""
    w = fz.p.get(name + ".w")
    return norm.reader(W.double(), fz.config.normalization, None if w is None else w.double()[:, None])


def _cached(cache, key, make):
    """``cache[key]``, made once by ``make()`` (``cache`` None: no caching)."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _head_factors(fz: Frozen, l: int, cache=None):
    """``(X [H, e, d], Y [H, d, e])`` with ``‖M_h‖₂ = ‖X_h‖₂``, ``‖M_h M'‖₂ = ‖X_h M'‖₂`` and
    ``‖M' M_h‖₂ = ‖M' Y_h‖₂`` for ``M_h = C diag(w) W_V^h W_O^h`` (QR of both factors)."""
    import torch

    def make():
        a = f"blocks.{l}.attn"
        X, Y = [], []
        for h in range(fz.config.n_heads):
            V = _read_matrix(fz, f"blocks.{l}.ln1", fz.p[a + ".W_V"][h])   # [d, e]
            O = fz.p[a + ".W_O"][h].double()                               # [e, d]
            X.append(torch.linalg.qr(V)[1] @ O)                            # R_V O: [e, d]
            Y.append(V @ torch.linalg.qr(O.T)[1].T)                        # V R_Oᵀ: [d, e]
        return torch.stack(X), torch.stack(Y)

    return _cached(cache, ("head", l), make)


def _head_norms(fz: Frozen, l: int, cache=None):
    """``‖C diag(w) W_V^h W_O^h‖₂`` per head of layer ``l`` (QR of the left factor, small SVD)."""
    return _cached(cache, ("head norms", l), lambda: _spectral_norm(_head_factors(fz, l, cache)[0]))


_EXACT_MLP_FLOPS = 2e10  # below this, per-position MLP norms are computed exactly
_FROBENIUS_FLOPS = 1e10  # below this, also the Frobenius bound (two m × m Gram matrices)
_PAIR_FLOPS = 1e12       # budget for the pair ratios, nearest stage pairs first (~1 min on 2 cores)
_PAIR_MLP_BYTES = 2**30  # keep every layer's per-position MLP matrices up to this much


def _spectral_norm(M):
    """``‖M‖₂`` of each matrix in ``M`` ``[*, d, e]`` (float64), from the eigenvalues of the
    smaller Gram matrix (cheaper than an SVD; the largest eigenvalue is exact to rounding)."""
    import torch

    G = M @ M.transpose(-1, -2) if M.shape[-2] <= M.shape[-1] else M.transpose(-1, -2) @ M
    return torch.linalg.eigvalsh(G)[..., -1].clamp_min(0).sqrt()


def _mlp_matrices_fit(fz: Frozen) -> bool:
    """Whether every layer's per-position MLP matrices fit in ``_PAIR_MLP_BYTES``."""
    c = fz.config
    return bool(c.d_mlp) and c.n_layers * fz.batch * fz.n_pos * c.d_model ** 2 * 8 <= _PAIR_MLP_BYTES


def _mlp_matrices(fz: Frozen, l: int, cache=None):
    """``Q_p = C diag(w) W_in diag(g_p) W_out`` per prompt and position: ``[b·n, d, d]``
    (float64), or None when they do not fit (``_mlp_matrices_fit``)."""
    import torch

    if not _mlp_matrices_fit(fz):
        return None

    def make():
        m = f"blocks.{l}.mlp"
        L = _read_matrix(fz, f"blocks.{l}.ln2", fz.p[m + ".W_in"])      # [d, m]
        R = fz.p[m + ".W_out"].double()                                # [m, d]
        g = fz.gates[:, l].double().reshape(-1, L.shape[1])            # [b·n, m]
        return torch.einsum("dm,pm,me->pde", L, g, R)                  # [b·n, d, d]

    return _cached(cache, ("mlp", l), make)


def _mlp_matrix_norms(fz: Frozen, l: int, cache=None):
    """``‖Q_p‖₂`` per prompt and position ``[b·n]`` (``_mlp_matrices`` must fit)."""
    return _cached(cache, ("mlp norms", l), lambda: _spectral_norm(_mlp_matrices(fz, l, cache)))


def _mlp_norms(fz: Frozen, l: int, cache=None):
    """Upper bound on ``‖C diag(w) W_in diag(g_p) W_out‖₂`` per prompt and position: ``[b, n]``.

    Exact (one ``d × d`` matrix per position, the top eigenvalue of its Gram matrix) when that
    costs under ``2·10¹⁰`` flops for the layer; else ``‖L‖₂ max|g_p| ‖W_out‖₂``, and the smaller
    of it and the Frobenius norm when the ``m × m`` Gram matrices cost under ``10¹⁰`` flops.
    """
    import torch

    m = f"blocks.{l}.mlp"
    L = _read_matrix(fz, f"blocks.{l}.ln2", fz.p[m + ".W_in"])          # [d, m]
    R = fz.p[m + ".W_out"].double()                                    # [m, d]
    g = fz.gates[:, l].double()                                        # [b, n, m]
    d, dm = L.shape
    if fz.batch * fz.n_pos * d * d * (2 * dm + 12 * d) <= _EXACT_MLP_FLOPS:
        if _mlp_matrices_fit(fz):
            return _mlp_matrix_norms(fz, l, cache).reshape(g.shape[:-1])
        flat = g.reshape(-1, dm)                                       # [b·n, m]
        step = max(1, 2**26 // (d * max(d, dm)))   # [step, d, m] and [step, d, d] float64 ≤ 512 MB
        out = [_spectral_norm((L * flat[i:i + step, None, :]) @ R) for i in range(0, len(flat), step)]
        return torch.cat(out).reshape(g.shape[:-1])
    prod = _spectral_norm(L) * _spectral_norm(R) * g.abs().amax(-1)
    if 4 * d * dm * dm > _FROBENIUS_FLOPS:       # the m × m Gram matrices cost more than they give
        return prod
    K = (L.T @ L) * (R @ R.T)                                          # [m, m]
    frob = torch.einsum("bnm,mk,bnk->bn", g, K, g).clamp_min(0).sqrt()
    return torch.minimum(frob, prod)


def _pair_ratios(fz: Frozen, maps, cache, deadline=None, progress: bool = False) -> dict:
    """``{(s, t): r [k_s, k_t, b or 1, n or 1]}``: for node ``N`` of stage ``s`` and ``N'`` of a
    later stage ``t``, ``‖M_N M_N'‖₂ / (‖M_N‖₂ ‖M_N'‖₂) ≤ 1`` at the position between them
    (heads: ``M = C diag(w) W_V W_O``, one ratio; MLPs: ``Q_p``, one per position).

    Nearest stage pairs first, while their flops stay within ``_PAIR_FLOPS`` and the clock
    before ``deadline``; pairs left out get no ratio (the suffix bound then multiplies the two
    norms, as for a single node).
    """
    c = fz.config
    S = len(fz.stages)
    H, d, e, bn = c.n_heads, c.d_model, c.d_head, fz.batch * fz.n_pos
    has_q = _mlp_matrices_fit(fz)

    def cost(st, st2) -> float:
        f = 0.0
        if st.has_heads and st2.has_heads:
            f += H * H * (2 * e * d * e + 12 * e ** 3)
        if has_q:
            mixed = (st.has_heads and st2.has_mlp) + (st.has_mlp and st2.has_heads)
            f += mixed * H * bn * (2 * e * d * d + 12 * e * e * d) + (st.has_mlp and st2.has_mlp) * bn * 16 * d ** 3
        return f

    order = sorted((t - s, s, t) for s in range(S) for t in range(s + 1, S))
    spent, out = 0.0, {}
    for _, s, t in progress_bar(order, progress, "bounding pairs of stages"):
        st, st2 = fz.stages[s], fz.stages[t]
        f = cost(st, st2)
        if f == 0.0 or spent + f > _PAIR_FLOPS:
            continue
        if deadline is not None and time.monotonic() >= deadline:
            break
        spent += f
        out[(s, t)] = _ratio_block(fz, st, st2, maps[s], maps[t], has_q, cache)
    return out


def _ratio_block(fz: Frozen, st, st2, maps, maps2, has_q, cache):
    """The ratios of one stage pair (``_pair_ratios``): ``[k_s, k_t, b, n]`` (float64)."""
    import torch

    b, n = fz.batch, fz.n_pos
    k, k2 = _n_nodes(maps), _n_nodes(maps2)
    r = torch.ones(k, k2, b, n, dtype=torch.float64)
    H = fz.config.n_heads

    def ratio(num, den):
        return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).clamp(max=1.0)

    if st.has_heads:
        X, _ = _head_factors(fz, st.layer, cache)
        c1 = _head_norms(fz, st.layer, cache)                                    # [H]
    if st2.has_heads:
        _, Y2 = _head_factors(fz, st2.layer, cache)
        c2 = _head_norms(fz, st2.layer, cache)                                   # [H]
    Q = _mlp_matrices(fz, st.layer, cache) if has_q and st.has_mlp else None     # [b·n, d, d]
    Q2 = _mlp_matrices(fz, st2.layer, cache) if has_q and st2.has_mlp else None
    if Q is not None:
        cp = _mlp_matrix_norms(fz, st.layer, cache)                              # [b·n]
    if Q2 is not None:
        cq = _mlp_matrix_norms(fz, st2.layer, cache)                             # [b·n]
    if st.has_heads and st2.has_heads:                                           # ‖X_h M'_g‖ = ‖X_h Y'_g‖
        num = _spectral_norm(torch.einsum("hed,gdf->hgef", X, Y2))               # [H, H]
        r[:H, :H] = ratio(num, c1[:, None] * c2[None])[..., None, None]
    if st.has_heads and Q2 is not None:                                          # ‖M_h Q'_q‖ = ‖X_h Q'_q‖
        num = _spectral_norm(torch.einsum("hed,pdf->hpef", X, Q2))               # [H, b·n]
        r[:H, H if st2.has_heads else 0] = ratio(num, c1[:, None] * cq[None]).reshape(H, b, n)
    if Q is not None and st2.has_heads:                                          # ‖Q_p M'_g‖ = ‖Q_p Y'_g‖
        num = _spectral_norm(torch.einsum("pde,gef->gpdf", Q, Y2))               # [H, b·n]
        r[H if st.has_heads else 0, :H] = ratio(num, c2[:, None] * cp[None]).reshape(H, b, n)
    if Q is not None and Q2 is not None:
        num = _spectral_norm(Q @ Q2)                                             # [b·n]
        r[-1, -1] = ratio(num, cp * cq).reshape(b, n)
    return r


def top_k_paths(
    model,
    tokens,
    *,
    target=None,
    diff=None,
    positions=None,
    k: int = 10,
    budget_nodes: int | None = None,
    budget_seconds: float | None = None,
    device=None,
    dtype=None,
    progress: bool = False,
) -> TopK:
    """The ``k`` paths with the largest ``|contribution|`` to ``target``, certified.

    The lower-level call: ``pe.attribute(..., views=("path", ...), max_paths=k)`` on a model with
    more than ``k`` paths runs this same search (``search``, same certificate, same rows and
    title) and adds the exact remainder and the node and edge views; this returns only the
    search (no node/edge views, no remainder; per-prompt values in ``path_values``).

    ``target``/``diff``/``positions``/``tokens`` as in ``attribute`` (the scalar explained is
    the target summed over prompts and positions; ``"logits"`` is refused: rank one token or
    a difference). ``budget_nodes`` caps the prefixes evaluated, ``budget_seconds`` the
    time (both checked before each expansion, which evaluates every child of one prefix);
    when one runs out the result says so and its certificate is weaker (still proven).
    One forward pass, then one batch of node maps per expanded prefix; memory: the queued
    prefixes' fields up to 256 MB, after which a popped prefix is replayed from its path.
    """
    import torch

    check_int("k", k, 1)
    if budget_nodes is not None:
        check_int("budget_nodes", budget_nodes, 1)
    if budget_seconds is not None:
        check_number("budget_seconds", budget_seconds)
    weights = as_weights(model)
    tokens = as_tokens(weights, tokens)
    start = time.monotonic()
    with torch.no_grad():
        fz = freeze(weights, tokens, device=device, dtype=dtype)
        if target is None and diff is None:
            tgt = own_target(fz, weights, positions)
        else:
            tgt = resolve_target(weights, target, diff, positions, tokens.shape)
        if tgt.U is None:
            raise PathexpandError(
                "top_k_paths ranks paths of one number; target='logits' is many. Give a token, "
                "('diff', a, b) or a vector"
            )
        return search(fz, tgt, k, budget_nodes, budget_seconds, progress, start)


def search(fz: Frozen, tgt, k, budget_nodes, budget_seconds, progress, start) -> TopK:
    """The best-first search itself, on a frozen model and a resolved one-number target
    (``top_k_paths`` and the attribution's path view past ``max_paths`` both call it);
    ``start``: the ``time.monotonic()`` the time budget counts from."""
    import torch

    widen = 1 + (1e-9 if fz.dtype == torch.float64 else 1e-4)
    # the pair ratios stop at 3/4 of the time budget, leaving the rest to the search
    bounds = target_bounds(fz, tgt, deadline=None if budget_seconds is None else start + 0.75 * budget_seconds,
                           progress=progress)

    counter = itertools.count()
    heap: list = []
    best: list = []             # min-heap of (|v|, tie, v, path, per-prompt values [b, K])
    state = {"others": 0.0, "pruned": 0.0, "visited": 0, "field_bytes": 0}

    def kth() -> float:
        return best[0][0] if len(best) == k else 0.0

    def visit(paths, fields, last):
        """Evaluate the prefixes ``paths`` (fields ``[j, b, n, d]``, all ending at stage ``last``)."""
        parts = tgt.readout(fz, fields).double()                      # [j, b, K]
        values = parts.flatten(1).sum(-1).tolist()
        state["visited"] += len(paths)
        inner = last + 1 < len(fz.stages)
        if inner:
            bnds = (bounds.of(torch.linalg.vector_norm(fields.double(), dim=-1), last) * widen).tolist()
        for i, (path, v) in enumerate(zip(paths, values)):
            item = (abs(v), next(counter), v, path, parts[i])
            if len(best) < k:
                heapq.heappush(best, item)
            elif item[0] > best[0][0]:
                out = heapq.heappushpop(best, item)
                state["others"] = max(state["others"], out[0])
            else:
                state["others"] = max(state["others"], item[0])
            if not inner:
                continue
            if bnds[i] <= kth():
                state["pruned"] = max(state["pruned"], bnds[i])
                continue
            f = fields[i]
            keep = f if state["field_bytes"] < _FIELD_BYTES else None
            if keep is not None:
                state["field_bytes"] += f.numel() * f.element_size()
            heapq.heappush(heap, (-bnds[i], next(counter), path, keep, last))

    for src in fz.sources():
        if src.entry is not None:
            visit([(src.name, n) for n in src.readers], fz.ln_bias_stage(src.name), src.entry)
        else:
            visit([(src.name,)], fz.source_field(src.name)[None], src.birth)

    expanded = 0
    stopped_by = None
    tick = progress_counter(progress, "searching paths")
    while heap:
        if -heap[0][0] <= kth():
            break
        if budget_nodes is not None and state["visited"] >= budget_nodes:
            stopped_by = "budget_nodes"
            break
        if budget_seconds is not None and time.monotonic() - start >= budget_seconds:
            stopped_by = "budget_seconds"
            break
        _, _, path, f, last = heapq.heappop(heap)
        if f is None:
            f = fz.path_field(path)
        else:
            state["field_bytes"] -= f.numel() * f.element_size()
        expanded += 1
        for st in fz.stages[last + 1:]:
            visit([path + (n,) for n in st.nodes], fz.stage(f, st), st.index)
        tick(state["visited"])
    tick(None)

    left = max((-h[0] for h in heap), default=0.0)
    listed = sorted(best, key=lambda t: -t[0])
    certificate = max(left, state["pruned"], state["others"])
    complete = stopped_by is None
    out_val = float(tgt.of_logits(None, fz).sum())
    consts = {
        name: float(tgt.of_logits(fz.constant(name), fz).sum())
        for name in CONSTANTS
        if name == "b_U" or norm.has_bias(fz.config.normalization)
    }
    notes = []
    if not complete:
        notes.append(
            f"stopped by {stopped_by} after {state['visited']} prefixes: the listed paths are the "
            f"largest found, and no unlisted path exceeds |c| = {certificate:.3g} (a weaker bound "
            "than a finished search gives)"
        )
    return TopK(
        paths=[t[3] for t in listed],
        values=np.array([t[2] for t in listed], dtype=np.float64),
        path_values=(torch.stack([t[4] for t in listed]).cpu().numpy() if listed
                     else np.zeros((0, fz.batch, len(tgt.positions)))),
        certificate=float(certificate),
        complete=complete,
        total=out_val - sum(consts.values()),
        output=out_val,
        constants=consts,
        visited=state["visited"],
        expanded=expanded,
        seconds=time.monotonic() - start,
        target_label=tgt.label,
        stopped_by=stopped_by,
        notes=notes,
    )
