"""Readable Unicode text for path expansions (a terminal's view of the derivation).

``to_text(term)`` → ``A[1,0] A[0,1] ⊗ W_U W_OV[1,0] W_OV[0,1] W_E``: head indices in
brackets, ``ᵀ`` for transposes, ``⊗``, ``Σ_{h ∈ H₀ ∪ H₁}``; ``to_text(expansion)`` → the
numbered derivation, explanations wrapped, equations indented.
"""

from __future__ import annotations

import textwrap

from sympy import Basic, Mul, Rational, Symbol
from sympy.printing.str import StrPrinter

from ..symbolic.derivation import DEFAULT_SUMMARIZE_ABOVE, Step
from ..symbolic.expansion import Expansion, Selection
from ..symbolic.symbols import (
    Eqn,
    Hadamard,
    InRange,
    Lines,
    Mat,
    Prod,
    SumOver,
    TensorProduct,
    Terms,
)
from .notation import (
    SUBSCRIPT_FAMILIES,
    TEXT_BASE,
    expansion_steps,
    make_printer,
    selection_lines,
    text_index_name,
)

__all__ = ["PathTextPrinter", "fit_columns", "terminal_table", "terminal_width", "text_rows", "to_text"]

_PAREN_IN_PRODUCT = (Terms, SumOver, TensorProduct, Hadamard)
_SUP = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class PathTextPrinter(StrPrinter):
    """sympy's ``StrPrinter`` with Unicode ``_print_<Class>`` methods for the path algebra.

    Settings beyond sympy's: ``summarize_above``, ``form`` (``"tensor"``/``"right"`` for
    terms), ``width`` (wrap explanations at this many columns).
    """

    printmethod = "_pathexpand_text"
    _default_settings = {
        **StrPrinter._default_settings,
        "order": "none",
        "summarize_above": DEFAULT_SUMMARIZE_ABOVE,
        "form": "tensor",
        "width": 88,
    }

    def _index(self, index) -> str:
        return ",".join(
            text_index_name(i.name) if isinstance(i, Symbol) else self._print(i) for i in index
        )

    def _print_Mat(self, expr: Mat) -> str:
        base = TEXT_BASE.get(expr.family, expr.family)
        idx = self._index(expr.index)
        t = "ᵀ" if expr.transposed else ""
        if expr.family == "R":
            return f"R_>{idx}"
        if not idx:
            return base + t
        if expr.family in SUBSCRIPT_FAMILIES:
            simple = len(expr.index) == 1 and (
                expr.index[0].is_Integer or str(expr.index[0]).replace("_", "").isalnum()
            )
            return f"{base}_{idx}{t}" if simple else f"{base}_({idx}){t}"
        return f"{base}[{idx}]{t}"

    def _print_Symbol(self, expr):
        name = expr.name.replace("^T", "ᵀ").replace("_{", "[").replace("}", "]")
        return name

    def _factor(self, f) -> str:
        s = self._print(f)
        return f"({s})" if isinstance(f, _PAREN_IN_PRODUCT) else s

    def _print_Mul(self, expr):
        if expr.is_commutative:
            return "·".join(self._factor(a) if a.is_Add else self._print(a) for a in expr.args)
        c, nc = expr.args_cnc()
        head = self._print(Mul(*c)) + " " if c else ""
        return head + " ".join(self._factor(f) for f in nc)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp == Rational(-1, 2):
            return f"1/√{self._print(base)}"
        b = self._print(base)
        if base.is_Add or isinstance(base, (Terms, Prod)):
            b = f"({b})"
        if exp.is_Integer:
            return b + str(exp).translate(_SUP)
        return f"{b}^({self._print(exp)})"

    def _print_Prod(self, expr) -> str:
        sep = " × " if any(f.is_Number for f in expr.args) else " "
        return sep.join(self._factor(f) for f in expr.args)

    def _print_TensorProduct(self, expr) -> str:
        def side(a):
            s = self._print(a)
            return f"({s})" if isinstance(a, (Terms, SumOver)) else s

        return " ⊗ ".join(side(a) for a in expr.args)

    def _print_Terms(self, expr) -> str:
        return " + ".join(self._print(a) for a in expr.args)

    def _print_SumOver(self, expr) -> str:
        sums = []
        for idx in expr.indices:
            if isinstance(idx, InRange):
                var, lo, hi = idx.args
                sums.append(f"Σ_{{{self._index((var,))}={self._print(lo)}…{self._print(hi)}}}")
            else:
                sums.append(f"Σ_{{{self._print(idx)}}}")
        body = self._print(expr.body)
        if isinstance(expr.body, Terms):
            body = f"({body})"
        return " ".join(sums) + " " + body

    def _print_ProdOver(self, expr) -> str:
        body, index = expr.args
        var, n = index.args
        return f"Π_{{{self._index((var,))}=0…{int(n) - 1}}} {self._factor(body)}"

    def _print_InHeads(self, expr) -> str:
        var, layers = expr.args
        sets = [f"H{self._index((l,)).translate(str.maketrans('0123456789', '₀₁₂₃₄₅₆₇₈₉'))}"
                if isinstance(l, Basic) and l.is_Integer else f"H_{self._index((l,))}" for l in layers]
        if len(sets) > 4:
            sets = [sets[0], "⋯", sets[-1]]
        return f"{self._index((var,))} ∈ " + " ∪ ".join(sets)

    def _print_Later(self, expr) -> str:
        names = [self._index((v,)) for v in expr.args[0]]
        if bool(expr.args[1]):
            names = [names[0], "⋯", *names[1:]]
        return " ≻ ".join(names)

    def _print_InPaths(self, expr) -> str:
        var, nonempty = expr.args
        v = self._index((var,))
        return f"{v} ≠ ∅" if bool(nonempty) else v

    def _print_Deeper(self, expr) -> str:
        var, depth = expr.args
        return f"|{self._index((var,))}| > {depth}"

    def _print_InLayers(self, expr) -> str:
        var, n = expr.args
        return f"{self._index((var,))} = 0…{int(n) - 1}"

    def _print_Apply(self, expr) -> str:
        return f"{self._print(expr.op)}({self._print(expr.arg)})"

    def _print_Tr(self, expr) -> str:
        return f"({self._print(expr.arg)})ᵀ"

    def _print_Softmax(self, expr) -> str:
        return f"softmax*({self._print(expr.args[0])})"

    def _print_Hadamard(self, expr) -> str:
        def side(a):
            s = self._print(a)
            return f"({s})" if isinstance(a, (Mul, Terms)) else s

        return " ⊙ ".join(side(a) for a in expr.args)

    def _print_Eqn(self, expr) -> str:
        return f"{self._print(expr.args[0])} = {self._print(expr.args[1])}"

    def _print_Labeled(self, expr) -> str:
        label, body = expr.args
        return f"{label.name}: {self._print(body)}"

    def _print_Summary(self, expr) -> str:
        n, what, first, body = expr.args
        return f"Σ over {int(n)} {what.name} (first: {first.name} = {self._print(body)})"

    def _print_Note(self, expr) -> str:
        return expr.args[0].name

    def _print_Lines(self, expr) -> str:
        return "\n".join(self._print(r) for r in expr.args)

    def _print_Term(self, term) -> str:
        return self._print(term.right_expr if self._settings["form"] == "right" else term.expr)

    _print_ScoreTerm = _print_Term


