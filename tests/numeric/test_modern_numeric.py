"""Modern blocks on the numeric side, each against an independent dense computation.

Rotary QK circuits against Hugging Face's own rotation functions (Llama's ``rotate_half``
with partial rotary as GPT-NeoX slices it, GPT-J's ``rotate_every_two``); composition under
rotation against a dense per-offset average; base → ∞ against the unrotated model;
grouped-query attention against the same model with its key/value heads repeated; gated and
parallel blocks through the attribution's exact sum; RMSNorm folding keeping the logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rotate
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotate

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.weights import Config, expected_shapes

D, H, DH, V = 12, 4, 6, 9


def weights(rng, **kw) -> pe.Weights:
    cfg = Config(**{**dict(n_layers=2, n_heads=H, d_model=D, d_head=DH, d_vocab=V, n_ctx=20,
                           positional="rotary"), **kw})
    params = {k: rng.standard_normal(s) for k, s in expected_shapes(cfg).items()}
    for k in params:
        if k.endswith(".w"):
            params[k] = 1 + 0.3 * params[k]
    return pe.Weights(params, cfg)


def hf_rotated(x, pos, cfg):
    """``x`` ``[H, d_model, d_head]`` rotated at position ``pos`` by Hugging Face's code."""
    r, base = cfg.rotary_dim, cfg.rotary_base
    inv = 1.0 / base ** (torch.arange(0, r, 2, dtype=torch.float64) / r)
    ang = pos * inv                                                          # [r/2]
    t = torch.as_tensor(x).transpose(-1, -2)[None]                           # [1, H, d_head, d_model]
    t = t.transpose(-1, -2)                                                  # rows: basis vectors of d_model
    rot, rest = t[..., :r], t[..., r:]
    if cfg.rotary_adjacent_pairs:                                            # GPT-J: sin, cos [1, n, r/2]
        s = ang.sin()[None, None].expand(1, rot.shape[2], -1).transpose(0, 1)
        c = ang.cos()[None, None].expand(1, rot.shape[2], -1).transpose(0, 1)
        out = gptj_rotate(rot.permute(0, 2, 1, 3), s.transpose(0, 1), c.transpose(0, 1)).permute(0, 2, 1, 3)
    else:                                                                    # Llama / NeoX halves
        emb = torch.cat([ang, ang])
        out, _ = llama_rotate(rot, rot, emb.cos()[None, None], emb.sin()[None, None])
    return torch.cat([out, rest], -1)[0].numpy()                             # [H, d_model, d_head]


@pytest.mark.parametrize("kw", [dict(), dict(rotary_dim=4), dict(rotary_adjacent_pairs=True),
                                dict(rotary_dim=2, rotary_adjacent_pairs=True, rotary_base=500.0),
                                dict(n_key_value_heads=2), dict(n_key_value_heads=1, rotary_dim=4)])
def test_rotary_qk_circuit_is_hugging_faces_rotation(rng, kw):
    """``W_Q R̃_Δ W_Kᵀ`` at Δ = j − i equals (W_Q rotated at i)(W_K rotated at j)ᵀ, for any i."""
    w = weights(rng, **kw)
    cfg, g = w.config, w.config.n_kv_groups
    for delta in (0, -1, -3, 2):
        ours = pe.circuit("QK", w, scope="residual", offset=delta).dense().numpy()   # [L, H, d, d]
        for i in (3, 7):
            j = i + delta
            for l in range(2):
                q = hf_rotated(w.W_Q[l], i, cfg)                                      # [H, d, e]
                k = hf_rotated(np.repeat(w[f"blocks.{l}.attn.W_K"], g, axis=0), j, cfg)  # K/V repeated
                np.testing.assert_allclose(ours[l], q @ k.transpose(0, 2, 1), rtol=1e-9, atol=1e-9)


def test_rotary_qk_needs_an_offset(rng):
    w = weights(rng)
    with pytest.raises(PathexpandError, match="offset"):
        pe.circuit("QK", w)
    with pytest.raises(PathexpandError, match="offset=.*rotary"):
        pe.circuit("QK", weights(rng, positional=None), offset=-1)


def dense_composition(w, kind, offsets):
    """The paper's score, dense, K/V repeated per query head, averaged over offsets."""
    cfg = w.config
    g = cfg.n_kv_groups
    out = np.zeros((2, H, 2, H))
    for h1 in range(H):
        L = w["blocks.0.attn.W_V"].repeat(g, 0)[h1] @ w["blocks.0.attn.W_O"][h1]
        K = w["blocks.1.attn.W_K"].repeat(g, 0)                             # stored [n_kv, d, e]
        for h2 in range(H):
            vals = []
            for delta in offsets:
                i = 10
                q, k = hf_rotated(w.W_Q[1], i, cfg)[h2], hf_rotated(K, i + delta, cfg)[h2]
                R = q @ k.T if kind == "q_composition" else k @ q.T
                vals.append(np.linalg.norm(L @ R) / (np.linalg.norm(L) * np.linalg.norm(R)))
            out[0, h1, 1, h2] = np.mean(vals)
    return out


