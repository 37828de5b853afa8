"""Circuit diagrams: a path graph drawn by Graphviz, embeddings at the bottom, logits on top.

``diagram(obj)`` returns a ``Diagram``, a ``graphviz.Digraph`` (``.source`` is the DOT text)
with ``.svg()``, ``.png()`` and ``.pdf()`` through the real ``dot`` program, and
``_repr_svg_`` for Jupyter. What is drawn:

- the **residual stream** as a column of ``resid{l}`` nodes (``resid{l}_mid`` between a
  layer's attention and its MLP; none with parallel attention and MLP, whose MLP reads
  ``resid{l}`` beside the heads), sources feeding ``resid0``, every head and MLP reading the
  stream below it and writing the stream above it (thin grey "backbone" edges);
- **heads** as tables whose ``Q``/``K``/``V`` cells are ports (DOT ``L1H0:k``; in SVG the
  cell is the group ``a_L1H0:k``), MLPs as boxes, ``logits`` on top;
- **path edges** (the reads of the path graph: a writer → ``L1H0.k``, an MLP or ``logits``)
  with width and colour from the graph's ``weight`` (blue/red by the sign of a
  ``contribution``), composition edges labelled ``K 0.43``; the highlighted terms in full
  colour, every other edge faded (its numbers in its tooltip, not in a label).

Stable ids in the SVG: nodes by name (``L1H0``, ``MLP0``, ``embed``, ``logits``,
``resid1``), path edges ``{writer}->{reader}`` (``L0H0->L1H0.k``, ``L1H0->logits``),
backbone edges ``resid0->L0H0``, ``L0H0->resid1``, ``resid0->resid1``.

>>> d = diagram(pe.expand_logits(pe.Architecture(1, 2))["L0H1"])   # doctest: +SKIP
>>> d.svg()[:5]                                                     # doctest: +SKIP
'<?xml'
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import networkx as nx

from .._files import check_output_path, write_atomic
from ..architecture import Architecture
from ..errors import MissingDependencyError, PathexpandError, check_int
from ..graph import arch_of, path_edges, path_graph, strongest_paths
from ..names import REMAINDER
from ..numeric.composition import CompositionScores, composition_scores
from ..numeric.detect import InductionCircuit, induction_circuit
from ..numeric.evaluate import evaluate
from ..numeric.weights import as_weights
from ..ranking import Row
from ..symbolic import Expansion, Selection, expand_logits, expand_scores
from ..symbolic.terms import ScoreTerm, Term

__all__ = ["diagram", "default_circuit", "induction_highlight", "top_terms", "svg", "png", "pdf", "write", "check_writable", "FORMATS", "LAYOUTS"]

LAYOUTS = ("layers", "left-right")
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
MAX_TERMS = 5_000

_FONT = "Helvetica"
_GREY = "#9e9e9e"
_LIGHT = "#d9d9d9"
_FADED = "#bdbdbd"
_POSITIVE = (33, 102, 172)    # #2166ac
_NEGATIVE = (178, 24, 43)     # #b2182b
_UNSIGNED = (84, 39, 143)     # #54278f
_HIGHLIGHT = "#d95f02"
_HEAD_FILL = "#deebf7"
_HOT_FILL = "#fdd49e"
_PORT_FILL = "#fdae6b"
_FADE_ALPHA = "59"            # ~35% opacity
_CHANNEL_TEXT = {"q": "Q", "k": "K", "v": "V", "in": "in", "out": "out"}


# the Diagram type -----------------------------------------------------------------------------
@cache
def _diagram_class():
    graphviz = _graphviz()

    class Diagram(graphviz.Digraph):
        """A ``graphviz.Digraph`` with ``svg()``/``png()``/``pdf()`` through Graphviz's ``dot``."""

        def svg(self, path=None) -> str:
            """The SVG text (written to ``path`` too when given)."""
            return _render(self, "svg", path)

        def png(self, path=None) -> bytes:
            """PNG bytes (written to ``path`` too when given)."""
            return _render(self, "png", path)

        def pdf(self, path=None) -> bytes:
            """PDF bytes (written to ``path`` too when given)."""
            return _render(self, "pdf", path)

        def _repr_svg_(self) -> str:
            return self.svg()

    Diagram.__module__ = __name__
    return Diagram


