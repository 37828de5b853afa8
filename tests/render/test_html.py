"""The HTML report: one self-contained page whose numbers are the API's, text escaped,
written whole or not at all; and the notebook reprs of the objects users display."""

from __future__ import annotations

import html.parser
import os
import re

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.models.tokenizer import ByteTokenizer
from pathexpand.numeric.detect import copying_scores, detect_heads
from pathexpand.render import html as report_html
from pathexpand.render import report_sections

SECTION_IDS = ["card", "derivation", "diagram", "terms", "heads", "composition", "eigenvalues",
               "attribution", "order"]
EVIL = '<script>alert("x")</script> & "quotes"'


def _weights(n_layers: int = 2, n_heads: int = 2, *, seed: int = 0, tokenizer=True, card=None):
    rng = np.random.default_rng(seed)
    V, d, dh, n_ctx = 256, 16, 4, 40
    sd = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n_ctx, d)),
          "W_U": rng.normal(size=(d, V)) / 4, "b_U": rng.normal(size=V)}
    for l in range(n_layers):
        for m in "QKV":
            sd[f"blocks.{l}.attn.W_{m}"] = rng.normal(size=(n_heads, d, dh)) / 3
            sd[f"blocks.{l}.attn.b_{m}"] = rng.normal(size=(n_heads, dh)) / 3
        sd[f"blocks.{l}.attn.W_O"] = rng.normal(size=(n_heads, dh, d)) / 3
        sd[f"blocks.{l}.attn.b_O"] = rng.normal(size=d) / 3
    return pe.Weights.from_state_dict(sd, tokenizer=ByteTokenizer() if tokenizer else None,
                                      name=f"tiny-{n_layers}l", card=card)


CARD = {"name": "tiny-2l", "description": EVIL, "steps": 1234, "final_loss": 2.5,
        "data": {"text": "stdlib", "bytes": 1000}, "command": "python -m train --model tiny"}


@pytest.fixture(scope="module")
def w2():
    return _weights(card=CARD)


@pytest.fixture(scope="module")
def page(w2):
    return report_html.report(w2, text="f(x): x < y && 'z'\nf(x): x")


class _Doc(html.parser.HTMLParser):
    """Tags, attributes, text and nesting of an HTML page (void elements closed implicitly)."""

    VOID = {"meta", "br", "img", "link", "input", "hr", "col", "area", "base", "wbr", "source"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


@pytest.fixture(scope="module")
def doc(page):
    return _Doc(page)


# structure -----------------------------------------------------------------------------------
def test_page_is_balanced_and_has_every_section_in_order(page, doc):
    assert page.startswith("<!DOCTYPE html>")
    assert doc.errors == [] and doc.stack == []
    assert [a["id"] for a in doc.all("section")] == SECTION_IDS
    nav = [a["href"] for a in doc.all("a") if "href" in a][: len(SECTION_IDS)]
    assert nav == [f"#{s}" for s in SECTION_IDS]
    assert 'class="unavailable"' not in page  # every section applies to a 2-layer model


def test_page_is_self_contained(page, doc):
    assert doc.all("script") == [] and doc.all("link") == [] and doc.all("iframe") == []
    for tag, attrs in doc.tags:
        for key in ("src", "href", "xlink:href", "action", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith("#") or value.startswith("data:"), (tag, key, value)
    styles = "".join(re.findall(r"<style>(.*?)</style>", page, flags=re.S))
    assert "@import" not in styles and "@font-face" not in styles
    assert re.findall(r"url\((?!#)", page) == []  # only in-page references (clip paths)
    (csp,) = [a for a in doc.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp["content"].startswith("default-src 'none'")


def test_ids_are_unique_across_all_inline_svgs(page, doc):
    ids = [a["id"] for _, a in doc.tags if "id" in a]
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'(?:href="|url\()#([^")]+)', page))
    assert refs <= set(ids)  # every in-page reference resolves


def test_mathml_and_svgs_are_inline(page, doc):
    maths = doc.all("math")
    assert len(maths) >= 4
    assert all(m.get("xmlns") == "http://www.w3.org/1998/Math/MathML" for m in maths)
    assert doc.all("msub") or doc.all("msubsup")
    # diagram, attribution diagram, terms, heads, composition, eigenvalues, attention, order
    assert len(doc.all("svg")) >= 8
    counts: dict[str, int] = {}
    current = None
    for m in re.finditer(r'<section id="(\w+)">|(<svg)', page):
        if m.group(1):
            current = m.group(1)
        else:
            counts[current] = counts.get(current, 0) + 1
    assert {"diagram", "terms", "heads", "composition", "eigenvalues", "order"} <= set(counts)
    assert counts["attribution"] == 2  # attention patterns and the top paths as a circuit


# content ------------------------------------------------------------------------------------------
def test_text_is_escaped(page, doc):
    assert EVIL not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "f(x): x &lt; y &amp;&amp; &#x27;z&#x27;" in page  # the sample text in <pre>
    assert EVIL in "".join(doc.text)  # and reads back as the original text


def test_card_values_are_shown(page, doc):
    text = " ".join(doc.text)
    for value in ("1,234", "2.5", "stdlib", "python -m train --model tiny", "2-layer transformer"):
        assert value in text


def _table_after(page: str, marker: str) -> list[list[str]]:
    start = page.index(marker)
    body = page[page.index("<tbody>", start): page.index("</tbody>", start)]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows]


