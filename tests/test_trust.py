"""Trust: each bad input a clear error that changes nothing, each number and picture true.

One test per finding of the "Trust" issue, numbered as there; each reproduces what went wrong
(it failed before the fix) and checks the fix against a second route where there is one.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.cli import main
from pathexpand.errors import PathexpandError, WeightsFileError
from pathexpand.numeric.weights import Config, expected_shapes

_spec = importlib.util.spec_from_file_location(
    "attribute_cases", Path(__file__).parent / "numeric" / "attribute_cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

PROMPT = "self.grumble_count = 0\nself.grumble_c"


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _model(tmp_path, name="m.safetensors", **config):
    """A small random model saved to ``tmp_path / name``; returns (weights, path)."""
    base = dict(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=11, n_ctx=8)
    cfg = Config(**{**base, **config})
    rng = np.random.default_rng(0)
    w = pe.Weights({k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(cfg).items()}, cfg)
    path = tmp_path / name
    pe.save(w, path)
    return w, path


# wrong answers that look plausible ----------------------------------------------------------------
def test_1_every_command_reads_text_one_way(tmp_path, capsys):
    """``\\n`` typed on the command line is a newline for attribute, diagram, report and demo."""
    from pathexpand.cli._app import read_text

    typed = PROMPT.replace("\n", "\\n")
    assert read_text(typed) == PROMPT
    assert read_text("é\\tx\\\\n") == "é\tx\\n" and read_text("\\q") == "\\q"   # nothing else changes
    want = pe.attribute("attn-only-2l", PROMPT)
    code, out, err = run(["attribute", "--text", typed, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["output"] == pytest.approx(want.total, rel=1e-6)
    code, out, err = run(["diagram", "--text", typed, "-o", str(tmp_path / "d.dot")], capsys)
    assert code == 0, err
    assert want.target_label in (tmp_path / "d.dot").read_text()   # the same prompt's target
    page = pe.render.report("attn-only-2l", text=PROMPT, sections=["attribution"])
    code, _, err = run(["report", "--text", typed, "--sections", "attribution", "-o", str(tmp_path / "r.html")],
                       capsys)
    assert code == 0, err
    import re

    def sample_and_target(html):
        return (re.search(r'<pre class="sample">(.*?)</pre>', html, re.S)[1],
                re.search(r"Target: (.*?)\. With", html, re.S)[1])
    assert sample_and_target((tmp_path / "r.html").read_text()) == sample_and_target(page)


def test_2_an_uncertified_top_k_says_so_everywhere(capsys):
    w = cases.random_weights(seed=3, n_layers=3, n_heads=3, d_mlp=8, act_fn="relu", normalization="LN")
    found = pe.top_k_paths(w, [1, 2, 3, 4, 5], target=2, k=5, budget_nodes=1)
    assert not found.complete and not found.certified
    kth = float(np.abs(found.values).min())
    status = found.status()
    assert status.startswith("NOT certified") and f"{found.certificate:.3g}" in status and f"{kth:.3g}" in status
    r = found.ranking()
    assert "not certified" in r.title and r.notes[0] == status
    assert status in found.summary() and found.to_dict()["certified"] is False
    assert "NOT certified" in str(found) and "not certified" in found._repr_html_()
    done = pe.top_k_paths(w, [1, 2, 3, 4, 5], target=2, k=2)
    assert done.certified and done.status().startswith("certified top 2")


def test_3_no_path_view_says_what_works_instead():
    w = cases.random_weights(seed=1, n_layers=3, n_heads=3)
    res = pe.attribute(w, [1, 2, 3], target=2, max_paths=10)
    assert res.paths is None
    with pytest.raises(PathexpandError, match=r"212 paths > max_paths; ask for views=\('path', \.\.\.\)"):
        res.ranking("path")
    listed = pe.attribute(w, [1, 2, 3], target=2, max_paths=10, views=("path",))
    assert len(listed.ranking("path")) == 10                 # asked for: the 10 largest, streamed
    assert res.ranking().of == "nodes"                       # the default falls back to a view it has


def test_4_residual_is_relative_to_the_terms_summed():
    """Terms that cancel to a near-zero output: the error is relative to their size."""
    w = cases.random_weights(seed=2)
    res = pe.attribute(w, [1, 2, 3, 4], target=3)
    tiny = 1e-30
    res.output = res.output * 0 + tiny                     # pretend the output is ~0 ...
    parts = res.path_values
    res.path_values = np.concatenate([parts, -parts.sum(0, keepdims=True)
                                      - sum(res.constants.values())[None] + tiny])
    res.scale = np.full_like(res.scale, tiny)              # ... and so the logits read
    assert res.residual_error() < 1e-6                     # float error of terms of size ~1


def test_5_shares_only_where_parts_add_up():
    w = pe.load("attn-only-2l")
    res = pe.attribute(w, PROMPT)
    paths = res.ranking("path")
    const = sum(float(np.mean(v)) for v in res.constants.values())
    assert sum(r.share for r in paths) + const / res.total == pytest.approx(1.0, abs=1e-5)
    assert "share = contribution / output" in paths.notes[0]
    for view in ("node", "edge"):
        r = res.ranking(view)
        assert all(math.isnan(x.share) for x in r) and "overlap" in r.notes[0]
    norms = pe.evaluate(pe.expand_logits(w), w)
    assert all(math.isnan(x.share) for x in norms) and any("no share column" in n for n in norms.notes)
    neg = pe.attribute(w, PROMPT, diff=(" ", "o"))               # a negative logit difference
    assert neg.total < 0 and all(math.isnan(x.share) for x in neg.ranking("path"))


# inputs that go wrong -----------------------------------------------------------------------------
@pytest.mark.parametrize("target", [640, 896, 1152, 1408])
def test_6_safetensors_whose_header_length_reads_as_pickle_magic_load(tmp_path, target):
    """A header of 640, 896, 1152 or 1408 bytes starts the file with 0x80 0x02..0x05, pickle
    protocol 2..5's magic. The card pads the header to exactly that length."""
    import struct

    w, path = _model(tmp_path, n_layers=0, n_heads=0, d_head=0)       # a short header to pad
    for pad in range(2000):
        pe.save(w, path, card={"pad": "x" * pad})
        n = struct.unpack("<Q", path.read_bytes()[:8])[0]
        if n >= target:
            break
    assert n == target, f"could not pad the header to {target} bytes (got {n})"
    head = path.read_bytes()[:2]
    assert head[0] == 0x80 and 2 <= head[1] <= 5                     # reads as pickle magic
    back = pe.load(path)
    assert np.array_equal(back.W_E, w.W_E) and back.card["pad"] == "x" * pad


