"""How much do terms of each order matter: the frozen model truncated by path depth.

With patterns, LN scales and MLP gates frozen on each prompt, ``logits = Σ_paths + constants``
(DESIGN.md §2). Keeping only paths that pass at most ``n`` heads/MLPs gives
``logits_n = constants + Σ_{depth ≤ n} paths``; ``loss_n`` is its next-token cross-entropy.
At full depth ``logits_n`` is the model's logits and ``loss_n`` its loss. The marginal
effect of a term is ``loss(logits − term) − loss(logits)``: what removing that one path
(with everything else frozen) costs.

Depth-graded propagation computes every ``logits_n`` in one sweep (``R_d`` = the sum of all
depth-``d`` prefixes, ``R_{d+1} += node(R_d)``), never listing paths; the per-term
marginals list paths and are left out above ``max_paths``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PathexpandError, check_int
from ..names import path_info
from ..ranking import Ranking, Result
from . import norm
from ._progress import progress as track
from .attribute import MAX_PATHS
from .frozen import CONSTANTS, Frozen, freeze
from .tokens import as_tokens, batches
from .weights import as_weights

__all__ = ["order_importance", "OrderImportance"]


@dataclass(repr=False)  # repr: Result's one-line summary
class OrderImportance(Result):
    """Loss and logit error of the frozen model keeping paths up to each depth.

    ``loss[n]`` (mean next-token cross-entropy, nats), ``logit_error[n]`` (max
    ``|logits_n − logits|``) and ``logit_rms[n]`` (root-mean-square of the same) for
    ``n = depths[i]``; ``model_loss`` from the forward pass. ``terms``: one row per path (and
    constant) with ``value`` = loss increase when that term alone is removed; None above
    ``max_paths`` paths.
    """

    depths: list[int]
    loss: np.ndarray
    logit_error: np.ndarray
    logit_rms: np.ndarray
    model_loss: float
    n_tokens: int
    terms: list[dict] | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)

    def ranking(self, view: str | None = None) -> Ranking:
        """``view="terms"`` (the default when computed): each term's marginal effect, value =
        loss increase (nats) when that one term is removed; ``"depths"``: one row per depth
        ``n``, value = ``loss_n`` minus the model's loss."""
        view = view or ("terms" if self.terms is not None else "depths")
        if view == "depths":
            rows = [dict(name=f"depth ≤ {n}", kind="depth", depth=n, path=(), value=float(l - self.model_loss),
                         loss=float(l), logit_error=float(e), logit_rms=float(r))
                    for n, l, e, r in zip(self.depths, self.loss, self.logit_error, self.logit_rms)]
            return Ranking(rows, title="loss of the frozen model keeping paths up to each depth",
                           value_label="Δloss vs model", notes=tuple(self.notes), shares=False,
                           of="depths")
        if view != "terms":
            raise PathexpandError(f"view must be 'terms' or 'depths', got {view!r}")
        if self.terms is None:
            raise PathexpandError("per-term marginals were not computed (too many paths); see .notes, "
                                  "or use view='depths'")
        return Ranking(self.terms, title="loss increase when one term is removed", value_label="Δloss",
                       notes=tuple(self.notes), shares=False, by_magnitude=True)

    def summary(self) -> str:
        return (f"loss by path depth: model {self.model_loss:.4f} nats over {self.n_tokens} "
                f"predicted tokens")

    def table(self) -> str:
        """The depth table as aligned text."""
        lines = ["depth  loss (nats)  Δ vs model  max |Δlogit|  rms Δlogit"]
        for n, l, e, r in zip(self.depths, self.loss, self.logit_error, self.logit_rms):
            lines.append(f"{n:>5}  {l:>11.4f}  {l - self.model_loss:>+10.4f}  {e:>12.4g}  {r:>10.4g}")
        lines.append(f"model  {self.model_loss:>11.4f}  ({self.n_tokens} predicted tokens)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = {
            "model": self.model,
            "model_loss": self.model_loss,
            "n_tokens": self.n_tokens,
            "depths": [
                dict(depth=n, loss=float(l), logit_error=float(e), logit_rms=float(r))
                for n, l, e, r in zip(self.depths, self.loss, self.logit_error, self.logit_rms)
            ],
            "notes": list(self.notes),
        }
        if self.terms is not None:
            out["terms"] = [dict(t, path=list(t["path"])) for t in self.terms]
        return out

    def __str__(self) -> str:
        return self.table()


