"""Head detection, from data or from weights alone, and the one rule that names the induction circuit.

**From data** (``detect_heads(model)``, ``method="data"``): score(h) = mean over queries q of
``A^h[q, key(q)]`` on sequences ``[prefix, r, r]`` of repeated random tokens, with
``key(q) = q-1`` (``previous_token``), ``q-n+1`` (``induction``) and ``q-n``
(``duplicate_token``), ``n = seq_len``, the last two over queries in the second copy of ``r``.
A head that always attends to the scored key gets 1.0; a head attending uniformly over its
causal prefix gets the **chance level** ``mean_q 1/(q+1)``, reported as each score's baseline.

**From weights** (``method="weights"``), each against the same statistic on Gaussian weights of
the same shapes (seeded; null mean, std and z):

* ``copying`` (the paper's, also ``copying_scores``): eigenvalues λ of the full OV circuit
  ``W_E W_V W_O W_U`` from the circuit builder; ``Re Σλ / Σ|λ|`` (1 for an exact copier) with
  ``positive_share`` = ``Σ_{Re λ>0}|λ| / Σ|λ|``. The null is exact for any vocabulary size: for
  Gaussian ``W_E``, ``W_U``, ``W_U W_E`` is distributed as ``G R`` with ``G`` a ``d × d``
  Gaussian and ``R`` the Bartlett factor of a Wishart(d_vocab, I).
* ``previous_token``: the positional part of the head's QK circuit,
  ``S = P W_Q W_Kᵀ Pᵀ / √d_head`` with ``P`` the first ``n_positions`` rows of ``W_pos`` as the
  head reads them (normalised as if the residual held only the position, ``numeric.norm``;
  shortformer positions join the query/key input after ``ln1``); row-softmax over the causal
  part; the statistic is the mean attention on the previous position. Null: Gaussian ``P``,
  ``W_Q``, ``W_K`` with each matrix's RMS.
* ``induction``: the K-composition score (``composition_scores``) of the head with the best
  earlier previous-token head (by the weight statistic), against the composition null.

**The induction circuit** (``induction_circuit``): the one rule every caller (``pathexpand
diagram``, ``report``, ``demo``) uses to name a previous-token head → induction head pair, or
to say that none was found. An induction head is a head of layer ≥ 1 whose data induction
score is at least ``min_score``; its partner is the earlier head, among those whose data
previous-token score is at least ``min_score``, whose output its key reads most
(K-composition), provided that composition is at least ``min_z`` standard deviations above the
random null. Induction heads are tried best first; if none has such a partner, none is found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import PathexpandError, check_int
from ..names import head_name
from ..ranking import Ranking, Result
from . import norm
from ._progress import progress as track
from .circuits import Circuits
from .composition import CompositionScores, composition_scores
from .evaluate import copying_statistics
from .factored import Factored
from .forward import record
from .weights import as_weights

__all__ = [
    "DATA_KINDS",
    "METHODS",
    "HeadScores",
    "InductionCircuit",
    "copying_scores",
    "detect_heads",
    "induction_circuit",
    "repeated_tokens",
    "score_patterns",
]

DATA_KINDS = ("previous_token", "induction", "duplicate_token")
METHODS = ("data", "weights")


# the result ---------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)  # repr: Result's one-line summary
class HeadScores(Result):
    """One ``[n_layers, n_heads]`` score array per statistic (``kinds``), each with its baseline.

    ``method`` is ``"data"`` (attention on repeated random tokens; the baseline is the chance
    level of uniform attention) or ``"weights"`` (weights only; the baseline is the mean of the
    Gaussian null, ``spread`` its std, so ``z`` is defined). ``extra[kind]`` holds extra columns
    (``positive_share`` for copying, ``earlier_head`` for weight induction). NaN marks heads
    where a statistic is undefined (induction in layer 0); rankings leave them out.
    ``settings["model"]``: the model's name, when it has one.
    """

    method: str
    scores: dict[str, np.ndarray]
    baseline: dict[str, np.ndarray]
    spread: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.scores)

    def __getitem__(self, kind: str) -> np.ndarray:
        """The ``[n_layers, n_heads]`` scores of one statistic."""
        return self.scores[self._kind(kind)]

    def _kind(self, kind: str) -> str:
        if kind not in self.scores:
            raise PathexpandError(
                f"unknown head statistic {kind!r}; these {self.method} scores have {', '.join(self.kinds)}"
            )
        return kind

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_heads)``."""
        return tuple(next(iter(self.scores.values())).shape)

    def z(self, kind: str) -> np.ndarray:
        """(score − null mean) / null std per head (weight statistics only)."""
        kind = self._kind(kind)
        if kind not in self.spread:
            raise PathexpandError(f"{kind!r} from {self.method} has a chance level but no spread; "
                                  "z-scores are defined for method='weights'")
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.scores[kind] - self.baseline[kind]) / self.spread[kind]

    def ranking(self, kind: str | None = None) -> Ranking:
        """Every head's score of one statistic (or of all), highest first, with ``baseline``
        (and ``z`` from weights) beside it and ``below_baseline`` marked."""
        kinds = self.kinds if kind is None else (self._kind(kind),)
        rows = []
        for kd in kinds:
            z = self.z(kd) if kd in self.spread else None
            for (l, h), value in np.ndenumerate(self.scores[kd]):
                if not math.isfinite(value):
                    continue  # undefined for this head (induction in layer 0)
                name = head_name(l, h)
                extra: dict[str, Any] = {"baseline": float(self.baseline[kd][l, h])}
                if z is not None:
                    extra["z"] = float(z[l, h])
                for col, arr in self.extra.get(kd, {}).items():
                    v = arr[l, h]
                    extra[col] = v.item() if hasattr(v, "item") else v
                extra["below_baseline"] = bool(value < extra["baseline"])
                rows.append(dict(name=name, kind=kd, depth=1, path=(name,), value=float(value), **extra))
        title = f"head scores from {self.method}" + (f": {kinds[0]}" if len(kinds) == 1 else "")
        notes = [f"{k}: {self.descriptions[k]}" for k in kinds if k in self.descriptions]
        notes += self.settings.get("notes", [])
        return Ranking(rows, title=title, value_label="score", notes=notes, shares=False,
                       of="heads").sort_by("value")

    def summary(self) -> str:
        best = ", ".join(f"{k} {r.name} {r.value:.3f}" for k in self.kinds
                         for r in self.ranking(k)[:1])
        return f"head scores from {self.method} ({self.shape[0]}×{self.shape[1]} heads): best {best}"

    def _repr_html_(self) -> str:
        """Summary, one heatmap per statistic (layer × head), then the top rows."""
        from ..render.notebook import Heatmap, result_html  # display only

        L, H = self.shape
        maps = []
        for kd in self.kinds:
            base = self.baseline[kd][np.isfinite(self.baseline[kd])]
            note = (f"baseline {float(base.min()):.3g}" if base.size and np.ptp(base) < 1e-12
                    else f"baseline {float(base.min()):.3g} … {float(base.max()):.3g}" if base.size else "")
            maps.append(Heatmap(kd, self.scores[kd].tolist(), [f"L{l}" for l in range(L)],
                                [f"H{h}" for h in range(H)], note=note))
        return result_html(self.summary(), self.ranking(), maps)

    def to_dict(self) -> dict:
        """``{kind: [[score per head] per layer]}``, baselines and the settings (JSON-ready)."""
        out: dict[str, Any] = {"method": self.method}
        out.update({k: np.round(v, 4).tolist() for k, v in self.scores.items()})
        out["baseline"] = {k: np.round(v, 4).tolist() for k, v in self.baseline.items()}
        out.update(self.settings)
        return out

    def __str__(self) -> str:
        rows = [f"{'head':<7}" + "".join(f"{k:>17}" for k in self.kinds)]
        L, H = self.shape
        for l in range(L):
            for h in range(H):
                rows.append(f"{head_name(l, h):<7}" + "".join(f"{self.scores[k][l, h]:>17.3f}" for k in self.kinds))
        return "\n".join(rows)


