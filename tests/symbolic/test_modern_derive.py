"""Modern blocks in the symbolic layer: RMSNorm, rotary positions, grouped-query attention,
gated and parallel MLPs.

Second routes: closed forms written here from DESIGN.md (``Π_l (2 + H_l)`` parallel,
``Π_l 2(1 + H_l)`` sequential), the listing of ``iter_tails``, sympy's own expansion of the
product form (``Id + Σ_h A^h ⊗ W_OV^h + 𝓜^l`` per parallel layer), and the numeric side: the
exact attribution of random ``Weights`` names the same paths and score terms, and the terms
the symbolic layer calls softmax-invariant have no effect there.
"""

from __future__ import annotations

import importlib.util
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sympy import Add, Mul
from sympy.physics.quantum import TensorProduct as TP

import pathexpand as pe
from pathexpand import Architecture, expand_logits, expand_scores
from pathexpand.names import term_name
from pathexpand.numeric.weights import Config, expected_shapes
from pathexpand.render import to_latex, to_markdown, to_mathml, to_text
from pathexpand.symbolic.paths import iter_tails, logit_sources, score_sources

_spec = importlib.util.spec_from_file_location("algebra", Path(__file__).parent / "test_algebra.py")
algebra = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(algebra)
m, no_id, terms_of, ID = algebra.m, algebra.no_id, algebra.terms_of, algebra.ID

FORMATS = {"text": to_text, "latex": to_latex, "markdown": to_markdown, "mathml": to_mathml}


def flat(text: str) -> str:
    """Prose with its line breaks (the text printer wraps at 88 columns) made single spaces."""
    return " ".join(text.split())
MIXED = [(1,), (2, 0), (0, 3), (1, 2, 1), (3, 1, 0, 2)]


# --- counts ------------------------------------------------------------------------------------
def closed_form(heads, parallel: bool) -> int:
    """DESIGN.md: per layer ``1 + H_l + 1`` choices (parallel) or ``(1 + H_l) · 2`` (sequential)."""
    return math.prod((2 + h) if parallel else 2 * (1 + h) for h in heads)


@pytest.mark.parametrize("heads", MIXED, ids=str)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_logit_path_counts_closed_form_listing_and_formula(heads, parallel):
    arch = Architecture(len(heads), heads, mlp=True, parallel_attn_mlp=parallel)
    embed = logit_sources(arch)[0]
    listed = list(iter_tails(arch, embed))
    terms = [t for t in expand_logits(arch) if t.source == "embed"]
    assert len(listed) == len(terms) == arch.n_logit_paths() == closed_form(heads, parallel)
    assert len(set(listed)) == len(listed)
    assert [tuple(t.path[1:]) for t in terms] == listed
    # parallel: at most one node per layer, and never a head and then its own layer's MLP
    if parallel:
        for tail in listed:
            layers = [int(re.match(r"(?:L|MLP)(\d+)", n).group(1)) for n in tail]
            assert len(layers) == len(set(layers)), tail


@pytest.mark.parametrize("heads", [(2, 1), (1, 2, 1), (0, 3, 1)], ids=str)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_score_pair_counts(heads, parallel):
    arch = Architecture(len(heads), heads, mlp=True, parallel_attn_mlp=parallel)
    for head in arch.heads:
        l, _ = arch.check_head(head)
        exp = expand_scores(arch, head)
        pairs = [t for t in exp if t.query_path[0] == "embed" and t.key_path[0] == "embed"]
        side = closed_form(heads[:l], parallel)
        q_src = score_sources(arch, head, "q")[0]
        assert len(list(iter_tails(arch, q_src))) == side
        assert len(pairs) == arch.n_score_pairs(head) == side**2
        assert len(exp) == len(list(exp)) == exp.n_terms


