"""The path graph: sources, heads, MLPs and sinks as a ``networkx.MultiDiGraph``.

Every edge of the graph is one read of the residual stream, so the paths of the graph are
the paths of the expansion: the simple paths from a source to ``logits`` are exactly the
terms of ``expand_logits`` (same count, same names), and a head's attention-score terms are
the pairs (path into ``L{l}H{h}.q``, path into ``L{l}H{h}.k``) of ``expand_scores``.

**Nodes** (``kind`` as ``names.parse_node`` says):

- ``source``: ``embed``, ``pos`` (standard or shortformer positions; rotary positions turn
  queries and keys inside each head and are no node); ``bias``: every bias source of
  ``expand_logits``/``expand_scores`` (``L0H2.b_V``, ``L0.b_O``, ``MLP0.b_in``, ``L1.ln1.b``,
  ``L1H0.b_Q``, ``b_U``, ...) when the architecture has biases (LayerNorm biases only with
  LayerNorm: RMSNorm has none);
- ``head``: ``L{l}H{h}``; ``mlp``: ``MLP{l}``;
- ``sink``: each head's inputs ``L{l}H{h}.q``, ``.k``, ``.v``; ``logits``: the unembedding.

Node attributes are scalars only (GraphML-safe); an attribute that does not apply is left
out, never ``None``: ``stage`` (every node: layer l's attention is stage ``2l``, its MLP
``2l+1`` — ``2l`` with parallel attention and MLP, where the MLP reads the layer's input and
no head → MLP edge exists inside a layer —, the unembedding ``2L``; a source's stage is the
first stage that can read it),
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

**Magnitudes** (only when given; ``weight`` is what diagrams draw and ``strongest_paths``
ranks). The graph computes nothing: ``ranking=`` takes numbers computed elsewhere — a
``Ranking``, a result (every view, through ``.rankings()``) or a list — and each ranking adds
what its rows are (``Ranking.of``):

- ``paths`` (``evaluate`` of logit terms, an attribution's path view, ``top_k_paths``): graph
  attribute ``path_values`` (a JSON object term name → value, a string so the graph stays
  GraphML-safe); every edge and node on a ranked path gets ``weight`` += ``|value|``;
- ``score_terms`` (``evaluate`` of ``expand_scores``, ``attribute_scores``; rows carry
  ``head`` and ``key_path``): weight on the edges of both sides; graph attribute
  ``score_values`` (JSON ``"L1H0 | q:direct · k:L0H0"`` → value, read by ``score_values``);
  either kind also sets ``value_label``, the ranking's name for its values (``frobenius``);
- ``edges`` (an attribution's edge view): ``contribution`` on the read edge (the sum over every
  path in which the reader reads the writer directly); ``nodes`` (its node view):
  ``contribution`` on heads/MLPs; ``weight`` = ``|contribution|`` where nothing set one;
- ``pairs`` (``composition_scores``, ``induction_circuit``): ``composition`` (the raw score) on
  the head → later-head read edge of that kind, ``composition_z`` when the null was sampled;
  ``weight`` = the score where nothing else set one;
- ``heads`` (``detect_heads``, ``copying_scores``): the statistic on each head node.

Weights: an exact edge or node ``contribution`` (attribution) sets its ``|contribution|``;
elsewhere paths, applied last, win over composition scores.

Graph attributes record the architecture (``n_layers``, ``n_heads`` as ``"4,4"``, ``mlp``,
``normalization`` (``"LN"``, ``"RMS"`` or ``"none"``), ``positional``, ``biases``, ``gated_mlp``,
``parallel_attn_mlp``, ``n_kv_heads`` (``0`` for none); ``layernorm`` too, for older readers);
``arch_of(G)`` reads it back, also from older graphs that carry ``layernorm`` only. Export with
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

from .architecture import Architecture, as_architecture
from .errors import MissingDependencyError, PathexpandError, UnknownHeadError, check_int
from .names import (
    CHANNELS,
    REMAINDER,
    SCORE_SEP,
    head_name,
    mlp_name,
    parse_node,
    parse_term_name,
    term_name,
)
from .ranking import Ranking, Result, Row
from .symbolic import Expansion, Selection
from .symbolic.paths import logit_sources, node_stage
from .symbolic.terms import ScoreTerm, Term

__all__ = [
    "PathGraph",
    "path_graph",
    "paths",
    "subgraph_of",
    "strongest_paths",
    "path_edges",
    "arch_of",
    "to_json",
    "from_json",
    "write_graphml",
    "read_graphml",
    "READ_CHANNELS",
]

READ_CHANNELS = ("q", "k", "v", "in", "out")
_SCORE_KEY_SEP = " | "  # "L1H0 | q:direct · k:L0H0" in the score_values JSON


# the graph type ---------------------------------------------------------------------------------
class PathGraph(nx.MultiDiGraph):
    """A ``networkx.MultiDiGraph`` that shows itself as its circuit diagram in Jupyter."""

    def _repr_svg_(self) -> str | None:
        """The circuit diagram as SVG; None (the notebook then shows ``repr``) without Graphviz."""
        from .render.dot import diagram  # graphviz only when a notebook asks for the picture

        try:
            return diagram(self).svg()
        except MissingDependencyError:
            return None

    def __repr__(self) -> str:
        g = self.graph
        kinds: dict[str, int] = {}
        for _, kind in self.nodes(data="kind"):
            kinds[kind] = kinds.get(kind, 0) + 1
        shape = (f"{g['n_layers']} layers, heads {g['n_heads']}" if "n_layers" in g else "")
        nodes = ", ".join(f"{n} {k}" for k, n in kinds.items())
        return f"<PathGraph {shape}: {self.number_of_nodes()} nodes ({nodes}), {self.number_of_edges()} reads>"


def _as_path_graph(G: nx.MultiDiGraph) -> PathGraph:
    """The same nodes, edges and attributes in a ``PathGraph`` (cheap: the data is shared)."""
    out = PathGraph()
    out.graph.update(G.graph)
    out.add_nodes_from(G.nodes(data=True))
    out.add_edges_from(G.edges(keys=True, data=True))
    return out


# building -------------------------------------------------------------------------------------
def path_graph(source, *, ranking=None) -> PathGraph:
    """The path graph of a model's architecture, with magnitudes if given.

    ``source``: an ``Architecture``, an ``Expansion``/selection or a ``Term`` (their
    architecture), or a model (anything ``pe.load`` takes: ``Weights``, a bundled name, ...).
    ``ranking``: a ``Ranking``, a result (``Attribution``, ``CompositionScores``, ``TopK``, ...:
    every view it has, through ``.rankings()``) or a list of these; see the module docstring
    for what each kind of ranking adds.

    >>> G = path_graph(Architecture(1, 2, positional="shortformer"))
    >>> sorted(v for _, v in G.out_edges("pos"))
    ['L0H0.k', 'L0H0.q', 'L0H1.k', 'L0H1.q']
    """
    arch = _resolve_arch(source)
    G = PathGraph()
    G.graph.update(_arch_attrs(arch))
    writers = _add_nodes(G, arch)
    _add_edges(G, arch, writers)
    if ranking is not None:
        for r in sorted(_rankings(ranking), key=lambda r: _ORDER.index(r.of)):
            _APPLY[r.of](G, r)
    return G


def _resolve_arch(obj) -> Architecture:
    if isinstance(obj, (Expansion, Selection, Term, ScoreTerm)):
        return obj.arch
    return as_architecture(obj)


def _rankings(obj) -> list[Ranking]:
    """The rankings in ``ranking=``: a ``Ranking``, a ``Result`` (all its views) or a list."""
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    out: list[Ranking] = []
    for item in items:
        if isinstance(item, Ranking):
            out.append(item)
        elif isinstance(item, Result):
            out.extend(item.rankings())
        else:
            raise PathexpandError(
                "ranking= takes a Ranking, a result (pe.attribute(...), pe.evaluate(...), "
                f"pe.composition_scores(...), ...) or a list of them; got {type(item).__name__}"
            )
    return out


def _arch_attrs(arch: Architecture) -> dict:
    """Scalars only (GraphML-safe): ``None`` is written ``"none"`` (``0`` for ``n_kv_heads``)."""
    return {
        "n_layers": arch.n_layers,
        "n_heads": ",".join(map(str, arch.n_heads)),
        "mlp": arch.mlp,
        "normalization": arch.normalization or "none",
        "layernorm": arch.layernorm,
        "positional": arch.positional or "none",
        "biases": arch.biases,
        "gated_mlp": arch.gated_mlp,
        "parallel_attn_mlp": arch.parallel_attn_mlp,
        "n_kv_heads": arch.n_kv_heads or 0,
    }


def arch_of(G) -> Architecture:
    """The ``Architecture`` a path graph was built from (read from its graph attributes; a graph
    written before RMSNorm, gated and parallel MLPs and grouped-query attention carries only
    ``layernorm``, and reads as LayerNorm or none, ungated, sequential, one key/value head per
    query head)."""
    try:
        g = G.graph
        heads = tuple(int(h) for h in str(g["n_heads"]).split(",") if h != "")
        if "normalization" in g:
            norm = None if g["normalization"] == "none" else str(g["normalization"])
        else:
            norm = "LN" if _bool(g["layernorm"]) else None
        return Architecture(
            int(g["n_layers"]), heads, mlp=_bool(g["mlp"]), normalization=norm,
            positional=None if g["positional"] == "none" else g["positional"],
            biases=_bool(g["biases"]),
            gated_mlp=_bool(g.get("gated_mlp", False)),
            parallel_attn_mlp=_bool(g.get("parallel_attn_mlp", False)),
            n_kv_heads=int(g.get("n_kv_heads", 0)) or None,
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        raise PathexpandError(
            "this graph does not carry an architecture (graph attributes n_layers, n_heads, "
            "mlp, normalization or layernorm, positional, biases); build it with pe.path_graph"
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
    if arch.positional in ("standard", "shortformer"):  # rotary: inside the heads, no source
        G.add_node("pos", **_node_attrs("pos", 0))
        if arch.positional == "standard":
            writers.append(_Writer("pos", 0))
        else:  # shortformer: added to every head's query and key input, never to the stream
            qk = {f"{h}.{c}" for h in arch.heads for c in "qk"}
            writers.append(_Writer("pos", 0, frozenset(qk)))

    def bias(name: str, stage: int, only=None) -> None:
        G.add_node(name, **_node_attrs(name, stage))
        writers.append(_Writer(name, stage, None if only is None else frozenset(only)))

    for src in logit_sources(arch):  # the stream's biases: where they enter, who reads them
        if not src.bias:
            continue
        node = parse_node(src.name)
        if node.param == "b_V":  # a head's query and key biases, read by it alone
            head = head_name(node.layer, node.head)
            bias(f"{head}.b_Q", 2 * node.layer, [f"{head}.q"])
            bias(f"{head}.b_K", 2 * node.layer, [f"{head}.k"])
        # a LayerNorm bias is read only by the nodes after its norm: a head's q/k/v, an MLP
        only = [r for n in src.first for r in _inputs(n)] if src.forced else None
        bias(src.name, src.start, only)
    for l in range(L):
        for h in range(arch.n_heads[l]):
            name = head_name(l, h)
            for c in CHANNELS:
                G.add_node(f"{name}.{c}", **_node_attrs(f"{name}.{c}", 2 * l))
            G.add_node(name, **_node_attrs(name, 2 * l))
            writers.append(_Writer(name, 2 * l + 1))
        if arch.mlp:
            G.add_node(mlp_name(l), **_node_attrs(mlp_name(l), node_stage(arch, mlp_name(l))))
            writers.append(_Writer(mlp_name(l), 2 * l + 2))
    G.add_node("logits", **_node_attrs("logits", final))
    return writers


def _inputs(node: str) -> list[str]:
    """The sinks through which a head (``.q``, ``.k``, ``.v``) or an MLP (itself) reads."""
    return [f"{node}.{c}" for c in CHANNELS] if parse_node(node).kind == "head" else [node]


def _readers(arch: Architecture) -> list[tuple[str, int, str]]:
    """Every reader of the residual stream, in forward order: (node, stage, channel)."""
    out = []
    for l in range(arch.n_layers):
        for h in arch.heads_in_layer(l):
            out.extend((f"{h}.{c}", 2 * l, c) for c in CHANNELS)
        if arch.mlp:
            out.append((mlp_name(l), node_stage(arch, mlp_name(l)), "in"))
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
    key path into ``head.k``), a ranking ``Row`` (a score-term row carries ``head`` and
    ``key_path``), a ``(path, value)`` pair of ``strongest_paths``, a term name
    (``"L1H0∘L0H1"``, ``"pos:L1H0"``) or a tuple of node names: starting at a source and not
    ending at a sink it is a logit path (``("embed", "L0H1")``); ending at a sink it stops
    there (``("embed", "L0H0", "L1H0.k")``); otherwise a segment between writers
    (``("L0H0", "L1H0")`` = ``L0H0 → L1H0.v → L1H0``).
    """
    if isinstance(item, ScoreTerm) or (isinstance(item, Row) and "key_path" in item.extra):
        if isinstance(item, ScoreTerm) and item.is_remainder:
            raise PathexpandError("the remainder term stands for many paths; it has no edges")
        head = item.head if isinstance(item, ScoreTerm) else item["head"]
        query, key = (item.query_path, item.key_path) if isinstance(item, ScoreTerm) else (
            item.path, item["key_path"])
        return (_walk_edges(G, tuple(query) + (f"{head}.q",))
                + _walk_edges(G, tuple(key) + (f"{head}.k",)))
    path = _as_path(item)
    if path == (REMAINDER,):
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
        if SCORE_SEP.strip() in item:
            raise PathexpandError(
                f"{item!r} is a score term name, which does not say its head; pass the "
                "ScoreTerm (pe.expand_scores(arch, head)[name]) instead"
            )
        return parse_term_name(item)
    if isinstance(item, (Term, Row)):
        return tuple(item.path)
    if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple)
            and isinstance(item[1], (int, float))):
        return tuple(item[0])                                   # a (path, value) of strongest_paths
    try:
        return tuple(str(x) for x in item)
    except TypeError:
        raise PathexpandError(
            f"cannot read a path from {item!r}; give a Term, ScoreTerm, ranking row, term name "
            "or tuple of nodes"
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
    if isinstance(terms, (Term, ScoreTerm, str)):
        terms = [terms]
    edges: dict[tuple[str, str, str], None] = {}
    for item in terms:
        if isinstance(item, (Term, ScoreTerm)) and item.is_remainder:
            continue
        if isinstance(item, Row) and item.name == REMAINDER:
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


def score_values(G) -> dict[tuple[str, str], float]:
    """``{(head, score term name): value}`` stored by ``path_graph(..., ranking=)`` from a
    ranking of score terms (empty when none)."""
    text = G.graph.get("score_values")
    if not text:
        return {}
    return {tuple(k.split(_SCORE_KEY_SEP, 1)): float(v) for k, v in json.loads(text).items()}


def strongest_paths(G, k: int = 10, *, sink: str = "logits", source: str | None = None
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
        rows = [(parse_term_name(n), v) for n, v in stored.items() if math.isfinite(v)]
        if source is not None:
            rows = [r for r in rows if r[0][0] == source]
        rows.sort(key=lambda r: -abs(r[1]))
        return rows[:k]
    if not any("weight" in d for _, _, d in G.edges(data=True)):
        raise PathexpandError(
            "this graph carries no magnitudes: build it with pe.path_graph(..., ranking=...) "
            "(a Ranking or a result such as pe.attribute(...) or pe.composition_scores(...))"
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


def _add_paths(G, ranking: Ranking) -> None:
    """Logit-path or score-term rows: ``path_values`` and ``weight`` += ``|value|`` on their edges
    and nodes."""
    values: dict[str, float] = {}
    scores: dict[str, float] = {}
    edge_w: dict = defaultdict(float)
    node_w: dict = defaultdict(float)
    for row in ranking:
        if not math.isfinite(row.value) or row.name == REMAINDER:
            continue
        if ranking.of == "score_terms":
            head = row.extra.get("head")
            if head is None or head not in G or G.nodes[head]["kind"] != "head":
                raise PathexpandError(
                    f"score rows name head {head!r}, which is not a head of this graph; rank the "
                    "score terms of the same model")
            edges = path_edges(G, row)
            nodes = tuple(row.path[1:]) + tuple(row["key_path"][1:])
            scores[f"{head}{_SCORE_KEY_SEP}{row.name}"] = row.value
        else:
            path = tuple(row.path)
            if path[0] not in G or G.nodes[path[0]]["kind"] not in _SOURCE_KINDS:
                raise PathexpandError(
                    f"ranked path {_show(path)} does not start at a source of this graph; "
                    "rank the terms of expand_logits on the same model"
                )
            edges = path_edges(G, path)
            values[term_name(path)] = row.value
            nodes = path[1:]
        for e in dict.fromkeys(edges):
            edge_w[e] += abs(row.value)
        for n in dict.fromkeys(nodes):
            node_w[n] += abs(row.value)
    if values:
        G.graph["path_values"] = json.dumps(values, ensure_ascii=False)
    if scores:
        G.graph["score_values"] = json.dumps(scores, ensure_ascii=False)
    if values or scores:
        G.graph["value_label"] = ranking.value_label  # what a path weight sums: |frobenius|, ...
    for e, w in edge_w.items():
        if "contribution" not in G.edges[e]:  # an exact edge contribution outranks path sums
            G.edges[e]["weight"] = w
    for n, w in node_w.items():
        if "contribution" not in G.nodes[n]:
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


def _attr(ranking: Ranking) -> str:
    return "contribution" if ranking.value_label == "contribution" else "value"


def _add_edges_ranking(G, ranking: Ranking) -> None:
    """``(writer, reader)`` rows (an attribution's edge view): ``contribution`` on the read edge."""
    attr = _attr(ranking)
    for row in ranking:
        a, b = row.path
        e = _read_edge(G, a, b)
        if e is None or not G.has_edge(*e):
            raise PathexpandError(
                f"edge {a} → {b} is not a read of this graph; build the graph from the same "
                "model as the ranking"
            )
        G.edges[e][attr] = row.value
        G.edges[e].setdefault("weight", abs(row.value))
        if e[1].endswith(".v"):  # the head's own OV edge carries the same flow
            ov = G.edges[e[1], e[1][:-2], "v"]
            ov["weight"] = ov.get("weight", 0.0) + abs(row.value)


def _add_nodes_ranking(G, ranking: Ranking) -> None:
    """Head/MLP rows (an attribution's node view): ``contribution`` on the node."""
    attr = _attr(ranking)
    for row in ranking:
        n = row.path[0]
        if n not in G:
            raise PathexpandError(f"ranked node {n!r} is not in this graph")
        G.nodes[n][attr] = row.value
        G.nodes[n].setdefault("weight", abs(row.value))


def _add_heads_ranking(G, ranking: Ranking) -> None:
    """Per-head statistics: the statistic (``previous_token``, ``copying``, ...) on the head."""
    for row in ranking:
        if row.name not in G:
            raise PathexpandError(f"ranked head {row.name!r} is not in this graph")
        G.nodes[row.name][row.kind] = row.value


def _add_pairs(G, ranking: Ranking) -> None:
    """Composition rows: ``composition`` (the raw score) and ``composition_z`` on the read edge
    ``earlier → later.q|k|v``; ``weight`` = the score where nothing else set one."""
    for row in ranking:
        channel = {"q_composition": "q", "k_composition": "k", "v_composition": "v"}.get(row.kind)
        a, b = row.path
        e = (a, f"{b}.{channel}", channel)
        if channel is None or not G.has_edge(*e):
            raise PathexpandError(
                f"composition row {row.name!r} is not a read of this graph; compute the scores "
                "on the same model"
            )
        data = G.edges[e]
        data["composition"] = float(row.extra.get("score", row.value))
        if row.extra.get("z") is not None and math.isfinite(row.extra["z"]):
            data["composition_z"] = float(row.extra["z"])
        data.setdefault("weight", data["composition"])


def _no_depths(G, ranking: Ranking) -> None:
    raise PathexpandError("a ranking of depths has nothing to attach to a path graph")


# applied in this order: paths last, so their weights win (module docstring)
_APPLY = {"pairs": _add_pairs, "edges": _add_edges_ranking, "nodes": _add_nodes_ranking,
          "heads": _add_heads_ranking, "paths": _add_paths, "score_terms": _add_paths,
          "depths": _no_depths}
_ORDER = tuple(_APPLY)


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
