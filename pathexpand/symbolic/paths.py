"""Which paths exist: sources, lazy enumeration (shallow first) and counting by formula.

The residual stream is read in *stages*: stage ``2l`` is layer l's attention (a path picks at
most one of its heads), stage ``2l+1`` its MLP (when the model has MLPs). A path from a source
picks at most one node per stage, in stage order, so from a source entering before stage 0
there are ``Π_l (1 + H_l)`` paths (``Π_l 2(1 + H_l)`` with MLPs). With parallel attention and
MLP the MLP reads the same stream as its layer's heads: stage ``2l`` holds the heads *and* the
MLP, stage ``2l+1`` is empty, so no path goes head → MLP inside a layer: ``Π_l (2 + H_l)``.
Counts come from the generating polynomial ``Π_stages (1 + H_l·y [+ z])`` (y counts heads,
z MLPs), never from listing paths, so a 12-layer, 12-head model is counted instantly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from ..architecture import Architecture
from ..errors import PathexpandError
from ..names import head_name, mlp_name, parse_node

__all__ = [
    "Source",
    "check_max_depth",
    "check_tail",
    "iter_tails",
    "logit_sources",
    "node_stage",
    "score_sources",
    "stage_nodes",
    "tail_polynomial",
]


@dataclass(frozen=True)
class Source:
    """A source of paths: its name, the first stage that can read it, and where it stops.

    ``forced``: the first node must sit at stage ``start`` and be one of ``first`` (a LayerNorm
    bias is only read by its own layer's heads, ``ln1.b``, or MLP, ``ln2.b``). ``bias``: the
    source is a bias (constant or gated rows).
    """

    name: str
    start: int
    stop: int
    forced: bool = False
    bias: bool = False
    first: tuple[str, ...] = ()


@lru_cache(maxsize=4096)
def stage_nodes(arch: Architecture, stage: int) -> tuple[str, ...]:
    """Nodes a path may pass at one stage: the heads of a layer, or its MLP (parallel blocks:
    the heads and the MLP at stage ``2l``, nothing at ``2l+1``)."""
    layer, is_mlp = divmod(stage, 2)
    heads = tuple(head_name(layer, h) for h in range(arch.n_heads[layer]))
    if arch.parallel_attn_mlp:
        return () if is_mlp else heads + (mlp_name(layer),)
    if is_mlp:
        return (mlp_name(layer),) if arch.mlp else ()
    return heads


def node_stage(arch: Architecture, node: str) -> int:
    """Stage of a head or MLP of ``arch`` (``UnknownHeadError`` when it is not in the model)."""
    arch.check_node(node)
    parsed = parse_node(node)
    return 2 * parsed.layer + (1 if parsed.kind == "mlp" and not arch.parallel_attn_mlp else 0)


def _bias_sources(arch: Architecture, stop: int) -> list[Source]:
    """Bias sources entering the residual stream before stage ``stop``, in stage order.

    Only LayerNorm has a bias (``ln1.b``, ``ln2.b``); RMSNorm has none. With parallel blocks
    the attention biases ``b_V``, ``b_O`` enter after the whole layer (its MLP does not read
    them) and ``ln2.b`` is read at the layer's own stage, by its MLP only.
    """
    out: list[Source] = []
    if not arch.biases:
        return out
    parallel = arch.parallel_attn_mlp
    for layer in range(arch.n_layers):
        attn, mlp_stage, after = 2 * layer, 2 * layer + 1, 2 * layer + 2
        if attn >= stop:
            break
        heads = tuple(head_name(layer, h) for h in range(arch.n_heads[layer]))
        if arch.layernorm and heads:
            out.append(Source(f"L{layer}.ln1.b", attn, stop, forced=True, bias=True, first=heads))
        attn_out = after if parallel else mlp_stage
        out.extend(Source(f"{h}.b_V", attn_out, stop, bias=True) for h in heads)
        out.append(Source(f"L{layer}.b_O", attn_out, stop, bias=True))
        if arch.mlp and mlp_stage < stop:
            mlp = mlp_name(layer)
            if arch.layernorm:
                out.append(Source(f"L{layer}.ln2.b", attn if parallel else mlp_stage, stop,
                                  forced=True, bias=True, first=(mlp,)))
            out.append(Source(f"{mlp}.b_in", after, stop, bias=True))
            out.append(Source(f"{mlp}.b_out", after, stop, bias=True))
    return out


def logit_sources(arch: Architecture) -> list[Source]:
    """Every source of a logit path, in order: embed, pos, biases by layer, ln_final.b, b_U."""
    stop = 2 * arch.n_layers
    out = [Source("embed", 0, stop)]
    if arch.positional == "standard":
        out.append(Source("pos", 0, stop))
    out.extend(_bias_sources(arch, stop))
    if arch.biases:
        if arch.layernorm:
            out.append(Source("ln_final.b", stop, stop, bias=True))
        out.append(Source("b_U", stop, stop, bias=True))
    return out


def score_sources(arch: Architecture, head: str, side: str) -> list[Source]:
    """Sources of one side (``"q"`` or ``"k"``) of a head's attention score, in order.

    Residual-stream sources of the earlier layers, then the ones added at the head's own
    input: shortformer ``pos`` (added after ln1), the layer's ``ln1.b``, and ``b_Q``/``b_K``.
    """
    if side not in ("q", "k"):
        raise PathexpandError(f"side must be 'q' or 'k', got {side!r}")
    layer, _ = arch.check_head(head)
    stop = 2 * layer
    out = [Source("embed", 0, stop)]
    if arch.positional == "standard":
        out.append(Source("pos", 0, stop))
    out.extend(_bias_sources(arch, stop))
    if arch.positional == "shortformer":
        out.append(Source("pos", stop, stop))
    if arch.biases:
        if arch.layernorm:
            out.append(Source(f"L{layer}.ln1.b", stop, stop, bias=True))
        out.append(Source(f"{head}.b_{side.upper()}", stop, stop, bias=True))
    return out


def check_max_depth(max_depth) -> int | None:
    """``None`` or a non-negative int, else ``PathexpandError``."""
    if max_depth is None:
        return None
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise PathexpandError(
            f"max_depth must be None or a non-negative int (heads/MLPs a path may pass), "
            f"got {max_depth!r}"
        )
    return max_depth


def _stages(arch: Architecture, src: Source) -> list[tuple[str, ...]]:
    return [nodes for s in range(src.start, src.stop) if (nodes := stage_nodes(arch, s))]


def _first_nodes(arch: Architecture, src: Source) -> tuple[str, ...]:
    """Nodes a forced source's path may start with (empty: the source reaches no node)."""
    if src.start >= src.stop:
        return ()
    nodes = stage_nodes(arch, src.start)
    return tuple(n for n in nodes if n in src.first) if src.first else nodes


def iter_tails(arch: Architecture, src: Source, max_depth: int | None = None,
               min_depth: int = 0) -> Iterator[tuple[str, ...]]:
    """Node tuples a path from ``src`` can pass, shallowest first, then in writer order."""
    stages = _stages(arch, src)
    if src.forced:
        first = _first_nodes(arch, src)
        if not first:
            return
        stages = [first, *stages[1:]]
    top = len(stages) if max_depth is None else min(len(stages), max_depth)
    for depth in range(max(min_depth, 1 if src.forced else 0), top + 1):
        yield from _choose(stages, 0, depth, src.forced)


def _choose(stages, i: int, depth: int, forced: bool):
    if depth == 0:
        yield ()
        return
    last = len(stages) - depth
    for j in ([i] if forced else range(i, last + 1)):
        for node in stages[j]:
            for rest in _choose(stages, j + 1, depth - 1, False):
                yield (node, *rest)


def _times(poly: dict, factor: dict) -> dict:
    out: dict[tuple[int, int], int] = defaultdict(int)
    for (i, j), c in poly.items():
        for (di, dj), f in factor.items():
            out[(i + di, j + dj)] += c * f
    return {k: v for k, v in out.items() if v}


def _monomial(node: str) -> tuple[int, int]:
    """``y`` (a head) or ``z`` (an MLP) as exponents ``(heads, MLPs)``."""
    return (0, 1) if parse_node(node).kind == "mlp" else (1, 0)


def _stage_factor(arch: Architecture, stage: int, required: dict, avoided: dict,
                  allowed: tuple[str, ...] = ()) -> dict:
    """``1 + H_l·y`` (attention), ``1 + z`` (MLP) or ``1 + H_l·y + z`` (parallel layer),
    restricted to ``allowed`` nodes (when given) and by required/avoided nodes."""
    nodes = [n for n in stage_nodes(arch, stage) if not allowed or n in allowed]
    if stage in required:
        node = required[stage]
        return {_monomial(node): 1} if node in nodes else {}
    out: dict[tuple[int, int], int] = defaultdict(int)
    out[(0, 0)] = 1
    for node in nodes:
        if node not in avoided.get(stage, ()):
            out[_monomial(node)] += 1
    return dict(out)


@lru_cache(maxsize=512)
def _suffixes(arch: Architecture, stop: int, through: tuple, avoid: tuple):
    """``suffix[s]`` = product of the stage factors from ``s`` to ``stop`` (computed once)."""
    required = {node_stage(arch, n): n for n in through}
    avoided: dict[int, set] = defaultdict(set)
    for node in avoid:
        avoided[node_stage(arch, node)].add(node)
    suffix = [{}] * (stop + 1)
    suffix[stop] = {(0, 0): 1}
    for s in range(stop - 1, -1, -1):
        suffix[s] = _times(suffix[s + 1], _stage_factor(arch, s, required, avoided))
    return suffix, required, avoided


def tail_polynomial(arch: Architecture, src: Source, through=(), avoid=()) -> dict[tuple[int, int], int]:
    """Number of paths from ``src`` by (heads passed, MLPs passed), through/avoiding nodes.

    The product over stages of ``1 + H_l·y`` (attention) and ``1 + z`` (MLP), ``1 + H_l·y + z``
    for a parallel layer; a forced first stage keeps only the nodes the source may start with
    and drops its ``1``; a stage holding a required node keeps only that node's monomial;
    an avoided node takes one from its stage's count. Suffix products are cached per
    architecture, so every source of an expansion costs one lookup.
    """
    through, avoid = tuple(sorted(set(through))), tuple(sorted(set(avoid)))
    stages = [node_stage(arch, n) for n in through]
    if len(set(stages)) != len(stages) or set(through) & set(avoid):
        return {}  # two required nodes at one stage, or a node both required and avoided
    if any(not src.start <= s < src.stop for s in stages):
        return {}
    suffix, required, avoided = _suffixes(arch, src.stop, through, avoid)
    if not src.forced:
        return dict(suffix[src.start])
    if src.start >= src.stop:
        return {}
    first = _stage_factor(arch, src.start, required, avoided, src.first)
    first.pop((0, 0), None)
    return _times(suffix[src.start + 1], first)


def check_tail(arch: Architecture, src: Source, tail: tuple[str, ...], max_depth=None) -> bool:
    """True when ``tail`` is a path ``src`` can take: model nodes, one per stage, in order."""
    stages = []
    for node in tail:
        try:
            stages.append(node_stage(arch, node))
        except PathexpandError:
            return False
    if any(b <= a for a, b in pairwise(stages)):
        return False
    if stages and not (src.start <= stages[0] and stages[-1] < src.stop):
        return False
    if src.forced and (not stages or stages[0] != src.start
                       or (src.first and tail[0] not in src.first)):
        return False
    return max_depth is None or len(tail) <= max_depth
