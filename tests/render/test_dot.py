"""Circuit diagrams: DOT source against golden files, and SVG/PNG/PDF through the real `dot`.

Golden files live in ``tests/render/golden/*.dot``. After an intended change to the drawing,
regenerate them with

    PATHEXPAND_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/render/test_dot.py

then look at the diff (and at the pictures: ``dot -Tsvg tests/render/golden/X.dot``) before
committing. The cases use hand-set magnitudes, so no numeric code is involved.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.numeric.composition import CompositionScores
from pathexpand.render.dot import FORMATS, diagram, pdf, png, svg, write

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("PATHEXPAND_REGEN_GOLDEN") == "1"
SVG_NS = {"svg": "http://www.w3.org/2000/svg"}
ARCH = pe.Architecture


# cases ------------------------------------------------------------------------------------------
def skip_trigram_1l():
    """The paper's 1-layer picture: one head's QK circuit (query and key read the tokens)
    and its OV circuit (the head copies to the logits)."""
    arch = ARCH(1, 2, positional="shortformer")
    ov = pe.expand_logits(arch)["L0H1"]
    qk = pe.expand_scores(arch, "L0H1")["q:direct · k:direct"]
    return diagram([ov, qk], title="skip-trigram circuit of L0H1")


def induction_2l():
    """The 2-layer induction circuit: L0H0 (previous token) → key of L1H1 (K-composition)."""
    arch = ARCH(2, 2, positional="shortformer")
    kinds = ("q_composition", "k_composition", "v_composition")
    scores = {k: np.zeros((2, 2, 2, 2)) for k in kinds}
    scores["k_composition"][0, 0, 1, 1] = 0.61
    scores["k_composition"][0, 1, 1, 1] = 0.12
    scores["q_composition"][0, 0, 1, 1] = 0.08
    scores["v_composition"][0, 1, 1, 0] = 0.2
    mask = (np.arange(2)[:, None, None, None] < np.arange(2)[None, None, :, None]) & np.ones((2, 2, 2, 2), bool)
    nan = {k: float("nan") for k in kinds}
    G = pe.path_graph(arch, ranking=CompositionScores(kinds, scores, nan, dict(nan), baseline=None, mask=mask))
    k_term = pe.expand_scores(arch, "L1H1")["q:direct · k:L0H0"]
    return diagram(G, highlight=[k_term, ("embed", "L1H1")], max_edges=3,
                   title="induction circuit: L0H0 → L1H1 (K-composition)")


def attribution_lr():
    """Signed contributions on an MLP model, left to right, top paths highlighted."""
    arch = ARCH(1, 1, mlp=True, positional=None)
    G = pe.path_graph(arch)
    values = {("embed", "L0H0.v", "v"): 2.0, ("embed", "MLP0", "in"): -1.0,
              ("L0H0", "MLP0", "in"): 0.5, ("L0H0", "logits", "out"): 1.5,
              ("MLP0", "logits", "out"): -0.5, ("embed", "logits", "out"): 0.25}
    for e, v in values.items():
        G.edges[e]["contribution"] = v
        G.edges[e]["weight"] = abs(v)
    G.nodes["L0H0"]["contribution"] = 1.5
    G.nodes["MLP0"]["contribution"] = -0.5
    return diagram(G, top=2, layout="left-right", title="top paths", max_edges=6)


CASES = {"skip_trigram_1l": skip_trigram_1l, "induction_2l": induction_2l,
         "attribution_lr": attribution_lr}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dot_source_matches_golden(name):
    source = CASES[name]().source
    path = GOLDEN / f"{name}.dot"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(source, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; regenerate with PATHEXPAND_REGEN_GOLDEN=1"
    assert source == path.read_text(encoding="utf-8")


# structure of the DOT (no `dot` needed) -----------------------------------------------------------
def _edge_lines(d):
    return [line.strip() for line in d.source.splitlines() if "->" in line and "id=" in line]


def _line(d, edge_id):
    lines = [ln for ln in _edge_lines(d) if f'id="{edge_id}"' in ln]
    assert len(lines) == 1, f"edge {edge_id} not drawn once: {lines}"
    return lines[0]


def test_highlighted_edges_and_faded_rest():
    d = induction_2l()
    k = _line(d, "L0H0->L1H1.k")
    assert "class=highlight" in k and 'label="K 0.61"' in k and "L1H1:k:s" in k
    assert "L0H0:out:n" in k
    v = _line(d, "embed->L0H0.v")
    assert "class=highlight" in v and 'color="#d95f02"' in v  # no magnitude: highlight colour
    # the three heaviest other reads are drawn, faded (alpha), their score in the tooltip only
    faded = [ln for ln in _edge_lines(d) if "weight=0" in ln]
    assert len(faded) == 3 and not any("highlight" in ln for ln in faded)
    assert all('59"' in ln.split("color=")[1].split()[0] for ln in faded)
    assert {ln.split('id="')[1].split('"')[0] for ln in faded} == {
        "L0H1->L1H0.v", "L0H1->L1H1.k", "L0H0->L1H1.q"}
    assert any("V-composition 0.200" in ln for ln in faded)
    assert not any("label=" in ln for ln in faded)
    # nodes on the highlighted terms are filled, the others faded
    table = '[label=<<table border="0" cellborder="1" cellspacing="0" cellpadding="3" '
    assert f'L1H1 {table}color="#525252" bgcolor="#fdd49e">' in d.source
    assert f'L1H0 {table}color="#bdbdbd" bgcolor="white">' in d.source


def test_width_and_colour_follow_magnitude():
    d = attribution_lr()
    strong = _line(d, "embed->L0H0.v")   # |2.0|, the largest: full blue, widest
    weak = _line(d, "embed->logits")     # |0.25|
    negative = _line(d, "embed->MLP0")   # −1.0: red
    width = {ln: float(ln.split("penwidth=")[1].split()[0]) for ln in (strong, weak, negative)}
    assert width[strong] == pytest.approx(5.0) and width[weak] < width[negative] < width[strong]
    assert 'color="#2166ac"' in strong
    assert '#b2182b' not in negative and "color=\"#" in negative
    red = negative.split('color="')[1][:7]
    assert int(red[1:3], 16) > int(red[5:7], 16)  # more red than blue
    assert "rankdir=LR" in d.source and "L0H0:v:w" in strong


def test_diagram_of_a_term_an_expansion_and_weights():
    arch = ARCH(2, 1, positional=None)
    term = pe.expand_logits(arch)["L1H0∘L0H0"]
    d = diagram(term)
    hot = [ln for ln in _edge_lines(d) if "class=highlight" in ln]
    assert [ln.split('id="')[1].split('"')[0] for ln in hot] == [
        "embed->L0H0.v", "L0H0->L1H0.v", "L1H0->logits"]
    assert '<font point-size="13">term L1H0∘L0H0</font>' in d.source
    whole = diagram(pe.expand_logits(arch, max_depth=1))
    ids = {ln.split('id="')[1].split('"')[0] for ln in _edge_lines(whole) if "highlight" in ln}
    assert ids == {"embed->logits", "embed->L0H0.v", "L0H0->logits", "embed->L1H0.v",
                   "L1H0->logits"}
    exp = pe.expand_scores(arch, "L1H0")
    scores = diagram(exp)   # 4 score terms: small multiples, one panel per term
    ids = {ln.split('id="')[1].split('"')[0] for ln in _edge_lines(scores)}
    assert scores.source.count("subgraph cluster_term") == len(exp) == 4
    assert {i.split("/", 1)[1] for i in ids} == {
        "embed->L1H0.q", "embed->L1H0.k", "embed->L0H0.v", "L0H0->L1H0.q", "L0H0->L1H0.k"}
    assert "term3/L0H0->L1H0.k" in ids and "term3/L0H0->L1H0.q" in ids  # q:L0H0 · k:L0H0
    plain = diagram(arch)  # no highlight, few reads: every read drawn, nothing faded
    assert all("59\"" not in ln for ln in _edge_lines(plain))


def test_max_nodes_keeps_the_highlighted_heads():
    arch = ARCH(3, 6, positional=None)
    G = pe.path_graph(arch)
    d = diagram(G, highlight=["L2H5∘L0H1"], max_nodes=4)
    assert "(showing 2 of 18 heads/MLPs)" in d.source
    assert "\tL0H1 [" in d.source and "\tL2H5 [" in d.source and "\tL1H0 [" not in d.source
    with pytest.raises(pe.PathexpandError, match="max_nodes=1"):
        diagram(G, highlight=["L2H5∘L0H1"], max_nodes=1)


def test_bad_input_is_refused():
    with pytest.raises(pe.PathexpandError, match="layout must be one of layers, left-right"):
        diagram(ARCH(1, 1), layout="circle")
    with pytest.raises(pe.PathexpandError, match="max_edges must be an int >= 0"):
        diagram(ARCH(1, 1), max_edges=-1)
    with pytest.raises(pe.PathexpandError, match="diagram takes a path graph.*got dict"):
        diagram({})
    with pytest.raises(pe.PathexpandError, match="no magnitudes"):
        diagram(ARCH(1, 1), top=2)
    with pytest.raises(pe.PathexpandError, match="suffix '.jpg'"):
        write(ARCH(1, 1), "out.jpg")


def test_missing_dot_says_install_graphviz(monkeypatch, tmp_path):
    d = diagram(ARCH(1, 1))
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `dot` anywhere
    with pytest.raises(pe.MissingDependencyError, match="install Graphviz"):
        d.svg()
    target = tmp_path / "c.svg"
    with pytest.raises(pe.MissingDependencyError):
        write(d, target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    write(d, tmp_path / "c.dot")           # the DOT source needs no `dot`
    assert (tmp_path / "c.dot").read_text() == d.source


def test_is_a_graphviz_digraph():
    import graphviz
    d = diagram(ARCH(1, 1))
    assert isinstance(d, graphviz.Digraph)
    assert d.source.startswith("digraph circuit {")


# with the real `dot` ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def induction_svg():
    return ET.fromstring(induction_2l().svg().encode())


def _groups(root):
    return {g.get("id"): g for g in root.iter(f"{{{SVG_NS['svg']}}}g") if g.get("id")}


@pytest.mark.needs_graphviz
def test_svg_has_stable_ids(induction_svg):
    groups = _groups(induction_svg)
    for node in ("embed", "pos", "L0H0", "L0H1", "L1H0", "L1H1", "logits", "resid0", "resid2"):
        assert groups[node].get("class") == "node"
    for port in ("a_L1H1:q", "a_L1H1:k", "a_L1H1:v", "a_L0H0:v"):
        assert port in groups
    for edge in ("L0H0->L1H1.k", "embed->L1H1.q", "embed->L0H0.v", "L1H1->logits",
                 "resid1->resid2"):
        assert "edge" in groups[edge].get("class")


@pytest.mark.needs_graphviz
def test_svg_styles_highlighted_edges(induction_svg):
    groups = _groups(induction_svg)
    hot = groups["L0H0->L1H1.k"]
    assert hot.get("class") == "edge highlight"
    path = next(hot.iter(f"{{{SVG_NS['svg']}}}path"))
    assert path.get("stroke") == "#54278f"          # the largest weight: full colour
    assert float(path.get("stroke-width")) == pytest.approx(5.0)
    label = "".join(t.text for t in hot.iter(f"{{{SVG_NS['svg']}}}text"))
    assert label == "K 0.61"
    text = next(hot.iter(f"{{{SVG_NS['svg']}}}text"))
    assert text.get("fill") == "#54278f"            # the label in its edge's colour
    faded = next(groups["L0H1->L1H0.v"].iter(f"{{{SVG_NS['svg']}}}path"))
    assert float(faded.get("stroke-opacity")) < 0.5
    plain = next(groups["embed->L1H1.v"].iter(f"{{{SVG_NS['svg']}}}path"))
    assert plain.get("stroke") == "#d95f02"
    assert float(plain.get("stroke-width")) == pytest.approx(2.4)


@pytest.mark.needs_graphviz
def test_formats_and_files(tmp_path):
    d = skip_trigram_1l()
    assert d.png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d.pdf()[:5] == b"%PDF-"
    assert d._repr_svg_() == d.svg()
    assert svg(d) == d.svg()
    assert png(ARCH(1, 1))[:4] == b"\x89PNG" and pdf(ARCH(1, 1))[:4] == b"%PDF"
    for suffix in FORMATS:
        out = write(d, tmp_path / f"c{suffix}")
        assert out.stat().st_size > 100
    ET.fromstring((tmp_path / "c.svg").read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"c{s}" for s in FORMATS)


def test_term_and_expansion_diagram_methods_match_render_diagram():
    """`term.diagram()`, `score_term.diagram()` and `expansion.diagram()` are the same
    diagrams as `pe.render.diagram(obj)`, and show the term's own nodes."""
    arch = pe.Architecture(2, 2)
    exp = pe.expand_logits(arch)
    term = exp["L1H0∘L0H1"]
    assert term.diagram().source == pe.render.diagram(term).source
    assert "L0H1" in term.diagram().source and "L1H0" in term.diagram().source
    assert exp.diagram().source == pe.render.diagram(exp).source
    score = next(t for t in pe.expand_scores(arch, head="L1H0") if t.kind == "k_composition")
    assert score.diagram().source == pe.render.diagram(score).source


