"""`@` with dense matrices, vectors and other Factored; `.T`; scalar products."""

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


@settings(max_examples=40, deadline=None)
@given(cases.chains(max_factors=3), cases.chains(max_factors=3, batch=False))
def test_matmul_factored_equals_dense(left, right):
    # glue the chains: right's first rows = left's last columns (right is unbatched so the batches broadcast)
    rng = np.random.default_rng(0)
    glue = rng.standard_normal((left[-1].shape[-1], right[0].shape[-2]))
    L = Factored(*left)
    R = Factored(*right)
    P = L @ glue @ R
    want = cases.dense(left) @ glue @ cases.dense(right)
    np.testing.assert_allclose(P.dense().numpy(), want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
    assert len(P.factors) == len(left) + 1 + len(right)


@settings(max_examples=40, deadline=None)
@given(cases.chains())
def test_vectors_and_rmatmul(factors):
    M = Factored(*factors)
    want = cases.dense(factors)
    rng = np.random.default_rng(3)
    v = rng.standard_normal(M.rdim)
    u = rng.standard_normal(M.ldim)
    scale = 1e-10 * (np.abs(want).max() + 1)
    np.testing.assert_allclose((M @ torch.as_tensor(v)).numpy(), want @ v, atol=scale * 10)
    np.testing.assert_allclose((torch.as_tensor(u) @ M).numpy(), u @ want, atol=scale * 10)
    X = rng.standard_normal((2, M.ldim))
    np.testing.assert_allclose((X @ M).dense().numpy(), X @ want, atol=scale * 10)  # numpy defers
    np.testing.assert_allclose((torch.as_tensor(X) @ M).dense().numpy(), X @ want, atol=scale * 10)


@settings(max_examples=40, deadline=None)
@given(cases.chains())
def test_transpose(factors):
    M = Factored(*factors)
    want = np.swapaxes(cases.dense(factors), -1, -2)
    np.testing.assert_allclose(M.T.dense().numpy(), want, rtol=1e-12, atol=1e-12)
    assert M.T.shape[-2:] == (M.rdim, M.ldim)


def test_scalar_product():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    np.testing.assert_allclose((2.5 * Factored(a, b)).dense().numpy(), 2.5 * a @ b)
    np.testing.assert_allclose((Factored(a, b) * torch.tensor(-1.0, dtype=torch.float64)).dense().numpy(), -(a @ b))
    np.testing.assert_allclose((-Factored(a, b)).dense().numpy(), -(a @ b))
    with pytest.raises(ShapeError, match="scalar"):
        Factored(a, b) * torch.ones(3)


def test_matmul_mismatch_quotes_both_shapes():
    M = Factored(np.ones((5, 3)), np.ones((3, 4)))
    with pytest.raises(ShapeError, match=r"\[5, 4\] @ \[3, 2\]"):
        M @ np.ones((3, 2))
    with pytest.raises(ShapeError, match=r"\[2, 3\] @ \[5, 4\]"):
        np.ones((2, 3)) @ M
    with pytest.raises(ShapeError, match=r"\[5, 4\] @ \[7\]"):
        M @ torch.ones(7, dtype=torch.float64)
    with pytest.raises(ShapeError):
        M @ Factored(np.ones((2, 2)))
