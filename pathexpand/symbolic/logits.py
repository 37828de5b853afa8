"""``expand_logits``: the logits as a sum over paths from every source to the unembedding.

logits = b_U + Σ_sources Σ_paths (A^{h_k}⋯A^{h_1} ⊗ W_U W_OV^{h_k}⋯W_OV^{h_1}) · source,
with attention patterns, norm scales and MLP gates frozen. ``Π_l (1 + H_l)`` paths per
source entering before layer 0 (``Π_l 2(1 + H_l)`` with MLPs, ``Π_l (2 + H_l)`` with parallel
attention and MLP).
"""

from __future__ import annotations

from collections import defaultdict

from ..architecture import Architecture, as_architecture
from ..errors import UnknownHeadError
from .expansion import Expansion
from .paths import check_max_depth, check_tail, iter_tails, logit_sources, tail_polynomial
from .terms import REMAINDER, Term, logit_kind, parse_term_name, term_name

__all__ = ["LogitExpansion", "expand_logits"]


def _kind(bias: bool, heads: int, mlps: int) -> str:
    if bias:
        return "bias"
    if mlps:
        return "mlp"
    return "virtual" if heads >= 2 else "head" if heads == 1 else "direct"


class LogitExpansion(Expansion):
    """The logit expansion of an architecture (see ``expand_logits``)."""

    def __init__(self, arch: Architecture, max_depth: int | None):
        super().__init__(arch, "logits", max_depth)
        self._sources = logit_sources(arch)
        self._by_name = {s.name: s for s in self._sources}
        self._tables: dict = {}
        self._cut: int | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """Source names in order: embed, pos (standard positions), bias sources, b_U."""
        return tuple(self._by_name)

    def _term(self, path: tuple[str, ...]) -> Term:
        return Term(path, logit_kind(path), term_name(path), self.arch, self.max_depth)

    def _remainder(self) -> Term:
        return Term((REMAINDER,), "remainder", REMAINDER, self.arch, self.max_depth)

    def _iter_all(self):
        return self._iter_filtered({})

    def _iter_filtered(self, filters: dict):
        kind = filters.get("kind")
        sources = [] if kind == "remainder" else self._sources
        if "source" in filters:
            sources = [s for s in sources if s.name == filters["source"]]
        if "bias" in filters:
            sources = [s for s in sources if s.bias == filters["bias"]]
        lo, hi = filters.get("depth", (0, None))
        if self.max_depth is not None:
            hi = self.max_depth if hi is None else min(hi, self.max_depth)
        for src in sources:
            if hi is not None and lo > hi:
                break
            for tail in iter_tails(self.arch, src, hi, min_depth=lo):
                yield self._term((src.name, *tail))
        if self.n_cut and set(filters) <= {"kind"} and kind in (None, "remainder"):
            yield self._remainder()

    def _table(self, through=()) -> list:
        """Per source: ``{depth: [(heads, mlps, count), ...]}`` of the kept paths (cached)."""
        key = tuple(sorted(set(through)))
        if key not in self._tables:
            rows = []
            for src in self._sources:
                by_depth: dict = defaultdict(list)
                for (i, j), c in tail_polynomial(self.arch, src, through=key).items():
                    if self.max_depth is None or i + j <= self.max_depth:
                        by_depth[i + j].append((i, j, c))
                rows.append((src, dict(by_depth)))
            self._tables[key] = rows
        return self._tables[key]

    def _count_paths(self, filters: dict) -> int:
        total = 0
        lo, hi = filters.get("depth", (0, None))
        for src, by_depth in self._table(filters.get("through", ())):
            if "source" in filters and src.name != filters["source"]:
                continue
            if "bias" in filters and src.bias != filters["bias"]:
                continue
            for d, entries in by_depth.items():
                if d < lo or (hi is not None and d > hi):
                    continue
                for i, j, c in entries:
                    if "kind" in filters and _kind(src.bias, i, j) != filters["kind"]:
                        continue
                    if "composition" in filters and i < 2:
                        continue
                    total += c
        return total

    @property
    def n_cut(self) -> int:
        """Paths deeper than ``max_depth`` (0 without a limit), all held by the remainder."""
        if self.max_depth is None:
            return 0
        if self._cut is None:
            self._cut = sum(
                c
                for src in self._sources
                for (i, j), c in tail_polynomial(self.arch, src).items()
                if i + j > self.max_depth
            )
        return self._cut

    def _make(self, name: str) -> Term:
        path = parse_term_name(name)
        if path == (REMAINDER,):
            if not self.n_cut:
                raise UnknownHeadError("this expansion has no remainder (nothing was cut)")
            return self._remainder()
        src = self._by_name.get(path[0])
        if src is None or not check_tail(self.arch, src, path[1:], self.max_depth):
            raise UnknownHeadError(
                f"{name!r} is not a term of this expansion ({self.arch}"
                + ("" if self.max_depth is None else f", max_depth={self.max_depth}")
                + f"); sources are {', '.join(self.sources)}"
            )
        return self._term(path)


def expand_logits(arch, *, max_depth: int | None = None) -> LogitExpansion:
    """The logits of ``arch`` as a sum over paths (``Term``s), lazily enumerated.

    ``arch``: an ``Architecture``, or a model (``Weights``, a bundled name, ...: its architecture).

    ``max_depth`` keeps paths through at most that many heads/MLPs and adds one
    ``remainder`` term for everything cut, so the sum stays exact.

    >>> exp = expand_logits(Architecture(2, 4, positional=None))
    >>> len(exp), exp.count(kind="virtual")
    (25, 16)
    """
    arch = as_architecture(arch)
    return LogitExpansion(arch, check_max_depth(max_depth))
