"""Composition scores: TransformerLens equality (raw, and processed for LayerNorm models), a dense
second route, conventions, the null baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.composition import composition_scores, random_baseline
from pathexpand.numeric.weights import Config, expected_shapes

pytestmark = pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning")


def random_weights(n_layers=3, n_heads=4, d_model=16, d_head=4, d_vocab=20, n_ctx=8, seed=0, dtype=np.float64):
    cfg = Config(n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head, d_vocab=d_vocab, n_ctx=n_ctx)
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(cfg).items()}
    return pe.Weights(params, cfg)


def dense_scores(w, kind):
    """‖L R‖/(‖L‖‖R‖) by explicit numpy products for every pair (the second route)."""
    Q, K, V, O = (np.asarray(w.stacked(n), dtype=np.float64) for n in ("W_Q", "W_K", "W_V", "W_O"))
    L_, H = Q.shape[:2]
    out = np.zeros((L_, H, L_, H))
    for l1 in range(L_):
        for h1 in range(H):
            left = V[l1, h1] @ O[l1, h1]
            for l2 in range(l1 + 1, L_):
                for h2 in range(H):
                    right = {"q_composition": Q[l2, h2] @ K[l2, h2].T,
                             "k_composition": K[l2, h2] @ Q[l2, h2].T,
                             "v_composition": V[l2, h2] @ O[l2, h2]}[kind]
                    out[l1, h1, l2, h2] = np.linalg.norm(left @ right) / (
                        np.linalg.norm(left) * np.linalg.norm(right))
    return out


KINDS = ["q_composition", "k_composition", "v_composition"]


@pytest.mark.parametrize("kind", KINDS)
def test_equals_dense_float64(kind):
    w = random_weights(seed=1)
    got = composition_scores(w, kind)[kind]
    np.testing.assert_allclose(got, dense_scores(w, kind), rtol=1e-10, atol=1e-14)


@pytest.fixture(scope="module")
def tl_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=3, n_heads=4, d_model=32, d_head=8, d_vocab=40, n_ctx=12,
                                  attn_only=True, normalization_type=None, seed=0, device="cpu")
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_equals_transformer_lens(tl_model, mode):
    w = pe.Weights.from_state_dict({k: v.detach().numpy() for k, v in tl_model.state_dict().items()})
    ours = composition_scores(w, "all")[f"{mode.lower()}_composition"]
    theirs = tl_model.all_composition_scores(mode).detach().numpy()
    assert ours.shape == theirs.shape == (3, 4, 3, 4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    # TL's mask: zero unless the first head's layer is strictly earlier
    L = np.arange(3)
    masked = ~(L[:, None, None, None] < L[None, None, :, None]) & np.ones((3, 4, 3, 4), bool)
    assert np.all(ours[masked] == 0) and np.all(ours[~masked] > 0)


def designed(kind_only: str):
    """L0H0 writes into span(e0, e1); L1H0 reads that span on exactly one of its Q/K/V sides.

    The other heads live in disjoint subspaces (L0H1 writes e4, e5; L1H1 reads e8, e9), so
    every other pair composes by exactly zero.
    """
    d = 10
    e = np.eye(d)
    reads = {(0, 0): [6, 7], (0, 1): [6, 7], (1, 1): [8, 9]}
    writes = {(0, 0): [0, 1], (0, 1): [4, 5], (1, 0): [6, 7], (1, 1): [6, 7]}
    params = {}
    for l in range(2):
        for n in ("W_Q", "W_K", "W_V"):
            params[f"blocks.{l}.attn.{n}"] = np.stack(
                [e[:, reads.get((l, h), [2, 3])] for h in range(2)])
        params[f"blocks.{l}.attn.W_O"] = np.stack([e[writes[(l, h)], :] for h in range(2)])
    side = {"q_composition": "W_Q", "k_composition": "W_K", "v_composition": "W_V"}[kind_only]
    params[f"blocks.1.attn.{side}"][0] = e[:, [0, 1]]  # L1H0 reads L0H0's output on one side only
    params["W_E"] = np.eye(12, d)
    params["W_U"] = np.eye(d, 12)
    return pe.Weights.from_state_dict(params)


@pytest.mark.parametrize("kind_only", KINDS)
def test_only_the_designed_composition_is_nonzero(kind_only):
    """Q- and K-composition differ by one transpose: a head read on its key side scores only K."""
    cs = composition_scores(designed(kind_only), "all")
    for kind in KINDS:
        s = cs[kind]
        if kind == kind_only:
            assert cs.score("L0H0", "L1H0", kind) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
            s = s.copy()
            s[0, 0, 1, 0] = 0
        assert np.all(np.abs(s) <= 1e-12), kind
    top = cs.ranking()[0]
    assert top.name == f"L0H0 → L1H0.{kind_only[0]}" and top.kind == kind_only


def test_invariant_under_change_of_basis_inside_heads():
    w = random_weights(seed=2)
    rng = np.random.default_rng(3)
    H, d_head = 4, 4
    params = w.state_dict()
    new = dict(params)
    for l in range(3):
        M = rng.standard_normal((H, d_head, d_head)) + 3 * np.eye(d_head)
        N = rng.standard_normal((H, d_head, d_head)) + 3 * np.eye(d_head)
        p = f"blocks.{l}.attn."
        new[p + "W_V"] = params[p + "W_V"] @ M
        new[p + "W_O"] = np.linalg.inv(M) @ params[p + "W_O"]
        new[p + "W_Q"] = params[p + "W_Q"] @ N
        new[p + "W_K"] = params[p + "W_K"] @ np.linalg.inv(N).transpose(0, 2, 1)
    w2 = w.replace(new)
    a, b = composition_scores(w, "all"), composition_scores(w2, "all")
    assert not np.allclose(w2.W_V, w.W_V)
    for kind in KINDS:
        np.testing.assert_allclose(b[kind], a[kind], rtol=1e-9, atol=1e-12)


def test_layernorm_model_equals_transformer_lens_processed():
    """A LayerNorm model is scored through the circuit builder's readers ``C diag(w) W`` and
    writers ``W C``: exactly TransformerLens's scores after its default processing (fold_ln,
    center_writing_weights), which leaves the model's log-probs unchanged (checked here)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, n_heads=3, d_model=16, d_head=4, d_vocab=30, n_ctx=10,
                                  attn_only=True, normalization_type="LN", seed=0, device="cpu",
                                  dtype=torch.float64)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    w = pe.load(model)                                   # raw weights, LayerNorm unfolded
    tokens = torch.randint(0, 30, (2, 10), generator=g)
    before = model(tokens).log_softmax(-1)
    model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)
    torch.testing.assert_close(model(tokens).log_softmax(-1), before, rtol=1e-5, atol=1e-5)
    ours = composition_scores(w, "all", baseline=None)
    for mode in "QKV":
        theirs = model.all_composition_scores(mode).detach().numpy()
        np.testing.assert_allclose(ours[f"{mode.lower()}_composition"], theirs, rtol=1e-6, atol=1e-12)
    # the raw weights score differently: the readers and writers matter
    raw = dense_scores(w, "k_composition")
    assert not np.allclose(raw, ours["k_composition"], rtol=1e-3)