@pytest.mark.parametrize("biases", [False, True])
def test_parallel_paths_never_go_head_to_mlp_inside_a_layer(biases):
    arch = Architecture(3, (2, 1, 2), mlp=True, parallel_attn_mlp=True, biases=biases,
                        layernorm=biases)

    def bad(path):
        return any(a.startswith(f"L{b[3:]}H") for a, b in zip(path, path[1:]) if b.startswith("MLP"))

    assert not any(bad(t.path) for t in expand_logits(arch))
    for head in arch.heads_in_layer(2):
        for t in expand_scores(arch, head):
            assert not bad(t.query_path) and not bad(t.key_path)
    # the sequential model has such paths
    seq = Architecture(3, (2, 1, 2), mlp=True)
    assert any(bad(t.path) for t in expand_logits(seq))


# --- sources -----------------------------------------------------------------------------------
def _sources(arch):
    out = set(expand_logits(arch).sources)
    for head in arch.heads:
        exp = expand_scores(arch, head)
        out |= set(exp.query_sources) | set(exp.key_sources)
    return out


def test_rms_has_no_norm_bias_sources_layernorm_does():
    kw = dict(mlp=True, biases=True)
    for parallel in (False, True):
        ln = _sources(Architecture(2, 2, layernorm=True, parallel_attn_mlp=parallel, **kw))
        rms = _sources(Architecture(2, 2, normalization="RMS", parallel_attn_mlp=parallel, **kw))
        assert {"L0.ln1.b", "L1.ln1.b", "L0.ln2.b", "L1.ln2.b", "ln_final.b"} <= ln
        assert not [s for s in rms if ".ln" in s or s.startswith("ln_")]
        assert rms == {s for s in ln if ".ln" not in s and not s.startswith("ln_")}


def test_rotary_has_no_pos_source():
    for kw in ({}, {"mlp": True, "biases": True}, {"mlp": True, "parallel_attn_mlp": True}):
        arch = Architecture(2, 2, positional="rotary", **kw)
        assert "pos" not in _sources(arch)
        assert not any(t.source == "pos" for t in expand_logits(arch))
        assert "W_pos" not in to_text(expand_logits(arch)).split("no W_pos is added")[0]
    assert "pos" in _sources(Architecture(2, 2))


def test_parallel_attention_biases_enter_after_the_layer():
    arch = Architecture(2, 1, mlp=True, parallel_attn_mlp=True, biases=True, layernorm=True)
    paths = {t.path for t in expand_logits(arch)}
    assert ("L0H0.b_V", "MLP0") not in paths and ("L0.b_O", "MLP0") not in paths
    assert ("L0H0.b_V", "MLP1") in paths and ("L0.ln2.b", "MLP0") in paths
    assert ("L0.ln2.b", "L0H0") not in paths and ("L0.ln1.b", "MLP0") not in paths


# --- sympy's expansion of the product form (parallel, RMS, gated) ------------------------------
def _reads(arch, which, l=None):
    if not arch.normed:
        return algebra.ONE
    if which == "lnf":
        return TP(m("N_lnf"), m("W_lnf"))
    return TP(m(f"N_{which}", l), m(f"W_{which}", l))


def _layer(arch, l):
    heads = Add(*[TP(m("A", l, h), m("W_OV", l, h)) * _reads(arch, "ln1", l)
                  for h in range(arch.n_heads[l])])
    mlp = m("M", l) * _reads(arch, "ln2", l)
    return algebra.ONE + heads + mlp          # one sum: the MLP reads the layer's input


def _after(arch, layer):
    ops = [_layer(arch, l) for l in range(layer, arch.n_layers)]
    return Mul(*reversed(ops)) if ops else algebra.ONE


def parallel_product_form(arch):
    U = TP(ID, m("W_U")) * _reads(arch, "lnf")
    parts = [U * _after(arch, 0) * TP(ID, m("W_E"))]
    if arch.positional == "standard":
        parts.append(U * _after(arch, 0) * TP(ID, m("W_pos")))
    if arch.biases:
        for l, H in enumerate(arch.n_heads):
            rest = _after(arch, l + 1)
            for h in range(H):
                parts.append(U * rest * TP(ID, m("W_O", l, h) * m("b_V", l, h)))
            parts.append(U * rest * TP(ID, m("b_O", l)))
            parts.append(U * rest * TP(ID, m("b_out", l)))
            parts.append(U * rest * (TP(ID, m("W_out", l) * m("b_in", l)) if arch.gated_mlp
                                     else m("B_in", l)))
        parts.append(TP(ID, m("b_U")))
    return Add(*parts)


