"""The path graph: its paths are the expansion's terms, magnitudes land on the right edges,
export round-trips. Second routes: ``expand_logits``/``expand_scores`` (enumerated by the
symbolic layer, not by the graph), closed-form counts, dense numpy composition scores,
the attribution's own node and output sums, hand-computed sums and brute-force search."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pathexpand as pe
from pathexpand.graph import (
    arch_of,
    from_json,
    path_edges,
    path_values,
    read_graphml,
    to_json,
    write_graphml,
)
from pathexpand.ranking import Ranking
from pathexpand.symbolic.terms import term_name

ARCH = pe.Architecture

_spec = importlib.util.spec_from_file_location(
    "attribute_cases", Path(__file__).parent / "numeric" / "attribute_cases.py")
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def small_weights(seed=0, *, biases=False, **cfg) -> pe.Weights:
    """Random weights, 2 layers × 2 heads, d_model 8 (tiny, so tests stay fast)."""
    base = dict(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=10, n_ctx=8)
    return cases.random_weights(seed, biases=biases, **{**base, **cfg})


def _sources(G):
    return [n for n, k in G.nodes(data="kind") if k in ("source", "bias")]


# ---------------------------------------------------------------------------------------------
# the paths of the graph are the terms of the expansion
# ---------------------------------------------------------------------------------------------
@st.composite
def architectures(draw):
    n_layers = draw(st.integers(0, 3))
    heads = tuple(draw(st.lists(st.integers(0, 2), min_size=n_layers, max_size=n_layers)))
    mlp = draw(st.booleans())
    if n_layers and not mlp and not any(heads):
        heads = (1,) + heads[1:]
    return ARCH(
        n_layers,
        heads,
        mlp=mlp,
        normalization=draw(st.sampled_from([None, "LN", "RMS"])),
        positional=draw(st.sampled_from(["standard", "shortformer", "rotary", None])),
        biases=draw(st.booleans()),
        gated_mlp=mlp and draw(st.booleans()),
        parallel_attn_mlp=mlp and draw(st.booleans()),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures())
def test_logit_paths_are_the_terms_of_expand_logits(arch):
    G = pe.path_graph(arch)
    terms = list(pe.expand_logits(arch))
    got = list(pe.paths(G))  # every source, into logits
    assert len(got) == len(terms)
    assert got == [t.path for t in terms]  # same paths, same order
    assert [term_name(p) for p in got] == [t.name for t in terms]
    # closed form, not enumeration: Π_l (1 + H_l) (× 2^L with MLPs) paths from embed
    assert sum(1 for _ in pe.paths(G, "embed")) == arch.n_logit_paths()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures())
def test_score_terms_are_pairs_of_paths_into_q_and_k(arch):
    for head in arch.heads:
        exp = pe.expand_scores(arch, head)
        if len(exp) > 4000:  # sized by formula; keep the example fast
            continue
        q = list(pe.paths(G := pe.path_graph(arch), None, f"{head}.q"))
        k = list(pe.paths(G, None, f"{head}.k"))
        pairs = [(t.query_path, t.key_path) for t in exp]
        assert len(pairs) == len(q) * len(k)
        assert set(pairs) == set(itertools.product(q, k))
        n_embed = sum(1 for _ in pe.paths(G, "embed", f"{head}.q"))
        assert n_embed**2 == arch.n_score_pairs(head)


def test_logit_path_walks_through_value_sinks():
    G = pe.path_graph(ARCH(2, 2, positional=None))
    walk = ["embed", "L0H1.v", "L0H1", "L1H0.v", "L1H0", "logits"]
    assert all(G.has_edge(a, b) for a, b in zip(walk, walk[1:]))
    assert nx.has_path(G, "embed", "logits")
    # q/k sinks are ends: nothing leaves them
    for h in ("L0H0", "L1H1"):
        assert G.out_degree(f"{h}.q") == 0 and G.out_degree(f"{h}.k") == 0
        assert list(G.out_edges(f"{h}.v", keys=True, data="kind")) == [(f"{h}.v", h, "v", "ov")]
    assert ("embed", "L0H1", "L1H0") in set(pe.paths(G, "embed"))


def test_paths_max_depth_and_sinks():
    arch = ARCH(2, 2, positional=None)
    G = pe.path_graph(arch)
    shallow = list(pe.paths(G, "embed", max_depth=1))
    assert shallow == [("embed",), ("embed", "L0H0"), ("embed", "L0H1"), ("embed", "L1H0"),
                       ("embed", "L1H1")]
    assert [t.path for t in pe.expand_logits(arch, max_depth=1) if not t.is_remainder] == shallow
    into_k = list(pe.paths(G, "embed", "L1H0.k"))
    assert into_k == [("embed",), ("embed", "L0H0"), ("embed", "L0H1")]
    assert list(pe.paths(G, "embed", "L0H0.v")) == [("embed",)]
    with pytest.raises(pe.UnknownHeadError, match="'L0H0' is not a sink"):
        list(pe.paths(G, "embed", "L0H0"))
    with pytest.raises(pe.UnknownHeadError, match="'pos' is not a source.*embed"):
        list(pe.paths(G, "pos"))
    with pytest.raises(pe.PathexpandError, match="max_depth"):
        list(pe.paths(G, "embed", max_depth=-1))


# ---------------------------------------------------------------------------------------------
# nodes, edges and their attributes
# ---------------------------------------------------------------------------------------------
def test_node_attributes_are_scalars_and_right():
    arch = ARCH(2, (2, 1), mlp=True, layernorm=True, biases=True, positional="standard")
    G = pe.path_graph(arch)
    for _, data in G.nodes(data=True):
        assert all(isinstance(v, (str, int, float, bool)) for v in data.values())
    assert G.nodes["L1H0"] == {"kind": "head", "stage": 2, "layer": 1, "head": 0}
    assert G.nodes["L1H0.k"] == {"kind": "sink", "stage": 2, "layer": 1, "head": 0, "channel": "k"}
    assert G.nodes["MLP0"] == {"kind": "mlp", "stage": 1, "layer": 0}
    assert G.nodes["embed"] == {"kind": "source", "stage": 0}
    assert G.nodes["L0H1.b_V"] == {"kind": "bias", "stage": 1, "layer": 0, "head": 1,
                                   "param": "b_V"}
    assert G.nodes["b_U"] == {"kind": "bias", "stage": 4, "param": "b_U"}
    assert G.nodes["logits"] == {"kind": "logits", "stage": 4}
    kinds = [k for _, k in G.nodes(data="kind")]
    counts = {k: kinds.count(k) for k in ("head", "mlp", "sink")}
    assert counts == {"head": 3, "mlp": 2, "sink": 9}
    assert arch_of(G) == arch


def test_who_reads_what():
    arch = ARCH(2, 2, mlp=True, layernorm=True, biases=True, positional="shortformer")
    G = pe.path_graph(arch)

    def readers(n):
        return {v for _, v in G.out_edges(n)}

    qk = {f"{h}.{c}" for h in arch.heads for c in "qk"}
    assert readers("pos") == qk  # shortformer: queries and keys only
    assert readers("L1.ln1.b") == {"L1H0.q", "L1H0.k", "L1H0.v", "L1H1.q", "L1H1.k", "L1H1.v"}
    assert readers("L0.ln2.b") == {"MLP0"}
    assert readers("L1H1.b_Q") == {"L1H1.q"} and readers("L1H1.b_K") == {"L1H1.k"}
    assert readers("b_U") == {"logits"} and readers("ln_final.b") == {"logits"}
    # a layer-0 head writes after layer 0's attention: MLP0 and everything later read it
    layer1 = {f"L1H{h}.{c}" for h in range(2) for c in "qkv"}
    assert readers("L0H0") == {"MLP0", "MLP1", "logits"} | layer1
    assert readers("L0H0.b_V") == readers("L0H0")
    assert readers("MLP1") == {"logits"}
    channels = {(u, v): k for u, v, k in G.edges(keys=True)}
    assert channels[("L0H0", "MLP0")] == "in" and channels[("MLP1", "logits")] == "out"
    assert channels[("MLP0", "L1H1.k")] == "k"
    standard = pe.path_graph(ARCH(1, 1))
    assert {v for _, v in standard.out_edges("pos")} == {"L0H0.q", "L0H0.k", "L0H0.v", "logits"}
    assert "pos" not in pe.path_graph(ARCH(1, 1, positional=None))


def test_parallel_layers_have_no_head_to_mlp_read_inside_a_layer():
    arch = ARCH(2, 2, mlp=True, parallel_attn_mlp=True, layernorm=True, biases=True)
    G = pe.path_graph(arch)
    assert G.nodes["MLP0"]["stage"] == 0 and G.nodes["L0H0"]["stage"] == 0
    for h in arch.heads_in_layer(0):
        assert not G.has_edge(h, "MLP0") and G.has_edge(h, "MLP1")
    assert not G.has_edge("L0H0.b_V", "MLP0") and not G.has_edge("L0.b_O", "MLP0")
    assert {v for _, v in G.out_edges("L0.ln2.b")} == {"MLP0"}
    assert G.has_edge("MLP0", "L1H0.k") and not G.has_edge("MLP0", "MLP0")
    # the sequential model does read its heads in its MLP
    assert pe.path_graph(ARCH(2, 2, mlp=True)).has_edge("L0H0", "MLP0")
    assert not any(p[1:3] in (("L0H0", "MLP0"), ("L0H1", "MLP0"), ("L1H0", "MLP1"))
                   for p in pe.paths(G))


def test_rotary_rms_gated_nodes():
    arch = ARCH(2, 2, mlp=True, normalization="RMS", positional="rotary", biases=True, gated_mlp=True,
                n_kv_heads=1)
    G = pe.path_graph(arch)
    assert "pos" not in G                                           # rotary: no positional source
    assert not [n for n in G if ".ln" in n or n == "ln_final.b"]    # RMSNorm has no bias
    assert arch_of(G) == arch
    for key in ("normalization", "gated_mlp", "parallel_attn_mlp", "n_kv_heads"):
        assert isinstance(G.graph[key], (str, int, bool))
    assert (G.graph["normalization"], G.graph["layernorm"], G.graph["n_kv_heads"]) == ("RMS", False, 1)


def test_arch_of_reads_graphs_written_before_modern_blocks():
    G = pe.path_graph(ARCH(2, 2, mlp=True, layernorm=True))
    for key in ("normalization", "gated_mlp", "parallel_attn_mlp", "n_kv_heads"):
        del G.graph[key]
    assert arch_of(G) == ARCH(2, 2, mlp=True, layernorm=True)
    G.graph["layernorm"] = "False"                                   # GraphML strings
    assert arch_of(G) == ARCH(2, 2, mlp=True)


def test_modern_graph_round_trips_through_graphml(tmp_path):
    arch = ARCH(2, (2, 4), mlp=True, normalization="RMS", positional="rotary", gated_mlp=True,
                parallel_attn_mlp=True, n_kv_heads=2, biases=True)
    G = pe.path_graph(arch)
    write_graphml(G, tmp_path / "m.graphml")
    assert arch_of(read_graphml(tmp_path / "m.graphml")) == arch
    assert arch_of(from_json(to_json(G))) == arch


def test_path_graph_takes_weights_expansions_and_terms():
    w = small_weights(positional="shortformer")
    G = pe.path_graph(w)
    assert arch_of(G) == ARCH(2, 2, positional="shortformer")
    exp = pe.expand_logits(ARCH(1, 3))
    assert arch_of(pe.path_graph(exp)) == ARCH(1, 3)
    assert arch_of(pe.path_graph(exp["L0H2"])) == ARCH(1, 3)
    with pytest.raises(pe.PathexpandError, match="expected an Architecture .* or a model .*got int"):
        pe.path_graph(3)


# ---------------------------------------------------------------------------------------------
# edges of terms, subgraphs
# ---------------------------------------------------------------------------------------------
def test_path_edges_of_terms_names_and_segments():
    arch = ARCH(2, 2, positional="standard")
    G = pe.path_graph(arch)
    term = pe.expand_logits(arch)["L1H0∘L0H1"]
    want = [("embed", "L0H1.v", "v"), ("L0H1.v", "L0H1", "v"), ("L0H1", "L1H0.v", "v"),
            ("L1H0.v", "L1H0", "v"), ("L1H0", "logits", "out")]
    assert path_edges(G, term) == want
    assert path_edges(G, "L1H0∘L0H1") == want
    assert path_edges(G, ("embed", "L0H1", "L1H0")) == want
    assert path_edges(G, ("L0H1", "L1H0.k")) == [("L0H1", "L1H0.k", "k")]
    assert path_edges(G, "pos") == [("pos", "logits", "out")]
    score = pe.expand_scores(arch, "L1H1")["q:pos · k:L0H0"]
    assert path_edges(G, score) == [("pos", "L1H1.q", "q"), ("embed", "L0H0.v", "v"),
                                    ("L0H0.v", "L0H0", "v"), ("L0H0", "L1H1.k", "k")]
    with pytest.raises(pe.PathexpandError, match="no read L1H0 → L0H0"):
        path_edges(G, ("embed", "L1H0", "L0H0"))
    with pytest.raises(pe.PathexpandError, match="score term name"):
        path_edges(G, "q:pos · k:L0H0")
    with pytest.raises(pe.UnknownHeadError, match="'L5H0'"):
        path_edges(G, ("embed", "L5H0"))
    with pytest.raises(pe.PathexpandError, match="remainder"):
        path_edges(G, pe.expand_logits(arch, max_depth=0).remainder)


def test_subgraph_of_terms_has_exactly_their_paths():
    arch = ARCH(3, 2, positional=None)
    G = pe.path_graph(arch)
    chosen = [t for t in pe.expand_logits(arch) if "L1H1" in t.nodes][:5]
    sub = pe.subgraph_of(G, chosen)
    assert set(pe.paths(sub, "embed")) >= {t.path for t in chosen}
    # every edge of the subgraph is used by a chosen term, and it keeps G's attributes
    used = {e for t in chosen for e in path_edges(G, t)}
    assert set(sub.edges(keys=True)) == used
    assert sub.nodes["L1H1"] == G.nodes["L1H1"] and arch_of(sub) == arch
    one = pe.subgraph_of(G, chosen[0])
    assert list(pe.paths(one, "embed")) == [chosen[0].path]
    assert "L2H0" not in one


# ---------------------------------------------------------------------------------------------
# magnitudes
# ---------------------------------------------------------------------------------------------
def test_ranking_values_flow_onto_edges_and_nodes():
    arch = ARCH(2, 2, positional=None)
    rows = [
        dict(name="L1H0∘L0H1", kind="virtual", depth=2, path=("embed", "L0H1", "L1H0"), value=-3.0),
        dict(name="L1H0", kind="head", depth=1, path=("embed", "L1H0"), value=2.0),
        dict(name="direct", kind="direct", depth=0, path=("embed",), value=0.5),
    ]
    G = pe.path_graph(arch, ranking=Ranking(rows))
    assert path_values(G) == {"L1H0∘L0H1": -3.0, "L1H0": 2.0, "direct": 0.5}
    # by hand: L1H0 → logits carries |−3| + |2|; the L0H1 read only the virtual path
    assert G.edges["L1H0", "logits", "out"]["weight"] == 5.0
    assert G.edges["L0H1", "L1H0.v", "v"]["weight"] == 3.0
    assert G.edges["embed", "L1H0.v", "v"]["weight"] == 2.0
    assert G.edges["embed", "logits", "out"]["weight"] == 0.5
    assert G.nodes["L1H0"]["weight"] == 5.0 and G.nodes["L0H1"]["weight"] == 3.0
    assert "weight" not in G.edges["embed", "L0H0.v", "v"]
    top = pe.strongest_paths(G, 2)
    assert top == [(("embed", "L0H1", "L1H0"), -3.0), (("embed", "L1H0"), 2.0)]
    sub = pe.subgraph_of(G, top)                    # strongest_paths rows go straight back in
    assert set(sub.edges(keys=True)) == {
        ("embed", "L0H1.v", "v"), ("L0H1.v", "L0H1", "v"), ("L0H1", "L1H0.v", "v"),
        ("L1H0.v", "L1H0", "v"), ("L1H0", "logits", "out"), ("embed", "L1H0.v", "v"),
    }
    with pytest.raises(pe.PathexpandError, match="does not start at a source"):
        pe.path_graph(arch, ranking=Ranking([dict(name="x", kind="head", depth=1, path=("L0H0",), value=1.0)]))


def test_ranking_from_evaluate_logits_and_scores():
    w = small_weights(seed=6, positional="shortformer")
    arch = pe.Architecture.from_weights(w)
    ranking = pe.evaluate(pe.expand_logits(arch), w)
    G = pe.path_graph(w, ranking=ranking)
    assert path_values(G) == {r.name: pytest.approx(r.value) for r in ranking}
    # the read into logits from L1H0 carries every path whose last node is L1H0
    by_hand = sum(abs(r.value) for r in ranking if r.path[-1] == "L1H0")
    assert G.edges["L1H0", "logits", "out"]["weight"] == pytest.approx(by_hand)
    scores = pe.evaluate(pe.expand_scores(arch, "L1H1"), w)
    assert scores.of == "score_terms" and {r["head"] for r in scores} == {"L1H1"}
    Gs = pe.path_graph(w, ranking=scores)
    by_hand = sum(abs(r.value) for r in scores if r["key_path"][-1] == "L0H0")
    assert Gs.edges["L0H0", "L1H1.k", "k"]["weight"] == pytest.approx(by_hand)
    assert "path_values" not in Gs.graph  # score rows are pairs, not logit paths
    # each score term's value is kept for diagram captions, and survives node-link JSON
    stored = pe.graph.score_values(pe.graph.from_json(pe.graph.to_json(Gs)))
    assert stored == {("L1H1", r.name): pytest.approx(r.value) for r in scores
                      if math.isfinite(r.value) and r.name != "remainder"}
    assert Gs.graph["value_label"] == G.graph["value_label"] == "frobenius"


def test_ranking_from_a_topk_and_only_rankings():
    w = small_weights(seed=3)
    found = pe.top_k_paths(w, [1, 2, 3, 4], target=2, k=2)
    G = pe.path_graph(w, ranking=found)                   # a result: through its ranking
    assert path_values(G) == {r.name: pytest.approx(r.value) for r in found.ranking()}
    with pytest.raises(pe.PathexpandError, match="ranking= takes a Ranking, a result"):
        pe.path_graph(ARCH(1, 1), ranking=[{"name": "x"}])


def test_top_paths_by_bottleneck_matches_brute_force():
    arch = ARCH(3, 2, positional=None)
    G = pe.path_graph(arch)
    rng = np.random.default_rng(3)
    for e in G.edges(keys=True):
        if G.edges[e]["kind"] == "read":
            G.edges[e]["weight"] = float(rng.uniform(0.1, 1.0))

    def bottleneck(path):
        return min(abs(G.edges[e]["weight"]) for e in path_edges(G, path) if "weight" in G.edges[e])

    brute = sorted(((p, bottleneck(p)) for p in pe.paths(G, "embed")), key=lambda r: -r[1])
    got = pe.strongest_paths(G, 5)
    assert [v for _, v in got] == [v for _, v in brute[:5]]
    assert all(math.isclose(bottleneck(p), v) for p, v in got)
    into_k = pe.strongest_paths(G, 3, sink="L2H1.k")
    brute_k = sorted((bottleneck(p + ("L2H1.k",)) for p in pe.paths(G, "embed", "L2H1.k")),
                     reverse=True)
    assert [v for _, v in into_k] == brute_k[:3]


def test_top_paths_errors():
    G = pe.path_graph(ARCH(1, 1))
    with pytest.raises(pe.PathexpandError, match="no magnitudes"):
        pe.strongest_paths(G, 3)
    with pytest.raises(pe.PathexpandError, match="positive int"):
        pe.strongest_paths(G, 0)
    with pytest.raises(pe.UnknownHeadError, match="sink"):
        pe.strongest_paths(G, 1, sink="embed")


def _composition_dense(W_V, W_O, W_Q, W_K, kind):
    """Paper's score ‖L R‖_F / (‖L‖_F ‖R‖_F), dense numpy, right-multiplying conventions."""
    L = W_V @ W_O
    R = {"q": W_Q @ W_K.T, "k": W_K @ W_Q.T}[kind]
    return np.linalg.norm(L @ R) / (np.linalg.norm(L) * np.linalg.norm(R))


