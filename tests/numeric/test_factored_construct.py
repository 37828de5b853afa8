"""Construction: shapes, dtype/device, and errors that quote both shapes."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from pathexpand.errors import PathexpandError, ShapeError
from pathexpand.numeric.factored import Factored

_spec = importlib.util.spec_from_file_location("factored_cases", Path(__file__).with_name("factored_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def test_shape_dims_and_batch():
    rng = np.random.default_rng(0)
    W_E = rng.standard_normal((11, 6))
    W_V = rng.standard_normal((2, 3, 6, 4))
    W_O = rng.standard_normal((2, 3, 4, 6))
    W_U = rng.standard_normal((6, 11))
    M = Factored(W_E, W_V, W_O, W_U)
    assert M.shape == (2, 3, 11, 11)
    assert M.batch_shape == (2, 3) and M.ndim == 4 and len(M) == 2
    assert M.dims == (11, 6, 4, 6, 11) and M.rank_bound == 4
    assert M.ldim == 11 and M.rdim == 11
    assert M.dtype == torch.float64
    # the unbatched factor is kept unbatched (no per-head copy of W_E)
    assert M.factors[0].shape == (11, 6)
    assert "rank ≤ 4" in repr(M) and "[2, 3, 11, 11]" in repr(M)


def test_nested_factored_flattens():
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s) for s in [(3, 2), (2, 5), (5, 4)])
    M = Factored(Factored(a, b), c)
    assert len(M.factors) == 3
    np.testing.assert_allclose(M.dense().numpy(), a @ b @ c, rtol=1e-12)


def test_dtype_and_device_arguments():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 2)).astype(np.float32)
    b = torch.randn(2, 4, dtype=torch.float64)
    assert Factored(a, b).dtype == torch.float64  # promoted
    M = Factored(a, b, dtype=torch.float32, device="cpu")
    assert M.dtype == torch.float32 and M.device.type == "cpu"
    assert all(f.dtype == torch.float32 for f in M.factors)
    assert M.to(dtype=torch.float64).dtype == torch.float64
    assert Factored(np.ones((2, 2), dtype=np.int64)).dtype.is_floating_point


def test_read_only_numpy_is_accepted_without_copy_warning():
    a = np.ones((3, 2))
    a.setflags(write=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M = Factored(a, np.ones((2, 3)))
    assert float(M.trace()) == 6.0


def test_inner_mismatch_quotes_both_shapes():
    with pytest.raises(ShapeError, match=r"\[5, 3\] @ \[4, 2\]"):
        Factored(np.ones((5, 3)), np.ones((4, 2)))


def test_batch_mismatch_quotes_shapes():
    with pytest.raises(ShapeError, match=r"\[2, 5, 3\].*\[3, 3, 2\]"):
        Factored(np.ones((2, 5, 3)), np.ones((3, 3, 2)))


def test_bad_factors():
    with pytest.raises(PathexpandError, match="at least one factor"):
        Factored()
    with pytest.raises(ShapeError, match=r"matrix .* got shape \[4\]"):
        Factored(np.ones(4))
    assert issubclass(ShapeError, ValueError)


@settings(max_examples=40, deadline=None)
@given(cases.chains())
def test_shape_matches_dense(factors):
    M = Factored(*factors)
    assert tuple(M.shape) == cases.dense(factors).shape


def test_complex_factors_refused():
    with pytest.raises(PathexpandError, match="real floating-point"):
        Factored(np.ones((2, 2), dtype=np.complex128))
