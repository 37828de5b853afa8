"""One result protocol, Jupyter display and the tutorial notebook: every result object has
``ranking()``, ``to_records()``, ``top(k)`` and ``_repr_html_``; graphs show SVG diagrams,
expansions LaTeX; docs/tutorial.ipynb runs and its committed outputs match a fresh run.

Second route: the HTML repr holds the result's summary and its ranking's top rows (escaped), and
the graph's SVG the same node ids as the diagram drawn by ``pe.render.diagram``.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from html.parser import HTMLParser
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
    assert html.escape(heading) in shown and "<table" in shown
    assert html.escape(ranking[0].name) in shown
    assert "object at 0x" not in shown and "<pre" not in shown
    # short repr: a line or a few, the summary, no array dumps
    text = repr(obj)
    assert len(text) < 400 and text.count("\n") <= 3 and "array(" not in text
    assert heading in text or isinstance(obj, Ranking)
    # the shown table holds the ranking's first rows, cell for cell (second route: to_records)
    table = _tables(shown)[-1]
    _check_rows_match(table, ranking)


def test_ranking_shows_its_top_rows_and_a_count():
    w = cases.random_weights()
    ranking = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w, metric="frobenius")
    assert len(ranking) > HTML_ROWS
    shown = ranking._repr_html_()
    assert shown.count("<tr") == HTML_ROWS + 1          # header + the first rows
    assert f"showing {HTML_ROWS} of {len(ranking)} rows" in shown
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


# -- the HTML as a reader sees it: parse the tables back -------------------------------------------
class _TableParser(HTMLParser):
    """Every <table> as {"class", "caption", "rows": [[(text, attrs), ...], ...]} (th and td)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._in_caption = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"class": dict(attrs).get("class", ""), "caption": "", "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ["", dict(attrs)]
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append((self._cell[0], self._cell[1]))
            self._cell = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        elif self._in_caption:
            self.tables[-1]["caption"] += data


def _tables(shown: str) -> list[dict]:
    p = _TableParser()
    p.feed(shown)
    return p.tables


def _check_rows_match(table: dict, ranking: Ranking) -> None:
    """Each shown row equals the ranking's record: names exactly, numbers to the 4 digits shown."""
    header = [t for t, _ in table["rows"][0]]
    body = table["rows"][1:]
    records = ranking.to_records()
    assert len(body) == min(HTML_ROWS, len(records))
    for i, (cells, rec) in enumerate(zip(body, records), 1):
        shown = dict(zip(header, (t for t, _ in cells)))
        assert shown["#"] == str(i)
        assert shown["name"] == rec["name"]
        value = shown[ranking.value_label]
        if rec["value"] is None:
            assert value == "—"
        else:
            assert float(value) == pytest.approx(rec["value"], rel=1e-3, abs=1e-12)
        if "share" in shown and rec["share"] is not None:
            assert float(shown["share"].rstrip("%")) / 100 == pytest.approx(rec["share"], rel=1e-2, abs=1e-3)
        if "path" in shown:
            assert shown["path"] == " → ".join(rec["path"])


def test_composition_scores_show_a_heatmap_per_kind_whose_cells_are_the_scores():
    w = cases.random_weights()
    cs = pe.composition_scores(w, n_samples=8)
    L, H = cs.shape[:2]
    maps = [t for t in _tables(cs._repr_html_()) if t["class"] == "pe-heat"]
    assert [t["caption"].split(":")[0] for t in maps] == list(cs.kinds)
    by_name = {r.name: r.value for r in cs.ranking()}          # second route: the ranking's rows
    for kind, t in zip(cs.kinds, maps):
        cols = [c for c, _ in t["rows"][0][1:]]
        assert cols == [f"L{l}H{h}" for l in range(1, L) for h in range(H)]
        for row in t["rows"][1:]:
            earlier = row[0][0]
            l1, h1 = int(earlier[1]), int(earlier[3])
            for col, (text, attrs) in zip(cols, row[1:]):
                l2, h2 = int(col[1]), int(col[3])
                if l1 >= l2:
                    assert attrs["data-value"] == "nan" and text == ""
                    continue
                cell = float(attrs["data-value"])
                assert cell == pytest.approx(float(cs.raw[kind][l1, h1, l2, h2] - cs.null_mean[kind]))
                assert cell == pytest.approx(by_name[f"{earlier} → {col}.{kind[0]}"])
                assert float(text) == pytest.approx(cell, abs=6e-4)


