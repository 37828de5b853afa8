"""TransformerLens models with modern blocks → ``Weights``: rotary (full, partial, both
pairings), RMSNorm, grouped- and multi-query attention, gated MLPs, parallel blocks.

Second route: TransformerLens's own forward pass and attention patterns on the same weights;
the exact attribution of the loaded model adds up to TransformerLens's logit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformer_lens as tl

import pathexpand as pe
from pathexpand.numeric.forward import run_with_cache

BASE = dict(n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_vocab=20, device="cpu", seed=0)

FAMILIES = {
    # Llama / Mistral: RMSNorm, rotary (halves), grouped-query attention, SwiGLU
    "llama": dict(normalization_type="RMS", positional_embedding_type="rotary", n_key_value_heads=2,
                  gated_mlp=True, act_fn="silu", d_mlp=24, rotary_base=500000),
    # multi-query attention with partial rotary
    "mqa": dict(normalization_type="RMS", positional_embedding_type="rotary", n_key_value_heads=1,
                rotary_dim=2, gated_mlp=True, act_fn="silu", d_mlp=24),
    # Gemma: GeGLU (tanh gelu) and RMSNorm
    "gemma": dict(normalization_type="RMS", positional_embedding_type="rotary", gated_mlp=True,
                  act_fn="gelu_pytorch_tanh", d_mlp=24, n_key_value_heads=2),
    # Pythia / GPT-NeoX: LayerNorm, parallel attention and MLP, partial rotary (halves)
    "neox": dict(normalization_type="LN", positional_embedding_type="rotary", rotary_dim=2,
                 parallel_attn_mlp=True, act_fn="gelu", d_mlp=24),
    # GPT-J: parallel, adjacent-pair rotary on part of each head
    "gptj": dict(normalization_type="LN", positional_embedding_type="rotary", rotary_dim=2,
                 rotary_adjacent_pairs=True, parallel_attn_mlp=True, act_fn="gelu_new", d_mlp=24),
    # RMSNorm with its weights folded (RMSPre), attention only, full rotary adjacent pairs
    "rmspre": dict(normalization_type="RMSPre", positional_embedding_type="rotary",
                   rotary_adjacent_pairs=True, attn_only=True),
}


def hooked(**kwargs):
    model = tl.HookedTransformer(tl.HookedTransformerConfig(**{**BASE, **kwargs}))
    with torch.no_grad():
        for key, p in model.named_parameters():
            last = key.rsplit(".", 1)[-1].lstrip("_")
            if last.startswith("b"):
                p.normal_(0, 0.2)                     # TransformerLens initialises biases to zero
            elif last == "w":
                p.copy_(1 + 0.3 * torch.randn_like(p))  # norm weights away from 1
    return model.eval()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param, hooked(**FAMILIES[request.param])


def toks():
    return torch.randint(0, 20, (2, 11), generator=torch.Generator().manual_seed(3))


def test_config_read(family):
    name, model = family
    c = pe.load(model).config
    kw = FAMILIES[name]
    assert c.positional == "rotary" and c.rotary_dim == kw.get("rotary_dim", 4)
    assert c.rotary_base == kw.get("rotary_base", 10000)
    assert c.rotary_adjacent_pairs == kw.get("rotary_adjacent_pairs", False)
    assert c.n_key_value_heads == kw.get("n_key_value_heads", 4)
    assert c.gated_mlp == kw.get("gated_mlp", False)
    assert c.parallel_attn_mlp == kw.get("parallel_attn_mlp", False)
    assert c.normalization == kw["normalization_type"]
    assert "W_pos" not in pe.load(model)


def test_forward_and_patterns_equal_transformer_lens(family):
    name, model = family
    w = pe.load(model)
    t = toks()
    with torch.no_grad():
        theirs, cache = model.run_with_cache(t)
    ours, our_cache = run_with_cache(w, t)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-5
    for l in range(BASE["n_layers"]):
        np.testing.assert_allclose(np.asarray(our_cache.patterns[:, l]), cache["pattern", l].numpy(), atol=1e-5)


def test_exact_attribution_adds_up_to_transformer_lens_logit(family):
    name, model = family
    w = pe.load(model)
    t = toks()
    with torch.no_grad():
        theirs = model(t)[1, -1].numpy().astype(np.float64)
    res = pe.attribute(w, t[1].numpy(), target=5)
    assert abs(res.output - theirs[5]) <= 1e-5 * np.abs(theirs).max()
    assert res.residual_error() <= 1e-5
    res64 = pe.attribute(w.astype(np.float64), t[1].numpy(), target=5, dtype=torch.float64)
    assert res64.residual_error() <= 1e-10
    kw, H, L = FAMILIES[name], BASE["n_heads"], BASE["n_layers"]
    per_layer = 1 + H if kw.get("attn_only") else (2 + H if kw.get("parallel_attn_mlp") else 2 * (1 + H))
    assert pe.Architecture.from_weights(w).n_logit_paths() == per_layer ** L    # closed form
    embed_paths = [r for r in res.ranking("path").to_records() if r["path"][0] == "embed"]
    assert len(embed_paths) == per_layer ** L
