"""LaTeX for path expansions: a sympy ``LatexPrinter`` that knows the path algebra.

``to_latex(term)`` → ``A^{1,0} A^{0,1} \\otimes W_U W_{OV}^{1,0} W_{OV}^{0,1} W_E``;
``to_latex(expansion)`` → the whole derivation as one ``align*`` block (amsmath, amssymb),
explanations in ``\\intertext``; ``jupyter=True`` gives ``$$\\begin{aligned}…$$`` for MathJax.
"""

from __future__ import annotations

from sympy import Basic, Mul, Symbol
from sympy.printing.latex import LatexPrinter

from ..symbolic.derivation import DEFAULT_SUMMARIZE_ABOVE, Step, derive
from ..symbolic.expansion import Expansion, Selection
from ..symbolic.symbols import (
    Apply,
    Eqn,
    Hadamard,
    InPaths,
    InRange,
    Labeled,
    Lines,
    Mat,
    Note,
    Prod,
    Summary,
    SumOver,
    TensorProduct,
    Terms,
)
from .notation import (
    LATEX_BASE,
    SUBSCRIPT_FAMILIES,
    latex_index_name,
    latex_label,
    latex_prose,
    latex_text,
    make_printer,
    mathjax_text,
)

__all__ = ["PathLatexPrinter", "latex_rows", "to_latex"]

_PAREN_IN_PRODUCT = (Terms, SumOver, TensorProduct, Hadamard)


