"""A path's sympy expression, built from its node names (tensor-product and right-multiplying).

Walking a path from its source to its sink, every read of the residual stream is one factor:

* source: ``Id ⊗ W_E`` on the tokens t (right form ``t W_E``), ``Id ⊗ W_pos`` on the
  position one-hots (``W_pos``), ``Id ⊗ W_O b_V`` on the ones column 𝟙 (``𝟙 b_V W_O``), ...;
* head h of layer l: ``(A^{l,h} ⊗ W_OV^{l,h})``, after ``N^l_ln1 ⊗ W^l_ln1`` with a norm
  (LayerNorm or RMSNorm: the same symbols, ``W_ln`` = ``C diag(w)`` or ``diag(w)``);
* MLP l: the frozen operator ``𝓜^l`` (position-wise but not a tensor product), after ln2;
  a gated MLP's ``b_in`` is added after the gate: the constant row ``𝟙 b_in W_out``;
* logits: ``Id ⊗ W_U`` after the final norm; a head's query/key input: its ln1 only.

A LayerNorm bias is added after the scale, so the first read of ``L0.ln1.b`` skips the
LayerNorm factor. sympy merges neighbouring tensor products (mixed-product rule). With rotary
positions a score term's two sides meet through ``W_Q R_{j−i} W_Kᵀ`` (``W_Qᵀ R_{j−i} W_K``
in the paper's notation) instead of ``W_QK``.
"""

from __future__ import annotations

from sympy import Mul

from ..architecture import Architecture
from ..errors import PathexpandError
from ..names import parse_node
from .symbols import (
    ID,
    ONES,
    ROTATION,
    TOKENS,
    Apply,
    Mat,
    TensorProduct,
    Tr,
    mul,
    strip_identity,
    tp,
    transpose,
)

__all__ = ["logit_forms", "qk_middle", "score_forms", "side_forms", "source_value"]


def source_value(src: str, gated: bool = False):
    """``(tensor-form factor, right-form value, skip_ln)`` of a source; factor None = a state.

    ``gated``: the MLPs are gated, so ``b_in`` is added after the gate (``𝟙 b_in W_out``)."""
    node = parse_node(src)
    if src == "embed":
        return tp(ID, Mat("W_E")), mul(TOKENS, Mat("W_E")), False
    if src == "pos":
        return tp(ID, Mat("W_pos")), Mat("W_pos"), False
    if node.kind != "bias":
        raise PathexpandError(f"{src!r} is not a source; sources are embed, pos and bias names")
    param, layer, head = node.param, node.layer, node.head
    if param == "b_V":
        b, w = Mat("b_V", (layer, head)), Mat("W_O", (layer, head))
        return tp(ID, mul(w, b)), mul(ONES, b, w), False
    if param == "b_in" and gated:
        b, w = Mat("b_in", (layer,)), Mat("W_out", (layer,))
        return tp(ID, mul(w, b)), mul(ONES, b, w), False
    if param == "b_in":
        state = Mat("B_in", (layer,))
        return None, state, False
    simple = {
        "b_O": ("b_O", (layer,), False),
        "b_out": ("b_out", (layer,), False),
        "ln1.b": ("b_ln1", (layer,), True),
        "ln2.b": ("b_ln2", (layer,), True),
        "ln_final.b": ("b_lnf", (), True),
        "b_U": ("b_U", (), False),
        "b_Q": ("b_Q", (layer, head), False),
        "b_K": ("b_K", (layer, head), False),
    }
    kind, index, skip = simple[param]
    b = Mat(kind, index)
    return tp(ID, b), mul(ONES, b), skip


