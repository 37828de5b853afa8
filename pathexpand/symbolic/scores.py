"""``expand_scores``: a head's attention scores as a sum over (query path, key path) pairs.

S^h = X_q W_QK^h X_kᵀ / √d_head (+ bias terms), each input a sum over paths of the earlier
layers, so S^h is a sum over pairs: ``(Π_{l'<l} (1 + H_l'))²`` per pair of sources
(``2(1 + H_l')`` per layer with MLPs, ``2 + H_l'`` with parallel attention and MLP). Pairs are
direct, Q-, K- or Q&K-composition terms. With rotary positions entry (i, j) pairs the two sides
through ``W_Q R_{j−i} W_Kᵀ`` instead of ``W_QK``.

A term cancels in the softmax when its key side is the same at every key position: the key
bias ``b_K``; the head's own layer ``ln1.b`` (added after the scale); without a norm, a bias
row ``𝟙 b`` carried through heads only (attention rows sum to one: ``A 𝟙 = 𝟙``). A key side
through an MLP (per-position gates), from ``b_in`` (gated by the activation; a gated MLP adds
its ``b_in`` after the gate) or ``ln2.b``, or scaled by a norm (per-position ``1/σ``,
``1/rms``) varies along the row and does not cancel; under rotary positions nothing does (the
key at position j is rotated by j).
"""

from __future__ import annotations

from collections import defaultdict

from ..architecture import Architecture, as_architecture
from ..errors import UnknownHeadError
from ..names import composition_kind, parse_node
from .expansion import Expansion, subsets
from .paths import Source, check_max_depth, check_tail, iter_tails, score_sources, tail_polynomial
from .terms import REMAINDER, ScoreTerm, parse_score_name, score_kind, score_name

__all__ = ["ScoreExpansion", "expand_scores", "key_side_constant", "softmax_invariant"]

# (kind, query depth range, key depth range): the order terms are listed in
_KIND_ORDER = (
    ("direct", (0, 0), (0, 0)),
    ("q_composition", (1, None), (0, 0)),
    ("k_composition", (0, 0), (1, None)),
    ("qk_composition", (1, None), (1, None)),
)


def key_side_constant(arch: Architecture, head: str, source: str, has_mlp: bool) -> bool:
    """Is a key-side path from ``source`` the same at every key position (after the rotation,
    with rotary positions: never, the key at position j is turned by R_j)?"""
    layer, _ = arch.check_head(head)
    if arch.positional == "rotary":
        return False
    if source == f"{head}.b_K" or source == f"L{layer}.ln1.b":
        return True  # added after the head's own LayerNorm scale: one row for all keys
    node = parse_node(source)
    if node.kind != "bias" or arch.normed or has_mlp:
        return False  # tokens/positions vary; 1/σ, 1/rms and MLP gates vary per position
    constant = ("b_V", "b_O", "b_out", "b_in") if arch.gated_mlp else ("b_V", "b_O", "b_out")
    return node.param in constant  # 𝟙 b rows; A 𝟙 = 𝟙 keeps them constant


def softmax_invariant(arch: Architecture, head: str, key_path) -> bool:
    """True when the score term with this key path cancels in the softmax of ``head``."""
    has_mlp = any(parse_node(n).kind == "mlp" for n in key_path[1:])
    return key_side_constant(arch, head, key_path[0], has_mlp)


