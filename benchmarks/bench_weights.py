"""Weight-space tasks: full-OV-circuit norms, copying eigenvalues, composition scores.

Each is the same computation done two ways on the same weights: pathexpand's public routes
(the circuit builder ``pe.circuit``, ``pe.composition_scores``) and TransformerLens 3.9's
``FactoredMatrix`` / ``all_composition_scores``. pathexpand reads LayerNorm models through
``C diag(w) W`` readers and ``W C`` writers; TransformerLens's model is processed the same way in
setup (``fold_ln``, ``center_writing_weights``; not timed), so the two answers are the same numbers.
"""

from __future__ import annotations

import numpy as np
from common import Floor, Task, config_of, max_rel_diff, tl_model, weights_of

__all__ = ["TASKS"]


# Frobenius norm of all n_layers × n_heads full OV circuits W_E W_V W_O W_U -------------------
def ov_norm_ours(shape):
    import pathexpand as pe

    w = weights_of(shape)

    def run():
        return pe.circuit("OV", w).norm().numpy()

    return run


def ov_norm_theirs(shape):
    model = tl_model(shape, processed=True)

    def run():
        return (model.W_E @ model.OV @ model.W_U).norm().numpy()

    return run


# copying scores Re Σλ / Σ|λ| from the eigenvalues of every full OV circuit ----------------
def _copying(lam) -> np.ndarray:
    lam = np.asarray(lam)
    return lam.sum(-1).real / np.abs(lam).sum(-1)


def eig_ours(shape):
    import pathexpand as pe

    w = weights_of(shape)

    def run():
        return _copying(pe.circuit("OV", w).eigenvalues().numpy())

    return run


def eig_theirs(shape):
    model = tl_model(shape, processed=True)

    def run():
        return _copying((model.W_E @ model.OV @ model.W_U).eigenvalues.numpy())

    return run


# all Q, K and V composition scores [L, H, L, H] ------------------------------------------
def comp_ours(shape):
    import pathexpand as pe

    w = weights_of(shape)

    def run():
        cs = pe.composition_scores(w, "all", baseline=None)   # no null, like TransformerLens
        return np.stack([cs[f"{k}_composition"] for k in "qkv"])

    return run


def comp_theirs(shape):
    model = tl_model(shape, processed=True)

    def run():
        return np.stack([model.all_composition_scores(m).numpy() for m in "QKV"])

    return run


# floors ------------------------------------------------------------------------------------------
def vocab_gram(shape):
    """``W_Eᵀ W_E`` ``[d_model, d_model]``: the one vocabulary-sized product the norms need."""
    import torch

    W_E = torch.as_tensor(np.asarray(weights_of(shape)["W_E"]))

    def run():
        return (W_E.T @ W_E).numpy()

    return run


def vocab_product(shape):
    """``W_U W_E`` ``[d_model, d_model]``: the one vocabulary-sized product the eigenvalues need."""
    import torch

    w = weights_of(shape)
    W_E, W_U = torch.as_tensor(np.asarray(w["W_E"])), torch.as_tensor(np.asarray(w["W_U"]))

    def run():
        return (W_U @ W_E).numpy()

    return run


def composition_flops(shape) -> tuple[float, float]:
    """FLOPs of the Gram route (``numeric/composition.py``), closed form: ``(float32, float64)``.

    Per head a Gram ``M = Bᵀ(A ᵀA)B`` of ``d_model × d_model`` from ``[d, e]``/``[e, d]`` factors
    costs ``4 d e² + 2 d² e`` (float32); the left Grams once, the right Grams once per kind (and
    rotary offset for Q/K); the contraction of packed triangles ``P = d(d+1)/2`` is
    ``2 P`` per (earlier head, later head, offset) pair (float64)."""
    c = config_of(shape)
    L, H, d, e = c["n_layers"], c["n_heads"], c["d_model"], c["d_head"]
    m = min(16, c["n_ctx"]) if c.get("positional") == "rotary" else 1   # rotary.summary_offsets
    gram = 4 * d * e * e + 2 * d * d * e
    P = d * (d + 1) // 2
    pairs = sum(l2 * H * H for l2 in range(1, L))                       # (earlier, later) head pairs
    f32 = (L - 1) * H * gram * (1 + 2 * m + 1)                          # left; Q, K (× offsets); V
    f64 = 2 * P * pairs * (2 * m + 1)
    return float(f32), float(f64)


TASKS = [
    Task("ov_frobenius", "‖W_E W_OV W_U‖_F of every head (TL: (W_E @ OV @ W_U).norm())",
         "≥ 40× faster, ≤ 1/20 peak memory", ov_norm_ours, ov_norm_theirs, max_rel_diff,
         floors=(Floor("vocabulary Gram W_Eᵀ W_E", build=vocab_gram),)),
    Task("ov_copying", "copying score Re Σλ/Σ|λ| of every full OV circuit (TL: .eigenvalues)",
         "≥ 15× faster", eig_ours, eig_theirs, max_rel_diff,
         floors=(Floor("W_U W_E", build=vocab_product),)),
    Task("composition", "all Q, K and V composition scores (TL: all_composition_scores)",
         "≥ 20× faster, ≤ 1/15 peak memory", comp_ours, comp_theirs, max_rel_diff,
         floors=(Floor("Gram-route FLOPs at the measured GEMM rate", flops=composition_flops),)),
]