def test_composition_scores_sit_on_head_to_head_reads():
    w = small_weights(seed=1, positional="shortformer")
    G = pe.path_graph(w, ranking=pe.composition_scores(w, baseline=None))
    for a, b, kind in [("L0H1", "L1H0", "k"), ("L0H0", "L1H1", "q"), ("L0H1", "L1H1", "v")]:
        la, ha = int(a[1]), int(a[3])
        lb, hb = int(b[1]), int(b[3])
        W_V, W_O = w[f"blocks.{la}.attn.W_V"][ha], w[f"blocks.{la}.attn.W_O"][ha]
        W_Q, W_K = w[f"blocks.{lb}.attn.W_Q"][hb], w[f"blocks.{lb}.attn.W_K"][hb]
        if kind == "v":
            L, R = W_V @ W_O, w[f"blocks.{lb}.attn.W_V"][hb] @ w[f"blocks.{lb}.attn.W_O"][hb]
            dense = np.linalg.norm(L @ R) / (np.linalg.norm(L) * np.linalg.norm(R))
        else:
            dense = _composition_dense(W_V, W_O, W_Q, W_K, kind)
        data = G.edges[a, f"{b}.{kind}", kind]
        assert data["composition"] == pytest.approx(dense, rel=1e-4)
        assert data["weight"] == data["composition"]
    assert "composition" not in G.edges["embed", "L1H0.k", "k"]
    # the z-score appears when the random null was sampled
    cs = pe.composition_scores(w, baseline="random", n_samples=20)
    Gz = pe.path_graph(w, ranking=cs)
    e = Gz.edges["L0H1", "L1H0.k", "k"]
    z = (e["composition"] - cs.null_mean["k_composition"]) / cs.null_std["k_composition"]
    assert e["composition_z"] == pytest.approx(z)
    with pytest.raises(pe.PathexpandError, match="not a read of this graph"):
        pe.path_graph(ARCH(1, 2), ranking=cs)


