"""Head detection: by construction (a hand-built previous-token head and a uniform head), on
the bundled default model, and against TransformerLens's own attention patterns."""

from __future__ import annotations

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.detect import DATA_KINDS as KINDS
from pathexpand.numeric.detect import HeadScores, detect_heads, repeated_tokens

N_CTX, D_POS, D_TOK = 24, 24, 8


def _hand_built(rng) -> pe.Weights:
    """1 layer, shortformer; W_pos[i] = e_i. Head 0: q_i = c e_i, k_j = e_{j+1}, so the only
    large score is key j = i - 1 (previous token). Head 1: W_Q = W_K = 0 (uniform)."""
    d_model, d_head = D_POS + D_TOK, D_POS
    W_pos = np.zeros((N_CTX, d_model))
    W_pos[:, :D_POS] = np.eye(N_CTX)
    W_E = np.zeros((32, d_model))
    W_E[:, D_POS:] = rng.normal(size=(32, D_TOK))  # tokens live outside the position subspace
    W_Q = np.zeros((2, d_model, d_head))
    W_K = np.zeros((2, d_model, d_head))
    W_Q[0, :D_POS, :] = 200.0 * np.eye(D_POS)
    W_K[0, np.arange(D_POS - 1), np.arange(1, D_POS)] = 1.0
    return pe.Weights.from_state_dict(
        {
            "W_E": W_E,
            "W_pos": W_pos,
            "blocks.0.attn.W_Q": W_Q,
            "blocks.0.attn.W_K": W_K,
            "blocks.0.attn.W_V": rng.normal(size=(2, d_model, d_head)),
            "blocks.0.attn.W_O": rng.normal(size=(2, d_head, d_model)),
            "W_U": rng.normal(size=(d_model, 32)),
        },
        positional="shortformer",
    )


def _uniform_expectation(queries) -> float:
    """A head attending uniformly over keys 0..q gives each key 1/(q+1)."""
    return float(np.mean([1.0 / (q + 1) for q in queries]))


@pytest.mark.parametrize("prefix", [(), (3, 5)])
def test_hand_built_previous_token_and_uniform_heads(rng, prefix):
    w = _hand_built(rng)
    p, n = len(prefix), 10
    s = detect_heads(w, seq_len=n, n_samples=12, batch_size=5, prefix=prefix)
    assert s.shape == (1, 2)
    assert s["previous_token"][0, 0] == pytest.approx(1.0, abs=1e-6)
    assert s["induction"][0, 0] == pytest.approx(0.0, abs=1e-6)
    assert s["duplicate_token"][0, 0] == pytest.approx(0.0, abs=1e-6)
    prev_q = range(p + 1, p + 2 * n)
    second_half = range(p + n, p + 2 * n)
    assert s["previous_token"][0, 1] == pytest.approx(_uniform_expectation(prev_q), rel=1e-5)
    assert s["induction"][0, 1] == pytest.approx(_uniform_expectation(second_half), rel=1e-5)
    assert s["duplicate_token"][0, 1] == pytest.approx(_uniform_expectation(second_half), rel=1e-5)
    top = s.top(1, kind="previous_token")
    assert [(r.name, r.value) for r in top] == [("L0H0", pytest.approx(1.0, abs=1e-6))]


def test_repeated_tokens_recipe():
    t = repeated_tokens(50, 7, 4, seed=3, prefix=(1, 2))
    r = np.random.default_rng(3).integers(0, 50, size=(4, 7))
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t, np.concatenate([np.tile([1, 2], (4, 1)), r, r], axis=1))


def test_batch_size_does_not_change_scores(rng):
    w = _random_weights(rng)
    a = detect_heads(w, seq_len=8, n_samples=10, batch_size=3)
    b = detect_heads(w, seq_len=8, n_samples=10, batch_size=10, progress=True)
    for kind in KINDS:
        np.testing.assert_allclose(a[kind], b[kind], rtol=1e-6, atol=1e-7)


