"""Jupyter display: every result object shows itself (HTML tables, SVG diagrams, LaTeX).

Second route: the HTML repr must hold the same text as ``str(obj)`` (escaped), and the
graph's SVG the same node ids as the diagram drawn by ``pe.render.diagram``.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe

_spec = importlib.util.spec_from_file_location(
    "attribute_cases", Path(__file__).parent / "numeric" / "attribute_cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = np.random.default_rng(1).integers(0, 11, (2, 8))


def _results(w):
    yield pe.attribute(w, TOKENS, target=3, views=("path", "node", "edge"))
    yield pe.attribute_scores(w, TOKENS[0], head="L1H0", query=7, key=3)
    yield pe.composition_scores(w, kind="k")
    yield pe.order_importance(w, TOKENS)
    yield pe.top_k_paths(w, TOKENS[0], target=3, k=3)
    yield pe.detect_heads(w, seq_len=4, n_samples=4)
    yield pe.detect_heads_from_weights(w)


@pytest.mark.parametrize("index", range(7))
def test_result_objects_show_their_table_as_html(index):
    w = cases.random_weights()
    obj = list(_results(w))[index]
    shown = obj._repr_html_()
    assert shown.startswith("<pre>") and shown.endswith("</pre>")
    assert html.unescape(shown[5:-6]) == str(obj)
    assert "<" not in shown[5:-6].replace("&lt;", "")


def test_ranking_shows_an_html_table_with_every_row():
    w = cases.random_weights()
    ranking = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w, metric="frobenius")
    shown = ranking._repr_html_()
    assert shown.count("<tr>") == len(ranking) + 1          # header + one row per term
    for row in ranking:
        assert html.escape(row.name) in shown


@pytest.mark.needs_graphviz
def test_path_graph_shows_its_diagram_as_svg_and_survives_export():
    G = pe.path_graph(pe.Architecture(2, 2, positional="shortformer"))
    assert isinstance(G, pe.PathGraph)
    svg = G._repr_svg_()
    assert svg.lstrip().startswith(("<?xml", "<svg"))
    drawn = pe.render.diagram(G).svg()
    ids = lambda s: sorted(set(re.findall(r'<g id="([^"]+)"', s)))  # noqa: E731
    assert ids(svg) == ids(drawn)
    assert {"embed", "L0H0", "L1H1"} <= set(ids(svg))
    back = pe.graph.from_json(pe.graph.to_json(G))
    assert isinstance(back, pe.PathGraph)
    assert json.loads(pe.graph.to_json(back)) == json.loads(pe.graph.to_json(G))


def test_expansion_shows_latex():
    exp = pe.expand_logits(pe.Architecture(1, 2))
    shown = exp._repr_latex_()
    assert shown.startswith("$$") and shown.rstrip().endswith("$$")
    assert shown.count(r"\begin{aligned}") == shown.count(r"\end{aligned}") == 1
    assert "W_U" in shown and "W_{OV}^{0,1}" in shown.replace(" ", "")
