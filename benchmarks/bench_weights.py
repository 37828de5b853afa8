"""Weight-space tasks: full-OV-circuit norms, copying eigenvalues, composition scores.

Each is the same computation done two ways on the same weights: pathexpand's public routes
(the circuit builder ``pe.circuit``, ``pe.composition_scores``) and TransformerLens 3.9's
``FactoredMatrix`` / ``all_composition_scores``. pathexpand reads LayerNorm models through
``C diag(w) W`` readers and ``W C`` writers; TransformerLens's model is processed the same way in
setup (``fold_ln``, ``center_writing_weights``; not timed), so the two answers are the same numbers.
"""

from __future__ import annotations

import numpy as np
from common import Task, max_rel_diff, tl_model, weights_of

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


TASKS = [
    Task("ov_frobenius", "‖W_E W_OV W_U‖_F of every head (TL: (W_E @ OV @ W_U).norm())",
         "≥ 40× faster, ≤ 1/20 peak memory", ov_norm_ours, ov_norm_theirs, max_rel_diff),
    Task("ov_copying", "copying score Re Σλ/Σ|λ| of every full OV circuit (TL: .eigenvalues)",
         "≥ 15× faster", eig_ours, eig_theirs, max_rel_diff),
    Task("composition", "all Q, K and V composition scores (TL: all_composition_scores)",
         "≥ 6× faster, ≤ 1/10 peak memory", comp_ours, comp_theirs, max_rel_diff),
]
