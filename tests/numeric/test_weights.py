import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError, ShapeError, UnsupportedArchitecture
from pathexpand.numeric.weights import Config, expected_shapes


def random_params(cfg: Config, rng, dtype=np.float32):
    return {k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(cfg).items()}


CFG = Config(n_layers=2, n_heads=3, d_model=8, d_head=4, d_vocab=11, n_ctx=6)
MLP_CFG = Config(n_layers=1, n_heads=2, d_model=8, d_head=4, d_vocab=11, n_ctx=6,
                 d_mlp=16, act_fn="gelu", normalization="LN")


def test_shapes_follow_design():
    s = expected_shapes(CFG)
    assert s["W_E"] == (11, 8) and s["W_pos"] == (6, 8) and s["W_U"] == (8, 11)
    assert s["blocks.1.attn.W_Q"] == (3, 8, 4) and s["blocks.1.attn.W_O"] == (3, 4, 8)
    assert s["blocks.0.attn.b_V"] == (3, 4) and s["blocks.0.attn.b_O"] == (8,)
    m = expected_shapes(MLP_CFG)
    assert m["blocks.0.mlp.W_in"] == (8, 16) and m["blocks.0.ln2.w"] == (8,) and m["ln_final.b"] == (8,)


def test_round_trip_and_stacked(rng):
    params = random_params(CFG, rng)
    w = pe.Weights(params, CFG)
    sd = w.state_dict()
    assert set(sd) == set(params)
    for k in params:
        np.testing.assert_array_equal(sd[k], params[k])
    assert w.W_Q.shape == (2, 3, 8, 4)
    np.testing.assert_array_equal(w.W_Q[1], params["blocks.1.attn.W_Q"])
    assert w.W_Q is w.W_Q  # cached, not re-stacked on each access
    again = pe.Weights.from_state_dict(sd)
    assert again.config == CFG
    # the caller's arrays are copied: mutating them changes nothing
    params["W_E"][:] = 0
    assert np.any(w.W_E != 0)
    with pytest.raises(ValueError):
        w.W_E[0, 0] = 1.0


def test_from_state_dict_infers_config_and_zero_biases(rng):
    params = {k: v for k, v in random_params(MLP_CFG, rng).items() if ".b_" not in k and not k.endswith("b_U")}
    w = pe.Weights.from_state_dict(params, act_fn="gelu")
    assert w.config == MLP_CFG
    assert np.all(w["blocks.0.attn.b_Q"] == 0) and np.all(w["b_U"] == 0)


def test_from_state_dict_transformer_lens_names(rng):
    params = random_params(CFG, rng)
    tl = {{"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U",
           "b_U": "unembed.b_U"}.get(k, k): v for k, v in params.items()}
    tl["blocks.0.attn.mask"] = np.ones((6, 6), dtype=bool)
    tl["blocks.0.attn.IGNORE"] = np.array(-1e5)
    w = pe.Weights.from_state_dict(tl)
    np.testing.assert_array_equal(w.W_E, params["W_E"])


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda p: p.pop("blocks.1.attn.W_V"), PathexpandError, r"missing key\(s\) \['blocks.1.attn.W_V'\]"),
        (lambda p: p.__setitem__("blocks.0.attn.W_X", np.zeros(3, np.float32)), PathexpandError, "unknown key"),
        (lambda p: p.__setitem__("W_U", np.zeros((8, 12), np.float32)), ShapeError, r"W_U: expected shape \[8, 11\], got \[8, 12\]"),
        (lambda p: p["W_E"].__setitem__((0, 0), np.nan), PathexpandError, "W_E: 1 NaN/Inf"),
        (lambda p: p.__setitem__("W_E", np.zeros((11, 8), np.int64)), PathexpandError, "floating-point"),
    ],
)
def test_validation(rng, mutate, error, match):
    params = random_params(CFG, rng)
    mutate(params)
    with pytest.raises(error, match=match):
        pe.Weights(params, CFG)


def test_mixture_of_experts_named(rng):
    params = random_params(CFG, rng)
    params["blocks.0.mlp.experts.0.W_in"] = np.zeros(3, np.float32)
    with pytest.raises(UnsupportedArchitecture, match="mixture of experts"):
        pe.Weights.from_state_dict(params)


def test_modern_blocks_read_from_a_bare_state_dict(rng):
    """RMSNorm (ln weights, no biases), grouped-query K/V (TransformerLens's ``_W_K``), gated MLPs
    and rotary positions (TransformerLens's ``rotary_sin`` buffer) are read off the keys alone."""
    cfg = Config(n_layers=1, n_heads=4, d_model=8, d_head=4, d_vocab=5, n_ctx=6, d_mlp=12, act_fn="silu",
                 normalization="RMS", positional="rotary", n_key_value_heads=2, rotary_dim=2,
                 rotary_base=5e5, gated_mlp=True)
    params = {k.replace("attn.W_K", "attn._W_K"): rng.standard_normal(s) for k, s in expected_shapes(cfg).items()}
    pos = np.arange(6)[:, None]
    params["blocks.0.attn.rotary_sin"] = np.sin(pos / 5e5 ** (np.arange(1)[None] / 1)).repeat(2, 1)
    w = pe.Weights.from_state_dict(params, act_fn="silu")
    assert w.config.normalization == "RMS" and w.config.gated_mlp and w.config.n_key_value_heads == 2
    assert (w.config.positional, w.config.rotary_dim, w.config.n_ctx) == ("rotary", 2, 6)
    assert w["blocks.0.attn.W_K"].shape == (2, 8, 4)


def test_config_errors():
    with pytest.raises(PathexpandError, match="rotary_dim must be an even int"):
        Config(n_layers=1, n_heads=1, d_model=4, d_head=4, d_vocab=5, n_ctx=4, positional="rotary", rotary_dim=3)
    with pytest.raises(PathexpandError, match="n_key_value_heads must divide n_heads=4"):
        Config(n_layers=1, n_heads=4, d_model=4, d_head=4, d_vocab=5, n_ctx=4, n_key_value_heads=3)
    with pytest.raises(PathexpandError, match="gated_mlp=True needs an MLP"):
        Config(n_layers=1, n_heads=1, d_model=4, d_head=4, d_vocab=5, n_ctx=4, gated_mlp=True)
    with pytest.raises(UnsupportedArchitecture, match="ALiBi"):
        Config(n_layers=1, n_heads=1, d_model=4, d_head=4, d_vocab=5, n_ctx=4, positional="alibi")
    with pytest.raises(UnsupportedArchitecture, match="activation 'solu'"):
        Config(n_layers=1, n_heads=1, d_model=4, d_head=4, d_vocab=5, n_ctx=4, d_mlp=8, act_fn="solu")
    with pytest.raises(PathexpandError, match="unknown config field"):
        pe.Weights.from_state_dict({"W_E": np.zeros((3, 2))}, d_modle=3)


def test_astype_and_arch(rng):
    w = pe.Weights(random_params(CFG, rng), CFG).astype(np.float64)
    assert w.dtype == np.float64
    arch = pe.Architecture.from_weights(w)
    assert arch.n_heads == (3, 3) and arch.biases and not arch.mlp