@pytest.mark.parametrize("kw", [dict(), dict(n_key_value_heads=2, rotary_dim=4, rotary_adjacent_pairs=True)])
def test_rotary_composition_is_the_mean_of_dense_per_offset_scores(rng, kw):
    w = weights(rng, **kw)
    for offsets in ([-1], [0, -1, -2, -5]):
        cs = pe.composition_scores(w, baseline=None, offsets=offsets)
        for kind in ("q_composition", "k_composition"):
            np.testing.assert_allclose(cs[kind], dense_composition(w, kind, offsets), rtol=1e-9, atol=1e-12)
    default = pe.composition_scores(w, baseline=None)
    assert default.offsets == tuple(range(0, -16, -1))                 # the nearest 16 keys
    np.testing.assert_allclose(default["k_composition"],
                               dense_composition(w, "k_composition", range(0, -16, -1)), rtol=1e-9)


@pytest.mark.parametrize("adjacent", [False, True])
def test_rotary_reduces_to_unrotated_as_the_base_grows(rng, adjacent):
    """θ_m = base^(−2m/r) → 0 for m ≥ 1 as rotary_base → ∞; θ_0 = 1 at every base, so with the
    first pair of dims unused by W_Q and W_K, QK circuits, composition and logits become the
    position-free model's."""
    w = weights(rng, rotary_base=1e60, d_mlp=10, act_fn="gelu", normalization="RMS", n_key_value_heads=2,
                rotary_adjacent_pairs=adjacent)
    params = {k: np.array(v) for k, v in w.state_dict().items()}
    first_pair = [0, 1] if adjacent else [0, DH // 2]
    for l in range(2):
        for x in ("W_Q", "W_K", "b_Q", "b_K"):
            params[f"blocks.{l}.attn.{x}"][..., first_pair] = 0
    w = pe.Weights(params, w.config)
    unrotated = {k: v for k, v in w.config.to_dict().items() if not k.startswith("rotary")}
    plain = pe.Weights(params, Config(**{**unrotated, "positional": None}))
    with_pair = weights(rng, rotary_base=1e60)                                # the first pair still turns
    assert not np.allclose(pe.circuit("QK", with_pair, offset=-7).dense(), pe.circuit("QK", with_pair, offset=0).dense())
    np.testing.assert_allclose(pe.circuit("QK", w, offset=-7).dense(), pe.circuit("QK", plain).dense(),
                               rtol=1e-10, atol=1e-10)
    a = pe.composition_scores(w, baseline=None)
    b = pe.composition_scores(plain, baseline=None)
    for kind in a.kinds:
        np.testing.assert_allclose(a[kind], b[kind], rtol=1e-10, atol=1e-12)
    toks = [1, 4, 2, 7, 3, 3, 8]
    np.testing.assert_allclose(pe.forward(w, toks).numpy(), pe.forward(plain, toks).numpy(), rtol=1e-6, atol=1e-8)


def test_grouped_query_equals_repeated_key_value_heads(rng):
    """A GQA model and the same model with its K/V heads repeated (n_key_value_heads = n_heads)
    give the same logits, composition scores, copying scores and attribution."""
    w = weights(rng, n_key_value_heads=2, d_mlp=10, act_fn="silu", gated_mlp=True, normalization="RMS")
    params = w.state_dict()
    for k in list(params):
        if any(k.endswith(s) for s in ("attn.W_K", "attn.W_V", "attn.b_K", "attn.b_V")):
            params[k] = np.repeat(params[k], 2, axis=0)
    dense = pe.Weights(params, Config(**{**w.config.to_dict(), "n_key_value_heads": H}))
    toks = [1, 4, 2, 7, 3, 3, 8, 0]
    np.testing.assert_allclose(pe.forward(w, toks).numpy(), pe.forward(dense, toks).numpy(), rtol=1e-12)
    a, b = pe.composition_scores(w, baseline=None), pe.composition_scores(dense, baseline=None)
    for kind in a.kinds:
        np.testing.assert_allclose(a[kind], b[kind], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pe.copying_scores(w)["copying"], pe.copying_scores(dense)["copying"], rtol=1e-10)
    ra, rb = pe.attribute(w, toks), pe.attribute(dense, toks)
    pa = {r["name"]: r["value"] for r in ra.ranking("path").to_records()}
    pb = {r["name"]: r["value"] for r in rb.ranking("path").to_records()}
    assert pa.keys() == pb.keys()
    np.testing.assert_allclose([pa[k] for k in pa], [pb[k] for k in pa], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(d_mlp=10, act_fn="silu", gated_mlp=True, normalization="RMS"),
    dict(d_mlp=10, act_fn="gelu_new", gated_mlp=True, normalization="RMS", parallel_attn_mlp=True),
    dict(d_mlp=10, act_fn="gelu", normalization="LN", parallel_attn_mlp=True, rotary_dim=2),
    dict(d_mlp=10, act_fn="relu", normalization="LN", positional="standard", parallel_attn_mlp=True),
])
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_attribution_sums_to_the_logit(rng, kw, dtype, tol):
    w = weights(rng, **kw).astype(dtype)
    toks = [1, 4, 2, 7, 3, 3, 8, 0, 5]
    res = pe.attribute(w, toks, target=3, dtype=torch.float64 if dtype == np.float64 else None)
    logit = float(pe.forward(w.astype(np.float64), toks)[0, -1, 3]) if toks else None
    assert res.residual_error() <= tol
    assert abs(res.output - logit) <= 10 * tol * max(1, abs(logit))
    total = sum(r["value"] for r in res.ranking("path").to_records()) + sum(res.constants.values())
    assert abs(total - res.output) <= 10 * tol * max(1, abs(logit))


