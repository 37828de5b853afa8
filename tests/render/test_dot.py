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
