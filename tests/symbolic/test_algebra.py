"""Check 2 (algebra): sympy's own non-commutative expansion of the product form equals the
sum of the term expressions.

The product form is written here from the architecture, layer by layer:
``(N_f ⊗ W_U W_f) Π_l [(Id + 𝓜^l (N ⊗ W_ln2)) (Id + Σ_h (A^h ⊗ W_OV^h)(N ⊗ W_ln1))] (Id ⊗ W_E)``
plus every other source entering at its own stage; ``sympy.expand`` multiplies it out and
sympy itself merges neighbouring tensor products (the mixed-product rule).
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sympy import Add, Mul, Pow, expand
from sympy.physics.quantum import TensorProduct as TP

from pathexpand import Architecture, expand_logits, expand_scores
from pathexpand.symbolic.symbols import Mat

ID = Mat("Id")
# the identity of the whole (position ⊗ model) space; ``Id ⊗ Id`` would hit a sympy bug
# (``TensorProduct(...)**2`` is None when two equal tensor products meet in a product)
ONE = ID


def m(family, *index, transposed=False):
    return Mat(family, index, transposed)


def no_id(e):
    """Drop identity factors from every product, until none is left (re-multiplying can
    merge tensor products into new ``Id·Id`` factors)."""
    while (new := _no_id(e)) != e:
        e = new
    return e


def _no_id(e):
    if isinstance(e, Mat) or not e.args:
        return e
    args = [_no_id(a) for a in e.args]
    if isinstance(e, Mul):
        kept = [a for a in args if a != ID and not (isinstance(a, Pow) and a.base == ID)]
        return Mul(*kept) if kept else ID
    if isinstance(e, Pow) and e.base == ID:
        return ID
    return e.func(*args)


def terms_of(e) -> Counter:
    e = no_id(expand(e))
    return Counter(e.args if isinstance(e, Add) else [e])


def stage_op(arch, stage):
    """The factor of one stage: attention (2l) or MLP (2l+1), as Id + ...."""
    l, is_mlp = divmod(stage, 2)
    if is_mlp:
        if not arch.mlp:
            return None
        read = TP(m("N_ln2", l), m("W_ln2", l)) if arch.layernorm else ONE
        return ONE + m("M", l) * read
    read = TP(m("N_ln1", l), m("W_ln1", l)) if arch.layernorm else ONE
    return ONE + Add(*[TP(m("A", l, h), m("W_OV", l, h)) * read for h in range(arch.n_heads[l])])


def stages_from(arch, start, stop):
    ops = [stage_op(arch, s) for s in range(start, stop)]
    ops = [o for o in ops if o is not None]
    return Mul(*reversed(ops)) if ops else ONE


def unembed(arch):
    read = TP(m("N_lnf"), m("W_lnf")) if arch.layernorm else ONE
    return TP(ID, m("W_U")) * read


def logit_product_form(arch):
    """Every source's product form, summed: what the logits are, before expanding."""
    L = 2 * arch.n_layers
    U = unembed(arch)
    parts = [U * stages_from(arch, 0, L) * TP(ID, m("W_E"))]
    if arch.positional == "standard":
        parts.append(U * stages_from(arch, 0, L) * TP(ID, m("W_pos")))
    if arch.biases:
        for l, H in enumerate(arch.n_heads):
            after_attn = stages_from(arch, 2 * l + 1, L)
            after_mlp = stages_from(arch, 2 * l + 2, L)
            for h in range(H):
                parts.append(U * after_attn * TP(ID, m("W_O", l, h) * m("b_V", l, h)))
            parts.append(U * after_attn * TP(ID, m("b_O", l)))
            if arch.layernorm and H:  # ln1 bias: read by this layer's heads, after the scale
                heads = Add(*[TP(m("A", l, h), m("W_OV", l, h)) for h in range(H)])
                parts.append(U * after_attn * heads * TP(ID, m("b_ln1", l)))
            if arch.mlp:
                parts.append(U * after_mlp * TP(ID, m("b_out", l)))
                parts.append(U * after_mlp * m("B_in", l))
                if arch.layernorm:
                    parts.append(U * after_mlp * m("M", l) * TP(ID, m("b_ln2", l)))
        if arch.layernorm:
            parts.append(TP(ID, m("W_U")) * TP(ID, m("b_lnf")))
        parts.append(TP(ID, m("b_U")))
    return Add(*parts)


CASES = [
    Architecture(0, 0),
    Architecture(1, 3, positional=None),
    Architecture(2, 2),
    Architecture(3, (2, 1, 2), positional=None),
    Architecture(2, (1, 2), biases=True, layernorm=True),
    Architecture(2, (2, 1), mlp=True, layernorm=True, biases=True),
    Architecture(2, 1, mlp=True, positional="shortformer"),
]


