"""The path graph: sources, heads, MLPs and sinks as a ``networkx.MultiDiGraph``.

Every edge of the graph is one read of the residual stream, so the paths of the graph are
the paths of the expansion: the simple paths from a source to ``logits`` are exactly the
terms of ``expand_logits`` (same count, same names), and a head's attention-score terms are
the pairs (path into ``L{l}H{h}.q``, path into ``L{l}H{h}.k``) of ``expand_scores``.

**Nodes** (``kind`` as ``names.parse_node`` says):

- ``source``: ``embed``, ``pos`` (standard or shortformer positions); ``bias``: every bias
  source of ``expand_logits``/``expand_scores`` (``L0H2.b_V``, ``L0.b_O``, ``MLP0.b_in``,
  ``L1.ln1.b``, ``L1H0.b_Q``, ``b_U``, ...) when the architecture has biases;
- ``head``: ``L{l}H{h}``; ``mlp``: ``MLP{l}``;
- ``sink``: each head's inputs ``L{l}H{h}.q``, ``.k``, ``.v``; ``logits``: the unembedding.

Node attributes are scalars only (GraphML-safe); an attribute that does not apply is left
out, never ``None``: ``stage`` (every node: layer l's attention is stage ``2l``, its MLP
``2l+1``, the unembedding ``2L``; a source's stage is the first stage that can read it),
``layer`` (heads, MLPs, sinks, per-layer biases), ``head`` (heads, sinks, per-head biases),
``channel`` (sinks: ``q``/``k``/``v``), ``param`` (bias sources: ``b_V``, ``b_O``, ...).

**Edges**, keyed by ``channel``:

- ``kind="read"``: a writer (source, or a head/MLP of an earlier stage) → a reader, with
  ``channel`` ``q``/``k``/``v`` (into a head's sink), ``in`` (into an MLP) or ``out`` (into
  ``logits``). Shortformer ``pos`` is read by query and key sinks only; a LayerNorm bias
  ``L{l}.ln1.b`` by layer l's heads only (``ln2.b`` by ``MLP{l}``); ``L{l}H{h}.b_Q``/``b_K``
  by that head's ``.q``/``.k``; ``ln_final.b`` and ``b_U`` by ``logits`` only.
- ``kind="ov"``: ``L{l}H{h}.v → L{l}H{h}`` (channel ``v``): what a head reads through its
  value input it writes back through ``W_OV``. The ``.q``/``.k`` sinks have no out-edges:
  they set the pattern, which the path expansion holds frozen. So a logit path runs
  ``embed → L0H1.v → L0H1 → L1H0.v → L1H0 → logits`` and ``paths`` reports it as the
  term path ``("embed", "L0H1", "L1H0")``.

**Magnitudes** (only when given; ``weight`` is what diagrams draw and ``top_paths`` ranks):

- ``ranking=`` (a ``Ranking``, ``TopK`` or rows with ``path`` and ``value``): graph attribute
  ``path_values`` (a JSON object term name → value, a string so the graph stays
  GraphML-safe); every edge and node on a ranked path gets ``weight`` += ``|value|``.
  Score-term rows (``key_path`` column) need a ``head`` column too; they add weight to the
  edges of both sides but no path value.
- ``attribution=`` (an ``Attribution``): ``contribution`` on read edges (the edge view: the
  sum over every path in which the reader reads the writer directly) and on heads/MLPs (the
  node view); its path view fills ``path_values`` when no ranking is given; ``weight`` =
  ``|contribution|`` where the ranking set none.
- ``composition=`` (``CompositionScores``, ``{kind: [L1, H1, L2, H2]}`` or ``True`` to compute
  it from the weights): ``composition`` (the raw score) on every head → later-head read edge
  of that kind, ``composition_z`` when the random null was sampled; ``weight`` = the score
  where nothing else set one.

Graph attributes record the architecture (``n_layers``, ``n_heads`` as ``"4,4"``, ``mlp``,
``layernorm``, ``positional``, ``biases``); ``arch_of(G)`` reads it back. Export with
``nx.write_graphml``/``to_json`` and re-import with ``read_graphml``/``from_json``.

>>> G = path_graph(Architecture(2, 2, positional=None))
>>> [p for p in paths(G, "embed")][:4]
[('embed',), ('embed', 'L0H0'), ('embed', 'L0H1'), ('embed', 'L1H0')]
>>> len(list(paths(G, "embed"))) == Architecture(2, 2).n_logit_paths()
True
"""