class ScoreExpansion(Expansion):
    """The attention-score expansion of one head (see ``expand_scores``)."""

    def __init__(self, arch: Architecture, head: str, max_depth: int | None):
        super().__init__(arch, head, max_depth)
        self.layer, _ = arch.check_head(head)
        self._q = score_sources(arch, head, "q")
        self._k = score_sources(arch, head, "k")
        self._bucket_cache: dict = {}
        self._cut: int | None = None

    @property
    def head(self) -> str:
        return self.target

    @property
    def sources(self) -> tuple[str, ...]:
        """Source names of either side: query-side ones then key-only ones."""
        return tuple(dict.fromkeys(s.name for s in self._q + self._k))

    @property
    def query_sources(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._q)

    @property
    def key_sources(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._k)

    def _term(self, qp, kp) -> ScoreTerm:
        return ScoreTerm(
            self.target, qp, kp, score_kind(qp, kp), softmax_invariant(self.arch, self.target, kp),
            score_name(qp, kp), self.arch, self.max_depth,
        )

    def _remainder(self) -> ScoreTerm:
        r = (REMAINDER,)
        return ScoreTerm(self.target, r, r, "remainder", False, REMAINDER, self.arch, self.max_depth)

    def _range(self, rng):
        lo, hi = rng
        if self.max_depth is not None:
            hi = self.max_depth if hi is None else min(hi, self.max_depth)
        return lo, hi

    def _tails(self, src: Source, rng):
        lo, hi = self._range(rng)
        if hi is not None and lo > hi:
            return iter(())
        return iter_tails(self.arch, src, hi, min_depth=lo)

    def _has_tails(self, src: Source, rng) -> bool:
        """Does ``src`` have a path with depth in ``rng`` (by formula, no listing)?"""
        lo, hi = self._range(rng)
        return any(lo <= i + j and (hi is None or i + j <= hi)
                   for i, j in tail_polynomial(self.arch, src))

    def _iter_all(self):
        return self._iter_filtered({})

    def _iter_filtered(self, filters: dict):
        want = filters.get("kind", filters.get("composition"))
        for kind, q_rng, k_rng in _KIND_ORDER:
            if want is not None and want != kind:
                continue
            for qs in self._q:
                for ks in self._k:
                    if "source" in filters and filters["source"] not in (qs.name, ks.name):
                        continue
                    if "bias" in filters and (qs.bias or ks.bias) != filters["bias"]:
                        continue
                    if filters.get("softmax_invariant") and not key_side_constant(
                        self.arch, self.target, ks.name, False
                    ):
                        continue
                    if not (self._has_tails(qs, q_rng) and self._has_tails(ks, k_rng)):
                        continue  # an empty side would make the other side's loop endless
                    for qt in self._tails(qs, q_rng):
                        for kt in self._tails(ks, k_rng):
                            yield self._term((qs.name, *qt), (ks.name, *kt))
        if self.n_cut and set(filters) <= {"kind"} and want in (None, "remainder"):
            yield self._remainder()

    def _buckets(self, side: str, avoid, source_filter) -> dict:
        """``{(source matches, depth, key side constant, bias): count}`` of one side (cached)."""
        key = (side, tuple(sorted(avoid)), source_filter)
        if key in self._bucket_cache:
            return self._bucket_cache[key]
        out: dict = defaultdict(int)
        for src in self._q if side == "q" else self._k:
            constant = {
                mlp: side == "k" and key_side_constant(self.arch, self.target, src.name, mlp)
                for mlp in (False, True)
            }
            for (i, j), c in tail_polynomial(self.arch, src, avoid=key[1]).items():
                if self.max_depth is not None and i + j > self.max_depth:
                    continue
                out[(src.name == source_filter, i + j, constant[j > 0], src.bias)] += c
        self._bucket_cache[key] = dict(out)
        return self._bucket_cache[key]

    def _pairs(self, filters: dict, avoid) -> int:
        sf = filters.get("source")
        qb = self._buckets("q", avoid, sf)
        kb = self._buckets("k", avoid, sf)
        lo, hi = filters.get("depth", (0, None))
        total = 0
        for (qm, dq, _, qbias), cq in qb.items():
            for (km, dk, inv, kbias), ck in kb.items():
                kind = composition_kind(dq > 0, dk > 0)
                if "kind" in filters and filters["kind"] != kind:
                    continue
                if "composition" in filters and filters["composition"] != kind:
                    continue
                if sf is not None and not (qm or km):
                    continue
                if dq + dk < lo or (hi is not None and dq + dk > hi):
                    continue
                if "softmax_invariant" in filters and inv != filters["softmax_invariant"]:
                    continue
                if "bias" in filters and (qbias or kbias) != filters["bias"]:
                    continue
                total += cq * ck
        return total

    def _count_paths(self, filters: dict) -> int:
        through = filters.get("through", ())
        # pairs passing every required node on some side: inclusion–exclusion over the
        # required nodes that both sides avoid
        return sum((-1) ** len(t) * self._pairs(filters, t) for t in subsets(through))

    @property
    def n_cut(self) -> int:
        """Pairs with a side deeper than ``max_depth`` (0 without a limit)."""
        if self.max_depth is None:
            return 0
        if self._cut is None:

            def side(sources, limit):
                return sum(
                    c for s in sources for (i, j), c in tail_polynomial(self.arch, s).items()
                    if limit is None or i + j <= limit
                )

            full = side(self._q, None) * side(self._k, None)
            self._cut = full - side(self._q, self.max_depth) * side(self._k, self.max_depth)
        return self._cut

    def _make(self, name: str) -> ScoreTerm:
        qp, kp = parse_score_name(name)
        if qp == (REMAINDER,):
            if not self.n_cut:
                raise UnknownHeadError("this expansion has no remainder (nothing was cut)")
            return self._remainder()
        for path, sources, side in ((qp, self._q, "query"), (kp, self._k, "key")):
            src = next((s for s in sources if s.name == path[0]), None)
            if src is None or not check_tail(self.arch, src, path[1:], self.max_depth):
                raise UnknownHeadError(
                    f"{name!r} is not a term of the {self.target} score expansion: bad {side} "
                    f"side; {side} sources are {', '.join(s.name for s in sources)}"
                )
        return self._term(qp, kp)


def expand_scores(arch, head: str, *, max_depth: int | None = None) -> ScoreExpansion:
    """The attention scores of ``head`` as a sum over (query path, key path) pairs.

    ``arch``: an ``Architecture``, or a model (``Weights``, a bundled name, ...: its architecture).

    ``max_depth`` limits each side's path (heads/MLPs passed); one ``remainder`` term then
    holds every pair with a deeper side.

    >>> exp = expand_scores(Architecture(2, 4, positional=None), "L1H0")
    >>> len(exp), exp.count(kind="k_composition")
    (25, 4)
    """
    arch = as_architecture(arch)
    arch.check_head(head)
    return ScoreExpansion(arch, head, check_max_depth(max_depth))
