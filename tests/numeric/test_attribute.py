"""Exact attribution: every view against an independent route.

Second routes: the forward pass (Σ contributions + constants == the model's target, in
float64 to 1e-10 and float32 to 1e-5), a plain-numpy enumeration of every path written
from DESIGN.md (``attribute_cases.brute_paths``, shares no code with ``frozen.py``) for
path values and for the node and edge sums, and TransformerLens's direct logit
attribution (``stack_head_results`` + ``apply_ln``) for the heads' edges into the logits.
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
from pathexpand.numeric.frozen import freeze

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])


def _target_value(logits, positions, u):
    """Σ_v u_v logits[b, p, v] for each prompt and position: ``[b, T]`` (numpy)."""
    return np.einsum("btv,v->bt", np.asarray(logits)[:, positions], u)


def _brute_values(w, tokens, u, positions):
    fields, consts, readout = cases.brute_paths(w, tokens)
    vals = {p: _target_value(readout(f), positions, u) for p, f in fields.items()}
    cvals = {k: np.broadcast_to(v @ u, (len(tokens), len(positions))) for k, v in consts.items()}
    return vals, cvals


@pytest.mark.parametrize("name", sorted(cases.CONFIGS))
def test_paths_nodes_edges_match_brute_force(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    V = w.config.d_vocab_out
    u = np.random.default_rng(1).standard_normal(V)
    positions = [6, 3]
    res = pe.attribute(w, TOKENS, target=u, positions=positions)
    brute, cbrute = _brute_values(w, TOKENS, u, positions)
    scale = np.abs(res.output).max()
    # the same set of paths, each with the same value
    assert set(res.paths) == set(brute)
    assert len(res.paths) == res.n_paths == len(brute)
    for p, v in zip(res.paths, res.path_values):
        np.testing.assert_allclose(v, brute[p], rtol=0, atol=1e-10 * scale)
    for k, v in res.constants.items():
        np.testing.assert_allclose(v, cbrute[k], rtol=0, atol=1e-10 * scale)
    # node view = Σ over every brute-force path through the node
    for n, v in zip(res.nodes, res.node_values):
        want = sum(bv for p, bv in brute.items() if n in p[1:])
        np.testing.assert_allclose(v, want, rtol=0, atol=1e-10 * scale)
    # edge view = Σ over every brute-force path in which b reads a directly
    for (a, b), v in zip(res.edges, res.edge_values):
        want = sum(
            bv for p, bv in brute.items()
            if any(x == a and y == b for x, y in zip(p, p[1:] + ("logits",)))
        )
        np.testing.assert_allclose(v, want, rtol=0, atol=1e-10 * scale, err_msg=f"{a} → {b}")


@pytest.mark.parametrize("rows", [1, 8])   # 8: several stages queued, then a flush forced
@pytest.mark.parametrize("name", ["attn3", "gelu", "relu_noln"])
def test_edges_match_brute_force_however_stages_are_batched(name, rows, monkeypatch):
    """The edge products of consecutive stages share one GEMM over the fields they all read
    (``_EDGE_BLOCK_ROWS`` rows of transposed maps at a time); any batching gives the paths' sums."""
    import pathexpand.numeric.attribute as attribute_module

    monkeypatch.setattr(attribute_module, "_EDGE_BLOCK_ROWS", rows)
    test_paths_nodes_edges_match_brute_force(name)