# layout, legend and print output, measured on what `dot` lays out ---------------------------------
def _layout(d) -> dict:
    """`dot -Tjson` of a diagram: node centres and edge splines in points, y upwards."""
    import json
    return json.loads(d.pipe(format="json"))


def _centres(layout) -> dict[str, tuple[float, float]]:
    return {o["name"]: tuple(map(float, o["pos"].split(","))) for o in layout["objects"]
            if "pos" in o}


def _heads_by_layer(names):
    out = {}
    for n in names:
        node = pe.names.parse_node(n) if n.startswith("L") and "H" in n and "." not in n else None
        if node is not None and node.kind == "head":
            out.setdefault(node.layer, []).append((node.head, n))
    return out


ORDER_CASES = [  # highlights that used to pull a head out of its place in the layer
    ("L1H3∘L0H2", "layers"), ("L1H0∘L0H3", "layers"), ("L1H1∘L0H0", "left-right"),
]


@pytest.mark.needs_graphviz
@pytest.mark.parametrize("term, layout", ORDER_CASES)
def test_heads_keep_their_order_within_a_layer(term, layout):
    """L0H0, L0H1, ... left to right (top to bottom when left-right) whatever is highlighted:
    the x (or y) order of the head nodes in `dot -Tjson` is the head order."""
    arch = ARCH(2, 4, positional="shortformer")
    exp = pe.expand_logits(arch)
    k_term = pe.expand_scores(arch, "L1H2")["q:direct · k:L0H1"]
    for highlight in ([exp[term]], [exp[term], k_term]):
        centres = _centres(_layout(diagram(arch, highlight=highlight, layout=layout,
                                           max_edges=4)))
        for layer, heads in _heads_by_layer(centres).items():
            names = [n for _, n in sorted(heads)]
            assert len(names) == 4
            if layout == "layers":
                coords = [centres[n][0] for n in names]
                assert coords == sorted(coords), (layer, names, coords)
            else:   # y grows upwards in Graphviz: top to bottom is decreasing y
                coords = [centres[n][1] for n in names]
                assert coords == sorted(coords, reverse=True), (layer, names, coords)