@pytest.mark.parametrize("arch", CASES, ids=str)
def test_logit_terms_are_the_expanded_product(arch):
    want = terms_of(logit_product_form(arch))
    got = Counter(no_id(t.expr) for t in expand_logits(arch))
    assert got == want
    assert max(want.values()) == 1  # no term appears twice


def test_two_layer_terms_read_like_the_paper():
    """DESIGN.md's 2-layer equation, written out by hand for 1 head per layer."""
    A0, A1 = m("A", 0, 0), m("A", 1, 0)
    O0, O1 = m("W_OV", 0, 0), m("W_OV", 1, 0)
    W_E, W_U = m("W_E"), m("W_U")
    paper = [TP(ID, W_U * W_E), TP(A0, W_U * O0 * W_E), TP(A1, W_U * O1 * W_E),
             TP(A1 * A0, W_U * O1 * O0 * W_E)]
    got = [t.expr for t in expand_logits(Architecture(2, 1, positional=None))]
    assert got == paper


# --- scores ----------------------------------------------------------------------------------
def T(e):
    """Transpose of a product of atoms (test-local)."""
    if isinstance(e, Mat):
        return Mat(e.family, e.index, not e.transposed)
    return Mul(*[T(f) for f in reversed(e.args)])


def side_parts(arch, head, side):
    """``{source: expanded tensor-form terms}`` of one side's input (product form, expanded)."""
    l, h = arch.check_head(head)
    pre = TP(m("N_ln1", l), m("W_ln1", l)) if arch.layernorm else ONE
    stop = 2 * l
    out = {"embed": pre * stages_from(arch, 0, stop) * TP(ID, m("W_E"))}
    if arch.positional == "standard":
        out["pos"] = pre * stages_from(arch, 0, stop) * TP(ID, m("W_pos"))
    if arch.biases:
        for j in range(l):
            for hh in range(arch.n_heads[j]):
                out[f"L{j}H{hh}.b_V"] = pre * stages_from(arch, 2 * j + 1, stop) * TP(
                    ID, m("W_O", j, hh) * m("b_V", j, hh))
            out[f"L{j}.b_O"] = pre * stages_from(arch, 2 * j + 1, stop) * TP(ID, m("b_O", j))
            if arch.layernorm and arch.n_heads[j]:
                heads = Add(*[TP(m("A", j, hh), m("W_OV", j, hh)) for hh in range(arch.n_heads[j])])
                out[f"L{j}.ln1.b"] = pre * stages_from(arch, 2 * j + 1, stop) * heads * TP(ID, m("b_ln1", j))
    if arch.positional == "shortformer":
        out["pos*"] = TP(ID, m("W_pos"))
    if arch.biases:
        if arch.layernorm:
            out[f"L{l}.ln1.b*"] = TP(ID, m("b_ln1", l))
        b = "b_Q" if side == "q" else "b_K"
        out[b] = TP(ID, m(b, l, h))
    return {src: list(terms_of(e).elements()) for src, e in out.items()}


@pytest.mark.parametrize("arch, head", [
    (Architecture(1, 2), "L0H1"),
    (Architecture(2, 2, positional=None), "L1H0"),
    (Architecture(3, (1, 2, 1), positional="shortformer", biases=True), "L2H0"),
    (Architecture(2, (2, 1), layernorm=True, biases=True), "L1H0"),
], ids=str)
def test_score_terms_are_the_pairs_of_expanded_sides(arch, head):
    l, h = arch.check_head(head)
    qs, ks = side_parts(arch, head, "q"), side_parts(arch, head, "k")
    want = Counter()
    for qsrc, qterms in qs.items():
        for ksrc, kterms in ks.items():
            for q in qterms:
                for k in kterms:
                    (pq, mq), (pk, mk) = q.args, k.args
                    if qsrc == "b_Q" and ksrc == "b_K":
                        model = T(mq) * mk
                    elif qsrc == "b_Q":
                        model = T(mq) * m("W_K", l, h) * mk
                    elif ksrc == "b_K":
                        model = T(mq) * m("W_Q", l, h, transposed=True) * mk
                    else:
                        model = T(mq) * m("W_QK", l, h) * mk
                    want[no_id(TP(pq, pk, model))] += 1
    got = Counter(no_id(t.expr) for t in expand_scores(arch, head))
    assert got == want


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 2), min_size=0, max_size=2), st.booleans(), st.booleans(),
       st.booleans(), st.sampled_from(["standard", "shortformer", None]))
def test_random_architectures_expand_like_sympy(heads, mlp, layernorm, biases, positional):
    assume(mlp or any(heads) or not heads)   # layers with nothing in them are refused
    arch = Architecture(len(heads), heads, mlp=mlp, layernorm=layernorm, biases=biases,
                        positional=positional)
    assert Counter(no_id(t.expr) for t in expand_logits(arch)) == terms_of(logit_product_form(arch))
