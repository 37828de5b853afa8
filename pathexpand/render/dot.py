"""Circuit diagrams: a path graph drawn by Graphviz, embeddings at the bottom, logits on top.

``diagram(obj)`` returns a ``Diagram``, a ``graphviz.Digraph`` (``.source`` is the DOT text)
with ``.svg()``, ``.png()`` and ``.pdf()`` through the real ``dot`` program, and
``_repr_svg_`` for Jupyter. What is drawn:

- the **residual stream** as a column of ``resid{l}`` nodes (``resid{l}_mid`` between a
  layer's attention and its MLP; none with parallel attention and MLP, whose MLP reads
  ``resid{l}`` beside the heads), sources feeding ``resid0``, every head and MLP reading the
  stream below it and writing the stream above it (thin grey "backbone" edges);
- **heads** as tables whose ``Q``/``K``/``V`` cells are ports (DOT ``L1H0:k``; in SVG the
  cell is the group ``a_L1H0:k``), the heads of a layer in head order left to right whatever
  is highlighted (invisible edges between neighbours), MLPs as boxes, ``logits`` on top;
- **path edges** (the reads of the path graph: a writer → ``L1H0.k``, an MLP or ``logits``)
  with width and colour from the graph's ``weight`` (blue/red by the sign of a
  ``contribution``), composition edges labelled ``K 0.43``; the highlighted terms in full
  colour; other reads only when asked (``max_edges``), faded (numbers in the tooltip);
- a **legend** under the title: one entry per colour or style this picture uses, no other.

Two to ``MAX_PANELS`` score terms are drawn as **small multiples** instead: one panel (cluster
``term{i}``) per term, its query path into the head's ``Q`` and its key path into ``K``.

Stable ids in the SVG: nodes by name (``L1H0``, ``MLP0``, ``embed``, ``logits``,
``resid1``), path edges ``{writer}->{reader}`` (``L0H0->L1H0.k``, ``L1H0->logits``),
backbone edges ``resid0->L0H0``, ``L0H0->resid1``, ``resid0->resid1``; in panels the same
names after ``term{i}/`` (``term0/embed->L0H1.v``).

>>> d = diagram(pe.expand_logits(pe.Architecture(1, 2))["L0H1"])   # doctest: +SKIP
>>> d.svg()[:5]                                                     # doctest: +SKIP
'<?xml'
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Iterable
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx

from .._files import check_output_path, write_atomic
from ..architecture import Architecture
from ..errors import MissingDependencyError, PathexpandError, check_int
from ..graph import arch_of, path_edges, path_graph, score_values, strongest_paths
from ..names import REMAINDER
from ..numeric.composition import CompositionScores, composition_scores
from ..numeric.detect import InductionCircuit, induction_circuit
from ..numeric.evaluate import evaluate
from ..numeric.weights import as_weights
from ..ranking import Row
from ..symbolic import Expansion, Selection, expand_logits, expand_scores
from ..symbolic.terms import ScoreTerm, Term

__all__ = ["diagram", "default_circuit", "induction_highlight", "top_terms", "svg", "png", "pdf", "write", "check_writable", "FORMATS", "LAYOUTS", "MAX_PANELS"]

LAYOUTS = ("layers", "left-right")
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
MAX_TERMS = 5_000
MAX_PANELS = 12

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
    max_edges: int | None = None,
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
    ``max_edges``: how many other reads to draw besides the highlighted ones, faded (the
    heaviest by ``weight``; without weights all of them only if they are that few). Default:
    none when something is highlighted, else up to 16.
    With more than ``max_nodes`` heads and MLPs only those on drawn edges are kept.

    Two to ``MAX_PANELS`` score terms (and nothing else; ``top``, ``max_edges`` and ``max_nodes``
    do not apply) are drawn as small multiples: one panel per term, its query path and key
    path into the head, panels in the order given, captioned with the term's value when the
    graph has one (``path_graph(..., ranking=evaluate(expand_scores(...)))``).
    Every diagram carries a legend of the colours and styles it uses, under its title.
    """
    if layout not in LAYOUTS:
        raise PathexpandError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    max_nodes = check_int("max_nodes", max_nodes, 1)
    if max_edges is not None:
        max_edges = check_int("max_edges", max_edges, 0)
    G, items, default_title = _resolve(obj)
    if highlight is not None:
        if isinstance(highlight, (str, Row)) or _is_term(highlight):
            highlight = [highlight]
        items = items + list(highlight)
    if top is not None:
        items = items + [p for p, _ in strongest_paths(G, check_int("top", top, 1))]
    title = default_title if title is None else title
    if 2 <= len(items) <= MAX_PANELS and all(_is_score(i) for i in items):
        return _Panels(G, items, layout, title).build()
    hot: dict[tuple[str, str, str], None] = {}
    for item in items:
        hot.update(dict.fromkeys(path_edges(G, item)))
    if max_edges is None:
        max_edges = 0 if hot else 16
    return _Drawing(G, hot, layout, max_nodes, max_edges, title).build()


