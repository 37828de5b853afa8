"""How each symbol family of the path algebra is written in LaTeX and in Unicode text.

One table for every printer: ``W_OV`` is ``W_{OV}`` in LaTeX and ``W_OV`` in text; heads'
indices are superscripts (``W_{OV}^{1,0}``), stream-like symbols take subscripts (``x_{0}``,
``T_{pos}``). Prose is made safe for pdflatex by ``latex_text``.
"""

from __future__ import annotations

import re

from ..errors import PathexpandError

__all__ = [
    "expansion_steps",
    "selection_lines",
    "LATEX_BASE",
    "SUBSCRIPT_FAMILIES",
    "TEXT_BASE",
    "latex_index_name",
    "latex_label",
    "latex_prose",
    "latex_text",
    "make_printer",
    "markdown_prose",
    "mathjax_text",
    "text_index_name",
]

LATEX_BASE = {
    "Id": r"\mathrm{Id}",
    "1": r"\mathbf{1}",
    "t": "t",
    "A": "A",
    "N_ln1": r"N_{\mathrm{ln1}}",
    "N_ln2": r"N_{\mathrm{ln2}}",
    "N_lnf": r"N_{\mathrm{lnf}}",
    "W_ln1": r"W_{\mathrm{ln1}}",
    "W_ln2": r"W_{\mathrm{ln2}}",
    "W_lnf": r"W_{\mathrm{lnf}}",
    "b_ln1": r"b_{\mathrm{ln1}}",
    "b_ln2": r"b_{\mathrm{ln2}}",
    "b_lnf": r"b_{\mathrm{lnf}}",
    "W_E": "W_E",
    "W_pos": r"W_{pos}",
    "W_U": "W_U",
    "b_U": "b_U",
    "W_OV": r"W_{OV}",
    "W_QK": r"W_{QK}",
    "Rot": "R",
    "Theta": r"\Theta",
    "q": "q",
    "k": "k",
    "W_Q": "W_Q",
    "W_K": "W_K",
    "W_O": "W_O",
    "W_V": "W_V",
    "b_V": "b_V",
    "b_Q": "b_Q",
    "b_K": "b_K",
    "b_O": "b_O",
    "b_out": r"b_{out}",
    "b_in": r"b_{in}",
    "B_in": r"B_{in}",
    "M": r"\mathcal{M}",
    "O": r"\mathcal{O}",
    "R": "R",
    "x": "x",
    "x_mid": "x'",
    "X": "X",
    "logits": r"\mathrm{logits}",
    "T": "T",
    "C": r"C_{QK}",
    "S": "S",
    "F": "F",
    "W_in": r"W_{in}",
    "W_out": r"W_{out}",
    "G": "G",
    "W_gate": r"W_{gate}",
    "act": r"\mathrm{act}",
    "LN1": r"\mathrm{LN}_{1}",
    "LN2": r"\mathrm{LN}_{2}",
    "LNf": r"\mathrm{LN}_{f}",
    "RMS1": r"\mathrm{RMS}_{1}",
    "RMS2": r"\mathrm{RMS}_{2}",
    "RMSf": r"\mathrm{RMS}_{f}",
    "MLP": r"\mathrm{MLP}",
    "dots": r"\cdots",
}

TEXT_BASE = {
    "Id": "Id",
    "1": "𝟙",
    "N_ln1": "N_ln1",
    "N_ln2": "N_ln2",
    "N_lnf": "N_lnf",
    "M": "𝓜",
    "O": "𝒪",
    "x_mid": "x'",
    "C": "C_QK",
    "Rot": "R",
    "Theta": "Θ",
    "dots": "⋯",
}

# families whose index is written as a subscript (streams, maps, path shares)
SUBSCRIPT_FAMILIES = frozenset({"x", "x_mid", "X", "T", "R", "Rot", "Theta", "q", "k"})

_SUB_DIGITS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def latex_index_name(name: str) -> str:
    """``h_1`` → ``h_{1}``, ``l_h_1`` → ``l_{h_{1}}``, ``emptyset`` → ``\\varnothing``."""
    if name == "emptyset":
        return r"\varnothing"
    if "_" in name:
        base, sub = name.split("_", 1)
        return f"{base}_{{{latex_index_name(sub)}}}"
    return name


def text_index_name(name: str) -> str:
    """``h_1`` → ``h₁``, ``l_h_1`` → ``l(h₁)``, ``p_q`` → ``p_q``, ``emptyset`` → ``∅``,
    ``j-i`` → ``j−i``."""
    if name == "emptyset":
        return "∅"
    if "-" in name:
        return name.replace("-", "−")
    if "_" in name:
        base, sub = name.split("_", 1)
        if base == "l":  # the layer of a generic head: l(h₁)
            return f"l({text_index_name(sub)})"
        if sub.isdigit():
            return base + sub.translate(_SUB_DIGITS)
        return f"{base}_{sub}"
    return name


# Unicode in prose → something pdflatex typesets without extra packages
_LATEX_CHARS = {
    "σ": r"$\sigma$", "⊗": r"$\otimes$", "Σ": r"$\Sigma$", "Π": r"$\Pi$", "ᵀ": r"$^\top$",
    "≻": r"$\succ$", "∘": r"$\circ$", "𝟙": r"$\mathbf{1}$", "𝓜": r"$\mathcal{M}$",
    "𝒪": r"$\mathcal{O}$", "√": r"$\surd$", "…": r"\ldots{}", "⋯": r"$\cdots$", "—": "---",
    "–": "--", "−": "$-$", "²": r"$^2$", "∅": r"$\varnothing$", "⊙": r"$\odot$",
    "→": r"$\to$", "≤": r"$\le$", "≥": r"$\ge$", "×": r"$\times$", "·": r"$\cdot$",
    "∈": r"$\in$", "∪": r"$\cup$", "≠": r"$\neq$", "’": "'", "‘": "`", "“": "``", "”": "''",
    "ʰ": r"$^h$", "≈": r"$\approx$", "θ": r"$\theta$", "Θ": r"$\Theta$", "⌊": r"$\lfloor$",
    "⌋": r"$\rfloor$",
}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
}


