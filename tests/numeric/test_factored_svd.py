"""SVD through QR of the factors and an SVD of the small core."""

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
def test_svd_reconstructs_and_matches_singular_values(factors):
    D = cases.dense(factors)
    M = Factored(*factors)
    U, S, V = (t.numpy() for t in M.svd())
    r = min(M.dims)
    assert U.shape == tuple(M.batch_shape) + (M.ldim, r)
    assert S.shape == tuple(M.batch_shape) + (r,)
    assert V.shape == tuple(M.batch_shape) + (M.rdim, r)
    scale = np.abs(D).max() + 1e-300
    rebuilt = (U * S[..., None, :]) @ np.swapaxes(V, -1, -2)
    np.testing.assert_allclose(rebuilt, D, atol=1e-10 * scale)
    want = np.linalg.svd(D, compute_uv=False)[..., :r]
    np.testing.assert_allclose(S, want, atol=1e-10 * (want.max() if want.size else 1))
    assert np.all(np.diff(S, axis=-1) <= 1e-12 * scale)  # descending
    eye = np.eye(r)
    # columns belonging to non-zero singular values are orthonormal
    big = S > 1e-8 * (S.max() if S.size else 0) if S.size else S
    for idx in np.ndindex(*S.shape[:-1]):
        keep = big[idx]
        u, v = U[idx][:, keep], V[idx][:, keep]
        np.testing.assert_allclose(u.T @ u, eye[: keep.sum(), : keep.sum()], atol=1e-10)
        np.testing.assert_allclose(v.T @ v, eye[: keep.sum(), : keep.sum()], atol=1e-10)


def test_svd_is_cached_and_singular_values_agree():
    M = Factored(torch.randn(50, 3, dtype=torch.float64), torch.randn(3, 40, dtype=torch.float64))
    assert M.svd() is M.svd()
    assert torch.allclose(M.singular_values()[0], M.spectral_norm(), rtol=1e-12)
    assert torch.allclose(M.singular_values().square().sum().sqrt(), M.norm(), rtol=1e-12)