def test_head_scores_views(rng):
    s = detect_heads(_random_weights(rng), seq_len=6, n_samples=4)
    recs = s.to_records(kind="induction")
    assert sorted(r["name"] for r in recs) == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    assert next(r for r in recs if r["name"] == "L1H1")["value"] == float(s["induction"][1, 1])
    assert len(s.to_records()) == 3 * 6 and {r["kind"] for r in s.to_records()} == set(KINDS)
    top = s.top(6, kind="duplicate_token")
    assert [r.value for r in top] == sorted((float(v) for v in s["duplicate_token"].ravel()), reverse=True)
    chance = np.mean(1 / (np.arange(6, 12) + 1))      # induction: queries 6..11, uniform attention
    assert top[0]["baseline"] == pytest.approx(chance)
    text = str(s)
    assert text.splitlines()[0].split() == ["head", *KINDS]
    assert len(text.splitlines()) == 7
    d = s.to_dict()
    assert np.array(d["previous_token"]).shape == (2, 3) and d["seq_len"] == 6
    with pytest.raises(PathexpandError, match="have previous_token, induction, duplicate_token"):
        s.top(1, kind="copying")


def test_bad_arguments_are_refused(rng):
    w = _random_weights(rng)  # n_ctx 20
    with pytest.raises(PathexpandError, match="largest seq_len is 10"):
        detect_heads(w, seq_len=11)
    with pytest.raises(PathexpandError, match="largest seq_len is 9"):
        detect_heads(w, seq_len=10, prefix=(1, 2))
    with pytest.raises(PathexpandError, match="n_samples must be an int >= 1"):
        detect_heads(w, n_samples=0)
    with pytest.raises(PathexpandError, match="seq_len must be an int >= 2"):
        detect_heads(w, seq_len=1)
    with pytest.raises(PathexpandError, match=r"prefix tokens must be in \[0, 40\)"):
        detect_heads(w, prefix=(40,))
    with pytest.raises(PathexpandError, match=r"vocab must hold at least 2 token ids in \[0, 40\)"):
        detect_heads(w, vocab=(3, 41))
    with pytest.raises(PathexpandError, match="at least 2"):
        detect_heads(w, vocab=(3,))
    assert isinstance(detect_heads(w, n_samples=2), HeadScores)  # default seq_len fits n_ctx


def _random_weights(rng, **config) -> pe.Weights:
    L, H, d, e, V, T = 2, 3, 12, 4, 40, 20
    sd = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(T, d)),
          "W_U": rng.normal(size=(d, V)), "b_U": rng.normal(size=V)}
    for l in range(L):
        a = f"blocks.{l}.attn."
        for name in ("W_Q", "W_K", "W_V"):
            sd[a + name] = rng.normal(size=(H, d, e))
        for name in ("b_Q", "b_K", "b_V"):
            sd[a + name] = rng.normal(size=(H, e))
        sd[a + "W_O"] = rng.normal(size=(H, e, d))
        sd[a + "b_O"] = rng.normal(size=d)
        if config.get("d_mlp"):
            m = config["d_mlp"]
            sd[f"blocks.{l}.mlp.W_in"] = rng.normal(size=(d, m)) / 3
            sd[f"blocks.{l}.mlp.b_in"] = rng.normal(size=m)
            sd[f"blocks.{l}.mlp.W_out"] = rng.normal(size=(m, d)) / 3
            sd[f"blocks.{l}.mlp.b_out"] = rng.normal(size=d)
            for ln in ("ln1", "ln2"):
                sd[f"blocks.{l}.{ln}.w"] = 1 + 0.1 * rng.normal(size=d)
                sd[f"blocks.{l}.{ln}.b"] = 0.1 * rng.normal(size=d)
    if config.get("d_mlp"):
        sd["ln_final.w"] = 1 + 0.1 * rng.normal(size=d)
        sd["ln_final.b"] = 0.1 * rng.normal(size=d)
    scaled = {k: (v / 2 if "W_Q" in k or "W_K" in k else v) for k, v in sd.items()}
    return pe.Weights.from_state_dict(scaled, **config).astype(np.float32)