class PathLatexPrinter(LatexPrinter):
    """sympy's LaTeX printer plus ``_print_<Class>`` methods for the path-algebra objects.

    Settings beyond sympy's: ``summarize_above`` (largest group listed term by term),
    ``form`` (``"tensor"``: a term's paper form, ``"right"``: right-multiplying),
    ``jupyter`` (``aligned`` inside ``$$`` for MathJax instead of ``align*``),
    ``text`` (``"latex"`` for pdflatex prose, ``"mathjax"`` for ``\\text{}`` in MathJax).
    """

    printmethod = "_pathexpand_latex"  # not TensorProduct._latex: we print it ourselves
    _default_settings = {
        **LatexPrinter._default_settings,
        "order": "none",
        "summarize_above": DEFAULT_SUMMARIZE_ABOVE,
        "form": "tensor",
        "jupyter": False,
        "text": "latex",
    }

    # --- atoms ----------------------------------------------------------------------------
    def _index(self, index) -> str:
        parts = []
        for i in index:
            if isinstance(i, Symbol):
                parts.append(latex_index_name(i.name))
            else:
                parts.append(self._print(i))
        return ",".join(parts)

    def _print_Mat(self, expr: Mat) -> str:
        base = LATEX_BASE[expr.family]
        idx = self._index(expr.index)
        if expr.family == "R":
            return rf"R_{{>{idx}}}"
        if expr.family in SUBSCRIPT_FAMILIES and idx:
            base = rf"{base}_{{{idx}}}"
            idx = ""
        sup = idx + (r"\top" if expr.transposed else "")
        return rf"{base}^{{{sup}}}" if sup else base

    def _print_Symbol(self, expr, style="plain"):
        if expr.is_commutative:
            return super()._print_Symbol(expr, style)
        return expr.name.replace("^T", r"^{\top}")

    # --- products and sums ----------------------------------------------------------------
    def _factor(self, f) -> str:
        s = self._print(f)
        return rf"\left({s}\right)" if isinstance(f, _PAREN_IN_PRODUCT) else s

    def _print_Mul(self, expr):
        if expr.is_commutative:
            return super()._print_Mul(expr)
        c, nc = expr.args_cnc()
        head = super()._print_Mul(Mul(*c)) + " " if c else ""
        return head + " ".join(self._factor(f) for f in nc)

    def _print_Prod(self, expr) -> str:
        sep = " \\times " if any(f.is_Number for f in expr.args) else " "
        return sep.join(self._factor(f) for f in expr.args)

    def _print_Pow(self, expr):
        base, exp = expr.args
        if isinstance(base, (Terms, Prod)):
            return rf"\left({self._print(base)}\right)^{{{self._print(exp)}}}"
        return super()._print_Pow(expr)

    def _print_TensorProduct(self, expr) -> str:
        def side(a):
            s = self._print(a)
            return rf"\left({s}\right)" if isinstance(a, (Terms, SumOver)) else s

        return r" \otimes ".join(side(a) for a in expr.args)

    def _print_Terms(self, expr) -> str:
        return " + ".join(self._print(a) for a in expr.args)

    def _sum_index(self, idx) -> tuple[str, str]:
        """``(subscript, superscript)`` of one summation index."""
        if isinstance(idx, InRange):
            var, lo, hi = idx.args
            return f"{self._index((var,))}={self._print(lo)}", self._print(hi)
        return self._print(idx), ""

    def _print_SumOver(self, expr) -> str:
        sums = []
        for idx in expr.indices:
            sub, sup = self._sum_index(idx)
            sums.append(rf"\sum_{{{sub}}}" + (f"^{{{sup}}}" if sup else ""))
        body = expr.body
        b = self._print(body)
        if isinstance(body, Terms):
            b = rf"\left({b}\right)"
        return " ".join(sums) + " " + b

    def _print_ProdOver(self, expr) -> str:
        body, index = expr.args
        var, n = index.args
        return rf"\prod_{{{self._index((var,))}=0}}^{{{int(n) - 1}}} {self._factor(body)}"

    def _print_InHeads(self, expr) -> str:
        var, layers = expr.args
        sets = [rf"H_{{{self._index((l,))}}}" for l in layers]
        if len(sets) > 4:
            sets = [sets[0], r"\cdots", sets[-1]]
        return rf"{self._index((var,))} \in " + r" \cup ".join(sets)

    def _print_Later(self, expr) -> str:
        names = [self._index((v,)) for v in expr.args[0]]
        if bool(expr.args[1]):
            names = [names[0], r"\cdots", *names[1:]]
        return r" \succ ".join(names)

    def _print_InPaths(self, expr: InPaths) -> str:
        var, nonempty = expr.args
        v = self._index((var,))
        return rf"{v} \neq \varnothing" if bool(nonempty) else v

    def _print_Deeper(self, expr) -> str:
        var, depth = expr.args
        return rf"\lvert {self._index((var,))} \rvert > {depth}"

    def _print_InLayers(self, expr) -> str:
        var, n = expr.args
        return rf"{self._index((var,))} = 0, \ldots, {int(n) - 1}"

    # --- operators --------------------------------------------------------------------------
    def _print_Apply(self, expr: Apply) -> str:
        return rf"{self._print(expr.op)}\left({self._print(expr.arg)}\right)"

    def _print_Tr(self, expr) -> str:
        return rf"\left({self._print(expr.arg)}\right)^{{\top}}"

    def _print_Softmax(self, expr) -> str:
        return rf"\operatorname{{softmax}}^{{*}}\left({self._print(expr.args[0])}\right)"

    def _print_Hadamard(self, expr: Hadamard) -> str:
        def side(a):
            s = self._print(a)
            return rf"\left({s}\right)" if isinstance(a, (Mul, Terms)) else s

        return r" \odot ".join(side(a) for a in expr.args)

    # --- rows -------------------------------------------------------------------------------
    def _text(self, s: str) -> str:
        return mathjax_text(s) if self._settings["text"] == "mathjax" else latex_text(s)

    def _label(self, name: str) -> str:
        """A term name (``\\mathrm{L1H0} \\circ …``) or a prose label (``\\text{…}``)."""
        if " " in name and not name.startswith("q:"):
            return rf"\text{{{self._text(name)}}}"
        return latex_label(name)

    def _print_Eqn(self, expr) -> str:
        return f"{self._print(expr.args[0])} = {self._print(expr.args[1])}"

    def _print_Labeled(self, expr) -> str:
        label, body = expr.args
        return f"{self._label(label.name)}: {self._print(body)}"

    def _print_Summary(self, expr) -> str:
        n, what, first, body = expr.args
        return (rf"\textstyle\sum \text{{ over {int(n)} {self._text(what.name)}, first }}"
                rf"{latex_label(first.name)} = {self._print(body)}")

    def _print_Note(self, expr) -> str:
        return rf"\text{{{self._text(expr.args[0].name)}}}"

    def _print_Lines(self, expr) -> str:
        return r" \\ ".join(self._print(r) for r in expr.args)

    def _print_Term(self, term) -> str:
        return self._print(term.right_expr if self._settings["form"] == "right" else term.expr)

    _print_ScoreTerm = _print_Term


