"""Markdown printer: headings, prose with inline math, ``$$`` aligned blocks."""

from __future__ import annotations

import re

from pathexpand import Architecture, expand_logits, expand_scores
from pathexpand.render import to_markdown


def test_golden_term():
    t = expand_logits(Architecture(1, 1, positional=None))["L0H0"]
    assert to_markdown(t) == r"$A^{0,0} \otimes W_U W_{OV}^{0,0} W_E$"


def test_derivation_structure():
    exp = expand_logits(Architecture(2, 2, positional=None))
    md = to_markdown(exp)
    lines = md.splitlines()
    assert lines[0] == "## Path expansion of the logits: 2-layer transformer, 2 heads, no positions, attention-only"
    steps = exp.derivation()
    heads = [line for line in lines if line.startswith("### ")]
    assert len(heads) == len(steps) and heads[0] == "### 1. The residual stream is a sum"
    assert md.count("$$") == 2 * len(steps)
    assert md.count(r"\begin{aligned}") == len(steps) and r"\intertext" not in md
    assert "every head adds $A^{h}$ (its input) $W_{V}^{h}$ $W_{O}^{h}$" in md
    assert r"&\quad + \sum_{h \in H_{0} \cup H_{1}} A^{h} \otimes W_U W_{OV}^{h} W_E \\" in lines
    assert to_markdown(exp, heading_level=3).startswith("### Path expansion")


def test_text_inside_math_is_mathjax_safe():
    """MathJax shows ``\\text{...}`` literally: no LaTeX escapes may appear inside it."""
    md = to_markdown(expand_scores(Architecture(12, 12, biases=True), "L11H0"))
    texts = re.findall(r"\\text\{([^{}]*)\}", md)
    assert any("over" in t for t in texts)  # the summaries are there ...
    assert any("L0H0.b_V" in t for t in texts)  # ... and the note naming bias sources
    assert not [t for t in texts if "\\" in t]
