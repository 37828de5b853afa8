"""Certified top-k paths against brute force on models small enough to enumerate.

Second route: every path's exact contribution from the plain-numpy enumeration in
``attribute_cases.brute_paths``. Properties (hypothesis over random small models, targets,
k and budgets): no unlisted path exceeds the certificate; listed values are exact; when the
search completes the listed paths are the true top-k. The operator norms inside the bound
are checked against dense numpy spectral norms.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pathexpand as pe
import pathexpand.numeric.topk as topk
from pathexpand.errors import PathexpandError
from pathexpand.numeric.frozen import freeze
from pathexpand.numeric.targets import resolve_target
from pathexpand.numeric.topk import _head_norms, _mlp_norms

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

SMALL = dict(d_model=8, d_head=3, d_vocab=9, n_ctx=6)
SHAPES = {
    "attn2": dict(n_heads=2),
    "attn3": dict(n_layers=3, n_heads=2),
    "ln_attn": dict(normalization="LN", n_heads=2),
    "gelu_new": dict(d_mlp=6, act_fn="gelu_new", normalization="LN", n_heads=2),
    "relu_noln": dict(d_mlp=6, act_fn="relu", n_heads=2),
    "shortformer": dict(positional="shortformer", n_heads=2),
}


def _brute(w, tokens, u, positions):
    fields, consts, readout = cases.brute_paths(w, tokens)
    vals = {p: float(np.einsum("btv,v->", readout(f)[:, positions], u)) for p, f in fields.items()}
    const = sum(float(np.broadcast_to(c @ u, (len(tokens), len(positions))).sum()) for c in consts.values())
    return vals, const


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    seed=st.integers(0, 10_000),
    k=st.integers(1, 12),
    budget=st.one_of(st.none(), st.integers(1, 40)),
    diff=st.booleans(),
)
def test_certificate_is_sound_and_complete_search_is_exact(shape, seed, k, budget, diff):
    w = cases.random_weights(seed=seed, **SMALL, **SHAPES[shape])
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 9, (1, 6))
    u = np.zeros(9)
    a, b = rng.choice(9, 2, replace=False)
    u[a] = 1.0
    if diff:
        u[b] = -1.0
    res = pe.top_k_paths(w, tokens, target=("diff", int(a), int(b)) if diff else int(a), k=k,
                         budget_nodes=budget)
    vals, const = _brute(w, tokens, u, [5])
    listed = set(res.paths)
    assert len(listed) == len(res.paths) <= min(k, len(vals))  # fewer when a budget stops early
    for p, v in zip(res.paths, res.values):
        assert v == pytest.approx(vals[p], rel=1e-9, abs=1e-12)
    unlisted = [abs(v) for p, v in vals.items() if p not in listed]
    if unlisted:
        assert max(unlisted) <= res.certificate * (1 + 1e-9) + 1e-12
    assert res.total == pytest.approx(sum(vals.values()), rel=1e-9, abs=1e-9)
    assert res.output == pytest.approx(sum(vals.values()) + const, rel=1e-9, abs=1e-9)
    assert res.explained == pytest.approx(sum(res.values) / res.total)
    if res.complete:
        assert len(res.paths) == min(k, len(vals))
        true = sorted((abs(v) for v in vals.values()), reverse=True)[:k]
        np.testing.assert_allclose(sorted(np.abs(res.values), reverse=True), true, rtol=1e-9, atol=1e-12)
        assert res.certificate <= abs(res.values).min() * (1 + 1e-9) + 1e-12
    else:
        assert res.stopped_by == "budget_nodes" and res.notes


def test_float32_certificate_is_sound():
    w = cases.random_weights(seed=3, dtype=np.float32, **SMALL, **SHAPES["gelu_new"])
    tokens = np.array([[1, 2, 3, 4, 5, 6]])
    res = pe.top_k_paths(w, tokens, target=2, k=5)
    vals, _ = _brute(w, tokens, np.eye(9)[2], [5])
    unlisted = [abs(v) for p, v in vals.items() if p not in set(res.paths)]
    assert max(unlisted) <= res.certificate * (1 + 1e-6) + 1e-6
    assert res.complete


@pytest.mark.parametrize("exact_below", [0, 2e9])
@pytest.mark.parametrize("shape", ["ln_attn", "gelu_new", "relu_noln"])
def test_operator_norms_bound_the_dense_maps(shape, exact_below, monkeypatch):
    """‖C diag(w) W_V W_O‖₂ per head is exact; the MLP bound ≥ ‖C diag(w) W_in diag(g_p) W_out‖₂
    (equal when computed exactly, within √rank when bounded through the Frobenius norm)."""
    monkeypatch.setattr(topk, "_EXACT_MLP_FLOPS", exact_below)
    w = cases.random_weights(seed=1, **SMALL, **SHAPES[shape])
    fz = freeze(w, [[1, 2, 3, 4, 5, 6]], dtype=torch.float64)
    P = w.state_dict()
    d = w.config.d_model
    C = np.eye(d) - np.ones((d, d)) / d if w.config.normalization else np.eye(d)
    ln_w = (lambda k: np.diag(P[k])) if w.config.normalization == "LN" else (lambda k: np.eye(d))
    for l in range(w.config.n_layers):
        got = _head_norms(fz, l).numpy()
        for h in range(w.config.n_heads):
            M = C @ ln_w(f"blocks.{l}.ln1.w") @ P[f"blocks.{l}.attn.W_V"][h] @ P[f"blocks.{l}.attn.W_O"][h]
            assert got[h] == pytest.approx(np.linalg.norm(M, 2), rel=1e-10)
        if w.config.d_mlp:
            bound = _mlp_norms(fz, l).numpy()[0]
            g = fz.gates[0, l].numpy()
            L = C @ ln_w(f"blocks.{l}.ln2.w") @ P[f"blocks.{l}.mlp.W_in"]
            for p in range(6):
                exact = np.linalg.norm(L @ np.diag(g[p]) @ P[f"blocks.{l}.mlp.W_out"], 2)
                assert exact <= bound[p] * (1 + 1e-12)
                assert bound[p] <= (np.sqrt(d) if not exact_below else 1.0) * exact * (1 + 1e-9)


@pytest.mark.parametrize("shape", ["gelu_new", "relu_noln"])
def test_mlp_bound_without_the_gram_matrices_is_the_norm_product(shape, monkeypatch):
    """When neither the exact norms nor the Frobenius bound are affordable the MLP bound is
    ‖L‖₂ max|g_p| ‖W_out‖₂, still ≥ the dense ‖L diag(g_p) W_out‖₂."""
    monkeypatch.setattr(topk, "_EXACT_MLP_FLOPS", 0)
    monkeypatch.setattr(topk, "_FROBENIUS_FLOPS", 0)
    w = cases.random_weights(seed=2, **SMALL, **SHAPES[shape])
    fz = freeze(w, [[1, 2, 3, 4, 5, 6]], dtype=torch.float64)
    P = w.state_dict()
    d = w.config.d_model
    C = np.eye(d) - np.ones((d, d)) / d if w.config.normalization else np.eye(d)
    for l in range(w.config.n_layers):
        L = C @ (np.diag(P[f"blocks.{l}.ln2.w"]) if w.config.normalization else np.eye(d)) @ P[f"blocks.{l}.mlp.W_in"]
        R = P[f"blocks.{l}.mlp.W_out"]
        g = fz.gates[0, l].numpy()
        bound = _mlp_norms(fz, l).numpy()[0]
        for p in range(6):
            prod = np.linalg.norm(L, 2) * np.abs(g[p]).max() * np.linalg.norm(R, 2)
            assert bound[p] == pytest.approx(prod, rel=1e-9)
            assert np.linalg.norm(L @ np.diag(g[p]) @ R, 2) <= bound[p] * (1 + 1e-12)


def test_designed_path_found_first_and_certified():
    w = cases.v_composition_model()
    tokens = cases.repeated_tokens()
    res = pe.top_k_paths(w, tokens, target=int(tokens[-2]), k=3)
    assert res.complete and res.paths[0] == ("embed", "L0H0", "L1H0")
    assert res.certificate < 0.1 * abs(res.values[0])
    assert res.explained > 0.9
    assert "L1H0∘L0H0" in str(res) and res.to_dict()["complete"] is True
    assert res.ranking()[0].name == "L1H0∘L0H0"


def test_refusals():
    w = cases.random_weights(**SMALL)
    toks = [[1, 2, 3]]
    with pytest.raises(PathexpandError, match="k must be"):
        pe.top_k_paths(w, toks, target=1, k=0)
    with pytest.raises(PathexpandError, match="one number"):
        pe.top_k_paths(w, toks, target="logits")
    with pytest.raises(PathexpandError, match="budget_seconds"):
        pe.top_k_paths(w, toks, target=1, budget_seconds=-1)
    res = pe.top_k_paths(w, toks, target=1, k=3, budget_seconds=1e-9)
    assert not res.complete and res.stopped_by == "budget_seconds"
    gap = res.certificate / abs(res.values).min()
    assert res.status().startswith("NOT certified") and f"({gap:.3g}× apart)" in res.status()
    assert res.n_certified == int((abs(res.values) >= res.certificate).sum()) < 3


# the bound, checked against every suffix and every prefix ------------------------------------
BOUND_SHAPES = {
    **SHAPES,
    "gelu3": dict(n_layers=3, d_mlp=6, act_fn="gelu", normalization="LN", n_heads=2),
    "modern": dict(d_mlp=6, act_fn="silu", normalization="RMS", gated_mlp=True, n_heads=2,
                   positional="rotary", rotary_dim=2),
    "parallel": dict(d_mlp=6, act_fn="gelu", normalization="LN", parallel_attn_mlp=True, n_heads=2),
}
BUNDLED_TEXT = "def f(x):\n    return f(x"


def _case(shape, seed=0):
    """``(weights, tokens, target)``: a random model of ``shape`` or a bundled model by name."""
    if shape in BOUND_SHAPES:
        w = cases.random_weights(seed=seed, **SMALL, **BOUND_SHAPES[shape])
        return w, np.random.default_rng(seed).integers(0, 9, (1, 6)), ("diff", 1, 2)
    w = pe.load(shape)
    return w, BUNDLED_TEXT, ("diff", ord("x"), ord(")"))


def _suffix_vectors(fz, r):
    """``(first stage, per-position norms [b, n])`` of every non-empty suffix's backward vector
    ``N_1ᵀ ⋯ N_mᵀ r``, built from the readout back by the transposed node maps (no bound)."""
    done = [(len(fz.stages), r)]                                      # the empty suffix
    for stage in reversed(fz.stages):
        done += [(stage.index, b) for _, g in list(done) for b in fz.stage_T(g, stage)]
    return [(first, torch.linalg.vector_norm(b, dim=-1)) for first, b in done[1:]]


@pytest.mark.parametrize("shape", [*BOUND_SHAPES, "attn-only-2l", "gelu-2l", "modern-2l"])
def test_suffix_bounds_hold_for_every_suffix(shape):
    """β[s] ≥ every suffix's per-position backward norms and ν[s] ≥ their sum, for every
    suffix starting at a stage ≥ s — the two facts the prefix bound rests on."""
    w, tokens, target = _case(shape)
    fz = freeze(w, tokens, dtype=torch.float64)
    tgt = resolve_target(w, target, None, None, fz.tokens.shape)
    bounds = topk.target_bounds(fz, tgt)
    r = tgt.readout_vectors(fz).sum(0).double()                       # [b, n, d]
    suffixes = _suffix_vectors(fz, r)
    assert len(suffixes) == fz._n_suffixes(0) - 1
    for s in range(len(fz.stages) + 1):
        later = [v for first, v in suffixes if first >= s]
        if not later:
            assert float(bounds.nu[s]) == 0.0
            continue
        norms = torch.stack(later)                                    # [m, b, n]
        assert (norms <= bounds.beta[s] * (1 + 1e-9) + 1e-12).all()
        assert float(norms.sum((1, 2)).max()) <= float(bounds.nu[s]) * (1 + 1e-9) + 1e-12


def _prefix_bounds(w, tokens, target):
    """``(path, best, bound)`` for every prefix with a later stage: ``best`` is the largest
    |contribution| of any strict extension (every path's from the attribution's path view, a
    full enumeration), ``bound`` what the search's bound gives that prefix."""
    res = pe.attribute(w, tokens, target=target, views=("path",), dtype=torch.float64)
    value = dict(zip(res.paths, res.path_values.reshape(len(res.paths), -1).sum(-1)))
    fz = freeze(w, tokens, dtype=torch.float64)
    bounds = topk.target_bounds(fz, resolve_target(w, target, None, None, fz.tokens.shape))
    out = []
    for path in value:
        src, stages = fz.check_path(path)
        last = stages[-1].index if stages else src.birth
        if last + 1 >= len(fz.stages):
            continue
        best = max((abs(v) for q, v in value.items() if len(q) > len(path) and q[:len(path)] == path),
                   default=0.0)
        bound = float(bounds.of(torch.linalg.vector_norm(fz.path_field(path), dim=-1), last))
        out.append((path, best, bound))
    return out


