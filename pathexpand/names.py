"""Node names, parsed and written in one place.

Heads ``L{l}H{h}``, MLPs ``MLP{l}``, sources ``embed``, ``pos`` and bias sources
(``L0H2.b_V``, ``L0.b_O``, ``MLP0.b_in``, ``MLP0.b_out``, ``L0.ln1.b``, ``L0.ln2.b``,
``ln_final.b``), sinks ``logits`` and ``L{l}H{h}.q|k|v``. A path is earliest-first,
``("embed", "L0H3", "L1H2")``; its short name is latest-first, ``L1H2∘L0H3``. A term's
name (``pos:L1H0``, ``q:direct · k:L0H0``), kind and depth are read off its path here too, so
the symbolic, graph and numeric layers name paths the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import PathexpandError

__all__ = [
    "COMPOSE",
    "COMPOSITION_KINDS",
    "LOGIT_KINDS",
    "REMAINDER",
    "SCORE_KINDS",
    "SCORE_SEP",
    "check_composition_kind",
    "composition_kind",
    "is_bias_source",
    "logit_kind",
    "parse_score_name",
    "parse_term_name",
    "path_info",
    "score_kind",
    "score_name",
    "term_name",
    "Node",
    "head_name",
    "mlp_name",
    "parse_head",
    "parse_node",
    "path_name",
    "parse_path_name",
    "SOURCES",
    "CHANNELS",
]

COMPOSE = "∘"
SOURCES = ("embed", "pos")
CHANNELS = ("q", "k", "v")

_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_MLP = re.compile(r"^MLP(\d+)$")
_SINK = re.compile(r"^L(\d+)H(\d+)\.([qkv])$")
_HEAD_BIAS = re.compile(r"^L(\d+)H(\d+)\.(b_V|b_Q|b_K)$")
_LAYER_BIAS = re.compile(r"^L(\d+)\.(b_O|ln1\.b|ln2\.b)$")
_MLP_BIAS = re.compile(r"^MLP(\d+)\.(b_in|b_out)$")


@dataclass(frozen=True)
class Node:
    """A parsed node name: ``kind`` is head, mlp, source, bias, sink or logits."""

    name: str
    kind: str
    layer: int | None = None
    head: int | None = None
    channel: str | None = None  # q/k/v for sinks
    param: str | None = None  # b_V, b_O, ... for bias sources


def head_name(layer: int, head: int) -> str:
    """``head_name(1, 4) == "L1H4"``."""
    return f"L{layer}H{head}"


def mlp_name(layer: int) -> str:
    """``mlp_name(0) == "MLP0"``."""
    return f"MLP{layer}"


def parse_head(name: str) -> tuple[int, int]:
    """``parse_head("L1H4") == (1, 4)``; anything else raises ``PathexpandError``."""
    m = _HEAD.match(str(name))
    if not m:
        raise PathexpandError(f"{name!r} is not a head name; heads are written like 'L1H4'")
    return int(m.group(1)), int(m.group(2))


def parse_node(name: str) -> Node:
    """Parse any node name of DESIGN.md into a ``Node``."""
    return _parse_node(str(name))


@lru_cache(maxsize=65536)
def _parse_node(name: str) -> Node:
    if name in SOURCES:
        return Node(name, "source")
    if name == "logits":
        return Node(name, "logits")
    if name in ("b_U", "ln_final.b"):
        return Node(name, "bias", param=name)
    if m := _HEAD.match(name):
        return Node(name, "head", int(m.group(1)), int(m.group(2)))
    if m := _MLP.match(name):
        return Node(name, "mlp", int(m.group(1)))
    if m := _SINK.match(name):
        return Node(name, "sink", int(m.group(1)), int(m.group(2)), channel=m.group(3))
    if m := _HEAD_BIAS.match(name):
        return Node(name, "bias", int(m.group(1)), int(m.group(2)), param=m.group(3))
    if m := _LAYER_BIAS.match(name):
        return Node(name, "bias", int(m.group(1)), param=m.group(2))
    if m := _MLP_BIAS.match(name):
        return Node(name, "bias", int(m.group(1)), param=m.group(2))
    raise PathexpandError(
        f"{name!r} is not a node name; expected one of 'embed', 'pos', 'logits', "
        "a head 'L1H4', an MLP 'MLP0', a sink 'L1H4.q|k|v' or a bias like 'L0H2.b_V'"
    )


def path_name(path) -> str:
    """Short name of a path: the nodes after the source, latest first, joined by ∘.

    ``path_name(("embed", "L0H3", "L1H2")) == "L1H2∘L0H3"``; a path with no nodes
    after its source is named ``"direct"``.
    """
    nodes = tuple(path)[1:]
    return COMPOSE.join(reversed(nodes)) if nodes else "direct"


def parse_path_name(name: str) -> tuple[str, ...]:
    """Inverse of ``path_name`` without the source: ``"L1H2∘L0H3" -> ("L0H3", "L1H2")``."""
    if name == "direct":
        return ()
    parts = tuple(reversed(name.replace("@", COMPOSE).split(COMPOSE)))
    for p in parts:
        try:
            kind = parse_node(p.strip()).kind
        except PathexpandError:
            kind = None
        if kind not in ("head", "mlp"):
            raise PathexpandError(f"{p!r} in {name!r} is not a head or MLP; a path name joins "
                                  f"them latest first with '{COMPOSE}' (or '@'), like 'L1H0{COMPOSE}L0H1'")
    return tuple(p.strip() for p in parts)


# terms: a path's name, kind and depth ---------------------------------------------------------
REMAINDER = "remainder"
SCORE_SEP = " · "
LOGIT_KINDS = ("direct", "head", "virtual", "mlp", "bias", "remainder")
COMPOSITION_KINDS = ("q_composition", "k_composition", "v_composition", "qk_composition")
SCORE_KINDS = ("direct", "q_composition", "k_composition", "qk_composition", "remainder")


def is_bias_source(source: str) -> bool:
    """True for bias sources (``L0H2.b_V``, ``L0.b_O``, ..., ``b_U``)."""
    return source != REMAINDER and parse_node(source).kind == "bias"


def term_name(path) -> str:
    """Unique short name of a logit path: ``L1H0∘L0H1``, ``direct``, ``pos:L1H0``, ``L0.b_O``.

    Token-embedding paths are named by their nodes (``path_name``); other sources are
    prepended with a colon (the source alone when no node follows); the remainder of a
    depth-limited expansion is ``remainder``.
    """
    path = tuple(path)
    if path == (REMAINDER,):
        return REMAINDER
    if path[0] == "embed":
        return path_name(path)
    return path[0] if len(path) == 1 else f"{path[0]}:{path_name(path)}"


def parse_term_name(name: str) -> tuple[str, ...]:
    """Inverse of ``term_name``: ``"pos:L1H0" -> ("pos", "L1H0")``, ``"direct" -> ("embed",)``.

    ``@`` is accepted for ``∘`` (``"L1H2@L0H1"``), for keyboards without it.
    """
    name = str(name).strip()
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


def score_name(query_path, key_path) -> str:
    """``q:<term_name(query)> · k:<term_name(key)>`` (``remainder`` for the remainder)."""
    if tuple(query_path) == (REMAINDER,):
        return REMAINDER
    return f"q:{term_name(query_path)}{SCORE_SEP}k:{term_name(key_path)}"


def parse_score_name(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Inverse of ``score_name``: ``(query_path, key_path)``."""
    name = str(name).strip()
    if name == REMAINDER:
        return (REMAINDER,), (REMAINDER,)
    parts = name.split(SCORE_SEP.strip())
    if len(parts) != 2 or not parts[0].strip().startswith("q:") or not parts[1].strip().startswith("k:"):
        raise PathexpandError(
            f"{name!r} is not a score term name like 'q:direct · k:L0H0' "
            f"(query side, '·', key side; paths named like 'L1H0{COMPOSE}L0H1' or 'L1H0@L0H1')"
        )
    return parse_term_name(parts[0].strip()[2:]), parse_term_name(parts[1].strip()[2:])


