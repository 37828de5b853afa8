"""Weight processing as TransformerLens does it; each step keeps the model's function.

- ``fold_layernorm``: ``LN(x) W + b_W = LNPre(x) (diag(w) W) + (b W + b_W)`` for every reader
  of a LayerNorm (``W_Q/W_K/W_V`` of ln1, ``W_in`` (and ``W_gate``) of ln2, ``W_U`` of
  ln_final); the model then has ``normalization="LNPre"``. Readers are centred over ``d_model``
  too (their input has zero mean), as TL's ``fold_layer_norm(center_weights=True)``. RMSNorm
  folds the same way without centring or bias, to ``"RMSPre"``.
- ``center_writing_weights``: ``W ← W - mean_{d_model}(W)`` for everything that writes to
  the residual stream (``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``): exact only
  when every reader is a LayerNorm, which removes the mean anyway.
- ``center_unembed``: ``W_U ← W_U - mean_vocab(W_U)``, ``b_U ← b_U - mean(b_U)``: shifts every
  logit of a position by the same amount, so log-probs (not logits) are unchanged.
- ``fold_value_biases``: ``b_O ← b_O + Σ_h b_V^h W_O^h``, ``b_V ← 0``: exact because every row
  of an attention pattern sums to one.

All return new ``Weights`` (name, card and tokenizer kept); computation in float64, the
result in the input's dtype. The LayerNorm algebra (``C diag(w) W``, ``W C``) is
``numeric.norm``'s, the same that data-free circuits use.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PathexpandError
from . import norm
from .weights import Weights, as_weights

__all__ = [
    "center_unembed",
    "center_writing_weights",
    "fold_layernorm",
    "fold_value_biases",
    "process_weights",
]


def fold_layernorm(weights: Weights, *, center_weights: bool = True) -> Weights:
    """Fold every norm's ``w`` (and LayerNorm's ``b``) into the weights that read it; →
    ``"LNPre"`` (RMSNorm: ``"RMSPre"``).

    ``W' = w[:, None] · W`` and ``b' = b_W + b W`` for ``W_Q/W_K/W_V`` (ln1), ``W_in``/``W_gate``
    (ln2) and ``W_U`` (ln_final); with ``center_weights`` the folded ``W'`` of a LayerNorm are
    centred over ``d_model`` (RMSNorm does not centre). A folded model is returned unchanged.
    """
    weights = as_weights(weights)
    c = weights.config
    if c.normalization in ("LNPre", "RMSPre"):
        return weights
    if c.normalization not in ("LN", "RMS"):
        raise PathexpandError(
            f"fold_layernorm needs a model with a norm (normalization='LN' or 'RMS'); this one has "
            f"normalization={c.normalization!r}"
        )
    rms = c.normalization == "RMS"
    if c.gated_mlp and not rms:
        raise PathexpandError(
            "cannot fold ln2 of a gated MLP with LayerNorm: its bias b would need a gate bias "
            "b W_gate inside act(·), which the gated MLP does not have"
        )
    if c.positional == "shortformer":
        raise PathexpandError(
            "cannot fold ln1 of a shortformer model: W_pos is added after ln1 to the query and "
            "key inputs, so ln1.w cannot move into W_Q/W_K (TransformerLens refuses this too)"
        )
    p, dtype = _f64(weights)
    new = {}

    def fold(W, b_W, name, axis):
        """Fold LayerNorm ``name`` into ``W`` (its d_model axis is ``axis``) and bias ``b_W``."""
        t = torch.from_numpy
        W_new, b_new = norm.fold(t(W), t(b_W), t(p[name + ".w"]), None if rms else t(p[name + ".b"]),
                                 axis=axis, center=center_weights and not rms)
        return W_new.numpy(), b_new.numpy()

    for l in range(c.n_layers):
        a, m = f"blocks.{l}.attn", f"blocks.{l}.mlp"
        if c.n_heads:
            for x in "QKV":   # W_x [H, d_model, d_head], b_x [H, d_head]
                W, b = p[f"{a}.W_{x}"], p[f"{a}.b_{x}"]
                new[f"{a}.W_{x}"], new[f"{a}.b_{x}"] = fold(W, b, f"blocks.{l}.ln1", axis=1)
        if c.d_mlp is not None and c.gated_mlp:   # RMS: no bias moves; b_in is after the gate
            zero = np.zeros(c.d_mlp)
            new[f"{m}.W_in"] = fold(p[f"{m}.W_in"], zero, f"blocks.{l}.ln2", axis=0)[0]
            new[f"{m}.W_gate"] = fold(p[f"{m}.W_gate"], zero, f"blocks.{l}.ln2", axis=0)[0]
        elif c.d_mlp is not None:  # W_in [d_model, d_mlp]
            W, b = p[f"{m}.W_in"], p[f"{m}.b_in"]
            new[f"{m}.W_in"], new[f"{m}.b_in"] = fold(W, b, f"blocks.{l}.ln2", axis=0)
    new["W_U"], new["b_U"] = fold(p["W_U"], p["b_U"], "ln_final", axis=0)
    return _replace(weights, new, dtype, normalization="RMSPre" if rms else "LNPre")


def center_writing_weights(weights: Weights) -> Weights:
    """Subtract the mean over ``d_model`` from ``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``.

    Only for models with LayerNorm (``"LN"``/``"LNPre"``), where it changes no logit. With
    shortformer positions ``W_pos`` is left alone: it never writes to the residual stream
    (TransformerLens centres it anyway, which changes a shortformer model's attention).
    """
    weights = as_weights(weights)
    c = weights.config
    if c.normalization not in ("LN", "LNPre"):
        raise PathexpandError(
            "center_writing_weights keeps the logits equal only when every reader of the "
            f"residual stream is a LayerNorm; this model has normalization={c.normalization!r}"
        )
    p, dtype = _f64(weights)
    keys = ["W_E"] + (["W_pos"] if c.positional == "standard" else [])
    for l in range(c.n_layers):
        if c.n_heads:
            keys += [f"blocks.{l}.attn.W_O", f"blocks.{l}.attn.b_O"]
        if c.d_mlp is not None:
            keys += [f"blocks.{l}.mlp.W_out", f"blocks.{l}.mlp.b_out"]
    new = {k: norm.writer(torch.from_numpy(p[k]), c.normalization).numpy() for k in keys}
    return _replace(weights, new, dtype)


def center_unembed(weights: Weights) -> Weights:
    """``W_U ← W_U - mean_vocab(W_U)``, ``b_U ← b_U - mean(b_U)``: log-probs unchanged, logits shift."""
    weights = as_weights(weights)
    p, dtype = _f64(weights)
    new = {k: p[k] - p[k].mean(axis=-1, keepdims=True) for k in ("W_U", "b_U")}
    return _replace(weights, new, dtype)


def fold_value_biases(weights: Weights) -> Weights:
    """``b_O ← b_O + Σ_h b_V^h W_O^h`` and ``b_V ← 0`` in every layer (rows of A sum to one)."""
    weights = as_weights(weights)
    c = weights.config
    if not c.n_heads:
        return weights
    p, dtype = _f64(weights)
    new = {}
    for l in range(c.n_layers):
        a = f"blocks.{l}.attn"
        b_V = c.per_query_head(np.asarray(p[f"{a}.b_V"]), 0)        # per query head [H, e]
        new[f"{a}.b_O"] = p[f"{a}.b_O"] + np.einsum("he,hed->d", b_V, p[f"{a}.W_O"])
        new[f"{a}.b_V"] = np.zeros_like(p[f"{a}.b_V"])
    return _replace(weights, new, dtype)


def process_weights(
    weights: Weights,
    *,
    fold_ln: bool = True,
    center_writing: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> Weights:
    """All four steps in TransformerLens's order (``load_and_process_state_dict``).

    Steps that do not apply to the model are skipped as TL skips them: no norm folding without
    a norm (nor of a shortformer model's LN, nor of LayerNorm before a gated MLP), no
    writing-weight centring without LayerNorm.
    """
    weights = as_weights(weights)
    c = weights.config
    w = weights
    has_ln = c.normalization in ("LN", "LNPre")
    if fold_ln and c.positional != "shortformer" and (
        c.normalization == "RMS" or (c.normalization == "LN" and not c.gated_mlp)
    ):
        w = fold_layernorm(w)
    if center_writing and has_ln:
        w = center_writing_weights(w)
    if center_unembed:
        w = _center_unembed(w)
    if fold_value_biases:
        # TL centres b_O once more here; after center_writing_weights W_O is centred, so
        # Σ_h b_V^h W_O^h has zero mean and b_O stays centred without it.
        w = _fold_value_biases(w)
    return w


_center_unembed = center_unembed
_fold_value_biases = fold_value_biases


# helpers --------------------------------------------------------------------------------
def _f64(weights):
    return {k: v.astype(np.float64) for k, v in weights.state_dict().items()}, weights.dtype


def _replace(weights, new, dtype, **config):
    return weights.replace({k: v.astype(dtype) for k, v in new.items()}, **config)
