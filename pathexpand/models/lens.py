"""TransformerLens ``HookedTransformer`` → ``Weights`` (its names and shapes are already ours).

Only the config needs reading: which positional embedding (standard, shortformer, rotary
with its dims, base and pairing), which normalisation (LayerNorm or RMSNorm), which
activation, grouped-query heads, gated MLPs and parallel blocks, and whether the model uses
a feature the path expansion cannot express (ALiBi, local attention, soft caps, SoLU,
mixtures of experts, ...). Those raise ``UnsupportedArchitecture`` naming the feature,
before anything is built.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import PathexpandError, UnsupportedArchitecture, require
from ..numeric.weights import ACT_FNS, Weights

__all__ = ["config_from_transformer_lens", "from_transformer_lens"]

_POSITIONAL = {"standard": "standard", "shortformer": "shortformer", "rotary": "rotary"}
_NORMALIZATION = {None: None, "LN": "LN", "LNPre": "LNPre", "RMS": "RMS", "RMSPre": "RMSPre"}


def _enabled(value) -> bool:
    """A soft cap / clip value counts as enabled when it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0 < value < math.inf


# (config attribute, test on its value, feature name); the first that fires is reported
_UNSUPPORTED = (
    ("positional_embedding_type", lambda v: v == "alibi", "ALiBi attention biases"),
    ("positional_embedding_type", lambda v: v == "relative_positional_bias", "relative positional biases"),
    ("positional_embedding_type", lambda v: v not in _POSITIONAL, "this positional embedding type"),
    ("num_experts", lambda v: bool(v), "mixture-of-experts MLPs (num_experts)"),
    ("normalization_type", lambda v: v not in _NORMALIZATION, "this normalization_type"),
    ("use_NTK_by_parts_rope", bool, "rescaled rotary frequencies (use_NTK_by_parts_rope)"),
    ("rotary_adjacent_pairs", lambda v: v not in (True, False), "this rotary pairing"),
    ("final_rms", bool, "an RMSNorm final norm after LayerNorm blocks (final_rms)"),
    ("use_local_attn", bool, "local attention (use_local_attn / attn_types)"),
    ("attn_types", lambda v: v is not None and any(t != "global" for t in v),
     "local attention (use_local_attn / attn_types)"),
    ("window_size", lambda v: v is not None, "sliding-window attention (window_size)"),
    ("use_attn_scale", lambda v: v is False, "attention without the 1/sqrt(d_head) scale (use_attn_scale=False)"),
    ("scale_attn_by_inverse_layer_idx", bool, "attention scaled by inverse layer index"),
    ("use_normalization_before_and_after", bool, "normalisation after attention and MLP"),
    ("post_embedding_ln", bool, "LayerNorm after the embedding (post_embedding_ln)"),
    ("use_qk_norm", bool, "query/key normalisation (use_qk_norm)"),
    ("clip_qkv", _enabled, "clipped queries/keys/values (clip_qkv)"),
    ("use_logn_attn", bool, "log-n attention scaling (use_logn_attn)"),
    ("use_attention_sinks", bool, "attention sinks (use_attention_sinks)"),
    ("attn_scores_soft_cap", _enabled, "soft-capped attention scores (attn_scores_soft_cap)"),
    ("output_logits_soft_cap", _enabled, "soft-capped logits (output_logits_soft_cap)"),
)
# TransformerLens activation names that are ours under another name (the same tanh formula)
_ACT_ALIASES = {"gelu_pytorch_tanh": "gelu_new"}
_POST_NORM = ("Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoeForCausalLM")


def config_from_transformer_lens(cfg: Any) -> dict:
    """Our config fields from a ``HookedTransformerConfig`` (raises on unsupported features)."""
    for attr, test, feature in _UNSUPPORTED:
        if not hasattr(cfg, attr):
            continue
        value = getattr(cfg, attr)
        if attr == "final_rms" and getattr(cfg, "normalization_type", None) in ("RMS", "RMSPre"):
            continue
        if test(value):
            raise UnsupportedArchitecture(
                f"{feature} is not supported (TransformerLens config {attr}={value!r}); "
                "pathexpand expands attention with standard, shortformer, rotary or no positions, "
                "LayerNorm, RMSNorm or no normalisation, and plain or gated MLPs"
            )
    if getattr(cfg, "original_architecture", None) in _POST_NORM:
        raise UnsupportedArchitecture(
            f"post-norm blocks ({cfg.original_architecture}) are not supported; pathexpand expands pre-LN models"
        )
    scale = getattr(cfg, "attn_scale", None)
    if scale is not None and scale > 0 and not math.isclose(scale, math.sqrt(cfg.d_head), rel_tol=1e-6):
        raise UnsupportedArchitecture(
            f"an attention scale of 1/{scale} (not 1/sqrt(d_head)=1/{math.sqrt(cfg.d_head):.4g}) is not supported"
        )
    attn_only = bool(getattr(cfg, "attn_only", False))
    act_fn = None if attn_only else _ACT_ALIASES.get(cfg.act_fn, cfg.act_fn)
    if not attn_only and act_fn not in ACT_FNS:
        raise UnsupportedArchitecture(
            f"MLP activation {act_fn!r} is not supported (TransformerLens config act_fn); "
            f"use one of {list(ACT_FNS)}"
        )
    d_vocab_out = getattr(cfg, "d_vocab_out", -1)
    rotary = cfg.positional_embedding_type == "rotary"
    return {
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_model": cfg.d_model,
        "d_head": cfg.d_head,
        "d_vocab": cfg.d_vocab,
        "n_ctx": cfg.n_ctx,
        "d_mlp": None if attn_only else cfg.d_mlp,
        "act_fn": act_fn,
        "normalization": _NORMALIZATION[cfg.normalization_type],
        "positional": _POSITIONAL[cfg.positional_embedding_type],
        "attention_dir": getattr(cfg, "attention_dir", "causal"),
        "d_vocab_out": d_vocab_out if d_vocab_out and d_vocab_out > 0 else cfg.d_vocab,
        "eps": float(cfg.eps),
        "n_key_value_heads": getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        "rotary_dim": (getattr(cfg, "rotary_dim", None) or cfg.d_head) if rotary else None,
        "rotary_base": float(getattr(cfg, "rotary_base", 10000)) if rotary else 10000.0,
        "rotary_adjacent_pairs": bool(getattr(cfg, "rotary_adjacent_pairs", False)) and rotary,
        "gated_mlp": bool(getattr(cfg, "gated_mlp", False)) and not attn_only,
        "parallel_attn_mlp": bool(getattr(cfg, "parallel_attn_mlp", False)) and not attn_only,
    }


def from_transformer_lens(model) -> Weights:
    """``Weights`` from a TransformerLens ``HookedTransformer`` (reads ``cfg`` and ``state_dict()``)."""
    require("transformer_lens", "lens", "loading TransformerLens models")
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "state_dict"):
        raise PathexpandError(
            f"from_transformer_lens needs a HookedTransformer, got {type(model).__name__}"
        )
    config = config_from_transformer_lens(cfg)
    state = model.state_dict()
    name = getattr(cfg, "model_name", None)
    return Weights.from_state_dict(state, **config, name=None if name in (None, "custom") else name)
