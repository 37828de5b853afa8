"""Find the induction circuit of the bundled 2-layer model, three independent ways.

    python examples/04_induction_circuit.py [MODEL]

1. Behaviour: attention patterns on repeated random tokens ``[r, r]`` (``pe.detect_heads``).
2. Weights only: K-composition of every (layer-0 head → layer-1 head) pair against the
   score of random Gaussian weights of the same shapes (``pe.composition_scores``).
3. One prompt: the induction head's attention score on the token after the earlier copy,
   split exactly into (query path × key path) terms (``pe.attribute_scores``): the
   K-composition term with the previous-token head comes out on top.

``pe.induction_circuit(w)`` is the one rule that names the pair (1 and 2 together, with
thresholds; "none found" below them); ``pathexpand diagram``, the report and the demo use it.
"""

from __future__ import annotations

import sys

import numpy as np

import pathexpand as pe

TEXT = "def total(items):\n    return sum(items)\n\ndef total(items):\n    return sum("


def main(model: str = "attn-only-2l") -> None:
    w = pe.load(model)

    heads = pe.detect_heads(w, n_samples=32)
    prev, ind = (heads.top(1, kind=k)[0] for k in ("previous_token", "induction"))
    print(f"previous-token head: {prev.name} (mean attention on the previous token {prev.value:.2f})")
    print(f"induction head:      {ind.name} (mean attention on the token after the earlier copy {ind.value:.2f})")
    ind = ind.name

    comp = pe.composition_scores(w, kind="k_composition", baseline="random")
    records = [r for r in comp.to_records() if r["later"] == ind]
    best = max(records, key=lambda r: r["score"])
    k = "k_composition"
    print(f"\nK-composition into {ind} (null {comp.null_mean[k]:.4f} ± {comp.null_std[k]:.4f}):")
    for r in sorted(records, key=lambda r: -r["score"]):
        print(f"  {r['earlier']} → {ind}  {r['score']:.4f}  z {r['z']:+6.1f}")
    print(f"strongest K-composition into {ind}: {best['earlier']} → {ind}")
    print(f"pe.induction_circuit: {pe.induction_circuit(w).reason}")

    ids = np.asarray(w.tokenizer.encode(TEXT))
    _, cache = pe.run_with_cache(w, ids)
    layer, h = pe.names.parse_head(ind)
    query = len(ids) - 1
    key = int(np.asarray(cache.patterns[0, layer, h, query]).argmax())
    tok = w.tokenizer.token_str
    print(f"\non {TEXT!r}: {ind} at the last token {tok(int(ids[query]))!r} attends most to "
          f"position {key} ({tok(int(ids[key]))!r}, the token after the earlier {tok(int(ids[key - 1]))!r})")
    split = pe.attribute_scores(w, ids, head=ind, query=query, key=key)
    print(f"score {split.score:.3f} = Σ of {len(split.terms)} terms "
          f"(relative error {split.residual_error():.1e}); by kind:")
    for kind, value in split.by_kind().items():
        print(f"  {kind:<15} {value:+.3f}")
    print("terms that most favour this key over the others:")
    for t in split.top(3):
        print(f"  {t.name:<20} {t.kind:<15} value {t['score_term']:+.3f}  effect {t.value:+.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
