"""One answer per quantity: every public route to a copying score, a full-OV norm or a QK circuit
gives the same number, on a LayerNorm model with MLPs (bundled ``gelu-2l``) and on a
TransformerLens LayerNorm model passed in as it is.

Second routes, independent of the circuit builder: the dense products of the convention written
out here in numpy (readers ``C diag(w) W``, writers ``W C``), and TransformerLens's own weights
after its default processing (``fold_ln``, ``center_writing_weights``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.numeric.evaluate import copying_statistics
from pathexpand.render import plots

pytestmark = pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning")


def _tl_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, n_heads=3, d_model=16, d_head=4, d_vocab=24, n_ctx=8,
                                  d_mlp=32, act_fn="gelu_new", normalization_type="LN", seed=0,
                                  device="cpu", dtype=torch.float64)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:  # LayerNorm weights that matter: far from 1, biases far from 0
                p.copy_((1.0 if name.endswith(".w") else 0.0) + 0.5 * torch.randn(p.shape, generator=g,
                                                                                  dtype=torch.float64))
    return model


@pytest.fixture(scope="module", params=["gelu-2l", "transformer_lens"])
def model(request):
    """(what the public functions are given, the same model as float64 Weights, tolerance): the
    bundled model is given by name and computed in its float32; the TransformerLens one is float64."""
    if request.param == "gelu-2l":
        return "gelu-2l", pe.load("gelu-2l", dtype="float64"), 2e-5
    m = _tl_model()
    return m, pe.load(m), 1e-9


def _dense(w):
    """Per head: the full OV and QK circuits, built densely from the convention in numpy."""
    f = {k: np.asarray(v, np.float64) for k, v in w.state_dict().items()}
    d = w.config.d_model
    C = np.eye(d) - np.ones((d, d)) / d

    def reader(W, ln):
        return C @ np.diag(f[f"{ln}.w"]) @ W

    ov, qk = {}, {}
    for l in range(w.config.n_layers):
        for h in range(w.config.n_heads):
            a = f"blocks.{l}.attn."
            V, Q, K = (reader(f[a + n][h], f"blocks.{l}.ln1") for n in ("W_V", "W_Q", "W_K"))
            E, O = f["W_E"] @ C, f[a + "W_O"][h] @ C
            ov[f"L{l}H{h}"] = E @ V @ O @ reader(f["W_U"], "ln_final")
            qk[f"L{l}H{h}"] = E @ Q @ K.T @ E.T
    return ov, qk


def _copying(M):
    return float(copying_statistics(torch.as_tensor(np.linalg.eigvals(M)))[0])


def test_copying_scores_agree_on_every_route(model):
    given, w, tol = model
    ov, _ = _dense(w)
    by_detector = pe.copying_scores(given)["copying"]
    by_evaluate = {r.name: r.value for r in pe.evaluate(pe.expand_logits(given, max_depth=1).filter(kind="head"),
                                                         given, metric="copying")}
    lam = plots.ov_eigenvalues(given)                           # what the eigenvalue plot draws
    by_plot = copying_statistics(torch.as_tensor(lam))[0].numpy()
    for name, M in ov.items():
        l, h = int(name[1]), int(name[3])
        want = _copying(M)
        assert by_detector[l, h] == pytest.approx(want, abs=tol)
        assert by_evaluate[name] == pytest.approx(want, abs=tol)
        assert by_plot[l, h] == pytest.approx(want, abs=tol)


def test_full_ov_norms_agree_on_every_route(model):
    given, w, tol = model
    ov, _ = _dense(w)
    stacked = pe.circuit("OV", given).norm()
    rows = pe.evaluate(pe.expand_logits(given, max_depth=1).filter(kind="head"), given, metric="frobenius")
    for name, M in ov.items():
        l, h = int(name[1]), int(name[3])
        want = np.linalg.norm(M)
        assert float(stacked[l, h]) == pytest.approx(want, rel=tol)
        assert float(pe.circuit(name, given).norm()) == pytest.approx(want, rel=tol)
        assert rows[name].value == pytest.approx(want, rel=tol)


def test_qk_circuits_agree_on_every_route(model):
    given, w, tol = model
    _, qk = _dense(w)
    stacked = pe.circuit("QK", given)
    for name, M in qk.items():
        l, h = int(name[1]), int(name[3])
        term = pe.expand_scores(given, name)["q:direct · k:direct"]
        np.testing.assert_allclose(pe.circuit(term, given).dense().numpy(), M, rtol=tol, atol=tol * np.abs(M).max())
        np.testing.assert_allclose(stacked[l, h].dense().numpy(), M, rtol=tol, atol=tol * np.abs(M).max())
        row = pe.evaluate(pe.expand_scores(given, name).filter(kind="direct"), given)["q:direct · k:direct"]
        assert row.value == pytest.approx(np.linalg.norm(M), rel=tol)


def test_the_convention_is_transformer_lens_processing():
    """TransformerLens's processed weights (its code, not ours) give the same full circuits."""
    m = _tl_model()
    w = pe.load(m)
    ov, qk = _dense(w)
    m.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)
    E, U = m.W_E.detach().numpy(), m.W_U.detach().numpy()
    for name in ov:
        l, h = int(name[1]), int(name[3])
        V, O, Q, K = (getattr(m, n)[l, h].detach().numpy() for n in ("W_V", "W_O", "W_Q", "W_K"))
        # TransformerLens's processing rounds at about 1e-7 relative (as float32 would)
        for got, want in ((E @ V @ O @ U, ov[name]), (E @ Q @ K.T @ E.T, qk[name])):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
