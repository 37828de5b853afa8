"""Weight-only head detectors: copying, previous-token and induction scores, each with a null.

No tokens are run; each statistic is read off the weights and compared with the same
statistic on Gaussian weights of the same shapes (seeded), reported as null mean, std and z.

* **copying** (the paper's): eigenvalues λ of the full OV circuit ``W_E W_V W_O W_U``;
  ``copying = Re Σλ / Σ|λ|`` (1 for an exact copying head, −1 for an anti-copying one) and
  ``positive_share = Σ_{Re λ > 0} |λ| / Σ|λ|`` (magnitude-weighted, so numerically-zero
  eigenvalues do not count). Eigenvalues come from the ``d_head × d_head`` rotation
  ``W_O W_U W_E W_V`` (``Factored.eigenvalues``). The null is exact for any vocabulary size:
  for Gaussian ``W_E``, ``W_U``, ``W_U W_E`` is distributed as ``G R`` with ``G`` a
  ``d_model × d_model`` Gaussian and ``R`` the Bartlett factor of a Wishart(d_vocab, I).
* **previous_token**: the positional part of the head's own QK circuit,
  ``S = P W_Q W_Kᵀ Pᵀ / √d_head`` with ``P`` the first ``n_positions`` rows of ``W_pos``
  (through the head's LayerNorm, as if the residual held only the position, for standard
  positions in LN models; shortformer positions join the query/key input after ln1);
  row-softmax over the causal part; the statistic is the mean attention on the previous
  position over queries 1..n−1 (1.0 for an exact previous-token head, ≈ mean 1/(q+1) for a
  uniform one). Null: Gaussian ``P``, ``W_Q``, ``W_K`` with each matrix's RMS.
* **induction**: the K-composition score of the head with the best previous-token head of an
  earlier layer (``composition_scores``), against the composition null (Gaussian factors,
  E[score²] = 1/d_model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._repr import TextTableHTML
from ..errors import PathexpandError, check_int
from ..models import load
from ..names import head_name, parse_head
from .factored import Factored, _as_tensor
from .forward import _torch_dtype
from .ranking import Ranking

__all__ = [
    "HeadStatistic",
    "WeightDetection",
    "copying_scores",
    "detect_heads_from_weights",
    "induction_scores",
    "previous_token_scores",
]


@dataclass(frozen=True)
class HeadStatistic:
    """One weight-only statistic per head ``[n_layers, n_heads]`` with its null (mean, std).

    NaN marks heads where the statistic is undefined (e.g. induction in layer 0).
    """

    statistic: str
    values: np.ndarray
    null_mean: np.ndarray
    null_std: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""

    @property
    def z(self) -> np.ndarray:
        """(value − null mean) / null std per head."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.values - self.null_mean) / self.null_std

    def __getitem__(self, head: str) -> float:
        l, h = parse_head(head)
        L, H = self.values.shape
        if l >= L or h >= H:
            raise PathexpandError(f"{head!r} is not in this {L}-layer, {H}-head model")
        return float(self.values[l, h])

    def best(self, k: int = 1, *, by: str = "value") -> list[tuple[str, float]]:
        """The ``k`` heads with the highest value (or z, ``by="z"``), best first."""
        arr = self.values if by == "value" else self.z
        flat = np.where(np.isnan(arr), -np.inf, arr).ravel()
        order = np.argsort(-flat, kind="stable")[:k]
        H = arr.shape[1]
        return [(head_name(int(i) // H, int(i) % H), float(arr.flat[i])) for i in order]

    def ranking(self) -> Ranking:
        """Every head as a ``Ranking`` row (value, null mean, null std, z, extras), best first."""
        L, H = self.values.shape
        rows = []
        z = self.z
        for l in range(L):
            for h in range(H):
                name = head_name(l, h)
                extra: dict[str, Any] = {
                    "null_mean": float(self.null_mean[l, h]),
                    "null_std": float(self.null_std[l, h]),
                    "z": float(z[l, h]),
                }
                for k, v in self.extra.items():
                    extra[k] = v[l, h].item() if hasattr(v[l, h], "item") else v[l, h]
                rows.append(dict(name=name, kind=self.statistic, depth=1, path=(name,),
                                 value=float(self.values[l, h]), **extra))
        return Ranking(rows, title=f"{self.statistic} (weights only)", value_label=self.statistic,
                       notes=[self.description] if self.description else [], shares=False).sort_by("value")

    def __str__(self) -> str:
        return str(self.ranking())


@dataclass(frozen=True)
class WeightDetection(TextTableHTML):
    """The three weight-only detectors together."""

    copying: HeadStatistic | None
    previous_token: HeadStatistic | None
    induction: HeadStatistic | None

    def statistics(self) -> list[HeadStatistic]:
        return [s for s in (self.copying, self.previous_token, self.induction) if s is not None]

    def ranking(self) -> Ranking:
        """All statistics as one ranking, ordered by z (most significant first)."""
        rows = [r for s in self.statistics() for r in s.ranking()]
        return Ranking(rows, title="weight-only head detectors", shares=False).sort_by("z")

    def __str__(self) -> str:
        return "\n\n".join(str(s.ranking()[:5]) for s in self.statistics())


# copying --------------------------------------------------------------------------------
def _copying_stats(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mag = lam.abs()
    total = mag.sum(-1)
    score = lam.real.sum(-1) / total
    pos = (mag * (lam.real > 0)).sum(-1) / total
    return score, pos


def copying_scores(weights, *, n_samples: int = 64, seed: int = 0, device=None, dtype=None) -> HeadStatistic:
    """Copying score Re Σλ/Σ|λ| and positive share of every head's full OV circuit (see module)."""
    w = load(weights)
    cfg = w.config
    _need_heads(cfg)
    if cfg.d_vocab != cfg.d_vocab_out:
        raise PathexpandError(
            f"copying scores need a square full OV circuit; d_vocab={cfg.d_vocab} but "
            f"d_vocab_out={cfg.d_vocab_out}"
        )
    td = _torch_dtype(dtype, w)
    ov = Factored(w.W_E, w.W_V, w.W_O, w.W_U, device=device, dtype=td)
    score, pos = _copying_stats(ov.eigenvalues())
    mean, std = _copying_null(cfg.d_vocab, cfg.d_model, cfg.d_head, n_samples, seed)
    shape = (cfg.n_layers, cfg.n_heads)
    return HeadStatistic(
        "copying",
        score.double().cpu().numpy(),
        np.full(shape, mean),
        np.full(shape, std),
        {"positive_share": pos.double().cpu().numpy()},
        "Re Σλ / Σ|λ| of W_E W_OV W_U; null: Gaussian weights of the same shapes",
    )


def _copying_null(d_vocab: int, d_model: int, d_head: int, n: int, seed: int) -> tuple[float, float]:
    """Copying score of Gaussian W_E, W_V, W_O, W_U, sampled in batches of bounded size.

    W_U W_E is drawn as a product A B (``_gaussian_wu_we_factors``) and the spectrum taken from
    the ``d_head × d_head`` rotation (W_O A)(B W_V).
    """
    _check_samples(n)
    rng = np.random.default_rng(seed)
    step = max(1, 2**24 // (d_model * max(d_model, min(d_vocab, 4 * d_model))))
    scores = []
    for start in range(0, n, step):
        b = min(step, n - start)
        A, B = _gaussian_wu_we_factors(rng, b, d_vocab, d_model)
        V = rng.standard_normal((b, d_model, d_head))
        O = rng.standard_normal((b, d_head, d_model))
        rot = torch.as_tensor((O @ A) @ (B @ V))  # W_O (W_U W_E) W_V: same non-zero spectrum
        scores.append(_copying_stats(torch.linalg.eigvals(rot))[0])
    score = torch.cat(scores)
    return float(score.mean()), float(score.std())


def _gaussian_wu_we_factors(rng, n: int, d_vocab: int, d_model: int, method: str | None = None):
    """``(A, B)`` with ``A @ B`` distributed exactly as W_U W_E for standard Gaussian W_U, W_E.

    ``method="direct"``: A = W_U ``[n, d, V]``, B = W_E ``[n, V, d]`` (used when V < d).
    ``"bartlett"`` (V ≥ d), O(d²) memory whatever V is: W_Eᵀ W_E ~ Wishart(V, I) = Rᵀ R with
    R_ii = sqrt(χ²_{V−i}), R_ij ~ N(0, 1) for i < j; given W_E the rows of W_U W_E are
    N(0, W_EᵀW_E), so W_U W_E ~ G R with G a ``d × d`` Gaussian: A = G, B = R.
    """
    method = method or ("direct" if d_vocab < d_model else "bartlett")
    if method == "direct":
        return rng.standard_normal((n, d_model, d_vocab)), rng.standard_normal((n, d_vocab, d_model))
    R = np.triu(rng.standard_normal((n, d_model, d_model)), 1)
    idx = np.arange(d_model)
    R[:, idx, idx] = np.sqrt(rng.chisquare(d_vocab - idx, size=(n, d_model)))
    return rng.standard_normal((n, d_model, d_model)), R


# previous token ----------------------------------------------------------------------------
def previous_token_scores(
    weights, *, n_positions: int | None = None, n_samples: int = 64, seed: int = 0, device=None, dtype=None
) -> HeadStatistic:
    """Mean attention on the previous position from the positional QK circuit (see module)."""
    w = load(weights)
    cfg = w.config
    _need_heads(cfg)
    if w.W_pos is None:
        raise PathexpandError("previous-token scores need positional embeddings; this model has none")
    n = min(cfg.n_ctx, 128) if n_positions is None else n_positions
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= cfg.n_ctx:
        raise PathexpandError(f"n_positions must be an int in [2, n_ctx={cfg.n_ctx}], got {n_positions!r}")
    td = _torch_dtype(dtype, w)
    P = _as_tensor(w.W_pos[:n], device, td)
    Q = _as_tensor(w.W_Q, device, td)
    K = _as_tensor(w.W_K, device, td)
    L, H = cfg.n_layers, cfg.n_heads
    values = np.zeros((L, H))
    scale_ratio = np.zeros((L, H))
    for l in range(L):
        Pl = _through_layernorm(P, w, l, device, td)  # [n, d]
        q = Pl @ Q[l]  # [H, n, d_head]
        k = Pl @ K[l]
        S = q @ k.mT / math.sqrt(cfg.d_head)
        values[l] = _prev_token_stat(S).double().cpu().numpy()
        rms = lambda t: t.double().square().mean(dim=(-2, -1)).sqrt()
        # Gaussian P, W_Q, W_K with these RMS: S = c · S0, c = rms(P)² rms(W_Q) rms(W_K) d / √d_head
        c = rms(Pl) ** 2 * rms(Q[l]) * rms(K[l]) * cfg.d_model / math.sqrt(cfg.d_head)
        scale_ratio[l] = c.cpu().numpy()
    mean, std = _prev_token_null(n, cfg.d_model, cfg.d_head, scale_ratio, n_samples, seed)
    return HeadStatistic(
        "previous_token",
        values,
        mean,
        std,
        {},
        f"softmax of W_pos W_QK W_posᵀ/√d_head over {n} positions: mean attention on q−1; "
        "null: Gaussian W_pos, W_Q, W_K with the same RMS",
    )


def _through_layernorm(P: torch.Tensor, w, layer: int, device, td) -> torch.Tensor:
    if w.config.normalization is None or w.config.positional == "shortformer":
        return P  # shortformer positions join the query/key input after ln1
    x = P - P.mean(-1, keepdim=True)
    x = x / (x.square().mean(-1, keepdim=True) + w.config.eps).sqrt()
    if w.config.normalization == "LN":
        x = x * _as_tensor(w[f"blocks.{layer}.ln1.w"], device, td)
    return x


def _prev_token_stat(S: torch.Tensor) -> torch.Tensor:
    """Mean over q = 1..n−1 of softmax_{k ≤ q}(S[q, k]) at k = q − 1, for S ``[..., n, n]``."""
    n = S.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool, device=S.device).tril()
    A = torch.softmax(S.masked_fill(~mask, float("-inf")).to(torch.float64), dim=-1)
    return torch.diagonal(A, offset=-1, dim1=-2, dim2=-1).mean(-1)


def _prev_token_null(n: int, d_model: int, d_head: int, scale: np.ndarray, n_samples: int, seed: int):
    """Null per head: S = c_h · S0 with S0 from unit Gaussian factors (the statistic is not
    scale-free, so each head's own RMS product ``c_h`` sets the softmax temperature)."""
    _check_samples(n_samples)
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((n_samples, n, d_model))
    S0 = (P @ rng.standard_normal((n_samples, d_model, d_head))) @ (
        P @ rng.standard_normal((n_samples, d_model, d_head))).transpose(0, 2, 1)
    S0 = torch.as_tensor(S0 / d_model)  # unit-scale scores: c_h carries d_model/√d_head
    L, H = scale.shape
    mean, std = np.zeros((L, H)), np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            stat = _prev_token_stat(S0 * float(scale[l, h]))
            mean[l, h], std[l, h] = float(stat.mean()), float(stat.std())
    return mean, std


# induction -----------------------------------------------------------------------------------
def induction_scores(
    weights, *, previous: HeadStatistic | None = None, n_samples: int = 200, seed: int = 0, device=None, dtype=None
) -> HeadStatistic:
    """K-composition of each head with the best previous-token head of an earlier layer."""
    from .composition import composition_scores

    w = load(weights)
    cfg = w.config
    _need_heads(cfg)
    prev = previous if previous is not None else previous_token_scores(w, seed=seed, device=device, dtype=dtype)
    cs = composition_scores(w, "k", baseline="random", n_samples=n_samples, seed=seed, device=device, dtype=dtype)
    L, H = cfg.n_layers, cfg.n_heads
    values = np.full((L, H), np.nan)
    partner = np.full((L, H), "", dtype=object)
    for l2 in range(1, L):
        earlier = prev.values[:l2]
        l1, h1 = np.unravel_index(int(np.nanargmax(earlier)), earlier.shape)
        values[l2] = cs["k"][l1, h1, l2]
        partner[l2] = head_name(int(l1), int(h1))
    return HeadStatistic(
        "induction",
        values,
        np.where(np.isnan(values), np.nan, cs.null_mean["k"]),
        np.where(np.isnan(values), np.nan, cs.null_std["k"]),
        {"previous_token_head": partner},
        "K-composition with the best earlier previous-token head; null: Gaussian factors "
        "(E[score²] = 1/d_model)",
    )


def detect_heads_from_weights(weights, *, seed: int = 0, device=None, dtype=None) -> WeightDetection:
    """Copying, previous-token (when the model has W_pos) and induction scores of every head."""
    w = load(weights)
    _need_heads(w.config)
    copying = copying_scores(w, seed=seed, device=device, dtype=dtype) if w.config.d_vocab == w.config.d_vocab_out else None
    prev = previous_token_scores(w, seed=seed, device=device, dtype=dtype) if w.W_pos is not None else None
    ind = (induction_scores(w, previous=prev, seed=seed, device=device, dtype=dtype)
           if prev is not None and w.config.n_layers > 1 else None)
    return WeightDetection(copying, prev, ind)


# helpers -------------------------------------------------------------------------------------
def _need_heads(cfg) -> None:
    if cfg.n_layers == 0 or cfg.n_heads == 0 or cfg.d_head == 0:
        raise PathexpandError("this model has no attention heads to score")


def _check_samples(n) -> None:
    check_int("n_samples", n, 2)