def test_6b_a_real_pickle_is_still_refused(tmp_path):
    import pickle

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"W_E": 1}, protocol=2))
    with pytest.raises(WeightsFileError, match="pickle"):
        pe.load(path)


@pytest.mark.parametrize("eps", [-1.0, 0.0, float("nan"), float("inf"), "x", True])
def test_7_eps_is_validated(eps):
    with pytest.raises(PathexpandError, match="eps must be a finite number > 0"):
        Config(n_layers=1, n_heads=1, d_model=4, d_head=2, d_vocab=5, n_ctx=4, eps=eps)


def test_7b_json_writes_null_for_nan(capsys):
    code, out, err = run(["rank", "--metric", "copying", "--json", "--top", "0"], capsys)
    assert code == 0, err

    def no_bare_nan(word):
        raise AssertionError(f"bare {word} in --json output")
    doc = json.loads(out, parse_constant=no_bare_nan)
    assert any(r["value"] is None for r in doc["rows"])


def test_8_any_os_error_is_one_line(tmp_path):
    """A file size limit (EFBIG) while writing: one line, exit 2, no traceback, no partial file."""
    out = tmp_path / "big.svg"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192)); "
            "from pathexpand.cli import main; "
            f"sys.exit(main(['diagram', 'attn-only-1l', '--top', '5', '-o', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "error:" in proc.stderr and "large" in proc.stderr.lower()
    assert not out.exists() and not list(tmp_path.glob(".big.svg.*"))


