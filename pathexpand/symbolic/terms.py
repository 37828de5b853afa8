"""One term of an expansion: a logit path (``Term``) or a pair of score paths (``ScoreTerm``).

A term is identified by its path (node names earliest-first, starting with the source); its
sympy expression is built from that path on first access, so the numeric layer, which
evaluates terms from their paths, never needs sympy to have run.

Names (unique within an expansion; ``names.term_name`` writes them and ``names.parse_term_name``
inverts them):

* token-embedding paths: ``direct``, ``L0H1``, ``L1H0∘L0H1`` (``names.path_name``);
* other sources are prepended: ``pos`` (the source alone), ``pos:L1H0``, ``L0H2.b_V:L1H0``,
  ``L0.b_O``, ``b_U``; the remainder term is ``remainder``;
* score terms: ``q:<query side> · k:<key side>``, e.g. ``q:direct · k:L0H0``,
  ``q:pos · k:pos``, ``q:L1H0.b_Q · k:direct``.

Logit ``kind`` precedence: ``remainder`` > ``bias`` (the source is a bias, incl. ``b_U``) >
``mlp`` (passes any MLP) > ``virtual`` (two or more heads) > ``head`` (one head) > ``direct``.
Score ``kind`` is the composition: ``direct`` (neither side passes a head or MLP),
``q_composition`` (only the query side does), ``k_composition`` (only the key side),
``qk_composition`` (both); bias sources keep their composition kind and set ``bias``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..architecture import Architecture
from ..names import (
    LOGIT_KINDS,
    REMAINDER,
    SCORE_KINDS,
    is_bias_source,
    logit_kind,
    parse_node,
    parse_score_name,
    parse_term_name,
    score_kind,
    score_name,
    term_name,
)
from .forms import logit_forms, score_forms
from .symbols import Mat

__all__ = [
    "LOGIT_KINDS",
    "REMAINDER",
    "SCORE_KINDS",
    "ScoreTerm",
    "Term",
    "is_bias_source",
    "logit_kind",
    "parse_score_name",
    "parse_term_name",
    "score_kind",
    "score_name",
    "term_name",
]


def _heads(nodes) -> tuple[str, ...]:
    return tuple(n for n in nodes if parse_node(n).kind == "head")


class _Shown:
    """What every path term has: depth, sympy forms (from ``_forms``), name, LaTeX, diagram."""

    @property
    def depth(self) -> int:
        """Heads and MLPs passed (both sides together for a score term; ``max_depth + 1`` for
        the remainder)."""
        if self.is_remainder:
            return (self.max_depth or 0) + 1
        return len(self.nodes)

    @property
    def expr(self):
        """The paper's left-multiplying form (``A ⊗ W_U W_OV W_E``; ``P_q ⊗ P_k ⊗ (M_qᵀ W_QK M_k)``
        for a score term, the right form when a side has an MLP), built from the path."""
        return self._forms[0]

    @property
    def right_expr(self):
        """The right-multiplying form (TransformerLens arrays: ``X_q W_QK X_kᵀ`` for scores)."""
        return self._forms[1]

    def __str__(self) -> str:
        return self.name

    def _repr_latex_(self) -> str:
        from ..render.latex import to_latex  # rendering sits to the right of this layer

        return f"${to_latex(self)}$"

    def diagram(self, **settings):
        """Circuit diagram of the path(s) (see ``pathexpand.render.diagram``)."""
        from ..render.dot import diagram  # rendering sits to the right of this layer

        return diagram(self, **settings)


@dataclass(frozen=True)
class Term(_Shown):
    """One path to the logits: ``path`` earliest-first from its source, e.g.
    ``("embed", "L0H1", "L1H0")``; ``expr`` = ``A^{1,0}A^{0,1} ⊗ W_U W_OV^{1,0} W_OV^{0,1} W_E``
    (paper's tensor form), ``right_expr`` = ``A^{1,0}A^{0,1} t W_E W_OV^{0,1} W_OV^{1,0} W_U``.

    The remainder of a depth-limited expansion is ``Term(("remainder",), "remainder", ...)``:
    the sum of every path deeper than ``max_depth`` (``depth`` is ``max_depth + 1``, the
    smallest depth it holds); it has no nodes and its ``expr`` is the symbol R.
    """

    path: tuple[str, ...]
    kind: str
    name: str
    arch: Architecture = field(compare=False, repr=False)
    max_depth: int | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> str:
        """First element of the path: ``embed``, ``pos``, a bias name, or ``remainder``."""
        return self.path[0]

    @property
    def sources(self) -> tuple[str]:
        """``(source,)``: the sources the term starts from (a score term has two)."""
        return (self.path[0],)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Heads and MLPs passed, earliest first (``path[1:]``)."""
        return self.path[1:]

    @property
    def heads(self) -> tuple[str, ...]:
        """Head names in the path, earliest first."""
        return _heads(self.nodes)

    @property
    def mlps(self) -> tuple[str, ...]:
        """MLP names in the path, earliest first."""
        return tuple(n for n in self.nodes if parse_node(n).kind == "mlp")

    @property
    def sink(self) -> str:
        return "logits"

    @property
    def is_remainder(self) -> bool:
        return self.path == (REMAINDER,)

    @property
    def bias(self) -> bool:
        """True when the source is a bias (the term is constant-row or gated, no token input)."""
        return is_bias_source(self.source)

    @property
    def composition(self) -> str | None:
        """``"v_composition"`` when two or more heads are passed (a virtual head), else None."""
        return "v_composition" if len(self.heads) >= 2 else None

    @cached_property
    def _forms(self):
        if self.is_remainder:
            r = Mat("R", (self.max_depth,))
            return r, r
        return logit_forms(self.arch, self.path)


@dataclass(frozen=True)
class ScoreTerm(_Shown):
    """One (query path, key path) pair of a head's attention score (before ``/√d_head``).

    ``query_path``/``key_path`` are paths like ``Term.path``; shortformer ``pos``,
    the head's own layer ``L1.ln1.b`` and ``L1H0.b_Q``/``L1H0.b_K`` are length-1 paths.
    ``softmax_invariant``: the key side is the same at every key position, so the term adds
    one constant to each query row and cancels in the softmax (also under causal masking).
    """

    head: str
    query_path: tuple[str, ...]
    key_path: tuple[str, ...]
    kind: str
    softmax_invariant: bool
    name: str
    arch: Architecture = field(compare=False, repr=False)
    max_depth: int | None = field(default=None, compare=False, repr=False)

    @property
    def is_remainder(self) -> bool:
        return self.query_path == (REMAINDER,)

    @property
    def query_source(self) -> str:
        return self.query_path[0]

    @property
    def key_source(self) -> str:
        return self.key_path[0]

    @property
    def sources(self) -> tuple[str, str]:
        return self.query_path[0], self.key_path[0]

    @property
    def query_nodes(self) -> tuple[str, ...]:
        return self.query_path[1:]

    @property
    def key_nodes(self) -> tuple[str, ...]:
        return self.key_path[1:]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Query-side nodes then key-side nodes."""
        return self.query_nodes + self.key_nodes

    @property
    def heads(self) -> tuple[str, ...]:
        """Heads on either side (query side first)."""
        return _heads(self.nodes)

    @property
    def query_depth(self) -> int:
        return len(self.query_nodes)

    @property
    def key_depth(self) -> int:
        return len(self.key_nodes)

    @property
    def sink(self) -> str:
        return self.head

    @property
    def composition(self) -> str:
        """Same as ``kind``: direct, q_composition, k_composition, qk_composition."""
        return self.kind

    @property
    def bias(self) -> bool:
        """True when either side starts at a bias source (incl. b_Q/b_K)."""
        return not self.is_remainder and (
            is_bias_source(self.query_source) or is_bias_source(self.key_source)
        )

    @cached_property
    def _forms(self):
        if self.is_remainder:
            r = Mat("R", (self.max_depth,))
            return r, r
        return score_forms(self.arch, self.head, self.query_path, self.key_path)
