"""Each derivation states its notation once, where its equations start using it, and states
what its equations show.

Checked against the derivation's own equations, not its prose: the paper's ``P ⊗ M`` statement
sits in the first step whose equations hold a tensor product; the row-form statement in the
first step; and the claim "a pair with a side through an MLP stays in row form" is made exactly
when some listed term has no tensor product, each such term being one whose side passes an MLP
node (or starts at a non-gated ``b_in``, which passes the gates).
"""

from __future__ import annotations

import pytest
from sympy.physics.quantum import TensorProduct

from pathexpand import Architecture, expand_logits, expand_scores
from pathexpand.cli.derive import examples
from pathexpand.names import parse_node
from pathexpand.symbolic.derivation import derive

PAPER = "From here on the paper's column form"
ROW = "TransformerLens's arrays, acting on rows"
ROW_TERMS = "stays in row form"

ARCHS = [arch for _, arch, _, _ in examples()] + [
    Architecture(0, 0, layernorm=True),
    Architecture(2, (2, 1), mlp=True, biases=True),
    Architecture(2, 2, mlp=True, gated_mlp=True, biases=True, normalization="RMS", positional="rotary"),
    Architecture(3, 1, mlp=True, parallel_attn_mlp=True, layernorm=True, positional="standard"),
]


def _expansions():
    for arch in ARCHS:
        depth = 2 if arch.n_layers > 4 else None
        yield pytest.param(expand_logits(arch, max_depth=depth), id=f"{arch}-logits")
        if arch.n_layers:
            head = f"L{arch.n_layers - 1}H0"
            yield pytest.param(expand_scores(arch, head, max_depth=depth), id=f"{arch}-{head}")
        if arch.n_layers > 1 and arch.mlp:  # a layer-0 head: no side passes an MLP
            yield pytest.param(expand_scores(arch, "L0H0"), id=f"{arch}-L0H0")


def _is_tensor(expr) -> bool:
    return expr.has(TensorProduct)


@pytest.mark.parametrize("exp", list(_expansions()))
def test_each_form_is_stated_once_where_its_equations_start(exp):
    steps = derive(exp)
    paper = [i for i, s in enumerate(steps) if PAPER in s.text]
    first_tensor = next(i for i, s in enumerate(steps) if _is_tensor(s.expr))
    assert paper == [first_tensor]
    assert [i for i, s in enumerate(steps) if ROW in s.text] == [0]
    assert sum(s.text.count("P ⊗ M maps") for s in steps) == 1


def _passes_gates(term, arch) -> bool:
    sides = [(term.query_source, term.query_nodes), (term.key_source, term.key_nodes)]
    return any(
        any(parse_node(n).kind == "mlp" for n in nodes)
        or (src.endswith(".b_in") and not arch.gated_mlp)
        for src, nodes in sides
    )


@pytest.mark.parametrize("exp", list(_expansions()))
def test_row_form_claim_matches_the_listed_terms(exp):
    steps = derive(exp)
    statement = next(s.text for s in steps if PAPER in s.text)
    terms = [t for t in exp if not t.is_remainder] if exp.n_terms < 5000 else []
    row_form = [t for t in terms if not _is_tensor(t.expr)]
    if exp.target == "logits":
        assert row_form == [] and ROW_TERMS not in statement
        return
    assert (ROW_TERMS in statement) == bool(row_form) == (exp.arch.mlp and exp.layer > 0)
    for t in terms:
        assert (not _is_tensor(t.expr)) == _passes_gates(t, exp.arch), t.name
