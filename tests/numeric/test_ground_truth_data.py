"""Ground truth on tokens: hand-built circuits whose answer is known by construction.

``attribute_cases`` builds (with small random noise on every weight, so no other term is
trivially zero): an exact previous-token head L0H0 and an induction head L1H0 that
K-composes with it; a V-composition pair whose virtual head L1H0∘L0H0 predicts the
previous token; a Q-composition pair whose L1H0 query reads what L0H0 wrote. Attribution,
score attribution, top-k search and order importance must single out the designed terms.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

import pathexpand as pe
from pathexpand.numeric.forward import run_with_cache

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = cases.repeated_tokens(length=6)   # [r, r], 12 tokens, distinct within r
LAST = len(TOKENS) - 1


def test_the_circuits_do_what_they_were_built_for():
    """Sanity of the construction itself (from the forward pass, not from attribution)."""
    _, cache = run_with_cache(cases.induction_model(), TOKENS)
    A = cache.patterns[0].numpy()
    assert np.diagonal(A[0, 0], offset=-1).min() > 0.99                    # previous token
    assert min(A[1, 0, i, i - 5] for i in range(7, 12)) > 0.99           # induction: i → i − 6 + 1
    logits, _ = run_with_cache(cases.v_composition_model(), TOKENS)
    assert int(logits[0, LAST].argmax()) == TOKENS[LAST - 1]             # predicts the previous token


def test_induction_logit_goes_through_the_induction_head():
    w = cases.induction_model()
    nxt = int(TOKENS[LAST - 6 + 1])                                      # the token after the earlier copy
    res = pe.attribute(w, TOKENS, target=nxt)
    assert res.top(1)[0]["path"] == ("embed", "L1H0")
    assert res.top(1)[0]["value"] > 0.9 * res.path_values.sum()
    assert res.top(1, view="node")[0]["name"] == "L1H0"
    # the pattern is frozen: K-composition shapes where L1H0 looks, it carries no OV edge
    assert abs(res.edge("L0H0", "L1H0")).max() < 0.05 * abs(res.node("L1H0")).max()


def test_induction_score_is_k_composition_with_the_previous_token_head():
    w = cases.induction_model()
    q, k = LAST, LAST - 6 + 1
    res = pe.attribute_scores(w, TOKENS, "L1H0", query=q, key=k)
    top = res.top(1)[0]
    assert (top["name"], top["kind"]) == ("q:direct · k:L0H0", "k_composition")
    assert top["score_term"] > 0.9 * res.score
    kinds = res.by_kind()
    assert kinds["k_composition"] == max(kinds.values())
    # at a key that does not follow a copy of the query's token the term is small
    other = pe.attribute_scores(w, TOKENS, "L1H0", query=q, key=k - 2)
    assert next(t["value"] for t in other.terms if t["name"] == top["name"]) < 0.1 * top["score_term"]


def test_virtual_head_is_the_top_path_and_edge():
    w = cases.v_composition_model()
    prev = int(TOKENS[LAST - 1])
    res = pe.attribute(w, TOKENS, target=prev)
    top = res.top(1)[0]
    assert top["path"] == ("embed", "L0H0", "L1H0") and top["kind"] == "virtual"
    head_edges = [r for r in res.to_records(view="edge") if r["kind"] == "head→head"]
    assert max(head_edges, key=lambda r: abs(r["value"]))["name"] == "L0H0 → L1H0"
    found = pe.top_k_paths(w, TOKENS, target=prev, k=1)
    assert found.complete and found.paths == [("embed", "L0H0", "L1H0")]
    assert found.certificate < abs(found.values[0])


def test_q_composition_score():
    w = cases.q_composition_model()
    tokens = np.array([1, 2, 3, 4, 2, 5, 6, 7])                        # at query 5 the previous token is 2
    res = pe.attribute_scores(w, tokens, "L1H0", query=5, key=1)       # key 1 holds a 2
    top = res.top(1)[0]
    assert (top["name"], top["kind"]) == ("q:L0H0 · k:direct", "q_composition")
    assert top["score_term"] > 0.9 * res.score


def test_order_importance_sees_the_virtual_head_at_depth_two():
    w = cases.v_composition_model()
    rng = np.random.default_rng(0)
    # period-2 sequences a b a b ...: the next token is the previous one, which only the
    # virtual head (depth 2) predicts
    tokens = np.stack([np.tile(rng.choice(cases.V, 2, replace=False), 6) for _ in range(4)])
    res = pe.order_importance(w, tokens)
    assert res.loss[2] < res.loss[1] - 0.3 and res.loss[2] < res.loss[0] - 0.3
    best = max(res.terms, key=lambda t: t["value"])
    assert best["path"] == ("embed", "L0H0", "L1H0")
