"""Token files: a ``pathlib.Path`` to a ``.npy`` array is memory-mapped and streamed in batches.

Second route: the same ids passed in memory give the same numbers; bad files are refused
with a clear error and nothing is unpickled.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.tokens import load_token_file

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


@pytest.fixture
def token_file(tmp_path):
    ids = np.random.default_rng(3).integers(0, 11, (7, 8)).astype(np.uint16)   # a compact on-disk dtype
    path = tmp_path / "tokens.npy"
    np.save(path, ids)
    return path, ids


def test_order_importance_streams_a_token_file(token_file):
    path, ids = token_file
    w = cases.random_weights()
    from_file = pe.order_importance(w, path, batch_size=3)
    in_memory = pe.order_importance(w, ids.astype(np.int64), batch_size=7)
    assert from_file.n_tokens == in_memory.n_tokens == 7 * 7
    np.testing.assert_allclose(from_file.loss, in_memory.loss, rtol=1e-12)
    np.testing.assert_allclose(from_file.model_loss, in_memory.model_loss, rtol=1e-12)
    np.testing.assert_allclose([t["value"] for t in from_file.terms],
                               [t["value"] for t in in_memory.terms], rtol=1e-9, atol=1e-12)


def test_attribute_reads_a_token_file(token_file):
    path, ids = token_file
    w = cases.random_weights()
    a = pe.attribute(w, path, target=2, views=("node",), batch_size=2)
    b = pe.attribute(w, ids.astype(np.int64), target=2, views=("node",))
    np.testing.assert_allclose(a.node("L1H0"), b.node("L1H0"), rtol=1e-12, atol=1e-12)
    assert a.residual_error() < 1e-10


def test_token_files_are_memory_mapped_not_copied(token_file):
    path, ids = token_file
    a = load_token_file(path)
    assert isinstance(a, np.memmap) and a.dtype == np.uint16
    np.testing.assert_array_equal(a, ids)


def test_bad_token_files_are_refused(tmp_path):
    with pytest.raises(PathexpandError, match="does not exist"):
        load_token_file(tmp_path / "missing.npy")
    with pytest.raises(PathexpandError, match=r"\.npy"):
        load_token_file(tmp_path / "tokens.txt")
    np.save(tmp_path / "floats.npy", np.zeros((2, 3)))
    with pytest.raises(PathexpandError, match="integer ids"):
        load_token_file(tmp_path / "floats.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PathexpandError, match="not a readable"):
        load_token_file(tmp_path / "objects.npy")          # a pickle inside: refused, never loaded
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(PathexpandError, match="not a readable"):
        load_token_file(tmp_path / "pickle.npy")


def test_detect_heads_runs_in_the_dtype_asked_for():
    w = cases.random_weights(dtype=np.float32)
    lo = pe.detect_heads(w, seq_len=4, n_samples=6, batch_size=4)
    hi = pe.detect_heads(w, seq_len=4, n_samples=6, batch_size=4, dtype="float64")
    for kind in ("previous_token", "induction", "duplicate_token"):
        np.testing.assert_allclose(lo[kind], hi[kind], rtol=1e-4, atol=1e-6)