@pytest.mark.parametrize("name", sorted(cases.CONFIGS))
def test_sum_is_the_model_output_float64_and_float32(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    res = pe.attribute(w, TOKENS, target=2)
    logits = forward(w, TOKENS, dtype=torch.float64).numpy()
    np.testing.assert_allclose(res.output, logits[:, [-1], 2], rtol=1e-12)
    total = res.path_values.sum(0) + sum(res.constants.values())
    assert np.abs(total - logits[:, [-1], 2]).max() <= 1e-10 * np.abs(logits[:, -1]).max()
    assert res.residual_error() <= 1e-10
    res32 = pe.attribute(w.astype(np.float32), TOKENS, target=2)
    assert res32.residual_error() <= 1e-5


def test_edges_flow_through_every_node():
    """Into each node the edges sum to the node; out of it too (paths are partitioned)."""
    w = cases.random_weights(**cases.CONFIGS["gelu_new"])
    res = pe.attribute(w, TOKENS, diff=(1, 2), views=("node", "edge"))
    assert res.paths is None
    for n, v in zip(res.nodes, res.node_values):
        into = sum(ev for (a, b), ev in zip(res.edges, res.edge_values) if b == n)
        out = sum(ev for (a, b), ev in zip(res.edges, res.edge_values) if a == n)
        np.testing.assert_allclose(into, v, atol=1e-10)
        np.testing.assert_allclose(out, v, atol=1e-10)
    assert res.residual_error() <= 1e-10  # checked on the partition by last step


def test_targets_agree_with_each_other():
    w = cases.random_weights(**cases.CONFIGS["ln_attn"])
    V = w.config.d_vocab_out
    a = pe.attribute(w, TOKENS, target=4, positions="all")
    b = pe.attribute(w, TOKENS, target=7, positions="all")
    d = pe.attribute(w, TOKENS, target=("diff", 4, 7), positions="all")
    d2 = pe.attribute(w, TOKENS, diff=(4, 7), positions="all")
    full = pe.attribute(w, TOKENS, target="logits", positions="all")
    assert full.path_values.shape == (len(full.paths), 2, 7, V)
    np.testing.assert_allclose(d.path_values, a.path_values - b.path_values, atol=1e-12)
    np.testing.assert_allclose(d2.edge_values, d.edge_values, atol=1e-12)
    np.testing.assert_allclose(full.path_values[..., 4], a.path_values, atol=1e-12)
    np.testing.assert_allclose(full.node_values[..., 7], b.node_values, atol=1e-12)
    assert full.residual_error() <= 1e-10
    # one token per prompt
    per = pe.attribute(w, TOKENS, target=np.array([4, 7]))
    np.testing.assert_allclose(per.path_values[:, 0], a.path_values[:, 0, [-1]], atol=1e-12)
    np.testing.assert_allclose(per.path_values[:, 1], b.path_values[:, 1, [-1]], atol=1e-12)
    # default: the model's own top prediction at the last position
    top = forward(w, TOKENS)[:, -1].argmax(-1).numpy()
    dflt = pe.attribute(w, TOKENS)
    np.testing.assert_allclose(dflt.output[:, 0], forward(w, TOKENS)[:, -1].numpy()[[0, 1], top])


def test_batches_stream_to_the_same_numbers():
    w = cases.random_weights(**cases.CONFIGS["relu_noln"])
    toks = np.random.default_rng(3).integers(0, 11, (5, 8))
    whole = pe.attribute(w, toks, diff=(0, 1))
    parts = pe.attribute(w, toks, diff=(0, 1), batch_size=2)
    for key in ("path_values", "node_values", "edge_values", "output"):
        np.testing.assert_allclose(getattr(parts, key), getattr(whole, key), atol=1e-12)
    assert parts.paths == whole.paths and parts.edges == whole.edges


def test_text_tokens_and_string_targets():
    w = cases.random_weights(d_vocab=256, n_ctx=16)
    from pathexpand.models.tokenizer import ByteTokenizer

    w = w.replace()
    w.tokenizer = ByteTokenizer()
    res = pe.attribute(w, "abcab", target="c")
    ids = np.array([list(b"abcab")])
    want = pe.attribute(w, ids, target=ord("c"))
    np.testing.assert_allclose(res.path_values, want.path_values)
    assert "'c'" in res.target_label


def test_float32_and_float64_agree_and_dtype_argument():
    w = cases.random_weights(**cases.CONFIGS["gelu"])
    r64 = pe.attribute(w, TOKENS, target=3)
    r32 = pe.attribute(w, TOKENS, target=3, dtype=torch.float32)
    np.testing.assert_allclose(r32.node_values, r64.node_values, atol=1e-4 * np.abs(r64.output).max())
    assert r32.path_values.dtype == np.float32


def test_direct_logit_attribution_matches_transformer_lens():
    """Each head's edge into the logits (+ its own b_V path) == TL's stack_head_results DLA;
    for last-layer heads that is the node view too."""
    import transformer_lens as tl
    for name in ("attn2", "gelu_new"):
        w = cases.random_weights(**cases.CONFIGS[name])
        c = w.config
        cfg = tl.HookedTransformerConfig(
            n_layers=c.n_layers, d_model=c.d_model, n_ctx=c.n_ctx, d_head=c.d_head,
            n_heads=c.n_heads, d_vocab=c.d_vocab, d_mlp=c.d_mlp, act_fn=c.act_fn or "relu",
            attn_only=c.d_mlp is None, normalization_type=c.normalization,
            dtype=torch.float64, device="cpu",
        )
        model = tl.HookedTransformer(cfg)
        sd = {("embed.W_E" if k == "W_E" else "pos_embed.W_pos" if k == "W_pos" else
               "unembed.W_U" if k == "W_U" else "unembed.b_U" if k == "b_U" else k): torch.tensor(v)
              for k, v in w.state_dict().items()}
        model.load_state_dict(sd, strict=False)
        toks = torch.tensor(TOKENS)
        _, cache = model.run_with_cache(toks)
        stack = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True)  # [heads, b, d]
        u = np.zeros(c.d_vocab)
        u[3], u[5] = 1.0, -1.0
        direction = torch.tensor(w["W_U"] @ u)
        if c.normalization == "LN":
            direction = direction * torch.tensor(w["ln_final.w"])  # TL's apply_ln leaves w out
        dla = (stack @ direction).detach().numpy()                                            # [heads, b]
        res = pe.attribute(w, TOKENS, diff=(3, 5))
        heads = [f"L{l}H{j}" for l in range(c.n_layers) for j in range(c.n_heads)]
        for i, head in enumerate(heads):
            mine = res.edge(head, "logits")[:, 0] + res.path((f"{head}.b_V",))[:, 0]
            np.testing.assert_allclose(mine, dla[i], rtol=1e-9, atol=1e-9)
            if head.startswith(f"L{c.n_layers - 1}H") and c.d_mlp is None:
                np.testing.assert_allclose(res.node(head)[:, 0], res.edge(head, "logits")[:, 0])