def test_attribution_contributions_land_on_the_reads():
    w = small_weights(seed=2, biases=True, d_mlp=6, act_fn="relu", normalization="LN")
    att = pe.attribute(w, [1, 4, 2, 7, 3], target=5)
    G = pe.path_graph(w, ranking=att)
    node = {r["name"]: r["value"] for r in att.to_records(view="node")}
    # second route: the attribution's node view, and the model's output, against sums of
    # the graph's edge contributions (into each reader, and into logits)
    for n in ("L0H1", "L1H0", "MLP0", "MLP1"):
        inbound = f"{n}.v" if G.nodes[n]["kind"] == "head" else n
        total = sum(d["contribution"] for _, _, d in G.in_edges(inbound, data=True))
        assert total == pytest.approx(node[n], abs=1e-9)
        assert G.nodes[n]["contribution"] == pytest.approx(node[n])
    into_logits = sum(d["contribution"] for _, _, d in G.in_edges("logits", data=True)
                      if "contribution" in d)
    constants = sum(float(np.mean(v)) for v in att.constants.values())
    assert into_logits + constants == pytest.approx(att.total, abs=1e-9)
    assert all(d["weight"] == abs(d["contribution"])
               for _, _, d in G.edges(data=True) if "contribution" in d)
    # its path view gives the path values: the top path is the largest |contribution|
    rows = att.to_records(view="path")
    best = max(rows, key=lambda r: abs(r["value"]))
    assert pe.strongest_paths(G, 1) == [(tuple(best["path"]), pytest.approx(best["value"]))]
    with pytest.raises(pe.PathexpandError, match="not a read of this graph"):
        pe.path_graph(ARCH(1, 2, mlp=True, layernorm=True, biases=True), ranking=att)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def _same(G, H):
    assert type(H) is type(G) is pe.PathGraph and isinstance(H, nx.MultiDiGraph)
    assert G.graph == H.graph
    assert list(G.nodes(data=True)) == list(H.nodes(data=True))
    assert list(G.edges(keys=True, data=True)) == list(H.edges(keys=True, data=True))