def logit_kind(path) -> str:
    """Kind of a logit path: ``remainder`` > ``bias`` (a bias source) > ``mlp`` (passes an
    MLP) > ``virtual`` (two or more heads) > ``head`` (one head) > ``direct``."""
    path = tuple(path)
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
    """Composition kind of a (query path, key path) pair of a head's attention score:
    ``direct`` (neither side passes a head or MLP), ``q_composition`` (only the query
    side), ``k_composition`` (only the key side), ``qk_composition`` (both)."""
    if tuple(query_path) == (REMAINDER,):
        return "remainder"
    return composition_kind(len(tuple(query_path)) > 1, len(tuple(key_path)) > 1)


def composition_kind(query_composes: bool, key_composes: bool) -> str:
    """``direct``/``q_composition``/``k_composition``/``qk_composition`` from which side of a
    score term passes at least one head or MLP."""
    return {(False, False): "direct", (True, False): "q_composition",
            (False, True): "k_composition", (True, True): "qk_composition"}[
        (bool(query_composes), bool(key_composes))]


def path_info(path) -> tuple[str, str, int]:
    """``(term_name, logit_kind, depth)`` of a logit path; depth = heads and MLPs passed."""
    path = tuple(path)
    return term_name(path), logit_kind(path), len(path) - 1


def check_composition_kind(kind: str, allowed=COMPOSITION_KINDS) -> str:
    """``kind`` if it is one of ``allowed`` (the one spelling: ``"k_composition"``), else a
    ``PathexpandError`` listing them."""
    if kind not in allowed:
        raise PathexpandError(f"composition kind must be one of {', '.join(allowed)}; got {kind!r}")
    return kind
