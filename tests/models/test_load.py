"""Loading weights files and bundled models; every validation error; pickles never unpickled.

Second routes: the arrays written (by ``safetensors``/``numpy`` directly, not by our
``save``) are compared element for element, and the forward pass of what was loaded is
compared with the forward pass of the original ``Weights``.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

import pathexpand as pe
import pathexpand.models as models
from pathexpand.errors import PathexpandError, ShapeError, WeightsFileError
from pathexpand.models.tokenizer import ByteTokenizer
from pathexpand.numeric.weights import Config, expected_shapes

CONFIGS = {
    "attn2": Config(n_layers=2, n_heads=3, d_model=8, d_head=4, d_vocab=256, n_ctx=6),
    "shortformer": Config(n_layers=1, n_heads=2, d_model=8, d_head=4, d_vocab=256, n_ctx=6,
                          positional="shortformer"),
    "gpt2": Config(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=256, n_ctx=6, d_mlp=16,
                   act_fn="relu", normalization="LN", eps=1e-6),
    "vocab_out_nopos": Config(n_layers=1, n_heads=2, d_model=8, d_head=4, d_vocab=256, n_ctx=5,
                              positional=None, d_vocab_out=4, attention_dir="bidirectional"),
}
TL_NAMES = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U", "b_U": "unembed.b_U"}
CARD = {"name": "tiny", "description": "a test model", "tokenizer": "bytes", "data": "none",
        "steps": 3, "final_loss": 1.5, "seed": 0, "head_scores": {"L0H0": {"previous_token": 0.5}}}


def params(cfg, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(cfg).items()}


def make(name="attn2", seed=0):
    return pe.Weights(params(CONFIGS[name], seed), CONFIGS[name])


def assert_same(a: pe.Weights, b_params: dict):
    assert set(a.keys()) == set(b_params)
    for k, v in b_params.items():
        np.testing.assert_array_equal(a[k], v)


def assert_same_function(a: pe.Weights, b: pe.Weights):
    toks = np.arange(a.config.n_ctx) % a.config.d_vocab
    np.testing.assert_array_equal(pe.forward(a, toks).numpy(), pe.forward(b, toks).numpy())


# round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_save_load_round_trip(tmp_path, name, suffix):
    w = make(name)
    path = pe.save(w, tmp_path / f"m{suffix}")
    assert path.exists() and not path.with_suffix(".json").exists()  # no card: no sidecar
    back = pe.load(path)
    assert back.config == w.config  # read from the file's metadata, not inferred
    assert_same(back, w.state_dict())
    assert back.name == "m" and back.tokenizer is None


def test_safetensors_file_layout(tmp_path):
    w = make("gpt2")
    path = pe.save(w, tmp_path / "m.safetensors", card=CARD)
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        meta = fh.metadata()
        assert set(fh.keys()) == set(expected_shapes(w.config))
        assert fh.get_tensor("blocks.1.mlp.W_in").dtype == np.float32
    assert json.loads(meta["pathexpand.config"]) == w.config.to_dict()
    assert json.loads(meta["pathexpand.card"]) == CARD
    assert json.loads(path.with_suffix(".json").read_text()) == CARD
    assert models.file_shapes(path)["blocks.1.mlp.W_in"] == (8, 16)


def test_card_name_and_tokenizer(tmp_path):
    path = pe.save(make(), tmp_path / "m.safetensors", card=CARD)
    w = pe.load(path)
    assert w.name == "tiny" and w.card == CARD and isinstance(w.tokenizer, ByteTokenizer)
    # the card inside the file is used when the sidecar is gone
    path.with_suffix(".json").unlink()
    assert pe.load(path).card == CARD
    # the sidecar wins over the metadata copy (the bundled models edit it in place)
    path.with_suffix(".json").write_text(json.dumps({**CARD, "steps": 99}))
    assert pe.load(path).card["steps"] == 99


def test_weights_card_is_saved_by_default(tmp_path):
    w = pe.Weights(params(CONFIGS["attn2"]), CONFIGS["attn2"], card=CARD)
    path = pe.save(w, tmp_path / "m.npz")
    assert not path.with_suffix(".json").exists()
    assert pe.load(path).card == CARD


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_transformer_lens_names_without_metadata(tmp_path, suffix):
    cfg = CONFIGS["gpt2"]
    p = params(cfg)
    foreign = {TL_NAMES.get(k, k): v for k, v in p.items() if ".b_" not in k and k != "b_U"}
    path = tmp_path / f"tl{suffix}"
    if suffix == ".safetensors":
        save_file(foreign, str(path))
    else:
        np.savez(path, **foreign)
    with pytest.warns(UserWarning, match="stores no config.*positional='standard'.*act_fn='gelu_new'"):
        w = pe.load(path)
    # config inferred from shapes (act_fn defaults to gelu_new; eps to 1e-5)
    assert w.config == Config(**{**cfg.to_dict(), "act_fn": "gelu_new", "eps": 1e-5})
    for k, v in p.items():
        if ".b_" in k or k == "b_U":
            assert np.all(w[k] == 0), k  # missing biases read as zeros
        else:
            np.testing.assert_array_equal(w[k], v)


def test_design_names_with_config_in_card_only(tmp_path):
    cfg = CONFIGS["gpt2"]
    save_file(params(cfg), str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps({"config": cfg.to_dict(), "tokenizer": "bytes"}))
    w = pe.load(tmp_path / "m.safetensors")
    assert w.config == cfg  # relu and eps come from the card, shapes could not tell
    assert_same(w, params(cfg))


def test_load_passthrough_dtype_and_str_path(tmp_path):
    w = make()
    assert pe.load(w) is w
    path = pe.save(w, tmp_path / "m.safetensors")
    w64 = pe.load(str(path), dtype="float64")
    assert w64.dtype == np.float64
    np.testing.assert_array_equal(w64.W_E, w.W_E.astype(np.float64))
    with pytest.raises(PathexpandError, match="dtype must be float32 or float64"):
        pe.load(w, dtype="int8")


def test_load_does_not_import_heavy_packages(tmp_path):
    path = pe.save(make(), tmp_path / "m.safetensors")
    code = (
        "import sys, pathexpand as pe\n"
        f"w = pe.load({str(path)!r})\n"
        "assert w.config.n_layers == 2\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# bundled models ---------------------------------------------------------------------------
@pytest.fixture
def bundled(tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(models, "BUNDLED_DIR", folder)
    for name, cfg_name in (("attn-only-2l", "attn2"), ("gpt2-tiny", "gpt2")):
        w = make(cfg_name, seed=len(name))
        models.save(w, folder / f"{name}.safetensors",
                    card={**CARD, "name": name, "config": w.config.to_dict()})
    return folder


def test_bundled_names_and_list_models(bundled):
    assert models.bundled_names() == ["attn-only-2l", "gpt2-tiny"]
    listing = pe.list_models()
    assert [m["name"] for m in listing] == ["attn-only-2l", "gpt2-tiny"]
    m = listing[1]
    assert m["config"] == CONFIGS["gpt2"].to_dict()
    assert m["shapes"] == {k: tuple(v) for k, v in expected_shapes(CONFIGS["gpt2"]).items()}
    assert m["n_params"] == make("gpt2").n_params()
    assert m["card"]["steps"] == 3 and m["path"].endswith("gpt2-tiny.safetensors")


def test_load_bundled_by_name(bundled):
    w = pe.load("attn-only-2l")
    assert w.name == "attn-only-2l" and w.card["name"] == "attn-only-2l"
    assert isinstance(w.tokenizer, ByteTokenizer)
    assert_same(w, params(CONFIGS["attn2"], seed=len("attn-only-2l")))
    assert_same_function(w, make("attn2", seed=len("attn-only-2l")))


def test_unknown_name_lists_bundled(bundled):
    with pytest.raises(PathexpandError, match=r"'attn-only-9l' is neither a bundled model nor an existing file; did you mean 'attn-only-2l'\? bundled models: attn-only-2l, gpt2-tiny"):
        pe.load("attn-only-9l")
    with pytest.raises(WeightsFileError, match=r"no such file: 'nothere/m.safetensors' \(and it is not a bundled model; bundled: attn-only-2l, gpt2-tiny\)"):
        pe.load("nothere/m.safetensors")
    with pytest.raises(PathexpandError, match="cannot load a model from 'int'"):
        pe.load(3)


# refusing pickles -------------------------------------------------------------------------
class _Evil:
    """Unpickling this creates a file: proof that a loader unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "UNPICKLED"
    yield m
    assert not m.exists(), "a loader unpickled a file"


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".pkl", ".ckpt"])
def test_pickle_suffixes_refused(tmp_path, marker, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(pickle.dumps({"W_E": _Evil(marker)}))
    with pytest.raises(WeightsFileError, match=rf"{suffix} files are pickles and are refused \(never unpickled\)"):
        pe.load(path)


def test_torch_save_refused(tmp_path, marker):
    import torch
    path = tmp_path / "m.pt"
    torch.save({"W_E": torch.zeros(3, 2), "evil": _Evil(marker)}, path)
    with pytest.raises(WeightsFileError, match="pickles and are refused"):
        pe.load(path)
    # the same archive renamed: recognised by its contents
    renamed = tmp_path / "m.npz"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(WeightsFileError, match=r"torch.save archive .*never unpickled"):
        pe.load(renamed)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_pickle_bytes_refused(tmp_path, marker, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(pickle.dumps({"W_E": _Evil(marker)}, protocol=4))
    with pytest.raises(WeightsFileError, match=r"is a Python pickle \(protocol 4\).*never unpickled"):
        pe.load(path)


def test_npz_with_object_arrays_refused(tmp_path, marker):
    path = tmp_path / "m.npz"
    p = params(CONFIGS["attn2"])
    p["W_E"] = np.array([_Evil(marker)], dtype=object)
    np.savez(path, **p)  # numpy pickles object arrays inside the .npy member
    with pytest.raises(WeightsFileError, match="object arrays .*never unpickled"):
        pe.load(path)


# files that are not weights --------------------------------------------------------------
def test_text_file_renamed_safetensors(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, these are not weights\n")
    with pytest.raises(WeightsFileError, match=r"is not a .safetensors file \(no safetensors header"):
        pe.load(path)


def test_empty_and_tiny_files(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(WeightsFileError, match="only 0 bytes"):
        pe.load(tmp_path / "e.safetensors")
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(WeightsFileError, match="not a readable .npz archive"):
        pe.load(tmp_path / "e.npz")


def test_truncated_safetensors(tmp_path):
    path = pe.save(make(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(WeightsFileError, match=rf"is truncated: tensors need {len(data)} bytes, the file has {len(data) - 10}"):
        pe.load(path)
    path.write_bytes(data[:20])
    with pytest.raises(WeightsFileError, match="is truncated: its header needs"):
        pe.load(path)


def test_truncated_npz(tmp_path):
    path = pe.save(make(), tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match="not a readable .npz archive"):
        pe.load(path)


def test_corrupt_npz_member(tmp_path):
    path = pe.save(make(), tmp_path / "m.npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("W_E.npy")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # flip a byte of W_E's data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="'W_E.npy' fails its CRC check"):
        pe.load(path)


def test_npz_with_foreign_members(tmp_path):
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(WeightsFileError, match=r"not an .npz of arrays: it holds \['readme.txt'\]"):
        pe.load(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(WeightsFileError, match=r"unsupported file type '.h5'"):
        pe.load(path)
    with pytest.raises(WeightsFileError, match="suffix must be one of"):
        pe.save(make(), tmp_path / "m.pt")


# contents that are wrong ------------------------------------------------------------------
def _write(tmp_path, p, cfg=None):
    path = tmp_path / "m.safetensors"
    meta = {"pathexpand.config": json.dumps(cfg.to_dict())} if cfg else None
    save_file(p, str(path), metadata=meta)
    return path


def test_missing_key(tmp_path):
    cfg = CONFIGS["attn2"]
    p = params(cfg)
    del p["blocks.1.attn.W_V"]
    with pytest.raises(PathexpandError, match=r"m.safetensors: missing key\(s\) \['blocks.1.attn.W_V'\]"):
        pe.load(_write(tmp_path, p, cfg))


def test_unknown_key(tmp_path):
    cfg = CONFIGS["attn2"]
    p = {**params(cfg), "blocks.0.attn.W_Z": np.zeros(3, np.float32)}
    with pytest.raises(PathexpandError, match=r"unknown key\(s\) \['blocks.0.attn.W_Z'\]"):
        pe.load(_write(tmp_path, p, cfg))


def test_shape_mismatch(tmp_path):
    cfg = CONFIGS["attn2"]
    p = {**params(cfg), "blocks.0.attn.W_O": np.zeros((3, 4, 7), np.float32)}
    with pytest.raises(ShapeError, match=r"blocks.0.attn.W_O: expected shape \[3, 4, 8\], got \[3, 4, 7\]"):
        pe.load(_write(tmp_path, p, cfg))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path, bad):
    cfg = CONFIGS["attn2"]
    p = params(cfg)
    p["W_U"][2, 3] = bad
    with pytest.raises(PathexpandError, match="W_U: 1 NaN/Inf value"):
        pe.load(_write(tmp_path, p, cfg))


def test_bad_metadata_and_card(tmp_path):
    cfg = CONFIGS["attn2"]
    path = tmp_path / "m.safetensors"
    save_file(params(cfg), str(path), metadata={"pathexpand.config": json.dumps({**cfg.to_dict(), "rotary_dims": 4})})
    with pytest.raises(WeightsFileError, match=r"config has unknown field\(s\) \['rotary_dims'\]"):
        pe.load(path)
    save_file(params(cfg), str(path), metadata={"pathexpand.config": "{not json"})
    with pytest.raises(WeightsFileError, match="'pathexpand.config' is not valid JSON"):
        pe.load(path)
    save_file(params(cfg), str(path))
    path.with_suffix(".json").write_text("[1, 2")
    with pytest.raises(WeightsFileError, match="model card .* is not valid JSON"):
        pe.load(path)


def test_a_file_without_config_says_what_it_guessed_and_takes_overrides(tmp_path):
    """A plain np.savez of a shortformer model: loading warns that positions were assumed
    standard; positional="shortformer" restores the model (logits equal the bundled one's)."""
    import warnings

    w = pe.load("attn-only-2l")
    path = tmp_path / "plain.npz"
    np.savez(path, **w.state_dict())
    tokens = [[1, 2, 3, 4, 1, 2, 3]]
    with pytest.warns(UserWarning, match="positional='standard'"):
        guessed = pe.load(path)
    assert guessed.config.positional == "standard"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = pe.load(path, positional="shortformer")
    assert fixed.config.positional == "shortformer"
    np.testing.assert_array_equal(pe.forward(fixed, tokens).numpy(), pe.forward(w, tokens).numpy())
    assert not np.allclose(pe.forward(guessed, tokens).numpy(), pe.forward(w, tokens).numpy())
    with pytest.raises(pe.PathexpandError, match="weights files only"):
        pe.load(w, positional="standard")