from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import networkx as nx

from .architecture import Architecture
from .errors import PathexpandError, UnknownHeadError, check_int
from .names import head_name, mlp_name, parse_node

__all__ = [
    "PathGraph",
    "path_graph",
    "paths",
    "subgraph_of",
    "top_paths",
    "path_edges",
    "arch_of",
    "to_json",
    "from_json",
    "write_graphml",
    "read_graphml",
    "READ_CHANNELS",
]

READ_CHANNELS = ("q", "k", "v", "in", "out")
_SCORE_SEP = " · "


# the graph type ---------------------------------------------------------------------------------
class PathGraph(nx.MultiDiGraph):
    """A ``networkx.MultiDiGraph`` that shows itself as its circuit diagram in Jupyter."""

    def _repr_svg_(self) -> str:
        from .render.dot import diagram  # graphviz only when a notebook asks for the picture

        return diagram(self).svg()


def _as_path_graph(G: nx.MultiDiGraph) -> PathGraph:
    """The same nodes, edges and attributes in a ``PathGraph`` (cheap: the data is shared)."""
    out = PathGraph()
    out.graph.update(G.graph)
    out.add_nodes_from(G.nodes(data=True))
    out.add_edges_from(G.edges(keys=True, data=True))
    return out


# building -------------------------------------------------------------------------------------
def path_graph(arch_or_weights, *, ranking=None, attribution=None, composition=None
               ) -> PathGraph:
    """The path graph of an architecture (or of loaded weights), with magnitudes if given.

    ``arch_or_weights``: an ``Architecture``, ``Weights``, an ``Expansion`` or a ``Term``
    (their architecture). See the module docstring for nodes, edges and magnitudes.

    >>> G = path_graph(Architecture(1, 2, positional="shortformer"))
    >>> sorted(v for _, v in G.out_edges("pos"))
    ['L0H0.k', 'L0H0.q', 'L0H1.k', 'L0H1.q']
    """
    arch, weights = _resolve_arch(arch_or_weights)
    G = PathGraph()
    G.graph.update(_arch_attrs(arch))
    writers = _add_nodes(G, arch)
    _add_edges(G, arch, writers)
    if composition is not None and composition is not False:
        _add_composition(G, arch, composition, weights)
    if attribution is not None:
        _add_attribution(G, attribution)
    if ranking is not None:
        _add_ranking(G, ranking)
    return G


def _resolve_arch(obj) -> tuple[Architecture, Any]:
    if isinstance(obj, Architecture):
        return obj, None
    if hasattr(obj, "config") and hasattr(obj, "has_biases"):  # numeric.weights.Weights
        return Architecture.from_weights(obj), obj
    arch = getattr(obj, "arch", None)
    if isinstance(arch, Architecture):  # Expansion, Selection, Term, ScoreTerm
        return arch, None
    raise PathexpandError(
        "path_graph needs an Architecture, Weights, an Expansion or a Term; "
        f"got {type(obj).__name__}"
    )


def _arch_attrs(arch: Architecture) -> dict:
    return {
        "n_layers": arch.n_layers,
        "n_heads": ",".join(map(str, arch.n_heads)),
        "mlp": arch.mlp,
        "layernorm": arch.layernorm,
        "positional": arch.positional or "none",
        "biases": arch.biases,
    }


