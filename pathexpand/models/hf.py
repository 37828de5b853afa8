"""Hugging Face ``GPT2LMHeadModel`` → ``Weights``: a name map, like nanoGPT's ``from_pretrained``.

GPT-2's ``Conv1D`` weights are already ``[in, out]`` (right-multiplying, as ours); the fused
``c_attn`` ``[d_model, 3·d_model]`` is split into Q, K, V and each into heads
``[n_heads, d_model, d_head]``; ``c_proj`` ``[n_heads·d_head, d_model]`` becomes
``W_O [n_heads, d_head, d_model]``; ``lm_head`` ``[d_vocab, d_model]`` is transposed to
``W_U``, and ``b_U`` is zero (GPT-2 has no unembedding bias).
"""

from __future__ import annotations

from ..errors import PathexpandError, UnsupportedArchitecture, require
from ..numeric.weights import Weights, to_numpy

__all__ = ["HF_NAME_MAP", "from_hf"]

# ours (per block, with {l}) <- GPT-2's, for parameters that only need renaming
HF_NAME_MAP = {
    "W_E": "transformer.wte.weight",
    "W_pos": "transformer.wpe.weight",
    "blocks.{l}.ln1.w": "transformer.h.{l}.ln_1.weight",
    "blocks.{l}.ln1.b": "transformer.h.{l}.ln_1.bias",
    "blocks.{l}.attn.b_O": "transformer.h.{l}.attn.c_proj.bias",
    "blocks.{l}.ln2.w": "transformer.h.{l}.ln_2.weight",
    "blocks.{l}.ln2.b": "transformer.h.{l}.ln_2.bias",
    "blocks.{l}.mlp.W_in": "transformer.h.{l}.mlp.c_fc.weight",
    "blocks.{l}.mlp.b_in": "transformer.h.{l}.mlp.c_fc.bias",
    "blocks.{l}.mlp.W_out": "transformer.h.{l}.mlp.c_proj.weight",
    "blocks.{l}.mlp.b_out": "transformer.h.{l}.mlp.c_proj.bias",
    "ln_final.w": "transformer.ln_f.weight",
    "ln_final.b": "transformer.ln_f.bias",
}
# GPT-2 activation names -> ours ("gelu_pytorch_tanh" is the same tanh formula as "gelu_new")
_ACT = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def from_hf(model) -> Weights:
    """``Weights`` from a Hugging Face ``GPT2LMHeadModel`` (``transformers`` imported lazily)."""
    require("transformers", "hf", "loading Hugging Face models")
    if type(model).__name__ != "GPT2LMHeadModel":
        raise UnsupportedArchitecture(
            f"from_hf reads GPT2LMHeadModel only, got {type(model).__name__}"
        )
    cfg = model.config
    for attr, bad, feature in (
        ("add_cross_attention", True, "cross-attention"),
        ("scale_attn_weights", False, "attention without the 1/sqrt(d_head) scale"),
        ("scale_attn_by_inverse_layer_idx", True, "attention scaled by inverse layer index"),
    ):
        if getattr(cfg, attr, not bad) == bad:
            raise UnsupportedArchitecture(f"{feature} is not supported (GPT2Config {attr}={bad})")
    act = getattr(cfg, "activation_function", "gelu_new")
    if act not in _ACT:
        raise UnsupportedArchitecture(
            f"MLP activation {act!r} is not supported (GPT2Config activation_function); "
            f"use one of {sorted(_ACT)}"
        )
    L, H, d = cfg.n_layer, cfg.n_head, cfg.n_embd
    if d % H:
        raise PathexpandError(f"n_embd={d} is not divisible by n_head={H}")
    dh = d // H
    sd = {k: to_numpy(v) for k, v in model.state_dict().items()}
    out = {}
    for ours, theirs in HF_NAME_MAP.items():
        for l in range(L) if "{l}" in ours else [None]:
            out[ours.format(l=l)] = sd[theirs.format(l=l)]
    for l in range(L):
        a = f"transformer.h.{l}.attn"
        w, b = sd[f"{a}.c_attn.weight"], sd[f"{a}.c_attn.bias"]       # [d, 3d], [3d]
        for i, x in enumerate("QKV"):
            out[f"blocks.{l}.attn.W_{x}"] = w[:, i * d:(i + 1) * d].reshape(d, H, dh).transpose(1, 0, 2)
            out[f"blocks.{l}.attn.b_{x}"] = b[i * d:(i + 1) * d].reshape(H, dh)
        out[f"blocks.{l}.attn.W_O"] = sd[f"{a}.c_proj.weight"].reshape(H, dh, d)
    out["W_U"] = sd["lm_head.weight"].T
    config = {
        "n_layers": L, "n_heads": H, "d_model": d, "d_head": dh, "d_vocab": cfg.vocab_size,
        "n_ctx": cfg.n_positions, "d_mlp": getattr(cfg, "n_inner", None) or 4 * d,
        "act_fn": _ACT[act], "normalization": "LN", "positional": "standard",
        "eps": float(cfg.layer_norm_epsilon),
    }
    name = getattr(cfg, "name_or_path", None) or None
    return Weights.from_state_dict(out, **config, name=name)