@pytest.mark.parametrize("arch", [
    Architecture(2, (2, 1), mlp=True, parallel_attn_mlp=True, positional="rotary"),
    Architecture(2, (1, 2), mlp=True, parallel_attn_mlp=True, normalization="RMS", biases=True,
                 gated_mlp=True, positional="rotary"),
    Architecture(3, (1, 0, 1), mlp=True, parallel_attn_mlp=True, normalization="RMS", biases=True),
], ids=str)
def test_parallel_terms_are_the_expanded_product(arch):
    want = terms_of(parallel_product_form(arch))
    got = Counter(no_id(t.expr) for t in expand_logits(arch))
    assert got == want and max(want.values()) == 1


def test_rotary_score_terms_meet_through_the_rotation():
    arch = Architecture(2, 2, positional="rotary", normalization="RMS", biases=True)
    rot = m("Rot", "j-i")
    for t in expand_scores(arch, "L1H1"):
        assert rot in t.expr.atoms(type(rot)) and rot in t.right_expr.atoms(type(rot))
        assert m("W_QK", 1, 1) not in t.expr.atoms(type(rot))
    q = expand_scores(arch, "L1H1")["q:direct · k:direct"]
    assert to_text(q.expr) == "N_ln1[1] ⊗ N_ln1[1] ⊗ W_Eᵀ W_ln1[1]ᵀ W_Q[1,1]ᵀ R_(j−i) W_K[1,1] W_ln1[1] W_E"
    assert to_latex(q.expr).endswith(r"W_Q^{1,1\top} R_{j-i} W_K^{1,1} W_{\mathrm{ln1}}^{1} W_E")
    # a rotated key side changes with the key position: nothing cancels in the softmax
    assert expand_scores(arch, "L1H1").filter(softmax_invariant=True).n_terms == 0
    assert expand_scores(Architecture(2, 2, biases=True), "L1H1").filter(softmax_invariant=True).n_terms


# --- derivations in every format ---------------------------------------------------------------
ROTATION = {
    "text": ["R_(j−i)", "W_Q R_{j−i} W_Kᵀ"],
    "latex": [r"R_{j-i}", r"\Theta_{i} \Theta_{j}^{\top} &= R_{j-i}"],
    "markdown": [r"R_{j-i}", r"\Theta_{i} \Theta_{j}^{\top} &= R_{j-i}"],
    "mathml": ["<msub><mi>R</mi><mrow><mi>j</mi><mo>−</mo><mi>i</mi></mrow></msub>",
               "<mi>Θ</mi>"],
}
WHY = "That is why positions no longer enter the residual stream"


