"""Check 3 (numbers): random float64 matrices for every symbol, fixed random patterns,
LayerNorm scales and MLP gates; the evaluated terms sum to the frozen forward pass.

The forward pass (``frozen_cases.FrozenModel``) is written directly from DESIGN.md; the
terms are evaluated from their sympy expressions (both the paper's tensor form and the
right-multiplying form) — the cross-check the numeric layer itself never does.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from pathexpand import Architecture, expand_logits, expand_scores

_spec = importlib.util.spec_from_file_location(
    "symbolic_frozen_cases", Path(__file__).with_name("frozen_cases.py")
)
fc = sys.modules.setdefault("symbolic_frozen_cases", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fc)

CASES = [
    Architecture(0, 0),
    Architecture(1, 2, positional=None),
    Architecture(2, 2),
    Architecture(3, (1, 2, 1), positional=None),
    Architecture(2, (2, 1), biases=True),
    Architecture(2, 2, positional="shortformer", biases=True),
    Architecture(2, (1, 2), mlp=True, layernorm=True, biases=True),
    Architecture(2, 1, mlp=True, positional="shortformer", biases=True),
    Architecture(1, 2, layernorm=True, biases=True, positional="shortformer"),
]


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(b).max()))


def _check_logits(arch, seed=0):
    model = fc.FrozenModel(arch, seed)
    want = model.logits()
    terms = list(expand_logits(arch))
    right = sum(fc.eval_right(t.right_expr, model) * np.ones((fc.N_POS, 1)) for t in terms)
    tensor = sum(fc.eval_tensor(t.expr, model, t.source) * np.ones((fc.N_POS, 1)) for t in terms)
    _close(right, want)
    _close(tensor, want)
    return terms, model


def _check_scores(arch, head, seed=0):
    model = fc.FrozenModel(arch, seed)
    want = model.scores(head)
    terms = list(expand_scores(arch, head))
    right_vals = [fc.eval_right(t.right_expr, model) * np.ones((fc.N_POS, fc.N_POS)) for t in terms]
    _close(sum(right_vals), want)
    _close(sum(fc.eval_score_tensor(t, model) * np.ones((fc.N_POS, fc.N_POS)) for t in terms), want)
    return terms, right_vals


@pytest.mark.parametrize("arch", CASES, ids=str)
def test_logit_terms_sum_to_frozen_forward(arch):
    _check_logits(arch)


def _row_constant(v):
    return np.ptp(v, axis=1).max() <= 1e-12 * max(1.0, np.abs(v).max())


@pytest.mark.parametrize("arch", [a for a in CASES if a.n_layers], ids=str)
def test_score_terms_sum_to_frozen_scores_and_invariants_are_row_constant(arch):
    _check_scores(arch, arch.heads[0])
    terms, values = _check_scores(arch, arch.heads[-1], seed=3)
    # softmax_invariant marks exactly the terms that are constant along every query row
    for term, value in zip(terms, values):
        assert term.softmax_invariant == _row_constant(value), term.name


def test_depth_limit_keeps_the_shallow_terms_and_cuts_the_rest():
    arch = Architecture(3, 2, biases=True)
    model = fc.FrozenModel(arch, 1)
    full = {t.name: t for t in expand_logits(arch)}
    cut = list(expand_logits(arch, max_depth=1))
    kept, rest = cut[:-1], cut[-1]
    assert rest.kind == "remainder" and all(t.depth <= 1 for t in kept)
    deep = [t for t in full.values() if t.depth > 1]
    assert {t.name for t in kept} == {n for n, t in full.items() if t.depth <= 1}
    assert expand_logits(arch, max_depth=1).n_cut == len(deep)
    # the remainder stands for exactly the deep terms: kept + deep = forward
    ones = np.ones((fc.N_POS, 1))
    total = sum(fc.eval_right(t.right_expr, model) * ones for t in kept + deep)
    _close(total, model.logits())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fc.architectures(max_layers=2, max_heads=2, max_total_heads=3))
def test_random_architectures_logits_and_scores(arch):
    _check_logits(arch, seed=7)
    if arch.heads:
        _check_scores(arch, arch.heads[-1], seed=7)
