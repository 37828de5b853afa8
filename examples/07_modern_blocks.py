"""Modern blocks: derive, measure and draw a model with RMSNorm, rotary positions,
grouped-query attention, SwiGLU MLPs and parallel attention + MLP (the bundled ``modern-2l``).

    python examples/07_modern_blocks.py [OUT_DIR] [MODEL]     # the diagram goes to OUT_DIR (out/)

Derive: the architecture's path count in closed form (``Π_l (2 + H_l)`` with parallel
blocks) and the score of a rotary head, ``W_Q R̃_Δ W_Kᵀ`` at the offset ``Δ = j − i``.
Measure: heads found from behaviour, K-composition under rotation (the mean over the
nearest 16 offsets) against its random null, an exact attribution of one logit.
Draw: the circuit diagram, or the top terms when no induction circuit is found.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pathexpand as pe
from pathexpand.render import to_text

TEXT = "for i in range(10):\n    print(i)\nfor j in range(10):\n    print(j)\nfor k in ra"


def main(out: str = "out", model: str = "modern-2l") -> None:
    w = pe.load(model)
    arch = pe.Architecture.from_weights(w)
    print(f"{w.name}: {arch}")
    c = w.config
    print(f"rotary on {c.rotary_dim} of {c.d_head} dims, base {c.rotary_base:g}; "
          f"{c.n_heads} query heads share {c.n_key_value_heads} key/value heads per layer")

    # derive -------------------------------------------------------------------------------
    exp = pe.expand_logits(arch)
    per_layer = " · ".join(f"(2 + {h})" for h in arch.n_heads)
    print(f"\n{arch.n_logit_paths('embed')} paths from the token embedding = {per_layer} "
          f"(skip, one head or the MLP per layer); {len(exp)} logit terms with the biases")
    scores = pe.expand_scores(arch, "L1H0", max_depth=0)
    print(to_text(scores[0]))

    # measure ------------------------------------------------------------------------------
    heads = pe.detect_heads(w)
    for kind in ("previous_token", "induction"):
        best = heads.ranking(kind)[0]
        print(f"\nbest {kind} head: {best.name} {best.value:.3f} (chance {best['baseline']:.3f})")
    print(pe.induction_circuit(w))

    comp = pe.composition_scores(w, "k_composition")
    print()
    print(comp.ranking("k_composition").top(3))

    res = pe.attribute(w, TEXT)
    print(f"\n{res.target_label} = {res.total:.3f}; residual error {res.residual_error():.1e}")
    print(res.ranking("path").top(5))

    # draw ---------------------------------------------------------------------------------
    from pathexpand.render.dot import default_circuit, diagram, write

    graph, highlight, title, _ = default_circuit(w, composition=comp)   # what `pathexpand diagram` draws
    Path(out).mkdir(parents=True, exist_ok=True)
    path = write(diagram(graph, highlight=highlight, title=title), Path(out) / "modern_circuit.svg")
    print(f"\nwrote {path.name}: {title}")


if __name__ == "__main__":
    main(*sys.argv[1:])
