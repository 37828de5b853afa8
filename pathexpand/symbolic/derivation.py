"""Step-by-step derivations of an expansion, the way a teacher writes them on the board.

``derive(expansion)`` returns ``Step``s (title, one or two sentences, a sympy expression):
the residual stream as a sum; what is frozen and why that is exact; each layer as
``Id + Σ_h A^h ⊗ W_OV^h``; the model as a product; the mixed-product rule; the product
expanded and grouped (the paper's equations for 0, 1, 2 layers); the terms named (or
summarised above ``summarize_above``, saying what was summarised); the counts; the remainder.
Score expansions add the query and key sides, the pairs grouped by composition kind and the
terms that cancel in the softmax. Notation, each form said once per derivation where it starts:
row form (TransformerLens's arrays) for the model's equations, then the paper's P ⊗ M (its
matrices) from the first tensor product on; score pairs through an MLP stay in row form. Layers
count from 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from sympy import Basic, Integer, Mul, Pow, Symbol

from ..errors import PathexpandError
from ..names import parse_node
from .forms import qk_middle
from .symbols import (
    D_HEAD,
    DOTS,
    ID,
    ONES,
    ROTATION,
    TOKENS,
    Apply,
    Deeper,
    Eqn,
    Hadamard,
    InHeads,
    InLayers,
    InPaths,
    InRange,
    Labeled,
    Later,
    Lines,
    Mat,
    Note,
    Prod,
    ProdOver,
    Softmax,
    Summary,
    SumOver,
    Terms,
    Tr,
    mul,
    strip_identity,
    tp,
    transpose,
)

__all__ = ["DEFAULT_SUMMARIZE_ABOVE", "Step", "derive"]

DEFAULT_SUMMARIZE_ABOVE = 64

# t is [pos, d_vocab] everywhere. Each derivation says each form once, where it starts: row form
# (TransformerLens's arrays) in its first step, the paper's P ⊗ M in the first step whose
# equations are tensor products; score pairs through an MLP stay in row form, and that is said there too.
_ROW_FORM = ("t is the one-hot token matrix [pos, d_vocab] (row i: the token at position i) and "
             "the matrices are TransformerLens's arrays, acting on rows: W_E [d_vocab, d_model], "
             "W_U [d_model, d_vocab], W_V [d_model, d_head], W_O [d_head, d_model]")


def _paper_form(arch, through_mlp: str | None = None) -> str:
    """How to read P ⊗ M (and what stays in row form): said once per derivation, where its
    equations start using it. ``through_mlp``: what the derivation has through an MLP, logit
    ``"paths"`` or score ``"pairs"`` (None: nothing)."""
    heads = arch.n_layers > 0
    text = ("From here on the paper's column form: P ⊗ M maps x [pos, d_model] to P x Mᵀ (P "
            "[pos, pos] mixes positions, M acts on each position's vector as a column), with the "
            "paper's matrices, the transposes of the row-form arrays: W_E [d_model, d_vocab], "
            "W_U [d_vocab, d_model]")
    if heads:
        text += (", W_Q, W_K, W_V [d_head, d_model], W_O [d_model, d_head], W_OV^h = W_O^h W_V^h "
                 "[d_model, d_model], biases columns")
    text += "; so (Id ⊗ W_E) t = t W_Eᵀ is the token embedding."
    if heads:
        same = ("W_Qᵀ R_{j−i} W_K (paper) = W_Q R_{j−i} W_Kᵀ (row form)" if arch.positional == "rotary"
                else "W_QK = W_Qᵀ W_K (paper) = W_Q W_Kᵀ (row form)")
        text += f" Only {same} is the same matrix in both."
    if through_mlp == "pairs":
        middle = "W_Q R_{j−i} W_Kᵀ" if arch.positional == "rotary" else "W_QK"
        gates = ("through an MLP's gates (through 𝓜, or from a b_in added before the gate)"
                 if arch.biases and not arch.gated_mlp else "through an MLP")
        text += (f" A pair with a side {gates} stays in row form (𝓜 does not factor): "
                 f"X_q {middle} X_kᵀ, each side X [pos, d_model] in the row-form arrays (t W_E …).")
    elif through_mlp == "paths":
        text += " A path through an MLP is a product of such maps and 𝓜, which does not factor."
    return text


_SOFTMAX_STAR = ("softmax* is the paper's causally masked softmax: row i of softmax*(S) is exp(S_ij) "
                 "divided by the sum of exp(S_ij') over j' ≤ i at the keys j ≤ i, and 0 at the "
                 "later keys j > i, so a query sees only itself and earlier positions and each "
                 "row of A sums to one.")


@dataclass(frozen=True)
class Step:
    """One step: a short ``title``, one or two sentences of ``text``, a sympy ``expr``."""

    title: str
    text: str
    expr: Basic


def derive(expansion, *, summarize_above: int = DEFAULT_SUMMARIZE_ABOVE) -> list[Step]:
    """The ordered derivation steps of a logit or score expansion.

    Groups of more than ``summarize_above`` terms are summarised (``Σ over 144 heads``, with
    the exact count and the first term), never silently cut.
    """
    if isinstance(summarize_above, bool) or not isinstance(summarize_above, int) or summarize_above < 0:
        raise PathexpandError(
            f"summarize_above must be a non-negative int (largest group listed term by term), "
            f"got {summarize_above!r}"
        )
    if expansion.target == "logits":
        return _logit_steps(expansion, summarize_above)
    return _score_steps(expansion, summarize_above)


# --- small builders ---------------------------------------------------------------------------
def _m(family, *index, transposed=False):
    return Mat(family, index, transposed)


def _sym(name: str):
    """A generic non-commutative placeholder (``A``, ``B``, ``b`` in general statements)."""
    return Symbol(name, commutative=False)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _product_of_counts(arch, layers) -> Basic:
    """``(1 + H_0)(1 + H_1)`` (``2 (1 + H_l)`` with MLPs, ``1 + H_l + 1`` with parallel
    attention and MLP) as written, equal factors as powers."""
    factors = []
    for h in (arch.n_heads[l] for l in layers):
        if arch.parallel_attn_mlp:
            factors.append(Terms(Integer(1), Integer(h), Integer(1)))
            continue
        f = Terms(Integer(1), Integer(h))
        factors.append(Prod(Integer(2), f) if arch.mlp else f)
    if not factors:
        return Integer(1)
    counts = Counter(factors)
    parts = [Pow(f, c, evaluate=False) if c > 1 else f for f, c in counts.items()]
    return parts[0] if len(parts) == 1 else Prod(*parts)


def _squared(expr) -> Basic:
    """``expr²`` as written: ``(1 + 2)²`` squared is ``(1 + 2)⁴``."""
    if isinstance(expr, Pow):
        return Pow(expr.base, expr.exp * 2, evaluate=False)
    if isinstance(expr, Prod):
        return Prod(*(_squared(f) for f in expr.args))
    return Pow(expr, 2, evaluate=False) if expr != 1 else expr


def _norm_name(arch) -> str:
    return "RMSNorm" if arch.normalization == "RMS" else "LayerNorm"


def _a_norm(arch) -> str:
    """``a LayerNorm``, ``an RMSNorm``."""
    return "an RMSNorm" if arch.normalization == "RMS" else "a LayerNorm"


def _gqa_sentence(arch) -> str:
    """What grouped-query attention shares, and that names stay per query head."""
    n = arch.n_kv_heads
    if n == 1:
        shared = ("With multi-query attention one key/value head per layer is shared by all its "
                  "query heads: every query head h reads with the layer's one W_K and W_V, "
                  "W_K^{g(h)} and W_V^{g(h)} with g(h) = 0")
    else:
        shared = (f"With grouped-query attention the {n} key/value heads of a layer are shared "
                  f"by groups of H_l/{n} query heads: query head h reads with W_K^{{g(h)}} and "
                  f"W_V^{{g(h)}}, g(h) = ⌊h / (H_l/{n})⌋")
    return (shared + " (stored once, not repeated). Names and terms stay per query head: "
            "W_OV^h = W_V^{g(h)} W_O^h, and W_K^h, W_V^h mean the weights of h's group.")


def _norm_op(arch, which: str, layer=None):
    """The (not frozen) norm ``LN1^l``/``RMS1^l``, ``LN2``, ``LNf``: ``which`` is 1, 2 or f."""
    family = ("RMS" if arch.normalization == "RMS" else "LN") + which
    return _m(family) if layer is None else _m(family, layer)


def _ln(arch, which: str, layer=None):
    """``(N, W)`` of a frozen norm, LayerNorm or RMSNorm (``(None, None)`` without one)."""
    if not arch.normed:
        return None, None
    if which == "lnf":
        return _m("N_lnf"), _m("W_lnf")
    return _m(f"N_{which}", layer), _m(f"W_{which}", layer)


def _unembed(arch):
    n, w = _ln(arch, "lnf")
    return tp(n or ID, mul(_m("W_U"), *([w] if w is not None else [])))


def _head_factor(arch, head_index, layer_index):
    """``A^h N^l ⊗ W_OV^h W^l`` (LayerNorm factors only when present)."""
    n, w = _ln(arch, "ln1", layer_index)
    pos = mul(_m("A", *head_index), *([n] if n is not None else []))
    model = mul(_m("W_OV", *head_index), *([w] if w is not None else []))
    return tp(pos, model)


def _mlp_factor(arch, layer_index):
    n, w = _ln(arch, "ln2", layer_index)
    op = _m("M", layer_index)
    return op if n is None else Mul(op, tp(n, w))


def _layer_map(arch, layer, head_var="h"):
    """``F^l``: ``(Id + 𝓜^l)(Id + Σ_{h∈H_l} A^h ⊗ W_OV^h)`` in the paper's notation;
    ``Id + Σ_{h∈H_l} A^h ⊗ W_OV^h + 𝓜^l`` with parallel attention and MLP."""
    heads = SumOver(_head_factor(arch, (head_var,), layer), InHeads(head_var, [layer]))
    if arch.parallel_attn_mlp:
        return Terms(tp(ID, ID), heads, _mlp_factor(arch, layer))
    attn = Terms(tp(ID, ID), heads)
    if not arch.mlp:
        return attn
    return Mul(Terms(tp(ID, ID), _mlp_factor(arch, layer)), attn)


def _chain(arch, head_vars, src_model, *, unembed=True, dotted_after=None):
    """Tensor form of an attention-only path through generic heads (latest first)."""
    pos, model = [], []
    if unembed:
        n, w = _ln(arch, "lnf")
        pos += [n] if n is not None else []
        model += [_m("W_U")] + ([w] if w is not None else [])
    for i, v in enumerate(head_vars):
        if dotted_after is not None and i == dotted_after:
            pos.append(DOTS)
            model.append(DOTS)
        n, w = _ln(arch, "ln1", f"l_{v}")
        pos += [_m("A", v)] + ([n] if n is not None else [])
        model += [_m("W_OV", v)] + ([w] if w is not None else [])
    model.append(src_model)
    return tp(mul(*pos), mul(*model))


def _node_chain(arch, node_vars, src_model, *, dotted_after=None):
    """``(N_f ⊗ W_U W_f) 𝒪^{n_d} ⋯ 𝒪^{n_1} (Id ⊗ src)`` for models with MLPs."""
    ops = [_unembed(arch)]
    for i, v in enumerate(node_vars):
        if dotted_after is not None and i == dotted_after:
            ops.append(DOTS)
        ops.append(_m("O", v))
    ops.append(tp(ID, src_model))
    return strip_identity(Mul(*ops))


def _depth_vars(d: int) -> list[str]:
    return ["h"] if d == 1 else [f"h_{i}" for i in range(d, 0, -1)]


def _all_layers_index(arch, var):
    return InHeads(var, list(range(arch.n_layers)))


# --- logits ---------------------------------------------------------------------------------
def _logit_steps(exp, summarize_above) -> list[Step]:
    arch = exp.arch
    steps = [_residual_step(arch)]
    if arch.n_layers or arch.normed:
        steps.append(_freeze_step(arch, None))
    if arch.n_layers == 0:
        steps.append(_bigram_step(arch))
    else:
        steps += [
            _layer_step(arch),
            _product_step(arch),
            _mixed_step(arch),
            _grouped_step(arch),
        ]
        if arch.n_layers == 1:
            steps.append(_circuits_step(arch))
    steps.append(_listing_step(exp, summarize_above))
    steps.append(_logit_count_step(exp))
    if exp.n_cut:
        steps.append(_remainder_step(exp))
    return steps


def _residual_step(arch, upto: int | None = None) -> Step:
    L = arch.n_layers if upto is None else upto
    x = lambda i: _m("x", i)
    x0 = mul(TOKENS, _m("W_E"))
    rows = [Eqn(x(0), Terms(x0, _m("W_pos")) if arch.positional == "standard" else x0)]
    if L:
        x_l = _m("x", "l")
        head_in = Apply(_norm_op(arch, "1", "l"), x_l) if arch.normed else x_l
        if arch.biases:
            head = mul(_m("A", "h"), Terms(mul(head_in, _m("W_V", "h")), mul(ONES, _m("b_V", "h"))),
                       _m("W_O", "h"))
        else:
            head = mul(_m("A", "h"), head_in, _m("W_OV", "h"))
        attn = [x_l, SumOver(head, InHeads("h", ["l"]))]
        if arch.biases:
            attn.append(mul(ONES, _m("b_O", "l")))
        if arch.parallel_attn_mlp:
            mlp_in = Apply(_norm_op(arch, "2", "l"), x_l) if arch.normed else x_l
            rows.append(Eqn(_m("x", "l+1"), Terms(*attn, Apply(_m("MLP", "l"), mlp_in))))
        elif arch.mlp:
            mid = _m("x_mid", "l")
            rows.append(Eqn(mid, Terms(*attn)))
            mlp_in = Apply(_norm_op(arch, "2", "l"), mid) if arch.normed else mid
            rows.append(Eqn(_m("x", "l+1"), Terms(mid, Apply(_m("MLP", "l"), mlp_in))))
        else:
            rows.append(Eqn(_m("x", "l+1"), Terms(*attn)))
    if upto is None:
        final = Apply(_norm_op(arch, "f"), x(L)) if arch.normed else x(L)
        out = mul(final, _m("W_U"))
        rows.append(Eqn(_m("logits"), Terms(out, mul(ONES, _m("b_U"))) if arch.biases else out))
    said = "" if upto is not None else " (TransformerLens's right-multiplying convention: " + _ROW_FORM + ")"
    parts = ["In row form" + said + " "  # a score derivation says the row form in its first step
             "the residual stream x_l [pos, d_model] starts as the token embedding"
             + (" plus the positional embedding" if arch.positional == "standard" else "")]
    if L:
        parts.append("every head adds A^h (its input) W_V^h W_O^h (W_OV = W_V W_O)"
                     + (", every MLP its output" if arch.mlp else "")
                     + (f", read through {_a_norm(arch)}" if arch.normed else ""))
        if arch.gated_mlp:
            parts.append("a gated MLP writes (act(x W_gate) ⊙ x W_in"
                         + (" + b_in) W_out + b_out" if arch.biases else ") W_out"))
        if arch.parallel_attn_mlp:
            parts.append("with parallel attention and MLP a layer's MLP reads the same stream "
                         "x_l as its heads, not their output")
    if arch.positional == "shortformer":
        parts.append("shortformer positions are added only to each head's query and key "
                     "inputs, never to the stream")
    if arch.positional == "rotary":
        parts.append("rotary positions never enter the stream: each head rotates its queries "
                     "and keys by their position instead, so no positional embedding is "
                     "added to x_0")
    text = "; ".join(parts) + ". So the final stream is a sum of everything ever written to it."
    if arch.grouped and L:
        text += " " + _gqa_sentence(arch)
    return Step("The residual stream is a sum", text, Lines(*rows))


def _freeze_step(arch, layer: int | None) -> Step:
    scope = "every head" if layer is None else f"every head before layer {layer}"
    frozen, rows = [], []
    sentences = []
    if arch.n_layers:
        frozen.append(f"the attention pattern A^h of {scope}")
        rows.append(Eqn(_m("A", "h"), Softmax(_m("S", "h"))))
        if layer is None:  # score derivations define softmax* in their first step
            sentences.append("A^h [pos, pos] is the softmax* of the head's attention scores "
                             "S^h [pos, pos]; " + _SOFTMAX_STAR)
    if arch.normed:
        rms = arch.normalization == "RMS"
        frozen.append("each position's RMSNorm scale rms" if rms else "each position's LayerNorm scale σ")
        x = _m("x")
        if arch.n_layers:
            n, w = _ln(arch, "ln1", "l")
            op, b = _norm_op(arch, "1", "l"), _m("b_ln1", "l")
        else:
            (n, w), op, b = _ln(arch, "lnf"), _norm_op(arch, "f"), _m("b_lnf")
        rhs = mul(n, x, w)
        rows.append(Eqn(Apply(op, x), Terms(rhs, mul(ONES, b)) if arch.layernorm and arch.biases else rhs))
        if rms:
            sentences.append(
                "A frozen RMSNorm x/rms(x) · w is a position-wise scaling: N = diag(1/rms) "
                "scales the positions and W_ln = diag(w) weights, i.e. N ⊗ W_ln in the paper's "
                "notation of the next step (diag(w) is its own transpose); unlike LayerNorm it does not centre and has no bias, so it adds no "
                "source (the same for ln2 and ln_final)."
            )
        else:
            sentences.append(
                "A frozen LayerNorm is a position-wise scaling after centring: N = diag(1/σ) "
                "scales the positions, W_ln = C diag(w) centres (C = I − 11ᵀ/d_model) and "
                "weights, i.e. N ⊗ W_ln in the paper's notation of the next step (where W_ln, like "
                "every weight, stands for its transpose, diag(w) C)"
                + ("; its bias b becomes a new source" if arch.biases else "")
                + " (the same for ln2 and ln_final)."
            )
    if arch.mlp:
        gated = arch.gated_mlp
        frozen.append("each MLP neuron's gate g = act(x W_gate)" if gated
                      else "each MLP neuron's gate g = act(pre)/pre")
        x = _m("x")
        parts = [Apply(_m("M", "l"), x)]
        if arch.biases:
            b_in = mul(ONES, _m("b_in", "l"), _m("W_out", "l")) if gated else _m("B_in", "l")
            parts += [b_in, mul(ONES, _m("b_out", "l"))]
        rows.append(Eqn(Apply(_m("MLP", "l"), x), Terms(*parts) if len(parts) > 1 else parts[0]))
        if gated:
            rows.append(Eqn(_m("G", "l"), Apply(_m("act"), mul(x, _m("W_gate", "l")))))
        rows.append(Eqn(Apply(_m("M", "l"), x), mul(Hadamard(mul(x, _m("W_in", "l")), _m("G", "l")),
                                                    _m("W_out", "l"))))
        if arch.biases and not gated:
            rows.append(Eqn(_m("B_in", "l"), mul(Hadamard(mul(ONES, _m("b_in", "l")), _m("G", "l")),
                                                 _m("W_out", "l"))))
        if gated:
            sentences.append(
                "A gated MLP computes (act(x W_gate) ⊙ x W_in"
                + (" + b_in) W_out + b_out" if arch.biases else ") W_out")
                + "; with the gate G = act(x W_gate) frozen (one value per position and neuron, W_gate is read "
                "only through it) it is the position-wise linear map 𝓜, W_in diag(g_i) W_out at "
                "position i"
                + (", and its b_in, added after the gate, is the constant row 𝟙 b_in W_out"
                   if arch.biases else "")
                + ". 𝓜 does not factor into position ⊗ model, because every position has its "
                "own gates (𝓜 = Σ_n diag(g_n) ⊗ w_out,n w_in,nᵀ), so it keeps its own "
                "operator symbol."
            )
        else:
            sentences.append(
                "A frozen MLP is the position-wise linear map 𝓜 (G holds the gates); it does not "
                "factor into position ⊗ model, because every position has its own gates "
                "(𝓜 = Σ_n diag(g_n) ⊗ w_out,n w_in,nᵀ), so it keeps its own operator symbol."
            )
    if arch.biases:
        rows.append(Eqn(mul(_m("A", "h"), ONES), ONES))
        sentences.append("Rows of A sum to one (A 𝟙 = 𝟙), so a head's value bias arrives as the "
                         "constant row 𝟙 b_V W_O whatever the pattern.")
    what = ", ".join(frozen[:-1]) + (" and " if len(frozen) > 1 else "") + frozen[-1]
    text = (
        f"Record {what} from one forward pass on the input and hold them fixed. What is left "
        "is affine in the sources, and it is exact for that input: the frozen values are the "
        "ones this input produces, so the frozen model gives the model's own output there. "
        + " ".join(sentences)
    )
    return Step("Freeze the nonlinearities", text.strip(), Lines(*rows))


def _bigram_step(arch) -> Step:
    rhs = strip_identity(Mul(_unembed(arch), tp(ID, _m("W_E"))))
    rows = [Eqn(_m("T"), rhs)]
    if not arch.normed:
        rows.append(Eqn(_m("T"), mul(_m("W_U"), _m("W_E"))))
    text = (_paper_form(arch) + " With no layers the only path is direct: each position's "
            "logits come from its own token through W_U W_E, the bigram statistics"
            + (" (positions add W_U W_pos)" if arch.positional == "standard" else "") + ": "
            "(Id ⊗ W_U W_E) t = t (W_U W_E)ᵀ, and W_U W_E [d_vocab, d_vocab] has the logit of "
            "token b after token a at entry (b, a).")
    return Step("Zero layers: bigram statistics", text, Lines(*rows))


def _layer_step(arch) -> Step:
    rows = [Eqn(_m("F", "l"), _layer_map(arch, "l"))]
    text = (_paper_form(arch, "paths" if arch.mlp else None)
            + " A head is A^h ⊗ W_OV^h, so a layer adds its heads to the identity")
    if arch.normed:
        text += ", each read through N^l ⊗ W^l_ln1"
    if arch.parallel_attn_mlp:
        text += ("; its MLP adds 𝓜^l, which is position-wise but not a tensor product. With "
                 "parallel attention and MLP the MLP reads the layer's input, not its heads' "
                 "output, so the layer is one sum, Id + heads + MLP, not a product of two "
                 "factors: no path goes from a head to the MLP of its own layer")
    elif arch.mlp:
        text += "; its MLP adds 𝓜^l, which is position-wise but not a tensor product"
    return Step("Each layer is Id + Σ_h A^h ⊗ W_OV^h", text + ".", Lines(*rows))


def _product_step(arch) -> Step:
    L = arch.n_layers
    U = _unembed(arch)
    embed = tp(ID, _m("W_E"))
    Fs = [_m("F", l) for l in reversed(range(L))]
    rows = [Eqn(_m("T"), Mul(U, *Fs, embed))]
    if L <= 3:
        rows.append(Eqn(_m("T"), Mul(U, *[_layer_map(arch, l) for l in reversed(range(L))], embed)))
    else:
        rows.append(Eqn(_m("T"), Mul(U, ProdOver(_m("F", "l"), InLayers("l", L)), embed)))
    text = ("Composing the layers (latest on the left) between the embedding and the "
            "unembedding gives the map T from the tokens t to the logits.")
    if arch.positional == "standard":
        rows.append(Eqn(_m("T", "pos"), Mul(U, *Fs, tp(ID, _m("W_pos")))))
        text += " Positions take the same product with W_pos for W_E, acting on the position one-hots."
    elif arch.positional == "shortformer":
        text += (" Shortformer positions never enter the stream, so no logit path starts at "
                 "W_pos; they only shape the patterns A^h through the queries and keys.")
    elif arch.positional == "rotary":
        text += (" Rotary positions never enter the stream, so no logit path starts at a "
                 "positional embedding; they act only inside each head's score, through "
                 "W_Q R_{j−i} W_Kᵀ, and so only shape the frozen patterns A^h.")
    if arch.biases:
        b = _sym("b")
        rows.append(Eqn(_m("T", "b"), Mul(U, _m("F", ">b"), tp(ID, b))))
        text += (" Each bias b enters as the constant row 𝟙 b at its layer and passes only the "
                 "layers after it (F^{>b}); b_U is added at the end.")
    return Step("The model is a product of its layers", text, Lines(*rows))


def _mixed_step(arch) -> Step:
    A, B, C, D = (_sym(c) for c in "ABCD")
    rows = [Eqn(Prod(tp(A, B), tp(C, D)), tp(A * C, B * D))]
    if arch.n_layers >= 2 and arch.n_heads[0] and arch.n_heads[1]:
        f1 = tp(_m("A", 1, 0), _m("W_OV", 1, 0))
        f0 = tp(_m("A", 0, 0), _m("W_OV", 0, 0))
        rows.append(Eqn(Prod(f1, f0), Mul(f1, f0)))
    text = ("Multiplying the product out picks one term per layer (Id, or one head"
            + (", or the MLP" if arch.parallel_attn_mlp else "") + "); by the "
            "mixed-product rule each choice collapses into one tensor product: the attention "
            "patterns multiply on the position side, the weights on the model side.")
    if arch.mlp:
        text += (" A path through an MLP stays a product of operators (𝓜 does not factor), "
                 "still linear and still one term.")
    return Step("The mixed-product rule", text, Lines(*rows))


def _grouped_logits(arch, src_model):
    """Groups of the expansion by depth for one source (generic indexed sums)."""
    L = arch.n_layers
    groups = []
    if not arch.mlp:
        groups.append(strip_identity(_chain(arch, [], src_model)))
        top = L if L <= 4 else 2
        for d in range(1, top + 1):
            vars_ = _depth_vars(d)
            body = _chain(arch, vars_, src_model)
            if d == 1:
                groups.append(SumOver(body, _all_layers_index(arch, "h")))
            elif d == L:
                groups.append(SumOver(body, *[InHeads(v, [L - 1 - i]) for i, v in enumerate(vars_)]))
            else:
                groups.append(SumOver(body, Later(*vars_)))
        if L > 4:
            body = _chain(arch, ["h_d", "h_1"], src_model, dotted_after=1)
            groups.append(SumOver(body, InRange("d", 3, L), Later("h_d", "h_1", dotted=True)))
        return groups
    top_depth = L if arch.parallel_attn_mlp else 2 * L  # parallel: at most one node per layer
    top = top_depth if top_depth <= 4 else 3
    groups.append(strip_identity(_node_chain(arch, [], src_model)))
    for d in range(1, top + 1):
        vars_ = ["n"] if d == 1 else [f"n_{i}" for i in range(d, 0, -1)]
        body = _node_chain(arch, vars_, src_model)
        groups.append(SumOver(body, Later(*vars_)) if d > 1 else SumOver(body, InPaths("n", False)))
    if top_depth > top:
        body = _node_chain(arch, ["n_d", "n_1"], src_model, dotted_after=1)
        groups.append(SumOver(body, InRange("d", top + 1, top_depth), Later("n_d", "n_1", dotted=True)))
    return groups


def _node_definitions(arch):
    n2, w2 = _ln(arch, "ln2", "m")
    return [
        Eqn(_m("O", "h"), _head_factor(arch, ("h",), "l_h")),
        Eqn(_m("O", "m"), _m("M", "m") if n2 is None else Mul(_m("M", "m"), tp(n2, w2))),
    ]


def _grouped_step(arch) -> Step:
    rows = []
    if arch.mlp:
        rows += _node_definitions(arch)
    rows.append(Eqn(_m("T"), Terms(*_grouped_logits(arch, _m("W_E")))))
    if arch.mlp:
        per = ("at most one per layer (a head or the MLP: they read the same stream)"
               if arch.parallel_attn_mlp else "one per stage")
        text = ("Every path is a sequence of nodes n (heads h with 𝒪^h = A^h ⊗ W_OV^h, MLPs m "
                f"with 𝒪^m = 𝓜^m), {per}, in forward order (n_2 ≻ n_1: n_2 comes later). "
                "Grouped by the number of nodes passed: the direct path, single nodes, and "
                "compositions (virtual heads when two heads follow each other).")
    else:
        text = ("Grouped by the number of heads passed: the direct path (bigram statistics), "
                "single heads A^h ⊗ W_U W_OV^h W_E, and virtual heads — a head moving what an "
                "earlier head wrote (V-composition; h_2 ≻ h_1: h_2 sits in a later layer). "
                "Layers count from 0: the paper's H_1, H_2 are H_0, H_1 here.")
    if arch.normed:
        text += (f" With {_norm_name(arch)} each head h reads through its layer's "
                 "N^{l_h} ⊗ W^{l_h}_ln1.")
    path_op = (Mul(_unembed(arch), _m("O", "p"), tp(ID, _m("W_pos")))
               if arch.mlp else _chain(arch, ["p"], _m("W_pos")))
    if arch.positional == "standard":
        rows.append(Eqn(_m("T", "pos"), SumOver(strip_identity(path_op), InPaths("p", False))))
        text += (" Positions run over the same paths p (A^p, W_OV^p: the products along p).")
    if arch.biases:
        b = _sym("b")
        op = (Mul(_unembed(arch), _m("O", "p"), tp(ID, b)) if arch.mlp
              else _chain(arch, ["p"], b))
        rows.append(Eqn(_m("T", "b"), SumOver(strip_identity(op), InPaths("p", False))))
        if not arch.normed and not arch.mlp:
            text += (" A bias acts on the ones column 𝟙 and A^p 𝟙 = 𝟙, so its patterns drop "
                     "out: a bias path is the constant row 𝟙 (W_U W_OV^p b)ᵀ.")
        else:
            text += (" A bias acts on the ones column 𝟙; its path is constant along positions "
                     f"only while no {_norm_name(arch)} scale or MLP gate touches it.")
    return Step("The product expanded, grouped and named", text, Lines(*rows))


def _circuits_step(arch) -> Step:
    h = ("h",)
    rotary = arch.positional == "rotary"
    qk = (mul(_m("W_Q", *h, transposed=True), ROTATION, _m("W_K", *h)) if rotary
          else _m("W_QK", *h))
    rows = [
        Eqn(_m("A", *h), Softmax(mul(TOKENS, _m("W_E", transposed=True), qk, _m("W_E"), TOKENS.T))),
        Labeled("OV circuit", mul(_m("W_U"), _m("W_OV", *h), _m("W_E"))),
        Labeled("QK circuit", mul(_m("W_E", transposed=True), qk, _m("W_E"))),
    ]
    norm = _norm_name(arch)
    if rotary:
        text = (f"With one layer ({norm} ignored; positions enter only through the rotation) "
                "the pattern is A^h = softmax*(t W_Eᵀ W_Q^hᵀ R_{j−i} W_K^h W_E tᵀ), R_{j−i} taken "
                "at each entry (i, j): the QK circuit "
                "W_Eᵀ W_Q^hᵀ R_{j−i} W_K^h W_E, a function of the offset j − i, decides which "
                "earlier token a position attends to, and how far back; the OV circuit "
                "W_U W_OV^h W_E what attending to it does to the logits. Together they are "
                "skip-trigrams: [a] … [b] → [c].")
    else:
        text = (f"With one layer (positions and {norm} ignored, as in the paper) the pattern is "
                "A^h = softmax*(t W_Eᵀ W_QK^h W_E tᵀ): the QK circuit W_Eᵀ W_QK^h W_E decides which "
                "earlier token a position attends to, the OV circuit W_U W_OV^h W_E what attending "
                "to it does to the logits. Together they are skip-trigrams: [a] … [b] → [c].")
    text += (" Both circuits are [d_vocab, d_vocab], in the paper's matrices" + (
        " (the QK circuit at each offset)." if rotary else
        ": the QK circuit's "
             "entry (a, b) is the score of a query token a for a key token b (in row form it is "
             "W_E W_QK W_Eᵀ, the same matrix), the OV circuit's entry (c, b) the logit of c that "
             "attending to token b adds (row form: its transpose, W_E W_OV W_U). With t "
             "[pos, d_vocab] the scores are t W_Eᵀ W_QK W_E tᵀ [pos, pos]; the paper writes "
             "tᵀ W_Eᵀ W_QK W_E t with a column per position, i.e. its t is our tᵀ."))
    return Step("One layer: QK and OV circuits (skip-trigrams)", text, Lines(*rows))


def _group_rows(groups, summarize_above):
    """Listing rows: every term of small groups, a ``Summary`` for large ones."""
    rows = []
    for what, selection in groups:
        n = selection.n_terms
        if n == 0:
            continue
        if n <= summarize_above:
            rows += [Labeled(t.name, t.expr) for t in selection]
        else:
            first = next(iter(selection))
            rows.append(Summary(n, what, first.name, first.expr))
    return rows


def _depth_word(arch, d: int, or_more: bool = False) -> str:
    if d == 0:
        return "direct paths"
    more = " or more" if or_more else ""
    if not arch.mlp:
        return "heads" if d == 1 else f"virtual heads through {d}{more} heads"
    return "paths through 1 head or MLP" if d == 1 else f"paths through {d}{more} heads/MLPs"


def _listing_step(exp, summarize_above) -> Step:
    arch = exp.arch
    groups = []
    top = 2 * arch.n_layers if exp.max_depth is None else min(exp.max_depth, 2 * arch.n_layers)
    # depths 0, 1, 2, 3 one by one, deeper paths as one group
    depths = [((d, d), d) for d in range(min(top, 3) + 1)]
    if top >= 4:
        depths.append(((4, None), 4))
    if exp.target == "logits":
        for src in ("embed", "pos"):
            if src in exp.sources:
                for rng, d in depths:
                    label = _depth_word(arch, d, rng[1] is None) + ("" if src == "embed" else f" from {src}")
                    groups.append((label, exp.filter(source=src, depth=rng)))
        if arch.biases:
            for rng, d in depths:
                word = f"of depth {d}" if rng[1] is not None else f"of depth {d} or more"
                groups.append((f"bias terms {word}", exp.filter(bias=True, depth=rng)))
    else:
        for kind in ("direct", "q_composition", "k_composition", "qk_composition"):
            for bias in (False, True):
                word = {"direct": "direct", "q_composition": "Q-composition",
                        "k_composition": "K-composition", "qk_composition": "Q&K-composition"}[kind]
                groups.append((f"{word} terms" + (" with a bias side" if bias else ""),
                               exp.filter(kind=kind, bias=bias)))
    rows = _group_rows(groups, summarize_above)
    if exp.remainder is not None:
        rows.append(Labeled(exp.remainder.name, exp.remainder.expr))
    n = exp.n_terms
    summarised = any(isinstance(r, Summary) for r in rows)
    if exp.target == "logits":
        text = ("Each term is named by its path, latest node first: L1H0∘L0H1 is L0H1 read by "
                "L1H0; other sources are prepended (pos:L1H0).")
    else:
        text = ("Each term is named by its query side and key side, each named like a logit "
                "path (q:L0H1 · k:direct).")
        if arch.mlp and exp.layer:
            text += (" A term with a side through an MLP is in row form (N t W_E …), the others "
                     "in the paper's P_q ⊗ P_k ⊗ M form (W_Eᵀ … W_E).")
    text += f" {_plural(n, 'term')} in all"
    text += (f"; groups of more than {summarize_above} are summarised with their exact count "
             "and first term (iterate the expansion to list them)." if summarised else ".")
    return Step(f"The {_plural(n, 'term')}", text, Lines(*rows))


def _logit_count_step(exp) -> Step:
    arch = exp.arch
    per_source = arch.n_logit_paths()
    count = (Eqn(_product_of_counts(arch, range(arch.n_layers)), Integer(per_source))
             if arch.n_layers else Integer(per_source))
    rows = [Labeled("paths per source entering before layer 0", count)]
    for src in exp.sources:
        if src in ("embed", "pos"):
            rows.append(Labeled(f"terms from {src}", Integer(exp.count(source=src))))
    if arch.biases:
        rows.append(Labeled("bias terms (b_U included)", Integer(exp.count(bias=True))))
    if exp.n_cut:
        rows.append(Labeled(f"paths deeper than {exp.max_depth}, in the remainder", Integer(exp.n_cut)))
    rows.append(Labeled("terms in all", Integer(exp.n_terms)))
    if arch.parallel_attn_mlp:
        rule = ("Each layer offers 1 + H_l + 1 choices — skip it, pass one of its H_l heads, or "
                "pass its MLP (never a head and then its own layer's MLP: both read the same "
                "stream) — so Π_l (2 + H_l) paths per source")
    elif arch.mlp:
        rule = ("Each layer offers 2(1 + H_l) choices — skip its heads or pass one of its H_l, "
                "then pass its MLP or not — so Π_l 2(1 + H_l) paths per source")
    else:
        rule = ("Each layer offers 1 + H_l choices — skip it or pass one of its H_l heads — so "
                "Π_l (1 + H_l) paths per source")
    text = (rule + "; sources entering later have fewer. The counts come from this formula, "
            "not from listing paths.")
    return Step("Counting the paths", text, Lines(*rows))


def _remainder_step(exp) -> Step:
    K = exp.max_depth
    what = "score pairs with a side" if exp.target != "logits" else "paths"
    rows = [Eqn(_m("R", K), SumOver(_m("T", "p"), Deeper("p", K)))]
    nodes = ("head" if K == 1 else "heads") if not exp.arch.mlp else (
        "head or MLP" if K == 1 else "heads and MLPs")
    text = (f"The {exp.n_cut} {what} through more than {K} {nodes} are not "
            "listed; one remainder term R holds their sum, so the terms still add up exactly "
            "(numerically R is the full value minus the listed terms).")
    return Step("The remainder", text, Lines(*rows))


# --- scores ---------------------------------------------------------------------------------
def _score_steps(exp, summarize_above) -> list[Step]:
    arch, layer = exp.arch, exp.layer
    steps = [_score_def_step(exp), _residual_step(arch, upto=layer)]
    if layer:
        steps.append(_freeze_step(arch, layer))
    steps += [_sides_step(exp), _pairs_step(exp), _score_grouped_step(exp),
              _invariance_step(exp, summarize_above), _listing_step(exp, summarize_above),
              _score_count_step(exp)]
    if exp.n_cut:
        steps.append(_remainder_step(exp))
    return steps


def _head_idx(exp):
    return exp.arch.check_head(exp.target)


def _score_def_step(exp) -> Step:
    arch = exp.arch
    l, h = _head_idx(exp)
    x = _m("x", l)
    X = _m("X")
    inp = Apply(_norm_op(arch, "1", l), x) if arch.normed else x
    inp = Terms(inp, _m("W_pos")) if arch.positional == "shortformer" else inp
    rows = [Eqn(X, inp)]
    scale = Pow(D_HEAD, Integer(-1) / 2)
    if arch.positional == "rotary":
        rows.append(Eqn(_m("S", l, h), Mul(scale, _m("C", l, h))))
        rows += _rotary_rows(arch, l, h)
    elif arch.biases:
        q = Terms(mul(X, _m("W_Q", l, h)), mul(ONES, _m("b_Q", l, h)))
        k = Terms(mul(X, _m("W_K", l, h)), mul(ONES, _m("b_K", l, h)))
        rows.append(Eqn(_m("S", l, h), Mul(scale, mul(q, Tr(k)))))
        rows.append(Eqn(_m("C", l, h), Terms(
            mul(X, _m("W_QK", l, h), X.T), mul(X, _m("W_Q", l, h), _m("b_K", l, h, transposed=True), ONES.T),
            mul(ONES, _m("b_Q", l, h), _m("W_K", l, h, transposed=True), X.T),
            mul(ONES, _m("b_Q", l, h), _m("b_K", l, h, transposed=True), ONES.T))))
    else:
        rows.append(Eqn(_m("S", l, h), Mul(scale, mul(X, _m("W_QK", l, h), X.T))))
    text = (f"Head {exp.target} attends with A = softmax*(S); its score S is bilinear in the "
            f"head's input X (the stream x_{l}"
            + (" through ln1" if arch.normed else "")
            + (", plus W_pos for shortformer positions" if arch.positional == "shortformer" else "")
            + "), once as query and once as key. C = √d_head S"
            + (" (the paper's C_QK) is what we expand." if not arch.biases else
               ", four bilinear pieces: the bias products are terms of their own.")
            + " " + _SOFTMAX_STAR + " In row form " + _ROW_FORM
            + ", W_Q and W_K [d_model, d_head]"
            + ("" if arch.positional == "rotary" else ", W_QK = W_Q W_Kᵀ [d_model, d_model]")
            + "; X is [pos, d_model] and S [pos, pos].")
    if arch.positional == "rotary":
        text += (" With rotary positions C has the entries C_ij = q_i k_jᵀ: the query at "
                 "position i (from X_i, row i of X) is turned by Θ_i and the key at j by Θ_j, "
                 "block rotations by the angles i·θ_m and j·θ_m, θ_m = "
                 "base^(−2m/d_rot), of pairs of the head's first d_rot dims (all of them, or "
                 "fewer with partial rotary; the rest is not turned). Rotations compose, Θ_i Θ_jᵀ = R_{j−i}, a rotation that depends "
                 "only on the offset j − i, so entry (i, j) pairs the two sides through "
                 "W_Q R_{j−i} W_Kᵀ instead of W_QK (b_Q and b_K are turned too). That is why "
                 "positions no longer enter the residual stream: no W_pos is added to x_0, and "
                 "every position dependence sits inside the score, as a function of j − i.")
    if arch.grouped:
        text += " " + _gqa_sentence(arch)
    return Step(f"The attention score of {exp.target}", text, Lines(*rows))


def _rotary_rows(arch, l, h) -> list:
    """``q_i = (X_i W_Q + b_Q) Θ_i``, ``k_j`` alike, ``Θ_i Θ_jᵀ = R_{j−i}`` and the entry
    ``q_i k_jᵀ`` through ``W_Q R_{j−i} W_Kᵀ`` (bias pieces as terms of their own)."""
    Xi, Xj = _m("X", "i"), _m("X", "j")
    Ti, Tj = _m("Theta", "i"), _m("Theta", "j")
    wq, wk, bq, bk = _m("W_Q", l, h), _m("W_K", l, h), _m("b_Q", l, h), _m("b_K", l, h)
    q = Terms(mul(Xi, wq), bq) if arch.biases else mul(Xi, wq)
    k = Terms(mul(Xj, wk), bk) if arch.biases else mul(Xj, wk)
    qk = mul(_m("q", "i"), _m("k", "j", transposed=True))
    rows = [
        Eqn(_m("q", "i"), mul(q, Ti)),
        Eqn(_m("k", "j"), mul(k, Tj)),
        Eqn(mul(Ti, Tj.T), ROTATION),
    ]
    pieces = []
    for qb, kb in ((False, False),) + (((False, True), (True, False), (True, True)) if arch.biases else ()):
        _, mid = qk_middle(arch, l, h, qb, kb)
        pieces.append(mul(bq if qb else Xi, *mid, bk.T if kb else Xj.T))
    rows.append(Eqn(qk, Terms(*pieces) if len(pieces) > 1 else pieces[0]))
    return rows


def _side_operator(exp, src_model, path_var="p"):
    """Tensor form of one side's paths from a source: sum over the earlier paths."""
    arch = exp.arch
    l, _ = _head_idx(exp)
    n, w = _ln(arch, "ln1", l)
    pre = tp(n or ID, w or ID)
    if arch.mlp:
        direct = strip_identity(Mul(pre, tp(ID, src_model)))
        deeper = strip_identity(Mul(pre, _m("O", path_var), tp(ID, src_model)))
        return [direct, SumOver(deeper, InPaths(path_var, True))]
    terms = [strip_identity(Mul(pre, tp(ID, src_model)))]
    if l == 1:
        body = strip_identity(Mul(pre, _head_factor(arch, (path_var,), 0), tp(ID, src_model)))
        terms.append(SumOver(body, InHeads(path_var, [0])))
    elif l >= 2:
        body = strip_identity(Mul(pre, tp(_m("A", path_var), _m("W_OV", path_var)), tp(ID, src_model)))
        terms.append(SumOver(body, InPaths(path_var, True)))
    return terms


