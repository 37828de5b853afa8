"""Folding and centring keep the function (logits, or log-probs for ``center_unembed``) and
produce the same weights as TransformerLens's own processing of the same random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformer_lens as tl

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.folding import center_unembed, center_writing_weights, fold_value_biases

D_VOCAB, N_CTX = 19, 8
MODELS = {
    "gpt2": dict(n_layers=2, d_mlp=24, act_fn="gelu_new", normalization_type="LN"),
    "attn_ln": dict(n_layers=2, attn_only=True, normalization_type="LN"),
    "lnpre": dict(n_layers=2, d_mlp=24, act_fn="relu", normalization_type="LNPre"),
    "attn": dict(n_layers=2, attn_only=True, normalization_type=None),
    "shortformer": dict(n_layers=2, attn_only=True, normalization_type=None, positional_embedding_type="shortformer"),
    "shortformer_ln": dict(n_layers=2, attn_only=True, normalization_type="LN", positional_embedding_type="shortformer"),
    "bidirectional_vocab_out": dict(n_layers=1, attn_only=True, normalization_type="LN",
                                    attention_dir="bidirectional", d_vocab_out=6),
}



def tl_model(name):
    """A fresh HookedTransformer (TL's processing mutates cfg) with random non-zero biases."""
    cfg = tl.HookedTransformerConfig(d_model=16, d_head=4, n_heads=4, n_ctx=N_CTX, d_vocab=D_VOCAB,
                                     device="cpu", seed=0, **MODELS[name])
    return tl.HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def state_dicts():
    out = {}
    for name in MODELS:
        model = tl_model(name)
        gen = torch.Generator().manual_seed(len(name))
        with torch.no_grad():
            for key, p in model.named_parameters():
                noise = torch.randn(p.shape, generator=gen)
                if key.endswith(".w"):
                    p.copy_(1 + 0.3 * noise)
                elif key.rsplit(".", 1)[-1].startswith("b"):
                    p.copy_(0.3 * noise)
                else:
                    p.copy_(0.25 * noise + 0.1)  # a non-zero mean, so centring has work to do
        out[name] = {k: v.clone() for k, v in model.state_dict().items()}
    return out


def weights(name, state_dicts):
    model = tl_model(name)
    model.load_state_dict(state_dicts[name])
    return pe.load(model)


def tl_processed(name, state_dicts, **flags):
    """Weights after TransformerLens's load_and_process_state_dict with ``flags``."""
    model = tl_model(name)
    options = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    model.load_and_process_state_dict({k: v.clone() for k, v in state_dicts[name].items()}, **{**options, **flags})
    return pe.load(model), model


TOKS = torch.randint(0, D_VOCAB, (3, N_CTX), generator=torch.Generator().manual_seed(5))


def rel_err(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


def assert_same_weights(ours, theirs):
    assert ours.config == theirs.config
    assert set(ours.keys()) == set(theirs.keys())
    for k in ours.keys():
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=2e-6, err_msg=k)


# fold_layernorm --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "attn_ln", "bidirectional_vocab_out"])
def test_fold_layernorm(state_dicts, name):
    w = weights(name, state_dicts)
    folded = pe.fold_layernorm(w)
    assert folded.config.normalization == "LNPre"
    assert not any(".ln" in k or k.startswith("ln_final") for k in folded.keys())
    assert rel_err(pe.forward(folded, TOKS), pe.forward(w, TOKS)) <= 1e-5
    # readers are centred over d_model
    assert np.abs(folded.W_Q.mean(axis=2)).max() < 1e-6
    assert np.abs(folded.W_U.mean(axis=0)).max() < 1e-6
    theirs, model = tl_processed(name, state_dicts, fold_ln=True)
    assert_same_weights(folded, theirs)
    with torch.no_grad():
        assert rel_err(pe.forward(folded, TOKS), model(TOKS)) <= 1e-5
    # without centring: still the same function, and the readers keep their mean
    plain = pe.fold_layernorm(w, center_weights=False)
    assert rel_err(pe.forward(plain, TOKS), pe.forward(w, TOKS)) <= 1e-5
    np.testing.assert_allclose(plain.W_U, w["ln_final.w"][:, None] * w.W_U, rtol=1e-6)


def test_fold_layernorm_refusals(state_dicts):
    with pytest.raises(PathexpandError, match="needs a model with a norm .*normalization=None"):
        pe.fold_layernorm(weights("attn", state_dicts))
    with pytest.raises(PathexpandError, match="cannot fold ln1 of a shortformer model"):
        pe.fold_layernorm(weights("shortformer_ln", state_dicts))
    w = weights("lnpre", state_dicts)
    assert pe.fold_layernorm(w) is w  # already folded
    with pytest.raises(PathexpandError, match="cannot load a model from 'dict'"):
        pe.fold_layernorm({})


# center_writing_weights -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "lnpre", "attn_ln"])
def test_center_writing_weights(state_dicts, name):
    w = weights(name, state_dicts)
    centred = center_writing_weights(w)
    assert rel_err(pe.forward(centred, TOKS), pe.forward(w, TOKS)) <= 1e-5
    for k in ["W_E", "W_pos", "blocks.1.attn.W_O", "blocks.1.attn.b_O"] + (["blocks.0.mlp.W_out", "blocks.0.mlp.b_out"] if w.config.d_mlp else []):
        assert np.abs(centred[k].mean(axis=-1)).max() < 1e-6, k
        assert np.abs(w[k].mean(axis=-1)).max() > 1e-3, k  # there was something to remove
    theirs, _ = tl_processed(name, state_dicts, center_writing_weights=True)
    assert_same_weights(centred, theirs)


def test_center_writing_weights_shortformer_keeps_w_pos(state_dicts):
    w = weights("shortformer_ln", state_dicts)
    centred = center_writing_weights(w)
    np.testing.assert_array_equal(centred.W_pos, w.W_pos)
    assert np.abs(centred.W_E.mean(axis=-1)).max() < 1e-6
    assert rel_err(pe.forward(centred, TOKS), pe.forward(w, TOKS)) <= 1e-5


def test_center_writing_weights_needs_layernorm(state_dicts):
    with pytest.raises(PathexpandError, match="only when every reader .* normalization=None"):
        center_writing_weights(weights("attn", state_dicts))


# center_unembed -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "attn", "bidirectional_vocab_out"])
def test_center_unembed(state_dicts, name):
    w = weights(name, state_dicts)
    centred = center_unembed(w)
    before, after = pe.forward(w, TOKS), pe.forward(centred, TOKS)
    lp_before, lp_after = before.log_softmax(-1), after.log_softmax(-1)
    assert rel_err(lp_after, lp_before) <= 1e-5
    shift = before - after  # the same at every vocab entry of a position
    assert float((shift - shift.mean(-1, keepdim=True)).abs().max()) < 1e-4
    assert float(shift.abs().max()) > 1e-2  # the logits did move
    assert np.abs(centred.W_U.mean(axis=-1)).max() < 1e-6 and abs(centred.b_U.mean()) < 1e-6
    theirs, _ = tl_processed(name, state_dicts, center_unembed=True)
    assert_same_weights(centred, theirs)


# fold_value_biases -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "attn", "shortformer", "bidirectional_vocab_out"])
def test_fold_value_biases(state_dicts, name):
    w = weights(name, state_dicts)
    assert np.abs(w.b_V).max() > 0.1
    folded = fold_value_biases(w)
    assert np.all(folded.b_V == 0)
    assert rel_err(pe.forward(folded, TOKS), pe.forward(w, TOKS)) <= 1e-5
    theirs, _ = tl_processed(name, state_dicts, fold_value_biases=True)
    assert_same_weights(folded, theirs)


# all four, TL's defaults -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "attn", "attn_ln", "lnpre"])
def test_process_weights_equals_transformer_lens(state_dicts, name):
    w = weights(name, state_dicts)
    processed = pe.process_weights(w)
    theirs, model = tl_processed(name, state_dicts, fold_ln=True, center_writing_weights=True,
                                 center_unembed=True, fold_value_biases=True)
    assert_same_weights(processed, theirs)
    lp = pe.forward(processed, TOKS).log_softmax(-1)
    assert rel_err(lp, pe.forward(w, TOKS).log_softmax(-1)) <= 1e-5
    with torch.no_grad():
        assert rel_err(pe.forward(processed, TOKS), model(TOKS)) <= 1e-5


def test_folding_keeps_name_card_and_dtype(state_dicts):
    w = weights("gpt2", state_dicts).astype(np.float64)
    w = pe.Weights(w.state_dict(), w.config, name="m", card={"steps": 1})
    out = pe.process_weights(w)
    assert out.name == "m" and out.card == {"steps": 1} and out.dtype == np.float64
    assert rel_err(pe.forward(out, TOKS).log_softmax(-1), pe.forward(w, TOKS).log_softmax(-1)) <= 1e-12