def _walk(arch: Architecture, path: tuple[str, ...], sink):
    """Factors (application order), state and right-form value of a path up to its sink.

    ``sink`` is ``"logits"``, ``("input", layer)`` for a head's query/key input, or
    ``("input-after-ln", layer)`` for sources added after that ln1 (bias, shortformer pos).
    """
    factor, value, skip_ln = source_value(path[0], arch.gated_mlp)
    ops = [] if factor is None else [factor]
    state = value if factor is None else None
    for node_name in path[1:]:
        node = parse_node(node_name)
        l = node.layer
        if node.kind == "head":
            if arch.normed and not skip_ln:
                ops.append(tp(Mat("N_ln1", (l,)), Mat("W_ln1", (l,))))
                value = mul(Mat("N_ln1", (l,)), value, Mat("W_ln1", (l,)))
            a, w = Mat("A", (l, node.head)), Mat("W_OV", (l, node.head))
            ops.append(tp(a, w))
            value = mul(a, value, w)
        elif node.kind == "mlp":
            if arch.normed and not skip_ln:
                ops.append(tp(Mat("N_ln2", (l,)), Mat("W_ln2", (l,))))
                value = mul(Mat("N_ln2", (l,)), value, Mat("W_ln2", (l,)))
            m = Mat("M", (l,))
            ops.append(m)
            value = Apply(m, value)
        else:
            raise PathexpandError(f"{node_name!r} in path {path} is not a head or MLP")
        skip_ln = False
    if sink == "logits":
        if path[0] != "b_U":
            if arch.normed and not skip_ln:
                ops.append(tp(Mat("N_lnf"), Mat("W_lnf")))
                value = mul(Mat("N_lnf"), value, Mat("W_lnf"))
            ops.append(tp(ID, Mat("W_U")))
            value = mul(value, Mat("W_U"))
    elif sink[0] == "input" and arch.normed and not skip_ln:
        l = sink[1]
        ops.append(tp(Mat("N_ln1", (l,)), Mat("W_ln1", (l,))))
        value = mul(Mat("N_ln1", (l,)), value, Mat("W_ln1", (l,)))
    return ops, state, value


def _compose(ops, state):
    product = Mul(*reversed(ops)) if ops else ID
    if state is not None:
        product = Mul(product, state) if ops else state
    return strip_identity(product)


def logit_forms(arch: Architecture, path: tuple[str, ...]):
    """``(tensor form, right form)`` of the logit path ``path`` (source first)."""
    ops, state, value = _walk(arch, path, "logits")
    return _compose(ops, state), value


def side_forms(arch: Architecture, path: tuple[str, ...], layer: int):
    """``(tensor form, right form)`` of one side of a layer-``layer`` head's score input."""
    src = parse_node(path[0])
    after_ln = len(path) == 1 and (
        (path[0] == "pos" and arch.positional == "shortformer")
        or (src.kind == "bias" and src.layer == layer and src.param in ("ln1.b", "b_Q", "b_K"))
    )
    ops, state, value = _walk(arch, path, ("input-after-ln" if after_ln else "input", layer))
    return _compose(ops, state), value


def score_forms(arch: Architecture, head: str, query_path, key_path):
    """``(expr, right form)`` of the score term (query path, key path) of ``head``.

    Both sides tensor products ``P ⊗ M``: ``P_q ⊗ P_k ⊗ M_qᵀ W_QK M_k`` (the paper's form;
    ``W_Qᵀ b_K``, ``b_Qᵀ W_K`` or ``b_Qᵀ b_K`` for bias sides; rotary: ``M_qᵀ W_Qᵀ R_{j−i} W_K
    M_k``, R_{j−i} taken at the score's own entry (i, j)). A side through an MLP does not
    factor: then ``expr`` is the right form ``X_q W_QK (X_k)ᵀ`` (``X_q W_Q R_{j−i} W_Kᵀ X_kᵀ``).
    """
    layer, h = arch.check_head(head)
    middle_t, middle_r = qk_middle(arch, layer, h, query_path[0] == f"{head}.b_Q",
                                   key_path[0] == f"{head}.b_K")
    q_expr, q_val = side_forms(arch, query_path, layer)
    k_expr, k_val = side_forms(arch, key_path, layer)
    right = mul(q_val, *middle_r, Tr(k_val))
    sides = []
    for side_expr in (q_expr, k_expr):
        if not isinstance(side_expr, TensorProduct):
            return right, right
        sides.append(side_expr.args)
    (pq, mq), (pk, mk) = sides
    model = mul(transpose(mq), *middle_t, mk)
    return tp(pq, pk, model), right


def qk_middle(arch: Architecture, layer: int, h, q_bias: bool = False, k_bias: bool = False):
    """``(paper factors, right factors)`` between a score's query and key sides.

    ``W_QK`` (both forms), or with rotary positions ``W_Qᵀ R_{j−i} W_K`` (paper) and
    ``W_Q R_{j−i} W_Kᵀ`` (right). A bias side (``b_Q``, ``b_K``) is a d_head vector already:
    it drops its side's ``W_Q``/``W_K``.
    """
    wq, wk = Mat("W_Q", (layer, h)), Mat("W_K", (layer, h))
    if arch.positional != "rotary" and not (q_bias or k_bias):
        qk = Mat("W_QK", (layer, h))
        return (qk,), (qk,)
    rot = (ROTATION,) if arch.positional == "rotary" else ()
    paper = (() if q_bias else (wq.T,)) + rot + (() if k_bias else (wk,))
    right = (() if q_bias else (wq,)) + rot + (() if k_bias else (wk.T,))
    return paper, right