def _sides_step(exp) -> Step:
    arch = exp.arch
    l, _ = _head_idx(exp)
    rows = [Eqn(_m("X", "embed"), Terms(*_side_operator(exp, _m("W_E"))))]
    text = (f"Expanding layers 0 … {l - 1} as for the logits, the head's input is a sum over "
            "paths p of the earlier layers, the same on the query and the key side"
            if l else "Layer 0 reads the embeddings directly")
    if arch.positional == "standard":
        rows.append(Eqn(_m("X", "pos"), Terms(*_side_operator(exp, _m("W_pos")))))
        text += "; positions take the same paths from W_pos"
    elif arch.positional == "shortformer":
        rows.append(Eqn(_m("X", "pos"), tp(ID, _m("W_pos"))))
        text += "; shortformer positions are added directly, after ln1, and travel no path"
    elif arch.positional == "rotary":
        text += ("; rotary positions are no source: they enter only at the head, through "
                 "R_{j−i} between the two sides")
    if arch.biases:
        text += ("; biases start their paths where they enter, and b_Q, b_K"
                 + (" (and the head's own ln1 bias)" if arch.layernorm else "")
                 + " are added at the head itself")
    if arch.normed:
        text += f"; the head's own ln1 scales every stream path by N^{l}"
    if l >= 2 or (l == 1 and arch.mlp):
        text += " (A^p, W_OV^p: products along p" + (", 𝒪^p with MLPs" if arch.mlp else "") + ")"
    text = _paper_form(arch, "pairs" if arch.mlp and l else None) + " " + text + "."
    return Step("Query and key inputs as sums of paths", text, Lines(*rows))