def _is_score(item) -> bool:
    """A score term (``ScoreTerm``, or a ranking row of one: it carries ``key_path``)."""
    return ((isinstance(item, ScoreTerm) and not item.is_remainder)
            or (isinstance(item, Row) and "key_path" in item.extra))


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


def _value(x: float) -> str:
    """3 significant digits, without an exponent below a million: 0.133, 12.3, 1,970."""
    return f"{x:.3g}" if abs(x) < 1000 or abs(x) >= 1e6 else f"{x:,.0f}"


_COMPOSITION_TEXT = {"direct": "direct", "q_composition": "Q-composition",
                     "k_composition": "K-composition", "qk_composition": "Q&K-composition"}
_QUERY_SIDE = _HIGHLIGHT      # score-term panels: the query path
_KEY_SIDE = "#1b9e77"         # … and the key path


def _source_label(name: str, arch: Architecture) -> str:
    if name == "embed":
        return "embed\nW_E"
    if name == "pos":
        return "pos\nW_pos" + ("\n(Q/K only)" if arch.positional == "shortformer" else "")
    return name


def _head_table(head: str, *, fill: str, border: str, font: str, hot_ports=(), value: str = "",
                lr: bool = False, svg_id: str | None = None) -> str:
    """A head as an HTML-like table: its name (port ``out``) over its ``Q``/``K``/``V`` inputs
    (ports ``q``, ``k``, ``v``; beside them, left to right, with ``lr``)."""
    svg_id = svg_id or head
    name = html.escape(head)
    if value:
        name += f'<br/><font point-size="9">{html.escape(value)}</font>'
    cells = []
    for c in "qkv":
        port_fill = _PORT_FILL if c in hot_ports else fill
        cells.append(
            f'<td port="{c}" id="{svg_id}:{c}" href="#{svg_id}" tooltip="{head}.{c}" '
            f'bgcolor="{port_fill}">'
            f'<font color="{font}">{c.upper()}</font></td>'
        )
    table = (f'<table border="0" cellborder="1" cellspacing="0" cellpadding="3" '
             f'color="{border}" bgcolor="{fill}">')
    name_cell = f'<font color="{font}">{name}</font>'
    if lr:
        rows = (f'<tr>{cells[0]}<td port="out" rowspan="3">{name_cell}</td></tr>'
                f"<tr>{cells[1]}</tr><tr>{cells[2]}</tr>")
    else:
        rows = f'<tr><td port="out" colspan="3">{name_cell}</td></tr><tr>{"".join(cells)}</tr>'
    return f"<{table}{rows}</table>>"


# the legend -------------------------------------------------------------------------------------
def _line_swatch(color: str, width: float = 2.0) -> str:
    h = max(1, round(width))
    return ('<table border="0" cellspacing="0" cellpadding="0"><tr>'
            f'<td width="26" height="{h}" fixedsize="true" bgcolor="{color}"></td>'
            "</tr></table>")


def _box_swatch(fill: str, border: str) -> str:
    return ('<table border="0" cellspacing="0" cellpadding="0"><tr>'
            f'<td width="16" height="11" fixedsize="true" border="1" color="{border}" '
            f'bgcolor="{fill}"></td></tr></table>')


def _text_swatch(text: str, color: str = "black") -> str:
    return f'<font point-size="9" color="{color}">{html.escape(text)}</font>'


