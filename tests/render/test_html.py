"""The HTML report: one self-contained page whose numbers are the API's, text escaped,
written whole or not at all; and the notebook reprs of the objects users display."""

from __future__ import annotations

import html.parser
import math
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
from pathexpand.render.interactive import prompt_view

SECTION_IDS = ["summary", "card", "derivation", "diagram", "terms", "heads", "composition", "eigenvalues",
               "attribution", "interactive", "order"]
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


def _no_scripts(page: str) -> str:
    return re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.DOTALL)


def test_page_is_self_contained(page, doc):
    assert doc.all("link") == [] and doc.all("iframe") == []
    assert all("src" not in a for a in doc.all("script"))  # every script inline
    for tag, attrs in doc.tags:
        for key in ("src", "href", "xlink:href", "action", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith("#") or value.startswith("data:"), (tag, key, value)
    styles = "".join(re.findall(r"<style>(.*?)</style>", page, flags=re.S))
    assert "@import" not in styles and "@font-face" not in styles
    assert re.findall(r"url\((?!#)", _no_scripts(page)) == []  # only in-page references (clip paths)
    (csp,) = [a for a in doc.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp["content"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'unsafe-inline'"


def test_page_without_views_has_no_script_and_the_strict_policy(w2):
    page = report_html.report(w2, sections=["card", "terms"])
    doc = _Doc(page)
    assert doc.all("script") == []
    (csp,) = [a for a in doc.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp["content"] == report_html.CSP and "script-src" not in csp["content"]


def test_ids_are_unique_across_all_inline_svgs(page, doc):
    ids = [a["id"] for _, a in doc.tags if "id" in a]
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'(?:href="|url\()#([^")]+)', _no_scripts(page)))
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
    assert counts["interactive"] == 1  # the clickable path graph


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
    card = page[page.index('<section id="card">'): page.index('<section id="derivation">')]
    assert card.count("<details>") == 2  # the card, and inside it the nested training record


def test_card_numbers_are_rounded(w2):
    card = {"name": "r", "loss": 1.234567890123, "history": [{"step": 50, "loss": 5.120812345678}],
            "top_heads": {"induction": ["L1H0", 0.8085557427257299]}}
    w = _weights(card=card)
    page = report_html.report(w, sections=["card"])
    text = " ".join(_Doc(page).text)
    assert "1.235" in text and '"loss": 5.121' in text and "0.8086" in text
    assert re.findall(r"\d\.\d{6,}", text) == []  # no 16-digit floats anywhere in the card


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


# summary first, marked baselines, sorted tables, aligned math ------------------------------------
def _section(page: str, key: str) -> str:
    start = page.index(f'<section id="{key}">')
    return page[start: page.index("</section>", start)]


def test_summary_is_first_and_names_what_the_api_finds(page, w2):
    assert page.index('<section id="summary">') < page.index('<section id="card">')
    summary = _section(page, "summary")
    ic = pe.induction_circuit(w2)
    if ic.found:
        assert "Induction circuit found" in summary and ic.induction_head in summary
    else:
        assert "Induction circuit: none found" in summary
    # the top paths are pe.attribute's on the sample, the terms evaluate's by ‖W‖_F
    res = pe.attribute(w2, "f(x): x < y && 'z'\nf(x): x")
    rows = _table_after(summary, "<h3>Top paths")
    assert [r[1] for r in rows] == [r.name for r in res.ranking("path").top(5)]
    assert [float(r[2]) for r in rows] == pytest.approx([r.value for r in res.ranking("path").top(5)],
                                                         rel=1e-3)
    assert "<details>" not in summary  # one screen, nothing folded


def _same_token_head(c: float, V: int = 64, n_ctx: int = 40):
    """One layer, one head: one-hot embeddings and W_QK = 8c·I (d_head 64), so the head's score is
    c·[t_q = t_k] and A[q, k] ∝ exp(c·[t_q = t_k]) over k ≤ q (no positions, no biases)."""
    eye = np.eye(V)
    sd = {"W_E": eye, "W_pos": np.zeros((n_ctx, V)), "W_U": eye, "b_U": np.zeros(V),
          "blocks.0.attn.W_Q": np.sqrt(8 * c) * eye[None], "blocks.0.attn.W_K": np.sqrt(8 * c) * eye[None],
          "blocks.0.attn.W_V": eye[None], "blocks.0.attn.W_O": eye[None]}
    return pe.Weights.from_state_dict(sd, name="same-token")


def test_summary_judges_each_head_statistic_by_its_own_rule():
    """On a head whose pattern is known in closed form, the summary's scores are recomputed in
    numpy from detect_heads' documented inputs (r = default_rng(0).integers(0, V, (128, 20)),
    sequences [r, r]), and each verdict follows its own rule: previous-token against
    induction_circuit's min_score, induction only in layer ≥ 1 (none in a 1-layer model), and
    duplicate-token (no bar of its own) against chance — its score, 0.1–0.2, is well above
    chance and below 0.3, so judging it by min_score would say "none found"."""
    from pathexpand.render.report_sections import _heads_summary

    c, n, n_samples = math.log(5.0), 20, 128
    w = _same_token_head(c)
    r = np.random.default_rng(0).integers(0, 64, size=(n_samples, n))
    prev, dup = [], []
    for t in np.concatenate([r, r], axis=1):
        same = t[:, None] == t[None, :]                                     # [q, k]
        A = np.tril(np.exp(c * same))
        A /= A.sum(1, keepdims=True)
        prev.append(np.mean([A[q, q - 1] for q in range(1, 2 * n)]))
        dup.append(np.mean([A[q, q - n] for q in range(n, 2 * n)]))
    prev, dup = float(np.mean(prev)), float(np.mean(dup))
    chance_prev = float(np.mean([1 / (q + 1) for q in range(1, 2 * n)]))
    chance_dup = float(np.mean([1 / (q + 1) for q in range(n, 2 * n)]))
    floor = pe.induction_circuit(w).min_score
    assert chance_dup < dup < floor and prev < floor                         # the case that tells the rules apart

    ctx = report_sections.Context(w, *report_sections.sample_tokens(w, None), pe.Architecture.from_weights(w))
    items = dict(li.split(": ", 1) for li in re.findall(r"<li>(.*?)</li>", _heads_summary(ctx)))
    assert items["duplicate-token"] == (f"best L0H0 {dup:.3g}, {dup / chance_dup:.1f}× chance ({chance_dup:.3g}); "
                                        "no bar is set for this statistic, so no head is named")
    assert items["previous-token"] == f"none found (best L0H0 {prev:.3g} &lt; {floor:g}; chance {chance_prev:.3g})"
    assert items["induction"] == "none found (no head it applies to)"


def test_strongest_pairs_mark_those_not_above_the_baseline(page, w2):
    comp = pe.composition_scores(w2, "all", baseline="random")
    section = _section(page, "composition")
    body = section[section.index("<h3>Strongest pairs</h3>"):]
    rows = re.findall(r"<tr([^>]*)>(.*?)</tr>", body[body.index("<tbody>"):])
    assert len(rows) == 10
    min_z = pe.induction_circuit(w2).min_z
    by_name = {r.name: r for r in comp.ranking()}
    for attrs, cells in rows:
        tds = re.findall(r"<td[^>]*>(.*?)</td>", cells)
        r, verdict = by_name[tds[1]], tds[-1]
        z = float(r["z"])
        assert float(tds[3]) == pytest.approx(r["score"], abs=5e-4)     # score beside its baseline
        assert float(tds[4]) == pytest.approx(r["baseline"], abs=5e-4)
        assert (verdict == "above baseline") == (z >= min_z)
        assert ("class=dim" in attrs) == (z < min_z)
        if r["score"] <= r["baseline"]:
            assert verdict == "below baseline"
    above = sum(float(r["z"]) >= min_z for r in comp.ranking())
    assert (f"{above} of {len(comp.ranking())} pairs above" in body) or (above == 0 and "none found" in body)


@pytest.fixture(scope="module")
def real_page():
    """The bundled attn-only-2l, whose induction circuit the report must find (a few sections)."""
    return report_html.report("attn-only-2l", sections=["summary", "composition", "attribution"])


def test_real_model_summary_pairs_and_why_table(real_page):
    ic = pe.induction_circuit("attn-only-2l")
    assert ic.found and ic.pair == ("L0H1", "L1H2")
    summary = _section(real_page, "summary")
    assert ("Induction circuit found: the previous-token head <b>L0H1</b> writes into the key of the "
            "induction head <b>L1H2</b>") in re.sub(r"</?b>(?=Induction|:)", "", summary)
    # the real K-composition pair is first and the only rows above the baseline are marked so
    pairs = _table_after(_section(real_page, "composition"), "<h3>Strongest pairs</h3>")
    assert pairs[0][1:3] == ["L0H1 → L1H2.k", "k_composition"] and pairs[0][-1] == "above baseline"
    assert all(r[-1] != "above baseline" or float(r[5]) >= ic.min_z for r in pairs)
    # "Why L1H2 attends" sorted by the value it shows (effect), largest first
    rows = _table_after(real_page, "<h3>Why L1H2 attends")
    effects = [float(r[2]) for r in rows]
    assert len(rows) == 12 and effects == sorted(effects, reverse=True)


def test_derivation_is_folded_aligned_and_its_prose_is_math(page):
    section = _section(page, "derivation")
    assert section.count("<details>") == 2
    assert '<mtd class="lhs">' in section and '<mtd class="rhs">' in section
    prose = re.sub(r"<math.*?</math>", "", section, flags=re.DOTALL)
    assert "A^h" not in prose and "W_OV^h" not in prose and "Π_{" not in prose


def test_align_equations_splits_rows_on_equals():
    from pathexpand.render.report_sections import _align_equations

    row = "<mtable><mtr><mtd><mrow><msub><mi>x</mi><mn>0</mn></msub><mo>=</mo><mi>t</mi></mrow></mtd></mtr>"
    assert _align_equations(row) == (
        '<mtable><mtr><mtd class="lhs"><msub><mi>x</mi><mn>0</mn></msub></mtd>'
        '<mtd class="rhs"><mrow><mo>=</mo><mi>t</mi></mrow></mtd></mtr>')
    plain = "<mtable><mtr><mtd><mrow><mi>a</mi><mo>+</mo><mi>b</mi></mrow></mtd></mtr>"
    assert _align_equations(plain) == plain


def test_prose_math_draws_raw_notation():
    from pathexpand.render.report_sections import _prose_math

    out = _prose_math("<p>adds A^h W_OV^h, Π_{l'&lt;l} and b_U; x = y</p>")
    m = '<math xmlns="http://www.w3.org/1998/Math/MathML">'
    assert out == (f"<p>adds {m}<msup><mi>A</mi><mi>h</mi></msup></math> "
                   f"{m}<msubsup><mi>W</mi><mi>OV</mi><mi>h</mi></msubsup></math>, "
                   f"{m}<msub><mi>Π</mi><mi>l'&lt;l</mi></msub></math> and "
                   f"{m}<msub><mi>b</mi><mi>U</mi></msub></math>; x = y</p>")
    assert _prose_math("<math><mi>A^h</mi></math>") == "<math><mi>A^h</mi></math>"  # only p/h text


# interactive views ------------------------------------------------------------------------------
def _has_circuitsvis() -> bool:
    from pathexpand.render.interactive import circuitsvis_bundle

    return circuitsvis_bundle() is not None


needs_circuitsvis = pytest.mark.needs_circuitsvis   # conftest: skip, or fail when CI requires tools


def _props(view_html: str, component: str) -> dict:
    """A CircuitsVis view's props as the page's render call builds them: shared data, then its own."""
    import html as _html
    import json

    m = re.search(rf'data-cv="{component}"( data-src="([^"]*)")? data-props="([^"]*)"', view_html)
    props = {}
    if m.group(2):
        shared = re.search(rf'<script type="application/json" id="{m.group(2)}">(.*?)</script>', view_html)
        props.update(json.loads(shared.group(1)))
    props.update(json.loads(_html.unescape(m.group(3))))
    return props


@needs_circuitsvis
def test_circuitsvis_bundle_is_inlined_once(page):
    from pathexpand.render.interactive import circuitsvis_bundle

    bundle = circuitsvis_bundle()
    assert bundle is not None and len(bundle) > 1_000_000
    assert page.count(bundle) == 1 and page.count("var CircuitsVis=") == 1
    assert page.count("CircuitsVis.render(") == 1          # one render call for every view
    section = _section(page, "interactive")
    assert re.findall(r'data-cv="(\w+)"', section) == ["AttentionHeads", "ColoredTokensMulti"]
    assert 'class="view at"' in section and 'class="pg view"' in section   # our own two views
    assert page.index(bundle) > page.index('<section id="order">')  # after every view


def test_report_builds_without_circuitsvis(w2, monkeypatch):
    from pathexpand.render import interactive

    monkeypatch.setattr(interactive, "circuitsvis_bundle", lambda: None)
    page = report_html.report(w2, text="ab ab ab", sections=["interactive"])
    section = _section(page, "interactive")
    assert 'class="unavailable"' in section and "pip install" in section and "CircuitsVis" in section
    assert "var CircuitsVis" not in page and "data-cv=" not in page
    # our own views still work: the tokens to hover and the path graph, with their two scripts
    assert 'class="view at"' in section and 'class="pg view"' in section and page.count("<script>") == 2


@needs_circuitsvis
def test_attention_view_is_the_softmax_of_the_scores(w2):
    """Layer 0's patterns, recomputed by hand: softmax of (x W_Q + b_Q)(x W_K + b_K)ᵀ/√d_head, causal."""
    from pathexpand.render.interactive import attention_view

    ids = np.array([104, 105, 32, 104, 105, 32, 33])
    view = attention_view(w2, ids[None], heads=["L0H1", "L1H0"])
    props = _props(view.html, "AttentionHeads")
    assert props["attentionHeadNames"] == ["L0H1", "L1H0"] and props["tokens"] == ["h", "i", "␣", "h", "i", "␣", "!"]
    sd = {k: np.asarray(w2[k], dtype=np.float64) for k in ("W_E", "W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.W_K",
                                                             "blocks.0.attn.b_Q", "blocks.0.attn.b_K")}
    x = sd["W_E"][ids] + sd["W_pos"][: len(ids)]
    q = x @ sd["blocks.0.attn.W_Q"][1] + sd["blocks.0.attn.b_Q"][1]
    k = x @ sd["blocks.0.attn.W_K"][1] + sd["blocks.0.attn.b_K"][1]
    s = q @ k.T / np.sqrt(q.shape[1]) + np.triu(np.full((len(ids),) * 2, -np.inf), 1)
    a = np.exp(s - s.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    assert np.asarray(props["attention"][0]) == pytest.approx(a, abs=6e-4)   # 3 decimals
    assert view.html.count('"attention":') == 1            # the patterns are written once for both parts
    assert view.html.count('class="at-tok"') == len(ids) and len(re.findall(r'class="at-head(?: on)?"', view.html)) == 2
    assert view._repr_html_().count("var CircuitsVis=") == 1  # a notebook gets the same view


@needs_circuitsvis
def test_prompt_view_draws_the_source_split_of_the_largest_paths(w2):
    """The view's numbers are pe.source_contributions' (whose agreement with pe.attribute is
    tests/numeric/test_attribute_sources.py), for the largest token/position paths, and it
    follows the same target= as pe.attribute."""
    text = "ab ab ab"
    res = pe.attribute(w2, text)
    ranked = res.ranking("path")
    largest = [r for r in ranked.top(len(ranked)) if r.path[0] in ("embed", "pos")][:8]
    view = prompt_view(w2, text)
    props = _props(view.html, "ColoredTokensMulti")
    assert props["labels"] == [r.name for r in largest]                  # the largest paths first
    assert props["tokens"] == list(text.replace(" ", "␣"))
    split = pe.source_contributions(w2, text, [r.path for r in largest])
    assert np.asarray(props["values"]) == pytest.approx(split.values, abs=6e-4)   # 3 decimals
    # another target: the colours follow it (a difference of two logits at two positions)
    kw = dict(diff=("a", "b"), positions=[-1, -2])
    diff_view = prompt_view(w2, text, paths=[("embed", "L1H0")], **kw)
    props = _props(diff_view.html, "ColoredTokensMulti")
    other = pe.attribute(w2, text, **kw)
    assert sum(props["values"][j][0] for j in range(len(text))) == pytest.approx(
        other.ranking("path")["L1H0"].value, abs=len(text) * 6e-4)
    import html as _html

    assert other.target_label == "logit('a') − logit('b')"
    assert _html.escape(other.target_label) in diff_view.html             # the caption names it


def test_prompt_view_refuses_to_rank_a_deep_model_and_the_report_says_why():
    """6 layers × 4 heads: more paths than MAX_PATHS. prompt_view's default is a clear one-line
    error (not a long search); the report's interactive section builds, says why there is no
    coloured prompt or path graph, and draws at most 4 heads' patterns."""
    from pathexpand.numeric.attribute import MAX_PATHS
    from pathexpand.numeric.frozen import freeze

    w6 = _weights(6, 4, seed=1)
    text = "ab ab ab ab"
    n_paths = freeze(w6, text).n_paths()
    assert n_paths > MAX_PATHS
    with pytest.raises(PathexpandError, match="pass paths=") as err:
        prompt_view(w6, text)
    assert "\n" not in str(err.value) and f"{n_paths:,}" in str(err.value)
    ctx = report_sections.Context(w6, *report_sections.sample_tokens(w6, text), pe.Architecture.from_weights(w6))
    out = report_sections.section_interactive(ctx)
    assert f"no coloured prompt: this model has {n_paths:,} paths" in out
    assert "no path graph" in out and "ColoredTokensMulti" not in out and 'class="pg view"' not in out
    assert 1 <= len(re.findall(r'class="at-head(?: on)?"', out)) <= 4
    named = prompt_view(w6, text, paths=[("embed", "L5H0"), ("pos", "L0H1", "L3H2")])   # paths named: fine
    assert named.kind == "prompt"


def test_path_graph_view_data_is_the_attribution(w2):
    import html as _html
    import json

    from pathexpand.render.interactive import path_graph_view

    res = pe.attribute(w2, "ab ab ab")
    view = path_graph_view(res, k=6)
    data = json.loads(_html.unescape(re.search(r'data-pg="([^"]*)"', view.html).group(1)))
    top = res.ranking("path").top(6)
    assert [p["name"] for p in data["paths"]] == [r.name for r in top]
    assert [p["value"] for p in data["paths"]] == pytest.approx([r.value for r in top], abs=1e-5)
    for name, node in data["nodes"].items():
        if name.startswith("L") and "." not in name:   # a head: its exact node value is shown
            assert f"{float(res.node(name).mean()):+.3g}" in node["text"]
            assert node["paths"] == [i for i, r in enumerate(top) if name in r.path]
    assert view.html.count('class="pg-edge"') == 6 and _Doc(view.html).errors == []
    assert view._repr_html_().count("<script>") == 1 and "CircuitsVis" not in view._repr_html_()


def test_views_reachable_from_pe_render():
    from pathexpand.render import interactive

    assert pe.render.attention_view is interactive.attention_view
    assert pe.render.prompt_view is interactive.prompt_view
    assert pe.render.path_graph_view is interactive.path_graph_view


def test_view_json_is_compact_and_cannot_close_its_script():
    from pathexpand.render.interactive import _cv, _json

    assert _json({"a": [0.0, 0.12345, 1.0, -0.0004, 2.5], "n": 3}) == '{"a":[0,0.123,1,0,2.5],"n":3}'
    if not _has_circuitsvis():
        pytest.skip("circuitsvis is not installed")
    view = _cv([("ColoredTokens", {"values": [1.0]}, "c")], "t", "test", shared={"tokens": ["</script>"]})
    doc = _Doc(view.html)
    assert doc.errors == [] and [a["type"] for a in doc.all("script")] == ["application/json"]
    assert _props(view.html, "ColoredTokens") == {"tokens": ["</script>"], "values": [1]}
