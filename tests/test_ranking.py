"""``Ranking``: the generic table of ranked rows (terms, heads, pairs, attributions)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pathexpand.errors import PathexpandError
from pathexpand.ranking import HTML_ROWS, Ranking, Row


def rows():
    return [
        dict(name="direct", kind="direct", depth=0, path=("embed",), value=1.0),
        dict(name="L0H0", kind="head", depth=1, path=("embed", "L0H0"), value=-4.0, z=2.5),
        dict(name="L1H0∘L0H0", kind="virtual", depth=2, path=("embed", "L0H0", "L1H0"), value=3.0, z=0.5),
        dict(name="q:direct · k:L0H0", kind="k_composition", depth=1, path=("embed",), value=2.0,
             key_path=("embed", "L0H0")),
        dict(name="remainder", kind="remainder", depth=3, path=("remainder",), value=math.nan),
    ]


def test_shares_default_to_sum_of_abs_and_can_be_given():
    r = Ranking(rows())
    assert r.total == 10.0
    assert [row.share for row in r][:4] == [0.1, -0.4, 0.3, 0.2]
    assert math.isnan(r["remainder"].share)
    r2 = Ranking(rows(), total=2.0)  # e.g. an attribution's target value
    assert r2["L0H0"].share == -2.0
    r3 = Ranking(rows(), shares=False)
    assert all(math.isnan(row.share) for row in r3) and "share" not in str(r3)


def test_sequence_and_indexing():
    r = Ranking(rows())
    assert len(r) == 5 and r[0].name == "direct" and r[-1].name == "remainder"
    assert isinstance(r[1:3], Ranking) and r[1:3].names == ["L0H0", "L1H0∘L0H0"]
    assert r["L0H0"].value == -4.0 and "L0H0" in r and "L9H9" not in r
    with pytest.raises(KeyError, match="no row named 'L9H9'"):
        r["L9H9"]
    with pytest.raises(PathexpandError, match="int, slice or row name"):
        r[1.5]
    assert r["L0H0"]["z"] == 2.5 and r["L0H0"]["kind"] == "head"
    with pytest.raises(KeyError, match="columns are"):
        r["L0H0"]["nope"]


def test_sort_top_and_nan_last():
    r = Ranking(rows())
    assert r.sort_by("value").names == ["L1H0∘L0H0", "q:direct · k:L0H0", "direct", "L0H0", "remainder"]
    assert r.sort_by("value", absolute=True).names[0] == "L0H0"
    assert r.sort_by("value", descending=False).names == ["L0H0", "direct", "q:direct · k:L0H0",
                                                          "L1H0∘L0H0", "remainder"]
    assert r.sort_by("name", descending=False).names[0] == "L0H0"
    assert r.sort_by("z").names[:2] == ["L0H0", "L1H0∘L0H0"]  # rows without z go last
    assert r.top(2).names == ["L1H0∘L0H0", "q:direct · k:L0H0"]  # largest value
    signed = Ranking(rows(), by_magnitude=True)                   # contributions: largest |value|
    assert signed.top(2).names == ["L0H0", "L1H0∘L0H0"]
    assert r.top(0).names == [] and len(r.top(99)) == 5
    with pytest.raises(PathexpandError, match="k must be an int >= 0"):
        r.top(-1)
    with pytest.raises(PathexpandError, match="cannot sort by 'nope'"):
        r.sort_by("nope")
    assert r.sort_by("value").total == r.total  # shares stay shares of the whole


def test_filter():
    r = Ranking(rows())
    assert r.filter(kind="head").names == ["L0H0"]
    assert r.filter(kind=("head", "virtual")).names == ["L0H0", "L1H0∘L0H0"]
    assert r.filter(through="L0H0").names == ["L0H0", "L1H0∘L0H0", "q:direct · k:L0H0"]  # key path too
    assert r.filter(through=("L0H0", "L1H0")).names == ["L1H0∘L0H0"]
    assert r.filter(depth=1).names == ["L0H0", "q:direct · k:L0H0"]
    assert r.filter(source="remainder").names == ["remainder"]
    assert r.filter(where=lambda row: row.value > 1.5).names == ["L1H0∘L0H0", "q:direct · k:L0H0"]
    assert r.filter(kind="head")["L0H0"].share == -0.4  # share of the unfiltered total


def test_records_json_csv(tmp_path):
    r = Ranking(rows(), title="t", notes=["a note"])
    recs = r.to_records()
    assert r.columns == ("name", "kind", "depth", "path", "value", "share", "z", "key_path")
    assert recs[1] == {"name": "L0H0", "kind": "head", "depth": 1, "path": ["embed", "L0H0"],
                       "value": -4.0, "share": -0.4, "z": 2.5, "key_path": None}
    assert recs[4]["value"] is None  # NaN → null
    doc = json.loads(r.to_json())
    assert doc["title"] == "t" and doc["notes"] == ["a note"] and doc["rows"] == recs
    out = tmp_path / "r.json"
    r.to_json(out)
    assert json.loads(out.read_text())["total"] == 10.0
    text = r.to_csv()
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(r.columns)
    assert table[3][3] == "embed → L0H0 → L1H0" and float(table[3][4]) == 3.0
    assert table[5][4] == ""  # NaN value
    r.to_csv(tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text(encoding="utf-8") == text


def test_text_rich_and_html():
    r = Ranking(rows(), title="My <ranking>", value_label="frobenius", notes=["n"])
    s = str(r)
    lines = s.splitlines()
    assert lines[0] == "My <ranking>" and "frobenius" in lines[1] and lines[-1] == "note: n"
    header, rule = lines[1], lines[2]
    assert len(rule.split()) == len(header.split())  # one rule segment per column
    assert "embed → L0H0 → L1H0" in s and "-40.0%" in s and "—" in s
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(r)
    assert "L1H0∘L0H0" in console.export_text()
    html = r._repr_html_()
    assert "&lt;ranking&gt;" in html and html.count("<tr>") == 6
    assert repr(r).startswith("Ranking(5 rows: direct, L0H0, L1H0∘L0H0, ...")


def test_rows_and_errors():
    with pytest.raises(PathexpandError, match=r"missing \['value'\]"):
        Ranking([dict(name="a", kind="k", depth=0, path=())])
    row = Row("a", "k", 0, ["x"], 1)
    assert row.path == ("x",) and isinstance(row.value, float)
    with pytest.raises(TypeError):
        row.extra["new"] = 1  # read-only
    assert Ranking([row]) == Ranking([row]) and Ranking([]).total == 0
    assert math.isnan(Ranking([dict(name="z", kind="k", depth=0, path=(), value=0.0)])[0].share)


def test_path_in_name_is_true_only_when_every_name_spells_its_path():
    def one(name, path):
        return Ranking([dict(name=name, kind="k", depth=len(path) - 1, path=path, value=1.0)])

    assert one("L1H2∘L0H0", ("embed", "L0H0", "L1H2")).path_in_name()
    assert one("pos:L1H0", ("pos", "L1H0")).path_in_name()
    assert one("direct", ("embed",)).path_in_name()
    assert one("L0H1", ("L0H1",)).path_in_name()                       # a head statistic
    assert one("L0H1 → L1H2.k", ("L0H1", "L1H2")).path_in_name()       # a composition pair
    assert not one("L1H2∘L0H0", ("embed", "L0H1", "L1H2")).path_in_name()
    assert not one("q:direct · k:L0H1", ("embed",)).path_in_name()     # a score term: query side only
    assert not one("my row", ("embed", "L0H0")).path_in_name()


# -- one table, three printers: plain text, rich and the notebook's HTML show the same cells ---------
class _HtmlCells(HTMLParser):
    """The ranking table of a notebook display: rows of (text, right-aligned) cells."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ["", "pe-num" in (dict(attrs).get("class") or "")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data


