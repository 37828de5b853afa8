"""Q-, K- and V-composition scores of every ordered pair of heads, with a random-weights null.

The paper's score of an earlier head's output into a later head's input is

    C(L, R) = ‖L R‖_F / (‖L‖_F ‖R‖_F),   L = W_OV^{h1} = W_V^{h1} W_O^{h1}   (right-multiplying)

with ``R = W_Q^{h2} W_K^{h2}ᵀ`` (``q_composition``: the earlier head writes what the later
head's query reads), ``R = W_K^{h2} W_Q^{h2}ᵀ`` (``k_composition``: the key side reads it) and
``R = W_OV^{h2}`` (``v_composition``). The factors are the circuit builder's
(``numeric.circuits``): with LayerNorm, readers ``C diag(w) W`` and writers ``W C``, so the scores
are TransformerLens 3.9's ``all_composition_scores("Q"|"K"|"V")`` on the model processed as
TransformerLens does by default (``fold_ln``, ``center_writing_weights``); without a norm they
are its scores on the raw weights. An array ``[L1, H1, L2, H2]`` per kind, zero where the first
head's layer is not strictly earlier.

Computed without forming any pair product: with the symmetric ``d_model × d_model`` Grams
``M_1 = LᵀL`` and ``M_2 = RRᵀ``, ``‖LR‖² = tr(M_1 M_2) = Σ M_1 ∘ M_2`` — one GEMM over packed
upper triangles per layer pair — and ``‖L‖² = tr M_1``, ``‖R‖² = tr M_2``. Grams are formed in
the weights' dtype (or ``dtype=``) and contracted in float64.

Null ("random") baseline: the same score for Gaussian factors of the same shapes (centred as
the model's are when it has LayerNorm). Because a Gaussian ``R`` is rotation-invariant on the
side that reads ``L``'s output, E[tr(M_1 M_2)] = tr(M_1) tr(M_2)/d given the rest, so
**E[C²] = 1/d exactly** (``d = d_model``, or ``d_model − 1`` for centred factors), whatever
d_head or kind: the mean score is ≈ 1/√d (a little below, by Jensen; 0.036 for GPT-2 small).
The mean and spread are sampled (``n_samples`` draws, ``seed``) so the baseline and z-scores
match the statistic's real null, not only its second moment.

**Rotary positions.** A rotary head reads ``R = W_Q R̃_Δ W_Kᵀ`` (``numeric.rotary``): Q- and
K-composition depend on the offset ``Δ = j − i`` between key and query. The score of a pair is
then the **mean over offsets** ``Δ = 0, −1, …, −(m−1)`` of the per-offset score (``offsets=``;
default the nearest ``m = min(16, n_ctx)`` keys, ``rotary.summary_offsets``). V-composition has
no rotation. As ``rotary_base → ∞`` every pair of dims but the first stops turning
(``θ_0 = 1`` for every base), so on heads that leave the first pair unused the scores become
the unrotated ones.
A rotation keeps a Gaussian factor Gaussian, so the null is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from ..errors import PathexpandError, check_int
from ..names import check_composition_kind, head_name, parse_head
from ..ranking import Ranking, Result
from . import norm
from .circuits import Circuits
from .weights import as_weights

__all__ = ["KINDS", "CompositionScores", "composition_scores", "pair_score", "random_baseline"]

KINDS = ("q_composition", "k_composition", "v_composition")
_CHANNEL = {"q_composition": "q", "k_composition": "k", "v_composition": "v"}


@dataclass(frozen=True, repr=False)  # repr: Result's one-line summary
class CompositionScores(Result):
    """Composition scores per kind: ``raw[kind]`` is ``[L1, H1, L2, H2]`` (TransformerLens layout).

    ``kinds`` among ``q_composition``, ``k_composition``, ``v_composition``. ``null_mean``/
    ``null_std`` hold the random-weights null per kind when it was sampled (``baseline="random"``
    or ``zscore=True``), else NaN. ``value(kind)`` is what the ranking uses: the z-score when
    ``zscore``, the score minus the null mean when a baseline was asked for, else the raw score
    (always 0 where layer1 ≥ layer2).
    """

    kinds: tuple[str, ...]
    raw: dict[str, np.ndarray]
    null_mean: dict[str, float]
    null_std: dict[str, float]
    baseline: str | None = None
    zscore: bool = False
    n_samples: int = 0
    seed: int = 0
    mask: np.ndarray = field(default=None, repr=False)  # [L, H, L, H] True where l1 < l2
    model: str | None = None                            # the model's name, when it has one
    offsets: tuple[int, ...] | None = None              # rotary: Q/K scores averaged over these

    def __getitem__(self, kind: str) -> np.ndarray:
        """Raw scores ``[L1, H1, L2, H2]`` of one kind (``"k_composition"``, ...)."""
        return self.raw[check_composition_kind(kind, self.kinds)]

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.raw.values())).shape

    def z(self, kind: str) -> np.ndarray:
        """(score − null mean) / null std, ``[L1, H1, L2, H2]`` (0 where layer1 ≥ layer2)."""
        kind = check_composition_kind(kind, self.kinds)
        if not math.isfinite(self.null_std[kind]):
            raise PathexpandError("z-scores need the random null: pass baseline='random' or zscore=True")
        return np.where(self.mask, (self.raw[kind] - self.null_mean[kind]) / self.null_std[kind], 0.0)

    def adjusted(self, kind: str) -> np.ndarray:
        """Score minus the null mean (the paper's baseline-subtracted score), 0 where masked."""
        kind = check_composition_kind(kind, self.kinds)
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
        """Raw score of one ordered pair, e.g. ``score("L0H3", "L1H0", "k_composition")``."""
        l1, h1 = parse_head(earlier)
        l2, h2 = parse_head(later)
        L, H = self.shape[:2]
        for name, (l, h) in ((earlier, (l1, h1)), (later, (l2, h2))):
            if l >= L or h >= H:
                raise PathexpandError(f"{name!r} is not in this {L}-layer, {H}-head model")
        return float(self[kind][l1, h1, l2, h2])

    def ranking(self, kind: str | None = None) -> Ranking:
        """Every pair (of one ``kind``, or of all) as a ``Ranking`` row, highest value first.

        A row is named like the graph's read edge, ``"L0H1 → L1H2.k"`` (the earlier head writes
        into the later head's key); columns ``earlier``, ``later``, ``score`` (raw) and, with the
        null, ``baseline`` and ``z``.
        """
        kinds = self.kinds if kind is None else (check_composition_kind(kind, self.kinds),)
        rows = []
        for kd in kinds:
            val, raw = self.value(kd), self.raw[kd]
            has_null = math.isfinite(self.null_std[kd])
            for l1, h1, l2, h2 in zip(*np.nonzero(self.mask)):
                a, b = head_name(int(l1), int(h1)), head_name(int(l2), int(h2))
                extra = {"earlier": a, "later": b, "score": float(raw[l1, h1, l2, h2])}
                if has_null:
                    extra["baseline"] = self.null_mean[kd]
                    extra["z"] = (extra["score"] - self.null_mean[kd]) / self.null_std[kd]
                rows.append(dict(name=f"{a} → {b}.{_CHANNEL[kd]}", kind=kd, depth=2, path=(a, b),
                                 value=float(val[l1, h1, l2, h2]), **extra))
        label = "z" if self.zscore else ("score − null" if self.baseline == "random" else "score")
        notes = []
        if self.offsets is not None:
            notes.append(
                f"rotary positions: Q- and K-composition read W_Q R̃_Δ W_Kᵀ; each score is the mean "
                f"over offsets Δ = {self.offsets[0]} … {self.offsets[-1]} ({len(self.offsets)} offsets)"
            )
        if self.n_samples:
            notes.append(
                f"null: Gaussian weights of the same shapes, mean {self._null_text()} "
                f"({self.n_samples} samples, seed {self.seed}); E[score²] = 1/d_model exactly "
                "(1/(d_model − 1) for a LayerNorm model, whose factors are centred)"
            )
        return Ranking(rows, title="composition scores", value_label=label, notes=notes,
                       shares=False, of="pairs").sort_by("value")

    def _null_text(self) -> str:
        return ", ".join(f"{k} {self.null_mean[k]:.4f}±{self.null_std[k]:.4f}" for k in self.kinds)

    def summary(self) -> str:
        L, H = self.shape[:2]
        null = f"; null {self._null_text()}" if self.n_samples else ""
        return f"composition scores of {L}×{H} heads ({', '.join(self.kinds)}){null}"

    def _repr_html_(self) -> str:
        """Summary, one heatmap per kind (earlier head × later head, the ranking's value), top rows."""
        from ..render.notebook import Heatmap, result_html  # display only

        L, H = self.shape[:2]
        earlier = [(l, h) for l in range(L - 1) for h in range(H)]
        later = [(l, h) for l in range(1, L) for h in range(H)]
        label = self.ranking().value_label
        maps = []
        for kd in self.kinds:
            val = self.value(kd)
            cells = [[float(val[a + b]) if a[0] < b[0] else math.nan for b in later] for a in earlier]
            maps.append(Heatmap(f"{kd}: {label}", cells, [head_name(*a) for a in earlier],
                                [head_name(*b) for b in later], signed=bool(self.baseline or self.zscore),
                                note="rows write, columns read"))
        return result_html(self.summary(), self.ranking(), maps)

    def __str__(self) -> str:
        return str(self.top(10))


def composition_scores(
    model,
    kind: str = "all",
    baseline: str | None = "random",
    *,
    zscore: bool = False,
    seed: int = 0,
    n_samples: int = 200,
    offsets=None,
    device=None,
    dtype=None,
) -> CompositionScores:
    """Composition scores of every ordered head pair: ``kind`` is ``"q_composition"``,
    ``"k_composition"``, ``"v_composition"``, a list of them, or ``"all"``.

    ``model`` is anything ``pe.load`` takes. ``baseline``: ``"random"`` (the default: sample the
    Gaussian null; the ranking then subtracts its mean, as the paper does) or ``None`` (raw
    scores, as TransformerLens); the ``[L1, H1, L2, H2]`` arrays are the raw scores either way;
    ``zscore=True`` ranks by (score − mean)/std and samples the null too. Heavy algebra runs in
    torch on ``device`` in ``dtype`` (default: the weights' dtype); contractions in float64.
    ``offsets`` (rotary models only): the offsets ``Δ = j − i`` whose Q/K-composition scores are
    averaged (an int ``Δ`` for one offset; default ``rotary.summary_offsets``).
    """
    weights = as_weights(model)
    cfg = weights.config
    if kind == "all" or kind is None:
        kinds = KINDS
    elif isinstance(kind, str):
        kinds = (check_composition_kind(kind, KINDS),)
    else:
        kinds = tuple(dict.fromkeys(check_composition_kind(k, KINDS) for k in kind))
    if baseline not in (None, "random"):
        raise PathexpandError(f"baseline must be None or 'random', got {baseline!r}")
    check_int("n_samples", n_samples, 2), check_int("seed", seed, 0)
    if cfg.n_heads == 0 or cfg.d_head == 0:
        raise PathexpandError("this model has no attention heads to compose")
    L, H, d = cfg.n_layers, cfg.n_heads, cfg.d_model
    c = Circuits(weights, device=device, dtype=dtype)
    offs = _offsets(weights.config, offsets)
    raw = _all_pairs(c, L, H, kinds, offs)
    mask = (np.arange(L)[:, None, None, None] < np.arange(L)[None, None, :, None]) & np.ones((L, H, L, H), bool)
    sample = baseline == "random" or zscore
    null_mean = {k: math.nan for k in kinds}
    null_std = {k: math.nan for k in kinds}
    if sample:
        centred = norm.centres(cfg.normalization)
        for k in kinds:
            null_mean[k], null_std[k] = random_baseline(d, cfg.d_head, k, centred=centred,
                                                        n_samples=int(n_samples), seed=int(seed))
    return CompositionScores(kinds, raw, null_mean, null_std, baseline=baseline, zscore=bool(zscore),
                             n_samples=int(n_samples) if sample else 0, seed=int(seed), mask=mask,
                             model=weights.name, offsets=None if offs == [None] else tuple(offs))


def _offsets(cfg, offsets) -> list:
    """The offsets Q/K-composition is averaged over: ``[None]`` without rotary positions."""
    if cfg.positional != "rotary":
        if offsets is not None:
            raise PathexpandError(f"offsets= is for rotary models; this model has positional={cfg.positional!r}")
        return [None]
    from . import rotary

    if offsets is None:
        return rotary.summary_offsets(cfg)
    if isinstance(offsets, (int, np.integer)) and not isinstance(offsets, bool):
        return [int(offsets)]
    try:
        out = [int(o) for o in offsets if not isinstance(o, bool)]
    except (TypeError, ValueError):
        out = []
    if not out or len(out) != len(list(offsets)):
        raise PathexpandError(f"offsets must be an int or a non-empty list of ints (Δ = j − i), got {offsets!r}")
    return out


def _left_gram(W_V: torch.Tensor, W_O: torch.Tensor, out=None) -> torch.Tensor:
    """M_1 = (W_V W_O)ᵀ(W_V W_O) = W_Oᵀ (W_VᵀW_V) W_O, ``[..., d_model, d_model]`` (into ``out``,
    a reused buffer, when given)."""
    return _outer(W_O.mT, (W_V.mT @ W_V) @ W_O, out)


def _outer(a: torch.Tensor, b: torch.Tensor, out) -> torch.Tensor:
    """``a @ b`` ``[n, d, d]`` into the first ``n`` matrices of ``out`` (or a new tensor)."""
    return torch.matmul(a, b, out=None if out is None else out[: len(a)])


def _right_gram(c: Circuits, kind: str, layer: int, offsets=None, out=None) -> torch.Tensor:
    """M_2 = R Rᵀ for the later head's reading matrix R of ``kind``, ``[H, d_model, d_model]``
    (rotary: ``R = W_Q R̃_Δ W_Kᵀ`` at each offset Δ of ``offsets``, or its transpose for
    K-composition: ``[len(offsets) · H, d_model, d_model]``, offset-major; into ``out`` when given)."""
    if kind == "v_composition":
        V, O = c.layer("W_V", layer), c.layer("W_O", layer)
        return _outer(V, (O @ O.mT) @ V.mT, out)  # R = W_V W_O
    Q, K = c.layer("W_Q", layer), c.layer("W_K", layer)
    if offsets is not None:
        from . import rotary

        Rot = rotary.relative(c.config, offsets, dtype=Q.dtype, device=Q.device)    # [m, e, e]
        Q = (Q[None] @ Rot[:, None]).flatten(0, 1)                    # [m·H, d, e]: W_Q R̃_Δ, R̃ orthogonal
        K = K.repeat(len(offsets), 1, 1)                              # [m·H, d, e]
    if kind == "q_composition":  # R = W_Q W_Kᵀ
        return _outer(Q, (K.mT @ K) @ Q.mT, out)
    return _outer(K, (Q.mT @ Q) @ K.mT, out)  # k_composition: R = W_K W_Qᵀ


def _packed(M: torch.Tensor, upper: torch.Tensor, out: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Upper triangle of symmetric ``M`` ``[n, d, d]`` into float64 ``out`` ``[n, d(d+1)/2]``.

    ``upper``: its flat indices ``i·d + j``, ``i ≤ j`` (one ``index_select``, 4× faster than a
    2-D gather); ``picked``: a reused buffer of ``M``'s dtype for the selection (fresh tensors
    of this size cost page faults on every call)."""
    picked = picked[: len(M)]
    torch.index_select(M.flatten(-2), -1, upper, out=picked)
    return out.copy_(picked)


_RIGHT_BYTES = 1 << 28   # packed right Grams of one GEMM (several rotary offsets at once): ≤ 256 MB


def _all_pairs(c: Circuits, L: int, H: int, kinds: tuple[str, ...], offsets=(None,)) -> dict[str, np.ndarray]:
    """Raw scores ``[L, H, L, H]`` per kind: Σ M1∘M2 over packed upper triangles (Q/K kinds:
    the mean over ``offsets`` of the per-offset score).

    The left Grams (earlier heads, shared by every kind) are formed once, packed with
    off-diagonal weight 2 and kept in float64 ``[(L-1)·H, d(d+1)/2]``; each later layer's
    right Grams (all its heads, and with rotary positions as many offsets as fit in
    ``_RIGHT_BYTES``) are then contracted against all earlier layers in one GEMM. The circuit
    builder gives one layer's weights at a time (``Circuits.layer``).
    """
    d = c.config.d_model
    out = {k: np.zeros((L, H, L, H), dtype=np.float64) for k in kinds}
    if L < 2:
        return out
    dev = c.device
    iu = torch.triu_indices(d, d, device=dev)
    upper = iu[0] * d + iu[1]                                         # flat indices, row-major
    weight = torch.where(iu[0] == iu[1], 1.0, 2.0).to(device=dev, dtype=torch.float64)
    left = torch.empty(((L - 1) * H, iu.shape[1]), dtype=torch.float64, device=dev)
    left_norm2 = torch.empty((L - 1) * H, dtype=torch.float64, device=dev)
    per_gemm = max(1, _RIGHT_BYTES // (H * iu.shape[1] * 8))          # offsets per GEMM
    rows = H * max(1, min(per_gemm, len(offsets)))                    # right Grams per GEMM
    dtype = c.layer("W_O", 0).dtype
    grams = torch.empty((rows, d, d), dtype=dtype, device=dev)        # reused: no page faults
    picked = torch.empty((rows, iu.shape[1]), dtype=dtype, device=dev)
    right = torch.empty((rows, iu.shape[1]), dtype=torch.float64, device=dev)
    for l1 in range(L - 1):
        M1 = _left_gram(c.layer("W_V", l1), c.layer("W_O", l1), grams)
        left_norm2[l1 * H : (l1 + 1) * H] = torch.diagonal(M1, dim1=-2, dim2=-1).to(torch.float64).sum(-1)
        _packed(M1, upper, left[l1 * H : (l1 + 1) * H], picked).mul_(weight)
        del M1
    for kind in kinds:
        offs = [None] if kind == "v_composition" or offsets[0] is None else list(offsets)
        for l2 in range(1, L):
            total = torch.zeros(l2 * H, H, dtype=torch.float64, device=dev)
            for i in range(0, len(offs), per_gemm):
                chunk = None if offs[0] is None else offs[i : i + per_gemm]
                M2 = _right_gram(c, kind, l2, chunk, grams)                   # [m·H, d, d]
                r2 = torch.diagonal(M2, dim1=-2, dim2=-1).to(torch.float64).sum(-1)  # [m·H] = ‖R‖²
                P2 = _packed(M2, upper, right[: len(M2)], picked)            # [m·H, P]
                del M2
                cross = left[: l2 * H] @ P2.T                   # [l2·H, m·H] = ‖L R‖² for every earlier head
                denom = left_norm2[: l2 * H, None] * r2[None, :]
                score = torch.where(denom > 0, (cross.clamp_min(0) / denom).sqrt(), torch.zeros_like(cross))
                total += score.view(l2 * H, -1, H).sum(1)
            out[kind][:l2, :, l2, :] = (total / len(offs)).reshape(l2, H, H).cpu().numpy()
    return out


def pair_score(L_factors, R_factors) -> torch.Tensor:
    """‖L R‖/(‖L‖‖R‖) for factored ``L`` and ``R`` (batched), through ``Factored`` norms."""
    from .factored import Factored

    Lf, Rf = Factored(*L_factors), Factored(*R_factors)
    return (Lf @ Rf).norm() / (Lf.norm() * Rf.norm())


@lru_cache(maxsize=64)
def random_baseline(d_model: int, d_head: int, kind: str = "q_composition", *, centred: bool = False,
                    n_samples: int = 200, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the score on Gaussian weights with these shapes; E[score²] = 1/d.

    Each sample draws independent standard-normal ``W_V, W_O`` for the earlier head and
    ``W_Q, W_K`` (or ``W_V, W_O``) for the later one, seeded, in float64. ``centred``: readers
    and writers centred over ``d_model`` as a LayerNorm model's are (then ``d = d_model − 1``).
    """
    kind = check_composition_kind(kind, KINDS)
    g = torch.Generator().manual_seed(int(seed))
    n, d, r = int(n_samples), int(d_model), int(d_head)

    def gauss(*shape):
        return torch.randn(n, *shape, generator=g, dtype=torch.float64)

    def read(W):  # [n, d, r]: centred over d_model (its rows) when the model is
        return W - W.mean(-2, keepdim=True) if centred else W

    def write(W):  # [n, r, d]: centred over d_model (its columns)
        return W - W.mean(-1, keepdim=True) if centred else W

    V1, O1 = read(gauss(d, r)), write(gauss(r, d))
    A, B = read(gauss(d, r)), read(gauss(d, r))
    if kind == "q_composition":
        R = (A, B.mT)  # W_Q W_Kᵀ
    elif kind == "k_composition":
        R = (B, A.mT)  # W_K W_Qᵀ
    else:
        R = (A, write(gauss(r, d)))  # W_V W_O
    s = pair_score((V1, O1), R)
    return float(s.mean()), float(s.std())