def test_9_save_is_atomic_keeps_permissions_and_checks_the_folder(tmp_path):
    w, path = _model(tmp_path, "m.npz")
    before = path.read_bytes()
    with pytest.raises(PathexpandError):
        pe.save(w, path.with_name("x.txt"))
    bad = pe.Weights.__new__(pe.Weights)
    with pytest.raises(Exception):
        pe.save(bad, path)                         # fails before writing anything
    assert path.read_bytes() == before
    st = tmp_path / "s.safetensors"
    pe.save(w, st)
    umask = os.umask(0)
    os.umask(umask)
    assert st.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(PathexpandError, match="folder .* does not exist"):
        pe.save(w, tmp_path / "missing" / "m.safetensors")


def test_10_outputs_never_go_over_weights(tmp_path, capsys):
    _, path = _model(tmp_path)
    before = path.read_bytes()
    for args in (["derive", "--model", str(path), "-o", str(path)],
                 ["diagram", str(path), "-o", str(tmp_path / "x.npz")],
                 ["report", str(path), "-o", str(tmp_path / "x.safetensors")]):
        code, _, err = run(args, capsys)
        assert code == 2 and "refusing to write" in err and "weights file" in err
    assert path.read_bytes() == before and not (tmp_path / "x.npz").exists()


def test_11_an_empty_model_name_is_an_error(capsys):
    code, _, err = run(["rank", ""], capsys)
    assert code == 2 and "model name is empty" in err