def arch_of(G) -> Architecture:
    """The ``Architecture`` a path graph was built from (read from its graph attributes)."""
    try:
        g = G.graph
        heads = tuple(int(h) for h in str(g["n_heads"]).split(",") if h != "")
        return Architecture(
            int(g["n_layers"]), heads, mlp=_bool(g["mlp"]), layernorm=_bool(g["layernorm"]),
            positional=None if g["positional"] == "none" else g["positional"],
            biases=_bool(g["biases"]),
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        raise PathexpandError(
            "this graph does not carry an architecture (graph attributes n_layers, n_heads, "
            "mlp, layernorm, positional, biases); build it with pe.path_graph"
        ) from None


def _bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("true", "1")


def _node_attrs(name: str, stage: int) -> dict:
    node = parse_node(name)
    attrs: dict[str, Any] = {"kind": node.kind, "stage": stage}
    for key in ("layer", "head", "channel", "param"):
        value = getattr(node, key)
        if value is not None:
            attrs[key] = value
    return attrs


class _Writer:
    """A node that writes the residual stream: who may read it (by stage and channel)."""

    __slots__ = ("name", "entry", "only")

    def __init__(self, name: str, entry: int, only: frozenset | None = None):
        self.name, self.entry, self.only = name, entry, only

    def reads(self, reader: str, stage: int, channel: str) -> bool:
        if self.only is not None:
            return reader in self.only
        return stage >= self.entry


def _add_nodes(G: nx.MultiDiGraph, arch: Architecture) -> list[_Writer]:
    """Add every node in forward order; return the writers (sources first)."""
    L = arch.n_layers
    final = 2 * L
    writers: list[_Writer] = [_Writer("embed", 0)]
    G.add_node("embed", **_node_attrs("embed", 0))
    if arch.positional is not None:
        G.add_node("pos", **_node_attrs("pos", 0))
        if arch.positional == "standard":
            writers.append(_Writer("pos", 0))
        else:  # shortformer: added to every head's query and key input, never to the stream
            qk = {f"{h}.{c}" for h in arch.heads for c in "qk"}
            writers.append(_Writer("pos", 0, frozenset(qk)))

    def bias(name: str, stage: int, only=None) -> None:
        G.add_node(name, **_node_attrs(name, stage))
        writers.append(_Writer(name, stage, None if only is None else frozenset(only)))

    if arch.biases:
        for l in range(L):
            heads = arch.heads_in_layer(l)
            if arch.layernorm and heads:
                bias(f"L{l}.ln1.b", 2 * l, [f"{h}.{c}" for h in heads for c in "qkv"])
            for h in heads:
                bias(f"{h}.b_Q", 2 * l, [f"{h}.q"])
                bias(f"{h}.b_K", 2 * l, [f"{h}.k"])
                bias(f"{h}.b_V", 2 * l + 1)
            bias(f"L{l}.b_O", 2 * l + 1)
            if arch.mlp:
                if arch.layernorm:
                    bias(f"L{l}.ln2.b", 2 * l + 1, [mlp_name(l)])
                bias(f"{mlp_name(l)}.b_in", 2 * l + 2)
                bias(f"{mlp_name(l)}.b_out", 2 * l + 2)
        if arch.layernorm:
            bias("ln_final.b", final, ["logits"])
        bias("b_U", final, ["logits"])
    for l in range(L):
        for h in range(arch.n_heads[l]):
            name = head_name(l, h)
            for c in "qkv":
                G.add_node(f"{name}.{c}", **_node_attrs(f"{name}.{c}", 2 * l))
            G.add_node(name, **_node_attrs(name, 2 * l))
            writers.append(_Writer(name, 2 * l + 1))
        if arch.mlp:
            G.add_node(mlp_name(l), **_node_attrs(mlp_name(l), 2 * l + 1))
            writers.append(_Writer(mlp_name(l), 2 * l + 2))
    G.add_node("logits", **_node_attrs("logits", final))
    return writers


def _readers(arch: Architecture) -> list[tuple[str, int, str]]:
    """Every reader of the residual stream, in forward order: (node, stage, channel)."""
    out = []
    for l in range(arch.n_layers):
        for h in arch.heads_in_layer(l):
            out.extend((f"{h}.{c}", 2 * l, c) for c in "qkv")
        if arch.mlp:
            out.append((mlp_name(l), 2 * l + 1, "in"))
    out.append(("logits", 2 * arch.n_layers, "out"))
    return out


def _add_edges(G: nx.MultiDiGraph, arch: Architecture, writers: list[_Writer]) -> None:
    readers = _readers(arch)
    for w in writers:
        for reader, stage, channel in readers:
            if w.reads(reader, stage, channel):
                G.add_edge(w.name, reader, key=channel, channel=channel, kind="read")
    for h in arch.heads:
        G.add_edge(f"{h}.v", h, key="v", channel="v", kind="ov")


# the paths of a graph -----------------------------------------------------------------------
def _check_node(G, name: str, kinds: tuple[str, ...], what: str) -> str:
    if name in G and G.nodes[name].get("kind") in kinds:
        return name
    valid = [n for n, k in G.nodes(data="kind") if k in kinds]
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    raise UnknownHeadError(f"{name!r} is not a {what} of this graph; {what}s are {shown}")


_SOURCE_KINDS = ("source", "bias")
_SINK_KINDS = ("sink", "logits")


def paths(G, source: str | None = None, sink: str = "logits", *, max_depth: int | None = None
          ) -> Iterator[tuple[str, ...]]:
    """Paths from ``source`` (every source when None) into ``sink``, as term paths.

    A path is written like ``Term.path``: the source, then the heads and MLPs passed,
    earliest first (sinks and ``logits`` left out). Order: by source (graph order), shallow
    paths first, then in forward order — the order of ``expand_logits``. ``max_depth`` keeps
    paths through at most that many heads/MLPs. Lazy: a 12-layer model has 13¹² paths.

    ``sink="L1H0.k"`` gives the key-side paths of head L1H0's attention score.
    """
    sink = _check_node(G, sink, _SINK_KINDS, "sink")
    if source is None:
        sources = [n for n, k in G.nodes(data="kind") if k in _SOURCE_KINDS]
    else:
        sources = [_check_node(G, source, _SOURCE_KINDS, "source")]
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int)
                                  or max_depth < 0):
        raise PathexpandError(f"max_depth must be None or a non-negative int, got {max_depth!r}")
    top = _max_depth(G) if max_depth is None else min(max_depth, _max_depth(G))
    for src in sources:
        for depth in range(top + 1):
            yield from _paths_of_depth(G, src, sink, depth)


