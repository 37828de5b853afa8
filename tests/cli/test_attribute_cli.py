"""``pathexpand attribute``: tables, JSON, options and one-line errors.

Second route for the numbers: the forward pass (the JSON's output is the model's logit, and
the listed contributions with the constants add up to it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.cli import main
from pathexpand.numeric.forward import forward
from pathexpand.numeric.weights import Config, expected_shapes


def _model(tmp_path, tokenizer=True, **cfg) -> Path:
    base = dict(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=256, n_ctx=32)
    base.update(cfg)
    c = Config(**base)
    rng = np.random.default_rng(0)
    params = {k: (1 + 0.2 * rng.standard_normal(s) if k.endswith(".w") else 0.3 * rng.standard_normal(s))
              for k, s in expected_shapes(c).items()}
    path = tmp_path / "m.safetensors"
    pe.save(pe.Weights({k: v.astype(np.float32) for k, v in params.items()}, c), path,
            card={"name": "tiny", "tokenizer": "bytes" if tokenizer else None})
    return path


def _json(capsys, args):
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_json_numbers_add_up_to_the_model(tmp_path, capsys):
    path = _model(tmp_path, d_mlp=8, act_fn="gelu_new", normalization="LN")
    doc = _json(capsys, ["attribute", str(path), "--text", "abcab", "--target", "c", "--top", "1000", "--json"])
    logits = forward(pe.load(path), list(b"abcab")).numpy()
    assert doc["model"] == "tiny" and doc["target"] == "logit('c')"
    assert doc["output"] == pytest.approx(float(logits[0, -1, ord("c")]), rel=1e-5)
    assert doc["residual_error"] <= 1e-5
    total = sum(r["value"] for r in doc["paths"]) + sum(doc["constants"].values())
    assert total == pytest.approx(doc["output"], rel=1e-4, abs=1e-4)
    assert len(doc["paths"]) == doc["n_paths"]
    assert {r["name"] for r in doc["nodes"]} == {"L0H0", "L0H1", "MLP0", "L1H0", "L1H1", "MLP1"}
    assert doc["tokens"] == list(b"abcab") and doc["token_at_position"] == "b"


def test_diff_position_and_escapes(tmp_path, capsys):
    path = _model(tmp_path)
    doc = _json(capsys, ["attribute", str(path), "--text", "a\\nb c", "--diff", "\\n", " ",
                         "--position", "1", "--json"])
    logits = forward(pe.load(path), list(b"a\nb c")).numpy()[0, 1]
    assert doc["position"] == 1 and doc["tokens"] == list(b"a\nb c")
    assert doc["output"] == pytest.approx(float(logits[10] - logits[32]), rel=1e-5, abs=1e-6)
    assert len(doc["paths"]) == 10


def test_tokens_without_tokenizer_and_tables(tmp_path, capsys):
    path = _model(tmp_path, tokenizer=False)
    assert main(["attribute", str(path), "--tokens", "1,2,3", "--target", "7", "--top", "3"]) == 0
    out = capsys.readouterr().out
    for word in ("paths", "heads and MLPs", "edges", "residual error", "L1H0"):
        assert word in out
    assert main(["attribute", str(path), "--text", "abc"]) == 2
    assert "no tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "abc", "--target", "a", "--diff", "a", "b"], "either --target or --diff"),
        (["--text", "abc", "--top", "0"], "--top must be"),
        (["--text", "abc", "--position", "40"], "out of range"),
        (["--tokens", "1,x"], "comma-separated"),
        (["--tokens", "1,2", "--text", "ab"], "either --text or --tokens"),
        (["--tokens", "1,300"], "out of range"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    path = _model(tmp_path)
    assert main(["attribute", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_many_paths_use_the_certified_search(tmp_path, capsys):
    path = _model(tmp_path, n_layers=4, n_heads=12, d_model=8, d_head=2)   # 13⁴ paths per source
    doc = _json(capsys, ["attribute", str(path), "--text", "abcd", "--target", "e", "--top", "3",
                         "--budget-seconds", "3", "--json"])
    assert doc["n_paths"] > 20_000 and len(doc["paths"]) == 3
    assert "certificate" in doc and any("branch and bound" in n for n in doc["notes"])
    assert doc["certified"] == doc["complete"]
    values = sorted((abs(r["value"]) for r in doc["paths"]), reverse=True)
    if doc["complete"]:
        assert doc["certificate"] <= values[-1] * (1 + 1e-4)
    assert doc["residual_error"] <= 1e-5


def test_default_model_and_subprocess(tmp_path):
    exe = Path(sys.executable).with_name("pathexpand")
    run = subprocess.run([str(exe), "attribute", "--json", "--top", "3"], capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["model"] == "attn-only-2l" and doc["residual_error"] <= 1e-5
    assert len(doc["paths"]) == 3 and doc["target"].startswith("logit of the top prediction")


def test_a_table_of_top_rows_searches_for_top_rows_only(tmp_path, capsys, monkeypatch):
    """A model between the two counts (27³ = 19,683 paths per source, over 20,000 from every
    source): the path view is listed by search, and the search is for --top paths, not 20,000."""
    import pathexpand.numeric.attribute as attribution

    path = _model(tmp_path, n_layers=3, n_heads=26, d_model=8, d_head=2)
    w = pe.load(path)
    assert pe.Architecture.from_weights(w).n_logit_paths() <= attribution.MAX_PATHS < attribution.n_paths(w)
    asked, real = [], attribution.search
    monkeypatch.setattr(attribution, "search", lambda fz, tgt, k, *a: asked.append(k) or real(fz, tgt, k, *a))
    doc = _json(capsys, ["attribute", str(path), "--text", "abcd", "--target", "e", "--top", "3", "--json"])
    assert asked == [3] and len(doc["paths"]) == 3 and doc["n_paths"] == attribution.n_paths(w)