def order_importance(
    model,
    tokens,
    *,
    terms: bool = True,
    max_paths: int = MAX_PATHS,
    batch_size: int = 16,
    device=None,
    dtype=None,
    progress: bool = False,
) -> OrderImportance:
    """Loss of the frozen model keeping only paths up to depth ``n``, for every ``n``.

    ``tokens`` ``[batch, pos]`` (or text) are streamed ``batch_size`` prompts at a time:
    memory is bounded by one batch (its logits, and one field per depth). ``terms``: also
    the marginal effect of removing each single term (listed paths; skipped with a note
    above ``max_paths`` paths). Cost: the depth-graded sweep applies each stage once per
    depth below it, about ``S/2`` forward passes for ``S`` stages (heads, MLPs).

    >>> table = pe.order_importance(pe.load("attn-only-2l"), tokens)   # doctest: +SKIP
    >>> print(table)                                                  # doctest: +SKIP
    """
    import torch

    weights = as_weights(model)
    tokens = as_tokens(weights, tokens)
    check_int("max_paths", max_paths, 0), check_int("batch_size", batch_size, 1)
    if tokens.shape[1] < 2:
        raise PathexpandError("order_importance needs at least 2 tokens per prompt (it predicts the next one)")
    sums = None
    err_max = None
    sq = None
    model_sum = 0.0
    n_tok = 0
    n_logit = 0
    term_sums: dict[tuple[str, ...], float] = {}
    notes: list[str] = []
    want_terms = terms
    with torch.no_grad():
        for lo, hi in track(batches(len(tokens), batch_size), progress, "order importance"):
            fz = freeze(weights, tokens[lo:hi], device=device, dtype=dtype)
            if want_terms and fz.n_paths() > max_paths:
                want_terms = False
                notes.append(f"{fz.n_paths():,} paths > max_paths={max_paths:,}: per-term marginals left out")
            labels = fz.tokens[:, 1:]
            model = _loss_sum(fz.logits, labels)
            stats = torch.stack([torch.stack([_loss_sum(lv, labels), (lv - fz.logits).abs().amax(),
                                              (lv - fz.logits).pow(2).sum()])
                                 for lv in _depth_logits(fz)])                  # [D + 1, 3]
            sums = stats[:, 0] if sums is None else sums + stats[:, 0]
            err_max = stats[:, 1] if err_max is None else torch.maximum(err_max, stats[:, 1])
            sq = stats[:, 2] if sq is None else sq + stats[:, 2]
            model_sum += float(model)
            n_tok += labels.numel()
            n_logit += fz.logits.numel()
            if want_terms:
                for key, delta in _term_marginals(fz, labels, model):
                    term_sums[key] = term_sums.get(key, 0.0) + delta
    depths = list(range(len(sums)))
    rows = None
    if want_terms:
        rows = []
        for key, total in term_sums.items():
            name, kind, depth = path_info(key)
            rows.append(dict(name=name, kind=kind, depth=depth, path=key, value=total / n_tok))
    return OrderImportance(
        depths=depths,
        loss=(sums / n_tok).cpu().numpy().astype(np.float64),
        logit_error=err_max.cpu().numpy().astype(np.float64),
        logit_rms=(sq / n_logit).sqrt().cpu().numpy().astype(np.float64),
        model_loss=model_sum / n_tok,
        n_tokens=n_tok,
        terms=rows,
        model=getattr(weights, "name", None),
        notes=notes,
    )


def _loss_sum(logits, labels):
    """Σ next-token cross-entropy of ``logits [b, n, V]`` against ``labels [b, n-1]``."""
    import torch

    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -logp.gather(-1, labels[..., None]).sum()


def _depth_logits(fz: Frozen):
    """Truncated logits ``[b, n, V]`` for depth 0, 1, ...: entry ``n`` keeps paths of depth ≤ n.

    Yields one at a time (memory: one logits array and the depth-graded fields ``R_d``).
    """
    S = len(fz.stages)
    sources = fz.sources()
    R = [None] * (S + 1)                                                   # R[d]: depth-d prefixes
    R[0] = sum(fz.source_field(s.name) for s in sources if s.entry is None and s.birth == -1)
    for st in fz.stages:
        new = [None] * (S + 1)
        for d in range(S):
            if R[d] is not None:
                new[d + 1] = fz.stage(R[d], st).sum(-4)
        for s in sources:
            if s.entry == st.index:
                lnb = fz.ln_bias_stage(s.name).sum(-4)
                new[1] = lnb if new[1] is None else new[1] + lnb
        for s in sources:
            if s.entry is None and s.birth == st.index:
                new[0] = fz.source_field(s.name) if new[0] is None else new[0] + fz.source_field(s.name)
        R = [r if n is None else (n if r is None else r + n) for r, n in zip(R, new)]
    top = max(d for d, r in enumerate(R) if r is not None)
    acc = fz.constant_logits().expand_as(fz.logits)
    for d in range(top + 1):
        if R[d] is not None:
            acc = acc + fz.unembed(R[d])
        yield acc


def _term_marginals(fz: Frozen, labels, model_loss):
    """``(path, Σ loss(logits − term) − loss(logits))`` for every path and constant."""
    for name in CONSTANTS:
        if name == "b_U" or norm.has_bias(fz.config.normalization):
            yield (name,), float(_loss_sum(fz.logits - fz.constant(name), labels) - model_loss)
    for path, f in fz.iter_paths():
        yield path, float(_loss_sum(fz.logits - fz.unembed(f), labels) - model_loss)