def latex_text(text: str) -> str:
    """Prose made safe for LaTeX text mode (pdflatex, no extra packages)."""
    out = []
    for ch in text:
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch in _LATEX_CHARS:
            out.append(_LATEX_CHARS[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            raise ValueError(f"no LaTeX spelling for {ch!r} in {text!r}")
    return "".join(out)


def mathjax_text(text: str) -> str:
    """Prose for ``\\text{…}`` in MathJax/KaTeX (Unicode is fine; braces and backslashes not)."""
    return re.sub(r"[{}\\$]", lambda m: {"{": "(", "}": ")", "\\": "/", "$": "S"}[m.group()], text)


_SCRIPT = r"(?:_\{[^{}]*\}|_[A-Za-z0-9]+(?:,[A-Za-z0-9]+)*|\^\{[^{}]*\}|\^[A-Za-z0-9]+(?:,[A-Za-z0-9]+)*|ᵀ)"
_SYMBOL = re.compile(rf"(?<![\w\\])([A-Za-zΣΠσθΘ𝓜𝒪]+{_SCRIPT}+)(?![\w])")
_MATH_BASE = {"Σ": r"\Sigma", "Π": r"\Pi", "σ": r"\sigma", "θ": r"\theta", "Θ": r"\Theta",
              "𝓜": r"\mathcal{M}", "𝒪": r"\mathcal{O}"}


def _symbol_math(token: str) -> str:
    """``W_OV^h`` → ``W_{OV}^{h}``, ``W_Eᵀ`` → ``W_{E}^{\\top}``, ``N^{l_h}`` → ``N^{l_{h}}``."""
    m = re.match(r"[A-Za-zΣΠσθΘ𝓜𝒪]+", token)
    base, rest = m.group(), token[m.end():]
    scripts: list[list[str]] = []
    for script in re.findall(_SCRIPT, rest):
        if script == "ᵀ":  # W_Q^hᵀ: one superscript {h\top}, never a double superscript
            if scripts and scripts[-1][0] == "^":
                scripts[-1][1] += r"\top"
            else:
                scripts.append(["^", r"\top"])
            continue
        mark, body = script[0], script[1:].strip("{}").replace("−", "-")
        scripts.append([mark, latex_index_name(body) if "_" in body else body])
    return "".join(_MATH_BASE.get(c, c) for c in base) + "".join(f"{m}{{{b}}}" for m, b in scripts)


def latex_prose(text: str) -> str:
    """Prose for pdflatex: symbols like ``W_OV^h`` as inline math, the rest escaped."""
    out, pos = [], 0
    for m in _SYMBOL.finditer(text):
        out.append(latex_text(text[pos:m.start()]))
        out.append(f"${_symbol_math(m.group(1))}$")
        pos = m.end()
    out.append(latex_text(text[pos:]))
    return "".join(out)


def markdown_prose(text: str) -> str:
    """Prose for Markdown: symbols like ``W_OV^h`` as ``$W_{OV}^{h}$``, the rest unchanged."""
    return _SYMBOL.sub(lambda m: f"${_symbol_math(m.group(1))}$", text)


def latex_label(name: str) -> str:
    """A term name in math mode: ``L1H0∘L0H1`` → ``\\mathrm{L1H0} \\circ \\mathrm{L0H1}``;
    a prose label (with spaces, not a score name) in ``\\text{}``."""
    if " " in name and not name.startswith("q:"):
        return rf"\text{{{latex_text(name)}}}"
    def part(p: str) -> str:
        p = p.replace("_", r"\_").replace(":", "{:}")
        return rf"\mathrm{{{p}}}"

    sides = [" \\circ ".join(part(p) for p in side.split("∘")) for side in name.split(" · ")]
    return r" \cdot ".join(sides)


OUR_SETTINGS = ("summarize_above", "form", "jupyter", "text", "width")


def make_printer(cls, settings: dict):
    """``cls(settings)``, with bad settings reported as ``PathexpandError``."""
    form = settings.get("form", "tensor")
    if form not in ("tensor", "right"):
        raise PathexpandError(f"form must be 'tensor' (the paper's) or 'right', got {form!r}")
    try:
        return cls(settings)
    except TypeError as exc:
        ours = [k for k in OUR_SETTINGS if k in cls._default_settings]
        raise PathexpandError(
            f"{exc} Settings of {cls.__name__}: {', '.join(ours)} (and sympy's own)"
        ) from None


# what a printer prints for an Expansion or a Selection ------------------------------------------
def expansion_steps(exp, printer) -> tuple[list, str]:
    """The derivation steps of an ``Expansion`` (summarised as the printer says) and its title."""
    from ..symbolic.derivation import derive

    steps = derive(exp, summarize_above=printer._settings["summarize_above"])
    what = "logits" if exp.target == "logits" else f"attention scores of {exp.target}"
    return steps, f"Path expansion of the {what}: {exp.arch}"


def selection_lines(sel, printer):
    """``Lines`` of one labelled row per selected term, or one summary above ``summarize_above``."""
    from ..symbolic.symbols import Labeled, Lines, Summary

    n, limit = sel.n_terms, printer._settings["summarize_above"]
    if n > limit:
        first = next(iter(sel))
        return Lines(Summary(n, "selected terms", first.name, first.expr))
    form = printer._settings["form"]
    return Lines(*(Labeled(t.name, t.right_expr if form == "right" else t.expr) for t in sel))