def test_head_scores_show_a_layer_by_head_heatmap_per_statistic():
    w = cases.random_weights()
    hs = pe.detect_heads(w, seq_len=4, n_samples=4)
    maps = [t for t in _tables(hs._repr_html_()) if t["class"] == "pe-heat"]
    assert [t["caption"] for t in maps] == list(hs.kinds)
    for kind, t in zip(hs.kinds, maps):
        L, H = hs.shape
        assert [c for c, _ in t["rows"][0][1:]] == [f"H{h}" for h in range(H)]
        assert [r[0][0] for r in t["rows"][1:]] == [f"L{l}" for l in range(L)]
        for l, row in enumerate(t["rows"][1:]):
            for h, (_, attrs) in enumerate(row[1:]):
                expected = hs[kind][l, h]
                if np.isnan(expected):
                    assert attrs["data-value"] == "nan"
                else:   # second route: the ranking's row of that head
                    assert float(attrs["data-value"]) == pytest.approx(expected)
                    assert hs.ranking(kind)[f"L{l}H{h}"].value == pytest.approx(float(attrs["data-value"]))


def test_shown_text_is_escaped_and_styles_are_scoped():
    r = Ranking([dict(name="<b>x</b>", kind="a&b", depth=0, path=("<i>",), value=1.0)], title="<t>")
    shown = r._repr_html_()
    assert "<b>x</b>" not in shown and "&lt;b&gt;x&lt;/b&gt;" in shown and "&lt;t&gt;" in shown
    assert "<i>" not in shown and "a&amp;b" in shown
    css = re.search(r"<style>(.*)</style>", shown, re.DOTALL).group(1)
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", css) for s in block.split(",")]
    assert selectors and all(s.startswith(".pe-nb") for s in selectors)


def test_head_statistics_leave_out_the_path_column_and_fade_rows_below_baseline():
    w = cases.random_weights()
    hs = pe.detect_heads(w, seq_len=4, n_samples=4)
    t = _tables(hs._repr_html_())[-1]
    header = [c for c, _ in t["rows"][0]]
    assert "path" not in header and "name" in header
    shown = hs._repr_html_()
    below = sum(r.extra["below_baseline"] for r in hs.ranking()[:HTML_ROWS])
    assert shown.count('<tr class="pe-below">') == below


def test_path_graph_repr_is_a_summary_and_without_dot_the_notebook_falls_back_to_it(monkeypatch):
    G = pe.path_graph(pe.Architecture(2, 2, positional="shortformer"))
    text = repr(G)
    assert "object at 0x" not in text and "\n" not in text
    n_heads = sum(1 for _, k in G.nodes(data="kind") if k == "head")
    assert f"{G.number_of_nodes()} nodes" in text and f"{n_heads} head" in text
    assert f"{G.number_of_edges()} reads" in text
    monkeypatch.setenv("PATH", "")                    # no Graphviz `dot`
    assert G._repr_svg_() is None                     # IPython then shows repr(G)


# -- docs/tutorial.ipynb: runs, and its committed outputs are what a fresh run prints -------------
TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def execute_tutorial(path: Path = TUTORIAL):
    """The tutorial executed in a fresh kernel (nbclient, no network), from a scratch directory.

    The kernel is this interpreter (``sys.executable``, by a kernelspec written to the scratch
    directory, the only one searched), with the repository first on ``PYTHONPATH`` in a copy of
    the environment given to it alone. Refresh the committed outputs with
    ``PYTHONPATH=. python tests/test_notebook.py``.
    """
    import os
    import sys
    import tempfile

    import nbformat
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    from traitlets import default

    nb = nbformat.read(path, as_version=4)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "kernels", "pathexpand-test")
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "pathexpand test", "language": "python"}))

        class Manager(AsyncKernelManager):   # searches only the kernelspec written above
            @default("kernel_spec_manager")
            def _only_ours(self):
                return KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)

        work = Path(tmp, "work")
        work.mkdir()
        client = NotebookClient(nb, timeout=600, kernel_name="pathexpand-test", kernel_manager_class=Manager,
                                record_timing=False, resources={"metadata": {"path": str(work)}})
        client.execute(env=env)
    return nb


