"""Score attribution: a head's pre-softmax score split into (query path × key path) terms.

Second routes: the forward pass's own scores (``Cache.scores``: the terms sum to them),
the symbolic ``expand_scores`` (same pairs, counted by its closed form), each term
recomputed from the plain-numpy path fields of ``attribute_cases.brute_paths``, and the
softmax-invariance marks checked numerically (an invariant term is equal for every key).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError, UnknownHeadError
from pathexpand.numeric.forward import run_with_cache

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = [3, 1, 4, 1, 5, 9, 2]
NAMES = ["attn2", "attn3", "shortformer", "shortformer_ln", "ln_attn", "gelu_new", "relu_noln",
         "no_pos", "bidirectional"]


@pytest.mark.parametrize("name", NAMES)
def test_terms_sum_to_the_models_score(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    _, cache = run_with_cache(w, TOKENS)
    head = f"L{w.config.n_layers - 1}H1"
    layer = w.config.n_layers - 1
    for q, k in ((6, 2), (4, 4), (5, 0)):
        res = pe.attribute_scores(w, TOKENS, head, query=q, key=k)
        want = float(cache.scores[0, layer, 1, q, k])
        assert res.score == pytest.approx(want, rel=1e-12)
        total = sum(t["value"] for t in res.terms)
        assert abs(total - want) <= 1e-10 * max(1.0, sum(abs(t["value"]) for t in res.terms))
        assert res.residual_error() <= 1e-10
    expansion = pe.expand_scores(pe.Architecture.from_weights(w), head)
    assert [t["name"] for t in res.terms] == [t.name for t in expansion]
    assert len(res.terms) == len(expansion)


def test_each_term_from_brute_force_fields():
    """A term = (ln1(f_q)[i] W_Q) · (ln1(f_k)[j] W_K) / √d_head with brute-force path fields."""
    w = cases.random_weights(**cases.CONFIGS["gelu_new"])
    fields, _, _ = cases.brute_paths(w, TOKENS)
    _, cache = run_with_cache(w, TOKENS)
    P = w.state_dict()
    sigma = cache.ln_scale["blocks.1.ln1"].numpy()[0]
    q, k = 6, 3

    def side(path, pos, W):
        f = fields[path][0, pos]
        x = (f - f.mean()) / sigma[pos] * P["blocks.1.ln1.w"]
        return x @ W

    res = pe.attribute_scores(w, TOKENS, "L1H2", query=q, key=k)
    checked = 0
    for t in res.terms:
        qp, kp = t["query_path"], t["key_path"]
        if qp not in fields or kp not in fields or any(n.startswith("L1") or n == "MLP1" for n in qp + kp):
            continue
        want = side(qp, q, P["blocks.1.attn.W_Q"][2]) @ side(kp, k, P["blocks.1.attn.W_K"][2])
        assert t["value"] == pytest.approx(want / math.sqrt(w.config.d_head), rel=1e-10, abs=1e-12)
        checked += 1
    assert checked == sum(1 for t in res.terms if t["query_path"] in fields and t["key_path"] in fields)
    assert checked > 100


@pytest.mark.parametrize("name", ["attn2", "ln_attn", "gelu_new"])
def test_softmax_invariant_terms_are_equal_for_every_key(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    q = 6
    by_key = [pe.attribute_scores(w, TOKENS, "L1H0", query=q, key=k).terms for k in range(q + 1)]
    n_inv = 0
    for i, t in enumerate(by_key[0]):
        values = np.array([terms[i]["value"] for terms in by_key])
        spread = values.max() - values.min()
        if t["softmax_invariant"]:
            n_inv += 1
            assert spread <= 1e-10 * max(1.0, abs(values).max()), t["name"]
    assert n_inv > 0
    # and the rest are not all constant: at least the direct token × token term varies
    direct = [terms[0]["value"] for terms in by_key]
    assert np.ptp(direct) > 1e-6


def test_refusals():
    w = cases.random_weights()
    with pytest.raises(PathexpandError, match="causal mask"):
        pe.attribute_scores(w, TOKENS, "L1H0", query=2, key=5)
    with pytest.raises(PathexpandError, match="one prompt"):
        pe.attribute_scores(w, [TOKENS, TOKENS], "L1H0", query=2, key=1)
    with pytest.raises(UnknownHeadError, match="L0H0…L1H2"):
        pe.attribute_scores(w, TOKENS, "L5H0", query=2, key=1)
    with pytest.raises(PathexpandError, match="query must be a position"):
        pe.attribute_scores(w, TOKENS, "L1H0", query=9, key=1)
    res = pe.attribute_scores(w, TOKENS, "L0H0", query=-1, key=0)  # layer 0: direct terms only
    assert res.query == 6 and {t["kind"] for t in res.terms} == {"direct"}
    assert res.ranking(by="value", invariant=True).total == pytest.approx(res.score)
    assert "L0H0 score" in str(res) and res.to_dict()["residual_error"] <= 1e-10


@pytest.mark.parametrize("name", ["attn3", "shortformer_ln", "bidirectional"])
def test_effect_is_the_term_minus_its_mean_over_the_other_keys(name):
    """``effect`` of a term at (q, k) equals its value at k minus the mean of its values at
    every other key q sees — recomputed here from separate calls, one per key."""
    w = cases.random_weights(**cases.CONFIGS[name])
    layer = w.config.n_layers - 1
    head, q, k = f"L{layer}H1", 5, 2
    res = pe.attribute_scores(w, TOKENS, head, query=q, key=k)
    keys = range(len(TOKENS)) if w.config.attention_dir == "bidirectional" else range(q + 1)
    others = [j for j in keys if j != k]
    per_key = {j: {t["name"]: t["value"] for t in pe.attribute_scores(w, TOKENS, head, query=q, key=j).terms}
               for j in others}
    for t in res.terms:
        want = t["value"] - np.mean([per_key[j][t["name"]] for j in others])
        assert t["effect"] == pytest.approx(want, abs=1e-9 * max(1.0, abs(res.score)))
    # ranking by effect: the first term has the largest effect among non-invariant terms
    top = res.top(1)[0]
    assert top.value == max(t["effect"] for t in res.terms if not t["softmax_invariant"])


@pytest.mark.parametrize("kw", [
    dict(normalization="LN", d_mlp=12, act_fn="gelu", positional="standard"),
    dict(normalization="RMS", d_mlp=12, act_fn="silu", gated_mlp=True, positional="rotary", n_key_value_heads=1),
    dict(normalization="LN", d_mlp=12, act_fn="relu", positional="shortformer", parallel_attn_mlp=True),
])
def test_writer_split_is_the_path_split_grouped_by_last_node(rng, kw):
    """by="writer" splits each side by the last writer into the stream; on a 3-layer model it
    must equal the path terms summed over paths with the same last node on each side."""
    from collections import defaultdict

    from pathexpand.numeric.weights import Config, expected_shapes

    cfg = Config(**{**dict(n_layers=3, n_heads=2, d_model=8, d_head=4, d_vocab=11, n_ctx=12), **kw})
    params = {k: rng.standard_normal(s) for k, s in expected_shapes(cfg).items()}
    w = pe.Weights(params, cfg).astype(np.float64)
    toks = [1, 4, 2, 7, 3, 3, 8, 0, 5]
    import torch

    paths = pe.attribute_scores(w, toks, "L2H1", 7, 3, dtype=torch.float64)
    writers = pe.attribute_scores(w, toks, "L2H1", 7, 3, by="writer", dtype=torch.float64)
    grouped = defaultdict(float)
    for t in paths.terms:
        grouped[(t["query_path"][-1], t["key_path"][-1])] += t["value"]
    got = {(t["query_path"][0], t["key_path"][0]): t["value"] for t in writers.terms}
    assert got.keys() == grouped.keys()
    for k in got:
        assert got[k] == pytest.approx(grouped[k], rel=1e-9, abs=1e-10), k
    assert writers.residual_error() <= 1e-12 and writers.by == "writer"
    assert {k: pytest.approx(v, abs=1e-9) for k, v in writers.by_kind().items()} == paths.by_kind()
    with pytest.raises(PathexpandError, match="by must be 'path' or 'writer'"):
        pe.attribute_scores(w, toks, "L2H1", 7, 3, by="node")