def _html_table(r: Ranking):
    p = _HtmlCells()
    p.feed(r._repr_html_())
    return [[t for t, _ in row] for row in p.rows], [right for _, right in p.rows[0]]


def _text_table(r: Ranking):
    """``str(r)`` read back by column: the rule line of dashes gives each column's span."""
    lines = str(r).splitlines()
    at = next(i for i, s in enumerate(lines) if re.fullmatch(r"-+( +-+)*", s))
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[at])]
    grid = [lines[at - 1]] + lines[at + 1:at + 1 + len(r)]
    raw = [[s.ljust(spans[-1][1])[a:b] for a, b in spans] for s in grid]
    right = [any(row[j].strip() and row[j] != row[j].lstrip() for row in raw) for j in range(len(spans))]
    return [[c.strip() for c in row] for row in raw], right


def _rich_table(r: Ranking):
    from rich.console import Console

    table = r.rich_table(width=400)
    console = Console(record=True, width=400)
    console.print(table)
    lines = [s for s in console.export_text().splitlines() if "│" in s or "┃" in s]
    rows = [[c.strip() for c in re.split("[│┃]", s)[1:-1]] for s in lines]
    return rows, [c.justify == "right" for c in table.columns]


def _printed_rankings():
    import importlib.util

    import numpy as np

    import pathexpand as pe

    spec = importlib.util.spec_from_file_location("attribute_cases",
                                                  Path(__file__).parent / "numeric" / "attribute_cases.py")
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    w = cases.random_weights()
    tokens = np.random.default_rng(1).integers(0, 11, (2, 8))
    hand = [dict(d, seen=i % 2 == 0) for i, d in enumerate(rows())]     # NaN value, a bool column
    return {
        "hand": Ranking(hand, title="t", notes=["n"]),
        "attribution": pe.attribute(w, tokens, target=3).ranking(),
        "composition": pe.composition_scores(w, n_samples=8).ranking(),
        "copying": pe.copying_scores(w).ranking(),
        "heads": pe.detect_heads(w, seq_len=4, n_samples=4).ranking(),
    }