def _graphviz():
    import graphviz  # a core dependency; imported here so `import pathexpand` stays light

    return graphviz


def _pipe(dot, fmt: str) -> bytes:
    graphviz = _graphviz()
    try:
        return dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise MissingDependencyError(
            "drawing a diagram needs the Graphviz `dot` program, which is not on PATH: install "
            "Graphviz (apt install graphviz, brew install graphviz or conda install graphviz; "
            "pip's 'graphviz' package is only its Python interface), or write the DOT source "
            "(.dot) instead"
        ) from None
    except graphviz.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise PathexpandError(f"Graphviz `dot` failed: {err[-1] if err else exc}") from None


def _render(dot, fmt: str, path=None):
    data = dot.source.encode() if fmt == "dot" else _pipe(dot, fmt)
    if path is not None:
        write_atomic(check_writable(path), data)
    return data.decode() if fmt in ("svg", "dot") else data


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PathexpandError(
            f"cannot tell the format of {str(path)!r} from its suffix {path.suffix!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    return fmt


def check_writable(path) -> Path:
    """``path`` as a ``Path`` if its format is known and its folder writable, else an error."""
    path = check_output_path(path, "circuit.svg")
    _format_of(path)
    return path


def write(obj, path, **diagram_kwargs) -> Path:
    """Draw ``obj`` (a ``Diagram`` or anything ``diagram`` takes) to ``path``.

    The format comes from the suffix: ``.svg``, ``.png``, ``.pdf`` (through ``dot``) or
    ``.dot``/``.gv`` (the DOT source). Written atomically: a temporary file in the target
    folder, renamed when complete.
    """
    path = check_writable(path)
    dot = obj if _is_dot(obj) else diagram(obj, **diagram_kwargs)
    _render(dot, _format_of(path), path)
    return path


def _is_dot(obj) -> bool:
    return hasattr(obj, "source") and hasattr(obj, "pipe")


def svg(obj, path=None, **diagram_kwargs) -> str:
    """SVG text of ``obj`` (a ``Diagram``, or anything ``diagram`` takes, with its options)."""
    return _render(obj if _is_dot(obj) else diagram(obj, **diagram_kwargs), "svg", path)


def png(obj, path=None, **diagram_kwargs) -> bytes:
    """PNG bytes of ``obj`` (see ``svg``)."""
    return _render(obj if _is_dot(obj) else diagram(obj, **diagram_kwargs), "png", path)


def pdf(obj, path=None, **diagram_kwargs) -> bytes:
    """PDF bytes of ``obj`` (see ``svg``)."""
    return _render(obj if _is_dot(obj) else diagram(obj, **diagram_kwargs), "pdf", path)


# what to draw ---------------------------------------------------------------------------------
def _is_term(obj) -> bool:
    return isinstance(obj, (Term, ScoreTerm))


def _resolve(obj) -> tuple[Any, list, str]:
    """``(graph, items to highlight, default title)`` for anything ``diagram`` takes."""
    if isinstance(obj, nx.MultiDiGraph):
        return obj, [], str(arch_of(obj))
    if isinstance(obj, ScoreTerm):
        return path_graph(obj.arch), [obj], f"{obj.head}: {obj.name}"
    if isinstance(obj, Term):
        return path_graph(obj.arch), [obj], f"term {obj.name}"
    if isinstance(obj, (Expansion, Selection)):
        n = len(obj)
        if n > MAX_TERMS:
            raise PathexpandError(
                f"this expansion has {n:,} terms, too many to draw (at most {MAX_TERMS:,}); "
                "filter it (exp.filter(depth=..., through=...)) or draw top paths of a ranking"
            )
        target = "logits" if obj.target == "logits" else f"the attention score of {obj.target}"
        terms = [t for t in obj if not t.is_remainder]
        return path_graph(obj.arch), terms, f"expansion of {target}"
    if isinstance(obj, (list, tuple)) and obj and all(_is_term(t) for t in obj):
        archs = {t.arch for t in obj}
        if len(archs) != 1:
            raise PathexpandError("terms of different architectures cannot share one diagram")
        return path_graph(obj[0].arch), list(obj), f"{len(obj)} terms"
    if isinstance(obj, (list, tuple, dict, int, float, type(None))):
        raise PathexpandError(
            "diagram takes a path graph (pe.path_graph), a Term or ScoreTerm, an Expansion, a list "
            f"of Terms, an Architecture or a model; got {type(obj).__name__}"
        )
    G = path_graph(obj)          # an Architecture, or a model through pe.load
    return G, [], str(arch_of(G))


def induction_highlight(arch: Architecture, prev: str, ind: str) -> list:
    """What an induction-circuit diagram highlights: the K-composition term (token → ``prev`` →
    ``ind``'s key, ``ind``'s query reading the token), ``ind``'s OV path to the logits, and
    with positions ``prev``'s positional QK term (what makes it a previous-token head)."""
    highlight = [expand_scores(arch, ind)[f"q:direct · k:{prev}"], ("embed", ind)]
    if arch.positional in ("standard", "shortformer"):  # rotary: no pos source to draw
        highlight.append(expand_scores(arch, prev)["q:pos · k:pos"])
    return highlight


_MAX_LOGIT_TERMS = 20_000


def top_terms(model, k: int = 5, head: str | None = None):
    """``(graph, highlight, title)``: the ``k`` logit terms (or ``head``'s score terms) with the
    largest ‖W‖_F (``evaluate``), on a graph weighted by every term's norm. A big model's
    logit expansion is cut at depth 2 (or 1): the rest is the remainder, not drawn."""
    w = as_weights(model)
    arch = Architecture.from_weights(w)
    if head:
        exp = expand_scores(arch, head)
    else:
        exp = expand_logits(arch)
        for depth in (2, 1):
            if len(exp) > _MAX_LOGIT_TERMS:
                exp = expand_logits(arch, max_depth=depth)
    ranking = evaluate(exp, w, metric="frobenius").filter(where=lambda r: r.name != REMAINDER)
    best = ranking.top(check_int("k", k, 1))
    terms = [exp[r.name] for r in best]
    what = f"{head}'s score terms" if head else "terms"
    return path_graph(w, ranking=ranking), terms, f"top {len(terms)} {what} by ‖W‖_F"


def default_circuit(model, *, circuit: InductionCircuit | None = None,
                    composition: CompositionScores | None = None):
    """``(graph, highlight, title, circuit)`` drawn when nothing is asked for — by ``pathexpand
    diagram``, the report and the demo alike: the induction circuit that
    ``pe.induction_circuit`` names, or, when it finds none (a model with heads in fewer than
    two layers has none), the top 5 terms by ‖W‖_F under a title that says no circuit was found.
    ``circuit``/``composition``: results already computed for the same model."""
    w = as_weights(model)
    arch = Architecture.from_weights(w)
    if circuit is None:
        circuit = induction_circuit(w, composition=composition)
    if circuit.found:
        comp = composition if composition is not None else composition_scores(w)
        highlight = induction_highlight(arch, circuit.previous_token_head, circuit.induction_head)
        return path_graph(w, ranking=comp), highlight, circuit.title, circuit
    graph, highlight, title = top_terms(w, 5)
    return graph, highlight, f"{circuit.title}; {title}", circuit


def diagram(
    obj,
    *,
    highlight: Iterable | None = None,
    top: int | None = None,
    layout: str = "layers",
    max_nodes: int = 48,
    max_edges: int = 16,
    title: str | None = None,
):
    """A circuit diagram of ``obj`` as a ``Diagram`` (a ``graphviz.Digraph``).

    ``obj``: a path graph (``pe.path_graph(model, ranking=...)`` for magnitudes), a
    ``Term``/``ScoreTerm`` (that term highlighted), an ``Expansion`` (all its terms), a list of
    Terms, an ``Architecture`` or a model (``Weights`` or a bundled name).
    ``highlight``: a list of more terms, term names, node tuples or ranking rows to highlight
    (anything ``pe.graph.path_edges`` takes; one Term or name alone is fine too).
    ``top``: also highlight the graph's ``top`` strongest paths (``pe.strongest_paths``).
    ``layout``: ``"layers"`` (bottom to top) or ``"left-right"``.
    Besides the highlighted edges, at most ``max_edges`` other reads are drawn (the heaviest
    by ``weight``; without weights all of them only if they are that few); with more than
    ``max_nodes`` heads and MLPs only those on drawn edges are kept.
    """
    if layout not in LAYOUTS:
        raise PathexpandError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    max_nodes = check_int("max_nodes", max_nodes, 1)
    max_edges = check_int("max_edges", max_edges, 0)
    G, items, default_title = _resolve(obj)
    if highlight is not None:
        if isinstance(highlight, (str, Row)) or _is_term(highlight):
            highlight = [highlight]
        items = items + list(highlight)
    if top is not None:
        items = items + [p for p, _ in strongest_paths(G, check_int("top", top, 1))]
    hot: dict[tuple[str, str, str], None] = {}
    for item in items:
        hot.update(dict.fromkeys(path_edges(G, item)))
    return _Drawing(G, hot, layout, max_nodes, max_edges,
                    default_title if title is None else title).build()


# drawing --------------------------------------------------------------------------------------
def _hex(rgb) -> str:
    r, g, b = (round(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _blend(rgb, t: float) -> str:
    """``rgb`` mixed with white: ``t=0`` pale (25% colour), ``t=1`` full colour."""
    a = 0.25 + 0.75 * max(0.0, min(1.0, t))
    return _hex(255 + (c - 255) * a for c in rgb)


def _num(x: float) -> str:
    return f"{x:+.3g}"


class _Drawing:
    """One diagram being built: which nodes and edges, then the DOT statements in order."""

    def __init__(self, G, hot, layout, max_nodes, max_edges, title):
        self.G = G
        self.arch = arch_of(G)
        self.hot = hot
        self.lr = layout == "left-right"
        self.title = title
        self.faded_mode = bool(hot)
        reads = [(u, v, k) for u, v, k, kind in G.edges(keys=True, data="kind") if kind == "read"]
        weighted = [e for e in reads if "weight" in G.edges[e]]
        self.has_weight = bool(weighted)
        self.signed = any("contribution" in G.edges[e] for e in reads)
        others = [e for e in reads if e not in hot]
        if weighted:
            others = sorted((e for e in others if "weight" in G.edges[e]),
                            key=lambda e: -abs(float(G.edges[e]["weight"])))
            context = others[:max_edges]
        else:
            context = others if not hot and len(others) <= max_edges else []
        hot_reads = [e for e in reads if e in hot]
        writers = [n for n, k in G.nodes(data="kind") if k in ("head", "mlp")]
        if len(writers) <= max_nodes:
            self.shown = set(writers)
        else:
            self.shown = set()
            for e in hot:
                self.shown.update(self._owner(n) for n in e[:2] if self._owner(n) in writers)
            if len(self.shown) > max_nodes:
                raise PathexpandError(
                    f"the highlighted terms pass {len(self.shown)} heads/MLPs, more than "
                    f"max_nodes={max_nodes}; highlight fewer terms or raise max_nodes"
                )
            kept = []
            for e in context:
                need = {self._owner(n) for n in e[:2]} & set(writers)
                if len(self.shown | need) <= max_nodes:
                    self.shown |= need
                    kept.append(e)
            context = kept
        self.n_writers = len(writers)
        self.hot_reads = hot_reads
        self.context = context
        drawn = hot_reads + context
        self.scale = max(
            (abs(float(G.edges[e]["weight"])) for e in drawn if "weight" in G.edges[e]),
            default=0.0)
        self.hot_nodes = {self._owner(n) for e in hot for n in e[:2]}
        self.hot_ports = {e[1] for e in hot if G.nodes[e[1]]["kind"] == "sink"}
        self.touched = {self._owner(n) for e in drawn for n in e[:2]}

    def _owner(self, node: str) -> str:
        """The drawn node of a graph node: a sink belongs to its head."""
        return node.rsplit(".", 1)[0] if self.G.nodes[node]["kind"] == "sink" else node

    # names of stream nodes ----------------------------------------------------------------
    def _has_mid(self) -> bool:
        """A ``resid{l}_mid`` between attention and MLP (not with parallel attention and MLP)."""
        return self.arch.mlp and not self.arch.parallel_attn_mlp

    def _stream(self, stage: int) -> str:
        """Stream node read at ``stage``: attention l reads ``resid{l}``, MLP l ``resid{l}_mid``
        (``resid{l}`` too with parallel attention and MLP)."""
        layer, mid = divmod(stage, 2)
        if mid and self._has_mid():
            return f"resid{layer}_mid"
        return f"resid{layer + mid}"

    def _streams(self) -> list[str]:
        """The stream nodes drawn, bottom to top: every level, or, when only some heads and MLPs
        are shown, the first, the last and those a shown writer or bias touches."""
        out = []
        for l in range(self.arch.n_layers):
            out.append(f"resid{l}")
            if self._has_mid():
                out.append(f"resid{l}_mid")
        out.append(f"resid{self.arch.n_layers}")
        if len(self.shown) == self.n_writers:
            return out
        used = {out[0], out[-1]}
        for name in self.shown:
            stage = self.G.nodes[name]["stage"]
            used |= {self._stream(stage), self._stream(stage + 1)}
        for name, kind in self.G.nodes(data="kind"):
            if kind == "bias" and name in self.touched:
                used.add(self._stream(self.G.nodes[name]["stage"]))
        return [s for s in out if s in used]

    # build --------------------------------------------------------------------------------
    def build(self):
        Diagram = _diagram_class()
        d = Diagram("circuit", graph_attr={
            "rankdir": "LR" if self.lr else "BT",
            "newrank": "true",
            "nodesep": "0.3",
            "ranksep": "0.45",
            "fontname": _FONT,
            "fontsize": "13",
            "label": self.title + self._note(),
            "labelloc": "t",
            "id": "circuit",
        })
        d.attr("node", fontname=_FONT, fontsize="11")
        d.attr("edge", fontname=_FONT, fontsize="9", arrowsize="0.6")
        self._sources(d)
        self._stream_nodes(d)
        self._writers(d)
        self._biases(d)
        self._logits(d)
        self._backbone(d)
        for e in self.context:
            self._edge(d, e, hot=False)
        for e in self.hot_reads:
            self._edge(d, e, hot=True)
        return d

    def _note(self) -> str:
        hidden = self.n_writers - len(self.shown)
        return f" (showing {len(self.shown)} of {self.n_writers} heads/MLPs)" if hidden else ""

    def _fade(self, name: str) -> bool:
        return self.faded_mode and name not in self.hot_nodes

    def _node_style(self, name: str) -> dict:
        if self._fade(name):
            return {"color": _FADED, "fontcolor": _GREY}
        return {"color": "#525252"}

    def _sources(self, d) -> None:
        G = self.G
        with d.subgraph(name="sources") as s:
            s.attr(rank="same")
            for name in ("embed", "pos"):
                if name not in G:
                    continue
                label = "embed\nW_E" if name == "embed" else "pos\nW_pos"
                if name == "pos" and self.arch.positional == "shortformer":
                    label += "\n(Q/K only)"
                s.node(name, label=label, id=name, shape="box", style="rounded",
                       **self._node_style(name))

    def _stream_nodes(self, d) -> None:
        for name in self._streams():
            label = name.replace("resid", "resid ").replace("_mid", " mid")
            d.node(name, label=label, id=name, shape="box", style="rounded,filled",
                   fillcolor="#f0f0f0", color=_LIGHT, fontcolor="#737373", fontsize="9",
                   height="0.25", margin="0.04,0.02")

    def _writers(self, d) -> None:
        for l in range(self.arch.n_layers):
            heads = [h for h in self.arch.heads_in_layer(l) if h in self.shown]
            if heads:
                with d.subgraph(name=f"layer{l}") as s:
                    s.attr(rank="same")
                    for h in heads:
                        s.node(h, label=self._head_label(h), id=h, shape="plain")
            mlp = f"MLP{l}"
            if mlp in self.shown:
                fill = _HOT_FILL if mlp in self.hot_nodes else (
                    "white" if self._fade(mlp) else _HEAD_FILL)
                value = self._node_value(mlp)
                label = mlp + (f"\n{value}" if value else "")
                d.node(mlp, label=label, id=mlp, shape="box", style="filled", fillcolor=fill,
                       **self._node_style(mlp))

    def _node_value(self, name: str) -> str:
        data = self.G.nodes[name]
        if "contribution" in data:
            return _num(float(data["contribution"]))
        return ""

    def _head_label(self, head: str) -> str:
        fade = self._fade(head)
        border = _FADED if fade else "#525252"
        font = _GREY if fade else "black"
        fill = _HOT_FILL if head in self.hot_nodes else ("white" if fade else _HEAD_FILL)
        value = self._node_value(head)
        name = html.escape(head)
        if value:
            name += f'<br/><font point-size="9">{html.escape(value)}</font>'
        cells = []
        for c in "qkv":
            port_fill = _PORT_FILL if f"{head}.{c}" in self.hot_ports else fill
            cells.append(
                f'<td port="{c}" id="{head}:{c}" href="#{head}" tooltip="{head}.{c}" '
                f'bgcolor="{port_fill}">'
                f'<font color="{font}">{c.upper()}</font></td>'
            )
        table = (f'<table border="0" cellborder="1" cellspacing="0" cellpadding="3" '
                 f'color="{border}" bgcolor="{fill}">')
        name_cell = f'<font color="{font}">{name}</font>'
        if self.lr:
            rows = (f'<tr>{cells[0]}<td port="out" rowspan="3">{name_cell}</td></tr>'
                    f"<tr>{cells[1]}</tr><tr>{cells[2]}</tr>")
        else:
            rows = f'<tr><td port="out" colspan="3">{name_cell}</td></tr><tr>{"".join(cells)}</tr>'
        return f"<{table}{rows}</table>>"

    def _biases(self, d) -> None:
        """Bias sources on drawn edges, each level with the stream node where it enters."""
        G = self.G
        by_stream: dict[str, list[str]] = {}
        for name, kind in G.nodes(data="kind"):
            if kind == "bias" and name in self.touched:
                by_stream.setdefault(self._stream(G.nodes[name]["stage"]), []).append(name)
        for stream, names in by_stream.items():
            with d.subgraph(name=f"bias_{stream}") as s:
                s.attr(rank="same")
                s.node(stream)
                for name in names:
                    s.node(name, label=name, id=name, shape="note", fontsize="9",
                           **self._node_style(name))

    def _logits(self, d) -> None:
        d.node("logits", label="logits\nW_U", id="logits", shape="box", style="rounded,bold",
               **self._node_style("logits"))

    def _backbone(self, d) -> None:
        faint = {"color": _LIGHT, "arrowsize": "0.4"}
        streams = self._streams()
        for a, b in pairwise(streams):
            d.edge(a, b, id=f"{a}->{b}", color=_LIGHT, penwidth="6", arrowhead="none", weight="20")
        d.edge(streams[-1], "logits", id=f"{streams[-1]}->logits", color=_LIGHT, penwidth="6",
               arrowhead="none", weight="20")
        if "embed" in self.G:
            d.edge("embed", streams[0], id=f"embed->{streams[0]}", **faint)
        if "pos" in self.G and self.arch.positional == "standard":
            d.edge("pos", streams[0], id=f"pos->{streams[0]}", **faint)
        port_in = "w" if self.lr else "s"
        for name in self.arch.writers:
            if name not in self.shown:
                continue
            stage = self.G.nodes[name]["stage"]
            below, above = self._stream(stage), self._stream(stage + 1)
            head = self.G.nodes[name]["kind"] == "head"
            d.edge(below, f"{name}:{port_in}" if not head else name, id=f"{below}->{name}", **faint)
            d.edge(name, above, id=f"{name}->{above}", **faint)
        for name, kind in self.G.nodes(data="kind"):
            if kind == "bias" and name in self.touched:
                stage = self.G.nodes[name]["stage"]
                if self.G.has_edge(name, "logits"):  # in the stream (not ln1.b, ln2.b, b_Q, b_K)
                    target = self._stream(stage)
                    d.edge(name, target, id=f"{name}->{target}", style="dashed", **faint)

    def _endpoint(self, node: str) -> str:
        G = self.G
        kind = G.nodes[node]["kind"]
        if kind == "sink":
            head, channel = node.rsplit(".", 1)
            return f"{head}:{channel}:{'w' if self.lr else 's'}"
        if kind == "head":
            return f"{node}:out:{'e' if self.lr else 'n'}"
        return node

    def _edge(self, d, e: tuple[str, str, str], hot: bool) -> None:
        u, v, channel = e
        data = self.G.edges[e]
        weight = data.get("weight")
        t = abs(float(weight)) / self.scale if weight is not None and self.scale > 0 else None
        if "contribution" in data:
            rgb = _POSITIVE if float(data["contribution"]) >= 0 else _NEGATIVE
            color = _blend(rgb, t if t is not None else 1.0)
        elif t is not None:
            color = _blend(_UNSIGNED, t)
        else:
            color = _HIGHLIGHT if hot else _GREY
        if t is not None:
            width = 0.6 + 4.4 * t
        else:
            width = 2.4 if hot else 0.8
        if self.faded_mode and not hot:
            color += _FADE_ALPHA
            width = min(width, 1.2)
        attrs = {
            "id": f"{u}->{v}",
            "color": color,
            "penwidth": f"{width:.2f}",
            "weight": "1" if hot else "0",
            "tooltip": self._tooltip(u, v, channel, data),
        }
        label = ""
        if self.faded_mode and not hot:
            pass  # a faded edge keeps its numbers in the tooltip: labels would crowd the circuit
        elif "composition" in data:
            label = f"{_CHANNEL_TEXT[channel]} {float(data['composition']):.2f}"
        elif "contribution" in data:
            label = _num(float(data["contribution"]))
        if label:
            attrs["label"] = label
        if hot:
            attrs["class"] = "highlight"
        d.edge(self._endpoint(u), self._endpoint(v), **attrs)

    def _tooltip(self, u: str, v: str, channel: str, data: dict) -> str:
        parts = [f"{u} → {v} ({_CHANNEL_TEXT[channel]} read)"]
        if "composition" in data:
            parts.append(f"{channel.upper()}-composition {float(data['composition']):.3f}")
        if "contribution" in data:
            parts.append(f"contribution {float(data['contribution']):+.4g}")
        elif "weight" in data:
            parts.append(f"weight {float(data['weight']):.4g}")
        return "; ".join(parts)
