"""``pathexpand rank``: table and ``--json`` agree with ``pe.evaluate``; bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.cli import _app, main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A 2-layer model whose virtual head L1H0∘L0H0 is designed to dominate."""
    rng = np.random.default_rng(0)
    d, r, V = 8, 2, 10
    e = np.eye(d)
    W_V = 0.05 * rng.standard_normal((2, 2, d, r))
    W_O = 0.05 * rng.standard_normal((2, 2, r, d))
    W_V[0, 0], W_O[0, 0] = 3 * e[:, [2, 3]], 3 * e[[0, 1], :]
    W_V[1, 0], W_O[1, 0] = 3 * e[:, [0, 1]], 3 * e[[4, 5], :]
    params = {"W_E": rng.standard_normal((V, d)), "W_U": rng.standard_normal((d, V)),
              "W_pos": rng.standard_normal((6, d))}
    for l in range(2):
        params.update({f"blocks.{l}.attn.W_V": W_V[l], f"blocks.{l}.attn.W_O": W_O[l],
                       f"blocks.{l}.attn.W_Q": rng.standard_normal((2, d, r)),
                       f"blocks.{l}.attn.W_K": rng.standard_normal((2, d, r))})
    path = tmp_path_factory.mktemp("rank") / "designed.safetensors"
    pe.save(pe.Weights.from_state_dict(params), path)
    return path


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_matches_evaluate(model_file, capsys):
    code, out, _ = run(["rank", str(model_file), "--json", "--top", "3"], capsys)
    assert code == 0
    doc = json.loads(out)
    w = pe.load(model_file)
    want = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w)
    assert doc["metric"] == "frobenius" and doc["n_terms"] == len(want) == 18
    assert [r["name"] for r in doc["rows"]] == want.names[:3]
    assert doc["rows"][0]["name"] == "L1H0∘L0H0"
    assert doc["rows"][0]["value"] == pytest.approx(want[0].value, rel=1e-6)
    assert doc["rows"][0]["path"] == ["embed", "L0H0", "L1H0"]


def test_table_scores_and_options(model_file, capsys):
    code, out, _ = run(["rank", str(model_file), "--top", "4"], capsys)
    assert code == 0
    assert "L1H0∘L0H0" in out and "frobenius" in out and "4 of 18 terms shown" in out
    code, out, _ = run(["rank", str(model_file), "--scores", "L1H0", "--metric", "spectral", "--json",
                        "--top", "0"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["head"] == "L1H0" and len(doc["rows"]) == doc["n_terms"] == (1 + 2) ** 2 * 2**2  # (1 + H_0)² paths × 2² sources
    assert all(r["name"].startswith("q:") for r in doc["rows"])
    code, out, _ = run(["rank", str(model_file), "--scores", "L1H0", "--positional", "--json"], capsys)
    rows = json.loads(out)["rows"]
    assert code == 0 and rows and all(r["path"][0] == "pos" and r["key_path"][0] == "pos" for r in rows)
    code, out, _ = run(["rank", str(model_file), "--metric", "copying", "--scope", "residual", "--json"],
                       capsys)
    assert code == 0 and json.loads(out)["scope"] == "residual"
    code, out, _ = run(["rank", str(model_file), "--baseline", "random", "--json", "--top", "1"], capsys)
    assert code == 0 and "ratio" in json.loads(out)["rows"][0]


def test_default_model_is_used_without_argument(model_file, capsys, monkeypatch):
    monkeypatch.setattr(_app, "DEFAULT_MODEL", str(model_file))
    code, out, _ = run(["rank", "--json", "--top", "1"], capsys)
    assert code == 0 and json.loads(out)["rows"][0]["name"] == "L1H0∘L0H0"


@pytest.mark.parametrize("args, message", [
    (["--scores", "L7H0"], "'L7H0' is not in this 2-layer model"),
    (["--metric", "nuclear"], "--metric must be one of frobenius, spectral, copying"),
    (["--scope", "half"], "--scope must be full or residual"),
    (["--top", "-1"], "--top must be >= 0"),
    (["--baseline", "uniform"], "--baseline must be random"),
])
def test_bad_input_exits_2_with_one_line(model_file, capsys, args, message):
    code, _, err = run(["rank", str(model_file), *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_model_file(capsys, tmp_path):
    code, _, err = run(["rank", str(tmp_path / "nope.safetensors")], capsys)
    assert code == 2 and "nope.safetensors" in err


def test_rotary_score_terms_take_an_offset(capsys):
    """modern-2l has rotary positions: --scores needs --offset, which picks W_Q R̃_Δ W_Kᵀ; the
    JSON rows equal pe.evaluate at that offset."""
    for head in ("L0H1", "L1H1"):
        code, out, err = run(["rank", "modern-2l", "--scores", head], capsys)
        assert code == 2 and out == "" and err.startswith(f"error: {head} reads rotated queries and keys")
    code, out, _ = run(["rank", "modern-2l", "--scores", "L1H1", "--offset", "-1", "--json", "--top", "3"], capsys)
    assert code == 0
    doc = json.loads(out)
    w = pe.load("modern-2l")
    ref = pe.evaluate(pe.expand_scores(w, "L1H1"), w, offset=-1)
    assert doc["offset"] == -1 and [r["name"] for r in doc["rows"]] == [r.name for r in ref[:3]]
    assert doc["rows"][0]["value"] == pytest.approx(ref[0].value)
    for args, message in ((["rank", "modern-2l", "--offset", "-1"], "--offset is for the score terms"),
                          (["rank", "--scores", "L1H0", "--offset", "1"], "positional='shortformer'"),
                          (["rank", "modern-2l", "--scores", "L1H1", "--offset", "-1", "--positional"],
                           "a rotary model has no W_pos")):
        code, out, err = run(args, capsys)
        assert code == 2 and message in err and err.count("\n") == 1