def test_detected_heads_table_is_detect_heads(page, w2):
    rows = _table_after(page, "<th>head</th><th class=num>previous-token</th>")
    scores = detect_heads(w2)  # the defaults the report (and induction_circuit) use
    assert [r[0] for r in rows] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    for r in rows:
        l, h = int(r[0][1]), int(r[0][3])
        got = [float(x) for x in r[1:]]
        want = [scores["previous_token"][l, h], scores["induction"][l, h], scores["duplicate_token"][l, h]]
        assert got == pytest.approx(want, abs=5e-4)


def test_copying_table_is_weight_detect(page, w2):
    start = page.index('<section id="eigenvalues">')
    rows = _table_after(page[start:], "<table>")
    stat = copying_scores(w2)
    assert len(rows) == 4
    for r in rows:
        l, h = int(r[1][1]), int(r[1][3])
        assert float(r[2]) == pytest.approx(stat["copying"][l, h], rel=1e-3, abs=1e-4)


def test_attribution_is_exact_and_named(page, w2):
    section = page[page.index('<section id="attribution">'): page.index('<section id="order">')]
    err = float(re.search(r"residual error ([0-9.e+-]+)\.", section).group(1))
    assert err < 1e-4
    # "why the induction head attends" only when pe.induction_circuit finds one
    assert "Top paths" in section and ("Why L1H" in section) == pe.induction_circuit(w2).found


# other models and the file ------------------------------------------------------------------------
def test_one_layer_model_says_what_does_not_apply():
    w1 = _weights(1, 2, seed=3)
    page = report_html.report(w1, sections=["composition", "diagram", "derivation"])
    comp = page[page.index('<section id="composition">'):]
    assert 'class="unavailable"' in comp and "1-layer model has no composition" in comp
    assert [a["id"] for a in _Doc(page).all("section")] == ["derivation", "diagram", "composition"]
    assert "Attention scores of" not in page  # no later-layer head to derive scores for


def test_model_without_tokenizer_uses_repeated_random_tokens():
    w = _weights(2, 1, tokenizer=False)
    ids, labels, text = report_sections.sample_tokens(w, None)
    n = len(ids) // 2
    assert text is None and np.array_equal(ids[:n], ids[n:]) and labels == [str(i) for i in ids]
    with pytest.raises(PathexpandError, match="tokenizer"):
        report_html.report(w, text="abc")