@pytest.mark.parametrize("shape", [*BOUND_SHAPES, "attn-only-2l", "gelu-2l", "modern-2l"])
def test_prefix_bound_covers_every_completion(shape):
    """For every prefix, the bound the search uses ≥ the largest |contribution| of any strict
    extension (what best-first top-k needs: a bound on the best single completion), with every
    path's contribution from the attribution's path view (full enumeration)."""
    checked = _prefix_bounds(*_case(shape))
    for path, best, bound in checked:
        assert best <= bound * (1 + 1e-9) + 1e-12, (path, best, bound)
    assert len(checked) > 0


@pytest.mark.parametrize("name", ["attn-only-1l", "attn-only-2l", "gelu-2l", "modern-2l"])
def test_bundled_top10_is_certified_and_exact(name):
    """On every bundled model the search certifies the top 10, and they are the 10 largest of the
    full enumeration (attribution path view), with the same values."""
    w, text, target = _case(name)
    res = pe.attribute(w, text, target=target, views=("path",))
    exact = dict(zip(res.paths, res.path_values.reshape(len(res.paths), -1).sum(-1)))
    top = pe.top_k_paths(w, text, target=target, k=10)
    assert top.certified and top.n_certified == 10
    want = sorted(exact.values(), key=abs, reverse=True)
    np.testing.assert_allclose(np.abs(top.values), np.abs(want[:10]), rtol=1e-5, atol=1e-7)
    for p, v in zip(top.paths, top.values):
        assert v == pytest.approx(exact[p], rel=1e-5, abs=1e-7)
    assert top.certificate <= abs(top.values[-1]) * (1 + 1e-4)
    unlisted = [abs(v) for p, v in exact.items() if p not in set(top.paths)]
    assert max(unlisted, default=0.0) <= top.certificate * (1 + 1e-4) + 1e-7


