"""Unicode text printer: golden strings and the terminal layout of a derivation."""

from __future__ import annotations

from pathexpand import Architecture, expand_logits, expand_scores
from pathexpand.render import to_text


def test_golden_terms():
    exp = expand_logits(Architecture(2, 2, positional=None))
    t = exp["L1H0∘L0H1"]
    assert to_text(t) == "A[1,0] A[0,1] ⊗ W_U W_OV[1,0] W_OV[0,1] W_E"
    assert to_text(t, form="right") == "A[1,0] A[0,1] t W_E W_OV[0,1] W_OV[1,0] W_U"
    s = expand_scores(Architecture(2, 2, positional=None), "L1H0")["q:L0H1 · k:L0H0"]
    assert to_text(s) == "A[0,1] ⊗ A[0,0] ⊗ W_Eᵀ W_OV[0,1]ᵀ W_QK[1,0] W_OV[0,0] W_E"
    m = expand_logits(Architecture(1, 1, mlp=True, positional=None))["MLP0∘L0H0"]
    assert to_text(m) == "(Id ⊗ W_U) 𝓜[0] (A[0,0] ⊗ W_OV[0,0] W_E)"
    assert to_text(m, form="right") == "𝓜[0](A[0,0] t W_E W_OV[0,0]) W_U"


def test_str_of_an_expansion_is_the_text_derivation():
    exp = expand_logits(Architecture(2, 2, positional=None))
    text = str(exp)
    lines = text.splitlines()
    assert lines[0] == "Path expansion of the logits: 2-layer transformer, 2 heads, no positions, attention-only"
    i = lines.index("     T = Id ⊗ W_U W_E")
    assert lines[i + 1:i + 3] == [
        "       + Σ_{h ∈ H₀ ∪ H₁} A[h] ⊗ W_U W_OV[h] W_E",
        "       + Σ_{h₂ ∈ H₁} Σ_{h₁ ∈ H₀} A[h₂] A[h₁] ⊗ W_U W_OV[h₂] W_OV[h₁] W_E",
    ]
    assert "     L1H1∘L0H1: A[1,1] A[0,1] ⊗ W_U W_OV[1,1] W_OV[0,1] W_E" in lines
    assert "     paths per source entering before layer 0: (1 + 2)² = 9" in lines
    assert all(len(line) <= 88 for line in lines if line.startswith("   ") and not line.startswith("     "))
    assert text == to_text(exp)


def test_summaries_say_what_they_hold():
    text = to_text(expand_logits(Architecture(12, 12)))
    assert "     Σ over 144 heads (first: L0H0 = A[0,0] ⊗ W_U W_OV[0,0] W_E)" in text.splitlines()
    assert "     Σ over 144 heads from pos (first: pos:L0H0 = A[0,0] ⊗ W_U W_OV[0,0] W_pos)" in text.splitlines()
    assert "Σ_{h ∈ H₀ ∪ ⋯ ∪ H₁₁}" in text
    cut = to_text(expand_logits(Architecture(3, 2), max_depth=1))
    assert "remainder: R_>1" in cut and "The 40 paths through more than 1 head are not listed" in cut


def test_selection_listing():
    exp = expand_logits(Architecture(2, 2, positional=None))
    assert to_text(exp.filter(kind="virtual", through="L0H0")) == (
        "L1H0∘L0H0: A[1,0] A[0,0] ⊗ W_U W_OV[1,0] W_OV[0,0] W_E\n"
        "L1H1∘L0H0: A[1,1] A[0,0] ⊗ W_U W_OV[1,1] W_OV[0,0] W_E\n"
    )


def test_sympy_str_and_latex_of_a_term_use_our_notation():
    """``print(term.expr)`` and ``sympy.latex(term.expr)`` read W_OV^{1,0}, never ``Mat(...)``."""
    import sympy

    import pathexpand as pe

    term = pe.expand_logits(pe.Architecture(2, 2))["L1H0∘L0H1"]
    assert str(term.expr) == "(A[1,0]*A[0,1])x(W_U*W_OV[1,0]*W_OV[0,1]*W_E)"
    latex = sympy.latex(term.expr)
    assert "W_{OV}^{1,0} W_{OV}^{0,1}" in latex and "Mat" not in latex