def test_path_writes_the_same_page_atomically(w2, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("old")
    page = report_html.report(w2, path=out, sections=["card"])
    assert out.read_text(encoding="utf-8") == page
    assert sorted(os.listdir(tmp_path)) == ["r.html"]  # no temporary file left


@pytest.mark.parametrize("bad, match", [
    ("missing/dir/r.html", "does not exist"),
    (".", "directory"),
    ("r.txt", "ending in .html"),
])
def test_bad_paths_fail_before_any_work(w2, tmp_path, monkeypatch, bad, match):
    called = []
    monkeypatch.setattr(report_html, "SECTIONS",
                        (("card", "Model card", lambda ctx: called.append(1) or ""),))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PathexpandError, match=match):
        report_html.report(w2, path=bad)
    assert called == [] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("text, match", [("x" * 41, "n_ctx=40"), ("x", "at least 2 tokens"),
                                         (b"bytes", "must be integer ids"), (3.5, "must be integer ids")])
def test_bad_text_writes_nothing(w2, tmp_path, text, match):
    out = tmp_path / "r.html"
    out.write_text("old")
    with pytest.raises(PathexpandError, match=match):
        report_html.report(w2, text=text, path=out)
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["r.html"]


def test_unknown_section_and_a_crash_midway_leave_no_file(w2, tmp_path, monkeypatch):
    out = tmp_path / "r.html"
    with pytest.raises(PathexpandError, match="sections are"):
        report_html.report(w2, path=out, sections=["card", "nope"])

    def boom(ctx):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report_html, "SECTIONS", (("card", "Model card", boom),))
    with pytest.raises(RuntimeError, match="disk on fire"):
        report_html.report(w2, path=out)
    assert os.listdir(tmp_path) == []


def test_section_error_becomes_one_line_not_a_failed_report(w2, monkeypatch):
    def refuse(ctx):
        raise PathexpandError("this model has no attention heads to score")

    monkeypatch.setattr(report_html, "SECTIONS", (("heads", "Detected heads", refuse),))
    page = report_html.report(w2)
    assert '<p class="unavailable">not shown: this model has no attention heads to score</p>' in page


def test_report_is_reachable_from_the_public_api(w2):
    assert pe.render.report is report_html.report
    page = pe.render.report(w2, sections="card")
    assert "<h2>Model card</h2>" in page


# notebook reprs -----------------------------------------------------------------------------------
def test_ranking_repr_html_is_a_table():
    from pathexpand.ranking import Ranking

    r = Ranking([dict(name="L1H0∘L0H0", kind="virtual", depth=2, path=("embed", "L0H0", "L1H0"),
                      value=2.0), dict(name="a<b", kind="head", depth=1, path=("embed",), value=1.0)])
    out = r._repr_html_()
    doc = _Doc(out)
    assert doc.errors == [] and doc.all("table") and len(doc.all("tr")) == 3
    assert "a&lt;b" in out and "L1H0∘L0H0" in out


def test_expansion_repr_latex_is_display_math():
    exp = pe.expand_logits(pe.Architecture(1, 2, positional=None))
    out = exp._repr_latex_()
    assert out.startswith("$$") and out.rstrip().endswith("$$")
    assert r"\begin{aligned}" in out and r"A^{0,1} \otimes W_U W_{OV}^{0,1} W_E" in out
    assert exp["L0H1"]._repr_latex_() == r"$A^{0,1} \otimes W_U W_{OV}^{0,1} W_E$"  # one term
    scores = pe.expand_scores(pe.Architecture(2, 1, positional=None), "L1H0")
    assert scores._repr_latex_().startswith("$$") and r"W_{QK}^{1,0}" in scores._repr_latex_()


@pytest.mark.needs_graphviz
def test_diagram_repr_svg_is_svg():
    dig = pe.render.diagram(pe.expand_logits(pe.Architecture(1, 1, positional=None))["L0H0"])
    out = dig._repr_svg_()
    assert out.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in out
    bundle = dig._repr_mimebundle_()
    assert "image/svg+xml" in bundle
