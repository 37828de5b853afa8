"""TransformerLens and Hugging Face models → ``Weights``: config mapping, weight mapping,
unsupported features named, missing packages naming their extra.

Second routes: the libraries' own parameters (``model.W_Q``, HF's fused ``c_attn`` sliced by
hand) and the libraries' own forward passes.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import transformer_lens as tl
import transformers

import pathexpand as pe
from pathexpand.errors import MissingDependencyError, PathexpandError, UnsupportedArchitecture

BASE = dict(n_layers=2, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_vocab=20, device="cpu", seed=0)



def hooked(**kwargs):
    model = tl.HookedTransformer(tl.HookedTransformerConfig(**{**BASE, **kwargs}))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.rsplit(".", 1)[-1].startswith("b"):
                p.normal_(0, 0.2)  # TL initialises biases to zero
    return model.eval()


def gpt2(**kwargs):
    cfg = transformers.GPT2Config(**{**dict(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=16,
                                            bos_token_id=0, eos_token_id=0), **kwargs})
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF's init (std 0.02, zero biases) leaves every GELU near 0
        for key, p in model.named_parameters():
            if key.endswith("bias") or ".ln_" in key:
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    return model


# TransformerLens ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, expect",
    [
        (dict(attn_only=True, normalization_type=None),
         dict(d_mlp=None, act_fn=None, normalization=None, positional="standard")),
        (dict(attn_only=True, normalization_type=None, positional_embedding_type="shortformer"),
         dict(positional="shortformer")),
        (dict(d_mlp=24, act_fn="gelu", normalization_type="LN", eps=1e-6),
         dict(d_mlp=24, act_fn="gelu", normalization="LN", eps=1e-6)),
        (dict(d_mlp=24, act_fn="gelu_new", normalization_type="LNPre"), dict(normalization="LNPre")),
        (dict(attn_only=True, normalization_type=None, attention_dir="bidirectional", d_vocab_out=5),
         dict(attention_dir="bidirectional", d_vocab_out=5)),
    ],
)
def test_from_transformer_lens(kwargs, expect):
    model = hooked(**kwargs)
    w = pe.load(model)
    for field, value in {**dict(n_layers=2, n_heads=4, d_model=16, d_head=4, d_vocab=20, n_ctx=8), **expect}.items():
        assert getattr(w.config, field) == value, field
    # stacked weights equal TL's own stacked properties
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
        np.testing.assert_array_equal(getattr(w, name), getattr(model, name).detach().numpy())
    np.testing.assert_array_equal(w.W_U, model.W_U.detach().numpy())
    np.testing.assert_array_equal(w.b_U, model.b_U.detach().numpy())
    toks = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pe.forward(w, toks), model(toks), rtol=1e-5, atol=1e-5)
    # load() dispatches on the object without being told what it is
    again = pe.load(model)
    assert again.config == w.config
    np.testing.assert_array_equal(again.W_E, w.W_E)


@pytest.mark.parametrize(
    "kwargs, feature",
    [
        (dict(positional_embedding_type="alibi"), "ALiBi"),
        (dict(act_fn="solu_ln"), "MLP activation 'solu_ln'"),
        (dict(normalization_type="LN", final_rms=True), "RMSNorm final norm"),
        (dict(positional_embedding_type="rotary", use_NTK_by_parts_rope=True), "rescaled rotary"),
        (dict(use_local_attn=True, window_size=2, attn_types=["global", "local"]), "local attention"),
        (dict(scale_attn_by_inverse_layer_idx=True), "inverse layer index"),
        (dict(use_attn_scale=False), "1/sqrt\\(d_head\\) scale"),
        (dict(attn_scores_soft_cap=30.0), "soft-capped attention scores"),
        (dict(num_experts=2, experts_per_token=1), "mixture-of-experts"),
        (dict(use_qk_norm=True), "query/key normalisation"),
        (dict(post_embedding_ln=True), "LayerNorm after the embedding"),
    ],
)
def test_unsupported_transformer_lens_features(kwargs, feature):
    model = hooked(**{"d_mlp": 16, "act_fn": "relu", **kwargs})
    with pytest.raises(UnsupportedArchitecture, match=feature):
        pe.load(model)
    with pytest.raises(UnsupportedArchitecture, match=feature):
        pe.load(model)


def test_from_transformer_lens_rejects_other_objects():
    with pytest.raises(PathexpandError, match="cannot load a model from 'dict'"):
        pe.load({"cfg": 1})


# Hugging Face --------------------------------------------------------------------------------
def test_from_hf_weight_map():
    hf = gpt2()
    w = pe.load(hf)
    c = w.config
    assert (c.n_layers, c.n_heads, c.d_model, c.d_head, c.d_vocab, c.n_ctx, c.d_mlp) == (2, 4, 32, 8, 50, 16, 128)
    assert (c.act_fn, c.normalization, c.positional, c.eps) == ("gelu_new", "LN", "standard", 1e-5)
    blk = hf.transformer.h[1]
    c_attn = blk.attn.c_attn.weight.detach().numpy()      # [d, 3d], columns q | k | v, head-major
    bias = blk.attn.c_attn.bias.detach().numpy()
    for h in range(4):
        cols = slice(8 * h, 8 * (h + 1))
        np.testing.assert_array_equal(w.W_Q[1, h], c_attn[:, cols])
        np.testing.assert_array_equal(w.W_K[1, h], c_attn[:, 32:][:, cols])
        np.testing.assert_array_equal(w.W_V[1, h], c_attn[:, 64:][:, cols])
        np.testing.assert_array_equal(w.b_V[1, h], bias[64:][cols])
        np.testing.assert_array_equal(w.W_O[1, h], blk.attn.c_proj.weight.detach().numpy()[cols])
    np.testing.assert_array_equal(w.W_U, hf.lm_head.weight.detach().numpy().T)
    assert np.all(w.b_U == 0)
    np.testing.assert_array_equal(w["blocks.1.ln2.w"], blk.ln_2.weight.detach().numpy())
    np.testing.assert_array_equal(w["blocks.1.mlp.W_out"], blk.mlp.c_proj.weight.detach().numpy())


@pytest.mark.parametrize("kwargs", [dict(activation_function="relu", n_inner=48),
                                    dict(activation_function="gelu"),
                                    dict(activation_function="gelu_pytorch_tanh", layer_norm_epsilon=1e-6)])
def test_from_hf_forward_variants(kwargs):
    hf = gpt2(**kwargs)
    toks = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(toks).logits
    w = pe.load(hf)  # dispatch on the object
    ours = pe.forward(w, toks)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-5


@pytest.mark.parametrize(
    "kwargs, feature",
    [
        (dict(scale_attn_by_inverse_layer_idx=True), "inverse layer index"),
        (dict(scale_attn_weights=False), "1/sqrt\\(d_head\\) scale"),
        (dict(activation_function="silu"), "MLP activation 'silu'"),
    ],
)
def test_from_hf_unsupported(kwargs, feature):
    with pytest.raises(UnsupportedArchitecture, match=feature):
        pe.load(gpt2(**kwargs))


def test_from_hf_other_models_refused():
    model = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10,
                                                           n_positions=4, bos_token_id=0, eos_token_id=0))
    with pytest.raises(UnsupportedArchitecture, match="GPT2LMHeadModel only, got GPT2Model"):
        pe.load(model)


def test_missing_transformers_names_extra(monkeypatch):
    hf = gpt2()
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'pathexpand\[hf\]'"):
        pe.load(hf)


def test_missing_transformer_lens_names_extra(monkeypatch):
    model = hooked(attn_only=True)
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'pathexpand\[lens\]'"):
        pe.load(model)