@pytest.fixture(scope="module")
def printed():
    return _printed_rankings()


@pytest.mark.parametrize("which", ["hand", "attribution", "composition", "copying", "heads"])
def test_text_rich_and_html_show_the_same_cells_aligned_alike(printed, which):
    r = printed[which]
    text, text_right = _text_table(r)
    rich, rich_right = _rich_table(r)
    html_rows, html_right = _html_table(r)
    assert len(text) == len(rich) == len(r) + 1
    assert rich == text                                   # the whole table, header included
    assert html_rows == text[:HTML_ROWS + 1]              # the notebook's first rows
    assert rich_right == html_right                       # numbers right-aligned by all three
    # plain text: a column whose cells all fill its width reads as left-aligned; others must agree
    assert all(t <= h for t, h in zip(text_right, html_right))
    # the cells say the values (second route: the rows themselves)
    header = text[0]
    for cells, row in zip(text[1:], r):
        shown = dict(zip(header, cells))
        assert shown["name"] == row.name
        value = shown[r.value_label]
        assert value == "—" if math.isnan(row.value) else float(value) == pytest.approx(row.value, rel=1e-3)
        for c, v in row.extra.items():
            if isinstance(v, bool):
                assert shown[c] == ("✓" if v else "")
        if "path" in shown:
            assert shown["path"] == " → ".join(row.path)
    assert ("path" in header) == (not r.path_in_name())


def test_the_tables_have_what_the_comparison_needs(printed):
    """The cases above cover a NaN, booleans both ways, a hidden path and a hidden share."""
    assert "—" in str(printed["hand"]) and "True" not in str(printed["hand"])
    for which in ("hand", "heads"):
        flags = [c for row in printed[which] for k, c in row.extra.items() if isinstance(c, bool)]
        assert True in flags and False in flags
    assert "path" not in _text_table(printed["heads"])[0][0]
    assert "share" not in _text_table(printed["attribution"])[0][0]     # a negative whole
    assert "share" in _text_table(printed["hand"])[0][0]