@pytest.fixture(scope="module")
def rich_graph():
    w = small_weights(seed=4, biases=True, d_mlp=6, act_fn="gelu", normalization="LN")
    att = pe.attribute(w, [1, 2, 3], target=2)
    return pe.path_graph(w, ranking=[att, pe.composition_scores(w)])


def test_graphml_round_trip(tmp_path, rich_graph):
    path = tmp_path / "g.graphml"
    nx.write_graphml(rich_graph, path)  # networkx's own writer: every attribute is a scalar
    _same(rich_graph, read_graphml(path))
    write_graphml(rich_graph, tmp_path / "h.graphml")
    back = read_graphml(tmp_path / "h.graphml")
    _same(rich_graph, back)
    assert arch_of(back) == arch_of(rich_graph)
    assert path_values(back) == path_values(rich_graph)


def test_node_link_json_round_trip(rich_graph):
    text = to_json(rich_graph)
    assert json.loads(text)["directed"] is True
    _same(rich_graph, from_json(text))
    with pytest.raises(pe.PathexpandError, match="node-link"):
        from_json("{not json")


def test_graph_module_stays_light():
    code = (
        "import sys, pathexpand as pe; pe.path_graph(pe.Architecture(1, 1)); "
        "print([m for m in ('torch', 'graphviz', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_diagram_of_a_few_heads_in_a_deep_model_drops_untouched_stream_levels():
    """12 layers, two heads drawn: the stream keeps its first and last levels and those the
    drawn heads read and write, nothing between (it would only make the picture tall)."""
    import re

    from pathexpand.render.dot import diagram

    src = diagram(pe.Architecture(12, 12), highlight=[("embed", "L1H4", "L3H2")]).source
    assert sorted(set(re.findall(r"\bresid\d+\b", src)), key=lambda s: int(s[5:])) == \
        ["resid0", "resid1", "resid2", "resid3", "resid4", "resid12"]
    assert "resid4 -> resid12" in src.replace('"', "")
    small = diagram(pe.Architecture(2, 4)).source                      # every head shown: every level
    assert sorted(set(re.findall(r"\bresid\d+\b", small))) == ["resid0", "resid1", "resid2"]
