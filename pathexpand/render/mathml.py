"""Presentation MathML for path expansions (sympy's ``MathMLPresentationPrinter`` extended).

``to_mathml(term)`` → one ``<math>`` element; ``to_mathml(expansion)`` → one XHTML ``<div>``
with a heading, a paragraph and a ``<math display="block">`` per derivation step (valid XML,
one root element, parseable by ``xml.etree``).
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from sympy import Mul, Symbol
from sympy.printing.mathml import MathMLPresentationPrinter

from ..symbolic.derivation import DEFAULT_SUMMARIZE_ABOVE, Step
from ..symbolic.expansion import Expansion, Selection
from ..symbolic.symbols import (
    Hadamard,
    InRange,
    Mat,
    Prod,
    SumOver,
    TensorProduct,
    Terms,
)
from .notation import SUBSCRIPT_FAMILIES, TEXT_BASE, expansion_steps, make_printer, selection_lines

__all__ = ["MATHML_NS", "XHTML_NS", "PathMathMLPrinter", "to_mathml"]

MATHML_NS = "http://www.w3.org/1998/Math/MathML"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_PAREN_IN_PRODUCT = (Terms, SumOver, TensorProduct, Hadamard)
_NC_SYMBOL = re.compile(r"^([A-Za-z]+)(?:_\{?([^}^]*)\}?)?(\^T)?$")


class PathMathMLPrinter(MathMLPresentationPrinter):
    """Presentation MathML with ``_print_<Class>`` methods for the path algebra.

    Settings beyond sympy's: ``summarize_above``, ``form`` (``"tensor"``/``"right"``).
    """

    printmethod = "_pathexpand_mathml"
    _default_settings = {
        **MathMLPresentationPrinter._default_settings,
        "order": "none",
        "summarize_above": DEFAULT_SUMMARIZE_ABOVE,
        "form": "tensor",
    }

    # --- element helpers --------------------------------------------------------------------
    def _el(self, tag: str, *children, text: str | None = None, **attrs):
        el = self.dom.createElement(tag)
        if text is not None:
            # sympy's printer writes text nodes raw (it replaces createTextNode): escape here
            el.appendChild(self.dom.createTextNode(escape(text)))
        for c in children:
            el.appendChild(c)
        for k, v in attrs.items():
            el.setAttribute(k, v)
        return el

    def _mo(self, s: str):
        return self._el("mo", text=s)

    def _mi(self, s: str, upright: bool = False):
        return self._el("mi", text=s, **({"mathvariant": "normal"} if upright and len(s) == 1 else {}))

    def _row(self, *children):
        return self._el("mrow", *children)

    def _paren(self, el):
        return self._row(self._mo("("), el, self._mo(")"))

    def _script(self, base, sub=None, sup=None):
        if sub is not None and sup is not None:
            return self._el("msubsup", base, sub, sup)
        if sub is not None:
            return self._el("msub", base, sub)
        if sup is not None:
            return self._el("msup", base, sup)
        return base

    def _index_name(self, name: str):
        if name == "emptyset":
            return self._mi("∅")
        if "-" in name:  # an offset: j-i → j − i
            a, b = name.split("-", 1)
            return self._row(self._index_name(a), self._mo("−"), self._index_name(b))
        if "_" in name:
            base, sub = name.split("_", 1)
            return self._script(self._mi(base), sub=self._index_name(sub))
        return self._el("mn", text=name) if name.isdigit() else self._mi(name)

    def _index(self, index):
        parts = []
        for i, v in enumerate(index):
            if i:
                parts.append(self._mo(","))
            parts.append(self._index_name(v.name) if isinstance(v, Symbol) else self._print(v))
        return parts[0] if len(parts) == 1 else self._row(*parts)

    # --- atoms ----------------------------------------------------------------------------
    def _print_Mat(self, expr: Mat):
        if expr.family == "dots":
            return self._mo("⋯")
        text = TEXT_BASE.get(expr.family, expr.family)
        main, _, own_sub = text.partition("_")
        base = self._mi(main, upright=main in ("Id",))
        sub = self._mi(own_sub) if own_sub else None
        idx = self._index(expr.index) if expr.index else None
        if expr.family == "R":
            return self._script(base, sub=self._row(self._mo(">"), idx))
        if expr.family in SUBSCRIPT_FAMILIES and idx is not None:
            sub, idx = idx, None
        sup_parts = ([idx] if idx is not None else []) + ([self._mo("⊤")] if expr.transposed else [])
        sup = None if not sup_parts else (sup_parts[0] if len(sup_parts) == 1 else self._row(*sup_parts))
        return self._script(base, sub=sub, sup=sup)

    def _print_Symbol(self, sym, style="plain"):
        if sym.is_commutative:
            return super()._print_Symbol(sym, style)
        m = _NC_SYMBOL.match(sym.name)
        if not m:
            return self._mi(sym.name)
        main, sub, t = m.groups()
        sub_el = None
        if sub:
            sub_el = self._index_name(sub)
        return self._script(self._mi(main), sub=sub_el, sup=self._mo("⊤") if t else None)

    # --- products and sums ----------------------------------------------------------------
    def _factor(self, f):
        el = self._print(f)
        return self._paren(el) if isinstance(f, _PAREN_IN_PRODUCT) else el

    def _print_Mul(self, expr, *args, **kwargs):
        if expr.is_commutative:
            return super()._print_Mul(expr, *args, **kwargs)
        c, nc = expr.args_cnc()
        parts = [super()._print_Mul(Mul(*c))] if c else []
        parts += [self._factor(f) for f in nc]
        return self._row(*parts)

    def _print_Prod(self, expr):
        parts = []
        for i, f in enumerate(expr.args):
            if i and any(a.is_Number for a in expr.args):
                parts.append(self._mo("×"))
            parts.append(self._factor(f))
        return self._row(*parts)

    def _print_Pow(self, expr):
        base, exp = expr.args
        if isinstance(base, (Terms, Prod)):
            return self._el("msup", self._paren(self._print(base)), self._print(exp))
        return super()._print_Pow(expr)

    def _joined(self, args, op, paren_types=()):
        parts = []
        for i, a in enumerate(args):
            if i:
                parts.append(self._mo(op))
            el = self._print(a)
            parts.append(self._paren(el) if isinstance(a, paren_types) else el)
        return self._row(*parts)

    def _print_TensorProduct(self, expr):
        return self._joined(expr.args, "⊗", (Terms, SumOver))

    def _print_Terms(self, expr):
        return self._joined(expr.args, "+")

    def _print_SumOver(self, expr):
        parts = []
        for idx in expr.indices:
            if isinstance(idx, InRange):
                var, lo, hi = idx.args
                under = self._row(self._index((var,)), self._mo("="), self._print(lo))
                parts.append(self._el("munderover", self._mo("∑"), under, self._print(hi)))
            else:
                parts.append(self._el("munder", self._mo("∑"), self._print(idx)))
        body = self._print(expr.body)
        parts.append(self._paren(body) if isinstance(expr.body, Terms) else body)
        return self._row(*parts)

    def _print_ProdOver(self, expr):
        body, index = expr.args
        var, n = index.args
        under = self._row(self._index((var,)), self._mo("="), self._el("mn", text="0"))
        return self._row(self._el("munderover", self._mo("∏"), under, self._el("mn", text=str(int(n) - 1))),
                         self._factor(body))

    def _print_InHeads(self, expr):
        var, layers = expr.args
        sets = [self._script(self._mi("H"), sub=self._index((l,))) for l in layers]
        if len(sets) > 4:
            sets = [sets[0], self._mo("⋯"), sets[-1]]
        parts = [self._index((var,)), self._mo("∈")]
        for i, s in enumerate(sets):
            if i:
                parts.append(self._mo("∪"))
            parts.append(s)
        return self._row(*parts)

    def _print_Later(self, expr):
        names = [self._index((v,)) for v in expr.args[0]]
        if bool(expr.args[1]):
            names = [names[0], self._mo("⋯"), *names[1:]]
        parts = []
        for i, n in enumerate(names):
            if i:
                parts.append(self._mo("≻"))
            parts.append(n)
        return self._row(*parts)

    def _print_InPaths(self, expr):
        var, nonempty = expr.args
        v = self._index((var,))
        return self._row(v, self._mo("≠"), self._mi("∅")) if bool(nonempty) else v

    def _print_Deeper(self, expr):
        var, depth = expr.args
        return self._row(self._mo("|"), self._index((var,)), self._mo("|"), self._mo(">"),
                         self._el("mn", text=str(depth)))

    def _print_InLayers(self, expr):
        var, n = expr.args
        return self._row(self._index((var,)), self._mo("="), self._el("mn", text="0"), self._mo("…"),
                         self._el("mn", text=str(int(n) - 1)))

    # --- operators and rows -------------------------------------------------------------------
    def _print_Apply(self, expr):
        return self._row(self._print(expr.op), self._paren(self._print(expr.arg)))

    def _print_Tr(self, expr):
        return self._el("msup", self._paren(self._print(expr.arg)), self._mo("⊤"))

    def _print_Softmax(self, expr):
        head = self._el("msup", self._mi("softmax"), self._mo("*"))
        return self._row(head, self._paren(self._print(expr.args[0])))

    def _print_Hadamard(self, expr):
        return self._joined(expr.args, "⊙", (Mul, Terms))

    def _print_Eqn(self, expr):
        return self._row(self._print(expr.args[0]), self._mo("="), self._print(expr.args[1]))

    def _print_Labeled(self, expr):
        label, body = expr.args
        return self._row(self._el("mtext", text=label.name), self._mo(":"), self._print(body))

    def _print_Summary(self, expr):
        n, what, first, body = expr.args
        return self._row(self._mo("∑"), self._el("mtext", text=f" over {int(n)} {what.name}, first "),
                         self._el("mtext", text=first.name), self._mo("="), self._print(body))

    def _print_Note(self, expr):
        return self._el("mtext", text=expr.args[0].name)

    def _print_Lines(self, expr):
        rows = [self._el("mtr", self._el("mtd", self._print(r))) for r in expr.args]
        return self._el("mtable", *rows, columnalign="left")

    def _print_Term(self, term):
        return self._print(term.right_expr if self._settings["form"] == "right" else term.expr)

    _print_ScoreTerm = _print_Term

    # --- documents --------------------------------------------------------------------------
    def math(self, expr, display: str = "block"):
        """A ``<math>`` element holding ``expr``."""
        return self._el("math", self._print(expr), xmlns=MATHML_NS, display=display)


def _document(printer: PathMathMLPrinter, steps: list[Step], title: str) -> str:
    div = printer._el("div", xmlns=XHTML_NS, **{"class": "pathexpand-derivation"})
    div.appendChild(printer._el("h2", text=title))
    for i, step in enumerate(steps, 1):
        div.appendChild(printer._el("h3", text=f"{i}. {step.title}"))
        if step.text:
            div.appendChild(printer._el("p", text=step.text))
        div.appendChild(printer.math(step.expr))
    return div.toxml()


def to_mathml(obj, **settings) -> str:
    """MathML of a term or expression (``<math>``), or of an ``Expansion``/``Selection``
    (an XHTML ``<div>`` of headings, paragraphs and block ``<math>`` elements)."""
    printer = make_printer(PathMathMLPrinter, settings)
    if isinstance(obj, Expansion):
        steps, title = expansion_steps(obj, printer)
        return _document(printer, steps, title)
    if isinstance(obj, Selection):
        n = obj.n_terms
        return _document(printer, [Step(f"{n} selected terms", "", selection_lines(obj, printer))],
                         f"{n} selected terms")
    if isinstance(obj, Step):
        return _document(printer, [obj], obj.title)
    return printer.math(obj, display="inline").toxml()