_PER_ROW = 2  # legend entries to a row: a figure about as wide as its circuit


def _caption(title: str, legend: dict[str, tuple[str, str]]) -> str:
    """The graph label: the title, then the legend (swatch and text, ``_PER_ROW`` entries to a
    row) as an HTML-like table, ``<table id="legend"`` in the DOT source."""
    # a title wider than the legend would spread the legend's columns apart: wrap it
    lines = "<br/>".join(html.escape(line, quote=False) for line in textwrap.wrap(title, 90))
    rows = [f'<tr><td><font point-size="13">{lines}</font></td></tr>']
    if legend:
        items = list(legend.values())
        cells = []
        for i in range(0, len(items), _PER_ROW):
            row = "".join(f'<td align="center">{swatch}</td><td align="left">'
                          f'<font point-size="9">{html.escape(text, quote=False)}</font></td>'
                          for swatch, text in items[i:i + _PER_ROW])
            cells.append(f"<tr>{row}</tr>")
        rows.append('<tr><td><table id="legend" border="0" cellspacing="0" cellpadding="2">'
                    + "".join(cells) + "</table></td></tr>")
    return '<<table border="0" cellspacing="0" cellpadding="1">' + "".join(rows) + "</table>>"


def _new_diagram(lr: bool):
    Diagram = _diagram_class()
    d = Diagram("circuit", graph_attr={
        "rankdir": "LR" if lr else "BT",
        "newrank": "true",
        "nodesep": "0.3",
        "ranksep": "0.45",
        "fontname": _FONT,
        "fontsize": "13",
        "labelloc": "t",
        "id": "circuit",
    })
    d.attr("node", fontname=_FONT, fontsize="11")
    d.attr("edge", fontname=_FONT, fontsize="9", arrowsize="0.6")
    return d


def _order(d, names: list[str]) -> None:
    """Keep ``names`` (one rank) in this order, left to right (top to bottom when left-right):
    invisible edges between neighbours."""
    for a, b in pairwise(names):
        d.edge(a, b, style="invis")


