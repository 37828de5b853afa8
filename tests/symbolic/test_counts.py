"""Check 1 (counts): the closed forms equal the enumeration, and names are unique.

Closed forms here are written from DESIGN.md (``Π_l (1 + H_l)`` per source, ``Π_l 2(1 + H_l)``
with MLPs, ``Π_l (2 + H_l)`` with parallel attention and MLP, ``(Π_{l'<l} c_l')²`` score pairs
per pair of sources) and from
``Architecture.n_logit_paths``/``n_score_pairs``; the enumeration is ``list(expansion)``.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathexpand import Architecture, PathexpandError, UnknownHeadError, expand_logits, expand_scores
from pathexpand.symbolic import parse_score_name, parse_term_name


@st.composite
def architectures(draw, max_layers=3, max_heads=3):
    n = draw(st.integers(0, max_layers))
    heads = draw(st.lists(st.integers(0, max_heads), min_size=n, max_size=n))
    mlp = draw(st.booleans())
    if n and not any(heads) and not mlp:  # layers with nothing in them are refused
        heads[0] = 1
    return Architecture(
        n,
        heads,
        mlp=mlp,
        normalization=draw(st.sampled_from([None, "LN", "RMS"])),
        positional=draw(st.sampled_from(["standard", "shortformer", "rotary", None])),
        biases=draw(st.booleans()),
        gated_mlp=mlp and draw(st.booleans()),
        parallel_attn_mlp=mlp and draw(st.booleans()),
    )


def per_layer(arch, h):
    """``1 + H + 1`` with parallel attention and MLP, ``(1 + H)·2`` with sequential MLPs."""
    if arch.parallel_attn_mlp:
        return 2 + h
    return (1 + h) * (2 if arch.mlp else 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_logit_counts_match_closed_forms_and_enumeration(arch):
    exp = expand_logits(arch)
    terms = list(exp)
    assert len(exp) == len(terms) == exp.n_terms
    closed = math.prod(per_layer(arch, h) for h in arch.n_heads)
    assert exp.count(source="embed") == closed == arch.n_logit_paths()
    by_source = Counter(t.source for t in terms)
    for src in exp.sources:
        assert exp.count(source=src) == by_source[src], src
    if arch.positional == "standard":
        assert by_source["pos"] == closed
    else:
        assert "pos" not in by_source  # shortformer, rotary: nothing positional travels an OV path
    names = [t.name for t in terms]
    assert len(set(names)) == len(names)
    assert len({t.path for t in terms}) == len(terms)
    for t in terms:
        assert parse_term_name(t.name) == t.path
        assert exp[t.name] == t
        assert t.depth == len(t.nodes) == len(t.path) - 1
        assert t.sink == "logits"
    for kind in ("direct", "head", "virtual", "mlp", "bias"):
        assert exp.count(kind=kind) == sum(t.kind == kind for t in terms), kind
    for d in range(2 * arch.n_layers + 1):
        assert exp.count(depth=d) == sum(t.depth == d for t in terms)
    assert exp.count(composition="v_composition") == sum(len(t.heads) >= 2 for t in terms)
    assert exp.count(bias=True) == sum(t.bias for t in terms)
    for node in arch.writers[:3]:
        assert exp.count(through=node) == sum(node in t.nodes for t in terms)
        assert len(list(exp.filter(through=node))) == exp.count(through=node)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures(max_layers=3, max_heads=2), st.data())
def test_score_counts_match_closed_forms_and_enumeration(arch, data):
    if not arch.heads:
        return
    head = data.draw(st.sampled_from(arch.heads))
    exp = expand_scores(arch, head)
    terms = list(exp)
    layer, _ = arch.check_head(head)
    side = math.prod(per_layer(arch, h) for h in arch.n_heads[:layer])
    pairs = Counter((t.query_source, t.key_source) for t in terms)
    assert pairs["embed", "embed"] == side**2 == arch.n_score_pairs(head)
    if arch.positional in ("standard", "shortformer"):
        assert pairs["pos", "pos"] == (side**2 if arch.positional == "standard" else 1)
    else:  # rotary positions are no source
        assert not any("pos" in p for p in pairs)
    assert len(exp) == len(terms)
    q_sources, k_sources = Counter(t.query_path for t in terms), Counter(t.key_path for t in terms)
    assert len(terms) == len(q_sources) * len(k_sources)  # every query path × every key path
    names = [t.name for t in terms]
    assert len(set(names)) == len(names)
    for t in terms[:50]:
        assert parse_score_name(t.name) == (t.query_path, t.key_path)
        assert exp[t.name] == t
    for kind in ("direct", "q_composition", "k_composition", "qk_composition"):
        assert exp.count(kind=kind) == sum(t.kind == kind for t in terms)
    assert exp.count(softmax_invariant=True) == sum(t.softmax_invariant for t in terms)
    assert exp.count(bias=True) == sum(t.bias for t in terms)
    for node in arch.writers[: 2 * layer][:3]:
        assert exp.count(through=node) == sum(node in t.nodes for t in terms)
    if len(arch.writers) >= 2 and layer >= 1:
        both = arch.writers[:2]
        assert exp.count(through=both) == sum(set(both) <= set(t.nodes) for t in terms)


@settings(max_examples=30, deadline=None)
@given(architectures(max_layers=3, max_heads=2), st.integers(0, 3))
def test_max_depth_keeps_shallow_terms_and_one_remainder(arch, k):
    full = expand_logits(arch)
    cut = expand_logits(arch, max_depth=k)
    deep = sum(t.depth > k for t in full)
    assert cut.n_cut == deep
    terms = list(cut)
    assert len(cut) == len(terms) == full.n_terms - deep + (1 if deep else 0)
    assert (terms[-1].kind == "remainder") == bool(deep)
    assert (cut.remainder is not None) == bool(deep)
    assert all(t.depth <= k for t in terms if t.kind != "remainder")


def test_score_max_depth_cuts_each_side():
    arch = Architecture(3, 2)
    full, cut = expand_scores(arch, "L2H0"), expand_scores(arch, "L2H0", max_depth=1)
    deep = [t for t in full if t.query_depth > 1 or t.key_depth > 1]
    assert cut.n_cut == len(deep)
    assert len(cut) == len(full) - len(deep) + 1
    assert list(cut)[-1].name == "remainder"


def test_two_layer_four_heads_like_the_readme():
    exp = expand_logits(Architecture(2, 4))
    assert len(exp) == 50  # Π_l (1 + H_l) = 25 from W_E and 25 from W_pos
    assert exp.count(kind="virtual") == 32 and exp.count(kind="head") == 16
    assert exp.count(through="L0H1") == 2 * (1 + 4)
    scores = expand_scores(Architecture(2, 4, positional=None), "L1H0")
    assert [scores.count(kind=k) for k in ("direct", "q_composition", "k_composition", "qk_composition")] \
        == [1, 4, 4, 16]


def test_twelve_layers_twelve_heads_are_counted_not_listed():
    arch = Architecture(12, 12)
    exp = expand_logits(arch)
    assert exp.n_terms == len(exp) == 2 * 13**12  # embed and pos
    assert exp.count(kind="head") == 2 * 144
    assert exp.count(kind="virtual", source="embed") == 13**12 - 1 - 144
    assert exp.count(through="L5H3", source="embed") == 13**11
    big = expand_scores(Architecture(12, 12, mlp=True, layernorm=True, biases=True), "L11H0")
    assert big.n_terms > 2**63  # beyond len(): counted exactly all the same
    with pytest.raises(PathexpandError, match="n_terms"):
        len(big)
    first = next(iter(exp))
    assert first.name == "direct"


def test_ordering_follows_the_paper():
    exp = expand_logits(Architecture(2, 2, positional=None))
    assert [t.name for t in exp] == [
        "direct", "L0H0", "L0H1", "L1H0", "L1H1",
        "L1H0∘L0H0", "L1H1∘L0H0", "L1H0∘L0H1", "L1H1∘L0H1",
    ]
    assert exp[0].name == "direct" and exp[-1].name == "L1H1∘L0H1"
    kinds = [t.kind for t in expand_scores(Architecture(2, 1, positional=None), "L1H0")]
    assert kinds == ["direct", "q_composition", "k_composition", "qk_composition"]


def test_bias_sources_and_names():
    arch = Architecture(2, (1, 1), mlp=True, layernorm=True, biases=True)
    exp = expand_logits(arch)
    assert exp.sources == (
        "embed", "pos", "L0.ln1.b", "L0H0.b_V", "L0.b_O", "L0.ln2.b", "MLP0.b_in", "MLP0.b_out",
        "L1.ln1.b", "L1H0.b_V", "L1.b_O", "L1.ln2.b", "MLP1.b_in", "MLP1.b_out", "ln_final.b", "b_U",
    )
    assert exp["b_U"].path == ("b_U",) and exp["b_U"].kind == "bias"
    assert exp["pos:L1H0"].path == ("pos", "L1H0")
    assert exp["L0.ln1.b:MLP1∘L0H0"].nodes == ("L0H0", "MLP1")
    # an LN bias is read by its own layer's heads only
    assert exp.count(source="L0.ln1.b") == 1 * 2 * 2 * 2
    with pytest.raises(UnknownHeadError, match="not a term"):
        exp["L0.ln1.b"]  # it cannot reach the logits without passing a head
    t = exp["MLP0∘L0H0"]
    assert t.kind == "mlp" and t.heads == ("L0H0",) and t.mlps == ("MLP0",) and t.depth == 2


def test_scores_sources_per_side():
    arch = Architecture(2, 1, layernorm=True, biases=True, positional="shortformer")
    exp = expand_scores(arch, "L1H0")
    assert exp.query_sources == ("embed", "L0.ln1.b", "L0H0.b_V", "L0.b_O", "pos", "L1.ln1.b", "L1H0.b_Q")
    assert exp.key_sources[-1] == "L1H0.b_K"
    inv = {t.name for t in exp if t.softmax_invariant}
    assert "q:direct · k:L1H0.b_K" in inv and "q:pos · k:L1.ln1.b" in inv
    assert "q:direct · k:L0.b_O" not in inv  # scaled per position by the head's own ln1
    no_ln = expand_scores(Architecture(2, 1, biases=True), "L1H0")
    assert no_ln["q:direct · k:L0.b_O"].softmax_invariant
    assert "q:direct · k:L0H0.b_V:L0H0" not in no_ln  # L0H0's bias enters after L0H0 reads
    t = no_ln["q:L0H0 · k:L0H0.b_V"]
    assert t.kind == "q_composition" and t.bias and t.softmax_invariant


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_max_depth(bad):
    with pytest.raises(PathexpandError, match="max_depth"):
        expand_logits(Architecture(1, 1), max_depth=bad)


def test_bad_inputs_raise_clear_errors():
    arch = Architecture(2, 4)
    with pytest.raises(UnknownHeadError, match="'L7H0' is not in this 2-layer model"):
        expand_scores(arch, "L7H0")
    with pytest.raises(PathexpandError, match="expected an Architecture .* or a model .*got tuple"):
        expand_logits((2, 4))
    exp = expand_logits(arch)
    with pytest.raises(PathexpandError, match="kind must be one of"):
        exp.filter(kind="virtual_head")
    with pytest.raises(UnknownHeadError, match="sources are embed, pos"):
        exp.count(source="W_pos")
    with pytest.raises(UnknownHeadError, match="MLPs are absent"):
        exp.count(through="MLP0")
    with pytest.raises(PathexpandError, match="unknown filter"):
        exp.filter(head="L0H0")
    with pytest.raises(UnknownHeadError, match="not a term"):
        exp["L0H0∘L1H0"]  # wrong order: L1 cannot be read by L0
    with pytest.raises(PathexpandError, match="softmax_invariant filters score terms"):
        exp.filter(softmax_invariant=True)
    with pytest.raises(IndexError):
        exp[50]


def test_selection_is_lazy_and_chainable():
    exp = expand_logits(Architecture(3, 3))
    sel = exp.filter(source="embed").filter(through="L0H1")
    assert len(sel) == 16 == len(list(sel))
    assert all("L0H1" in t.nodes and t.source == "embed" for t in sel)
    assert sel.count(kind="virtual") == 15
    with pytest.raises(PathexpandError, match="contradicts"):
        sel.filter(source="pos")


def test_head_to_head_composition_counts_match_the_closed_form():
    """The derivation's count step splits Q/K/Q&K-composition by whether a head is on the
    composing side (the paper's head-to-head kind). Closed form for one source (embed, no
    biases, no positions): a side of a layer-2 head has Π_l 2(1 + H_l) paths, 2^l of them
    through MLPs only (the empty path included)."""
    from pathexpand.symbolic.derivation import derive

    arch = Architecture(3, (2, 1, 1), mlp=True, positional=None)
    exp = expand_scores(arch, "L2H0")
    per_side = 2 * 3 * 2 * 2                 # layers 0 and 1: (1 + H_l) head choices × MLP or not
    with_head = per_side - 2 ** 2            # minus the MLP-only paths (and the empty one)
    composing = per_side - 1
    assert exp.count(kind="q_composition") == composing
    rows = {r.args[0].name: r.args[1] for r in derive(exp)[-1].expr.args}
    assert rows["q_composition terms with a head on the query side"] == with_head
    assert rows["k_composition terms with a head on the key side"] == with_head
    assert rows["qk_composition terms with a head on both sides"] == with_head ** 2
    attn_only = derive(expand_scores(Architecture(2, 2, positional=None), "L1H0"))
    assert not any("with a head" in str(r.args[0]) for r in attn_only[-1].expr.args)
    assert "every composing side passes a head" in attn_only[5].text
