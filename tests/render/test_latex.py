"""LaTeX printer: exact golden strings for small cases, and real ``pdflatex`` compiles."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from pathexpand import Architecture, PathexpandError, expand_logits, expand_scores
from pathexpand.render import to_latex

A2 = Architecture(2, 2, positional=None)


def test_term_tensor_and_right_forms():
    t = expand_logits(A2)["L1H0∘L0H1"]
    assert to_latex(t) == r"A^{1,0} A^{0,1} \otimes W_U W_{OV}^{1,0} W_{OV}^{0,1} W_E"
    assert to_latex(t, form="right") == r"A^{1,0} A^{0,1} t W_E W_{OV}^{0,1} W_{OV}^{1,0} W_U"
    assert to_latex(t.expr) == to_latex(t)


def test_bias_layernorm_and_mlp_terms():
    exp = expand_logits(Architecture(2, 1, biases=True, positional=None))
    assert to_latex(exp["L0.b_O:L1H0"]) == r"A^{1,0} \otimes W_U W_{OV}^{1,0} b_O^{0}"
    assert to_latex(exp["L0H0.b_V"], form="right") == r"\mathbf{1} b_V^{0,0} W_O^{0,0} W_U"
    mlp = expand_logits(Architecture(1, 1, mlp=True, layernorm=True, positional=None))
    assert to_latex(mlp["MLP0"]) == (
        r"\left(N_{\mathrm{lnf}} \otimes W_U W_{\mathrm{lnf}}\right) \mathcal{M}^{0} "
        r"\left(N_{\mathrm{ln2}}^{0} \otimes W_{\mathrm{ln2}}^{0} W_E\right)"
    )
    assert to_latex(mlp["MLP0"], form="right") == (
        r"N_{\mathrm{lnf}} \mathcal{M}^{0}\left(N_{\mathrm{ln2}}^{0} t W_E W_{\mathrm{ln2}}^{0}\right) "
        r"W_{\mathrm{lnf}} W_U"
    )


def test_score_terms():
    exp = expand_scores(A2, "L1H0")
    assert to_latex(exp["q:L0H1 · k:L0H0"]) == (
        r"A^{0,1} \otimes A^{0,0} \otimes W_E^{\top} W_{OV}^{0,1\top} W_{QK}^{1,0} W_{OV}^{0,0} W_E"
    )
    assert to_latex(exp["q:L0H1 · k:L0H0"], form="right") == (
        r"A^{0,1} t W_E W_{OV}^{0,1} W_{QK}^{1,0} \left(A^{0,0} t W_E W_{OV}^{0,0}\right)^{\top}"
    )
    b = expand_scores(Architecture(1, 1, biases=True, positional=None), "L0H0")
    assert to_latex(b["q:direct · k:L0H0.b_K"]) == r"\mathrm{Id} \otimes \mathrm{Id} \otimes W_E^{\top} W_Q^{0,0\top} b_K^{0,0}"


def _rows(tex: str) -> list[str]:
    return [line.rstrip(" \\") for line in tex.splitlines()]


def test_two_layer_derivation_reads_like_the_paper():
    tex = to_latex(expand_logits(A2))
    assert tex.startswith(r"\begin{align*}") and tex.endswith(r"\end{align*}")
    rows = _rows(tex)
    grouped = rows.index(r"T &= \mathrm{Id} \otimes W_U W_E")
    assert rows[grouped + 1:grouped + 3] == [
        r"&\quad + \sum_{h \in H_{0} \cup H_{1}} A^{h} \otimes W_U W_{OV}^{h} W_E",
        (r"&\quad + \sum_{h_{2} \in H_{1}} \sum_{h_{1} \in H_{0}} A^{h_{2}} A^{h_{1}} \otimes W_U "
         r"W_{OV}^{h_{2}} W_{OV}^{h_{1}} W_E"),
    ]
    assert r"\left(A \otimes B\right) \left(C \otimes D\right) &= A C \otimes B D" in rows
    assert r"F^{l} &= \mathrm{Id} \otimes \mathrm{Id} + \sum_{h \in H_{l}} A^{h} \otimes W_{OV}^{h}" in rows
    assert sum(r.startswith(r"\intertext{\textbf{") for r in rows) == 9  # title + 8 steps


def test_zero_and_one_layer_reference_equations():
    rows0 = _rows(to_latex(expand_logits(Architecture(0, 0, positional=None))))
    assert r"T &= W_U W_E" in rows0
    rows1 = _rows(to_latex(expand_logits(Architecture(1, 2, positional=None))))
    assert r"T &= \mathrm{Id} \otimes W_U W_E + \sum_{h \in H_{0}} A^{h} \otimes W_U W_{OV}^{h} W_E" in rows1
    # t is [pos, d_vocab] on every page; the paper's tᵀ … t has a column per position
    assert (r"A^{h} &= \operatorname{softmax}^{*}\left(t W_E^{\top} W_{QK}^{h} W_E t^{\top}\right)"
            in rows1)
    assert r"\text{OV circuit} &: W_U W_{OV}^{h} W_E" in rows1
    assert r"\text{QK circuit} &: W_E^{\top} W_{QK}^{h} W_E" in rows1


def test_layer_two_head_scores_reference_equation():
    rows = _rows(to_latex(expand_scores(A2, "L1H0")))
    i = rows.index(r"C_{QK}^{1,0} &= \mathrm{Id} \otimes \mathrm{Id} \otimes W_E^{\top} W_{QK}^{1,0} W_E")
    assert rows[i + 1:i + 4] == [
        (r"&\quad + \sum_{h_{q} \in H_{0}} A^{h_{q}} \otimes \mathrm{Id} \otimes W_E^{\top} "
         r"W_{OV}^{h_{q}\top} W_{QK}^{1,0} W_E"),
        (r"&\quad + \sum_{h_{k} \in H_{0}} \mathrm{Id} \otimes A^{h_{k}} \otimes W_E^{\top} "
         r"W_{QK}^{1,0} W_{OV}^{h_{k}} W_E"),
        (r"&\quad + \sum_{h_{q} \in H_{0}} \sum_{h_{k} \in H_{0}} A^{h_{q}} \otimes A^{h_{k}} \otimes "
         r"W_E^{\top} W_{OV}^{h_{q}\top} W_{QK}^{1,0} W_{OV}^{h_{k}} W_E"),
    ]


def test_large_expansions_are_summarised_never_cut_silently():
    tex = to_latex(expand_logits(Architecture(12, 12)))
    assert r"\textstyle\sum \text{ over 144 heads, first }\mathrm{L0H0} = A^{0,0}" in tex
    assert r"\text{terms in all} &: 46596170244962" in tex
    assert "L11H11" not in tex  # the 144 heads are summarised, with their count
    small = to_latex(expand_logits(Architecture(12, 12)), summarize_above=200)
    assert r"\mathrm{L11H11} &: A^{11,11}" in small


def test_jupyter_and_bad_settings():
    exp = expand_logits(Architecture(1, 1))
    j = exp._repr_latex_()
    assert j.startswith("$$\n\\begin{aligned}") and j.endswith("\\end{aligned}\n$$")
    assert r"\intertext" not in j
    with pytest.raises(PathexpandError, match="Unknown setting 'colour'"):
        to_latex(exp, colour="red")
    with pytest.raises(PathexpandError, match="form must be"):
        to_latex(exp, form="left")
    with pytest.raises(PathexpandError, match="summarize_above"):
        to_latex(exp, summarize_above=-1)


COMPILE_CASES = [
    ("0-layer", lambda: expand_logits(Architecture(0, 0, positional=None))),
    ("1-layer", lambda: expand_logits(Architecture(1, 4, positional=None))),
    ("2-layer + scores", lambda: [expand_logits(A2), expand_scores(A2, "L1H0")]),
    ("3-layer + scores", lambda: [expand_logits(Architecture(3, 2)), expand_scores(Architecture(3, 2), "L2H1")]),
    ("MLP + LN + biases", lambda: [
        expand_logits(Architecture(2, (1, 2), mlp=True, layernorm=True, biases=True), max_depth=3),
        expand_scores(Architecture(2, (1, 2), mlp=True, layernorm=True, biases=True), "L1H1")]),
    ("shortformer + biases", lambda: [
        expand_logits(Architecture(2, 2, positional="shortformer", biases=True)),
        expand_scores(Architecture(2, 2, positional="shortformer", biases=True), "L1H0")]),
    ("12x12 summarised", lambda: [expand_logits(Architecture(12, 12), max_depth=2),
                                  expand_scores(Architecture(12, 12, mlp=True), "L11H0")]),
    *((f"modern {head}", lambda a=a, head=head: [expand_logits(a), expand_scores(a, head)]) for a, head in (
        (Architecture(1, 4, positional="rotary", normalization="RMS", n_kv_heads=1), "L0H2"),
        (Architecture(2, (2, 1), mlp=True, normalization="RMS", positional="rotary", biases=True,
                      gated_mlp=True, parallel_attn_mlp=True), "L1H0"),
        (Architecture(2, 4, mlp=True, layernorm=True, biases=True, parallel_attn_mlp=True,
                      n_kv_heads=2), "L1H3"),
    )),
]


@pytest.mark.needs_latex
@pytest.mark.parametrize("name, make", COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_pdflatex_compiles(name, make, tmp_path):
    exps = make()
    exps = exps if isinstance(exps, list) else [exps]
    body = "\n\n".join(to_latex(e, summarize_above=16) for e in exps)
    doc = "\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}\n" + body + "\n\\end{document}\n"
    (tmp_path / "d.tex").write_text(doc, encoding="utf-8")
    proc = subprocess.run(
        [shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "d.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and not errors, (errors, proc.stdout[-2000:])
    assert (tmp_path / "d.pdf").stat().st_size > 1000


def test_jupyter_reprs_of_terms_and_selections():
    exp = expand_logits(A2)
    assert exp["L1H0"]._repr_latex_() == r"$A^{1,0} \otimes W_U W_{OV}^{1,0} W_E$"
    s = expand_scores(A2, "L1H0")["q:direct · k:L0H1"]
    assert s._repr_latex_() == r"$\mathrm{Id} \otimes A^{0,1} \otimes W_E^{\top} W_{QK}^{1,0} W_{OV}^{0,1} W_E$"
    sel = exp.filter(kind="head")._repr_latex_()
    assert sel.startswith("$$\n\\begin{aligned}") and sel.count(r"\mathrm{L") == 4


# --- the standalone document: rows broken to fit, compiled without overfull boxes ----------------
def _flat(rows: list[str]) -> str:
    """The math of ``align`` rows with the layout taken out (&, indents, spaces; a prose box
    back to ``\\text``): what is left must not change when rows are broken."""
    text = "".join(r.replace("&", "").replace(r"\qquad", "").replace(r"\quad", "") for r in rows)
    text = re.sub(r"\\parbox\[t\]\{[\d.]+\\linewidth\}\{\\raggedright (.*?)\}(?=$|\\|[:=])", r"\\text{\1}", text)
    return "".join(text.split())


def _fitted_rows(make) -> list[tuple[list[str], list[str]]]:
    """(rows, fitted rows) of every derivation step of a case, as the standalone document has them."""
    from pathexpand.render.latex import PathLatexPrinter, fit_rows, latex_rows
    from pathexpand.render.notation import make_printer
    from pathexpand.symbolic.derivation import derive

    printer = make_printer(PathLatexPrinter, {"summarize_above": 16})
    exps = make()
    return [(rows, fit_rows(rows))
            for e in (exps if isinstance(exps, list) else [exps])
            for rows in (latex_rows(printer, step.expr) for step in derive(e, summarize_above=16))]


@pytest.mark.parametrize("name, make", COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_fitted_rows_keep_every_symbol(name, make):
    for rows, fitted in _fitted_rows(make):
        assert _flat(fitted) == _flat(rows)      # the same symbols in the same order


@pytest.mark.needs_latex
def test_width_estimate_bounds_the_width_pdflatex_measures(tmp_path):
    """``_width`` (what ``fit_rows`` breaks by) against pdflatex: every math piece of every fitted
    row of the cases, typeset in the document's display style and measured with \\settowidth.
    Scaled so that ``DOCUMENT_WIDTH`` units are the page's \\linewidth, the estimate must not fall
    short of the measured width by more than half a unit (else a row judged to fit overflows) and,
    for long pieces, must not be over twice it (else rows are broken at half the page)."""
    from pathexpand.render.latex import _PREAMBLE, DOCUMENT_WIDTH, _width

    amp = re.compile(r"(?<!\\)&")                    # alignment tabs, not a printed \&
    pieces = sorted({amp.sub("", amp.split(r, maxsplit=1)[-1].replace(r"\qquad ", ""))
                     for _, make in COMPILE_CASES for _, fitted in _fitted_rows(make)
                     for r in fitted if r"\parbox" not in r})
    lines = [r"\newlength{\w}", r"\begin{document}", r"\typeout{LW:\the\linewidth}"]
    lines += [rf"\settowidth{{\w}}{{$\displaystyle {p}$}}\typeout{{W{i}:\the\w}}" for i, p in enumerate(pieces)]
    (tmp_path / "m.tex").write_text(_PREAMBLE + "\n".join(lines) + "\n\\end{document}\n", encoding="utf-8")
    proc = subprocess.run([shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "m.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    log = (tmp_path / "m.log").read_text(encoding="utf-8", errors="replace")
    unit = float(re.search(r"LW:([\d.]+)pt", log).group(1)) / DOCUMENT_WIDTH     # pt per _width unit
    measured = {int(i): float(pt) / unit for i, pt in re.findall(r"W(\d+):([\d.]+)pt", log)}
    assert len(measured) == len(pieces) > 100
    short = [(p, _width(p), measured[i]) for i, p in enumerate(pieces) if measured[i] > _width(p) + 0.5]
    assert short == [], short[:5]
    loose = [(p, _width(p), measured[i]) for i, p in enumerate(pieces)
             if _width(p) >= 20 and _width(p) > 2 * measured[i]]
    assert loose == [], loose[:5]


@pytest.mark.needs_latex
@pytest.mark.parametrize("name, make", COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_standalone_document_compiles_without_overfull_boxes(name, make, tmp_path):
    from pathexpand.render.latex import to_latex_document

    exps = make()
    doc = to_latex_document(exps if isinstance(exps, list) else [exps], summarize_above=16)
    assert doc.startswith("\\documentclass") and doc.endswith("\\end{document}\n")
    (tmp_path / "d.tex").write_text(doc, encoding="utf-8")
    proc = subprocess.run(
        [shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "d.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    log = (tmp_path / "d.log").read_text(encoding="utf-8", errors="replace")
    errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and not errors, (errors, proc.stdout[-2000:])
    overfull = [line for line in log.splitlines() if line.startswith("Overfull")]
    assert overfull == [], overfull


@pytest.mark.needs_latex
def test_the_unbroken_fragment_overflows_the_same_page(tmp_path):
    """The control: without the line breaking, the document's page has overfull boxes."""
    from pathexpand.render.latex import _PREAMBLE

    a = Architecture(2, (1, 2), mlp=True, layernorm=True, biases=True)
    body = to_latex(expand_logits(a, max_depth=3), summarize_above=16)
    (tmp_path / "d.tex").write_text(_PREAMBLE + "\\begin{document}\n" + body + "\n\\end{document}\n")
    subprocess.run([shutil.which("pdflatex"), "-interaction=nonstopmode", "d.tex"], cwd=tmp_path,
                   capture_output=True, text=True, timeout=120, check=False)
    log = (tmp_path / "d.log").read_text(encoding="utf-8", errors="replace")
    assert "Overfull \\hbox" in log
