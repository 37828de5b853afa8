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
  ``‖(Nᵀb)_p‖ ≤ c_p ‖b_p‖ / σ_p`` where ``c_p = ‖L diag(g_p) W_out‖₂`` computed exactly when
  cheap (small models), else bounded by ``min(‖L diag(g_p) W_out‖_F, ‖L‖₂ max|g_p| ‖W_out‖₂)``
  (``‖·‖_F² = gᵀ((LᵀL) ∘ (W_out W_outᵀ))g``: no ``d × d`` matrix per position).

These maps are monotone in ``β``, so ``β*_s`` = elementwise max over the stages ``≥ s`` of
(skip, or each node's map applied to ``β_{s+1}``) bounds every non-empty suffix starting at
stage ``≥ s``, and ``|any strict extension of P| ≤ Σ_p ‖f_p‖ β*_{next}[p]``. Bounds are
computed in float64 and widened by ``1 + 10⁻⁹`` (float64) or ``1 + 10⁻⁴`` (float32) against rounding.

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
from ._progress import progress_counter
from .frozen import CONSTANTS, Frozen, freeze
from .targets import own_target, resolve_target
from .tokens import as_tokens
from .weights import as_weights

__all__ = ["top_k_paths", "TopK", "suffix_bounds"]

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

    def status(self) -> str:
        """One line: certified, or not, with the bound beside the k-th listed value."""
        kth = float(np.abs(self.values).min()) if len(self.values) else float("nan")
        if self.certified:
            return (f"certified top {len(self.paths)}: no unlisted path exceeds |c| = "
                    f"{self.certificate:.3g} (k-th listed |c| = {kth:.3g})")
        return (f"NOT certified: the search stopped ({self.stopped_by}) before it could prove "
                f"these are the top {len(self.paths)}; an unlisted path may reach |c| = "
                f"{self.certificate:.3g}, against a k-th listed |c| of {kth:.3g}")

    def ranking(self) -> Ranking:
        """The listed paths as a ``Ranking`` (largest ``|value|`` first); its title and notes say
        whether they are certified."""
        rows = [dict(zip(("name", "kind", "depth"), path_info(p)), path=p, value=float(v))
                for p, v in zip(self.paths, self.values)]
        title = (f"top paths of {self.target_label}" if self.certified
                 else f"largest paths found (not certified) of {self.target_label}")
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
            "seconds": self.seconds,
            "stopped_by": self.stopped_by,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        rows = [f"  {r.name:<28} {r.value:+.4g}" for r in self.ranking()]
        return "\n".join([self.summary(), *rows])


def suffix_bounds(fz: Frozen, rho):
    """``β*`` per stage: ``[S + 1, b, n]`` float64; ``β*[s]`` bounds the per-position norms of
    the backward vector of every non-empty suffix whose first node is at stage ``≥ s``."""
    import torch

    S = len(fz.stages)
    b_e = rho.clone()                                   # every suffix from stage S: only the empty one
    b_star = [torch.zeros_like(rho) for _ in range(S + 1)]
    for st in reversed(fz.stages):
        mapped = _node_bounds(fz, st, b_e)              # [k, b, n]
        m = mapped.amax(0)
        b_star[st.index] = torch.maximum(b_star[st.index + 1], m)
        b_e = torch.maximum(b_e, m)
    return torch.stack(b_star)


def _node_bounds(fz: Frozen, st, beta):
    """``N♯(β)`` for every node of a stage: ``[k, b, n]`` (float64)."""
    import torch

    l = st.layer
    normed = fz.config.normalization is not None
    parts = []
    if st.has_heads:
        c = _head_norms(fz, l)                                         # [H]
        A = fz.patterns[:, l].double()                                 # [b, H, q, k]
        spread = torch.einsum("bhqk,bq->hbk", A, beta)                # Σ_q A_qp β_q
        out = c[:, None, None] * spread
        parts.append(out * fz.inv_scale[f"blocks.{l}.ln1"][..., 0].double()[None] if normed else out)
    if st.has_mlp:
        out = (_mlp_norms(fz, l) * beta)[None]                        # [1, b, n]
        parts.append(out * fz.inv_scale[f"blocks.{l}.ln2"][..., 0].double()[None] if normed else out)
    return torch.cat(parts)


def _read_matrix(fz: Frozen, name: str, W):
    """``C diag(w) W`` (the norm's read folded into the next weight, ``numeric.norm.reader``), float64."""
    w = fz.p.get(name + ".w")
    return norm.reader(W.double(), fz.config.normalization, None if w is None else w.double()[:, None])


def _head_norms(fz: Frozen, l: int):
    """``‖C diag(w) W_V^h W_O^h‖₂`` per head of layer ``l`` (QR of the left factor, small SVD)."""
    import torch

    a = f"blocks.{l}.attn"
    out = []
    for h in range(fz.config.n_heads):
        left = _read_matrix(fz, f"blocks.{l}.ln1", fz.p[a + ".W_V"][h])     # [d, e]
        _, R = torch.linalg.qr(left)
        out.append(torch.linalg.matrix_norm(R @ fz.p[a + ".W_O"][h].double(), ord=2))
    return torch.stack(out)


_EXACT_MLP_FLOPS = 2e9  # below this, per-position MLP norms are computed exactly


def _mlp_norms(fz: Frozen, l: int):
    """Upper bound on ``‖C diag(w) W_in diag(g_p) W_out‖₂`` per prompt and position: ``[b, n]``.

    Exact (one ``d × d`` matrix and its spectral norm per position) when that costs under
    ``2·10⁹`` flops for the layer; else ``min(Frobenius, ‖L‖₂ max|g_p| ‖W_out‖₂)``.
    """
    import torch

    m = f"blocks.{l}.mlp"
    L = _read_matrix(fz, f"blocks.{l}.ln2", fz.p[m + ".W_in"])          # [d, m]
    R = fz.p[m + ".W_out"].double()                                    # [m, d]
    g = fz.gates[:, l].double()                                        # [b, n, m]
    d, dm = L.shape
    if fz.batch * fz.n_pos * d * d * dm <= _EXACT_MLP_FLOPS:
        M = torch.einsum("dm,bnm,me->bnde", L, g, R)
        return torch.linalg.matrix_norm(M, ord=2)
    K = (L.T @ L) * (R @ R.T)                                          # [m, m]
    frob = torch.einsum("bnm,mk,bnk->bn", g, K, g).clamp_min(0).sqrt()
    prod = torch.linalg.matrix_norm(L, ord=2) * torch.linalg.matrix_norm(R, ord=2) * g.abs().amax(-1)
    return torch.minimum(frob, prod)


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
        return _search(fz, tgt, k, budget_nodes, budget_seconds, progress, start)


def _search(fz: Frozen, tgt, k, budget_nodes, budget_seconds, progress, start) -> TopK:
    import torch

    widen = 1 + (1e-9 if fz.dtype == torch.float64 else 1e-4)
    r = tgt.readout_vectors(fz).sum(0)                                 # [b, n, d]
    rho = torch.linalg.vector_norm(r.double(), dim=-1)                 # [b, n]
    beta = suffix_bounds(fz, rho) * widen                              # [S + 1, b, n]

    def value_of(f) -> float:
        return float(tgt.readout(fz, f).sum())

    def bound_of(f, last) -> float:
        return float((torch.linalg.vector_norm(f.double(), dim=-1) * beta[last + 1]).sum())

    counter = itertools.count()
    heap: list = []
    best: list = []             # min-heap of (|v|, tie, v, path)
    state = {"others": 0.0, "pruned": 0.0, "visited": 0, "field_bytes": 0}

    def kth() -> float:
        return best[0][0] if len(best) == k else 0.0

    def visit(path, f, last):
        v = value_of(f)
        state["visited"] += 1
        item = (abs(v), next(counter), v, path)
        if len(best) < k:
            heapq.heappush(best, item)
        elif item[0] > best[0][0]:
            out = heapq.heappushpop(best, item)
            state["others"] = max(state["others"], out[0])
        else:
            state["others"] = max(state["others"], item[0])
        if last + 1 >= len(fz.stages):
            return
        bnd = bound_of(f, last)
        if bnd <= kth():
            state["pruned"] = max(state["pruned"], bnd)
            return
        keep = f if state["field_bytes"] < _FIELD_BYTES else None
        if keep is not None:
            state["field_bytes"] += f.numel() * f.element_size()
        heapq.heappush(heap, (-bnd, next(counter), path, keep, last))

    for src in fz.sources():
        if src.entry is not None:
            outs = fz.ln_bias_stage(src.name)
            for i, n in enumerate(src.readers):
                visit((src.name, n), outs[i], src.entry)
        else:
            visit((src.name,), fz.source_field(src.name), src.birth)

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
            outs = fz.stage(f, st)
            for i, n in enumerate(st.nodes):
                visit(path + (n,), outs[i], st.index)
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