def test_views_and_refusals():
    w = cases.random_weights()
    res = pe.attribute(w, TOKENS, target=1, views="node")
    assert res.paths is None and res.edges is None and res.nodes is not None
    small = pe.attribute(w, TOKENS, target=1, max_paths=10)  # default views drop paths
    assert small.paths is None and any("views=('path', ...)" in n for n in small.notes)
    with pytest.raises(PathexpandError, match="views=\\('path', ...\\) to list"):
        small.ranking("path")
    with pytest.raises(PathexpandError, match="one number"):   # the largest of many numbers?
        pe.attribute(w, TOKENS, target="logits", views=("path",), max_paths=10)
    with pytest.raises(PathexpandError, match="budget_seconds"):
        pe.attribute(w, TOKENS, target=1, views=("path",), max_paths=10, budget_seconds=-1)
    with pytest.raises(PathexpandError, match="views"):
        pe.attribute(w, TOKENS, views=("paths",))
    with pytest.raises(PathexpandError, match="out of range"):
        pe.attribute(w, TOKENS, target=11)
    with pytest.raises(PathexpandError, match="position 7 is out of range"):
        pe.attribute(w, TOKENS, target=1, positions=7)
    with pytest.raises(PathexpandError, match="either"):
        pe.attribute(w, TOKENS, target=1, diff=(1, 2))
    with pytest.raises(PathexpandError, match="target must be"):
        pe.attribute(w, TOKENS, target=np.ones(4))
    with pytest.raises(PathexpandError, match="no tokenizer"):
        pe.attribute(w, "abc")
    with pytest.raises(PathexpandError, match="2 target tokens"):
        pe.attribute(w, TOKENS[:1], target=np.array([1, 2]))
    with pytest.raises(PathexpandError, match="batch_size"):
        pe.attribute(w, TOKENS, batch_size=0)