def _pairs_step(exp) -> Step:
    arch = exp.arch
    l, h = _head_idx(exp)
    Pq, Pk, Mk = _sym("P_{p_q}"), _sym("P_{p_k}"), _sym("M_{p_k}")
    MqT = _sym("M_{p_q}^T")
    paper, _ = qk_middle(arch, l, h)
    rows = [Eqn(_m("C", l, h), SumOver(tp(Pq, Pk, mul(MqT, *paper, Mk)),
                                        InPaths("p_q", False), InPaths("p_k", False)))]
    if arch.positional == "rotary":
        text = ("With a query path P_q ⊗ M_q and a key path P_k ⊗ M_k entry (i, j) of the "
                "score matrix is row i of P_q t M_qᵀ, times W_Qᵀ R_{j−i} W_K (the paper's W_Q, "
                "W_K: TransformerLens's W_Q R_{j−i} W_Kᵀ), times column j of M_k tᵀ P_kᵀ: the query path's patterns act on the rows (query positions), the "
                "key path's on the columns (key positions), and the rotation between them "
                "depends on the entry. "
                "In the paper's notation that is P_q ⊗ P_k ⊗ M_qᵀ W_Qᵀ R_{j−i} W_K M_k, read "
                "entry by entry (R_{j−i} at entry (i, j)), so C is a sum over pairs of paths.")
    else:
        text = ("A query path P_q ⊗ M_q gives the query side (P_q ⊗ M_q) t = P_q t M_qᵀ "
                "[pos, d_model], a key path P_k ⊗ M_k the key side P_k t M_kᵀ, so the pair's "
                "score matrix is P_q t M_qᵀ W_QK M_k tᵀ P_kᵀ [pos, pos]: the query path's patterns "
                "act on the rows (query positions), the key path's on the columns (key "
                "positions). In the paper's notation that is P_q ⊗ P_k ⊗ M_qᵀ W_QK M_k, so C is "
                "a sum over pairs of paths.")
    if arch.mlp and l:  # the notation step said the exception: pairs through an MLP stay in row form
        text += " A pair with a side through an MLP stays in row form, as said above."
    return Step("Pairs of paths", text, Lines(*rows))


