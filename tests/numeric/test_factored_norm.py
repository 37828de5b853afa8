"""Frobenius (Gram route) and spectral norms against the dense matrix."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings

from pathexpand.numeric.factored import Factored

_spec = importlib.util.spec_from_file_location("factored_cases", Path(__file__).with_name("factored_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


@settings(max_examples=80, deadline=None)
@given(cases.chains())
def test_frobenius_equals_dense(factors):
    want = np.linalg.norm(cases.dense(factors), axis=(-2, -1))
    got = Factored(*factors).norm().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)


@settings(max_examples=80, deadline=None)
@given(cases.chains())
def test_spectral_equals_dense(factors):
    want = np.linalg.norm(cases.dense(factors), ord=2, axis=(-2, -1))
    got = Factored(*factors).spectral_norm().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)


def test_low_rank_large_outer_uses_gram_not_dense():
    """A [4000, 4000] rank-3 product: the norm comes from 3×3 Grams (and matches a QR route)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    B = torch.randn(3, 4000, generator=g, dtype=torch.float64)
    M = Factored(A, B)
    assert M._norm_plan() == 1  # split at the rank-3 inner size
    _, Ra = torch.linalg.qr(A)
    _, Rb = torch.linalg.qr(B.T)
    want = torch.linalg.matrix_norm(Ra @ Rb.T)  # orthogonal invariance: second route
    assert torch.allclose(M.norm(), want, rtol=1e-12)
    assert torch.allclose(M.spectral_norm(), torch.linalg.matrix_norm(Ra @ Rb.T, ord=2), rtol=1e-12)


def test_shared_unbatched_factor_is_reduced_once():
    """W_E without batch axes: the chosen plan forms W_Eᵀ W_E once (cost ~ d_vocab d_model²)."""
    from pathexpand.numeric.factored import _chain_cost, _dims_batches

    M = Factored(torch.randn(5000, 16), torch.randn(4, 8, 16, 2), torch.randn(4, 8, 2, 16), torch.randn(16, 5000))
    j = M._norm_plan()
    assert j == 2
    left, _ = M._gram_chains(j)
    cost = _chain_cost(*_dims_batches(left))
    assert cost < 2 * 5000 * 16 * 16  # not 32 heads × 5000 × 16 × 2 per head and more


def test_float32_input_float32_result():
    M = Factored(torch.randn(30, 4), torch.randn(4, 30))
    assert M.norm().dtype == torch.float32
    d = (M.factors[0].double() @ M.factors[1].double())
    assert abs(float(M.norm()) - float(torch.linalg.matrix_norm(d))) <= 1e-5 * float(torch.linalg.matrix_norm(d))


def test_zero_product():
    a = np.zeros((4, 2))
    a[0, 0] = 1.0
    b = np.zeros((2, 5))
    b[1, 3] = 1.0
    M = Factored(a, b)
    assert float(M.norm()) == 0.0 and float(M.spectral_norm()) == 0.0