def test_a_parallel_mlp_sits_after_its_heads():
    arch = ARCH(2, 2, mlp=True, parallel_attn_mlp=True, positional=None)
    src = diagram(arch, highlight=["MLP1∘L0H1"]).source
    assert "L0H0 -> L0H1 [style=invis]" in src and "L0H1 -> MLP0 [style=invis]" in src


def _bezier(points, n=24):
    out = []
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = (np.array(p) for p in points[i:i + 4])
        for t in np.linspace(0, 1, n):
            out.append((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t * t * p2
                       + t ** 3 * p3)
    return np.array(out)


def _splines(layout):
    out = {}
    for e in layout["edges"]:
        if e.get("style") == "invis" or "id" not in e:
            continue
        pts = [tuple(map(float, p.split(","))) for p in e["pos"].split()
               if not p.startswith(("e,", "s,"))]
        out[e["id"]] = _bezier(pts)
    return out


def many_labels():
    """Signed contributions on nine reads of a 2-layer, 3-head model, the top 4 paths drawn."""
    arch = ARCH(2, 3, positional=None)
    G = pe.path_graph(arch)
    values = {("embed", "L0H0.v", "v"): 1.2, ("embed", "L0H2.v", "v"): -0.7,
              ("L0H0", "L1H1.v", "v"): 0.9, ("L0H2", "L1H1.v", "v"): -0.4,
              ("embed", "L1H2.v", "v"): 0.6, ("L1H1", "logits", "out"): 1.1,
              ("L1H2", "logits", "out"): 0.6, ("embed", "logits", "out"): 0.3,
              ("L0H0", "logits", "out"): -0.5}
    for e, v in values.items():
        G.edges[e]["contribution"] = v
        G.edges[e]["weight"] = abs(v)
    return diagram(G, highlight=[("embed", "L0H0", "L1H1"), ("embed", "L0H2", "L1H1"),
                                 ("embed", "L1H2"), ("embed", "L0H0")], title="contributions")


@pytest.mark.needs_graphviz
@pytest.mark.parametrize("make", [induction_2l, attribution_lr, many_labels])
def test_labels_sit_on_their_edges(make):
    """Each edge label touches its own edge (the gap from the label's box to the drawn curve is
    under 4 pt) and no other labelled edge runs closer to the label's centre."""
    layout = _layout(make())
    splines = _splines(layout)
    labelled = [e for e in layout["edges"] if "lp" in e]
    assert labelled
    for e in labelled:
        centre = np.array(list(map(float, e["lp"].split(","))))
        width = next(op["width"] for op in e["_ldraw_"] if op["op"] == "T")
        own = np.min(np.linalg.norm(splines[e["id"]] - centre, axis=1))
        assert own - width / 2 < 4, (e["id"], e["label"], own, width)
        others = [o["id"] for o in labelled if o["id"] != e["id"]]
        if others:
            nearest = min(np.min(np.linalg.norm(splines[i] - centre, axis=1)) for i in others)
            assert own < nearest, (e["id"], own, nearest)


def _legend(d) -> list[str]:
    import re
    table = d.source.split('<table id="legend"', 1)
    if len(table) == 1:
        return []
    return re.findall(r'<font point-size="9">([^<]*)</font></td>', table[1])


def test_the_legend_explains_what_is_drawn_and_nothing_else():
    ind = _legend(induction_2l())
    assert "read on a highlighted term" in ind                         # orange, no magnitude
    assert "highlighted read; width ∝ composition score (max 0.61)" in ind   # purple
    assert "other reads, the 3 heaviest (faded)" in ind                # faded lavender
    assert "K-composition score of the read" in ind                    # the "K 0.61" label
    assert "head or MLP on a highlighted term" in ind and "not on a highlighted term" in ind
    assert "input a highlighted term enters" in ind
    assert not any("contribution" in t or "bias" in t for t in ind)    # not drawn here
    attribution = _legend(attribution_lr())
    assert "positive contribution; width ∝ |value| (max 2)" in attribution
    assert "negative contribution" in attribution
    assert not any("composition score" in t or "read on a highlighted" in t for t in attribution)
    plain = _legend(diagram(ARCH(1, 2, positional=None)))   # nothing highlighted
    assert "head (Q, K, V: its inputs) or MLP" in plain
    assert "read: a later input reads this output" in plain
    assert not any("highlighted" in t or "faded" in t for t in plain)
    assert "other reads" not in " ".join(_legend(diagram(ARCH(2, 2), highlight=["L1H0∘L0H1"])))
    biases = _legend(diagram(ARCH(1, 1, biases=True, positional=None), highlight=["L0.b_O"]))
    assert "bias added to the stream" in biases


def test_every_drawn_colour_has_a_legend_entry():
    """Colour of each drawn path edge → the legend entry that explains it."""
    for make in (induction_2l, attribution_lr, many_labels, skip_trigram_1l):
        d = make()
        legend = " ".join(_legend(d))
        for line in _edge_lines(d):
            if line.split('id="')[1].startswith(("resid", "embed->resid", "pos->resid")) or \
                    "->resid" in line.split('id="')[1].split('"')[0]:
                continue
            color = line.split('color="')[1].split('"')[0]
            if len(color) == 9:
                assert "(faded)" in legend
            elif color == "#d95f02":
                assert "read on a highlighted term" in legend
            elif "contribution" in line:
                assert ("positive contribution" if "contribution +" in line
                        else "negative contribution") in legend
            else:
                assert "width ∝" in legend, (line, legend)


def test_no_faded_reads_unless_asked():
    arch = ARCH(2, 4)
    G = pe.path_graph(arch)
    for e in G.edges(keys=True):
        G.edges[e]["weight"] = 1.0
    default = diagram(G, highlight=["L1H0∘L0H1"])
    assert not [ln for ln in _edge_lines(default) if "weight=0" in ln]
    asked = diagram(G, highlight=["L1H0∘L0H1"], max_edges=5)
    assert len([ln for ln in _edge_lines(asked) if "weight=0" in ln]) == 5


# score terms: small multiples ---------------------------------------------------------------
def score_panels(layout="layers"):
    arch = ARCH(2, 2, positional="shortformer")
    exp = pe.expand_scores(arch, "L1H1")
    return diagram([exp["q:direct · k:L0H0"], exp["q:pos · k:pos"], exp["q:L0H1 · k:L0H0"]],
                   title="three score terms of L1H1", layout=layout)


@pytest.mark.needs_graphviz
def test_score_terms_are_small_multiples_in_order_with_aligned_levels():
    d = score_panels()
    centres = _centres(_layout(d))
    heads = [centres[f"t{i}_L1H1"] for i in range(3)]
    assert [x for x, _ in heads] == sorted(x for x, _ in heads)       # panels in the given order
    assert len({y for _, y in heads}) == 1                            # the head at one level
    sources = [centres[n] for n in ("t0_embed", "t1_pos", "t2_embed")]
    assert len({y for _, y in sources}) == 1                          # sources at one level
    assert centres["t2_L0H1"][1] == centres["t0_L0H0"][1]             # layer 0 at one level
    assert sources[0][1] < centres["t0_L0H0"][1] < heads[0][1]        # bottom to top
    src = d.source
    assert src.count("subgraph cluster_term") == 3
    assert "#1</b> q:direct · k:L0H0<br/>K-composition" in src
    assert "#3</b> q:L0H1 · k:L0H0<br/>Q&amp;K-composition" in src
    legend = _legend(d)
    assert legend == ["query side: path into the head's Q", "key side: path into the head's K",
                      "the head's inputs the term enters"]
    lr = _centres(_layout(score_panels(layout="left-right")))   # panels top to bottom
    ys = [lr[f"t{i}_L1H1"][1] for i in range(3)]
    assert ys == sorted(ys, reverse=True)


def test_score_panels_carry_the_ranked_values():
    """``--scores H --top k``: each panel's caption has the term's value from the ranking."""
    arch = ARCH(2, 2, positional=None)
    exp = pe.expand_scores(arch, "L1H0")
    values = {"q:direct · k:direct": 10.0, "q:L0H1 · k:direct": 20.0, "q:direct · k:L0H0": 30.0}
    rows = [pe.ranking.Row(t.name, t.kind, t.depth, tuple(t.query_path), values.get(t.name, 1.0),
                           extra={"head": "L1H0", "key_path": tuple(t.key_path),
                                  "softmax_invariant": t.softmax_invariant})
            for t in exp if not t.is_remainder]
    ranking = pe.ranking.Ranking(rows, value_label="frobenius", of="score_terms")
    G = pe.path_graph(arch, ranking=ranking)
    assert pe.graph.score_values(G)[("L1H0", "q:direct · k:L0H0")] == 30.0
    src = diagram(G, highlight=[exp[n] for n in values]).source
    assert "direct, frobenius 10" in src and "K-composition, frobenius 30" in src
    assert "Q-composition, frobenius 20" in src
    ranked = [r for r in rows if r.name in values]         # ranking rows draw the same panels
    assert diagram(G, highlight=ranked).source == src


# files a paper uses ----------------------------------------------------------------------------
@pytest.mark.needs_graphviz
@pytest.mark.parametrize("make", [induction_2l, score_panels])
def test_svg_is_xml_with_a_viewbox(make):
    root = ET.fromstring(make().svg().encode())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    box = [float(x) for x in root.get("viewBox").split()]
    assert len(box) == 4 and box[2] > 100 and box[3] > 100
    assert root.get("width").endswith("pt") and root.get("height").endswith("pt")


@pytest.mark.needs_graphviz
@pytest.mark.needs_latex
def test_pdf_compiles_in_a_latex_article(tmp_path):
    """``dot -Tpdf`` output, included with \\includegraphics in a minimal article, compiles
    with pdflatex, as a paper would use it."""
    import shutil
    import subprocess

    induction_2l().pdf(tmp_path / "circuit.pdf")
    score_panels().pdf(tmp_path / "scores.pdf")
    doc = ("\\documentclass{article}\n\\usepackage{graphicx}\n\\begin{document}\n"
           "\\begin{figure}\\centering\\includegraphics[width=\\linewidth]{circuit.pdf}"
           "\\caption{Induction circuit.}\\end{figure}\n"
           "\\begin{figure}\\centering\\includegraphics[width=\\linewidth]{scores.pdf}"
           "\\caption{Score terms.}\\end{figure}\n\\end{document}\n")
    (tmp_path / "paper.tex").write_text(doc, encoding="utf-8")
    proc = subprocess.run(
        [shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and not errors, (errors, proc.stdout[-2000:])
    log = (tmp_path / "paper.log").read_text(errors="replace").replace("\n", "")  # TeX wraps at 79
    assert "<circuit.pdf" in log and "<scores.pdf" in log   # both figures placed
    assert "Output written on paper.pdf (" in log and "Overfull" not in log
    assert (tmp_path / "paper.pdf").stat().st_size > 5000