class _Drawing:
    """One diagram being built: which nodes and edges, then the DOT statements in order."""

    def __init__(self, G, hot, layout, max_nodes, max_edges, title):
        self.G = G
        self.arch = arch_of(G)
        self.hot = hot
        self.lr = layout == "left-right"
        self.title = title
        self.faded_mode = bool(hot)
        self.used: dict[str, None] = {}   # legend keys, as the drawing uses them
        self.examples: dict[str, str] = {}  # a label drawn, shown in the legend
        self.faded_color = _GREY + _FADE_ALPHA
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
        d = _new_diagram(self.lr)
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
        d.graph_attr["label"] = _caption(self.title + self._note(), self._legend())
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

    def _fill(self, name: str) -> str:
        """A head's or MLP's fill, noted for the legend."""
        if name in self.hot_nodes:
            self.used["node_hot"] = None
            return _HOT_FILL
        if self._fade(name):
            self.used["node_faded"] = None
            return "white"
        self.used["node_plain"] = None
        return _HEAD_FILL

    def _sources(self, d) -> None:
        G = self.G
        with d.subgraph(name="sources") as s:
            s.attr(rank="same")
            names = [n for n in ("embed", "pos") if n in G]
            for name in names:
                s.node(name, label=_source_label(name, self.arch), id=name, shape="box",
                       style="rounded", **self._node_style(name))
            _order(s, names)

    def _stream_nodes(self, d) -> None:
        self.used["stream"] = None
        for name in self._streams():
            label = name.replace("resid", "resid ").replace("_mid", " mid")
            d.node(name, label=label, id=name, shape="box", style="rounded,filled",
                   fillcolor="#f0f0f0", color=_LIGHT, fontcolor="#737373", fontsize="9",
                   height="0.25", margin="0.04,0.02")

    def _writers(self, d) -> None:
        """Heads of a layer side by side in head order (and a parallel MLP after them),
        whatever is highlighted."""
        for l in range(self.arch.n_layers):
            heads = [h for h in self.arch.heads_in_layer(l) if h in self.shown]
            mlp = f"MLP{l}"
            beside = self.arch.parallel_attn_mlp and mlp in self.shown
            if heads or beside:
                with d.subgraph(name=f"layer{l}") as s:
                    s.attr(rank="same")
                    for h in heads:
                        s.node(h, label=self._head_label(h), id=h, shape="plain")
                    if beside:
                        self._mlp(s, mlp)
                    _order(s, heads + ([mlp] if beside else []))
            if mlp in self.shown and not beside:
                self._mlp(d, mlp)

    def _mlp(self, d, mlp: str) -> None:
        value = self._node_value(mlp)
        label = mlp + (f"\n{value}" if value else "")
        d.node(mlp, label=label, id=mlp, shape="box", style="filled", fillcolor=self._fill(mlp),
               **self._node_style(mlp))

    def _node_value(self, name: str) -> str:
        data = self.G.nodes[name]
        if "contribution" in data:
            value = _num(float(data["contribution"]))
            self.used["label_contribution"] = None
            self.examples.setdefault("contribution", value)
            return value
        return ""

    def _head_label(self, head: str) -> str:
        fade = self._fade(head)
        ports = {c for c in "qkv" if f"{head}.{c}" in self.hot_ports}
        if ports:
            self.used["port_hot"] = None
        return _head_table(head, fill=self._fill(head), border=_FADED if fade else "#525252",
                           font=_GREY if fade else "black", hot_ports=ports,
                           value=self._node_value(head), lr=self.lr)

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
            self.used["stream_rw"] = None
            stage = self.G.nodes[name]["stage"]
            below, above = self._stream(stage), self._stream(stage + 1)
            head = self.G.nodes[name]["kind"] == "head"
            d.edge(below, f"{name}:{port_in}" if not head else name, id=f"{below}->{name}", **faint)
            d.edge(name, above, id=f"{name}->{above}", **faint)
        for name, kind in self.G.nodes(data="kind"):
            if kind == "bias" and name in self.touched:
                stage = self.G.nodes[name]["stage"]
                if self.G.has_edge(name, "logits"):  # in the stream (not ln1.b, ln2.b, b_Q, b_K)
                    self.used["bias_dashed"] = None
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
        faded = self.faded_mode and not hot
        if "contribution" in data:
            sign = "positive" if float(data["contribution"]) >= 0 else "negative"
            color = _blend(_POSITIVE if sign == "positive" else _NEGATIVE,
                           t if t is not None else 1.0)
            key = sign
        elif t is not None:
            color, key = _blend(_UNSIGNED, t), "weighted"
        else:
            color, key = (_HIGHLIGHT, "hot") if hot else (_GREY, "read")
        if t is not None:
            width = 0.6 + 4.4 * t
        else:
            width = 2.4 if hot else 0.8
        if faded:
            color += _FADE_ALPHA
            width = min(width, 1.2)
            key = "faded"
            self.faded_color = color
        self.used[key] = None
        attrs = {
            "id": f"{u}->{v}",
            "color": color,
            "penwidth": f"{width:.2f}",
            "weight": "1" if hot else "0",
            "tooltip": self._tooltip(u, v, channel, data),
        }
        label = ""
        if faded:
            pass  # a faded edge keeps its numbers in the tooltip: labels would crowd the circuit
        elif "composition" in data:
            label = f"{_CHANNEL_TEXT[channel]} {float(data['composition']):.2f}"
            self.used[f"label_{channel}"] = None
            self.examples.setdefault("composition", label)
        elif "contribution" in data:
            label = _num(float(data["contribution"]))
            self.used["label_contribution"] = None
            self.examples.setdefault("contribution", label)
        if label:
            attrs["label"] = label
            attrs["fontcolor"] = _hex(_NEGATIVE if key == "negative" else _POSITIVE) if key in (
                "positive", "negative") else (_hex(_UNSIGNED) if key == "weighted" else "black")
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

    # legend -------------------------------------------------------------------------------
    def _weight_text(self) -> str:
        """What an unsigned edge weight is, said from the drawn edges that carry one."""
        drawn = [self.G.edges[e] for e in self.hot_reads + self.context]
        weighted = [data for data in drawn if "weight" in data and "contribution" not in data]
        if weighted and all("composition" in data and data["weight"] == data["composition"]
                            for data in weighted):
            return "composition score"
        label = self.G.graph.get("value_label")
        return f"Σ|{label}| of its ranked terms" if label else "weight"

    def _legend(self) -> dict[str, tuple[str, str]]:
        """``{key: (swatch, text)}`` for what this diagram uses, in a fixed order."""
        scale = _value(self.scale)
        highlighted = "highlighted read" if self.faded_mode else "read"
        comp = [c for c in "qkv" if f"label_{c}" in self.used]
        entries = {
            "stream": (_line_swatch(_LIGHT, 6), "residual stream (resid l: input of layer l)"),
            "stream_rw": (_line_swatch(_LIGHT, 1), "head or MLP reads and writes the stream"),
            "bias_dashed": (_text_swatch("- - -", _GREY), "bias added to the stream"),
            "hot": (_line_swatch(_HIGHLIGHT, 2.4), "read on a highlighted term"),
            "weighted": (_line_swatch(_hex(_UNSIGNED), 4),
                         f"{highlighted}; width ∝ {self._weight_text()} (max {scale})"),
            "positive": (_line_swatch(_hex(_POSITIVE), 4),
                         f"positive contribution; width ∝ |value| (max {scale})"),
            "negative": (_line_swatch(_hex(_NEGATIVE), 4), "negative contribution"),
            "read": (_line_swatch(_GREY, 1), "read: a later input reads this output"),
            "faded": (_line_swatch(self.faded_color, 1.2),
                      f"other reads, the {len(self.context)} heaviest (faded)"),
            "node_plain": (_box_swatch(_HEAD_FILL, "#525252"), "head (Q, K, V: its inputs) or MLP"),
            "node_hot": (_box_swatch(_HOT_FILL, "#525252"), "head or MLP on a highlighted term"),
            "port_hot": (_box_swatch(_PORT_FILL, "#525252"), "input a highlighted term enters"),
            "node_faded": (_box_swatch("white", _FADED), "not on a highlighted term"),
            "label_q": None, "label_k": None, "label_v": None,
            "label_contribution": (_text_swatch(self.examples.get("contribution", "")),
                                   "contribution (edge or node)"),
        }
        if comp:
            example = self.examples["composition"]
            which = "/".join(_CHANNEL_TEXT[c] for c in comp)
            entries[f"label_{comp[0]}"] = (_text_swatch(example),
                                           f"{which}-composition score of the read")
        return {k: v for k, v in entries.items() if k in self.used and v is not None}


