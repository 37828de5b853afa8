"""`pathexpand demo` (what `make demo` runs) on the bundled default model."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import pathexpand as pe
from pathexpand.cli import main


@pytest.mark.needs_graphviz
def test_demo_runs_every_step_on_the_default_model(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--no-report"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for step in ("1. The model", "2. Derive", "3. Detect", "4. The induction circuit", "5. Rank",
                 "6. Attribute", "7. Draw"):
        assert step in out
    w = pe.load("attn-only-2l")
    # the heads it reports are the ones the detector finds when called directly
    prev = pe.detect_heads(w).top(1, kind="previous_token")[0].name
    ind = pe.detect_heads(w).top(1, kind="induction")[0].name
    assert f"previous_token   {prev}" in out and f"induction        {ind}" in out
    # the circuit it names is pe.induction_circuit's, the one `pathexpand diagram` draws
    assert pe.induction_circuit(w).reason in " ".join(out.split())
    assert f"{pe.expand_logits(pe.Architecture.from_weights(w)).n_terms} terms" in out
    svg = ET.parse(tmp_path / "circuit.svg").getroot()
    assert svg.tag.endswith("svg")
    assert ind in (tmp_path / "circuit.svg").read_text()


def test_demo_refuses_an_output_folder_it_cannot_create(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc = main(["demo", "--out", str(blocker / "sub"), "--no-report"])
    assert rc == 2
    assert "cannot create output folder" in capsys.readouterr().err


@pytest.mark.needs_graphviz
def test_demo_on_a_model_between_the_per_source_and_the_all_source_counts(tmp_path, capsys, monkeypatch):
    """attn-only-2l has 25 paths per source and 55 from every source. With the limit at 30 it
    lies between the two counts, where the demo (counting per source) asked for the full path
    view, got none and failed; it now counts as ``attribute`` does and lists the 8 largest."""
    import pathexpand.numeric.attribute as attribution

    w = pe.load("attn-only-2l")
    assert pe.Architecture.from_weights(w).n_logit_paths() <= 30 < attribution.n_paths(w)
    monkeypatch.setattr(attribution, "MAX_PATHS", 30)
    rc = main(["demo", "--out", str(tmp_path), "--no-report"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "max_paths=8)" in out and "7. Draw" in out
