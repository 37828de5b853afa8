"""MathML printer: valid XML (xml.etree), presentation MathML only, a golden term."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pathexpand import Architecture, expand_logits, expand_scores
from pathexpand.render import to_mathml
from pathexpand.render.mathml import MATHML_NS, XHTML_NS

PRESENTATION = {
    "math", "mrow", "mi", "mo", "mn", "msub", "msup", "msubsup", "munder", "munderover",
    "mtable", "mtr", "mtd", "mtext", "mfrac", "msqrt",
}


def _tags(root):
    return {el.tag.split("}", 1)[1] for el in root.iter() if el.tag.startswith(f"{{{MATHML_NS}}}")}


def test_golden_term():
    t = expand_logits(Architecture(1, 1, positional=None))["L0H0"]
    assert to_mathml(t) == (
        f'<math xmlns="{MATHML_NS}" display="inline"><mrow>'
        "<msup><mi>A</mi><mrow><mn>0</mn><mo>,</mo><mn>0</mn></mrow></msup><mo>⊗</mo>"
        "<mrow><msub><mi>W</mi><mi>U</mi></msub>"
        "<msubsup><mi>W</mi><mi>OV</mi><mrow><mn>0</mn><mo>,</mo><mn>0</mn></mrow></msubsup>"
        "<msub><mi>W</mi><mi>E</mi></msub></mrow></mrow></math>"
    )


def test_transposes_and_ones():
    b = expand_scores(Architecture(1, 1, biases=True, positional=None), "L0H0")
    root = ET.fromstring(to_mathml(b["q:L0H0.b_Q · k:direct"], form="right"))
    text = "".join(root.itertext())
    assert "𝟙" in text and "⊤" in text


CASES = [
    (Architecture(0, 0), None),
    (Architecture(2, 2, positional=None), "L1H0"),
    (Architecture(3, 2), "L2H1"),
    (Architecture(2, (1, 2), mlp=True, layernorm=True, biases=True), "L1H1"),
    (Architecture(2, 2, positional="shortformer", biases=True), "L1H0"),
    (Architecture(12, 12), "L11H0"),
]


@pytest.mark.parametrize("arch, head", CASES, ids=[str(c[0]) for c in CASES])
def test_derivations_are_valid_xhtml_with_presentation_mathml(arch, head):
    exps = [expand_logits(arch)] + ([expand_scores(arch, head)] if head else [])
    for exp in exps:
        root = ET.fromstring(to_mathml(exp, summarize_above=20))
        assert root.tag == f"{{{XHTML_NS}}}div"
        steps = exp.derivation(summarize_above=20)
        maths = root.findall(f"{{{MATHML_NS}}}math")
        assert len(maths) == len(steps) and all(m.get("display") == "block" for m in maths)
        titles = [h.text for h in root.findall(f"{{{XHTML_NS}}}h3")]
        assert titles == [f"{i}. {s.title}" for i, s in enumerate(steps, 1)]
        assert _tags(root) <= PRESENTATION


def test_selection_and_summary():
    exp = expand_logits(Architecture(12, 12))
    root = ET.fromstring(to_mathml(exp))
    assert "over 144 heads, first" in "".join(root.itertext())
    sel = ET.fromstring(to_mathml(exp.filter(through="L3H3", depth=1)))
    assert "".join(sel.itertext()).count("L3H3") == 2  # embed and pos paths


def test_text_is_escaped():
    exp = expand_scores(Architecture(2, 1, positional=None), "L1H0")
    doc = to_mathml(exp)
    assert "Q&amp;K" in doc and "Q&K" not in doc
    ET.fromstring(doc)
