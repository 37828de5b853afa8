"""Rank: every logit term of the bundled 2-layer model by a data-free metric of its weights.

    python examples/03_rank_terms.py [MODEL]

Each term's virtual weight matrix (``W_E W_OV^{0,1} W_OV^{1,2} W_U`` for ``L1H2∘L0H1``) is
kept factored: norms come from Gram matrices and eigenvalues from the small ``AB``/``BA``
rotation, so no ``d_vocab × d_vocab`` matrix is built. Prints the top terms by Frobenius
norm, the most copying heads, and the strongest K-composition pairs against their null.
"""

from __future__ import annotations

import sys

import pathexpand as pe


def main(model: str = "attn-only-2l") -> None:
    w = pe.load(model)
    exp = pe.expand_logits(pe.Architecture.from_weights(w))
    print(f"{w.name}: {len(exp)} logit terms, sources {', '.join(exp.sources)}")

    norms = pe.evaluate(exp, w, metric="frobenius")
    print("\ntop 5 terms by ‖W_E … W_U‖_F (norms do not add up, so no shares):")
    for row in norms.top(5):
        print(f"  {row.name:<12} {row.kind:<8} {row.value:8.1f}")

    copying = pe.evaluate(exp.filter(kind="head"), w, metric="copying")
    print("\nheads by copying score Re Σλ / Σ|λ| of W_E W_OV W_U (1 = pure copying):")
    for row in copying:
        print(f"  {row.name:<6} {row.value:+.3f}   positive share {row['positive_share']:.3f}")

    k = "k_composition"
    comp = pe.composition_scores(w, kind=k, baseline="random")
    print(f"\nK-composition, null mean {comp.null_mean[k]:.4f} ± {comp.null_std[k]:.4f}; top 3 pairs:")
    for row in comp.top(3):
        print(f"  {row['earlier']} → {row['later']}  score {row['score']:.4f}  z {row['z']:+.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
