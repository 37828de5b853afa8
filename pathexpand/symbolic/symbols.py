"""The symbols of the path algebra: named matrices, operators and the containers derivations use.

Every matrix is one ``Mat(family, index)`` atom, non-commutative, so a sympy product keeps its
order: ``Mat("A", (1, 0))`` is the attention pattern A^{1,0} of head L1H0, ``Mat("W_OV", (1, 0))``
its OV matrix. Two notations use the same atoms:

* the paper's tensor-product form ``P ⊗ M`` (left-multiplying): position-side matrices ``P``
  (patterns ``A``, norm scales ``N``) act on the position axis, model-side matrices ``M``
  are the paper's, i.e. the transposes of TransformerLens's (``W_E`` is [d_model, d_vocab]);
  the exceptions are ``W_QK`` = W_Q W_Kᵀ (TL) = W_Qᵀ W_K (paper), the same bilinear form, and
  the rotary ``R_{j−i}`` between W_Q and W_Kᵀ (TL) = W_Qᵀ and W_K (paper), taken at the score
  entry (i, j);
* the right-multiplying form (TransformerLens's arrays, residual rows): ``A t W_E W_OV W_U``.

sympy combines adjacent tensor products itself, ``(A ⊗ B)(C ⊗ D) = AC ⊗ BD``; ``mul`` and
``strip_identity`` remove the identity ``Id`` from products.
"""

from __future__ import annotations

from sympy import Basic, Expr, Integer, Mul, Pow, S, Symbol, Tuple
from sympy.core.symbol import Str
from sympy.physics.quantum import TensorProduct

from ..errors import PathexpandError

__all__ = [
    "DOTS",
    "D_HEAD",
    "ID",
    "KINDS",
    "ONES",
    "TOKENS",
    "ROTATION",
    "Apply",
    "Deeper",
    "Eqn",
    "Hadamard",
    "InHeads",
    "InLayers",
    "InPaths",
    "InRange",
    "Labeled",
    "Later",
    "Lines",
    "Mat",
    "Note",
    "Prod",
    "ProdOver",
    "Softmax",
    "SumOver",
    "Summary",
    "TensorProduct",
    "Terms",
    "Tr",
    "index_symbol",
    "is_identity",
    "mul",
    "strip_identity",
    "tp",
    "transpose",
]

# family -> what the symbol stands for (the side it acts on in brackets)
KINDS = {
    "Id": "identity (either side)",
    "1": "column of ones over positions [pos, 1] (bias rows are 1 b)",
    "t": "one-hot tokens [pos, d_vocab]",
    "A": "attention pattern of a head [pos, pos] (position side)",
    "N_ln1": "frozen ln1 scale of a layer: diag(1/σ) (LayerNorm) or diag(1/rms) (RMSNorm) (position side)",
    "N_ln2": "frozen ln2 scale of a layer: diag(1/σ) or diag(1/rms) (position side)",
    "N_lnf": "frozen final norm scale diag(1/σ) or diag(1/rms) (position side)",
    "W_ln1": "ln1 centring and weight C diag(w) (LayerNorm) or weight diag(w) (RMSNorm) of a layer (model side)",
    "W_ln2": "ln2 centring and weight C diag(w) or weight diag(w) of a layer (model side)",
    "W_lnf": "final norm centring and weight C diag(w) or weight diag(w) (model side)",
    "b_ln1": "ln1 bias of a layer (model side)",
    "b_ln2": "ln2 bias of a layer (model side)",
    "b_lnf": "final LayerNorm bias (model side)",
    "W_E": "token embedding",
    "W_pos": "positional embedding",
    "W_U": "unembedding",
    "b_U": "unembedding bias",
    "W_OV": "W_V W_O of a head",
    "W_QK": "W_Q W_Kᵀ of a head",
    "Rot": "rotary relative rotation R_{j−i} = Θ_i Θ_jᵀ [d_head, d_head]: what a query at i and "
           "a key at j meet through (a function of the offset j − i; the same in both notations)",
    "Theta": "rotary rotation Θ_p of a query/key row at position p (u ↦ u Θ_p) [d_head, d_head]",
    "q": "rotated query row of a head at one position [d_head]",
    "k": "rotated key row of a head at one position [d_head]",
    "W_Q": "query weights of a head",
    "W_K": "key weights of a head",
    "W_O": "output weights of a head",
    "b_V": "value bias of a head",
    "b_Q": "query bias of a head",
    "b_K": "key bias of a head",
    "b_O": "attention output bias of a layer",
    "b_out": "MLP output bias of a layer",
    "B_in": "MLP input-bias source (1 b_in ⊙ G) W_out of a layer [pos, d_model]",
    "M": "frozen MLP of a layer: X ↦ ((X W_in) ⊙ G) W_out, position-wise, does not factor",
    "W_gate": "gate weights of a gated MLP of a layer",
    "act": "the MLP's activation function (applied elementwise)",
    "O": "node operator of a generic path node (head: A ⊗ W_OV; MLP: M)",
    "R": "remainder: every path deeper than max_depth",
    # used by derivations only
    "x": "residual stream before a layer [pos, d_model]",
    "x_mid": "residual stream between a layer's attention and its MLP",
    "X": "a head's query/key input, or one path's share of it (right form)",
    "logits": "the logits [pos, d_vocab]",
    "T": "the map from a source to the logits (the paper's T)",
    "C": "a head's bilinear score form C_QK = √d_head · scores",
    "S": "a head's attention scores (before the softmax)",
    "F": "one layer as a map of the residual stream",
    "W_V": "value weights of a head",
    "W_in": "MLP input weights of a layer",
    "W_out": "MLP output weights of a layer",
    "b_in": "MLP input bias of a layer",
    "G": "frozen MLP gates of a layer [pos, d_mlp]: act(pre)/pre, or act(x W_gate) when gated",
    "LN1": "LayerNorm ln1 of a layer (not frozen)",
    "LN2": "LayerNorm ln2 of a layer (not frozen)",
    "LNf": "final LayerNorm (not frozen)",
    "RMS1": "RMSNorm ln1 of a layer (not frozen)",
    "RMS2": "RMSNorm ln2 of a layer (not frozen)",
    "RMSf": "final RMSNorm (not frozen)",
    "MLP": "an MLP (not frozen)",
    "dots": "an ellipsis ⋯ inside a product",
}