def _max_depth(G) -> int:
    """The most heads/MLPs one path can pass: one per stage that has any."""
    return len({d["stage"] for _, d in G.nodes(data=True) if d.get("kind") in ("head", "mlp")})


def _paths_of_depth(G, src: str, sink: str, depth: int) -> Iterator[tuple[str, ...]]:
    """DFS from ``src`` passing exactly ``depth`` heads/MLPs, in edge (forward) order."""
    nodes = G.nodes

    def walk(u: str, left: int, acc: tuple[str, ...]):
        for v in dict.fromkeys(G.successors(u)):
            kind = nodes[v]["kind"]
            if v == sink:
                if left == 0:
                    yield acc
            elif left == 0:
                continue
            elif kind == "sink" and nodes[v].get("channel") == "v":
                head = v[: -len(".v")]
                yield from walk(head, left - 1, acc + (head,))
            elif kind == "mlp":
                yield from walk(v, left - 1, acc + (v,))

    yield from walk(src, depth, (src,))


def path_edges(G, item) -> list[tuple[str, str, str]]:
    """The graph edges ``(u, v, key)`` of a term, path or segment, in order.

    ``item``: a ``Term`` (its logit path), a ``ScoreTerm`` (query path into ``head.q`` and
    key path into ``head.k``), a ranking row or dict with ``path``, a ``(path, value)`` row
    of ``top_paths``, a term name
    (``"L1H0∘L0H1"``, ``"pos:L1H0"``) or a tuple of node names: starting at a source and not
    ending at a sink it is a logit path (``("embed", "L0H1")``); ending at a sink it stops
    there (``("embed", "L0H0", "L1H0.k")``); otherwise a segment between writers
    (``("L0H0", "L1H0")`` = ``L0H0 → L1H0.v → L1H0``).
    """
    if hasattr(item, "query_path") and hasattr(item, "key_path") and hasattr(item, "head"):
        if getattr(item, "is_remainder", False):
            raise PathexpandError("the remainder term stands for many paths; it has no edges")
        return (_walk_edges(G, tuple(item.query_path) + (f"{item.head}.q",))
                + _walk_edges(G, tuple(item.key_path) + (f"{item.head}.k",)))
    path = _as_path(item)
    if path == ("remainder",):
        raise PathexpandError("the remainder term stands for many paths; it has no edges")
    if not path:
        raise PathexpandError("an empty path has no edges")
    first, last = path[0], path[-1]
    for name in path:
        if name not in G:
            raise UnknownHeadError(f"{name!r} (in {_show(path)}) is not a node of this graph")
    if G.nodes[last]["kind"] not in _SINK_KINDS and G.nodes[first]["kind"] in _SOURCE_KINDS:
        path = path + ("logits",)
    return _walk_edges(G, path)