# the bound's parts, each against an independent route ------------------------------------------
def _knapsack_by_vertices(a, cap, budget):
    """``max Σ a_i x_i`` over ``0 ≤ x ≤ cap``, ``Σ x ≤ budget`` by enumerating the LP's vertices:
    every coordinate at 0 or at its cap except at most one, which takes what the budget leaves."""
    import itertools

    m = len(a)
    best = 0.0
    for free in range(-1, m):
        others = [i for i in range(m) if i != free]
        for at_cap in itertools.product((False, True), repeat=len(others)):
            x = np.zeros(m)
            for i, full in zip(others, at_cap):
                x[i] = cap[i] if full else 0.0
            if free >= 0:
                x[free] = budget - x.sum()
                if not 0.0 <= x[free] <= cap[free]:
                    continue
            elif x.sum() > budget:
                continue
            best = max(best, float(a @ x))
    return best


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 6), seed=st.integers(0, 10_000), ties=st.booleans())
def test_knapsack_is_the_lp_maximum(m, seed, ties):
    """``_knapsack`` (greedy, largest ``a`` first) equals the LP optimum found at its vertices."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, m).astype(float) if ties else rng.exponential(size=m)
    cap = rng.exponential(size=m)
    budget = float(rng.uniform(0, 1.2 * cap.sum()))
    got = float(topk._knapsack(torch.tensor(a)[None], torch.tensor(cap),
                               torch.tensor(budget, dtype=torch.float64))[0])
    assert got == pytest.approx(_knapsack_by_vertices(a, cap, budget), rel=1e-12, abs=1e-12)


def _positive_scalar_model(seed, **cfg):
    """``d_model = d_head = 1``, no norm, every weight and bias in [1.2, 1.8]: each node map is a
    scalar gain > 1 on the one position, so the longest suffix is the largest."""
    from pathexpand.numeric.weights import Config, expected_shapes

    c = Config(**{**dict(n_layers=2, n_heads=2, d_model=1, d_head=1, d_vocab=5, n_ctx=1), **cfg})
    rng = np.random.default_rng(seed)
    return pe.Weights({k: rng.uniform(1.2, 1.8, s) for k, s in expected_shapes(c).items()}, c)


TIGHT_SHAPES = {
    "attn2": {},
    "attn3": dict(n_layers=3),
    "relu": dict(d_mlp=3, act_fn="relu"),
    "gelu3": dict(n_layers=3, d_mlp=2, act_fn="gelu"),
    "parallel": dict(d_mlp=2, act_fn="relu", parallel_attn_mlp=True),
}


@pytest.mark.parametrize("shape", sorted(TIGHT_SHAPES))
def test_prefix_bound_is_attained_on_a_scalar_model(shape):
    """With one position and ``d_model = 1`` every map is a scalar and the pattern is ``[[1]]``,
    so β, ν and the knapsack lose nothing: the bound equals the largest |completion| of every
    prefix (from the full enumeration) to 1e-9. A bound scaled by 0.8 anywhere fails here."""
    checked = _prefix_bounds(_positive_scalar_model(0, **TIGHT_SHAPES[shape]), [[3]], 2)
    for path, best, bound in checked:
        assert bound == pytest.approx(best, rel=1e-9), path
    assert len(checked) >= 3


@pytest.mark.parametrize("shape", sorted(BOUND_SHAPES))
def test_stage_T_is_the_adjoint_of_stage(shape):
    """⟨stage(f)_N, g⟩ = ⟨f, stage_T(g)_N⟩ for every node N of every stage, random f and g on two
    prompts (what ``_suffix_vectors``, the truth of the bound tests, rests on)."""
    w = cases.random_weights(seed=7, **SMALL, **BOUND_SHAPES[shape])
    fz = freeze(w, np.random.default_rng(7).integers(0, 9, (2, 6)), dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    f = torch.randn(2, 6, SMALL["d_model"], generator=gen, dtype=torch.float64)   # [b, n, d]
    g = torch.randn(2, 6, SMALL["d_model"], generator=gen, dtype=torch.float64)   # [b, n, d]
    for stage in fz.stages:
        fwd = fz.stage(f, stage)                                     # [k, b, n, d]
        back = fz.stage_T(g, stage)                                  # [k, b, n, d]
        assert fwd.shape == back.shape == (len(stage.nodes), 2, 6, SMALL["d_model"])
        lhs = (fwd * g).sum((1, 2, 3))                               # [k]
        rhs = (f * back).sum((1, 2, 3))                              # [k]
        assert lhs.abs().min() > 1e-6                                # not a trivial 0 = 0
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-12)


def test_status_when_the_kth_listed_value_is_zero():
    """Zero biases (but a non-zero ``b_U``, so the bias sources exist) give paths of value 0; a
    budget of one prefix and k above the non-zero paths found lists some of them: ``status`` (and
    everything that prints it) says the k-th is 0 instead of dividing by it."""
    base = cases.random_weights(seed=2, biases=False, **SMALL, **SHAPES["ln_attn"])
    params = base.state_dict()
    params["b_U"] = np.ones_like(params["b_U"])
    w = pe.Weights(params, base.config)
    res = pe.top_k_paths(w, [[1, 2, 3, 4]], target=1, k=40, budget_nodes=1)
    assert not res.certified and float(np.abs(res.values).min()) == 0.0
    assert "the k-th listed |c| is 0" in res.status()
    assert res.status() in res.summary() and res.status() in res.ranking().notes
    assert res.to_dict()["status"] == res.status() and "NOT certified" in str(res) and repr(res)


def _dense_node_matrices(w, fz, stage):
    """Per node of ``stage``, its d × d map per position ``[n, d, d]`` in plain numpy:
    ``C diag(w) W_V^h W_O^h`` (every position) or ``C diag(w) W_in diag(g_p) W_out``."""
    P = w.state_dict()
    d = w.config.d_model
    C = np.eye(d) - np.ones((d, d)) / d if w.config.normalization == "LN" else np.eye(d)

    def read(ln):
        return C @ (np.diag(P[ln + ".w"]) if ln + ".w" in P else np.eye(d))

    l, n = stage.layer, fz.n_pos
    out = []
    if stage.has_heads:
        for h in range(w.config.n_heads):
            M = read(f"blocks.{l}.ln1") @ P[f"blocks.{l}.attn.W_V"][h] @ P[f"blocks.{l}.attn.W_O"][h]
            out.append(np.broadcast_to(M, (n, d, d)))
    if stage.has_mlp:
        g = fz.gates[0, l].numpy()
        L, R = read(f"blocks.{l}.ln2") @ P[f"blocks.{l}.mlp.W_in"], P[f"blocks.{l}.mlp.W_out"]
        out.append(np.stack([L @ np.diag(g[p]) @ R for p in range(n)]))
    return out


@pytest.mark.parametrize("shape", ["gelu3", "parallel", "relu_noln", "attn3", "modern"])
def test_pair_ratios_are_the_dense_composite_norms(shape):
    """Every pair ratio times the two norms is ``‖M_N M_N'‖₂`` of the dense maps at the position
    between them (numpy SVD), and every stage pair of these small models gets its ratios."""
    w, tokens, _ = _case(shape)
    fz = freeze(w, tokens, dtype=torch.float64)
    cache: dict = {}
    maps = [topk._stage_maps(fz, st, cache) for st in fz.stages]
    ratios = topk._pair_ratios(fz, maps, cache)
    S = len(fz.stages)
    assert sorted(ratios) == [(s, t) for s in range(S) for t in range(s + 1, S)]
    for (s, t), r in ratios.items():
        first, second = _dense_node_matrices(w, fz, fz.stages[s]), _dense_node_matrices(w, fz, fz.stages[t])
        assert r.shape[:2] == (len(first), len(second))
        for i, M in enumerate(first):
            for j, M2 in enumerate(second):
                for p in range(fz.n_pos):
                    want = np.linalg.norm(M[p] @ M2[p], 2)
                    prod = np.linalg.norm(M[p], 2) * np.linalg.norm(M2[p], 2)
                    assert float(r[i, j, 0, p]) * prod == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("shape", ["gelu3", "modern", "attn3"])
def test_pair_ratios_tighten_the_suffix_bounds(shape, monkeypatch):
    """With the pair ratios, β and ν are never larger than with single-node norms alone
    (``_PAIR_FLOPS = 0``) and are smaller somewhere; soundness is the enumeration tests above."""
    w, tokens, target = _case(shape)
    fz = freeze(w, tokens, dtype=torch.float64)
    tgt = resolve_target(w, target, None, None, fz.tokens.shape)
    paired = topk.target_bounds(fz, tgt)
    monkeypatch.setattr(topk, "_PAIR_FLOPS", 0)
    single = topk.target_bounds(fz, tgt)
    assert (paired.beta <= single.beta * (1 + 1e-12)).all() and (paired.nu <= single.nu * (1 + 1e-12)).all()
    assert float(paired.nu[0]) < 0.99 * float(single.nu[0])
