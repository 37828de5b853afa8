"""One result protocol, and Jupyter display: every result object has ``ranking()``, ``to_records()``,
``top(k)`` and ``_repr_html_``; graphs show SVG diagrams, expansions LaTeX.

Second route: the HTML repr holds the result's summary and its ranking's top rows (escaped), and
the graph's SVG the same node ids as the diagram drawn by ``pe.render.diagram``.
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
from pathexpand.ranking import HTML_ROWS, Ranking, Result

_spec = importlib.util.spec_from_file_location(
    "attribute_cases", Path(__file__).parent / "numeric" / "attribute_cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = np.random.default_rng(1).integers(0, 11, (2, 8))


def _results(w):
    yield pe.attribute(w, TOKENS, target=3, views=("path", "node", "edge"))
    yield pe.attribute_scores(w, TOKENS[0], head="L1H0", query=7, key=3)
    yield pe.composition_scores(w, kind="k_composition")
    yield pe.order_importance(w, TOKENS)
    yield pe.top_k_paths(w, TOKENS[0], target=3, k=3)
    yield pe.detect_heads(w, seq_len=4, n_samples=4)
    yield pe.detect_heads(w, method="weights")
    yield pe.copying_scores(w)
    yield pe.induction_circuit(w, min_score=0.0, min_z=-1e9)      # thresholds that always find one
    yield pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w)


N_RESULTS = 10


@pytest.mark.parametrize("index", range(N_RESULTS))
def test_every_result_speaks_one_protocol(index):
    w = cases.random_weights()
    obj = list(_results(w))[index]
    assert isinstance(obj, Result)
    ranking = obj.ranking()
    assert isinstance(ranking, Ranking) and len(ranking) > 0
    records = ranking.to_records()
    assert records == obj.to_records()
    assert all(isinstance(r, dict) and isinstance(r["name"], str) and "value" in r for r in records)
    top = obj.top(2)
    assert isinstance(top, Ranking) and len(top) == min(2, len(ranking))
    key = (lambda v: abs(v)) if ranking.by_magnitude else (lambda v: v)
    best = sorted((key(r.value) for r in ranking if np.isfinite(r.value)), reverse=True)[:2]
    assert [key(r.value) for r in top] == pytest.approx(best)
    shown = obj._repr_html_()
    heading = obj.title if isinstance(obj, Ranking) else obj.summary()   # a ranking: its caption
    assert html.escape(heading) in shown and "<table>" in shown
    assert html.escape(ranking[0].name) in shown
    assert "object at 0x" not in shown


def test_ranking_shows_its_top_rows_and_a_count():
    w = cases.random_weights()
    ranking = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w, metric="frobenius")
    assert len(ranking) > HTML_ROWS
    shown = ranking._repr_html_()
    assert shown.count("<tr>") == HTML_ROWS + 1          # header + the first rows
    assert f"{len(ranking) - HTML_ROWS} more rows ({len(ranking)} in all)" in shown
    for row in ranking[:HTML_ROWS]:
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
