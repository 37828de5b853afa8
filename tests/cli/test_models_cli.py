"""``pathexpand models``: the table and ``--json`` agree with the files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import pathexpand.models as pm
from pathexpand.cli import main
from pathexpand.models import train as tr

BUNDLED = ("attn-only-1l", "attn-only-2l", "gelu-2l")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A bundled directory holding one freshly trained tiny model."""
    out = tmp_path_factory.mktemp("bundled")
    spec = tr.ModelSpec(
        name="tiny-2l", description="test", steps=4, batch_size=4, copy_min=4, copy_max=8,
        config=dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=256, n_ctx=20,
                    d_mlp=24, act_fn="gelu_new", normalization="LN", positional="standard"),
    )
    corpus = tr.load_corpus(tr.stdlib_files()[:10])
    tr.run(replace(spec, warmup=1), corpus=corpus, out=out, threads=1)
    return out


def test_json_lists_what_is_on_disk(tiny_dir, monkeypatch, capsys):
    monkeypatch.setattr(pm, "BUNDLED_DIR", tiny_dir)
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["tiny-2l"]
    r = rows[0]
    card = json.loads((tiny_dir / "tiny-2l.json").read_text())
    assert r["card"] == card
    assert r["file_bytes"] == os.path.getsize(tiny_dir / "tiny-2l.safetensors")
    # parameter count from the shapes in DESIGN.md's table (second route: closed form)
    d, H, e, V, T, m, L = 16, 2, 8, 256, 20, 24, 2
    per_layer = 4 * H * d * e + 3 * H * e + d + 2 * d * m + m + d + 4 * d
    assert r["n_params"] == V * d + T * d + L * per_layer + 2 * d + d * V + V
    assert r["config"]["d_mlp"] == 24 and r["default"] is False


def test_table_shows_shapes_loss_and_heads(tiny_dir, monkeypatch, capsys):
    monkeypatch.setattr(pm, "BUNDLED_DIR", tiny_dir)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if "tiny-2l" in l)
    card = json.loads((tiny_dir / "tiny-2l.json").read_text())
    cells = [c.strip() for c in line.split("│")[1:-1]]
    assert cells[:6] == ["tiny-2l", "2", "2", "16", "24", "standard"]
    assert cells[8] == f"{card['final_loss']:.3f}"
    assert cells[7].endswith("KiB")


def test_empty_bundled_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pm, "BUNDLED_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "no bundled models installed" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bundled_models_listed_in_a_subprocess():
    script = Path(sys.executable).with_name("pathexpand")  # the installed console script
    cmd = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from pathexpand.cli import main; sys.exit(main())"]
    proc = subprocess.run(
        cmd + ["models", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(BUNDLED) <= set(rows)
    assert rows["attn-only-2l"]["default"] is True
    assert sum(r["file_bytes"] for r in rows.values()) < 4.5 * 2**20
    two = rows["attn-only-2l"]["card"]
    assert np.max(two["head_scores"]["previous_token"][0]) > 0.5
    assert np.max(two["head_scores"]["induction"][1]) > 0.5
    assert rows["gelu-2l"]["config"]["normalization"] == "LN"
    assert rows["gelu-2l"]["config"]["act_fn"] == "gelu_new"
    for r in rows.values():
        assert r["card"]["tokenizer"] == "bytes"
        assert r["card"]["command"].startswith("python -m pathexpand.models.train --model")
