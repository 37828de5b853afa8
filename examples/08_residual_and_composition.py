"""The residual stream and composition: virtual weights, additive heads, Q/K/V-composition
against its random baseline, the induction head's QK term through the previous-token head,
why shortformer models cannot do pointer arithmetic, and a skip-trigram a factored head
cannot get right.

    python examples/08_residual_and_composition.py

Pages: docs/residual_stream.md and docs/composition.md (which derive and check each step).
"""

from __future__ import annotations

import numpy as np

import pathexpand as pe


def weight(w, name: str) -> np.ndarray:
    """A weight as a float64 array."""
    return np.asarray(w[name], np.float64)


def ratio(a: np.ndarray, b: np.ndarray) -> float:
    """‖a b‖_F / (‖a‖_F ‖b‖_F): 1/√d_model on average for random matrices."""
    return float(np.linalg.norm(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    w = pe.load("attn-only-2l")
    c = w.config
    W_O = [weight(w, f"blocks.{l}.attn.W_O") for l in range(c.n_layers)]              # [H, e, d]

    # virtual weights W_O^{h1} W_I^{h2}: how much a layer-1 input reads a layer-0 head ------
    rows = sorted(((ratio(W_O[0][h1], weight(w, f"blocks.1.attn.W_{i}")[h2]), f"L0H{h1} → L1H{h2}.{i.lower()}")
                   for h1 in range(c.n_heads) for h2 in range(c.n_heads) for i in "QKV"), reverse=True)
    print(f"virtual weights ‖W_O W_I‖ / (‖W_O‖ ‖W_I‖), 1/√d_model = {c.d_model ** -0.5:.4f}:")
    for r, name in rows[:3]:
        print(f"  {name:16} {r:.4f}")

    # heads are additive: concat(z) W_O = Σ_h z^h W_O^h = what layer 0 added to the stream ------
    ids = np.asarray(w.tokenizer.encode("def forward(self, x):\n    return self.forward(x"))
    _, cache = pe.run_with_cache(w, ids, dtype="float64")
    z = cache.z[0, 0].numpy()                                                          # [H, pos, e]
    b_O = weight(w, "blocks.0.attn.b_O")
    concat = z.transpose(1, 0, 2).reshape(len(ids), -1) @ W_O[0].reshape(-1, c.d_model) + b_O
    per_head = sum(z[h] @ W_O[0][h] for h in range(c.n_heads)) + b_O                  # [pos, d_model]
    added = (cache.resid_pre[0, 1] - cache.resid_pre[0, 0]).numpy()                   # the forward pass's own
    print(f"\nlayer 0: max |concat − Σ_h| {np.abs(concat - per_head).max():.1e}, "
          f"max |Σ_h − stream increment| {np.abs(per_head - added).max():.1e}")

    # composition scores of the three kinds, against the Gaussian null ------------------------
    cs = pe.composition_scores(w)
    print()
    for kind in cs.kinds:
        top = cs.ranking(kind)[0]
        print(f"{kind}: top {top.name} {top['score']:.4f} (null {cs.null_mean[kind]:.4f}, z {top['z']:+.1f})")

    # the induction head's QK term through the previous-token head -----------------------------
    arch = pe.Architecture.from_weights(w)
    print()
    for head, name in (("L1H2", "q:direct · k:L0H1"), ("L1H1", "q:direct · k:L0H1")):
        term = pe.expand_scores(arch, head=head)[name]
        copying = pe.evaluate([term], w, metric="copying")[0]
        dense = pe.circuit(term, w).dense().double().numpy()                          # 256×256: small here
        on_diag = np.mean(dense.argmax(1) == np.arange(c.d_vocab))
        print(f"{head} {name}: copying {copying.value:+.4f}, diagonal is the row maximum for {on_diag:.1%} of tokens")

    # pointer arithmetic needs positions in the stream -----------------------------------------
    print()
    for positional in ("standard", "shortformer"):
        scores = pe.expand_scores(pe.Architecture(2, 4, positional=positional), head="L1H0")
        moved = [t.name for t in scores.filter(composition="q_composition") if t.name.startswith("q:pos:")]
        print(f"{positional}: {len(moved)} Q-composition terms through a moved position")

    # a factored skip-trigram: one OV row for every destination --------------------------------
    w1 = pe.load("attn-only-1l")
    head, A, C1, C2 = "L0H0", "n", "m", "a"
    row = pe.circuit(("embed", head), w1).row(w1.tokenizer.encode(A)[0]).double().numpy()
    print(f"\n{head} attending to '{A}' adds {row[ord(C1)]:+.2f} to logit('{C1}') and {row[ord(C2)]:+.2f} to logit('{C2}')")
    for prompt, wanted in (("dyna", C1), ('ure(" OptionalRelease "," Mand', C2)):   # held-out stdlib text
        res = pe.attribute(w1, prompt, target=("diff", C1, C2), views=("path",))
        print(f"  {prompt!r:32} (text says '{wanted}'): {head} → logit('{C1}') − logit('{C2}') "
              f"{float(np.ravel(res.path(head))[0]):+.2f}, model {res.total:+.2f}")


if __name__ == "__main__":
    main()
