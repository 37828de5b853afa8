"""Head detection: previous-token, induction and duplicate-token scores on repeated random tokens.

score(h) = mean over queries q of A^h[q, key(q)] on sequences ``[prefix, r, r]``, with
``key(q) = q-1`` (previous_token), ``q-n+1`` (induction) and ``q-n`` (duplicate_token),
``n = seq_len``, the last two over queries in the second copy of ``r`` only.

A head that always attends to the scored key gets 1.0; a head that attends uniformly over
the causal prefix gets ``mean_q 1/(q+1)`` (its "chance" level, small for long sequences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._repr import TextTableHTML
from ..errors import PathexpandError, check_int
from ._progress import progress as track

__all__ = ["HeadScores", "detect_heads", "repeated_tokens", "score_patterns", "KINDS"]

KINDS = ("previous_token", "induction", "duplicate_token")


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


@dataclass(frozen=True)
class HeadScores(TextTableHTML):
    """``[n_layers, n_heads]`` score arrays per kind, and how they were measured."""

    previous_token: np.ndarray
    induction: np.ndarray
    duplicate_token: np.ndarray
    seq_len: int
    n_samples: int
    seed: int = 0
    prefix: tuple[int, ...] = field(default=())
    vocab: tuple[int, ...] | None = None  # token ids r was drawn from (None: all of d_vocab)

    def __getitem__(self, kind: str) -> np.ndarray:
        _check_kind(kind)
        return getattr(self, kind)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_heads)``."""
        return tuple(self.previous_token.shape)

    def top(self, kind: str, k: int = 1) -> list[tuple[str, float]]:
        """The ``k`` heads with the highest ``kind`` score, best first: ``[("L1H2", 0.91), ...]``."""
        scores = self[kind]
        order = np.argsort(-scores, axis=None, kind="stable")[: max(int(k), 0)]
        n_heads = scores.shape[1]
        return [(f"L{i // n_heads}H{i % n_heads}", float(scores.flat[i])) for i in order]

    def to_records(self) -> list[dict]:
        """One JSON-ready dict per head: ``head``, ``layer``, ``index`` and a score per kind."""
        L, H = self.shape
        return [
            {"head": f"L{l}H{h}", "layer": l, "index": h}
            | {kind: round(float(self[kind][l, h]), 4) for kind in KINDS}
            for l in range(L)
            for h in range(H)
        ]

    def to_dict(self) -> dict:
        """``{kind: [[score per head] per layer]}`` plus the measurement settings (JSON-ready)."""
        out: dict[str, Any] = {kind: np.round(self[kind], 4).tolist() for kind in KINDS}
        out.update(seq_len=self.seq_len, n_samples=self.n_samples, seed=self.seed,
                   prefix=list(self.prefix), vocab=None if self.vocab is None else list(self.vocab))
        return out

    def __str__(self) -> str:
        rows = [f"{'head':<7}" + "".join(f"{k:>17}" for k in KINDS)]
        for r in self.to_records():
            rows.append(f"{r['head']:<7}" + "".join(f"{r[k]:>17.3f}" for k in KINDS))
        return "\n".join(rows)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PathexpandError(f"unknown head score kind {kind!r}; kinds are {', '.join(KINDS)}")


def detect_heads(
    weights,
    *,
    seq_len: int | None = None,
    n_samples: int = 128,
    seed: int = 0,
    batch_size: int = 32,
    prefix: Sequence[int] = (),
    vocab: Sequence[int] | None = None,
    device=None,
    dtype=None,
    progress: bool = False,
) -> HeadScores:
    """Score every head of ``weights`` on ``repeated_tokens(...)`` (see the module docstring).

    ``seq_len`` defaults to ``min(128, (n_ctx - len(prefix)) // 2)``; ``vocab`` (token ids)
    restricts ``r`` to an alphabet, e.g. the printable bytes a text model has seen. Runs ``run_with_cache``
    ``batch_size`` rows at a time, keeping only running sums: memory is one batch's patterns.
    ``device``/``dtype``: where and in what precision the forward pass runs (default: CPU, the
    weights' dtype).
    """
    from .forward import run_with_cache

    cfg = weights.config
    prefix = tuple(int(t) for t in prefix)
    if any(t < 0 or t >= cfg.d_vocab for t in prefix):
        raise PathexpandError(f"prefix tokens must be in [0, {cfg.d_vocab}), got {list(prefix)}")
    if vocab is not None:
        vocab = tuple(int(t) for t in vocab)
        if len(vocab) < 2 or any(t < 0 or t >= cfg.d_vocab for t in vocab):
            raise PathexpandError(
                f"vocab must hold at least 2 token ids in [0, {cfg.d_vocab}), got {_short(vocab)}"
            )
    if cfg.n_heads == 0:
        raise PathexpandError("this model has no attention heads to score")
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
    sums = {kind: np.zeros((cfg.n_layers, cfg.n_heads), dtype=np.float64) for kind in KINDS}
    starts = range(0, n_samples, batch_size)
    for start in track(starts, progress, "detecting heads"):
        _, cache = run_with_cache(weights, tokens[start : start + batch_size], device=device, dtype=dtype)
        scores = score_patterns(cache.patterns, seq_len, len(prefix))
        for kind in KINDS:
            sums[kind] += scores[kind].double().sum(0).cpu().numpy()
        del cache
    return HeadScores(
        **{kind: sums[kind] / n_samples for kind in KINDS},
        seq_len=int(seq_len),
        n_samples=int(n_samples),
        seed=int(seed),
        prefix=prefix,
        vocab=vocab,
    )


def _short(ids) -> str:
    ids = list(ids)
    return f"{ids[:8]}{' ...' if len(ids) > 8 else ''} ({len(ids)} ids)"
