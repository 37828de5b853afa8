"""``evaluate``: every metric equals the dense computation on small models; ground truth ranks first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.errors import PathexpandError, UnknownHeadError
from pathexpand.names import parse_head, parse_node
from pathexpand.numeric.circuits import circuit
from pathexpand.numeric.weights import Config, expected_shapes


def make_weights(seed=0, **cfg):
    base = dict(n_layers=2, n_heads=2, d_model=6, d_head=3, d_vocab=11, n_ctx=9)
    base.update(cfg)
    c = Config(**base)
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in expected_shapes(c).items()}
    for k, v in params.items():
        if k.endswith(("ln1.w", "ln2.w", "ln_final.w")):
            params[k] = 1 + 0.3 * v
    return pe.Weights(params, c)


# ---- the dense second route: numpy, written from DESIGN.md, one matrix per term ----------
def reader(w, W, ln, layer=None):
    """What a LayerNorm reader does data-free: C diag(w) W (C centres over d_model)."""
    norm = w.config.normalization
    if norm is None:
        return W
    if norm == "LN":
        gain = w["ln_final.w"] if ln == "ln_final" else w[f"blocks.{layer}.{ln}.w"]
        W = gain[:, None] * W
    return W - W.mean(0, keepdims=True)


def node_map(w, name, raw):
    node = parse_node(name)
    l = node.layer
    if node.kind == "head":
        V = w[f"blocks.{l}.attn.W_V"][node.head]
        return (V if raw else reader(w, V, "ln1", l)) @ w[f"blocks.{l}.attn.W_O"][node.head]
    W_in = w[f"blocks.{l}.mlp.W_in"]
    return (W_in if raw else reader(w, W_in, "ln2", l)) @ w[f"blocks.{l}.mlp.W_out"]


def source_rows(w, source, scope):
    d = w.config.d_model
    if source == "embed":
        return (w.W_E if scope == "full" else np.eye(d)), False
    if source == "pos":
        return (w.W_pos if scope == "full" else np.eye(d)), w.config.positional == "shortformer"
    node = parse_node(source)
    l, p = node.layer, node.param
    if p == "b_V":
        return (w[f"blocks.{l}.attn.b_V"][node.head] @ w[f"blocks.{l}.attn.W_O"][node.head])[None], False
    if p == "b_O":
        return w[f"blocks.{l}.attn.b_O"][None], False
    if p == "b_in":
        return (w[f"blocks.{l}.mlp.b_in"] @ w[f"blocks.{l}.mlp.W_out"])[None], False
    if p == "b_out":
        return w[f"blocks.{l}.mlp.b_out"][None], False
    if p in ("ln1.b", "ln2.b"):
        return w[f"blocks.{l}.{p}"][None], True
    if source == "ln_final.b":
        return w["ln_final.b"][None], True
    raise AssertionError(source)


def dense_logit(w, path, scope="full"):
    if path[0] == "b_U":
        return w.b_U[None] if scope == "full" else None
    X, raw = source_rows(w, path[0], scope)
    for n in path[1:]:
        X = X @ node_map(w, n, raw)
        raw = False
    if scope == "full":
        X = X @ (w.W_U if raw else reader(w, w.W_U, "ln_final"))
    return X


def dense_side(w, path, head, side, scope):
    l, h = parse_head(head)
    if path == (f"{head}.b_{side.upper()}",):
        return w[f"blocks.{l}.attn.b_{side.upper()}"][h][None]
    X, raw = source_rows(w, path[0], scope)
    for n in path[1:]:
        X = X @ node_map(w, n, raw)
        raw = False
    W = w[f"blocks.{l}.attn.W_{side.upper()}"][h]
    return X @ (W if raw else reader(w, W, "ln1", l))


def dense_score(w, term, scope="full"):
    q = dense_side(w, term.query_path, term.head, "q", scope)
    k = dense_side(w, term.key_path, term.head, "k", scope)
    return q @ k.T


def metric_of(M, metric):
    if M is None:
        return math.nan
    if metric == "frobenius":
        return np.linalg.norm(M)
    if metric == "spectral":
        return np.linalg.norm(M, 2)
    if M.shape[0] != M.shape[1]:
        return math.nan
    lam = np.linalg.eigvals(M)
    return lam.sum().real / np.abs(lam).sum()


def _maps_a_space_to_itself(term, scope):
    """Copying is defined from tokens to tokens (embed ... logits, embed × embed scores) or, in
    residual scope, from the residual stream to itself (written out again here, not imported)."""
    ends = ("embed", "pos") if scope == "residual" else ("embed",)
    if hasattr(term, "query_path"):
        return term.query_path[0] in ends and term.key_path[0] in ends
    return term.path[0] in ends


def check_against_dense(w, expansion, metric, scope="full", positional=False, rtol=1e-10):
    ranking = pe.evaluate(expansion, w, metric, scope=scope, positional=positional)
    seen = 0
    for term in expansion:
        if term.is_remainder:
            continue
        if positional and (term.query_path[0], term.key_path[0]) != ("pos", "pos"):
            assert term.name not in ranking
            continue
        if hasattr(term, "query_path"):
            M = dense_score(w, term, scope)
        else:
            M = dense_logit(w, term.path, scope)
        want = metric_of(M, metric)
        if metric == "copying" and not _maps_a_space_to_itself(term, scope):
            want = math.nan          # a square matrix by coincidence (bias rows, positions × tokens)
        got = ranking[term.name].value
        if math.isnan(want):
            assert math.isnan(got), term.name
        elif metric == "copying":
            # dense eigenvalues include V − r numerically-zero ones; compare loosely in abs
            assert got == pytest.approx(want, abs=1e-7), term.name
        else:
            assert got == pytest.approx(want, rel=rtol, abs=1e-300), term.name
        seen += 1
    assert seen == len(ranking) - sum(1 for r in ranking if r.kind == "remainder")
    return ranking


@pytest.mark.parametrize("metric", ["frobenius", "spectral", "copying"])
@pytest.mark.parametrize("scope", ["full", "residual"])
def test_logit_terms_equal_dense(metric, scope):
    w = make_weights(seed=1)
    exp = pe.expand_logits(pe.Architecture.from_weights(w))
    assert pe.Architecture.from_weights(w).biases
    r = check_against_dense(w, exp, metric, scope)
    assert len(r) == len(exp)


@pytest.mark.parametrize("metric", ["frobenius", "spectral", "copying"])
def test_score_terms_equal_dense(metric):
    w = make_weights(seed=2, n_ctx=10)  # n_ctx > d_model: W_pos is reduced to its root too
    arch = pe.Architecture.from_weights(w)
    for head in ("L0H1", "L1H0"):
        check_against_dense(w, pe.expand_scores(arch, head), metric)
    check_against_dense(w, pe.expand_scores(arch, "L1H1"), metric, scope="residual")


def test_positional_scores_equal_dense():
    w = make_weights(seed=3, n_ctx=12)
    r = check_against_dense(w, pe.expand_scores(pe.Architecture.from_weights(w), "L1H0"), "frobenius",
                            positional=True)
    assert len(r) == 9 and all(row.path[0] == "pos" and row["key_path"][0] == "pos" for row in r)


@pytest.mark.parametrize("metric", ["frobenius", "spectral", "copying"])
def test_layernorm_mlp_model_equals_dense(metric):
    w = make_weights(seed=4, d_mlp=7, act_fn="gelu", normalization="LN", n_layers=2, n_heads=1)
    arch = pe.Architecture.from_weights(w)
    assert arch.mlp and arch.layernorm
    r = check_against_dense(w, pe.expand_logits(arch, max_depth=2), metric)
    assert any("linearised MLP" in n for n in r.notes) and any("1/σ" in n for n in r.notes)
    assert r["remainder"].value != r["remainder"].value  # NaN: not evaluated
    check_against_dense(w, pe.expand_scores(arch, "L1H0", max_depth=2), metric)


def test_shortformer_scores_equal_dense():
    w = make_weights(seed=5, positional="shortformer", normalization="LN", n_layers=2)
    arch = pe.Architecture.from_weights(w)
    check_against_dense(w, pe.expand_scores(arch, "L1H1"), "frobenius")
    exp = pe.expand_logits(arch)
    assert not any(t.path[0] == "pos" for t in exp)  # shortformer: no OV path carries W_pos


def test_layernorm_reader_matches_fold_layernorm():
    """Second route for LayerNorm: evaluating LN weights equals evaluating the same model after
    ``fold_layernorm`` (its own implementation), for every term that is not an LN-bias term."""
    w = make_weights(seed=6, d_mlp=5, act_fn="relu", normalization="LN", n_layers=2)
    folded = pe.fold_layernorm(w)
    raw = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w), max_depth=2), w)
    fol = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(folded), max_depth=2), folded)
    compared = 0
    for row in raw:
        if row.kind in ("bias", "remainder"):
            continue
        assert fol[row.name].value == pytest.approx(row.value, rel=1e-10)
        compared += 1
    assert compared > 10


def designed_virtual_head(seed=0):
    """L1H0∘L0H0 is a strong V-composition virtual head: L0H0 writes into span(e0, e1) and
    L1H0 reads exactly that span; every other head is small and reads/writes elsewhere."""
    rng = np.random.default_rng(seed)
    d, r, V = 8, 2, 10
    e = np.eye(d)
    small = lambda *s: 0.05 * rng.standard_normal(s)
    W_V = small(2, 2, d, r)
    W_O = small(2, 2, r, d)
    W_V[0, 0] = 3 * e[:, [2, 3]]
    W_O[0, 0] = 3 * e[[0, 1], :]
    W_V[1, 0] = 3 * e[:, [0, 1]]
    W_O[1, 0] = 3 * e[[4, 5], :]
    params = {"W_E": rng.standard_normal((V, d)), "W_U": rng.standard_normal((d, V))}
    for l in range(2):
        params[f"blocks.{l}.attn.W_V"] = W_V[l]
        params[f"blocks.{l}.attn.W_O"] = W_O[l]
        params[f"blocks.{l}.attn.W_Q"] = rng.standard_normal((2, d, r))
        params[f"blocks.{l}.attn.W_K"] = rng.standard_normal((2, d, r))
    return pe.Weights.from_state_dict(params)


def test_designed_virtual_head_ranks_first():
    w = designed_virtual_head()
    exp = pe.expand_logits(pe.Architecture.from_weights(w))
    for scope in ("full", "residual"):
        r = pe.evaluate(exp, w, scope=scope)
        assert r[0].name == "L1H0∘L0H0" and r[0].kind == "virtual"
        assert r.filter(kind="virtual")[0].name == "L1H0∘L0H0"
    r = pe.evaluate(exp, w, baseline="random", n_null=32)
    # more aligned than Gaussian weights of equal norms; the null is seeded and reproducible
    row = r["L1H0∘L0H0"]
    assert row["ratio"] > 1.5 and row["ratio"] == pytest.approx(row.value / row["null"])
    again = pe.evaluate(exp, w, baseline="random", n_null=32)
    assert again["L1H0∘L0H0"]["null"] == row["null"]
    assert pe.evaluate(exp, w, baseline="random", n_null=32, seed=1)["L1H0∘L0H0"]["null"] != row["null"]
    assert r["direct"]["null"] == r["direct"].value  # nothing random in W_E W_U
    assert r.filter(through=("L0H0", "L1H0")).names == ["L1H0∘L0H0"]


def test_exact_copying_head_has_copying_score_one():
    rng = np.random.default_rng(7)
    V, d, r = 9, 6, 2
    W_E = rng.standard_normal((V, d))
    B = np.linalg.qr(rng.standard_normal((d, r)))[0]
    params = {"W_E": W_E, "W_U": W_E.T.copy(),
              "blocks.0.attn.W_V": np.stack([B, rng.standard_normal((d, r))]),
              "blocks.0.attn.W_O": np.stack([B.T, rng.standard_normal((r, d))]),
              "blocks.0.attn.W_Q": rng.standard_normal((2, d, r)),
              "blocks.0.attn.W_K": rng.standard_normal((2, d, r))}
    w = pe.Weights.from_state_dict(params)
    r = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w, "copying")
    assert r["L0H0"].value == pytest.approx(1.0, abs=1e-10)
    assert r["L0H0"]["positive_share"] == pytest.approx(1.0, abs=1e-10)
    assert r[0].name in ("L0H0", "direct")  # W_E W_Eᵀ copies too: both score exactly 1
    assert r["direct"].value == pytest.approx(1.0, abs=1e-10)


def test_circuit_builder_factors():
    w = make_weights(seed=8)
    M = circuit(("embed", "L0H1", "L1H0"), w)
    assert len(M.factors) == 6 and M.shape == (11, 11)
    np.testing.assert_allclose(M.dense().numpy(), dense_logit(w, ("embed", "L0H1", "L1H0")), rtol=1e-12)
    with pytest.raises(UnknownHeadError, match="L3H0"):
        circuit(("embed", "L3H0"), w)
    with pytest.raises(PathexpandError, match="residual"):
        circuit(("b_U",), w, scope="residual")


def test_ranking_interface_on_evaluate():
    w = make_weights(seed=9)
    r = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)), w)
    assert isinstance(r, pe.Ranking) and len(r) == 31
    assert list(r.values) == sorted(r.values, reverse=True)
    assert all(np.isnan(row.share) for row in r)   # Frobenius norms do not add up: no shares
    assert r.to_records()[0]["share"] is None and "share  " not in str(r)   # nor a share column in the text
    assert {row.kind for row in r.filter(kind="virtual")} == {"virtual"}
    assert all("L1H0" in row.path for row in r.filter(through="L1H0"))
    assert len(r.top(3)) == 3 and r.top(3)[0] is r[0]
    sel = pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(w)).filter(kind="virtual"), w)
    assert sel.names == r.filter(kind="virtual").names  # a Selection evaluates like the whole
    assert sel[0].value == r.filter(kind="virtual")[0].value


def test_float32_and_device():
    w = make_weights(seed=10).astype(np.float32)
    exp = pe.expand_logits(pe.Architecture.from_weights(w))
    a = pe.evaluate(exp, w)
    b = pe.evaluate(exp, w, dtype=torch.float64, device="cpu")
    for row in a:
        assert row.value == pytest.approx(b[row.name].value, rel=1e-4)


def test_no_dense_matrix_is_built(monkeypatch):
    """A 30 000-token vocabulary: evaluation stays factored (dense() is never called)."""
    from pathexpand.numeric import factored

    w = make_weights(seed=11, d_vocab=30_000, n_layers=1)
    monkeypatch.setattr(factored.Factored, "dense", lambda self, *a, **k: pytest.fail("dense() called"))
    exp = pe.expand_logits(pe.Architecture.from_weights(w))
    for metric in ("frobenius", "spectral", "copying"):
        r = pe.evaluate(exp, w, metric)
        assert np.isfinite(r["L0H0"].value)
    W = w.W_E @ w.W_V[0, 0] @ w.W_O[0, 0]  # [V, d]: ‖W W_U‖ without the V×V matrix
    want = np.linalg.norm(np.linalg.qr(W)[1] @ w.W_U)
    assert pe.evaluate(exp, w)["L0H0"].value == pytest.approx(want, rel=1e-10)


def test_errors():
    w = make_weights(seed=12)
    exp = pe.expand_logits(pe.Architecture.from_weights(w))
    with pytest.raises(PathexpandError, match=r"metric must be one of \['frobenius'"):
        pe.evaluate(exp, w, "nuclear")
    with pytest.raises(PathexpandError, match="scope"):
        pe.evaluate(exp, w, scope="partial")
    with pytest.raises(PathexpandError, match="n_layers 3 vs 2"):
        pe.evaluate(pe.expand_logits(pe.Architecture(3, 2, biases=True)), w)
    big = pe.expand_logits(pe.Architecture(12, 12))
    w12 = make_weights(seed=0, n_layers=12, n_heads=12, d_model=4, d_head=1, d_vocab=5, n_ctx=3,
                       positional="standard")
    with pytest.raises(PathexpandError, match="max_depth"):
        pe.evaluate(big, w12)
    mw = make_weights(seed=13, d_mlp=4, act_fn="relu", n_layers=1)
    with pytest.raises(PathexpandError, match="MLP0 is an MLP"):
        pe.evaluate(pe.expand_logits(pe.Architecture.from_weights(mw)), mw, mlp="refuse")
    r = pe.evaluate(exp, w, scope="residual")
    assert math.isnan(r["b_U"].value)  # b_U never enters the residual stream


def test_term_metrics_invariant_under_change_of_basis_inside_heads():
    """W_V → W_V M, W_O → M⁻¹ W_O (b_V → b_V M) and W_Q → W_Q N, W_K → W_K N⁻ᵀ (b_Q → b_Q N,
    b_K → b_K N⁻ᵀ) change no virtual weight matrix, so no term's metric."""
    w = make_weights(seed=14)
    rng = np.random.default_rng(15)
    p = w.state_dict()
    new = dict(p)
    for l in range(2):
        a = f"blocks.{l}.attn."
        M = rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)
        N = rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)
        Minv, NinvT = np.linalg.inv(M), np.linalg.inv(N).transpose(0, 2, 1)
        new[a + "W_V"], new[a + "W_O"] = p[a + "W_V"] @ M, Minv @ p[a + "W_O"]
        new[a + "W_Q"], new[a + "W_K"] = p[a + "W_Q"] @ N, p[a + "W_K"] @ NinvT
        new[a + "b_V"] = np.einsum("hi,hij->hj", p[a + "b_V"], M)
        new[a + "b_Q"] = np.einsum("hi,hij->hj", p[a + "b_Q"], N)
        new[a + "b_K"] = np.einsum("hi,hij->hj", p[a + "b_K"], NinvT)
    w2 = w.replace(new)
    arch = pe.Architecture.from_weights(w)
    for exp in (pe.expand_logits(arch), pe.expand_scores(arch, "L1H1")):
        for metric in ("frobenius", "spectral", "copying"):
            a, b = pe.evaluate(exp, w, metric), pe.evaluate(exp, w2, metric)
            for row in a:
                if math.isnan(row.value):
                    assert math.isnan(b[row.name].value)
                else:
                    assert b[row.name].value == pytest.approx(row.value, rel=1e-8, abs=1e-10), (metric, row.name)