# from data ----------------------------------------------------------------------------------------
def repeated_tokens(
    d_vocab: int,
    seq_len: int,
    n_samples: int,
    *,
    seed: int = 0,
    prefix: Sequence[int] = (),
    vocab: Sequence[int] | None = None,
) -> np.ndarray:
    """``[n_samples, len(prefix) + 2*seq_len]`` int64 rows ``[prefix, r, r]``.

    ``r = np.random.default_rng(seed).integers(0, d_vocab, size=(n_samples, seq_len))``:
    uniform random tokens, all rows drawn at once so the result does not depend on batching.
    With ``vocab`` (a list of token ids) ``r = vocab[rng.integers(0, len(vocab), size=...)]``.
    """
    rng = np.random.default_rng(seed)
    if vocab is None:
        r = rng.integers(0, d_vocab, size=(n_samples, seq_len))
    else:
        r = np.asarray(vocab, dtype=np.int64)[rng.integers(0, len(vocab), size=(n_samples, seq_len))]
    pre = np.broadcast_to(np.asarray(prefix, dtype=np.int64), (n_samples, len(prefix)))
    return np.concatenate([pre, r, r], axis=1).astype(np.int64)


def _scored(seq_len: int, prefix_len: int) -> dict[str, np.ndarray]:
    """The query positions each data statistic averages over."""
    n, p = seq_len, prefix_len
    return {"previous_token": np.arange(p + 1, p + 2 * n),
            "induction": np.arange(p + n, p + 2 * n),
            "duplicate_token": np.arange(p + n, p + 2 * n)}


