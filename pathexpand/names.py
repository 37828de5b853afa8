"""Node names, parsed and written in one place.

Heads ``L{l}H{h}``, MLPs ``MLP{l}``, sources ``embed``, ``pos`` and bias sources
(``L0H2.b_V``, ``L0.b_O``, ``MLP0.b_in``, ``MLP0.b_out``, ``L0.ln1.b``, ``L0.ln2.b``,
``ln_final.b``), sinks ``logits`` and ``L{l}H{h}.q|k|v``. A path is earliest-first,
``("embed", "L0H3", "L1H2")``; its short name is latest-first, ``L1H2∘L0H3``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PathexpandError

__all__ = [
    "COMPOSE",
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
    name = str(name)
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
        node = parse_node(p.strip())
        if node.kind not in ("head", "mlp"):
            raise PathexpandError(f"{p!r} in {name!r} is not a head or MLP")
    return tuple(p.strip() for p in parts)
