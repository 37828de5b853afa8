"""``pathexpand derive``: every option, one-line errors with exit code 2, and the committed
``docs/derivations.md`` is exactly what ``--examples`` generates."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pathexpand.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "derivations.md"


def run(capsys, *args):
    rc = main(["derive", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_default_is_two_layers_four_heads(capsys):
    rc, out, err = run(capsys)
    assert rc == 0 and not err
    assert out.startswith("Path expansion of the logits: 2-layer transformer, 4 heads, standard positions")
    assert "     terms in all: 50" in out.splitlines()


def test_heads_per_layer_and_scores_in_latex(capsys):
    rc, out, _ = run(capsys, "--layers", "2", "--heads", "4,2", "--scores", "L1H1", "--format", "latex")
    assert rc == 0
    assert out.startswith("\\begin{align*}") and out.rstrip().endswith("\\end{align*}")
    assert "attention scores of L1H1: 2-layer transformer, heads (4, 2)" in out
    assert r"\text{direct terms} &: 4" in out  # embed/pos × embed/pos


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown", "mathml"])
def test_every_option_in_every_format(capsys, fmt):
    rc, out, err = run(
        capsys, "--layers", "2", "--heads", "2,1", "--mlp", "--layernorm", "--positional", "shortformer",
        "--biases", "--scores", "L1H0", "--max-depth", "1", "--format", fmt, "--summarize-above", "3",
    )
    assert rc == 0, err
    assert "remainder" in out
    assert "MLP, LayerNorm, biases" in out
    if fmt == "mathml":
        ET.fromstring(out)
    if fmt == "text":
        assert "Σ over" in out  # groups above 3 terms are summarised


def test_positional_none_and_output_file(capsys, tmp_path):
    missing = tmp_path / "sub" / "d.md"           # like diagram and report: no folder is created
    rc, out, err = run(capsys, "--layers", "1", "--output", str(missing))
    assert rc == 2 and err.startswith("error: cannot write") and err.count("\n") == 1
    assert not (tmp_path / "sub").exists()
    target = tmp_path / "d.md"
    rc, out, err = run(capsys, "--layers", "1", "--heads", "3", "--positional", "none",
                       "--format", "markdown", "--output", str(target))
    assert rc == 0 and out == "" and f"wrote {target}" in err
    text = target.read_text(encoding="utf-8")
    assert "no positions" in text and "$$" in text


def test_twelve_by_twelve_is_summarised(capsys):
    rc, out, _ = run(capsys, "--layers", "12", "--heads", "12")
    assert rc == 0
    assert "     Σ over 144 heads (first: L0H0 = A[0,0] ⊗ W_U W_OV[0,0] W_E)" in out.splitlines()
    assert "     terms in all: 46596170244962" in out.splitlines()


@pytest.mark.parametrize("args, message", [
    (["--layers", "2", "--heads", "4", "--scores", "L7H0"],
     "error: 'L7H0' is not in this 2-layer model; heads are L0H0…L1H3"),
    (["--heads", "4;2"], "error: --heads must be a head count like 4"),
    (["--layers", "2", "--heads", "4,2,1"], "error: n_heads has 3 entries"),
    (["--positional", "alibi"], "error: positional must be"),
    (["--format", "pdf"], "error: --format must be one of text, latex, markdown, mathml; got 'pdf'"),
    (["--max-depth", "-1"], "error: max_depth must be None or a non-negative int"),
    (["--summarize-above", "-2"], "error: summarize_above must be a non-negative int"),
    (["--examples", "--layers", "3"], "error: --examples renders fixed architectures; drop --layers"),
    (["--model", "x.safetensors", "--layers", "2"], "error: give either --model or --layers/--heads"),
    (["--gated"], "error: --gated describes the MLPs; add --mlp"),
    (["--parallel", "--norm", "rms"], "error: --parallel describes the MLPs; add --mlp"),
    (["--norm", "batch"], "error: --norm must be ln (LayerNorm) or rms (RMSNorm); got 'batch'"),
    (["--layernorm", "--norm", "rms"], "error: --layernorm means --norm ln; it contradicts --norm rms"),
    (["--kv-heads", "3"], "error: n_kv_heads=3 must divide every layer's head count"),
    (["--kv-heads", "0"], "error: --kv-heads must be a positive number of key/value heads; got 0"),
    (["--examples", "--parallel"], "error: --examples renders fixed architectures; drop --parallel"),
    (["--standalone"], "error: --standalone makes a LaTeX document; add --format latex (got --format text)"),
    (["--model", "x.safetensors", "--norm", "rms"],
     "error: --model reads the architecture from the weights; drop --norm"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    rc, out, err = run(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("fmt, rotation", [
    ("text", "R_(j−i)"), ("latex", "R_{j-i}"), ("markdown", "R_{j-i}"),
    ("mathml", "<msub><mi>R</mi><mrow><mi>j</mi><mo>−</mo><mi>i</mi></mrow></msub>"),
])
def test_modern_flags_derive_the_rotation(capsys, fmt, rotation):
    rc, out, err = run(capsys, "--layers", "2", "--heads", "4,2", "--mlp", "--norm", "rms", "--gated",
                       "--parallel", "--kv-heads", "2", "--positional", "rotary", "--biases",
                       "--scores", "L1H1", "--format", fmt, "--summarize-above", "8")
    assert rc == 0 and not err, err
    assert ("2-layer transformer, heads (4, 2), rotary positions, gated MLP, parallel attention "
            "and MLP, RMSNorm, grouped-query attention (2 key/value heads per layer), biases") in out
    assert rotation in out
    assert "positions no longer enter the residual stream" in " ".join(out.split())
    if fmt == "mathml":
        ET.fromstring(out)


def test_norm_ln_is_the_layernorm_shorthand(capsys):
    rc, a, _ = run(capsys, "--layers", "1", "--mlp", "--norm", "LN", "--biases")
    rc2, b, _ = run(capsys, "--layers", "1", "--mlp", "--layernorm", "--biases")
    assert rc == rc2 == 0 and a == b and "MLP, LayerNorm, biases" in a
    rc, out, _ = run(capsys, "--layers", "2", "--heads", "2", "--mlp", "--parallel")
    assert rc == 0
    assert "     paths per source entering before layer 0: (1 + 2 + 1)² = 16" in out.splitlines()


def test_model_architecture_from_weights(capsys, tmp_path):
    from pathexpand.models.io import save
    from pathexpand.numeric.weights import Weights

    rng = np.random.default_rng(0)
    D, H, dh, V = 8, 3, 4, 11
    sd = {"W_E": rng.normal(size=(V, D)), "W_U": rng.normal(size=(D, V))}
    for w in ("W_Q", "W_K", "W_V"):
        sd[f"blocks.0.attn.{w}"] = rng.normal(size=(H, D, dh))
    sd["blocks.0.attn.W_O"] = rng.normal(size=(H, dh, D))
    path = save(Weights.from_state_dict(sd), tmp_path / "m.safetensors")
    rc, out, err = run(capsys, "--model", str(path), "--scores", "L0H2")
    assert rc == 0, err
    assert out.startswith("Path expansion of the attention scores of L0H2: 1-layer transformer, 3 heads, no positions")


def test_committed_docs_are_generated_by_the_tool(capsys, tmp_path):
    target = tmp_path / "derivations.md"
    rc, _, err = run(capsys, "--examples", "--format", "markdown", "--output", str(target))
    assert rc == 0, err
    generated = target.read_text(encoding="utf-8")
    assert generated.splitlines()[2].startswith(
        "Generated by `pathexpand derive --examples --format markdown --output docs/derivations.md`"
    )
    assert DOCS.read_text(encoding="utf-8") == generated
    for title in ("# Zero layers", "# One layer", "# Two layers", "# Three layers (not written out"):
        assert any(line.startswith(title) for line in generated.splitlines())


def test_standalone_latex_is_a_whole_document_and_the_fragment_stays_the_default(capsys):
    rc, fragment, _ = run(capsys, "--layers", "3", "--heads", "2", "--format", "latex")
    assert rc == 0 and fragment.startswith("\\begin{align*}") and "documentclass" not in fragment
    rc, doc, _ = run(capsys, "--layers", "3", "--heads", "2", "--format", "latex", "--standalone")
    assert rc == 0
    assert doc.startswith("\\documentclass") and doc.rstrip().endswith("\\end{document}")
    assert doc.count("\\begin{document}") == 1 and "\\intertext" not in doc
    # the same terms as the fragment: every named term row of the fragment is in the document
    names = [line.split(" &:")[0] for line in fragment.splitlines()
             if line.startswith("\\mathrm{") and " &:" in line]
    assert len(names) == 2 * 3**3        # (1 + 2)^3 paths from embed and as many from pos
    assert all(f"{n} &:" in doc for n in names)


@pytest.mark.needs_latex
def test_every_worked_example_as_one_document_compiles_without_overfull_boxes(capsys, tmp_path):
    import shutil
    import subprocess

    from pathexpand.cli.derive import examples

    tex = tmp_path / "examples.tex"
    rc, _, err = run(capsys, "--examples", "--format", "latex", "--standalone", "-o", str(tex))
    assert rc == 0 and err.startswith("wrote")
    text = tex.read_text(encoding="utf-8")
    assert text.count("\\section*{") == len(examples()) == 7
    proc = subprocess.run([shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    log = (tmp_path / "examples.log").read_text(encoding="utf-8", errors="replace")
    assert [line for line in log.splitlines() if line.startswith("Overfull")] == []