def _as_path(item) -> tuple[str, ...]:
    if isinstance(item, str):
        if _SCORE_SEP.strip() in item:
            raise PathexpandError(
                f"{item!r} is a score term name, which does not say its head; pass the "
                "ScoreTerm (pe.expand_scores(arch, head)[name]) instead"
            )
        from .symbolic.terms import parse_term_name

        return parse_term_name(item)
    if isinstance(item, dict):
        return tuple(item["path"])
    if hasattr(item, "path"):
        return tuple(item.path)
    if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple)
            and isinstance(item[1], (int, float))):
        return tuple(item[0])                                   # a (path, value) row of top_paths
    try:
        return tuple(str(x) for x in item)
    except TypeError:
        raise PathexpandError(
            f"cannot read a path from {item!r}; give a Term, ScoreTerm, term name or tuple of nodes"
        ) from None


def _show(path) -> str:
    return " → ".join(path)


def _walk_edges(G, path: tuple[str, ...]) -> list[tuple[str, str, str]]:
    out = []
    for a, b in pairwise(path):
        kind = G.nodes[b]["kind"] if b in G else None
        if kind == "head":
            steps = [(a, f"{b}.v", "v"), (f"{b}.v", b, "v")]
        elif kind == "mlp":
            steps = [(a, b, "in")]
        elif kind == "sink":
            steps = [(a, b, G.nodes[b]["channel"])]
        elif kind == "logits":
            steps = [(a, b, "out")]
        else:
            raise PathexpandError(
                f"{b!r} in {_show(path)} does not read the residual stream; readers are "
                "heads, MLPs, sinks (L1H0.q|k|v) and 'logits'"
            )
        for e in steps:
            if not G.has_edge(*e):
                raise PathexpandError(
                    f"no read {a} → {b} in this graph ({_show(path)}): a reader reads only "
                    "sources and heads/MLPs of earlier stages (see pe.graph's docstring)"
                )
        out.extend(steps)
    return out


def subgraph_of(G, terms) -> PathGraph:
    """A copy of the part of ``G`` that ``terms`` use (edges, their nodes and all attributes).

    ``terms``: an iterable of anything ``path_edges`` takes (Terms, ScoreTerms, names,
    node tuples, ranking rows), or one Term/ScoreTerm, or an Expansion.
    """
    if hasattr(terms, "path") or hasattr(terms, "query_path") or isinstance(terms, str):
        terms = [terms]
    edges: dict[tuple[str, str, str], None] = {}
    for item in terms:
        if getattr(item, "is_remainder", False):
            continue
        edges.update(dict.fromkeys(path_edges(G, item)))
    sub = G.edge_subgraph(list(edges)).copy()
    sub.graph.update(G.graph)
    return sub