def test_parallel_blocks_have_no_head_to_mlp_path_in_a_layer(rng):
    w = weights(rng, d_mlp=10, act_fn="gelu", normalization="LN", parallel_attn_mlp=True)
    res = pe.attribute(w, [1, 2, 3, 4])
    names = [r["path"] for r in res.ranking("path").to_records()]
    for path in names:
        for a, b in zip(path, path[1:]):
            assert not (a.startswith("L") and "H" in a and b.startswith("MLP") and a[1] == b[3]), path
    assert sum(p[0] == "embed" for p in names) == (2 + H) ** 2


@pytest.mark.parametrize("kw", [dict(normalization="RMS"), dict(normalization="RMS", gated_mlp=True,
                                                                   act_fn="silu", d_mlp=10)])
def test_fold_rmsnorm_keeps_logits_and_composition(rng, kw):
    w = weights(rng, **{"d_mlp": 10, "act_fn": "gelu", **kw})
    folded = pe.fold_layernorm(w)
    assert folded.config.normalization == "RMSPre"
    toks = [1, 4, 2, 7, 3]
    np.testing.assert_allclose(pe.forward(folded, toks).numpy(), pe.forward(w, toks).numpy(), rtol=1e-10, atol=1e-10)
    a, b = pe.composition_scores(w, baseline=None), pe.composition_scores(folded, baseline=None)
    for kind in a.kinds:
        np.testing.assert_allclose(a[kind], b[kind], rtol=1e-9, atol=1e-12)


def test_rotary_score_terms_need_an_offset_and_match_dense(rng):
    """The direct score term (query and key read the token embedding) at offset Δ is
    ``W_E diag(w) W_Q R̃_Δ W_Kᵀ diag(w) W_Eᵀ`` (RMSNorm reader, 1/rms omitted data-free)."""
    w = weights(rng, normalization="RMS", n_key_value_heads=2, rotary_dim=4)
    arch = pe.Architecture.from_weights(w)
    terms = pe.expand_scores(arch, "L1H3")
    with pytest.raises(PathexpandError, match="offset"):
        pe.evaluate(terms, w)
    for delta in (-1, -4):
        rows = pe.evaluate(terms, w, offset=delta).to_records()
        direct = [r for r in rows if list(r["path"]) == ["embed"] and list(r["key_path"]) == ["embed"]]
        assert len(direct) == 1
        E = w.W_E * w["blocks.1.ln1.w"]                                           # [V, d]
        q = hf_rotated(w.W_Q[1], 5, w.config)[3]                                  # [d, e]
        k = hf_rotated(np.repeat(w["blocks.1.attn.W_K"], 2, 0), 5 + delta, w.config)[3]
        assert direct[0]["value"] == pytest.approx(np.linalg.norm(E @ q @ k.T @ E.T), rel=1e-9)


@pytest.mark.parametrize("kw", [dict(normalization="RMS", n_key_value_heads=2, d_mlp=10, act_fn="silu",
                                     gated_mlp=True),
                                dict(normalization="LN", rotary_dim=2, rotary_adjacent_pairs=True, d_mlp=10,
                                     act_fn="gelu", parallel_attn_mlp=True)])
