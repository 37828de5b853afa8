"""One induction circuit: ``pathexpand diagram``, ``pathexpand report`` and ``pathexpand demo`` name
the pair ``pe.induction_circuit`` names — or all say that none was found — on every bundled model.

Second route for the pair itself: the forward-pass detector (attention on repeated random tokens)
and K-composition against its null, read here from their own public functions.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.cli import main
from pathexpand.models import bundled_names


def _text(s: str) -> str:
    """Markup to plain text: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", s)).split())


@pytest.fixture(scope="module", params=bundled_names())
def drawn(request, tmp_path_factory):
    """What each of the three commands drew or printed for one bundled model."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    assert main(["diagram", name, "-o", str(tmp / "d.svg")]) == 0
    assert main(["report", name, "--sections", "diagram", "-o", str(tmp / "r.html")]) == 0
    assert main(["demo", name, "--out", str(tmp / "demo"), "--no-report"]) == 0
    return name, {
        "diagram": _text((tmp / "d.svg").read_text()),
        "report": _text((tmp / "r.html").read_text()),
        "demo": _text((tmp / "demo" / "circuit.svg").read_text()),
    }


def test_the_three_commands_draw_the_same_circuit(drawn):
    name, texts = drawn
    ic = pe.induction_circuit(name)
    expected = ic.title if ic.found else f"{ic.title}; top 5 terms by ‖W‖_F"
    for command, text in texts.items():
        assert f"{name}: {expected}" in text or expected in text, (command, expected)
        if not ic.found:
            assert "induction circuit L" not in text, command


def test_the_pair_is_the_one_behaviour_and_weights_agree_on():
    data = pe.detect_heads("attn-only-2l")
    comp = pe.composition_scores("attn-only-2l", "k_composition")
    prev = f"L0H{int(np.argmax(data['previous_token'][0]))}"
    ind = f"L1H{int(np.argmax(data['induction'][1]))}"
    ic = pe.induction_circuit("attn-only-2l")
    assert ic.pair == (prev, ind)
    assert ic.k_composition["z"] == pytest.approx(comp.z("k_composition")[0, int(prev[3]), 1, int(ind[3])])


def test_gelu_2l_says_none_found():
    ic = pe.induction_circuit("gelu-2l")
    assert not ic.found and ic.reason.startswith("no induction circuit found: no head of layer ≥ 1")
    assert pe.detect_heads("gelu-2l")["induction"][1].max() < ic.min_score