# magnitudes -------------------------------------------------------------------------------------
def path_values(G) -> dict[str, float]:
    """``{term name: value}`` stored by ``path_graph(..., ranking=)`` (empty when none)."""
    text = G.graph.get("path_values")
    return {} if not text else {k: float(v) for k, v in json.loads(text).items()}


def top_paths(G, k: int = 10, *, sink: str = "logits", source: str | None = None
              ) -> list[tuple[tuple[str, ...], float]]:
    """The ``k`` strongest paths into ``sink`` as ``(path, value)``, strongest first.

    With path values (``path_graph(..., ranking=)`` or an attribution's path view) and
    ``sink="logits"``: the stored paths by ``|value|`` (values signed, as stored). Otherwise
    by the path's **bottleneck**: the smallest edge ``weight`` along it (edges without a
    weight skipped; paths with none are left out) — a search that prunes any prefix whose
    bottleneck is already below the k-th best, so it never lists every path.
    """
    check_int("k", k, 1)
    sink = _check_node(G, sink, _SINK_KINDS, "sink")
    if source is not None:
        _check_node(G, source, _SOURCE_KINDS, "source")
    stored = path_values(G)
    if stored and sink == "logits":
        from .symbolic.terms import parse_term_name

        rows = [(parse_term_name(n), v) for n, v in stored.items() if math.isfinite(v)]
        if source is not None:
            rows = [r for r in rows if r[0][0] == source]
        rows.sort(key=lambda r: -abs(r[1]))
        return rows[:k]
    if not any("weight" in d for _, _, d in G.edges(data=True)):
        raise PathexpandError(
            "this graph carries no magnitudes: build it with "
            "pe.path_graph(..., ranking=, attribution= or composition=)"
        )
    return _bottleneck_paths(G, k, sink, source)


def _bottleneck_paths(G, k, sink, source):
    sources = [source] if source else [n for n, kd in G.nodes(data="kind") if kd in _SOURCE_KINDS]
    best: list[tuple[float, int, tuple[str, ...]]] = []  # min-heap of (value, -order, path)
    order = 0

    def kth() -> float:
        return best[0][0] if len(best) >= k else -math.inf

    def push(value: float, path: tuple[str, ...]) -> None:
        nonlocal order
        order += 1
        item = (value, -order, path)
        if len(best) < k:
            heapq.heappush(best, item)
        elif value > best[0][0]:
            heapq.heapreplace(best, item)

    def walk(u: str, acc: tuple[str, ...], bottleneck: float) -> None:
        if bottleneck <= kth():
            return
        for _, v, data in G.out_edges(u, data=True):
            w = data.get("weight")
            b = bottleneck if w is None else min(bottleneck, abs(float(w)))
            if v == sink:
                if math.isfinite(b):
                    push(b, acc)
            elif G.nodes[v]["kind"] in ("head", "mlp"):
                walk(v, acc + (v,), b)
            elif G.nodes[v]["kind"] == "sink" and G.nodes[v].get("channel") == "v":
                head = v[:-2]
                hw = G.edges[v, head, "v"].get("weight")
                walk(head, acc + (head,), b if hw is None else min(b, abs(float(hw))))

    for src in sources:
        walk(src, (src,), math.inf)
    return [(path, value) for value, _, path in sorted(best, key=lambda t: (-t[0], -t[1]))]


