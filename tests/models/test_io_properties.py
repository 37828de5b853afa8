"""Property-based tests of the loaders and writers (hypothesis): random shapes, dtypes, configs
and header lengths round-trip through ``pe.save``/``pe.load`` exactly; every truncation of a
small file is refused with a ``PathexpandError``, never another exception and never a
half-loaded model.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.weights import Config, expected_shapes

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def configs(draw):
    n_layers = draw(st.integers(0, 3))
    n_heads = draw(st.integers(1, 3)) if n_layers else 0
    mlp = draw(st.booleans())
    if n_layers and not n_heads and not mlp:
        mlp = True
    return Config(
        n_layers=n_layers, n_heads=n_heads, d_model=draw(st.sampled_from([2, 4, 6])),
        d_head=draw(st.integers(1, 3)) if n_heads else 0, d_vocab=draw(st.integers(1, 9)),
        n_ctx=draw(st.integers(1, 7)), d_mlp=draw(st.integers(1, 5)) if mlp else None,
        act_fn=draw(st.sampled_from(["relu", "gelu", "gelu_new"])) if mlp else None,
        normalization=draw(st.sampled_from([None, "LN", "LNPre"])),
        positional=draw(st.sampled_from(["standard", "shortformer", None])),
        d_vocab_out=draw(st.one_of(st.none(), st.integers(1, 9))),
        eps=draw(st.sampled_from([1e-5, 1e-6, 0.5])),
    )


def _weights(config, dtype, seed):
    rng = np.random.default_rng(seed)
    return pe.Weights({k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(config).items()},
                      config)


@SETTINGS
@given(config=configs(), dtype=st.sampled_from([np.float32, np.float64]),
       suffix=st.sampled_from([".safetensors", ".npz"]), seed=st.integers(0, 2**16),
       pad=st.integers(0, 1200))
def test_save_load_round_trip(tmp_path, config, dtype, suffix, seed, pad):
    """Any config, either dtype, either format, any header length (the card pads the header)."""
    w = _weights(config, dtype, seed)
    path = tmp_path / f"m{seed}{suffix}"
    pe.save(w, path, card={"pad": "x" * pad})
    back = pe.load(path)
    assert back.config == w.config and back.dtype == w.dtype
    assert set(back.keys()) == set(w.keys())
    for k in w.keys():
        assert np.array_equal(back[k], w[k]), k
    assert back.card["pad"] == "x" * pad


@SETTINGS
@given(config=configs(), seed=st.integers(0, 2**16))
def test_float16_files_load_as_float32(tmp_path, config, seed):
    from safetensors.numpy import save_file

    w = _weights(config, np.float32, seed)
    path = tmp_path / f"h{seed}.safetensors"
    import json

    save_file({k: v.astype(np.float16) for k, v in w.state_dict().items()}, str(path),
              metadata={"pathexpand.config": json.dumps(config.to_dict())})
    back = pe.load(path)
    assert back.dtype == np.float32
    for k in w.keys():
        assert np.array_equal(back[k], w[k].astype(np.float16).astype(np.float32)), k


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_every_truncation_is_refused_cleanly(tmp_path, suffix):
    """Cut a small file at every byte: each load is a PathexpandError (no other exception, no
    model), and the full file still loads."""
    cfg = Config(n_layers=1, n_heads=1, d_model=2, d_head=1, d_vocab=3, n_ctx=2)
    w = _weights(cfg, np.float32, 0)
    full = tmp_path / f"full{suffix}"
    pe.save(w, full)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(PathexpandError):
            pe.load(cut)
    assert np.array_equal(pe.load(full).W_E, w.W_E)


@SETTINGS
@given(data=st.binary(min_size=0, max_size=64), suffix=st.sampled_from([".safetensors", ".npz"]))
def test_random_bytes_are_refused_cleanly(tmp_path, data, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(data)
    with pytest.raises(PathexpandError):
        pe.load(path)