def test_rotary_score_attribution_adds_up_to_the_recorded_score(rng, kw):
    from pathexpand.numeric.forward import run_with_cache

    w = weights(rng, **kw)
    toks = [1, 4, 2, 7, 3, 3, 8, 0]
    _, cache = run_with_cache(w, toks, dtype=torch.float64)
    for head, (q, k) in (("L1H2", (6, 3)), ("L1H0", (7, 7)), ("L0H1", (4, 0))):
        split = pe.attribute_scores(w, toks, head, q, k, dtype=torch.float64)
        l, h = int(head[1]), int(head[3])
        assert split.score == pytest.approx(float(cache.scores[0, l, h, q, k]), rel=1e-10)
        assert split.residual_error() <= 1e-10


def test_weight_detection_on_rotary_says_what_it_cannot_compute(rng):
    w = weights(rng, d_mlp=10, act_fn="gelu")
    res = pe.detect_heads(w, method="weights")
    assert res.kinds == ("copying",)
    assert any("rotary" in n and "none computed" in n for n in res.ranking().notes)
    data = pe.detect_heads(w)                              # from attention on repeated tokens
    assert {"previous_token", "induction"} <= set(data.kinds)


@pytest.mark.parametrize("change", [dict(normalization="LN"), dict(gated_mlp=False), dict(parallel_attn_mlp=False),
                                    dict(positional="standard")])
def test_an_expansion_of_another_block_is_refused(rng, change):
    w = weights(rng, d_mlp=10, act_fn="silu", normalization="RMS", gated_mlp=True, parallel_attn_mlp=True)
    a = pe.Architecture.from_weights(w)
    kw = dict(mlp=True, normalization=a.normalization, positional=a.positional, gated_mlp=True,
              parallel_attn_mlp=True, biases=a.biases)
    other = pe.Architecture(a.n_layers, list(a.n_heads), **{**kw, **change})
    with pytest.raises(PathexpandError, match="does not match the weights"):
        pe.evaluate(pe.expand_logits(other, max_depth=1), w)


def test_bias_score_terms_are_functions_of_the_offset_alone(rng):
    """The purely positional score terms of a rotary head: two constant vectors (biases) meeting
    through R̃_Δ. Against Hugging Face's rotation of b_Q at i and b_K at i + Δ (any i), and
    through an RMS reader for a written bias (b_O), against the dense product."""
    w = weights(rng, normalization="RMS", n_key_value_heads=2, rotary_dim=4, d_mlp=10, act_fn="silu")
    terms = pe.expand_scores(w, "L1H3", max_depth=0)
    g = w.config.n_kv_groups
    bq, bk = w["blocks.1.attn.b_Q"][3], w["blocks.1.attn.b_K"][3 // g]             # [e]
    bo = w["blocks.0.attn.b_O"] * w["blocks.1.ln1.w"]                             # RMS reader diag(w)
    for delta in (0, -1, -6):
        for i in (2, 9):
            q = hf_rotated(bq[None, None, :], i, w.config)[0, 0]
            k = hf_rotated(bk[None, None, :], i + delta, w.config)[0, 0]
            value = float(pe.circuit(terms["q:L1H3.b_Q · k:L1H3.b_K"], w, offset=delta).dense().squeeze())
            assert value == pytest.approx(q @ k, rel=1e-9, abs=1e-12)
            qo = hf_rotated((bo @ w.W_Q[1, 3])[None, None, :], i, w.config)[0, 0]
            value = float(pe.circuit(terms["q:L0.b_O · k:L1H3.b_K"], w, offset=delta).dense().squeeze())
            assert value == pytest.approx(qo @ k, rel=1e-9, abs=1e-12)


def test_offsets_where_they_mean_nothing_are_refused(rng):
    w = weights(rng)
    with pytest.raises(PathexpandError, match="no query–key product"):
        pe.circuit("OV", w, offset=-1)
    with pytest.raises(PathexpandError, match="logit terms have no query–key product"):
        pe.evaluate(pe.expand_logits(w, max_depth=1), w, offset=-1)
    with pytest.raises(PathexpandError, match="bias × bias terms"):
        pe.evaluate(pe.expand_scores(w, "L1H0", max_depth=0), w, offset=-1, positional=True)
    with pytest.raises(PathexpandError, match="apply to positional='rotary'"):
        Config(n_layers=1, n_heads=1, d_model=4, d_head=4, d_vocab=5, n_ctx=4, rotary_adjacent_pairs=True)
