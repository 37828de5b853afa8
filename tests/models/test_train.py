"""The training script: data loader and mix, a tiny model that learns, export checked against
the reference forward pass (an independent route), bundled-file round trip, seeds."""

from __future__ import annotations

import json
import sysconfig
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.models import train as tr
from pathexpand.numeric.forward import Recorder, Transformer
from pathexpand.numeric.weights import Config

TINY = tr.ModelSpec(
    name="tiny",
    description="test model",
    config=dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=256, n_ctx=24,
                positional="shortformer"),
    steps=12,
    batch_size=8,
    lr=1e-2,
    copy_fraction=0.5,
    copy_min=4,
    copy_max=8,
    warmup=2,
    eval_every=6,
)


@pytest.fixture(scope="module")
def corpus():
    return tr.load_corpus(tr.stdlib_files()[:40])


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _longest_copy(row: np.ndarray) -> int:
    """Longest L with row[d:d+L] == row[s:s+L] for some d >= s + L (brute force)."""
    b = bytes(int(x) % 256 for x in row)
    best = 0
    for L in range(1, len(b) // 2 + 1):
        found = any(b.find(b[s : s + L], s + L) >= 0 for s in range(len(b) - 2 * L + 1))
        if not found:
            break
        best = L
    return best


# data ------------------------------------------------------------------------------------
def test_stdlib_files_skip_test_dirs(tmp_path):
    keep = [_write(tmp_path, "a.py", "x"), _write(tmp_path, "pkg/ok.py", "y"),
            _write(tmp_path, "pkg/sub/deep.py", "z")]
    for rel in ("test/t.py", "pkg/tests/t.py", "idlelib/i.py", "site-packages/s.py",
                "pkg/tests/inner/t.py", "pkg/readme.txt"):
        _write(tmp_path, rel, "no")
    assert tr.stdlib_files(tmp_path) == keep


def test_real_stdlib_has_no_excluded_parts():
    files = tr.stdlib_files()
    assert len(files) > 100
    assert files == sorted(files, key=lambda p: str(p))
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in files:
        parts = path.relative_to(root).parts
        assert not (set(parts) & {"test", "tests", "idlelib", "site-packages"}), path
        assert path.suffix == ".py"


def test_missing_stdlib_dir_is_an_error(tmp_path):
    with pytest.raises(PathexpandError, match="does not exist"):
        tr.stdlib_files(tmp_path / "nowhere")


def test_corpus_holds_out_every_nth_file(tmp_path):
    files = [_write(tmp_path, f"m{i}.py", f"<{i}>" * (i + 1)) for i in range(5)]
    c = tr.load_corpus(files, heldout_every=2, root=tmp_path)
    assert c.heldout_files == ("m0.py", "m2.py", "m4.py")
    assert c.train_files == ("m1.py", "m3.py")
    assert c.train.tobytes() == b"<1><1>" + b"<3>" * 4
    assert c.heldout.tobytes() == b"<0>" + b"<2>" * 3 + b"<4>" * 5


def test_copy_rows_hold_one_copied_chunk():
    rng = np.random.default_rng(5)
    rows = tr.copy_rows(rng, 20, 129, lo=8, hi=64)
    assert rows.shape == (20, 129) and rows.dtype == np.int64
    assert rows.min() >= 0 and rows.max() < 256
    lengths = [_longest_copy(r) for r in rows]
    assert min(lengths) >= 8
    # random bytes repeat by chance in 2-3 byte runs only; the copied chunk is 8..64 long
    assert max(lengths) <= 64 + 3


def test_skip_rows_repeat_the_token_two_back():
    rows = tr.skip_rows(np.random.default_rng(2), 200, 64, p=0.5)
    same = rows[:, 2:] == rows[:, :-2]
    # P(x_t = x_{t-2}) = p + (1 - p) / 256; 200 * 62 draws: binomial std ~ 0.0045
    assert abs(same.mean() - (0.5 + 0.5 / 256)) < 0.02
    assert abs((rows[:, 1:] == rows[:, :-1]).mean() - 1 / 256) < 0.01  # no previous-token repeat


def test_synthetic_rows_use_the_given_alphabet():
    rng = np.random.default_rng(0)
    for rows in (tr.copy_rows(rng, 10, 40, lo=4, hi=8, vocab=tr.PRINTABLE),
                 tr.skip_rows(rng, 10, 40, vocab=tr.PRINTABLE)):
        assert set(np.unique(rows)) <= set(tr.PRINTABLE)
    assert len(tr.PRINTABLE) == 97 and set(tr.PRINTABLE) == set(b"\t\n" + bytes(range(32, 127)))


def test_batch_has_the_stated_mix(corpus):
    spec = replace(TINY, batch_size=20, copy_fraction=0.65)
    batch = tr.make_batch(np.random.default_rng(0), corpus, spec, 25)
    train = corpus.train.tobytes()
    is_text = np.array([bytes(row.astype(np.uint8)) in train for row in batch])
    assert is_text.sum() == 20 - 13  # round(20 * 0.65) = 13 copy rows
    assert all(_longest_copy(row) >= 4 for row in batch[~is_text])


def test_batch_with_skip_rows(corpus):
    spec = replace(TINY, batch_size=20, copy_fraction=0.35, skip_fraction=0.3, copy_vocab="printable")
    batch = tr.make_batch(np.random.default_rng(1), corpus, spec, 64)
    train = corpus.train.tobytes()
    is_text = np.array([bytes(row.astype(np.uint8)) in train for row in batch])
    skip_like = (batch[:, 2:] == batch[:, :-2]).mean(1) > 0.3  # text and copy rows: far fewer
    assert is_text.sum() == 20 - 7 - 6
    assert (skip_like & ~is_text).sum() == 6
    assert set(np.unique(batch[~is_text])) <= set(tr.PRINTABLE)
    with pytest.raises(PathexpandError, match="exceeds 1"):
        tr.make_batch(np.random.default_rng(1), corpus, replace(spec, skip_fraction=0.7), 64)
    # text rows never come from held-out files
    held = corpus.heldout.tobytes()
    assert not any(bytes(row.astype(np.uint8)) in held and bytes(row.astype(np.uint8)) not in train
                   for row in batch[is_text])


# training and export ---------------------------------------------------------------------
def test_training_lowers_heldout_loss(corpus):
    torch.manual_seed(TINY.seed)
    before = tr.heldout_loss(tr.build_model(Config(**TINY.config)), corpus.heldout, n_windows=32)
    model, history = tr.train(TINY, corpus, steps=40, log_every=10, threads=1)
    after = tr.heldout_loss(model, corpus.heldout, n_windows=32)
    assert before > 5.0  # ~ln 256 at initialisation
    assert after < before - 1.0
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert history[-1]["loss"] < history[0]["loss"]


def test_seeds_reproduce_bit_for_bit(corpus):
    a, _ = tr.train(TINY, corpus, steps=5, seed=3, threads=1)
    b, _ = tr.train(TINY, corpus, steps=5, seed=3, threads=1)
    c, _ = tr.train(TINY, corpus, steps=5, seed=4, threads=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


CONFIGS = {
    "attn-only-2l-shortformer": dict(n_layers=2, positional="shortformer"),
    "attn-only-1l-standard": dict(n_layers=1, positional="standard"),
    "ln-mlp-gelu_new": dict(n_layers=2, d_mlp=32, act_fn="gelu_new", normalization="LN",
                            positional="standard"),
    "ln-mlp-relu-shortformer": dict(n_layers=2, d_mlp=32, act_fn="relu", normalization="LN",
                                    positional="shortformer"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_equals_reference_forward(corpus, name):
    cfg = dict(d_model=16, n_heads=2, d_head=8, d_vocab=256, n_ctx=24, **CONFIGS[name])
    spec = replace(TINY, config=cfg)
    model, _ = tr.train(spec, corpus, steps=6, threads=1)  # a few steps: biases and LN weights move
    weights = tr.export(model)
    assert weights.has_biases()
    assert set(weights.keys()) == set(model.state_dict())
    tokens = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(3, 24)))
    rec = Recorder()
    with torch.no_grad():
        fused = model(tokens)  # scaled_dot_product_attention
        explicit = model(tokens, rec=rec)  # softmax written out, recorded
    patterns = rec.cache(tokens, model.config, explicit).patterns
    ref, cache = pe.run_with_cache(weights, tokens)
    assert type(model) is Transformer  # the trained module is the one pe.forward runs
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patterns, cache.patterns, rtol=1e-5, atol=1e-6)


def test_model_state_dict_names_are_design_names():
    model = tr.build_model(Config(**tr.SPECS["gelu-2l"].config))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == pe.numeric.weights.expected_shapes(
        Config(**tr.SPECS["gelu-2l"].config)
    )


# bundled files ---------------------------------------------------------------------------
CARD_KEYS = {"name", "description", "config", "tokenizer", "data", "steps", "batch_size", "lr",
             "final_loss", "loss_repeated_half", "seed", "train_seconds", "machine", "command",
             "head_scores", "positional"}


def test_run_writes_loadable_bundled_files(corpus, tmp_path):
    weights, card = tr.run(TINY, corpus=corpus, out=tmp_path, steps=6, threads=1)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["tiny.json", "tiny.safetensors"]
    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert CARD_KEYS <= set(on_disk)
    assert on_disk["data"]["mix"]["copy_rows"] == 0.5
    assert on_disk["command"].startswith("python -m pathexpand.models.train --model tiny")
    assert np.array(on_disk["head_scores"]["induction"]).shape == (1, 2)
    loaded = pe.load(tmp_path / "tiny.safetensors")
    assert loaded.config == weights.config
    assert loaded.dtype == np.float32
    for k, v in weights.state_dict().items():
        np.testing.assert_array_equal(loaded[k], v)
    assert loaded.card["final_loss"] == card["final_loss"]
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("def f():")) == "def f():"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tiny.safetensors"), framework="np") as fh:
        assert Config(**json.loads(fh.metadata()["pathexpand.config"])) == weights.config