def test_random_baseline_second_moment_is_one_over_d_model():
    """E[score²] = 1/d_model exactly for Gaussian factors, whatever d_head and kind."""
    n = 400
    cases = [(16, 2, "q_composition", False), (16, 8, "k_composition", False),
             (32, 4, "v_composition", False), (24, 6, "q_composition", False),
             (12, 4, "k_composition", True), (12, 4, "v_composition", True)]
    for d, r, kind, centred in cases:
        mean, std = random_baseline(d, r, kind, centred=centred, n_samples=n, seed=5)
        second = mean**2 + std**2 * (n - 1) / n
        se = 2 * mean * std / math.sqrt(n) + std**2 * math.sqrt(2 / n)
        dim = d - 1 if centred else d   # centred factors live in d_model − 1 dimensions
        assert abs(second - 1 / dim) < 5 * se, (d, r, kind, second, 1 / dim)
        assert mean < 1 / math.sqrt(dim)  # Jensen: the mean is a little below the RMS


def test_random_baseline_matches_independent_numpy_sampling():
    d, r, n = 12, 3, 300
    rng = np.random.default_rng(11)
    s = []
    for _ in range(n):
        left = rng.standard_normal((d, r)) @ rng.standard_normal((r, d))
        right = rng.standard_normal((d, r)) @ rng.standard_normal((d, r)).T
        s.append(np.linalg.norm(left @ right) / (np.linalg.norm(left) * np.linalg.norm(right)))
    mean, std = random_baseline(d, r, "q_composition", n_samples=n, seed=0)
    assert abs(np.mean(s) - mean) < 4 * std * math.sqrt(2 / n)
    assert abs(np.std(s) - std) < 0.25 * std


