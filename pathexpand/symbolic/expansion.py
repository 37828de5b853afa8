"""``Expansion``: the ordered, sized, lazily enumerated collection of an expansion's terms.

``len`` and ``count`` come from the closed-form path polynomials (``paths.tail_polynomial``),
so a 12-layer, 12-head expansion (13^12 paths per source) is sized and summarised at once;
its terms are only generated when iterated. ``filter`` returns a ``Selection``: a lazy view
with the same counting. Output methods delegate to ``pathexpand.render`` (imported on call:
rendering sits to the right of the symbolic layer).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from itertools import combinations, islice

from ..architecture import Architecture
from ..errors import PathexpandError, UnknownHeadError
from .terms import LOGIT_KINDS, SCORE_KINDS

__all__ = ["FILTER_KEYS", "Expansion", "Selection"]

FILTER_KEYS = ("kind", "through", "source", "composition", "depth", "softmax_invariant", "bias")

_LOGIT_COMPOSITION = ("v_composition",)
_SCORE_COMPOSITION = ("direct", "q_composition", "k_composition", "qk_composition")


class _Printed:
    """The printers of ``pathexpand.render`` as methods (rendering sits to the right of this layer)."""

    def to_latex(self, **settings) -> str:
        """The derivation as one complete ``align*`` block (amsmath)."""
        from ..render.latex import to_latex

        return to_latex(self, **settings)

    def to_markdown(self, **settings) -> str:
        """The derivation as Markdown, math in ``$$`` blocks."""
        from ..render.markdown import to_markdown

        return to_markdown(self, **settings)

    def to_mathml(self, **settings) -> str:
        """The derivation as XHTML with presentation MathML (one root element)."""
        from ..render.mathml import to_mathml

        return to_mathml(self, **settings)

    def to_text(self, **settings) -> str:
        """The derivation as readable Unicode text."""
        from ..render.text import to_text

        return to_text(self, **settings)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_latex_(self) -> str:
        from ..render.latex import to_latex

        return to_latex(self, jupyter=True)


class Expansion(_Printed, ABC):
    """An expansion of the logits (``target="logits"``) or of one head's attention scores.

    Iterating yields ``Term`` (logits) or ``ScoreTerm`` (scores) objects in a fixed order:
    logits by source (embed, pos, biases by layer, ``ln_final.b``, ``b_U``), shallow paths
    first; scores by kind (direct, Q-, K-, Q&K-composition), then query source, key source.
    A depth-limited expansion ends with one ``remainder`` term standing for every cut path.
    """

    target: str
    arch: Architecture
    max_depth: int | None

    def __init__(self, arch: Architecture, target: str, max_depth: int | None):
        self.arch = arch
        self.target = target
        self.max_depth = max_depth

    # --- subclass hooks -----------------------------------------------------------------
    @abstractmethod
    def _iter_all(self) -> Iterator:
        """Every term in order."""

    @abstractmethod
    def _count_paths(self, filters: dict) -> int:
        """Number of path terms (remainder excluded) matching ``filters``, by formula."""

    def _count(self, filters: dict) -> int:
        """Number of terms matching ``filters``; the remainder counts unless another filter excludes it."""
        total = self._count_paths(filters)
        if self.n_cut and set(filters) <= {"kind"} and filters.get("kind") in (None, "remainder"):
            total += 1
        return total

    @abstractmethod
    def _make(self, name: str):
        """The term called ``name`` (``UnknownHeadError``/``PathexpandError`` if none)."""

    @property
    @abstractmethod
    def sources(self) -> tuple[str, ...]:
        """Sources the terms start from."""

    @property
    @abstractmethod
    def n_cut(self) -> int:
        """Number of paths (or pairs) deeper than ``max_depth``, held by the remainder."""

    # --- collection -----------------------------------------------------------------------
    @property
    def n_terms(self) -> int:
        """Number of terms (remainder included), by formula; may exceed what ``len`` allows."""
        return self._count({})

    def __len__(self) -> int:
        n = self.n_terms
        if n > sys.maxsize:
            raise PathexpandError(f"{n} terms is more than len() can return; use .n_terms")
        return n

    def __iter__(self) -> Iterator:
        return self._iter_all()

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, key):
        """A term by name (``exp["L1H0∘L0H1"]``) or by position (walks the order: O(i))."""
        if isinstance(key, str):
            return self._make(key)
        if isinstance(key, bool) or not isinstance(key, int):
            raise PathexpandError(f"index an expansion by term name or int, got {key!r}")
        n = self.n_terms
        i = key + n if key < 0 else key
        if not 0 <= i < n:
            raise IndexError(f"term index {key} out of range for {n} terms")
        return next(islice(iter(self), i, None))

    def __contains__(self, name) -> bool:
        try:
            self._make(name)
        except (PathexpandError, KeyError):
            return False
        return True

    @property
    def remainder(self):
        """The remainder term when ``max_depth`` cut something, else None."""
        return self._remainder() if self.n_cut else None

    @abstractmethod
    def _remainder(self):
        """The remainder term (only called when ``n_cut`` > 0)."""

    def count(self, **filters) -> int:
        """Number of terms matching ``filters`` (see ``filter``), by formula, no listing."""
        return self._count(self._check_filters(filters))

    def filter(self, **filters) -> Selection:
        """Lazy view of the terms matching every filter given.

        ``kind`` (one of the kinds), ``through`` (a node name or several: the path, or
        either side of a score pair, passes all of them), ``source`` (the source, or either
        side's), ``composition`` (logits: ``"v_composition"`` = two or more heads; scores:
        ``"direct"``, ``"q_composition"``, ``"k_composition"``, ``"qk_composition"``), ``depth`` (nodes passed, or a range ``(lo, hi)``,
        ``hi`` None for no limit; score pairs: both sides together),
        ``softmax_invariant`` (scores), ``bias`` (the source, or either side's, is a bias).
        """
        return Selection(self, self._check_filters(filters))

    def _check_filters(self, filters: dict) -> dict:
        out = {}
        for key, value in filters.items():
            if key not in FILTER_KEYS:
                raise PathexpandError(
                    f"unknown filter {key!r}; filters are {', '.join(FILTER_KEYS)}"
                )
            if value is None:
                continue
            out[key] = self._check_filter(key, value)
        return out

    def _check_filter(self, key: str, value):
        scores = self.target != "logits"
        if key == "kind":
            valid = SCORE_KINDS if scores else LOGIT_KINDS
            if value not in valid:
                raise PathexpandError(f"kind must be one of {', '.join(valid)}; got {value!r}")
            return value
        if key == "through":
            nodes = (value,) if isinstance(value, str) else tuple(value)
            for node in nodes:
                self.arch.check_node(node)
            return nodes
        if key == "source":
            if value not in self.sources:
                raise UnknownHeadError(
                    f"{value!r} is not a source of this expansion; sources are "
                    f"{', '.join(self.sources)}"
                )
            return value
        if key == "composition":
            valid = _SCORE_COMPOSITION if scores else _LOGIT_COMPOSITION
            if value not in valid:
                raise PathexpandError(
                    f"composition must be one of {', '.join(valid)} for "
                    f"{'score' if scores else 'logit'} terms; got {value!r}"
                )
            return value
        if key == "depth":
            rng = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
            ok = (
                isinstance(rng, tuple) and len(rng) == 2
                and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in rng)
                and rng[0] is not None
            )
            if not ok:
                raise PathexpandError(
                    f"depth must be a non-negative int or a range (lo, hi) with hi an int or "
                    f"None, got {value!r}"
                )
            return rng
        if key == "softmax_invariant" and not scores:
            raise PathexpandError("softmax_invariant filters score terms (expand_scores) only")
        if not isinstance(value, bool):
            raise PathexpandError(f"{key} must be True or False, got {value!r}")
        return value

    def matches(self, term, filters: dict) -> bool:
        """True when ``term`` passes every (checked) filter."""
        for key, value in filters.items():
            if key == "kind" and term.kind != value:
                return False
            if key == "through" and not set(value) <= set(term.nodes):
                return False
            if key == "source":
                if value not in term.sources:
                    return False
            if key == "composition" and term.composition != value:
                return False
            if key == "depth" and (
                term.is_remainder or term.depth < value[0]
                or (value[1] is not None and term.depth > value[1])
            ):
                return False
            if key == "softmax_invariant" and (term.is_remainder or term.softmax_invariant != value):
                return False
            if key == "bias" and (term.is_remainder or term.bias != value):
                return False
        return not (term.is_remainder and filters and filters.get("kind") != "remainder")

    # --- output ---------------------------------------------------------------------------
    def derivation(self, *, summarize_above: int | None = None) -> list:
        """Ordered derivation steps (``Step``: title, explanation, sympy expression);
        groups of more than ``summarize_above`` terms (default 64) are summarised."""
        from .derivation import DEFAULT_SUMMARIZE_ABOVE, derive

        limit = DEFAULT_SUMMARIZE_ABOVE if summarize_above is None else summarize_above
        return derive(self, summarize_above=limit)

    def diagram(self, **settings):
        """Circuit diagram of the whole expansion (see ``pathexpand.render.diagram``)."""
        from ..render.dot import diagram

        return diagram(self, **settings)

    def __repr__(self) -> str:
        depth = "" if self.max_depth is None else f", max_depth={self.max_depth}"
        return f"<Expansion of {self.target}: {self.n_terms} terms; {self.arch}{depth}>"


class Selection(_Printed):
    """The terms of an expansion that match some filters: iterable, sized, printable."""

    def __init__(self, expansion: Expansion, filters: dict):
        self.expansion = expansion
        self.filters = filters

    @property
    def arch(self) -> Architecture:
        return self.expansion.arch

    @property
    def target(self) -> str:
        return self.expansion.target

    @property
    def n_terms(self) -> int:
        """Number of matching terms, by formula."""
        return self.expansion._count(self.filters)

    def __len__(self) -> int:
        n = self.n_terms
        if n > sys.maxsize:
            raise PathexpandError(f"{n} terms is more than len() can return; use .n_terms")
        return n

    def __iter__(self):
        exp, filters = self.expansion, self.filters
        return (t for t in exp._iter_filtered(filters) if exp.matches(t, filters))

    def __getitem__(self, i: int):
        n = self.n_terms
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise IndexError(f"selection index {i!r} out of range for {n} terms")
        return next(islice(iter(self), i % n, None))

    def count(self, **filters) -> int:
        return self.filter(**filters).n_terms

    def filter(self, **filters) -> Selection:
        """Narrow further; every filter must hold (``through`` nodes accumulate)."""
        new = dict(self.filters)
        for key, value in self.expansion._check_filters(filters).items():
            if key == "through":
                new[key] = tuple(dict.fromkeys(new.get(key, ()) + value))
            elif key in new and new[key] != value:
                raise PathexpandError(
                    f"filter {key}={value!r} contradicts {key}={new[key]!r} of this selection"
                )
            else:
                new[key] = value
        return Selection(self.expansion, new)

    def __repr__(self) -> str:
        flt = ", ".join(f"{k}={v!r}" for k, v in self.filters.items())
        return f"<Selection of {self.n_terms} terms ({flt}) of {self.expansion!r}>"


def subsets(items: Iterable) -> Iterator[tuple]:
    """All subsets of ``items`` (for inclusion–exclusion over required nodes)."""
    items = tuple(items)
    for r in range(len(items) + 1):
        yield from combinations(items, r)