# bundled default model ---------------------------------------------------------------------
def test_bundled_attn_only_2l_has_previous_token_and_induction_heads():
    w = pe.load("attn-only-2l")
    s = detect_heads(w)
    assert s["previous_token"][0].max() > 0.5
    assert s["induction"][1].max() > 0.5
    assert s.top(1, kind="induction")[0].name.startswith("L1H")
    assert s.top(1, kind="previous_token")[0].name.startswith("L0H")
    # the card reports the same measurement (same defaults), rounded to 4 decimals
    card = w.card["head_scores"]
    assert (card["seq_len"], card["n_samples"], card["seed"]) == (s.settings["seq_len"], s.settings["n_samples"], s.settings["seed"])
    for kind in KINDS:
        np.testing.assert_allclose(np.array(card[kind]), s[kind], atol=2e-4)


# TransformerLens as the second route -----------------------------------------------------------
def _tl_model(weights: pe.Weights):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = weights.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_ctx=c.n_ctx, d_head=c.d_head,
        n_heads=c.n_heads, d_vocab=c.d_vocab, d_mlp=c.d_mlp, act_fn=c.act_fn,
        normalization_type=c.normalization, positional_embedding_type=c.positional,
        attn_only=c.d_mlp is None, default_prepend_bos=False, device="cpu", seed=0,
    )
    model = HookedTransformer(cfg)
    names = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U",
             "b_U": "unembed.b_U"}
    import torch

    sd = {names.get(k, k): torch.tensor(np.array(v)) for k, v in weights.state_dict().items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected
    assert all(k.endswith(("mask", "IGNORE")) for k in missing), missing
    return model.eval()


def _tl_scores(model, tokens, n, p):
    """Scores by explicit indexing of TransformerLens's cached patterns."""
    import torch

    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor(tokens))
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = {k: np.zeros((L, H)) for k in KINDS}
    for l in range(L):
        A = cache["pattern", l].numpy()  # [batch, head, q, k]
        for h in range(H):
            out["previous_token"][l, h] = np.mean([A[:, h, q, q - 1] for q in range(p + 1, p + 2 * n)])
            out["induction"][l, h] = np.mean([A[:, h, q, q - n + 1] for q in range(p + n, p + 2 * n)])
            out["duplicate_token"][l, h] = np.mean([A[:, h, q, q - n] for q in range(p + n, p + 2 * n)])
    return out


@pytest.mark.parametrize(
    "source,prefix,vocab",
    [("bundled", (), None), ("gelu-ln-random", (7,), None), ("gelu-ln-random", (), (2, 5, 11, 30))],
)
@pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated")
def test_scores_equal_transformer_lens(rng, source, prefix, vocab):
    if source == "bundled":
        w = pe.load("attn-only-2l")
        n, samples = 20, 16
    else:
        w = _random_weights(rng, d_mlp=16, act_fn="gelu_new", normalization="LN")
        n, samples = 9, 12
    ours = detect_heads(w, seq_len=n, n_samples=samples, seed=5, batch_size=5, prefix=prefix,
                        vocab=vocab)
    if vocab is None:
        r = np.random.default_rng(5).integers(0, w.config.d_vocab, size=(samples, n))
    else:
        r = np.array(vocab)[np.random.default_rng(5).integers(0, len(vocab), size=(samples, n))]
        assert ours.settings["vocab"] == (None if vocab is None else list(vocab))
    tokens = np.concatenate([np.tile(np.array(prefix, dtype=np.int64), (samples, 1)), r, r], axis=1)
    theirs = _tl_scores(_tl_model(w), tokens, n, len(prefix))
    for kind in KINDS:
        np.testing.assert_allclose(ours[kind], theirs[kind], rtol=1e-4, atol=1e-6)
