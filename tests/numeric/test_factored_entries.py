"""Entries without the matrix: `.diag()`, `.row(i)`, `.col(j)`, and batch indexing."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from pathexpand.errors import PathexpandError
from pathexpand.numeric.factored import Factored

_spec = importlib.util.spec_from_file_location("factored_cases", Path(__file__).with_name("factored_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


@settings(max_examples=60, deadline=None)
@given(cases.chains(square=True))
def test_diag(factors):
    D = cases.dense(factors)
    got = Factored(*factors).diag().numpy()
    want = np.diagonal(D, axis1=-2, axis2=-1)
    np.testing.assert_allclose(got, want, atol=1e-10 * (np.abs(D).max() + 1e-300))


@settings(max_examples=60, deadline=None)
@given(cases.chains())
def test_row_and_col(factors):
    D = cases.dense(factors)
    M = Factored(*factors)
    atol = 1e-10 * (np.abs(D).max() + 1e-300)
    for i in (0, M.ldim - 1, -1):
        np.testing.assert_allclose(M.row(i).numpy(), D[..., i, :], atol=atol)
    for j in (0, M.rdim - 1, -1):
        np.testing.assert_allclose(M.col(j).numpy(), D[..., :, j], atol=atol)


def test_row_col_out_of_range():
    M = Factored(np.ones((3, 2)), np.ones((2, 5)))
    with pytest.raises(IndexError, match=r"row 3 .*\[3, 5\]"):
        M.row(3)
    with pytest.raises(IndexError, match=r"column -6 .*\[3, 5\]"):
        M.col(-6)
    with pytest.raises(PathexpandError, match="int"):
        M.row(1.5)


@settings(max_examples=60, deadline=None)
@given(cases.chains())
def test_batch_indexing(factors):
    D = cases.dense(factors)
    M = Factored(*factors)
    if M.ndim < 3:
        return
    for index in [0, -1, slice(None), slice(0, 1)] + ([(0, -1), (slice(None), 0)] if M.ndim > 3 else []):
        got = M[index].dense().numpy()
        np.testing.assert_allclose(got, D[index], atol=1e-10 * (np.abs(D).max() + 1e-300))


def test_batch_index_errors():
    M = Factored(np.ones((2, 3, 4)), np.ones((4, 5)))
    with pytest.raises(IndexError, match="size 2"):
        M[2]
    with pytest.raises(IndexError, match="batch axes"):
        M[0, 1]