def test_require_heads_refuses_an_untrained_model(corpus, tmp_path):
    spec = replace(TINY, config=dict(TINY.config, n_layers=2), require_heads=True)
    with pytest.raises(PathexpandError, match="induction"):
        tr.run(spec, corpus=corpus, out=tmp_path, steps=2, threads=1)
    assert list(tmp_path.iterdir()) == []


def test_command_line(monkeypatch, corpus, tmp_path, capsys):
    monkeypatch.setattr(tr, "SPECS", {"tiny": TINY})
    monkeypatch.setattr(tr, "load_corpus", lambda: corpus)
    assert tr.main(["--model", "tiny", "--steps", "3", "--seed", "7", "--out", str(tmp_path), "--threads", "1"]) == 0
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["seed"] == 7 and card["steps"] == 3
    assert card["command"] == (
        "python -m pathexpand.models.train --model tiny --steps 3 --seed 7 --threads 1"
    )
    err = capsys.readouterr().err
    assert "step     3 loss" in err and "wrote tiny" in err
    with pytest.raises(SystemExit):
        tr.main(["--model", "no-such-model"])


def test_bad_arguments():
    with pytest.raises(PathexpandError, match="steps must be >= 1"):
        tr.train(TINY, None, steps=0)
    with pytest.raises(PathexpandError, match="does not fit"):
        tr.copy_rows(np.random.default_rng(0), 1, 10, lo=8, hi=64)