def _score_grouped_step(exp) -> Step:
    arch = exp.arch
    l, h = _head_idx(exp)
    paper, right = qk_middle(arch, l, h)
    if arch.mlp:
        X = lambda v: _m("X", v)
        e = "emptyset"
        groups = [mul(X(e), *right, X(e).T)]
        if l:
            groups += [
                SumOver(mul(X("p_q"), *right, X(e).T), InPaths("p_q", True)),
                SumOver(mul(X(e), *right, X("p_k").T), InPaths("p_k", True)),
                SumOver(mul(X("p_q"), *right, X("p_k").T), InPaths("p_q", True), InPaths("p_k", True)),
            ]
    else:
        n, w = _ln(arch, "ln1", l)
        pre_pos = [n] if n is not None else []
        pre_model = [w] if w is not None else []

        def side(var):
            if var is None:
                return mul(*pre_pos), mul(*pre_model, _m("W_E"))
            if l == 1:
                n0, w0 = _ln(arch, "ln1", 0)
                return (mul(*pre_pos, _m("A", var), *([n0] if n0 is not None else [])),
                        mul(*pre_model, _m("W_OV", var), *([w0] if w0 is not None else []), _m("W_E")))
            return mul(*pre_pos, _m("A", var)), mul(*pre_model, _m("W_OV", var), _m("W_E"))

        def pair(qv, kv):
            (pq, mq), (pk, mk) = side(qv), side(kv)
            return tp(pq, pk, mul(transpose(mq), *paper, mk))

        if l == 1:  # the paper's layer-2 equation: sums over the heads of layer 0
            vq, vk, iq, ik = "h_q", "h_k", InHeads("h_q", [0]), InHeads("h_k", [0])
        else:
            vq, vk, iq, ik = "p_q", "p_k", InPaths("p_q", True), InPaths("p_k", True)
        groups = [pair(None, None)]
        if l:
            groups += [SumOver(pair(vq, None), iq), SumOver(pair(None, vk), ik),
                       SumOver(pair(vq, vk), iq, ik)]
    rows = [Eqn(_m("C", l, h), Terms(*groups))]
    others = [s for s in exp.sources if s != "embed"]
    if others:
        rows.append(Note(f"+ the same groups for every other pair of sources (query, key) from "
                         f"{', '.join(exp.sources[:6])}{', …' if len(exp.sources) > 6 else ''}"))
    node = "a head or an MLP" if arch.mlp else "a head"
    if not l:
        text = "Grouped by which side composes: only the direct term exists for a layer-0 head."
    else:
        text = (f"Grouped by which side composes, in the paper's order. A side composes when its "
                f"path passes at least one earlier node ({node}): direct terms have neither side "
                "composing, Q-composition terms only the query side, K-composition terms only "
                "the key side, Q&K-composition terms both. The paper's Q- and K-composition are "
                "head to head: a later head's query or key reading what an earlier head wrote.")
        if arch.mlp:
            text += (" With MLPs these groups also hold sides that pass only MLPs (composition "
                     "through an MLP, not the paper's kind); the counts say how many terms have a "
                     "head on each composing side.")
        else:
            text += " Here every node is a head, so every composing side passes a head."
        if arch.biases:
            text += (" An earlier head's value bias b_V is a source of its own (it arrives as the "
                     "row 𝟙 b_V W_O whatever the pattern), so a side that starts there does not "
                     "compose, though that head wrote it.")
        if arch.positional == "standard":
            text += (" Positions are a source like the embedding: a side from W_pos composes when "
                     "it passes a node.")
        elif arch.positional == "shortformer":
            text += (" Shortformer positions are added at the head itself and pass no node, so a "
                     "side from W_pos never composes.")
    return Step("Grouped by composition", text, Lines(*rows))