_POS_SIDE = frozenset({"A", "N_ln1", "N_ln2", "N_lnf"})


def index_symbol(value):
    """An index entry as a sympy atom: ints → Integer, strings → Symbol (``"h_2"``)."""
    if isinstance(value, Basic):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PathexpandError(f"a symbol index is an int or a name, got {value!r}")
    return Integer(value) if isinstance(value, int) else Symbol(value)


class _Printable:
    """sympy's own ``str``/``latex`` of our atoms go through pathexpand's printers, so
    ``print(term.expr)`` and Jupyter's sympy display read ``W_OV[1,0]``, not ``Mat(...)``."""

    __slots__ = ()

    def _sympystr(self, printer) -> str:
        from ..render.text import PathTextPrinter  # rendering sits to the right of this layer

        return PathTextPrinter()._print(self)

    def _latex(self, printer) -> str:
        from ..render.latex import PathLatexPrinter

        return PathLatexPrinter()._print(self)


class Mat(_Printable, Expr):
    """One named matrix or operator: ``Mat("W_OV", (1, 0))`` is W_OV^{1,0}; ``.T`` transposes."""

    is_commutative = False

    def __new__(cls, family: str, index=(), transposed: bool = False):
        if family not in KINDS:
            raise PathexpandError(f"unknown symbol family {family!r}; known: {', '.join(KINDS)}")
        idx = Tuple(*(index_symbol(i) for i in index))
        return Expr.__new__(cls, Str(family), idx, S.true if transposed else S.false)

    @property
    def family(self) -> str:
        return self.args[0].name

    @property
    def index(self) -> tuple:
        return tuple(self.args[1])

    @property
    def transposed(self) -> bool:
        return bool(self.args[2])

    @property
    def position_side(self) -> bool:
        """True for matrices that act on the position axis (patterns, LayerNorm scales)."""
        return self.family in _POS_SIDE

    @property
    def T(self) -> Mat:
        if self.family == "Id":
            return self
        return Mat(self.family, self.index, not self.transposed)

    def _hashable_content(self):
        return self.args


class Apply(_Printable, Expr):
    """An operator applied to a matrix, right-multiplying form: ``𝓜^{0}(X)``."""

    is_commutative = False

    def __new__(cls, op: Expr, arg: Expr):
        return Expr.__new__(cls, op, arg)

    @property
    def op(self):
        return self.args[0]

    @property
    def arg(self):
        return self.args[1]


class Tr(_Printable, Expr):
    """The transpose of a compound matrix, printed ``(X)ᵀ``."""

    is_commutative = False

    def __new__(cls, arg: Expr):
        return Expr.__new__(cls, arg)

    @property
    def arg(self):
        return self.args[0]


class Hadamard(_Printable, Expr):
    """Elementwise product ``a ⊙ b``."""

    is_commutative = False

    def __new__(cls, a: Expr, b: Expr):
        return Expr.__new__(cls, a, b)


class Softmax(_Printable, Expr):
    """``softmax*(x)``: the causally masked softmax of the paper."""

    is_commutative = False

    def __new__(cls, arg: Expr):
        return Expr.__new__(cls, arg)


class Prod(_Printable, Expr):
    """A product shown as written, unevaluated (sympy would merge tensor products at once)."""

    is_commutative = False

    def __new__(cls, *factors):
        return Expr.__new__(cls, *factors)


class Terms(_Printable, Expr):
    """An ordered sum, printed in the order given (sympy's ``Add`` would sort its terms)."""

    is_commutative = False

    def __new__(cls, *terms):
        return Expr.__new__(cls, *terms)


