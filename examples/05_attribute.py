"""Attribute: split one logit of a prompt exactly over paths, then find the top paths with a proof.

    python examples/05_attribute.py [MODEL]

Attention patterns are recorded from one forward pass and frozen; the model is then
linear in its sources, so the contributions of all paths plus the constants (``b_U``)
add up to the model's own logit — ``residual_error()`` says how closely (float32
rounding). ``pe.top_k_paths`` finds the largest paths by branch and bound and proves a
bound on every path it did not list.
"""

from __future__ import annotations

import sys

import pathexpand as pe

TEXT = "def total(items):\n    return sum(items)\n\ndef total(items):\n    return sum("


def main(model: str = "attn-only-2l") -> None:
    w = pe.load(model)
    res = pe.attribute(w, TEXT)  # default target: the logit of the model's own top prediction
    print(f"{w.name}: {res.target_label}")
    print(f"model logit {res.total:.4f}; {res.n_paths} paths + constants; "
          f"relative residual error {res.residual_error():.1e}")

    print("\ntop 5 paths:")
    for row in res.ranking("path").top(5):
        print(f"  {row.name:<12} {row.kind:<8} {row.value:+.3f}")
    print("top 3 heads (every path through the head):")
    for row in res.ranking("node").top(3):
        print(f"  {row.name:<12} {row.value:+.3f}")

    top = pe.top_k_paths(w, TEXT, k=3)
    status = "complete" if top.complete else f"incomplete ({top.stopped_by})"
    print(f"\ncertified top 3 ({status}, {top.visited} prefixes visited):")
    for name, value in zip(top.names, top.values):
        print(f"  {name:<12} {value:+.3f}")
    print(f"every unlisted path has |contribution| ≤ {top.certificate:.3f}; "
          f"the 3 paths explain {top.explained:.1%} of the logit (without b_U)")

    diff = pe.attribute(w, TEXT, diff=("i", "s"))  # the earlier copy continued with 'i' (items)
    best = diff.ranking("path").top(1)[0]
    print(f"\nlogit('i') − logit('s') = {diff.total:+.3f}; the largest path is {best.name} ({best.value:+.3f})")

if __name__ == "__main__":
    main(*sys.argv[1:2])