def _ranked_rows(obj) -> list[tuple[Any, float]]:
    """``(item, value)`` pairs from a Ranking, a TopK, an Attribution or rows/dicts.

    ``item`` is a logit path (a tuple) or, for a score-term row that names its ``head``
    (``key_path`` and ``head`` columns), a ``_ScorePair``.
    """
    if hasattr(obj, "paths") and hasattr(obj, "values") and not callable(obj.values):  # TopK
        return [(tuple(p), float(v)) for p, v in zip(obj.paths, obj.values)]
    if hasattr(obj, "records") and hasattr(obj, "path_values"):  # Attribution
        return [(tuple(r["path"]), float(r["value"])) for r in obj.records("path")]
    out: list[tuple[Any, float]] = []
    try:
        rows = iter(obj)
    except TypeError:
        raise PathexpandError(
            "ranking= takes a Ranking, a TopK or rows with path and value; "
            f"got {type(obj).__name__}"
        ) from None
    for row in rows:
        get = row.get if isinstance(row, dict) else (
            lambda key, r=row: getattr(r, key, None) if key in ("path", "value")
            else getattr(r, "extra", {}).get(key))
        path, value = get("path"), get("value")
        if path is None or value is None:
            raise PathexpandError(f"a ranking row needs a path and a value, got {row!r}")
        key_path = get("key_path")
        if key_path is None:
            out.append((tuple(path), float(value)))
        elif get("head") is None:
            raise PathexpandError(
                "score-term rows do not say their head; add a 'head' column "
                "(e.g. [dict(r.to_dict(), head='L1H0') for r in ranking]) to place them"
            )
        else:
            out.append((_ScorePair(str(get("head")), tuple(path), tuple(key_path)), float(value)))
    return out


class _ScorePair:
    """A (query path, key path) pair of one head: the duck type of ``ScoreTerm`` for edges."""

    __slots__ = ("head", "query_path", "key_path")

    def __init__(self, head: str, query_path: tuple, key_path: tuple):
        self.head, self.query_path, self.key_path = head, query_path, key_path


def _add_ranking(G, ranking) -> None:
    from .symbolic.terms import term_name

    values: dict[str, float] = {}
    edge_w: dict = defaultdict(float)
    node_w: dict = defaultdict(float)
    for item, value in _ranked_rows(ranking):
        if not math.isfinite(value):
            continue
        if isinstance(item, _ScorePair):
            if item.query_path == ("remainder",):
                continue
            if item.head not in G or G.nodes[item.head]["kind"] != "head":
                raise PathexpandError(
                    f"score rows name head {item.head!r}, which is not in this graph")
            edges = path_edges(G, item)
            nodes = item.query_path[1:] + item.key_path[1:]
        else:
            path = item
            if path == ("remainder",):
                continue
            if path[0] not in G or G.nodes[path[0]]["kind"] not in _SOURCE_KINDS:
                raise PathexpandError(
                    f"ranked path {_show(path)} does not start at a source of this graph; "
                    "rank the terms of expand_logits on the same model"
                )
            edges = path_edges(G, path)
            values[term_name(path)] = value
            nodes = path[1:]
        for e in dict.fromkeys(edges):
            edge_w[e] += abs(value)
        for n in dict.fromkeys(nodes):
            node_w[n] += abs(value)
    if values:
        G.graph["path_values"] = json.dumps(values, ensure_ascii=False)
    for e, w in edge_w.items():
        G.edges[e]["weight"] = w
    for n, w in node_w.items():
        G.nodes[n]["weight"] = w


def _read_edge(G, a: str, b: str) -> tuple[str, str, str] | None:
    kind = G.nodes[b]["kind"] if b in G else None
    if kind == "head":
        return (a, f"{b}.v", "v")
    if kind == "mlp":
        return (a, b, "in")
    if kind == "logits":
        return (a, b, "out")
    return None


