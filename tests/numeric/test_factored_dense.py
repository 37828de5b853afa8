"""`.dense()` builds the product when small and refuses, with the size in GB, when large."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from pathexpand.errors import PathexpandError
from pathexpand.numeric.factored import Factored

_spec = importlib.util.spec_from_file_location("factored_cases", Path(__file__).with_name("factored_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


@settings(max_examples=40, deadline=None)
@given(cases.chains())
def test_dense_equals_numpy(factors):
    np.testing.assert_allclose(
        Factored(*factors).dense().numpy(), cases.dense(factors),
        atol=1e-10 * (np.abs(cases.dense(factors)).max() + 1e-300),
    )


def test_dense_refuses_vocab_by_vocab():
    E = torch.zeros(50257, 8)
    M = Factored(E, E.T)
    with pytest.raises(PathexpandError, match=r"\[50257, 50257\].*10.1 GB in float32.*max_elements"):
        M.dense()


def test_dense_limit_can_be_raised():
    M = Factored(torch.ones(100, 2), torch.ones(2, 100))
    with pytest.raises(PathexpandError, match=r"4e-05 GB in float32"):
        M.dense(max_elements=10)
    assert M.dense(max_elements=10_000).shape == (100, 100)
    assert M.dense(max_elements=None).shape == (100, 100)