def text_rows(printer: PathTextPrinter, expr: Basic) -> list[str]:
    """Lines of a step's expression; long sums continue on indented lines."""
    if isinstance(expr, Lines):
        return [row for r in expr.args for row in text_rows(printer, r)]
    if isinstance(expr, Eqn):
        lhs, rhs = expr.args
        left = printer._print(lhs)
        if isinstance(rhs, Terms) and len(rhs.args) > 2:
            first, *rest = rhs.args
            pad = " " * len(left)
            return [f"{left} = {printer._print(first)}"] + [f"{pad} + {printer._print(t)}" for t in rest]
        return [f"{left} = {printer._print(rhs)}"]
    return [printer._print(expr)]


def _block(steps: list[Step], printer: PathTextPrinter, title: str) -> str:
    width = printer._settings["width"]
    out = [title, "=" * min(len(title), width), ""]
    for i, step in enumerate(steps, 1):
        out.append(f"{i}. {step.title}")
        if step.text:
            out += textwrap.wrap(step.text, width=width, initial_indent="   ", subsequent_indent="   ")
        out.append("")
        out += [f"     {row}" for row in text_rows(printer, step.expr)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def to_text(obj, **settings) -> str:
    """Unicode text of a term, an expression, a ``Selection`` or a whole ``Expansion``."""
    printer = make_printer(PathTextPrinter, settings)
    if isinstance(obj, Expansion):
        steps, title = expansion_steps(obj, printer)
        return _block(steps, printer, title)
    if isinstance(obj, Selection):
        return "\n".join(text_rows(printer, selection_lines(obj, printer))) + "\n"
    if isinstance(obj, Step):
        return _block([obj], printer, obj.title)
    return printer.doprint(obj)


# --- terminal tables ------------------------------------------------------------------------------
def terminal_width(default: int = 100) -> int:
    """The terminal's width in columns: ``COLUMNS`` when set (as rich and the shell do), else the
    terminal's own, else ``default`` (output to a pipe or file)."""
    import os
    import shutil

    cols = os.environ.get("COLUMNS", "")
    if cols.strip().isdigit() and int(cols) > 0:
        return int(cols)
    return shutil.get_terminal_size((default, 24)).columns


def fit_columns(header: list[str], body: list[list[str]], width: int, drop: list[str]) -> list[int]:
    """Indices of the columns that fit ``width``: the columns named in ``drop`` are left out, in
    that order, until the table's natural width (cells, 1 space of padding each side, borders)
    fits. Columns not in ``drop`` always stay."""
    from rich.cells import cell_len

    widths = [max([cell_len(h), *(cell_len(row[i]) for row in body)]) for i, h in enumerate(header)]
    kept = list(range(len(header)))

    def natural() -> int:
        return sum(widths[i] + 3 for i in kept) + 1

    for name in drop:
        if natural() <= width:
            break
        if name in header and header.index(name) in kept:
            kept.remove(header.index(name))
    return kept


def terminal_table(
    header: list[str],
    body: list[list[str]],
    *,
    width: int | None = None,
    title: str | None = None,
    caption: str | None = None,
    right: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
    whole: tuple[str, ...] = (),
    wrap: tuple[str, ...] = (),
):
    """A ``rich.table.Table`` of ``body`` that fits ``width`` (default: ``terminal_width()``).

    Columns in ``drop`` are left out, in that order, while the table is too wide; columns in
    ``whole`` are never wrapped nor cut (names); columns in ``wrap`` may wrap, the others are
    ellipsized when space runs out; ``right``: right-aligned (numbers).
    """
    from rich.table import Table

    width = terminal_width() if width is None else width
    kept = fit_columns(header, body, width, list(drop))
    table = Table(title=title or None, caption=caption or None, caption_justify="left")
    for i in kept:
        h = header[i]
        longest = max([len(h), *(len(row[i]) for row in body)])
        table.add_column(
            h, justify="right" if h in right else "left", no_wrap=h not in wrap,
            overflow="fold" if h in wrap else "ellipsis",
            min_width=longest if h in whole else None,
        )
    for row in body:
        table.add_row(*(row[i] for i in kept))
    return table
