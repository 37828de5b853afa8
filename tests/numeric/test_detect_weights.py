"""Weight-only detectors (``detect_heads(method="weights")``, ``copying_scores``) on weights whose
answer is known by construction, their nulls, and the induction-circuit rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric import detect as wd
from pathexpand.numeric.detect import copying_scores, detect_heads, induction_circuit


def copying_model(seed=0):
    """One layer: H0 copies exactly (W_E W_OV W_U = W_E B Bᵀ W_Eᵀ ⪰ 0), H1 anti-copies, H2 random."""
    rng = np.random.default_rng(seed)
    V, d, r = 30, 16, 8
    W_E = rng.standard_normal((V, d))
    B = np.linalg.qr(rng.standard_normal((d, r)))[0]
    W_V = np.stack([B, B, rng.standard_normal((d, r))])
    W_O = np.stack([B.T, -B.T, rng.standard_normal((r, d))])
    params = {"W_E": W_E, "W_U": W_E.T.copy(), "W_pos": rng.standard_normal((6, d)),
              "blocks.0.attn.W_Q": rng.standard_normal((3, d, r)),
              "blocks.0.attn.W_K": rng.standard_normal((3, d, r)),
              "blocks.0.attn.W_V": W_V, "blocks.0.attn.W_O": W_O}
    return pe.Weights.from_state_dict(params)


def test_exact_copying_head_scores_one():
    st = copying_scores(copying_model(), n_samples=50)
    c, share = st["copying"], st.extra["copying"]["positive_share"]
    assert c[0, 0] == pytest.approx(1.0, abs=1e-10)
    assert share[0, 0] == pytest.approx(1.0, abs=1e-10)
    assert c[0, 1] == pytest.approx(-1.0, abs=1e-10)
    assert share[0, 1] == pytest.approx(0.0, abs=1e-10)
    assert -1 <= c[0, 2] <= 1
    assert st.z("copying")[0, 0] > 3 and st.z("copying")[0, 1] < -3
    top = st.top(1)[0]
    assert (top.name, top.value) == ("L0H0", pytest.approx(1.0))
    assert st.ranking()["L0H1"].value == pytest.approx(-1.0)


def test_copying_equals_dense_eigenvalues():
    """Second route: eigenvalues of the dense V×V full OV circuit (V small)."""
    w = copying_model(seed=3)
    st = copying_scores(w, n_samples=10)
    for h in range(3):
        M = w.W_E @ w.W_V[0, h] @ w.W_O[0, h] @ w.W_U
        lam = np.linalg.eigvals(M)
        want = lam.sum().real / np.abs(lam).sum()
        assert st["copying"][0, h] == pytest.approx(want, abs=1e-8)
        pos = np.abs(lam[lam.real > 1e-9]).sum() / np.abs(lam).sum()
        assert st.extra["copying"]["positive_share"][0, h] == pytest.approx(pos, abs=1e-8)


def test_copying_null_is_centred_and_exact_for_large_vocab():
    """Null mean is 0 by symmetry (W_O → −W_O); the Bartlett sampler (any d_vocab, O(d³))
    agrees with direct Gaussian products in distribution."""
    mean, std = wd._copying_null(300, 10, 3, 400, 0)
    assert abs(mean) < 4 * std / math.sqrt(400)
    rng = np.random.default_rng(1)
    n, V, d = 3000, 40, 6
    direct = np.matmul(*wd._gaussian_wu_we_factors(rng, n, V, d, method="direct"))
    bart = np.matmul(*wd._gaussian_wu_we_factors(rng, n, V, d, method="bartlett"))
    for stat in (lambda C: (C**2).sum((1, 2)), lambda C: np.trace(C, axis1=1, axis2=2) ** 2,
                 lambda C: np.abs(np.linalg.det(C)) ** (1 / d)):
        a, b = stat(direct), stat(bart)
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 5 * se
    assert (direct**2).sum((1, 2)).mean() == pytest.approx(d * d * V, rel=0.05)  # E‖W_U W_E‖² = d²V


def positional_model(beta=40.0):
    """2 layers, one-hot positions (n_ctx 8 in d_model 16), d_head 8.

    L0H0: exact previous-token head (S[q, k] = β·[k = q−1]) whose OV writes dims 8..15.
    L0H1: attends uniformly (W_Q = 0). L1H0 keys read dims 8..15 (K-composition with L0H0);
    L1H1 keys read dims 0..7 (no composition with L0H0's output).
    """
    n, d, r = 8, 16, 8
    e = np.eye(d)
    shift = np.zeros((d, r))
    for k in range(n - 1):
        shift[k, k + 1] = 1.0  # position k's key points at query slot k + 1
    Q0 = np.stack([beta * e[:, :r], np.zeros((d, r))])
    K0 = np.stack([shift, e[:, :r]])
    V0 = np.stack([e[:, :r], e[:, :r]])
    O0 = np.stack([e[8:16, :], 0.1 * e[:r, :]])
    Q1 = np.stack([e[:, :r], e[:, :r]])
    K1 = np.stack([e[:, 8:16], e[:, :r]])
    params = {"W_E": np.zeros((5, d)), "W_pos": e[:n].copy(), "W_U": np.ones((d, 5)),
              "blocks.0.attn.W_Q": Q0, "blocks.0.attn.W_K": K0, "blocks.0.attn.W_V": V0, "blocks.0.attn.W_O": O0,
              "blocks.1.attn.W_Q": Q1, "blocks.1.attn.W_K": K1, "blocks.1.attn.W_V": V0, "blocks.1.attn.W_O": O0}
    return pe.Weights.from_state_dict(params)


def test_previous_token_head_by_construction():
    w = positional_model()
    st = detect_heads(w, method="weights", n_samples=30)
    prev = st["previous_token"]
    n, beta = 8, 40.0
    # exact: softmax over k ≤ q of (β/√d_head)·[k = q−1]
    a = beta / math.sqrt(8)
    want = np.mean([math.exp(a) / (math.exp(a) + q) for q in range(1, n)])
    assert prev[0, 0] == pytest.approx(want, rel=1e-12) and want > 0.99
    # uniform head: mean over q = 1..n−1 of 1/(q+1)
    assert prev[0, 1] == pytest.approx(np.mean([1 / (q + 1) for q in range(1, n)]), rel=1e-12)
    assert st.z("previous_token")[0, 0] > 5
    assert st.top(1, kind="previous_token")[0].name == "L0H0"


def test_previous_token_matches_forward_pass_detector():
    """Second route: with W_E = 0 the layer-0 residual is W_pos, so the data-based detector
    (forward pass on repeated tokens) measures the same attention."""
    w = positional_model(beta=3.0)
    ours = wd._previous_token(w, n_positions=8, n_samples=10, seed=0, device=None, dtype=None)
    data = detect_heads(w, seq_len=4, n_samples=2)
    np.testing.assert_allclose(ours["previous_token"][0], data["previous_token"][0], rtol=1e-5)


def test_induction_is_k_composition_with_the_previous_token_head():
    w = positional_model()
    st = detect_heads(w, method="weights", n_samples=100)
    ind = st["induction"]
    assert np.isnan(ind[0]).all()
    assert st.extra["induction"]["earlier_head"][1, 0] == "L0H0"
    cs = pe.composition_scores(w, "k_composition")
    assert ind[1, 0] == cs.score("L0H0", "L1H0", "k_composition") > 0.3
    assert ind[1, 1] == pytest.approx(0.0, abs=1e-12)
    assert st.z("induction")[1, 0] > 3 and st.top(1, kind="induction")[0].name == "L1H0"


def test_detect_heads_from_weights_bundle():
    det = detect_heads(positional_model(), method="weights")
    assert det.kinds == ("copying", "previous_token", "induction")
    assert det.top(1, kind="previous_token")[0].name == "L0H0"
    assert det.top(1, kind="induction")[0].name == "L1H0"
    r = det.ranking()
    # W_E = 0: every full OV circuit is zero, its copying score undefined (NaN) and left out
    assert np.isnan(det["copying"]).all()
    assert {row.kind for row in r} == {"previous_token", "induction"}
    assert "head scores from weights" in det.summary()
    assert "share" not in str(det.ranking("previous_token"))  # detector scores have no shares


def test_errors():
    w = copying_model()
    nopos = pe.Weights.from_state_dict({k: v for k, v in w.state_dict().items() if k != "W_pos"})
    assert detect_heads(nopos, method="weights").kinds == ("copying",)  # no W_pos: no positional statistic
    with pytest.raises(PathexpandError, match="method must be one of data, weights"):
        detect_heads(w, method="both")
    with pytest.raises(PathexpandError, match="n_samples"):
        copying_scores(w, n_samples=1)
    rect = w.replace({"W_U": np.ones((16, 7)), "b_U": np.zeros(7)}, d_vocab_out=7)
    with pytest.raises(PathexpandError, match="d_vocab_out=7"):
        copying_scores(rect)
    with pytest.raises(PathexpandError, match="unknown head statistic 'induction'"):
        copying_scores(w, n_samples=5)["induction"]


def test_bundled_model_heads_found_from_weights_alone():
    """Bundled attn-only-2l: the weight-only detectors name the same previous-token and induction
    heads as the forward-pass detector on repeated random tokens (an independent route)."""
    w = pe.load("attn-only-2l")
    data = detect_heads(w, n_samples=16, seed=0)
    det = detect_heads(w, method="weights")
    prev_h, ind_h = int(np.argmax(data["previous_token"][0])), int(np.argmax(data["induction"][1]))
    z = det.z("previous_token")
    assert int(np.argmax(z[0])) == prev_h
    assert det.top(1, kind="induction")[0].name == f"L1H{ind_h}"
    assert det.extra["induction"]["earlier_head"][1, ind_h] == f"L0H{prev_h}"
    assert det.z("induction")[1, ind_h] > 3


# the induction circuit: one rule -------------------------------------------------------------------
def test_induction_circuit_on_the_bundled_models():
    """attn-only-2l: the pair the data detector and K-composition agree on, with its numbers;
    gelu-2l: no head attends like an induction head, so none is found (and the reason says so);
    attn-only-1l: one layer, none possible."""
    ic = induction_circuit("attn-only-2l")
    data = detect_heads("attn-only-2l")
    prev_h, ind_h = int(np.argmax(data["previous_token"][0])), int(np.argmax(data["induction"][1]))
    assert ic.found and ic.pair == (f"L0H{prev_h}", f"L1H{ind_h}")
    k = ic.k_composition
    cs = pe.composition_scores("attn-only-2l", "k_composition")
    assert k["score"] == cs.score(*ic.pair, "k_composition") and k["z"] > ic.min_z
    assert ic.to_records()[0]["name"] == f"L0H{prev_h} → L1H{ind_h}.k"
    none = induction_circuit("gelu-2l")
    assert not none.found and none.pair is None
    assert "no head of layer ≥ 1 attends like an induction head" in none.reason
    assert none.title == "no induction circuit found" and len(none.ranking()) == 0
    one = induction_circuit("attn-only-1l")
    assert not one.found and "two layers" in one.reason


def test_induction_circuit_needs_composition_above_the_null():
    """Data says L1H2 is an induction head and L0H1 a previous-token head, but a threshold on z
    that no pair reaches gives "none found", naming the best pair and its z."""
    ic = induction_circuit("attn-only-2l", min_z=1e6)
    assert not ic.found and "no pair composes above the null" in ic.reason
    assert len(ic.candidates) >= 1
    with pytest.raises(PathexpandError, match="min_z must be a finite number"):
        induction_circuit("attn-only-2l", min_z=float("nan"))


def test_induction_circuit_refuses_results_of_another_model():
    """Results passed in for reuse are checked: type, shape, and the model they came from."""
    with pytest.raises(PathexpandError, match="heads= was computed on another model .attn-only-2l"):
        induction_circuit("gelu-2l", heads=detect_heads("attn-only-2l", n_samples=2))
    with pytest.raises(PathexpandError, match="heads= was computed on another model"):
        induction_circuit("attn-only-2l", heads=detect_heads("attn-only-1l", n_samples=2))
    with pytest.raises(PathexpandError, match="heads= must be pe.detect_heads.model., got str"):
        induction_circuit("attn-only-2l", heads="x")
    with pytest.raises(PathexpandError, match="from data"):
        induction_circuit("attn-only-2l", heads=detect_heads("attn-only-2l", method="weights"))
    with pytest.raises(PathexpandError, match="its random null"):
        induction_circuit("attn-only-2l", composition=pe.composition_scores("attn-only-2l", baseline=None))
    with pytest.raises(PathexpandError, match="k_composition with its random null"):
        induction_circuit("attn-only-2l", composition=pe.composition_scores("attn-only-2l", "q_composition"))