def test_logits_target_refuses_huge_backward_views_but_not_paths():
    w = cases.random_weights(d_vocab=20000, n_ctx=9, d_model=16, n_heads=1, n_layers=1)
    toks = np.arange(9)[None] * 1999
    with pytest.raises(PathexpandError, match="logits"):
        pe.attribute(w, np.repeat(toks, 8, 0), target="logits", positions="all", views=("node",))
    res = pe.attribute(w, toks, target="logits", views=("path",))
    assert res.path_values.shape == (6, 1, 1, 20000) and res.residual_error() <= 1e-10


def test_rankings_and_json():
    w = cases.random_weights()
    res = pe.attribute(w, TOKENS, diff=(1, 2))
    rk = res.ranking("path")
    assert len(rk) == len(res.paths)
    top = rk.top(1)[0]
    assert abs(top.value) == max(abs(r["value"]) for r in res.to_records(view="path"))
    np.testing.assert_allclose(sum(r.value for r in rk) + sum(v.mean() for v in res.constants.values()),
                               res.total, atol=1e-10)
    names = set(res.ranking("edge").names)
    assert "L0H1 → L1H2" in names and "L1H2 → L0H1" not in names
    d = res.to_dict(k=3)
    assert len(d["paths"]) == 3 and d["residual_error"] <= 1e-10
    with pytest.raises(PathexpandError, match="no edge"):
        res.edge("L1H0", "L0H0")
    assert "residual error" in str(res)


@pytest.mark.parametrize("shape", ["gelu", "ln_attn", "attn3"])
def test_path_view_past_max_paths_lists_the_largest_and_the_exact_remainder(shape):
    """Past max_paths the path view lists the k largest paths (by |Σ over prompts and positions|)
    with their per-prompt values, and the remainder is the sum over every unlisted path — both
    checked against the full enumeration of the same model; listed + remainder + constants =
    output."""
    w = cases.random_weights(seed=4, **cases.CONFIGS[shape])
    kw = dict(target=("diff", 1, 2), positions=[3, 6])
    full = pe.attribute(w, TOKENS, views=("path",), **kw)
    assert full.paths_complete and full.path_search is None and full.remainder == 0.0
    k = 7
    part = pe.attribute(w, TOKENS, views=("path", "node"), max_paths=k, **kw)
    assert part.path_search is not None and part.path_search.certified
    assert len(part.paths) == k and not part.paths_complete and part.n_paths == full.n_paths
    summed = {p: float(full.path(p).sum()) for p in full.paths}
    largest = sorted(summed, key=lambda p: -abs(summed[p]))
    np.testing.assert_allclose(sorted((abs(summed[p]) for p in part.paths), reverse=True),
                               [abs(summed[p]) for p in largest[:k]], rtol=1e-9)
    for p in part.paths:
        np.testing.assert_allclose(part.path(p), full.path(p), rtol=1e-9, atol=1e-12)
    unlisted = sum(full.path(p) for p in full.paths if p not in set(part.paths))
    np.testing.assert_allclose(part.path_remainder, unlisted, rtol=1e-9, atol=1e-10)
    assert part.residual_error() < 1e-9
    notes = part.ranking("path").notes
    assert any("certified top 7" in n for n in notes) and any("remainder" in n for n in notes)
    doc = part.to_dict()
    assert doc["path_search"]["certified"] and doc["path_remainder"] == pytest.approx(part.remainder)
    chunked = pe.attribute(w, TOKENS, views=("path",), max_paths=k, batch_size=1, **kw)
    assert chunked.paths == part.paths                 # one search over every prompt at once
    np.testing.assert_allclose(chunked.path_remainder, part.path_remainder, rtol=1e-9, atol=1e-12)