def latex_rows(printer: PathLatexPrinter, expr: Basic) -> list[str]:
    """``align`` rows (with ``&``) of a step's expression; long sums break after each term."""
    if isinstance(expr, Lines):
        return [row for r in expr.args for row in latex_rows(printer, r)]
    if isinstance(expr, Eqn):
        lhs, rhs = expr.args
        if isinstance(rhs, Terms) and len(rhs.args) > 2:
            first, *rest = rhs.args
            rows = [f"{printer._print(lhs)} &= {printer._print(first)}"]
            rows += [rf"&\quad + {printer._print(t)}" for t in rest]
            return rows
        return [f"{printer._print(lhs)} &= {printer._print(rhs)}"]
    if isinstance(expr, Labeled):
        label, body = expr.args
        return [f"{printer._label(label.name)} &: {printer._print(body)}"]
    if isinstance(expr, (Summary, Note)):
        return [f"&{printer._print(expr)}"]
    return [f"&{printer._print(expr)}"]


def _title(arch, target) -> str:
    what = "logits" if target == "logits" else f"attention scores of {target}"
    return f"Path expansion of the {what}: {arch}"


def _steps_block(steps: list[Step], printer: PathLatexPrinter, title: str) -> str:
    jupyter = printer._settings["jupyter"]
    lines = []
    if jupyter:
        lines.append(rf"&\textbf{{{printer._text(title)}}}")
    else:
        lines.append(rf"\intertext{{\textbf{{{latex_text(title)}}}}}")
    for i, step in enumerate(steps, 1):
        if jupyter:
            lines.append(rf"&\textbf{{{i}. {printer._text(step.title)}}}")
        else:
            lines.append(rf"\intertext{{\textbf{{{i}. {latex_prose(step.title)}.}} {latex_prose(step.text)}}}")
        lines += latex_rows(printer, step.expr)
    env = "aligned" if jupyter else "align*"
    body = " \\\\\n".join(lines)
    block = f"\\begin{{{env}}}\n{body}\n\\end{{{env}}}"
    return f"$$\n{block}\n$$" if jupyter else block


def to_latex(obj, **settings) -> str:
    """LaTeX of a term, a sympy expression, a ``Selection`` or a whole ``Expansion``.

    Terms and expressions give inline math (``form="right"`` for a term's right-multiplying
    form); an expansion gives its derivation as one complete ``align*`` block; a selection
    lists its terms (groups above ``summarize_above`` summarised).
    """
    printer = make_printer(PathLatexPrinter, settings)
    if isinstance(obj, Expansion):
        steps = derive(obj, summarize_above=printer._settings["summarize_above"])
        return _steps_block(steps, printer, _title(obj.arch, obj.target))
    if isinstance(obj, Selection):
        return _selection_block(obj, printer)
    if isinstance(obj, Step):
        return _steps_block([obj], printer, obj.title)
    return printer.doprint(obj)


def _selection_block(sel, printer) -> str:
    n = sel.n_terms
    limit = printer._settings["summarize_above"]
    if n <= limit:
        rows = [Labeled(t.name, t.right_expr if printer._settings["form"] == "right" else t.expr)
                for t in sel]
    else:
        first = next(iter(sel))
        rows = [Summary(n, "selected terms", first.name, first.expr)]
    step = Step(f"{n} selected terms", "", Lines(*rows) if rows else Lines(Note("no terms")))
    jupyter = printer._settings["jupyter"]
    env = "aligned" if jupyter else "align*"
    body = " \\\\\n".join(latex_rows(printer, step.expr))
    block = f"\\begin{{{env}}}\n{body}\n\\end{{{env}}}"
    return f"$$\n{block}\n$$" if jupyter else block