def test_12_bfloat16_safetensors_load_as_float32(tmp_path):
    import torch
    from safetensors.torch import save_file

    w = pe.load("attn-only-1l")
    sd = {k: torch.as_tensor(np.array(v)).to(torch.bfloat16) for k, v in w.state_dict().items()}
    path = tmp_path / "bf16.safetensors"
    save_file(sd, str(path), metadata={"pathexpand.config": json.dumps(w.config.to_dict())})
    back = pe.load(path)
    assert back.dtype == np.float32
    want = sd["W_E"].float().numpy()                              # torch's own bfloat16 → float32
    assert np.array_equal(back.W_E, want)
    np.testing.assert_allclose(back.W_E, w.W_E, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("call, match", [
    (lambda w: pe.top_k_paths(w, [1, 2, 3], target=2, budget_seconds=float("nan")), "budget_seconds"),
    (lambda w: pe.top_k_paths(w, [1, 2, 3], target=2, budget_nodes=0.5), "budget_nodes"),
    (lambda w: pe.top_k_paths(w, [1, 2, 3], target=2, budget_nodes=0), "budget_nodes"),
    (lambda w: pe.attribute(w, [1, 2, 3], target=2).top(-1), "k must be an int >= 0"),
    (lambda w: pe.attribute(w, [1, 2, 3], target=2, max_paths=-1), "max_paths"),
    (lambda w: pe.detect_heads(w, seq_len=3, n_samples=2).top(-2), "k must be an int >= 0"),
    (lambda w: pe.order_importance(w, [[1, 2, 3]], max_paths=-1), "max_paths"),
])
def test_13_numeric_arguments_are_validated(call, match):
    w = cases.random_weights(seed=4)
    with pytest.raises(PathexpandError, match=match):
        call(w)


@pytest.mark.parametrize("call, match", [
    (lambda w: pe.circuit("L9H9", w), "L9H9"),
    (lambda w: pe.evaluate("foo", w), "not a string"),
    (lambda w: pe.attribute(w, [1, 2], device="cuda:7"), "not available here"),
    (lambda w: pe.forward(w, [1, 2], device="warp:0"), "device"),
])
def test_14_misuse_is_a_pathexpand_error(call, match):
    w = cases.random_weights(seed=5)
    with pytest.raises(PathexpandError, match=match):
        call(w)


def test_15_text_on_a_model_without_a_tokenizer(tmp_path, capsys):
    _, path = _model(tmp_path)
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", str(path), "--output", str(out)], capsys)
    assert code == 2 and "has no tokenizer" in err and "--tokens" in err
    assert not out.exists() and stdout == ""                       # nothing printed or made first
    code, _, err = run(["demo", "nope-model", "-o", str(out)], capsys)
    assert code == 2 and not out.exists()
    for args in (["diagram", str(path), "--tokens", "1,2,3", "-o", str(tmp_path / "d.dot")],
                 ["report", str(path), "--tokens", "1,2,3,4", "--sections", "attribution",
                  "-o", str(tmp_path / "r.html")],
                 ["demo", str(path), "--tokens", "1,2,3", "-o", str(out), "--no-report"]):
        code, _, err = run(args, capsys)
        assert code == 0, (args, err)
    code, _, err = run(["diagram", str(path), "--tokens", "1,x", "-o", str(tmp_path / "e.dot")], capsys)
    assert code == 2 and "comma-separated integers" in err


def test_16_a_tokenizer_wider_than_the_vocabulary_is_refused_at_load(tmp_path):
    w, path = _model(tmp_path, "tiny.safetensors", d_vocab=16)
    pe.save(w, path, card={"tokenizer": "bytes"})
    with pytest.raises(PathexpandError, match="ids up to 255, but this model's d_vocab is 16"):
        pe.load(path)


def test_17_warnings_and_suggestions_read_as_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    cfg = Config(n_layers=1, n_heads=1, d_model=4, d_head=2, d_vocab=5, n_ctx=4, d_mlp=6, act_fn="relu")
    params = {k: rng.standard_normal(s) for k, s in expected_shapes(cfg).items()}
    np.savez(tmp_path / "raw.npz", **params)                     # no stored config: a guess
    code, _, err = run(["rank", str(tmp_path / "raw.npz")], capsys)
    assert code == 0
    assert err.startswith("warning: raw.npz stores no config") and "warnings.warn" not in err
    code, _, err = run(["rank", "attn-only-2"], capsys)
    assert code == 2 and "did you mean 'attn-only-2l'?" in err
    code, _, err = run(["derive", "--positional", "alibi"], capsys)
    assert code == 2 and "'none'" in err and "None" not in err.replace("or None (on", "")
    w = pe.load("attn-only-2l")                                   # an all-zero head: NaN, and why
    sd = {k: np.array(v) for k, v in w.state_dict().items()}
    sd["blocks.0.attn.W_O"][1] = 0
    w0 = pe.Weights(sd, w.config, tokenizer=w.tokenizer)
    scores = pe.copying_scores(w0, n_samples=4)
    assert np.isnan(scores["copying"][0, 1]) and np.isfinite(scores["copying"][1]).all()
    assert any("NaN for L0H1: the circuit is zero" in n for n in scores.ranking().notes)
    r = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w0)).filter(kind="head"), w0, "copying")
    assert np.isnan(r["L0H1"].value) and "or is zero" in r.notes[0]


def test_18_names_and_counts(capsys):
    arch = pe.Architecture(2, 2)
    assert pe.expand_logits(pe.load("attn-only-2l")).n_terms == pe.expand_logits(
        pe.Architecture.from_weights(pe.load("attn-only-2l"))).n_terms
    assert pe.expand_logits(arch)["L1H0@L0H1"].name == "L1H0∘L0H1"
    with pytest.raises(PathexpandError, match="or '@'"):
        pe.expand_logits(arch)["L1H0+L0H1"]
    with pytest.raises(PathexpandError, match="no heads and no MLPs"):
        pe.Architecture(2, 0)
    code, _, err = run(["derive", "--heads", "0"], capsys)
    assert code == 2 and "no heads and no MLPs" in err
