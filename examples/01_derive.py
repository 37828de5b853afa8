"""Derive: a 2-layer, 4-head attention-only transformer as a sum over paths (no weights).

    python examples/01_derive.py

Prints the term counts (checked against the closed form Π_l (1 + H_l)), the virtual heads
through the induction head's slot L1H2, the K-composition terms of L1H2's attention score,
and the LaTeX of one term. Needs sympy only: no torch is imported.
"""

from __future__ import annotations

import math
import sys

import pathexpand as pe
from pathexpand.render import to_latex, to_text


def main() -> None:
    arch = pe.Architecture(2, 4, positional=None)  # the paper's objects: no positions, no biases
    logits = pe.expand_logits(arch)
    closed_form = math.prod(1 + h for h in arch.n_heads)
    print(f"{arch}: {len(logits)} logit terms; closed form Π_l (1 + H_l) = {closed_form}")
    for kind in ("direct", "head", "virtual"):
        print(f"  {kind:<8} {logits.count(kind=kind):>2} terms")

    print("\nvirtual heads read by L1H2 (V-composition):")
    for term in logits.filter(through="L1H2", composition="v_composition"):
        print(f"  {term.name:<10} {to_text(term)}")

    scores = pe.expand_scores(arch, head="L1H2")
    kinds = ("direct", "q_composition", "k_composition", "qk_composition")
    print(f"\nL1H2's attention score: {len(scores)} (query path, key path) terms:",
          ", ".join(f"{k} {scores.count(kind=k)}" for k in kinds))
    for term in scores.filter(kind="k_composition"):
        print(f"  {term.name:<18} {to_text(term)}")

    term = logits["L1H2∘L0H1"]
    print("\nLaTeX of L1H2∘L0H1 (paper notation):", to_latex(term))
    print("right-multiplying form:             ", to_latex(term, form="right"))
    print(f"\ntorch imported: {'torch' in sys.modules}")  # the symbolic layer never needs it


if __name__ == "__main__":
    main()