def test_baseline_subtraction_and_z():
    w = random_weights(seed=4)
    k = "k_composition"
    cs = composition_scores(w, k, baseline="random", seed=1, n_samples=100)
    mean, std = random_baseline(16, 4, k, n_samples=100, seed=1)
    assert cs.null_mean[k] == mean and cs.null_std[k] == std
    mask = cs.mask
    np.testing.assert_allclose(cs.adjusted(k)[mask], cs[k][mask] - mean)
    np.testing.assert_allclose(cs.z(k)[mask], (cs[k][mask] - mean) / std)
    assert np.all(cs.adjusted(k)[~mask] == 0)
    # default ranking subtracts the baseline; zscore=True ranks by z
    top = cs.ranking()[0]
    assert top.value == pytest.approx(top["score"] - mean)
    ztop = composition_scores(w, k, zscore=True, seed=1, n_samples=100).ranking()[0]
    assert ztop.value == pytest.approx((ztop["score"] - mean) / std)
    with pytest.raises(PathexpandError, match="random"):
        composition_scores(w, k, baseline=None).z(k)


def test_records_follow_the_result_protocol():
    w = random_weights(n_layers=2, n_heads=2, seed=6)
    cs = composition_scores(w, "all", baseline="random", n_samples=50)
    recs = cs.to_records()
    assert len(recs) == 3 * 2 * 2  # kinds × (layer-0 heads) × (layer-1 heads)
    r = next(x for x in recs if x["name"] == "L0H1 → L1H0.v")
    assert r["score"] == cs["v_composition"][0, 1, 1, 0] and r["baseline"] == cs.null_mean["v_composition"]
    assert r["value"] == pytest.approx(r["score"] - r["baseline"]) and r["kind"] == "v_composition"
    assert {"name", "value", "earlier", "later", "score", "baseline", "z"} <= set(r)
    assert [x.name for x in cs.top(3)] == [x["name"] for x in sorted(recs, key=lambda x: -x["value"])[:3]]
    assert cs.top(2, kind="q_composition")[0].kind == "q_composition"
    assert "composition scores" in str(cs) and "<table>" in cs._repr_html_()


def test_float32_and_device_arguments():
    w = random_weights(seed=7, dtype=np.float32)
    a = composition_scores(w, "q_composition")["q_composition"]
    b = composition_scores(w, "q_composition", dtype=torch.float64, device="cpu")["q_composition"]
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_bad_arguments():
    w = random_weights(n_layers=2, seed=8)
    q = "q_composition"
    with pytest.raises(PathexpandError, match="one of q_composition, k_composition, v_composition; got 'k'"):
        composition_scores(w, "k")
    with pytest.raises(PathexpandError, match="baseline"):
        composition_scores(w, q, baseline="uniform")
    with pytest.raises(PathexpandError, match="n_samples"):
        composition_scores(w, q, baseline="random", n_samples=1)
    with pytest.raises(PathexpandError, match="L5H0"):
        composition_scores(w, q).score("L5H0", "L1H0", q)
    one = random_weights(n_layers=1, seed=9)
    assert np.all(composition_scores(one, "all")["v_composition"] == 0)


def test_bundled_induction_head_k_composes_with_its_previous_token_head():
    """Bundled attn-only-2l: the heads the forward-pass detector finds (an independent route,
    on repeated random tokens) are the pair K-composition singles out, far above the null."""
    from pathexpand.numeric.detect import detect_heads

    w = pe.load("attn-only-2l")
    data = detect_heads(w, n_samples=16, seed=0)
    prev_h = int(np.argmax(data["previous_token"][0]))
    ind_h = int(np.argmax(data["induction"][1]))
    assert data["previous_token"][0, prev_h] > 0.5 and data["induction"][1, ind_h] > 0.3
    k = "k_composition"
    cs = composition_scores(w, k, baseline="random", seed=0)
    column = cs[k][0, :, 1, ind_h]  # every layer-0 head's K-composition into the induction head
    assert int(np.argmax(column)) == prev_h
    assert cs.z(k)[0, prev_h, 1, ind_h] > 3  # well above the Gaussian null


def test_the_default_ranking_subtracts_the_random_baseline():
    """As the paper does: by default the value is the score minus the mean of the null."""
    w = pe.load("attn-only-2l")
    default = composition_scores(w, "k_composition").ranking()
    raw = composition_scores(w, "k_composition", baseline=None)
    top = default[0]
    assert top["score"] == pytest.approx(raw.score(top["earlier"], top["later"], "k_composition"))
    assert top.value == pytest.approx(top["score"] - top["baseline"])
    assert 0.05 < top["baseline"] < 0.15        # about 1/sqrt(d_model) = 0.088 for d_model 128
