"""Eigenvalues through the AB/BA identity, and the trace through cyclic rotation."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from pathexpand.errors import ShapeError
from pathexpand.numeric.factored import Factored

_spec = importlib.util.spec_from_file_location("factored_cases", Path(__file__).with_name("factored_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


@settings(max_examples=80, deadline=None)
@given(cases.chains(square=True))
def test_eigenvalue_power_sums_equal_dense_traces(factors):
    """Σ λ^p = tr(M^p) for p = 1..r fixes the eigenvalues (with multiplicity) — second route."""
    D = cases.dense(factors)
    lam = Factored(*factors).eigenvalues().numpy()
    r = lam.shape[-1]
    assert lam.shape[:-1] == D.shape[:-2]
    sigma = np.linalg.norm(D, ord=2, axis=(-2, -1)) if D.size else np.zeros(D.shape[:-2])
    P = np.broadcast_to(np.eye(D.shape[-1]), D.shape).copy()
    for p in range(1, r + 1):
        P = P @ D
        want = np.trace(P, axis1=-2, axis2=-1)
        got = (lam**p).sum(-1)
        tol = 1e-10 * (sigma**p * D.shape[-1] + 1e-300)
        assert np.all(np.abs(got - want) <= tol), (p, got, want)


@settings(max_examples=60, deadline=None)
@given(cases.chains(square=True))
def test_trace_equals_dense(factors):
    D = cases.dense(factors)
    got = Factored(*factors).trace().numpy()
    want = np.trace(D, axis1=-2, axis2=-1)
    scale = np.linalg.norm(D, axis=(-2, -1)) * np.sqrt(D.shape[-1]) + 1e-300
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= 1e-10 * scale)


def test_eigenvalues_of_vocab_sized_product_from_small_rotation():
    """A 3000×3000 rank-4 copying-like matrix: eigenvalues from a 4×4 rotation, largest first."""
    g = torch.Generator().manual_seed(1)
    E = torch.randn(3000, 4, generator=g, dtype=torch.float64)
    lam_true = torch.tensor([5.0, -3.0, 2.0, 0.5], dtype=torch.float64)
    # M = E diag(λ) pinv(E): eigenvalues exactly λ (and 2996 zeros)
    M = Factored(E, torch.diag(lam_true), torch.linalg.pinv(E))
    lam = M.eigenvalues()
    assert lam.shape == (4,) and lam.dtype == torch.complex128
    assert torch.allclose(lam.real, lam_true[torch.argsort(lam_true.abs(), descending=True)], atol=1e-10)
    assert torch.allclose(lam.imag, torch.zeros(4, dtype=torch.float64), atol=1e-10)
    assert torch.isclose(M.trace(), lam_true.sum(), atol=1e-10)


def test_non_square_refused_with_shape():
    M = Factored(np.ones((3, 2)), np.ones((2, 5)))
    for method in (M.eigenvalues, M.trace, M.diag):
        with pytest.raises(ShapeError, match=r"square.*\[3, 5\]"):
            method()
