"""Q-, K- and V-composition scores of every ordered pair of heads, with a random-weights null.

The paper's score of an earlier head's output into a later head's input is

    C(L, R) = ‖L R‖_F / (‖L‖_F ‖R‖_F),   L = W_OV^{h1} = W_V^{h1} W_O^{h1}   (right-multiplying)

with ``R = W_Q^{h2} W_K^{h2}ᵀ`` (Q-composition: the earlier head writes what the later head's
query reads), ``R = W_K^{h2} W_Q^{h2}ᵀ`` (K-composition: one transpose apart — the key side
reads it) and ``R = W_OV^{h2}`` (V-composition). This is TransformerLens 3.9's
``all_composition_scores("Q"|"K"|"V")`` exactly: an array ``[L1, H1, L2, H2]``, zero where
the first head's layer is not strictly earlier.

Computed without forming any pair product: with the symmetric ``d_model × d_model`` Grams
``M_1 = LᵀL`` and ``M_2 = RRᵀ``, ``‖LR‖² = tr(M_1 M_2) = Σ M_1 ∘ M_2`` — one GEMM over packed
upper triangles per layer pair — and ``‖L‖² = tr M_1``, ``‖R‖² = tr M_2``. Grams are formed in
the weights' dtype (or ``dtype=``) and contracted in float64.

Null ("random") baseline: the same score for Gaussian factors of the same shapes. Because a
Gaussian ``R`` is rotation-invariant on the side that reads ``L``'s output, E[tr(M_1 M_2)] =
tr(M_1) tr(M_2)/d_model given the rest, so **E[C²] = 1/d_model exactly**, whatever d_head or
kind: the mean score is ≈ 1/√d_model (a little below, by Jensen; 0.036 for GPT-2 small).
The mean and spread are sampled (``n_samples`` draws, ``seed``) so the baseline and z-scores
match the statistic's real null, not only its second moment.

Centring: ``centered=False`` (default) scores the weights as given. ``centered=True`` first
centres writing weights (``W_O ← W_O − mean over d_model``, TransformerLens's
``center_writing_weights``), which leaves a LayerNorm model's logits unchanged but changes
raw scores; for LayerNorm models also consider folding LN into the reading weights first
(``pe.fold_layernorm``), since raw scores ignore the LN gains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .._repr import TextTableHTML
from ..errors import PathexpandError, check_int
from ..models import load
from ..names import head_name
from .factored import _as_tensor
from .forward import _torch_dtype
from .ranking import Ranking

__all__ = ["KINDS", "CompositionScores", "composition_scores", "pair_score", "random_baseline"]

KINDS = ("q", "k", "v")
_KIND_NAMES = {"q": "q_composition", "k": "k_composition", "v": "v_composition"}


@dataclass(frozen=True)
class CompositionScores(TextTableHTML):
    """Composition scores per kind: ``raw[kind]`` is ``[L1, H1, L2, H2]`` (TransformerLens layout).

    ``null_mean``/``null_std`` hold the random-weights null per kind when it was sampled
    (``baseline="random"`` or ``zscore=True``), else NaN. ``value(kind)`` is what the
    ranking uses: the z-score when ``zscore``, the score minus the null mean when a baseline
    was asked for, else the raw score (always 0 where layer1 ≥ layer2).
    """

    kinds: tuple[str, ...]
    raw: dict[str, np.ndarray]
    null_mean: dict[str, float]
    null_std: dict[str, float]
    baseline: str | None = None
    zscore: bool = False
    centered: bool = False
    n_samples: int = 0
    seed: int = 0
    mask: np.ndarray = field(default=None, repr=False)  # [L, H, L, H] True where l1 < l2

    def __getitem__(self, kind: str) -> np.ndarray:
        """Raw scores ``[L1, H1, L2, H2]`` of one kind (``"q"``, ``"k"``, ``"v"``)."""
        return self.raw[_check_kind(kind, self.kinds)]

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.raw.values())).shape

    def z(self, kind: str) -> np.ndarray:
        """(score − null mean) / null std, ``[L1, H1, L2, H2]`` (0 where layer1 ≥ layer2)."""
        kind = _check_kind(kind, self.kinds)
        if not math.isfinite(self.null_std[kind]):
            raise PathexpandError("z-scores need the random null: pass baseline='random' or zscore=True")
        return np.where(self.mask, (self.raw[kind] - self.null_mean[kind]) / self.null_std[kind], 0.0)

    def adjusted(self, kind: str) -> np.ndarray:
        """Score minus the null mean (the paper's baseline-subtracted score), 0 where masked."""
        kind = _check_kind(kind, self.kinds)
        if not math.isfinite(self.null_mean[kind]):
            raise PathexpandError("baseline-subtracted scores need baseline='random'")
        return np.where(self.mask, self.raw[kind] - self.null_mean[kind], 0.0)

    def value(self, kind: str) -> np.ndarray:
        """The score the ranking uses for ``kind`` (see the class docstring)."""
        if self.zscore:
            return self.z(kind)
        if self.baseline == "random":
            return self.adjusted(kind)
        return self[kind]

    def score(self, earlier: str, later: str, kind: str) -> float:
        """Raw score of one ordered pair, e.g. ``score("L0H3", "L1H0", "k")``."""
        from ..names import parse_head

        l1, h1 = parse_head(earlier)
        l2, h2 = parse_head(later)
        L, H = self.shape[:2]
        for name, (l, h) in ((earlier, (l1, h1)), (later, (l2, h2))):
            if l >= L or h >= H:
                raise PathexpandError(f"{name!r} is not in this {L}-layer, {H}-head model")
        return float(self[kind][l1, h1, l2, h2])

    def to_records(self) -> list[dict[str, Any]]:
        """Tidy table: one dict per (earlier, later, kind) with l1 < l2: score, baseline, z."""
        out = []
        for kind in self.kinds:
            raw = self.raw[kind]
            has_null = math.isfinite(self.null_std[kind])
            for l1, h1, l2, h2 in zip(*np.nonzero(self.mask)):
                s = float(raw[l1, h1, l2, h2])
                out.append({
                    "earlier": head_name(int(l1), int(h1)),
                    "later": head_name(int(l2), int(h2)),
                    "kind": kind,
                    "score": s,
                    "baseline": self.null_mean[kind] if has_null else None,
                    "z": (s - self.null_mean[kind]) / self.null_std[kind] if has_null else None,
                })
        return out

    def ranking(self) -> Ranking:
        """Every pair as a ``Ranking`` row (value = ``value(kind)``), highest first."""
        rows = []
        for kind in self.kinds:
            val = self.value(kind)
            raw = self.raw[kind]
            has_null = math.isfinite(self.null_std[kind])
            for l1, h1, l2, h2 in zip(*np.nonzero(self.mask)):
                a, b = head_name(int(l1), int(h1)), head_name(int(l2), int(h2))
                extra = {"earlier": a, "later": b, "score": float(raw[l1, h1, l2, h2])}
                if has_null:
                    extra["baseline"] = self.null_mean[kind]
                    if not self.zscore:  # the value column is the z-score already
                        extra["z"] = (extra["score"] - self.null_mean[kind]) / self.null_std[kind]
                rows.append(dict(name=f"{kind}:{b}∘{a}", kind=_KIND_NAMES[kind], depth=2,
                                 path=(a, b), value=float(val[l1, h1, l2, h2]), **extra))
        label = "z" if self.zscore else ("score − null" if self.baseline == "random" else "score")
        notes = []
        if math.isfinite(next(iter(self.null_mean.values()), math.nan)):
            notes.append(
                f"null: Gaussian weights of the same shapes, mean {self._null_text()} "
                f"({self.n_samples} samples, seed {self.seed}); E[score²] = 1/d_model exactly"
            )
        if self.centered:
            notes.append("writing weights centred (W_O − mean over d_model)")
        return Ranking(rows, title="composition scores", value_label=label, notes=notes,
                       shares=not self.zscore).sort_by("value")

    def _null_text(self) -> str:
        return ", ".join(f"{k} {self.null_mean[k]:.4f}±{self.null_std[k]:.4f}" for k in self.kinds)

    def top(self, k: int = 10) -> Ranking:
        """The ``k`` highest-valued pairs (all kinds together)."""
        return self.ranking()[:k]

    def __str__(self) -> str:
        return str(self.top(10))


def _check_kind(kind: str, allowed=KINDS) -> str:
    k = str(kind).lower()
    if k not in allowed:
        raise PathexpandError(f"composition kind must be one of {list(allowed)}, got {kind!r}")
    return k


def composition_scores(
    weights,
    kind: str = "all",
    baseline: str | None = "random",
    *,
    centered: bool = False,
    zscore: bool = False,
    seed: int = 0,
    n_samples: int = 200,
    device=None,
    dtype=None,
) -> CompositionScores:
    """Q/K/V composition scores of every ordered head pair (``kind`` "q", "k", "v" or "all").

    ``baseline``: ``"random"`` (the default: sample the Gaussian null; the ranking then
    subtracts its mean, as the paper does) or ``None`` (raw scores, as TransformerLens);
    the ``[L1, H1, L2, H2]`` arrays are the raw scores either way; ``zscore=True`` ranks by (score − mean)/std and
    samples the null too. ``centered=True`` centres writing weights first. Heavy algebra runs
    in torch on ``device`` in ``dtype`` (default: the weights' dtype); contractions in float64.
    """
    weights = load(weights)
    cfg = weights.config
    if kind == "all" or kind is None:
        kinds = KINDS
    elif isinstance(kind, str):
        kinds = (_check_kind(kind),)
    else:
        kinds = tuple(dict.fromkeys(_check_kind(k) for k in kind))
    if baseline not in (None, "random"):
        raise PathexpandError(f"baseline must be None or 'random', got {baseline!r}")
    check_int("n_samples", n_samples, 2), check_int("seed", seed, 0)
    if cfg.n_heads == 0 or cfg.d_head == 0:
        raise PathexpandError("this model has no attention heads to compose")
    L, H, d = cfg.n_layers, cfg.n_heads, cfg.d_model
    tdtype = _torch_dtype(dtype, weights)
    W = {name: _as_tensor(weights.stacked(name), device, tdtype) for name in ("W_Q", "W_K", "W_V", "W_O")}
    if centered:
        W["W_O"] = W["W_O"] - W["W_O"].mean(-1, keepdim=True)
    raw = _all_pairs(W, kinds)
    mask = (np.arange(L)[:, None, None, None] < np.arange(L)[None, None, :, None]) & np.ones((L, H, L, H), bool)
    sample = baseline == "random" or zscore
    null_mean = {k: math.nan for k in kinds}
    null_std = {k: math.nan for k in kinds}
    if sample:
        for k in kinds:
            null_mean[k], null_std[k] = random_baseline(d, cfg.d_head, k, centered=centered,
                                                        n_samples=int(n_samples), seed=int(seed))
    return CompositionScores(kinds, raw, null_mean, null_std, baseline=baseline, zscore=bool(zscore),
                             centered=bool(centered), n_samples=int(n_samples) if sample else 0,
                             seed=int(seed), mask=mask)


def _left_gram(W_V: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """M_1 = (W_V W_O)ᵀ(W_V W_O) = W_Oᵀ (W_VᵀW_V) W_O, ``[..., d_model, d_model]``."""
    return W_O.mT @ ((W_V.mT @ W_V) @ W_O)


def _right_gram(W: dict, kind: str, layer: int) -> torch.Tensor:
    """M_2 = R Rᵀ for the later head's reading matrix R of ``kind``, ``[H, d_model, d_model]``."""
    Q, K, V, O = (W[n][layer] for n in ("W_Q", "W_K", "W_V", "W_O"))
    if kind == "q":  # R = W_Q W_Kᵀ
        return Q @ ((K.mT @ K) @ Q.mT)
    if kind == "k":  # R = W_K W_Qᵀ
        return K @ ((Q.mT @ Q) @ K.mT)
    return V @ ((O @ O.mT) @ V.mT)  # R = W_V W_O


def _packed(M: torch.Tensor, iu: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Upper triangle of symmetric ``M`` as float64 ``[..., d(d+1)/2]`` (optionally weighted)."""
    p = M[..., iu[0], iu[1]].to(torch.float64)
    return p * weight if weight is not None else p


def _all_pairs(W: dict, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Raw scores ``[L, H, L, H]`` per kind: Σ M1∘M2 over packed upper triangles.

    The left Grams (earlier heads, shared by every kind) are formed once, packed with
    off-diagonal weight 2 and kept in float64 ``[(L-1)·H, d(d+1)/2]``; each later layer's
    right Grams are then contracted against all earlier layers in one GEMM.
    """
    L, H, d, _ = W["W_V"].shape
    out = {k: np.zeros((L, H, L, H), dtype=np.float64) for k in kinds}
    if L < 2:
        return out
    dev = W["W_V"].device
    iu = torch.triu_indices(d, d, device=dev)
    weight = torch.where(iu[0] == iu[1], 1.0, 2.0).to(device=dev, dtype=torch.float64)
    left = torch.empty(((L - 1) * H, iu.shape[1]), dtype=torch.float64, device=dev)
    left_norm2 = torch.empty((L - 1) * H, dtype=torch.float64, device=dev)
    for l1 in range(L - 1):
        M1 = _left_gram(W["W_V"][l1], W["W_O"][l1])
        left_norm2[l1 * H : (l1 + 1) * H] = torch.diagonal(M1, dim1=-2, dim2=-1).to(torch.float64).sum(-1)
        left[l1 * H : (l1 + 1) * H] = _packed(M1, iu, weight)
        del M1
    for kind in kinds:
        for l2 in range(1, L):
            M2 = _right_gram(W, kind, l2)
            r2 = torch.diagonal(M2, dim1=-2, dim2=-1).to(torch.float64).sum(-1)  # [H] = ‖R‖²
            P2 = _packed(M2, iu, None)  # [H, P]
            del M2
            cross = left[: l2 * H] @ P2.T  # [l2·H, H] = ‖L R‖² for every earlier head
            denom = left_norm2[: l2 * H, None] * r2[None, :]
            score = torch.where(denom > 0, (cross.clamp_min(0) / denom).sqrt(), torch.zeros_like(cross))
            out[kind][:l2, :, l2, :] = score.reshape(l2, H, H).cpu().numpy()
    return out


def pair_score(L_factors, R_factors) -> torch.Tensor:
    """‖L R‖/(‖L‖‖R‖) for factored ``L`` and ``R`` (batched), through ``Factored`` norms."""
    from .factored import Factored

    Lf, Rf = Factored(*L_factors), Factored(*R_factors)
    return (Lf @ Rf).norm() / (Lf.norm() * Rf.norm())


@lru_cache(maxsize=64)
def random_baseline(d_model: int, d_head: int, kind: str = "q", *, centered: bool = False,
                    n_samples: int = 200, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the score on Gaussian weights with these shapes; E[score²] = 1/d_model.

    Each sample draws independent standard-normal ``W_V, W_O`` for the earlier head and
    ``W_Q, W_K`` (or ``W_V, W_O``) for the later one, seeded, in float64.
    """
    kind = _check_kind(kind)
    g = torch.Generator().manual_seed(int(seed))
    n, d, r = int(n_samples), int(d_model), int(d_head)

    def gauss(*shape):
        return torch.randn(n, *shape, generator=g, dtype=torch.float64)

    V1, O1 = gauss(d, r), gauss(r, d)
    A, B = gauss(d, r), gauss(d, r)
    if centered:
        O1 = O1 - O1.mean(-1, keepdim=True)
    if kind == "q":
        R = (A, B.mT)  # W_Q W_Kᵀ
    elif kind == "k":
        R = (B, A.mT)  # W_K W_Qᵀ
    else:
        O2 = B.mT - B.mT.mean(-1, keepdim=True) if centered else B.mT
        R = (A, O2)  # W_V W_O
    s = pair_score((V1, O1), R)
    return float(s.mean()), float(s.std())