def _invariance_step(exp, summarize_above) -> Step:
    arch = exp.arch
    inv = exp.filter(softmax_invariant=True)
    n = inv.n_terms
    rows = []
    c, s = Symbol("c_i"), _sym("s_i")
    rows.append(Eqn(Softmax(Terms(s, Mul(c, ONES.T))), Softmax(s)))
    if arch.biases and not arch.normed and arch.positional != "rotary":
        rows.append(Eqn(mul(_m("A", "h"), ONES), ONES))
    rows += _group_rows([("softmax-invariant terms", inv)], summarize_above)
    text = ("A term whose key side is the same at every key position adds one constant c_i to "
            "query row i, and softmax*(s_i + c_i 𝟙ᵀ) = softmax*(s_i), also under the causal mask "
            "(the constant is shared by the unmasked entries). ")
    if arch.positional == "rotary":
        text += ("With rotary positions no key side is constant: even the key bias b_K is turned "
                 "by Θ_j, which changes with the key position j, so nothing cancels. ")
    else:
        text += ("That holds for the key bias b_K"
                 + (", the head's own ln1 bias" if arch.layernorm and arch.biases else "")
                 + (" and for bias rows 𝟙 b carried through heads only (A 𝟙 = 𝟙)"
                    if not arch.normed else "")
                 + ". ")
        if arch.normed:
            scale = "1/rms" if arch.normalization == "RMS" else "1/σ"
            text += (f"With {_norm_name(arch)} the key-side scale {scale} varies with the "
                     "position, so stream biases do not cancel. ")
    if arch.mlp:
        text += "MLP gates vary with the position, so nothing through an MLP cancels. "
    text += (f"{n} term{'s' if n != 1 else ''} cancel{'s' if n == 1 else ''} here"
             + ("" if n or arch.biases or arch.positional == "rotary"
                else " (no bias on the key side)") + ".")
    return Step("Terms that cancel in the softmax", text, Lines(*rows))


