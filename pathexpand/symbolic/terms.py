"""One term of an expansion: a logit path (``Term``) or a pair of score paths (``ScoreTerm``).

A term is identified by its path (node names earliest-first, starting with the source); its
sympy expression is built from that path on first access, so the numeric layer, which
evaluates terms from their paths, never needs sympy to have run.

Names (unique within an expansion, ``parse_term_name`` inverts them):

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
from ..errors import PathexpandError
from ..names import COMPOSE, parse_node, parse_path_name, path_name
from .forms import logit_forms, score_forms
from .symbols import Mat

__all__ = [
    "LOGIT_KINDS",
    "REMAINDER",
    "SCORE_KINDS",
    "ScoreTerm",
    "Term",
    "composition_kind",
    "is_bias_source",
    "logit_kind",
    "parse_score_name",
    "parse_term_name",
    "score_kind",
    "score_name",
    "term_name",
]

LOGIT_KINDS = ("direct", "head", "virtual", "mlp", "bias", "remainder")
SCORE_KINDS = ("direct", "q_composition", "k_composition", "qk_composition", "remainder")
REMAINDER = "remainder"
_SEP = " · "


def is_bias_source(source: str) -> bool:
    """True for bias sources (``L0H2.b_V``, ``L0.b_O``, ..., ``b_U``)."""
    return source != REMAINDER and parse_node(source).kind == "bias"


def term_name(path: tuple[str, ...]) -> str:
    """Unique short name of a path: ``L1H0∘L0H1``, ``pos:L1H0``, ``L0.b_O``, ``remainder``."""
    path = tuple(path)
    if path == (REMAINDER,):
        return REMAINDER
    if path[0] == "embed":
        return path_name(path)
    return path[0] if len(path) == 1 else f"{path[0]}:{path_name(path)}"


def parse_term_name(name: str) -> tuple[str, ...]:
    """Inverse of ``term_name`` (a logit path); score names split on `` · `` first."""
    name = name.strip()
    if name == REMAINDER:
        return (REMAINDER,)
    if ":" in name:
        source, rest = name.split(":", 1)
        if parse_node(source).kind not in ("source", "bias"):
            raise PathexpandError(f"{source!r} in {name!r} is not a source")
        return (source, *parse_path_name(rest))
    if name == "direct":
        return ("embed",)
    try:
        node = parse_node(name)
    except PathexpandError:
        node = None
    if node is not None and node.kind in ("source", "bias"):
        return (name,)
    return ("embed", *parse_path_name(name))


def logit_kind(path: tuple[str, ...]) -> str:
    """Kind of a logit path, by the precedence documented above."""
    if path == (REMAINDER,):
        return "remainder"
    if is_bias_source(path[0]):
        return "bias"
    kinds = [parse_node(n).kind for n in path[1:]]
    if "mlp" in kinds:
        return "mlp"
    heads = kinds.count("head")
    return "virtual" if heads >= 2 else "head" if heads == 1 else "direct"


def score_kind(query_path, key_path) -> str:
    """Composition kind of a (query path, key path) pair."""
    if tuple(query_path) == (REMAINDER,):
        return "remainder"
    return composition_kind(len(query_path) > 1, len(key_path) > 1)


def composition_kind(query_composes: bool, key_composes: bool) -> str:
    """``direct``/``q_composition``/``k_composition``/``qk_composition`` from which side
    passes at least one head or MLP."""
    return {(False, False): "direct", (True, False): "q_composition",
            (False, True): "k_composition", (True, True): "qk_composition"}[
        (bool(query_composes), bool(key_composes))]


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


def score_name(query_path, key_path) -> str:
    """``q:<term_name(query)> · k:<term_name(key)>`` (``remainder`` for the remainder)."""
    if tuple(query_path) == (REMAINDER,):
        return REMAINDER
    return f"q:{term_name(query_path)}{_SEP}k:{term_name(key_path)}"


def parse_score_name(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Inverse of ``score_name``: ``(query_path, key_path)``."""
    name = name.strip()
    if name == REMAINDER:
        return (REMAINDER,), (REMAINDER,)
    parts = name.split(_SEP.strip())
    if len(parts) != 2 or not parts[0].strip().startswith("q:") or not parts[1].strip().startswith("k:"):
        raise PathexpandError(
            f"{name!r} is not a score term name like 'q:direct · k:L0H0' "
            f"(query side, '·', key side; paths named like {'L1H0' + COMPOSE + 'L0H1'!r})"
        )
    return parse_term_name(parts[0].strip()[2:]), parse_term_name(parts[1].strip()[2:])