def score_patterns(patterns: Any, seq_len: int, prefix_len: int = 0) -> dict[str, Any]:
    """Per-sample head scores from attention patterns ``[batch, n_layers, n_heads, q, k]``.

    Works on numpy arrays and torch tensors alike (returns the same type), one score
    ``[batch, n_layers, n_heads]`` per kind: the mean of ``A[q, key(q)]`` over the scored
    queries (see the module docstring).
    """
    n, p = int(seq_len), int(prefix_len)
    T = patterns.shape[-1]
    if patterns.shape[-2] != T or T < p + 2 * n or n < 2:
        raise PathexpandError(
            f"patterns of shape {tuple(patterns.shape)} do not hold [prefix({p}), r, r] "
            f"with seq_len={n} (need q = k >= {p + 2 * n} and seq_len >= 2)"
        )
    # x.diagonal(offset, a, b)[..., j] = A[j - offset, j] for offset < 0 (numpy and torch)
    prev = patterns.diagonal(-1, -2, -1)[..., p : p + 2 * n - 1]  # q = p+1 .. p+2n-1
    ind = patterns.diagonal(-(n - 1), -2, -1)[..., p + 1 : p + n + 1]  # q = p+n .. p+2n-1
    dup = patterns.diagonal(-n, -2, -1)[..., p : p + n]  # q = p+n .. p+2n-1
    return {"previous_token": prev.mean(-1), "induction": ind.mean(-1), "duplicate_token": dup.mean(-1)}


def detect_heads(
    model,
    *,
    method: str = "data",
    seq_len: int | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    prefix: Sequence[int] = (),
    vocab: Sequence[int] | None = None,
    device=None,
    dtype=None,
    progress: bool = False,
) -> HeadScores:
    """Score every head of ``model`` (anything ``pe.load`` takes); see the module docstring.

    ``method="data"``: previous-token, induction and duplicate-token scores on
    ``repeated_tokens(...)`` (``n_samples`` default 128; ``seq_len`` default
    ``min(128, (n_ctx - len(prefix)) // 2)``; ``vocab`` (token ids) restricts ``r`` to an
    alphabet). Runs the forward pass ``batch_size`` rows at a time keeping running sums.
    ``method="weights"``: copying (square full OV circuits), previous-token (models with
    ``W_pos``) and induction (two or more layers) from the weights alone, each against its
    Gaussian null (``n_samples`` default 64 draws).
    """
    if method not in METHODS:
        raise PathexpandError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    w = as_weights(model)
    _need_heads(w.config)
    if method == "weights":
        return _from_weights(w, n_samples=64 if n_samples is None else n_samples, seed=seed,
                             device=device, dtype=dtype)
    return _from_data(w, seq_len, 128 if n_samples is None else n_samples, seed, batch_size, prefix,
                      vocab, device, dtype, progress)