class _PanelTerm(NamedTuple):
    """What a score-term panel shows: the head, both paths, the name, kind and value."""

    head: str
    query: tuple[str, ...]
    key: tuple[str, ...]
    name: str
    kind: str
    invariant: bool       # softmax-invariant: cancels in the softmax
    value: float | None   # from the graph's ranking, if any


class _Panels:
    """Score terms as small multiples: one panel (a cluster) per term with its query path into
    the head's ``Q`` and its key path into ``K``, panels left to right in the order given and
    levels (sources, layer 0, layer 1, ...) aligned across panels."""

    def __init__(self, G, items, layout, title):
        self.G = G
        self.arch = arch_of(G)
        self.lr = layout == "left-right"
        self.title = title
        values = score_values(G)
        self.terms = []
        for item in items:
            path_edges(G, item)  # checks every node and read: a clear error before drawing
            if isinstance(item, ScoreTerm):
                self.terms.append(_PanelTerm(
                    item.head, tuple(item.query_path), tuple(item.key_path), item.name,
                    item.kind, item.softmax_invariant, values.get((item.head, item.name))))
            else:
                self.terms.append(_PanelTerm(
                    item["head"], tuple(item.path), tuple(item["key_path"]), item.name,
                    item.kind, bool(item.extra.get("softmax_invariant", False)), item.value))

    def _level(self, node: str) -> int:
        """Sources at the bottom (-1), a head or MLP at its stage."""
        data = self.G.nodes[node]
        return -1 if data["kind"] in ("source", "bias") else int(data["stage"])

    def build(self):
        d = _new_diagram(self.lr)
        levels: dict[int, list[str]] = {}
        order = list(enumerate(self.terms))
        for i, term in order[::-1] if self.lr else order:  # left-right: dot stacks them upwards
            self._panel(d, i, term, levels)
        for level, names in sorted(levels.items()):
            with d.subgraph(name=f"level{level}") as s:
                s.attr(rank="same")
                for name in names:
                    s.node(name)
        heads = [f"t{i}_{term.head}" for i, term in enumerate(self.terms)]
        _order(d, heads[::-1] if self.lr else heads)
        legend = {
            "q": (_line_swatch(_QUERY_SIDE, 2.4), "query side: path into the head's Q"),
            "k": (_line_swatch(_KEY_SIDE, 2.4), "key side: path into the head's K"),
            "port": (_box_swatch(_PORT_FILL, "#525252"), "the head's inputs the term enters"),
        }
        if any(term.invariant for term in self.terms):
            legend["inv"] = (_text_swatch("(cancels)"),
                             "constant along a query's row: cancels in the softmax")
        d.graph_attr["label"] = _caption(self.title, legend)
        return d

    def _panel(self, d, i: int, term: _PanelTerm, levels: dict[int, list[str]]) -> None:
        head, query, key, name, kind, invariant, value = term
        p = f"t{i}_"
        lr = self.lr
        what = _COMPOSITION_TEXT.get(kind, kind)
        caption = f"<b>#{i + 1}</b> {html.escape(name)}<br/>{html.escape(what)}"
        if value is not None:
            caption += f", {html.escape(self.G.graph.get('value_label', 'value'))} {_value(value)}"
        if invariant:
            caption += " (cancels)"
        with d.subgraph(name=f"cluster_term{i}") as c:
            c.attr(label=f'<<font point-size="10">{caption}</font>>', id=f"term{i}",
                   style="rounded", color=_LIGHT, labelloc="t" if lr else "b")  # b: top in BT
            for node in dict.fromkeys(query + key):
                kind_of = self.G.nodes[node]["kind"]
                nid = f"term{i}/{node}"
                if kind_of == "head":
                    c.node(p + node, id=nid, shape="plain", label=_head_table(
                        node, fill=_HOT_FILL, border="#525252", font="black", hot_ports="v",
                        lr=lr, svg_id=nid))
                elif kind_of == "mlp":
                    c.node(p + node, label=node, id=nid, shape="box", style="filled",
                           fillcolor=_HOT_FILL, color="#525252")
                else:
                    c.node(p + node, label=_source_label(node, self.arch), id=nid,
                           shape="note" if kind_of == "bias" else "box",
                           style="rounded" if kind_of != "bias" else "", color="#525252",
                           fontsize="9" if kind_of == "bias" else "11")
                levels.setdefault(self._level(node), []).append(p + node)
            nid = f"term{i}/{head}"
            c.node(p + head, id=nid, shape="plain", label=_head_table(
                head, fill=_HOT_FILL, border="#525252", font="black", hot_ports="qk", lr=lr,
                svg_id=nid))
            levels.setdefault(self._level(head), []).append(p + head)
            for side, path, color in (("q", query, _QUERY_SIDE), ("k", key, _KEY_SIDE)):
                into = [self._in(p, n) for n in path[1:]] + [
                    f"{p}{head}:{side}:{'w' if lr else 's'}"]
                for a, b, tail, tip in zip(path, path[1:] + (f"{head}.{side}",),
                                           [self._out(p, n) for n in path], into):
                    reader = f"{b}.v" if self.G.nodes[b]["kind"] == "head" else b  # as in _Drawing
                    c.edge(tail, tip, id=f"term{i}/{a}->{reader}", color=color, penwidth="2.4",
                           **{"class": f"{side}-side"})

    def _out(self, p: str, node: str) -> str:
        """A writer of panel ``p`` as an edge's tail: a head's output cell, else the node."""
        if self.G.nodes[node]["kind"] == "head":
            return f"{p}{node}:out:{'e' if self.lr else 'n'}"
        return p + node

    def _in(self, p: str, node: str) -> str:
        """A reader on a path of panel ``p`` as an edge's head: a head's ``V``, else the node."""
        if self.G.nodes[node]["kind"] == "head":
            return f"{p}{node}:v:{'w' if self.lr else 's'}"
        return p + node
