"""Reference forward pass vs TransformerLens ``HookedTransformer`` and Hugging Face GPT-2.

Second routes: TL models built from ``HookedTransformerConfig`` with random weights (biases
and LayerNorm parameters randomised too: TL initialises them to zero/one), and a randomly
initialised ``GPT2LMHeadModel``. Everything is tiny (d_model <= 32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformer_lens as tl

import pathexpand as pe
from pathexpand.errors import PathexpandError

D_VOCAB, N_CTX = 23, 10

# name -> (HookedTransformerConfig kwargs, pathexpand config kwargs, random biases?)
CONFIGS = {
    "attn1": (dict(n_layers=1, attn_only=True, normalization_type=None), {}, True),
    "attn2": (dict(n_layers=2, attn_only=True, normalization_type=None), {}, True),
    "attn3": (dict(n_layers=3, attn_only=True, normalization_type=None), {}, True),
    "attn2_nobias": (dict(n_layers=2, attn_only=True, normalization_type=None), {}, False),
    "shortformer": (
        dict(n_layers=2, attn_only=True, normalization_type=None, positional_embedding_type="shortformer"),
        dict(positional="shortformer"), True,
    ),
    "shortformer_ln": (
        dict(n_layers=2, attn_only=True, normalization_type="LN", positional_embedding_type="shortformer"),
        dict(positional="shortformer"), True,
    ),
    "bidirectional": (
        dict(n_layers=2, attn_only=True, normalization_type=None, attention_dir="bidirectional"),
        dict(attention_dir="bidirectional"), True,
    ),
    "gpt2_gelu_new": (dict(n_layers=2, d_mlp=24, act_fn="gelu_new", normalization_type="LN"), dict(act_fn="gelu_new"), True),
    "gpt2_gelu": (dict(n_layers=2, d_mlp=24, act_fn="gelu", normalization_type="LN", eps=1e-3),
                  dict(act_fn="gelu", eps=1e-3), True),
    "gpt2_relu": (dict(n_layers=2, d_mlp=24, act_fn="relu", normalization_type="LN"), dict(act_fn="relu"), True),
    "gpt2_nobias": (dict(n_layers=2, d_mlp=24, act_fn="gelu_new", normalization_type="LN"), dict(act_fn="gelu_new"), False),
    "mlp_no_ln": (dict(n_layers=2, d_mlp=24, act_fn="relu", normalization_type=None), dict(act_fn="relu"), True),
    "lnpre": (
        dict(n_layers=2, d_mlp=24, act_fn="gelu", normalization_type="LNPre"),
        dict(act_fn="gelu", normalization="LNPre"), True,
    ),
    "vocab_out": (
        dict(n_layers=1, attn_only=True, normalization_type=None, d_vocab_out=7), {}, True,
    ),
}


def make_tl(name, dtype=torch.float32, seed=0):
    tl_kwargs, _, biases = CONFIGS[name]
    cfg = tl.HookedTransformerConfig(
        d_model=16, d_head=4, n_heads=4, n_ctx=N_CTX, d_vocab=D_VOCAB, device="cpu",
        seed=seed, dtype=dtype, **tl_kwargs,
    )
    model = tl.HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=dtype)
            if key.endswith(".w"):              # LayerNorm weights: around one
                p.copy_(1 + 0.3 * noise)
            elif key.rsplit(".", 1)[-1].startswith("b"):
                p.copy_(0.3 * noise if biases else torch.zeros_like(p))
            else:                               # weights: about TL's 0.8 / sqrt(d_model)
                p.copy_(noise * 0.25)
    model.eval()
    return model


def weights_of(name, model):
    return pe.Weights.from_state_dict(model.state_dict(), **CONFIGS[name][1])


def rel_err(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())



@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = make_tl(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def toks():
    return torch.randint(0, D_VOCAB, (3, N_CTX), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_transformer_lens(models, toks, name):
    model = models(name)
    w = weights_of(name, model)
    if CONFIGS[name][2]:
        assert w.has_biases()
    ours = pe.forward(w, toks)
    with torch.no_grad():
        theirs = model(toks)
    assert ours.shape == theirs.shape == (3, N_CTX, model.cfg.d_vocab_out)
    assert rel_err(ours, theirs) <= 1e-5


def test_positional_none_equals_tl_with_zero_positions(models, toks):
    # TL has no positional_embedding_type "none"; a standard model whose W_pos is zero is
    # the same function, so it is the second route.
    model = make_tl("attn2", seed=3)
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
        theirs = model(toks)
    sd = {k: v for k, v in model.state_dict().items() if k != "pos_embed.W_pos"}
    w = pe.Weights.from_state_dict(sd, n_ctx=N_CTX)
    assert w.config.positional is None and w.W_pos is None
    assert rel_err(pe.forward(w, toks), theirs) <= 1e-5


def test_shortformer_keeps_positions_out_of_the_residual_stream(models, toks):
    w = weights_of("shortformer", models("shortformer"))
    _, cache = pe.run_with_cache(w, toks)
    torch.testing.assert_close(cache.resid_pre[:, 0], torch.as_tensor(w.W_E)[toks], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["attn2", "gpt2_gelu_new", "shortformer_ln", "lnpre", "bidirectional"])
def test_cache_equals_transformer_lens_hooks(models, toks, name):
    model = models(name)
    w = weights_of(name, model)
    c = w.config
    logits, cache = pe.run_with_cache(w, toks)
    with torch.no_grad():
        theirs, tc = model.run_with_cache(toks)
    assert rel_err(logits, theirs) <= 1e-5
    torch.testing.assert_close(cache.tokens, toks)
    L, H = c.n_layers, c.n_heads
    assert cache.patterns.shape == cache.scores.shape == (3, L, H, N_CTX, N_CTX)
    assert cache.resid_pre.shape == (3, L + 1, N_CTX, c.d_model)
    for l in range(L):
        torch.testing.assert_close(cache.pattern(l), tc[f"blocks.{l}.attn.hook_pattern"], rtol=1e-5, atol=1e-6)
        assert rel_err(cache.z[:, l], tc[f"blocks.{l}.attn.hook_z"].transpose(1, 2)) <= 1e-5
        ts = tc[f"blocks.{l}.attn.hook_attn_scores"]
        ours = cache.scores[:, l]
        assert torch.equal(torch.isinf(ours), torch.isinf(ts))
        fin = torch.isfinite(ts)
        assert rel_err(ours[fin], ts[fin]) <= 1e-5
        assert rel_err(cache.resid_pre[:, l], tc[f"blocks.{l}.hook_resid_pre"]) <= 1e-5
        if c.normalization:
            assert cache.ln_scale[f"blocks.{l}.ln1"].shape == (3, N_CTX)
            assert rel_err(cache.ln_scale[f"blocks.{l}.ln1"], tc[f"blocks.{l}.ln1.hook_scale"][..., 0]) <= 1e-5
        if c.d_mlp:
            assert rel_err(cache.resid_mid[:, l], tc[f"blocks.{l}.hook_resid_mid"]) <= 1e-5
            assert rel_err(cache.ln_scale[f"blocks.{l}.ln2"], tc[f"blocks.{l}.ln2.hook_scale"][..., 0]) <= 1e-5
            assert rel_err(cache.mlp_pre[:, l], tc[f"blocks.{l}.mlp.hook_pre"]) <= 1e-5
            assert rel_err(cache.mlp_post[:, l], tc[f"blocks.{l}.mlp.hook_post"]) <= 1e-5
    assert rel_err(cache.resid_pre[:, L], tc[f"blocks.{L - 1}.hook_resid_post"]) <= 1e-5
    if c.normalization:
        assert rel_err(cache.ln_scale["ln_final"], tc["ln_final.hook_scale"][..., 0]) <= 1e-5
        assert set(cache.ln_scale) == {f"blocks.{l}.ln{i}" for l in range(L) for i in (1, 2) if i == 1 or c.d_mlp} | {"ln_final"}
    else:
        assert cache.ln_scale == {}
    if not c.d_mlp:
        assert cache.resid_mid is None and cache.mlp_pre is None and cache.mlp_post is None
    # rows of every pattern are distributions; the causal mask is respected
    torch.testing.assert_close(cache.patterns.sum(-1), torch.ones(3, L, H, N_CTX))
    if c.attention_dir == "causal":
        upper = torch.ones(N_CTX, N_CTX, dtype=torch.bool).triu(1)
        assert torch.all(cache.patterns[..., upper] == 0)
        assert torch.all(torch.isneginf(cache.scores[..., upper]))
    else:
        assert torch.isfinite(cache.scores).all()


def test_float64_matches_float64_transformer_lens(toks):
    model = make_tl("gpt2_gelu_new", dtype=torch.float64)
    w = weights_of("gpt2_gelu_new", model)
    assert w.dtype == np.float64
    ours = pe.forward(w, toks)
    assert ours.dtype == torch.float64
    with torch.no_grad():
        assert rel_err(ours, model(toks)) <= 1e-12
    # float32 weights computed in float64 on request
    w32 = w.astype(np.float32)
    assert pe.forward(w32, toks, dtype=torch.float64).dtype == torch.float64
    assert pe.forward(w32, toks).dtype == torch.float32


def test_hf_gpt2_equal_through_from_hf():
    import transformers
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=16,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF's init (std 0.02, zero biases) is too gentle to test much
        for key, p in hf.named_parameters():
            if key.endswith("bias") or ".ln_" in key:
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    toks = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(toks).logits
    w = pe.load(hf)
    assert rel_err(pe.forward(w, toks), theirs) <= 1e-5


def test_one_dimensional_tokens_and_lists(models):
    w = weights_of("attn1", models("attn1"))
    seq = [3, 1, 4, 1, 5]
    out = pe.forward(w, seq)
    assert out.shape == (1, 5, D_VOCAB)
    torch.testing.assert_close(out, pe.forward(w, np.array([seq], dtype=np.int32)))
    torch.testing.assert_close(out, pe.forward(w, torch.tensor(seq)))
    # batch rows are independent
    both = pe.forward(w, [seq, [2, 7, 1, 8, 2]])
    torch.testing.assert_close(both[:1], out)


def test_causal_prefix_does_not_see_the_future(models):
    w = weights_of("gpt2_relu", models("gpt2_relu"))
    a = pe.forward(w, [1, 2, 3, 4, 5, 6])
    b = pe.forward(w, [1, 2, 3, 9, 9, 9])
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=0)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize(
    "tokens, match",
    [
        ([1, 2, D_VOCAB], f"token id {D_VOCAB} is out of range; ids must be in \\[0, {D_VOCAB}\\)"),
        ([1, -1], "token id -1 is out of range"),
        (list(range(N_CTX + 1)), f"{N_CTX + 1} tokens is longer than the model's context n_ctx={N_CTX}"),
        ([1.0, 2.0], "integer ids, got dtype float64"),
        (torch.tensor([1.0, 2.0]), "integer ids, got a tensor of dtype torch.float32"),
        (np.array([True, False]), "integer ids, got dtype bool"),
        ([[[1, 2]]], r"\[pos\] or \[batch, pos\], got shape \[1, 1, 2\]"),
        ([], "at least one token"),
        ("hello", "no tokenizer"),
        ([[1, 2], [3]], "rectangular"),
    ],
)
def test_bad_tokens(models, tokens, match):
    w = weights_of("attn1", models("attn1"))
    with pytest.raises(PathexpandError, match=match):
        pe.forward(w, tokens)


def test_bad_dtype_and_layer(models):
    w = weights_of("attn1", models("attn1"))
    with pytest.raises(PathexpandError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
        pe.forward(w, [1, 2], dtype=torch.float16)
    _, cache = pe.run_with_cache(w, [1, 2])
    with pytest.raises(PathexpandError, match="layer 1 is not in this 1-layer model"):
        cache.pattern(1)
    with pytest.raises(PathexpandError, match="cannot load a model from 'dict'"):
        pe.forward({"W_E": np.zeros((3, 2))}, [1])