def _from_data(w, seq_len, n_samples, seed, batch_size, prefix, vocab, device, dtype, progress) -> HeadScores:
    cfg = w.config
    prefix = tuple(int(t) for t in prefix)
    if any(t < 0 or t >= cfg.d_vocab for t in prefix):
        raise PathexpandError(f"prefix tokens must be in [0, {cfg.d_vocab}), got {list(prefix)}")
    if vocab is not None:
        vocab = tuple(int(t) for t in vocab)
        if len(vocab) < 2 or any(t < 0 or t >= cfg.d_vocab for t in vocab):
            raise PathexpandError(
                f"vocab must hold at least 2 token ids in [0, {cfg.d_vocab}), got {_short(vocab)}"
            )
    room = (cfg.n_ctx - len(prefix)) // 2
    if seq_len is None:
        seq_len = min(128, room)
    check_int("seq_len", seq_len, 2), check_int("n_samples", n_samples, 1), check_int("batch_size", batch_size, 1)
    if seq_len > room:
        raise PathexpandError(
            f"seq_len={seq_len} does not fit: prefix ({len(prefix)}) + 2*seq_len must be "
            f"<= n_ctx ({cfg.n_ctx}); the largest seq_len is {room}"
        )
    tokens = repeated_tokens(cfg.d_vocab, seq_len, n_samples, seed=seed, prefix=prefix, vocab=vocab)
    n = tokens.shape[1]
    # every pattern of a batch is kept ([b, L, H, n, n]): at most ~256 MB of them at a time
    batch_size = max(1, min(batch_size, (1 << 26) // max(1, cfg.n_layers * cfg.n_heads * n * n)))
    sums = {kind: np.zeros((cfg.n_layers, cfg.n_heads), dtype=np.float64) for kind in DATA_KINDS}
    for start in track(range(0, n_samples, batch_size), progress, "detecting heads"):
        _, cache, _ = record(w, tokens[start : start + batch_size], device=device, dtype=dtype,
                             unembed=False)                    # patterns only: no logits
        scores = score_patterns(cache.patterns, seq_len, len(prefix))
        for kind in DATA_KINDS:
            sums[kind] += scores[kind].double().sum(0).cpu().numpy()
        del cache
    chance = {k: np.full((cfg.n_layers, cfg.n_heads), float(np.mean(1.0 / (q + 1))))
              for k, q in _scored(seq_len, len(prefix)).items()}
    return HeadScores(
        "data",
        {kind: sums[kind] / n_samples for kind in DATA_KINDS},
        chance,
        descriptions={
            "previous_token": "mean attention to the previous token on [r, r]",
            "induction": "mean attention to the token after the earlier copy (second copy of r)",
            "duplicate_token": "mean attention to the earlier copy of the token (second copy of r)",
        },
        settings=dict(seq_len=int(seq_len), n_samples=int(n_samples), seed=int(seed), prefix=list(prefix),
                      vocab=None if vocab is None else list(vocab), model=w.name),
    )


# from weights -------------------------------------------------------------------------------------
def _from_weights(w, *, n_samples: int, seed: int, device, dtype) -> HeadScores:
    cfg = w.config
    parts = []
    if cfg.d_vocab == cfg.d_vocab_out:
        parts.append(copying_scores(w, n_samples=n_samples, seed=seed, device=device, dtype=dtype))
    prev = None
    if w.W_pos is not None:
        prev = _previous_token(w, n_samples=n_samples, seed=seed, device=device, dtype=dtype)
        parts.append(prev)
        if cfg.n_layers > 1:
            parts.append(_induction(w, prev, seed=seed, device=device, dtype=dtype))
    if not parts:
        raise PathexpandError("no weight statistic applies: the full OV circuit is not square and "
                              "the model has no positional embedding")
    merged: dict[str, dict] = {"scores": {}, "baseline": {}, "spread": {}, "extra": {}, "descriptions": {}}
    for p in parts:
        for key in merged:
            merged[key].update(getattr(p, key))
    settings = {"n_samples": int(n_samples), "seed": int(seed), "model": w.name}
    if w.W_pos is None:
        settings["notes"] = [
            f"previous_token and induction from weights read W_pos; this model has "
            f"{'rotary positions (a rotation of queries and keys, no W_pos)' if cfg.positional == 'rotary' else 'no positional embedding'}"
            ": none computed, use method='data'"]
    return HeadScores("weights", settings=settings, **merged)


def copying_scores(model, *, n_samples: int = 64, seed: int = 0, device=None, dtype=None) -> HeadScores:
    """The paper's copying score ``Re Σλ/Σ|λ|`` of every head's full OV circuit ``W_E W_OV W_U``
    (the circuit builder's, as ``evaluate(..., metric="copying")`` sees it), with its Gaussian null."""
    w = as_weights(model)
    cfg = w.config
    _need_heads(cfg)
    if cfg.d_vocab != cfg.d_vocab_out:
        raise PathexpandError(
            f"copying scores need a square full OV circuit; d_vocab={cfg.d_vocab} but "
            f"d_vocab_out={cfg.d_vocab_out}"
        )
    check_int("n_samples", n_samples, 2)
    ov = Circuits(w, device=device, dtype=dtype).ov("full")
    score, share = copying_statistics(ov.eigenvalues())
    mean, std = _copying_null(cfg.d_vocab, cfg.d_model, cfg.d_head, n_samples, seed,
                              norm.centres(cfg.normalization))
    shape = (cfg.n_layers, cfg.n_heads)
    score = score.double().cpu().numpy()                                   # [n_layers, n_heads]
    zero = [f"L{l}H{h}" for l, h in zip(*np.nonzero(np.isnan(score)))]
    why = (f"; NaN for {', '.join(zero)}: the circuit is zero, no eigenvalue to weigh" if zero else "")
    return HeadScores(
        "weights",
        {"copying": score},
        {"copying": np.full(shape, mean)},
        {"copying": np.full(shape, std)},
        {"copying": {"positive_share": share.double().cpu().numpy()}},
        {"copying": "Re Σλ / Σ|λ| of W_E W_OV W_U; null: Gaussian weights of the same shapes"
                    + (", centred as the model's readers and writers" if norm.centres(cfg.normalization) else "")
                    + why},
        {"n_samples": int(n_samples), "seed": int(seed), "model": w.name},
    )


def _copying_null(d_vocab: int, d_model: int, d_head: int, n: int, seed: int,
                  centred: bool = False) -> tuple[float, float]:
    """Copying score of Gaussian W_E, W_V, W_O, W_U, sampled in batches of bounded size.

    W_U W_E is drawn as a product A B (``_gaussian_wu_we_factors``) and the spectrum taken from
    the ``d_head × d_head`` rotation (W_O A)(B W_V). ``centred``: as a LayerNorm model's circuit
    reads them, ``C W_U`` and ``W_E C`` (``C`` centres over d_model), so the rotation is
    (W_O C A)(B C W_V).
    """
    rng = np.random.default_rng(seed)
    step = max(1, 2**24 // (d_model * max(d_model, min(d_vocab, 4 * d_model))))
    scores = []
    for start in range(0, n, step):
        b = min(step, n - start)
        A, B = _gaussian_wu_we_factors(rng, b, d_vocab, d_model)
        if centred:
            A = A - A.mean(-2, keepdims=True)      # C A: rows of W_U as a reader
            B = B - B.mean(-1, keepdims=True)      # B C: columns of W_E as a writer
        V = rng.standard_normal((b, d_model, d_head))
        O = rng.standard_normal((b, d_head, d_model))
        rot = torch.as_tensor((O @ A) @ (B @ V))  # W_O (W_U W_E) W_V: same non-zero spectrum
        scores.append(copying_statistics(torch.linalg.eigvals(rot))[0])
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


def _previous_token(w, *, n_samples: int, seed: int, device, dtype, n_positions: int | None = None) -> HeadScores:
    """Mean attention on the previous position from the positional QK circuit (module docstring)."""
    cfg = w.config
    check_int("n_samples", n_samples, 2)
    n = min(cfg.n_ctx, 128) if n_positions is None else n_positions
    c = Circuits(w, device=device, dtype=dtype)
    shortformer = cfg.positional == "shortformer"
    P = c["W_pos"][:n]                                                   # [n, d] as written
    if shortformer or cfg.normalization is None:
        inv = torch.ones(n, 1, dtype=P.dtype, device=P.device)
    else:  # the norm's scale of a residual that holds only the position
        inv = 1.0 / norm.sigma(c.raw("W_pos")[:n], cfg.normalization, cfg.eps)[:, None]
    L, H = cfg.n_layers, cfg.n_heads
    values, scale_ratio = np.zeros((L, H)), np.zeros((L, H))
    rms = lambda t: t.double().square().mean(dim=(-2, -1)).sqrt()   # noqa: E731
    for l in range(L):
        Q = (c.raw("W_Q") if shortformer else c["W_Q"])[l]              # [H, d, e] as it reads
        K = (c.raw("W_K") if shortformer else c["W_K"])[l]
        S = Factored(P * inv, Q, K.mT, (P * inv).mT).dense() / math.sqrt(cfg.d_head)   # [H, n, n]
        values[l] = _prev_token_stat(S).double().cpu().numpy()
        # Gaussian P, W_Q, W_K with these RMS: S = c · S0, c = rms(P)² rms(W_Q) rms(W_K) d / √d_head
        scale_ratio[l] = (rms(P * inv) ** 2 * rms(Q) * rms(K) * cfg.d_model / math.sqrt(cfg.d_head)).cpu().numpy()
    mean, std = _prev_token_null(n, cfg.d_model, cfg.d_head, scale_ratio, n_samples, seed)
    return HeadScores(
        "weights", {"previous_token": values}, {"previous_token": mean}, {"previous_token": std},
        descriptions={"previous_token": f"softmax of W_pos W_QK W_posᵀ/√d_head over {n} positions: mean "
                                         "attention on q−1; null: Gaussian W_pos, W_Q, W_K with the same RMS"},
    )


def _prev_token_stat(S: torch.Tensor) -> torch.Tensor:
    """Mean over q = 1..n−1 of softmax_{k ≤ q}(S[q, k]) at k = q − 1, for S ``[..., n, n]``."""
    n = S.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool, device=S.device).tril()
    A = torch.softmax(S.masked_fill(~mask, float("-inf")).to(torch.float64), dim=-1)
    return torch.diagonal(A, offset=-1, dim1=-2, dim2=-1).mean(-1)


def _prev_token_null(n: int, d_model: int, d_head: int, scale: np.ndarray, n_samples: int, seed: int):
    """Null per head: S = c_h · S0 with S0 from unit Gaussian factors (the statistic is not
    scale-free, so each head's own RMS product ``c_h`` sets the softmax temperature)."""
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


def _induction(w, prev: HeadScores, *, seed: int, device, dtype) -> HeadScores:
    """K-composition of each head with the best earlier previous-token head (by ``prev``)."""
    cfg = w.config
    cs = composition_scores(w, "k_composition", seed=seed, device=device, dtype=dtype)
    L, H = cfg.n_layers, cfg.n_heads
    values = np.full((L, H), np.nan)
    partner = np.full((L, H), "", dtype=object)
    for l2 in range(1, L):
        earlier = prev["previous_token"][:l2]
        l1, h1 = np.unravel_index(int(np.nanargmax(earlier)), earlier.shape)
        values[l2] = cs["k_composition"][l1, h1, l2]
        partner[l2] = head_name(int(l1), int(h1))
    nan = np.isnan(values)
    return HeadScores(
        "weights", {"induction": values},
        {"induction": np.where(nan, np.nan, cs.null_mean["k_composition"])},
        {"induction": np.where(nan, np.nan, cs.null_std["k_composition"])},
        {"induction": {"earlier_head": partner}},
        {"induction": "K-composition with the earlier head of the best weight previous-token "
                      "score (a per-head statistic, not the induction pair: pe.induction_circuit "
                      "names that); null: Gaussian factors"},
    )


# the induction circuit ----------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)  # repr: Result's one-line summary
class InductionCircuit(Result):
    """A previous-token head → induction head pair found by ``induction_circuit``, or none.

    ``found`` says whether the rule (module docstring) named a pair; ``previous_token_head`` and
    ``induction_head`` are None when it did not; ``reason`` says why, in one sentence, with the
    numbers. ``candidates``: one row per (previous-token candidate, induction candidate) pair
    considered, with both data scores and the K-composition score, its null and z.
    """

    found: bool
    previous_token_head: str | None
    induction_head: str | None
    reason: str
    candidates: tuple[dict, ...]
    heads: HeadScores | None
    composition: CompositionScores | None
    min_score: float
    min_z: float

    @property
    def pair(self) -> tuple[str, str] | None:
        """``(previous_token_head, induction_head)``, or None."""
        return (self.previous_token_head, self.induction_head) if self.found else None

    @property
    def k_composition(self) -> dict | None:
        """The found pair's candidate row (``score``, ``baseline``, ``z``), or None."""
        for c in self.candidates:
            if (c["earlier"], c["later"]) == self.pair:
                return c
        return None

    def ranking(self) -> Ranking:
        """The candidate pairs, value = K-composition z against the null, the largest first."""
        rows = [dict(name=f"{c['earlier']} → {c['later']}.k", kind="k_composition", depth=2,
                     path=(c["earlier"], c["later"]), value=c["z"],
                     **{k: v for k, v in c.items() if k != "z"}) for c in self.candidates]
        notes = [self.reason]
        return Ranking(rows, title="induction circuit candidates (K-composition z)", value_label="z",
                       notes=notes, shares=False, of="pairs").sort_by("value")

    def summary(self) -> str:
        return self.reason

    def __str__(self) -> str:
        return self.reason

    @property
    def title(self) -> str:
        """A short title for a diagram: the pair and its K-composition, or "none found"."""
        if not self.found:
            return "no induction circuit found"
        c = self.k_composition
        return (f"induction circuit {self.previous_token_head} → {self.induction_head} "
                f"(K-composition {c['score']:.2f}, null {c['baseline']:.3f}, z {c['z']:.1f})")


def induction_circuit(
    model, *, min_score: float = 0.3, min_z: float = 3.0, heads: HeadScores | None = None,
    composition: CompositionScores | None = None, device=None, dtype=None,
) -> InductionCircuit:
    """The induction circuit of ``model`` by the module's rule, or "none found" with the reason.

    ``min_score``: the data previous-token and induction scores a head needs (chance is
    ``mean_q 1/(q+1)``, 0.03 for 64-token halves); ``min_z``: the K-composition's z against its
    random null. ``heads`` (``detect_heads(model)``) and ``composition``
    (``composition_scores(model, "k_composition")``) can be passed when already computed.
    """
    w = as_weights(model)
    for name, v in (("min_score", min_score), ("min_z", min_z)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise PathexpandError(f"{name} must be a finite number, got {v!r}")
    cfg = w.config
    _need_heads(cfg)

    def none(reason, comp=None, cands=()):
        return InductionCircuit(False, None, None, f"no induction circuit found: {reason}", tuple(cands),
                                heads, comp, float(min_score), float(min_z))

    if cfg.n_layers < 2:
        return none("an induction circuit needs heads in two layers; this model has one")
    heads = detect_heads(w, device=device, dtype=dtype) if heads is None else heads
    _check_given(heads, HeadScores, "heads", "pe.detect_heads(model)", w, (cfg.n_layers, cfg.n_heads))
    if heads.method != "data":
        raise PathexpandError("heads= must be head scores from data: pe.detect_heads(model), not "
                              "method='weights'")
    ind, prev = heads["induction"], heads["previous_token"]
    later = [(float(ind[l, h]), head_name(l, h), l, h) for l in range(1, cfg.n_layers)
             for h in range(cfg.n_heads) if ind[l, h] >= min_score]
    if not later:
        l, h = np.unravel_index(int(np.argmax(ind[1:])), ind[1:].shape)
        return none(f"no head of layer ≥ 1 attends like an induction head (best induction score "
                    f"{ind[1:].max():.3f}, {head_name(int(l) + 1, int(h))}, below {min_score:g}; "
                    f"chance {heads.baseline['induction'][0, 0]:.3f})")
    if composition is None:
        composition = composition_scores(w, "k_composition", device=device, dtype=dtype)
    L, H = cfg.n_layers, cfg.n_heads
    _check_given(composition, CompositionScores, "composition", 'pe.composition_scores(model, "k_composition")',
                 w, (L, H, L, H))
    if "k_composition" not in composition.kinds or not composition.n_samples:
        raise PathexpandError("composition= must hold k_composition with its random null: "
                              'pe.composition_scores(model, "k_composition") (baseline="random")')
    k = composition["k_composition"]
    null_mean = composition.null_mean["k_composition"]
    null_std = composition.null_std["k_composition"]
    candidates = []
    for score, name, l2, h2 in sorted(later, reverse=True):
        for l1 in range(l2):
            for h1 in range(cfg.n_heads):
                if prev[l1, h1] >= min_score:
                    s = float(k[l1, h1, l2, h2])
                    candidates.append(dict(earlier=head_name(l1, h1), later=name,
                                           previous_token_score=float(prev[l1, h1]), induction_score=score,
                                           score=s, baseline=null_mean, z=(s - null_mean) / null_std))
    if not candidates:
        best = sorted(later, reverse=True)[0]
        top_prev = float(np.max(prev[: best[2]]))
        return none(f"{best[1]} attends like an induction head ({best[0]:.2f}) but no earlier head is a "
                    f"previous-token head (best previous-token score {top_prev:.3f} < {min_score:g})",
                    composition)
    for score, name, _, _ in sorted(later, reverse=True):
        mine = [c for c in candidates if c["later"] == name]
        best = max(mine, key=lambda c: c["z"]) if mine else None
        if best is not None and best["z"] >= min_z:
            reason = (f"induction circuit {best['earlier']} → {name}: {best['earlier']} is a previous-token "
                      f"head ({best['previous_token_score']:.2f}), {name} an induction head ({score:.2f}), "
                      f"and {name}'s key reads {best['earlier']} (K-composition {best['score']:.3f}, "
                      f"null {null_mean:.3f} ± {null_std:.4f}, z {best['z']:.1f})")
            return InductionCircuit(True, best["earlier"], name, reason, tuple(candidates), heads,
                                    composition, float(min_score), float(min_z))
    best = max(candidates, key=lambda c: c["z"])
    return none(f"induction heads ({', '.join(n for _, n, _, _ in sorted(later, reverse=True))}) and "
                f"previous-token heads exist, but no pair composes above the null (best "
                f"{best['earlier']} → {best['later']}: K-composition z {best['z']:.1f} < {min_z:g})",
                composition, candidates)


# helpers ------------------------------------------------------------------------------------------
def _check_given(result, kind: type, name: str, how: str, w, shape: tuple) -> None:
    """A result passed in for reuse must be of this model: right type, shape and (when both
    have one) model name."""
    if not isinstance(result, kind):
        raise PathexpandError(f"{name}= must be {how}, got {type(result).__name__}")
    got = result.shape
    model = result.settings.get("model") if isinstance(result, HeadScores) else result.model
    if tuple(got) != tuple(shape) or (model and w.name and model != w.name):
        raise PathexpandError(
            f"{name}= was computed on another model ({model or 'unnamed'}, shape {tuple(got)}); "
            f"this one is {w.name or 'unnamed'} with shape {tuple(shape)}: pass {how} of it"
        )


def _need_heads(cfg) -> None:
    if cfg.n_layers == 0 or cfg.n_heads == 0 or cfg.d_head == 0:
        raise PathexpandError("this model has no attention heads to score")


def _short(ids) -> str:
    ids = list(ids)
    return f"{ids[:8]}{' ...' if len(ids) > 8 else ''} ({len(ids)} ids)"
