"""``pathexpand report``: writes one HTML file; bad input is one line on stderr, exit 2, no file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.cli import main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny 2-layer model saved as .safetensors with a card naming the byte tokenizer."""
    rng = np.random.default_rng(0)
    V, d, dh, H, n_ctx = 256, 16, 4, 2, 48
    sd = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n_ctx, d)), "W_U": rng.normal(size=(d, V))}
    for l in range(2):
        for m in "QKV":
            sd[f"blocks.{l}.attn.W_{m}"] = rng.normal(size=(H, d, dh)) / 3
        sd[f"blocks.{l}.attn.W_O"] = rng.normal(size=(H, dh, d)) / 3
    w = pe.Weights.from_state_dict(sd)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    pe.save(w, path, card={"name": "tiny", "tokenizer": "bytes", "description": "a test model"})
    return path


def _run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_writes_the_report(model_file, tmp_path, capsys):
    out = tmp_path / "r.html"
    rc, stdout, stderr = _run(capsys, "report", str(model_file), "-o", str(out),
                              "--sections", "card,derivation", "--text", "ab ab")
    assert rc == 0, stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<math" in page and "a test model" in page
    assert [s for s in ("card", "derivation", "heads") if f'<section id="{s}">' in page] == ["card", "derivation"]
    assert stdout.startswith(f"wrote {out} (") and stdout.count("\n") == 1
    assert os.listdir(tmp_path) == ["r.html"]


def test_default_model_needs_no_argument(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, stdout, stderr = _run(capsys, "report", "--sections", "card")
    assert rc == 0, stderr
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h1>attn-only-2l</h1>" in page and "wrote report.html" in stdout


def test_help_has_an_example(capsys):
    rc, stdout, _ = _run(capsys, "report", "--help")
    assert rc == 0 and "pathexpand report -o report.html" in stdout and "--text" in stdout


@pytest.mark.parametrize("args, message", [
    (["no-such-model"], "'no-such-model' is neither a bundled model nor an existing file"),
    (["{model}", "-o", "{tmp}/missing/r.html"], "does not exist"),
    (["{model}", "-o", "{tmp}"], "is a directory"),
    (["{model}", "-o", "{tmp}/r.svg"], "ending in .html"),
    (["{model}", "--text", "x" * 49], "n_ctx=48"),
    (["{model}", "--sections", "card,nope"], "unknown report section"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(model_file, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.html").write_text("old")
    argv = [a.format(model=model_file, tmp=tmp_path) for a in args]
    rc, stdout, stderr = _run(capsys, "report", *argv)
    assert rc == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert os.listdir(tmp_path) == ["report.html"] and (tmp_path / "report.html").read_text() == "old"


def test_subprocess_exit_code_and_message(tmp_path):
    code = "import sys; from pathexpand.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "report", "nope-model", "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert not (tmp_path / "r.html").exists()


def test_progress_bar_names_each_section_on_a_terminal(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
    rc, stdout, stderr = _run(capsys, "report", str(model_file), "-o", str(tmp_path / "r.html"),
                              "--sections", "card,derivation")
    assert rc == 0 and "wrote" in stdout
    assert "Model card" in stderr and "Derivation" in stderr and "2/2" in stderr


def test_a_model_with_many_heads_draws_the_extremes(tmp_path, capsys):
    """20 heads (> 16 panels): the eigenvalue grid shows the 8 most and 8 least copying heads,
    the ones pe.copying_scores ranks at the two ends."""
    from pathexpand.numeric.weights import Config, expected_shapes

    rng = np.random.default_rng(1)
    cfg = Config(n_layers=5, n_heads=4, d_model=32, d_head=8, d_vocab=256, n_ctx=64, positional="rotary",
                 normalization="RMS", n_key_value_heads=2)
    w = pe.Weights({k: rng.standard_normal(s).astype(np.float32) * 0.3 for k, s in expected_shapes(cfg).items()}, cfg)
    path = tmp_path / "big.safetensors"
    pe.save(w, path, card={"name": "big", "tokenizer": "bytes"})
    out = tmp_path / "r.html"
    rc, _, _ = _run(capsys, "report", str(path), "--sections", "eigenvalues", "-o", str(out))
    html = out.read_text()
    assert rc == 0 and "the 8 most and 8 least copying of 20 heads" in html
    ranked = [r.name for r in pe.copying_scores(w).ranking()]
    drawn = set(__import__("re").findall(r"eig-(L\d+H\d+)", html))
    assert drawn == set(ranked[:8] + ranked[-8:])


def test_a_deep_model_lists_a_depth_limited_expansion():
    """A 30-layer expansion (about 10⁴⁰ terms) is listed and ranked to the largest depth whose
    terms number at most 20,000, with the rest as one remainder; the count is the full one."""
    from pathexpand.render.report_sections import _listable
    from pathexpand.symbolic import expand_logits, expand_scores

    arch = pe.Architecture(30, 9, mlp=True, normalization="RMS", positional="rotary", gated_mlp=True)
    logits = _listable(expand_logits, arch)
    assert logits.max_depth == 1 and logits.n_terms == len(list(logits)) <= 20_000
    assert expand_logits(arch, max_depth=2).n_terms > 20_000
    scores = _listable(expand_scores, arch, "L18H6")
    assert scores.max_depth == 0 and expand_scores(arch, "L18H6", max_depth=1).n_terms > 20_000
    assert _listable(expand_logits, pe.Architecture(2, 4)).max_depth is None


def test_interactive_views_carry_the_circuitsvis_bundle_once(model_file, tmp_path, capsys):
    from pathexpand.render.interactive import circuitsvis_bundle

    bundle = circuitsvis_bundle()
    if bundle is None:
        pytest.skip("circuitsvis is not installed (pip install -e '.[views]')")
    out = tmp_path / "v.html"
    rc, stdout, stderr = _run(capsys, "report", str(model_file), "-o", str(out), "--sections",
                              "summary,interactive", "--text", "ab ab ab")
    page = out.read_text(encoding="utf-8")
    assert rc == 0, stderr
    assert page.count(bundle) == 1 and page.count('data-cv="') == 2 and 'class="pg view"' in page
    assert 'class="view at"' in page
    assert stdout.count("\n") == 1 and "without CircuitsVis" not in stdout


def test_without_circuitsvis_the_report_still_builds_and_says_why(model_file, tmp_path, capsys, monkeypatch):
    from pathexpand.render import interactive

    monkeypatch.setattr(interactive, "circuitsvis_bundle", lambda: None)
    out = tmp_path / "v.html"
    rc, stdout, stderr = _run(capsys, "report", str(model_file), "-o", str(out), "--sections",
                              "interactive", "--text", "ab ab ab")
    page = out.read_text(encoding="utf-8")
    assert rc == 0, stderr
    assert "var CircuitsVis" not in page and "pip install" in page and 'class="pg view"' in page
    assert 'class="view at"' in page   # the token view is ours: it needs no CircuitsVis
    assert stdout.count("\n") == 1 and stdout.rstrip().endswith("without CircuitsVis: no attention heatmaps or prompt colours)")
