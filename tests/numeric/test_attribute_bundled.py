"""Attribution on the bundled models: exact in float32 and float64, and the induction circuit.

Second routes: the reference forward pass (the target's value), and for the induction
test the attention patterns themselves (which head attends to the previous token, which
one to the token after the earlier copy), read from ``run_with_cache``, not from attribution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.numeric.forward import forward, run_with_cache

MODELS = ("attn-only-1l", "attn-only-2l", "gelu-2l")
TEXT = [
    "import os\nimport sys\n\ndef main(argv):\n    return 0\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x",
]


def _prompts(w):
    n = min(48, w.config.n_ctx)
    return np.array([list(t.encode())[:n] for t in TEXT])


@pytest.mark.parametrize("name", MODELS)
def test_contributions_sum_to_the_model_in_float32_and_float64(name):
    w = pe.load(name)
    toks = _prompts(w)
    res32 = pe.attribute(w, toks, target=" ", positions="all")
    assert res32.path_values.dtype == np.float32
    assert res32.residual_error() <= 1e-5
    logits = forward(w, toks).numpy()
    np.testing.assert_allclose(res32.output, logits[..., ord(" ")], rtol=1e-5, atol=1e-5)
    res64 = pe.attribute(w, toks, diff=("e", "t"), positions="all", dtype=torch.float64)
    assert res64.residual_error() <= 1e-10
    logits64 = forward(w, toks, dtype=torch.float64).numpy()
    np.testing.assert_allclose(res64.output, logits64[..., ord("e")] - logits64[..., ord("t")], rtol=1e-12)
    for n, v in zip(res64.nodes, res64.node_values):     # node view = Σ paths through the node
        through = sum(pv for p, pv in zip(res64.paths, res64.path_values) if n in p[1:])
        np.testing.assert_allclose(v, through, atol=1e-9 * np.abs(logits64).max())


def test_induction_head_scores_by_k_composition_with_the_previous_token_head():
    """On a repeated random sequence the induction head attends to the token after the
    earlier copy; the score term that most favours that key is K-composition with a
    previous-token head (heads found from the patterns, an independent route)."""
    w = pe.load("attn-only-2l")
    L = 20
    rng = np.random.default_rng(0)
    r = rng.integers(32, 127, L)
    toks = np.concatenate([r, r])[None]
    _, cache = run_with_cache(w, toks)
    A = cache.patterns[0].numpy()                                      # [L, H, q, k]
    prev_score = [np.diagonal(A[0, h], -1).mean() for h in range(w.config.n_heads)]
    previous_token_heads = {f"L0H{h}" for h, s in enumerate(prev_score) if s > 0.5}
    queries = np.arange(L + 1, 2 * L)
    induction = [A[1, h, queries, queries - L + 1].mean() for h in range(w.config.n_heads)]
    head = int(np.argmax(induction))
    assert induction[head] > 0.5 and previous_token_heads
    wins = 0
    for q in queries[::3]:
        res = pe.attribute_scores(w, toks, f"L1H{head}", query=int(q), key=int(q - L + 1))
        assert res.residual_error() <= 1e-5
        for t in res.terms:  # what is common to every key cannot move the softmax
            if t["softmax_invariant"]:
                assert abs(t["effect"]) <= 1e-5 * max(1.0, abs(res.score))
        top = res.top(1)[0]
        wins += top["kind"] == "k_composition" and top["key_path"][-1] in previous_token_heads
    assert wins >= 0.8 * len(queries[::3])


def test_a_text_target_of_several_tokens_uses_the_first_and_says_so():
    w = pe.load("attn-only-2l")
    res = pe.attribute(w, "abcab", target="ab")
    same = pe.attribute(w, "abcab", target="a")
    assert res.output == same.output                                   # the first token, 'a'
    assert res.target_label == "logit('a', the first of the 2 tokens of 'ab')"
    with pytest.raises(pe.PathexpandError, match="encodes to no token"):
        pe.attribute(w, "abcab", target="")