@pytest.mark.parametrize("fmt", FORMATS)
def test_rotary_derivation_shows_the_rotation_and_says_why(fmt):
    arch = Architecture(2, 2, mlp=True, normalization="RMS", positional="rotary", biases=True,
                        gated_mlp=True, parallel_attn_mlp=True)
    raw = FORMATS[fmt](expand_scores(arch, "L1H0"))
    scores = flat(raw)
    for needle in ROTATION[fmt]:
        assert needle in scores, (fmt, needle)
    assert WHY in scores
    assert "W_QK" not in scores.replace("instead of W_QK", "").replace("instead of $W_{QK}$", "")
    logits = flat(FORMATS[fmt](expand_logits(arch)))
    assert "rotary positions never enter the stream" in logits
    one_layer = FORMATS[fmt](expand_logits(Architecture(1, 2, positional="rotary")))
    assert ROTATION[fmt][0] in one_layer       # the QK circuit W_Eᵀ W_Qᵀ R_{j−i} W_K W_E
    if fmt == "mathml":
        ET.fromstring(raw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rms_gated_and_gqa_say_what_is_frozen_and_shared(fmt):
    arch = Architecture(2, 4, mlp=True, normalization="RMS", gated_mlp=True, n_kv_heads=2,
                        biases=True)
    out = flat(FORMATS[fmt](expand_logits(arch)))
    assert "A frozen RMSNorm" in out and "does not centre and has no bias" in out
    assert "diag(1/rms)" in out and "diag(w)" in out
    assert "each MLP neuron's gate g = act(x" in out
    assert "W_in diag(g_i) W_out" in re.sub(r"[${}]", "", out)
    assert "grouped-query attention" in out and "Names and terms stay per query head" in out
    scores = flat(FORMATS[fmt](expand_scores(arch, "L1H3")))
    assert "Names and terms stay per query head" in scores


def test_classic_derivations_do_not_mention_modern_blocks():
    for arch in (Architecture(2, 2, mlp=True, layernorm=True, biases=True), Architecture(1, 1)):
        text = flat(to_text(expand_logits(arch)) + to_text(expand_scores(arch, arch.heads[-1])))
        for word in ("RMS", "rotary", "R_(j−i)", "Θ", "gated", "parallel", "grouped-query"):
            assert word not in text, word
    ln = flat(to_text(expand_logits(Architecture(2, 1, mlp=True, layernorm=True, biases=True))))
    assert "no LayerNorm scale or MLP gate touches it" in ln


# --- the numeric side names the same paths ------------------------------------------------------
NUMERIC = {
    "parallel+rotary+RMS+gated+GQA": dict(normalization="RMS", positional="rotary", gated_mlp=True,
                                          parallel_attn_mlp=True, n_key_value_heads=1),
    "parallel+LN+partial rotary": dict(normalization="LN", positional="rotary", rotary_dim=2,
                                       parallel_attn_mlp=True),
    "sequential+RMS+adjacent rotary+GQA": dict(normalization="RMS", positional="rotary",
                                               rotary_adjacent_pairs=True, n_key_value_heads=1),
    "gated, no norm, standard positions": dict(positional="standard", gated_mlp=True),
}


def random_weights(seed=0, **cfg) -> pe.Weights:
    config = Config(n_layers=2, n_heads=2, d_model=8, d_head=4, d_vocab=11, n_ctx=6, d_mlp=6,
                    act_fn="silu", **cfg)
    rng = np.random.default_rng(seed)
    return pe.Weights({k: 0.5 * rng.normal(size=s) for k, s in expected_shapes(config).items()},
                      config)


@pytest.mark.parametrize("cfg", NUMERIC.values(), ids=list(NUMERIC))
def test_symbolic_terms_are_the_numeric_attribution_paths(cfg):
    w = random_weights(**cfg)
    arch = Architecture.from_weights(w)
    assert (arch.parallel_attn_mlp, arch.gated_mlp) == (cfg.get("parallel_attn_mlp", False),
                                                        cfg.get("gated_mlp", False))
    tokens = np.array([[1, 2, 3, 4, 5]])
    res = pe.attribute(w, tokens, target=3, views=("path",))
    assert res.residual_error() < 1e-6
    exp = expand_logits(arch)
    symbolic = [t.name for t in exp]
    numeric = [term_name(p) for p in res.paths] + list(res.constants)
    assert sorted(symbolic) == sorted(numeric)
    assert res.n_paths + len(res.constants) == exp.n_terms
    for head in ("L0H1", "L1H0"):
        sc = pe.attribute_scores(w, tokens, head, 4, 2)
        assert sc.residual_error() < 1e-6
        assert sorted(t["name"] for t in sc.terms) == sorted(t.name for t in expand_scores(arch, head))
        for t in sc.terms:   # what the symbolic layer calls softmax-invariant has no effect
            if t["softmax_invariant"]:
                assert abs(t["effect"]) < 1e-9, t["name"]