def _shown(output) -> dict[str, str]:
    """What a reader sees of one output: stream text, text/plain, the text of the HTML tables."""
    if output["output_type"] == "stream":
        return {"stream": output["text"]}
    data = output.get("data", {})
    out = {k: data[k] for k in ("text/plain", "text/latex") if k in data}
    if "text/html" in data:
        text = re.sub(r"<style>.*?</style>", "", data["text/html"], flags=re.DOTALL)
        out["text/html"] = html.unescape(re.sub(r"<[^>]+>", " ", text))
    if "image/svg+xml" in data:
        out["svg"] = "an SVG"
    return out


def _same_text(committed: str, fresh: str) -> bool:
    """Equal but for float noise: the words exactly, the numbers to 1e-3 relative (numbers below
    1e-5 in size, like residual errors, only need to stay below it)."""
    if _NUMBER.split(committed) != _NUMBER.split(fresh):
        return False
    a, b = _NUMBER.findall(committed), _NUMBER.findall(fresh)
    for x, y in zip(a, b):
        x, y = float(x), float(y)
        if abs(x) < 1e-5 and abs(y) < 1e-5:
            continue
        if abs(x - y) > 1e-3 * max(abs(x), abs(y)):
            return False
    return True


def test_same_text_tolerates_float_noise_only():
    assert _same_text("output 3.468, residual error 6.0e-08", "output 3.4681, residual error 2.1e-07")
    assert not _same_text("output 3.468", "output 3.481")
    assert not _same_text("best L1H2 0.504", "best L1H3 0.504")
    assert not _same_text("[0.1, 0.2]", "[0.1, 0.2, 0.3]")


def test_the_notebook_kernel_is_this_interpreter_and_the_environment_is_left_alone(tmp_path):
    import os
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, sys, pathexpand; print(sys.executable); print(os.path.dirname(pathexpand.__file__))")])
    nbformat.write(nb, tmp_path / "k.ipynb")
    before = dict(os.environ)
    out = execute_tutorial(tmp_path / "k.ipynb").cells[0].outputs[0]["text"].split("\n")
    assert os.environ == before                       # PYTHONPATH went to the kernel only
    assert Path(out[0]).resolve() == Path(sys.executable).resolve()
    assert Path(out[1]).resolve() == Path(pe.__file__).parent.resolve()   # this checkout's package


def test_tutorial_runs_and_its_committed_outputs_match_a_fresh_run():
    import nbformat

    assert TUTORIAL.stat().st_size < 300_000
    committed = nbformat.read(TUTORIAL, as_version=4)
    fresh = execute_tutorial()                      # raises CellExecutionError if a cell fails
    code = [(c, f) for c, f in zip(committed.cells, fresh.cells) if c.cell_type == "code"]
    assert len(code) >= 10 and len(committed.cells) == len(fresh.cells)
    for old, new in code:
        assert old.source == new.source
        assert old.outputs, f"committed without outputs: {old.source!r}"
        assert all(o["output_type"] != "error" for o in old.outputs)
        assert len(old.outputs) == len(new.outputs), old.source
        for a, b in zip(old.outputs, new.outputs):
            shown_a, shown_b = _shown(a), _shown(b)
            assert shown_a.keys() == shown_b.keys(), old.source
            for kind in shown_a:
                assert _same_text(shown_a[kind], shown_b[kind]), (old.source, kind, shown_a[kind][:500],
                                                                  shown_b[kind][:500])
    # the story the tutorial tells, read from the committed outputs
    text = "\n".join(v for c, _ in code for o in c.outputs for v in _shown(o).values())
    assert "56 terms; 25 paths per source" in text
    assert "induction circuit L0H1 → L1H2" in text
    assert "residual error below 1e-5: True" in text


def test_heatmaps_too_large_for_a_notebook_are_left_out_and_said_so():
    from pathexpand.render.notebook import MAX_CELLS, Heatmap, result_html

    r = Ranking([dict(name="a", kind="k", depth=0, path=("a",), value=1.0)])
    n = int(MAX_CELLS ** 0.5) + 1
    big = Heatmap("huge", [[0.0] * n] * n, [str(i) for i in range(n)], [str(i) for i in range(n)])
    small = Heatmap("small", [[1.0, 2.0]], ["r"], ["c1", "c2"])
    shown = result_html("s", r, [small, big])
    assert [t["caption"] for t in _tables(shown) if t["class"] == "pe-heat"] == ["small"]
    assert f"heatmaps left out ({n}×{n} cells, over {MAX_CELLS}): huge" in html.unescape(shown)


if __name__ == "__main__":  # refresh the committed outputs
    import nbformat

    nbformat.write(execute_tutorial(), TUTORIAL)
    print(f"wrote {TUTORIAL}")