class SumOver(_Printable, Expr):
    """``Σ_{indices} body``: a generic, indexed sum over heads, layers or paths."""

    is_commutative = False

    def __new__(cls, body: Expr, *indices):
        return Expr.__new__(cls, body, Tuple(*indices))

    @property
    def body(self):
        return self.args[0]

    @property
    def indices(self):
        return tuple(self.args[1])


class ProdOver(_Printable, Expr):
    """``Π_{l} body`` over the layers, latest on the left."""

    is_commutative = False

    def __new__(cls, body: Expr, index):
        return Expr.__new__(cls, body, index)


class InHeads(_Printable, Basic):
    """Index ``h ∈ H_0 ∪ H_1``: a head of one of the given layers."""

    def __new__(cls, var: str, layers):
        return Basic.__new__(cls, index_symbol(var), Tuple(*(index_symbol(l) for l in layers)))


class InLayers(_Printable, Basic):
    """Index ``l = 0 … L-1`` of a product or sum over layers."""

    def __new__(cls, var: str, n_layers: int):
        return Basic.__new__(cls, index_symbol(var), Integer(n_layers))


class Later(_Printable, Basic):
    """Index ``h_2 ≻ h_1`` (or ``h_d ≻ ⋯ ≻ h_1`` when ``dotted``): nodes in strictly later
    layers (stages), latest first."""

    def __new__(cls, *vars_, dotted: bool = False):
        return Basic.__new__(
            cls, Tuple(*(index_symbol(v) for v in vars_)), S.true if dotted else S.false
        )


class InRange(_Printable, Basic):
    """Index ``d = lo … hi``."""

    def __new__(cls, var: str, lo, hi):
        return Basic.__new__(cls, index_symbol(var), index_symbol(lo), index_symbol(hi))


class InPaths(_Printable, Basic):
    """Index ``p ≠ ∅`` (or just ``p``): a path of earlier nodes, non-empty when asked."""

    def __new__(cls, var: str, nonempty: bool = True):
        return Basic.__new__(cls, index_symbol(var), S.true if nonempty else S.false)


class Deeper(_Printable, Basic):
    """Index ``|p| > K``: paths through more than ``K`` heads/MLPs."""

    def __new__(cls, var: str, depth: int):
        return Basic.__new__(cls, index_symbol(var), Integer(depth))


class Eqn(_Printable, Basic):
    """``lhs = rhs``; printers align on ``=`` and break a long ``Terms`` right side."""

    def __new__(cls, lhs, rhs):
        return Basic.__new__(cls, lhs, rhs)


class Lines(_Printable, Basic):
    """Rows printed one under the other (equations, labelled terms, summaries)."""

    def __new__(cls, *rows):
        return Basic.__new__(cls, *rows)


class Labeled(_Printable, Basic):
    """``label: expr`` — a named term in a listing."""

    def __new__(cls, label: str, expr):
        return Basic.__new__(cls, Str(label), expr)


class Summary(_Printable, Basic):
    """``Σ over 144 heads (first: L0H0 = …)``: a group too long to list, with its exact count."""

    def __new__(cls, count: int, what: str, first_name: str, first_expr):
        return Basic.__new__(cls, Integer(count), Str(what), Str(first_name), first_expr)


class Note(_Printable, Basic):
    """A short line of prose inside a listing (printed as text)."""

    def __new__(cls, text: str):
        return Basic.__new__(cls, Str(text))


ID = Mat("Id")
ONES = Mat("1")
TOKENS = Mat("t")
DOTS = Mat("dots")
ROTATION = Mat("Rot", ("j-i",))  # R_{j−i}: entry (i, j) of a rotary score
D_HEAD = Symbol("d_head", positive=True)


def is_identity(expr) -> bool:
    """True for ``Id`` and its powers."""
    if isinstance(expr, Pow):
        return is_identity(expr.base)
    return isinstance(expr, Mat) and expr.family == "Id"


def mul(*factors):
    """Non-commutative product without identities (``Id`` when nothing else is left)."""
    kept = [f for f in factors if not is_identity(f)]
    if not kept:
        return ID
    return Mul(*kept)


def tp(*factors):
    """Tensor product of the given sides (each already a product)."""
    return TensorProduct(*factors)


def strip_identity(expr):
    """Remove ``Id`` from every product inside ``expr`` (bottom-up)."""
    if isinstance(expr, Mat) or not expr.args:
        return expr
    if is_identity(expr):
        return ID
    args = [strip_identity(a) for a in expr.args]
    if isinstance(expr, Mul):
        return mul(*args)
    return expr.func(*args)


def transpose(expr):
    """Transpose of a product of atoms: reverse the order and transpose each factor."""
    if isinstance(expr, Mat):
        return expr.T
    if isinstance(expr, Mul):
        c, nc = expr.args_cnc()
        return Mul(*c) * Mul(*[transpose(f) for f in reversed(nc)])
    if expr.is_commutative:
        return expr
    return Tr(expr)