_ENUMERATE_AT_MOST = 100_000


def _head_to_head_rows(exp) -> list:
    """Of the Q-/K-/Q&K-composition terms, those with a head on each composing side (the
    paper's head-to-head composition; the rest compose through MLPs only)."""
    kinds = ("q_composition", "k_composition", "qk_composition")
    if exp.n_terms > _ENUMERATE_AT_MOST:
        return [Note(f"(head-to-head terms not counted: {exp.n_terms} terms are too many to list)")]
    counts = Counter()
    for t in exp:
        if t.is_remainder or t.kind not in kinds:
            continue
        q = any(parse_node(n).kind == "head" for n in t.query_nodes)
        k = any(parse_node(n).kind == "head" for n in t.key_nodes)
        counts[t.kind] += {"q_composition": q, "k_composition": k, "qk_composition": q and k}[t.kind]
    sides = {"q_composition": "on the query side", "k_composition": "on the key side",
             "qk_composition": "on both sides"}
    return [Labeled(f"{kind} terms with a head {sides[kind]}", Integer(counts[kind])) for kind in kinds]


def _score_count_step(exp) -> Step:
    arch = exp.arch
    l, _ = _head_idx(exp)
    one_side = math.isqrt(arch.n_score_pairs(exp.target))
    side = _product_of_counts(arch, range(l))
    rows = [
        Labeled("paths per side from a source entering before layer 0", Eqn(side, Integer(one_side))),
        Labeled("pairs per pair of such sources", Eqn(_squared(side), Integer(one_side**2))),
        Labeled("query sources × key sources",
                Eqn(Prod(Integer(len(exp.query_sources)), Integer(len(exp.key_sources))),
                    Integer(len(exp.query_sources) * len(exp.key_sources)))),
    ]
    for kind in ("direct", "q_composition", "k_composition", "qk_composition"):
        rows.append(Labeled(f"{kind} terms", Integer(exp.count(kind=kind))))
    if arch.mlp and l:
        rows += _head_to_head_rows(exp)
    if exp.n_cut:
        rows.append(Labeled(f"pairs with a side deeper than {exp.max_depth}, in the remainder",
                            Integer(exp.n_cut)))
    rows.append(Labeled("terms in all", Integer(exp.n_terms)))
    if arch.parallel_attn_mlp:
        text = ("Each side has Π_{l'<l} (2 + H_l') paths per source (per earlier layer: skip it, "
                "one of its heads, or its MLP, which reads the same stream as the heads), so "
                "(Π_{l'<l} (2 + H_l'))² pairs per pair of sources; counted by formula.")
    else:
        text = ("Each side has Π_{l'<l} (1 + H_l') paths per source (× 2 per layer with MLPs), so "
                "(Π_{l'<l} (1 + H_l'))² pairs per pair of sources; counted by formula.")
    return Step("Counting the pairs", text, Lines(*rows))
