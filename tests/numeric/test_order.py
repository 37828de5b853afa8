"""Order importance: the frozen model truncated by path depth.

Second routes: the model's own loss from the forward pass (cross-entropy computed here),
the truncated logits rebuilt from the plain-numpy path enumeration
(``attribute_cases.brute_paths``: Σ over paths of depth ≤ n + constants), and each
term's marginal effect recomputed from those brute-force logits.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.errors import PathexpandError
from pathexpand.numeric.forward import forward

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = np.random.default_rng(0).integers(0, 11, (5, 8))


def _ce(logits, tokens):
    logits = np.asarray(logits, dtype=np.float64)[:, :-1]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    return float(-np.take_along_axis(logp, tokens[:, 1:, None], -1).mean())


@pytest.mark.parametrize("name", ["attn2", "attn3", "gelu_new", "shortformer_ln", "lnpre"])
def test_depth_table_against_brute_force(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    res = pe.order_importance(w, TOKENS, batch_size=2)
    model_logits = forward(w, TOKENS, dtype=torch.float64).numpy()
    assert res.model_loss == pytest.approx(_ce(model_logits, TOKENS), rel=1e-12)
    # at full depth the frozen model is the model
    assert res.loss[-1] == pytest.approx(res.model_loss, rel=1e-10)
    assert res.logit_error[-1] <= 1e-10 * np.abs(model_logits).max()
    fields, consts, readout = cases.brute_paths(w, TOKENS)
    const = sum(consts.values())
    assert res.depths == list(range(max(len(p) - 1 for p in fields) + 1))
    for n in res.depths:
        logits_n = const + sum(readout(f) for p, f in fields.items() if len(p) - 1 <= n)
        assert res.loss[n] == pytest.approx(_ce(logits_n, TOKENS), rel=1e-9)
        assert res.logit_error[n] == pytest.approx(np.abs(logits_n - model_logits).max(), rel=1e-9, abs=1e-12)
        rms = np.sqrt(((logits_n - model_logits) ** 2).mean())
        assert res.logit_rms[n] == pytest.approx(rms, rel=1e-9, abs=1e-12)
    # marginal effect of removing one term
    rows = {tuple(t["path"]): t["value"] for t in res.terms}
    assert set(rows) == set(fields) | {(k,) for k in consts}
    base = _ce(model_logits, TOKENS)
    for p in list(fields)[:: max(1, len(fields) // 15)]:
        want = _ce(model_logits - readout(fields[p]), TOKENS) - base
        assert rows[p] == pytest.approx(want, rel=1e-8, abs=1e-12)
    assert rows[("b_U",)] == pytest.approx(_ce(model_logits - consts["b_U"], TOKENS) - base, rel=1e-8)


def test_streaming_and_limits():
    w = cases.random_weights(**cases.CONFIGS["gelu"])
    whole = pe.order_importance(w, TOKENS, batch_size=64)
    parts = pe.order_importance(w, TOKENS, batch_size=1)
    np.testing.assert_allclose(parts.loss, whole.loss, rtol=1e-12)
    np.testing.assert_allclose(parts.logit_error, whole.logit_error, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts.logit_rms, whole.logit_rms, rtol=1e-12, atol=1e-12)
    assert [t["value"] for t in parts.terms] == pytest.approx([t["value"] for t in whole.terms], rel=1e-10)
    capped = pe.order_importance(w, TOKENS, max_paths=10)
    assert capped.terms is None and "max_paths" in capped.notes[0]
    with pytest.raises(PathexpandError, match="not computed"):
        capped.ranking("terms")
    assert capped.ranking().of == "depths" and len(capped.ranking()) == len(capped.depths)
    assert "depth" in str(whole) and len(whole.to_dict()["depths"]) == len(whole.depths)
    assert abs(whole.ranking().top(1)[0].value) == max(abs(t["value"]) for t in whole.terms)
    with pytest.raises(PathexpandError, match="at least 2 tokens"):
        pe.order_importance(w, [[1]])