def test_path_view_past_max_paths_records_one_forward_per_batch(monkeypatch):
    """The streamed path view searches the model the attribution froze (one batch: one
    recording forward in all); with several batches it freezes every prompt once more."""
    import pathexpand.numeric.attribute as attribute_module

    w = cases.random_weights(seed=4, **cases.CONFIGS["gelu"])
    calls = []

    def counted(weights, tokens, **kw):
        calls.append(np.shape(tokens)[0])
        return freeze(weights, tokens, **kw)

    monkeypatch.setattr(attribute_module, "freeze", counted)
    one = pe.attribute(w, TOKENS, target=1, views=("path",), max_paths=5)
    assert calls == [len(TOKENS)] and len(one.paths) == 5
    calls.clear()
    pe.attribute(w, TOKENS, target=1, views=("path",), max_paths=5, batch_size=1)
    assert calls == [1] * len(TOKENS) + [len(TOKENS)]


def test_path_view_stopped_by_its_budget_says_not_certified():
    w = cases.random_weights(seed=5, **cases.CONFIGS["gelu"])
    part = pe.attribute(w, TOKENS, target=1, views=("path",), max_paths=4, budget_seconds=1e-9)
    assert not part.path_search.certified and part.path_search.stopped_by == "budget_seconds"
    assert any("NOT certified" in n for n in part.ranking("path").notes)
    assert part.residual_error() < 1e-9          # the remainder keeps the sum exact regardless


@pytest.mark.parametrize("shape", ["attn2", "gelu", "ln_attn", "attn3", "attn-only-2l", "gelu-2l"])
def test_n_paths_is_the_number_of_paths_the_path_view_enumerates(shape):
    """``n_paths`` (from the weights' shape, every source) = the paths the full path view lists,
    one by one, = the frozen model's count. (25 per source on attn-only-2l, but 55 in all.)"""
    from pathexpand.numeric.attribute import n_paths

    w = pe.load(shape) if "-" in shape else cases.random_weights(seed=1, **cases.CONFIGS[shape])
    res = pe.attribute(w, [[1, 2, 3]], target=1, views=("path",))
    assert n_paths(w) == len(set(res.paths)) == res.n_paths == freeze(w, [[1, 2, 3]]).n_paths()
    if shape == "attn-only-2l":
        assert (pe.Architecture.from_weights(w).n_logit_paths(), n_paths(w)) == (25, 55)


@pytest.mark.parametrize("budget", [None, 1e-9])
def test_searched_path_view_is_top_k_paths(budget):
    """Past ``max_paths`` the path view is ``top_k_paths``' search: the same rows, values, title
    and certified/not-certified wording (one prompt, one position: the view's mean is the sum)."""
    w = cases.random_weights(seed=5, **cases.CONFIGS["gelu"])
    kw = dict(target=("diff", 1, 2), budget_seconds=budget)
    view = pe.attribute(w, TOKENS[:1], views=("path",), max_paths=6, **kw)
    found = pe.top_k_paths(w, TOKENS[:1], k=6, **kw)
    listed, ranked = view.ranking("path"), found.ranking()
    assert view.path_search.certified == found.certified == (budget is None)
    assert listed.title == ranked.title == (
        "top paths of logit(1) − logit(2)" if budget is None
        else "largest paths found (not certified) of logit(1) − logit(2)")
    assert [r.path for r in listed] == [r.path for r in ranked] == list(found.paths)
    np.testing.assert_allclose([r.value for r in listed], [r.value for r in ranked], rtol=1e-9)
    assert any(n.endswith(found.status()) for n in listed.notes) and found.status() == ranked.notes[0]