def _add_attribution(G, attribution) -> None:
    if not hasattr(attribution, "records"):
        raise PathexpandError(
            f"attribution= takes a pe.attribute(...) result, got {type(attribution).__name__}"
        )
    if getattr(attribution, "edges", None) is not None:
        for row in attribution.records("edge"):
            a, b = row["path"]
            e = _read_edge(G, a, b)
            if e is None or not G.has_edge(*e):
                raise PathexpandError(
                    f"attribution edge {a} → {b} is not a read of this graph; build the graph "
                    "from the same model as the attribution"
                )
            G.edges[e]["contribution"] = float(row["value"])
            G.edges[e].setdefault("weight", abs(float(row["value"])))
            if e[1].endswith(".v"):  # the head's own OV edge carries the same flow
                ov = G.edges[e[1], e[1][:-2], "v"]
                ov["weight"] = ov.get("weight", 0.0) + abs(float(row["value"]))
    if getattr(attribution, "nodes", None) is not None:
        for row in attribution.records("node"):
            n = row["path"][0]
            if n not in G:
                raise PathexpandError(f"attribution node {n!r} is not in this graph")
            G.nodes[n]["contribution"] = float(row["value"])
            G.nodes[n].setdefault("weight", abs(float(row["value"])))
    if getattr(attribution, "paths", None) is not None and "path_values" not in G.graph:
        from .symbolic.terms import term_name

        values = {term_name(tuple(r["path"])): float(r["value"])
                  for r in attribution.records("path")}
        G.graph["path_values"] = json.dumps(values, ensure_ascii=False)


def _add_composition(G, arch: Architecture, composition, weights) -> None:
    if composition is True:
        if weights is None:
            raise PathexpandError(
                "composition=True needs weights: pass Weights as the first argument")
        from .numeric.composition import composition_scores

        composition = composition_scores(weights)
    kinds = getattr(composition, "kinds", None)
    if kinds is None and isinstance(composition, dict):
        kinds = composition.keys()
    kinds = tuple(kinds or ())
    if not kinds:
        raise PathexpandError(
            "composition= takes pe.composition_scores(weights) "
            "(or {'q'|'k'|'v': [L1, H1, L2, H2]}), "
            f"got {type(composition).__name__}"
        )
    null_mean = getattr(composition, "null_mean", {}) or {}
    null_std = getattr(composition, "null_std", {}) or {}
    for kind in kinds:
        raw = composition[kind]
        expected = (arch.n_layers, max(arch.n_heads, default=0)) * 2
        if tuple(getattr(raw, "shape", ())) != expected:
            raise PathexpandError(
                f"composition scores of kind {kind!r} have shape "
                f"{tuple(getattr(raw, 'shape', ()))}, "
                f"expected [L1, H1, L2, H2] = {list(expected)} for this model"
            )
        mean, std = null_mean.get(kind, math.nan), null_std.get(kind, math.nan)
        for a in arch.heads:
            la, ha = parse_node(a).layer, parse_node(a).head
            for b in arch.heads:
                lb, hb = parse_node(b).layer, parse_node(b).head
                if la >= lb:
                    continue
                e = (a, f"{b}.{kind}", kind)
                score = float(raw[la, ha, lb, hb])
                data = G.edges[e]
                data["composition"] = score
                if math.isfinite(mean) and math.isfinite(std) and std > 0:
                    data["composition_z"] = (score - mean) / std
                data.setdefault("weight", score)


# export -----------------------------------------------------------------------------------------
def to_json(G) -> str:
    """Node-link JSON text of a path graph (``from_json`` reads it back unchanged)."""
    data = nx.node_link_data(G, edges="edges")
    return json.dumps(data, ensure_ascii=False, indent=1)


def from_json(text: str) -> PathGraph:
    """A path graph from ``to_json`` text (node-link JSON)."""
    try:
        data = json.loads(text)
        G = nx.node_link_graph(data, directed=True, multigraph=True, edges="edges")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PathexpandError(f"not node-link JSON of a path graph: {exc}") from None
    return _as_path_graph(G)


def write_graphml(G, path) -> None:
    """Write GraphML (``nx.write_graphml``; every attribute is a scalar, so nothing is lost)."""
    nx.write_graphml(G, path)


def read_graphml(path) -> PathGraph:
    """Read a path graph written by ``write_graphml``/``nx.write_graphml``: edge keys are
    the channel names, so it is read as a multigraph with string keys."""
    G = nx.read_graphml(path, force_multigraph=True, edge_key_type=str)
    for key in ("node_default", "edge_default"):  # added by the reader when empty
        if G.graph.get(key) == {}:
            del G.graph[key]
    return _as_path_graph(G)
