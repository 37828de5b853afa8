"""LaTeX for path expansions: a sympy ``LatexPrinter`` that knows the path algebra.

``to_latex(term)`` → ``A^{1,0} A^{0,1} \\otimes W_U W_{OV}^{1,0} W_{OV}^{0,1} W_E``;
``to_latex(expansion)`` → the whole derivation as one ``align*`` block (amsmath, amssymb),
explanations in ``\\intertext``; ``jupyter=True`` gives ``$$\\begin{aligned}…$$`` for MathJax.
``to_latex_document(expansions)`` is a complete pdflatex document (``derive --standalone``): prose
as paragraphs, rows broken before ``=``, ``+``, ``⊗`` or between factors to fit the text width.
"""

from __future__ import annotations

import re

from sympy import Basic, Mul, Symbol
from sympy.printing.latex import LatexPrinter

from ..errors import PathexpandError
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

__all__ = ["PathLatexPrinter", "fit_rows", "latex_rows", "to_latex", "to_latex_document"]

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



# --- a complete document (--standalone): rows broken to fit the page ----------------------------
DOCUMENT_WIDTH = 62.0  # what fits one line of the document's text width, in _width units
_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[a4paper,margin=2.2cm]{geometry}
\usepackage{amsmath,amssymb}
\allowdisplaybreaks
\setlength{\parindent}{0pt}
\setlength{\parskip}{0.5ex}
\raggedright
"""
_NO_WIDTH = {"left", "right", "mathrm", "operatorname", "mathbf", "textstyle", "textbf", "text",
             "displaystyle", "limits"}
_OPERATORS = {"otimes", "circ", "cdot", "in", "cup", "succ", "prec", "odot", "times", "quad"}


def _width(tex: str) -> float:
    """A rough width of math ``tex`` in units of one italic letter (an upper bound on purpose):
    sub- and superscripts count 0.75, binary operators and relations 1.8, commands 1."""
    total, i, scale = 0.0, 0, [1.0]
    n = len(tex)
    while i < n:
        ch = tex[i]
        if ch == "\\":
            j = i + 1
            while j < n and tex[j].isalpha():
                j += 1
            name = tex[i + 1:j] or tex[i + 1:i + 2]
            i = max(j, i + 2)
            if name in _NO_WIDTH:
                continue
            total += scale[-1] * (1.8 if name in _OPERATORS else 1.0)
            continue
        if ch in "_^":
            i += 1
            if i < n and tex[i] == "{":
                scale.append(scale[-1] * 0.75)
                i += 1
            else:
                total += scale[-1] * 0.75
                i += 1
            continue
        if ch == "{":
            scale.append(scale[-1])
        elif ch == "}":
            if len(scale) > 1:
                scale.pop()
        elif ch in "+=:-" and i + 1 < n and tex[i + 1] == " ":
            total += scale[-1] * 1.8
        elif ch != " " and ch != "&":
            total += scale[-1]
        i += 1
    return total


def _top_level_splits(tex: str, seps: tuple[str, ...]) -> list[str]:
    """``tex`` cut before each occurrence of one of ``seps`` outside braces and ``\\left…\\right``."""
    cuts, depth, i = [0], 0, 0
    while i < len(tex):
        if tex.startswith(r"\left", i) and not tex[i + 5:i + 6].isalpha():
            depth += 1
            i += 5
            continue
        if tex.startswith(r"\right", i) and not tex[i + 6:i + 7].isalpha():
            depth -= 1
            i += 6
            continue
        ch = tex[i]
        if depth == 1 and r"}\mathrm" in seps and tex.startswith(r"}\mathrm", i):
            cuts.append(i + 1)                  # after a \text{…} that runs into a name
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0 and i > 0 and any(tex.startswith(s, i) for s in seps):
            cuts.append(i)
        i += 1
    return [tex[a:b].strip() for a, b in zip(cuts, cuts[1:] + [len(tex)]) if tex[a:b].strip()]


# where a long right-hand side may break, best first: before = (a summary's body), before + or -,
# before ⊗, between factors
_BREAKS = ((" = ",), (" + ", " - "), (r" \otimes ",),
           (r" \left(", " W", " A^", " P_", " M_", " N_", " R_", " B_", " X", r" \mathcal", r"}\mathrm"))


def _pieces(tex: str, width: float, level: int = 0) -> list[str]:
    """``tex`` in pieces each narrower than ``width`` where the break points allow."""
    if _width(tex) <= width or level == len(_BREAKS):
        return [tex]
    parts = _top_level_splits(tex, _BREAKS[level])
    if len(parts) == 1:
        return _pieces(tex, width, level + 1)
    out = []
    for p in parts:
        out += _pieces(p, width, level + 1)
    return out


def _fill(pieces: list[str], first: float, rest: float) -> list[str]:
    """Greedy lines: as many pieces as fit (``first`` wide, then ``rest``)."""
    lines, cur = [], ""
    for p in pieces:
        room = first if not lines else rest
        trial = f"{cur} {p}".strip()
        if cur and _width(trial) > room:
            lines.append(cur)
            cur = p
        else:
            cur = trial
    return lines + ([cur] if cur else [])


def fit_rows(rows: list[str], width: float = DOCUMENT_WIDTH) -> list[str]:
    """``align`` rows (``lhs &= rhs``, ``&\\quad + t``, ``label &: body``) broken to fit ``width``.

    A left side wider than a third of the line moves into the right column above its body (in
    ``align`` the left column is as wide as its widest entry); a right side too wide for what is
    left breaks before ``+``, then before ``⊗``, then between factors, continuing indented.
    """
    split = [r.split("&", 1) if "&" in r else ["", r] for r in rows]
    wide = width / 3
    lhs_w = max((_width(a) for a, _ in split if _width(a) <= wide), default=0.0)
    out = []
    for lhs, rhs in split:
        lhs, rhs = lhs.strip(), rhs.strip()
        if _width(lhs) > wide:                  # a long label: on its own line, body below
            out.append(f"&{lhs}{rhs[:1] if rhs[:1] in '=:' else ''}")
            lhs, rhs = "", (rhs[1:].strip() if rhs[:1] in "=:" else rhs)
            rhs = rf"\qquad {rhs}"
        room = width - lhs_w
        if out and out[-1].startswith("&") and not lhs and _width(out[-1]) > room:
            out[-1] = "&" + _boxed(out[-1][1:], room, width)
        text = re.fullmatch(r"\\text\{(.*)\}([:=]?)", rhs)
        if text and _width(rhs) > room:           # prose cannot break inside \text: a paragraph box
            out.append(f"{lhs} &{_boxed(rhs, room, width)}".strip())
            continue
        if _width(rhs) <= room:
            out.append(f"{lhs} &{rhs}".strip())
            continue
        lines = _fill(_pieces(rhs, room - 2), room, room - 2)
        out.append(f"{lhs} &{lines[0]}".strip())
        out += [rf"&\qquad {line}" for line in lines[1:]]
    return out


def _boxed(tex: str, room: float, width: float) -> str:
    """``\\text{prose}`` (with a trailing ``:`` or ``=``) as a paragraph box ``room`` wide."""
    m = re.fullmatch(r"\\text\{(.*)\}([:=]?)", tex)
    if m is None:
        return tex
    return rf"\parbox[t]{{{round(0.95 * room / width, 2)}\linewidth}}{{\raggedright {m.group(1)}}}{m.group(2)}"


def _document_steps(steps: list[Step], printer: PathLatexPrinter, title: str) -> str:
    parts = [rf"\subsection*{{{latex_text(title)}}}"]
    for i, step in enumerate(steps, 1):
        parts.append(rf"\textbf{{{i}. {latex_prose(step.title)}.}} {latex_prose(step.text)}".rstrip())
        rows = fit_rows(latex_rows(printer, step.expr))
        parts.append("\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}")
    return "\n\n".join(parts)


def to_latex_document(objs, *, title: str | None = None, **settings) -> str:
    """A complete pdflatex document of expansions (or ``(heading, [expansions])`` sections):
    each step's prose as a paragraph, its rows in an ``align*`` broken to fit the page."""
    printer = make_printer(PathLatexPrinter, {**settings, "jupyter": False, "text": "latex"})
    items = objs if isinstance(objs, (list, tuple)) else [objs]
    body = []
    for item in items:
        if isinstance(item, tuple):
            heading, exps = item
            body.append(rf"\section*{{{latex_text(heading)}}}")
        else:
            exps = [item]
        for e in exps:
            if isinstance(e, Expansion):
                steps = derive(e, summarize_above=printer._settings["summarize_above"])
                body.append(_document_steps(steps, printer, _title(e.arch, e.target)))
            else:
                raise PathexpandError(f"a LaTeX document is made of expansions; got {type(e).__name__}")
    head = _PREAMBLE + (rf"\title{{{latex_text(title)}}}\date{{}}" + "\n" if title else "")
    start = "\\begin{document}\n" + ("\\maketitle\n" if title else "")
    return head + start + "\n\n".join(body) + "\n\\end{document}\n"
