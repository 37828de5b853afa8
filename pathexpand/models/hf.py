"""Hugging Face causal language models → ``Weights``: one small name map per family, like
nanoGPT's ``from_pretrained``.

Hugging Face ``nn.Linear`` weights are ``[out, in]`` and are transposed to our right-multiplying
``[in, out]`` (GPT-2's ``Conv1D`` already is ``[in, out]``); a projection onto ``n`` heads
``[n·d_head, d_model]`` becomes ``[n, d_model, d_head]``, the output projection
``[d_model, n·d_head]`` becomes ``W_O [n, d_head, d_model]``; ``lm_head`` ``[d_vocab, d_model]``
becomes ``W_U`` (read from the model, so tied and untied heads map alike). Per family:

- GPT-2: fused ``c_attn`` ``[d, 3d]`` split into Q | K | V, learned positions, LayerNorm.
- Llama, Mistral, Qwen2: RMSNorm, rotary on all of ``d_head`` (halves pairing, ``rotate_half``),
  grouped-query heads, SwiGLU with ``gate → W_gate``, ``up → W_in``, ``down → W_out``; Qwen2's
  Q/K/V biases, Llama's ``attention_bias`` (Q/K/V and ``b_O``).
- Gemma: as Llama, RMSNorm ``x/rms · (1 + w)`` stored as ``w' = 1 + w``, the embedding scale
  ``√d_model`` folded into ``W_E`` (``W_U`` stays the unscaled ``lm_head``), tanh-GELU gate.
- GPT-NeoX (Pythia): fused ``query_key_value`` rows laid out ``[head, q|k|v, d_head]``, rotary
  (halves) on the first ``partial_rotary_factor · d_head`` dims, parallel blocks with
  ``use_parallel_residual``, LayerNorm with biases.
- GPT-J: parallel blocks reading one LayerNorm ``ln_1`` (copied to ``ln1`` and ``ln2``), rotary
  on adjacent pairs of the first ``rotary_dim`` dims (``rotate_every_two``), ``lm_head`` bias
  → ``b_U``.

A feature outside these raises ``UnsupportedArchitecture`` naming it and its config attribute.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PathexpandError, UnsupportedArchitecture, require
from ..numeric.weights import Weights, to_numpy

__all__ = ["FAMILIES", "HF_NAME_MAP", "HFTokenizer", "from_hf"]

# GPT-2: ours (per block, with {l}) <- theirs, for parameters that only need renaming
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
# Hugging Face activation names -> ours ("gelu_pytorch_tanh" is the tanh formula of "gelu_new")
_ACT = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu",
        "silu": "silu", "swish": "silu"}
# Classes refused by name, with what they have that no path expansion here covers.
_REFUSED = {
    "Gemma2ForCausalLM": "soft-capped attention scores and logits (Gemma2Config "
                         "attn_logit_softcapping, final_logit_softcapping)",
    "Gemma3ForCausalLM": "query/key RMSNorm and sliding-window layers (Gemma3TextConfig "
                         "layer_types)",
    "MixtralForCausalLM": "a mixture of experts (MixtralConfig num_local_experts)",
    "Qwen3ForCausalLM": "query/key RMSNorm inside each head (Qwen3Attention q_norm, k_norm): "
                        "attention scores are not bilinear in the residual stream",
    "Olmo2ForCausalLM": "query/key RMSNorm (Olmo2Attention q_norm, k_norm) and norms on the "
                        "attention and MLP outputs (post_attention_layernorm, "
                        "post_feedforward_layernorm)",
    "T5ForConditionalGeneration": "an encoder-decoder with cross-attention (T5Config "
                                  "is_encoder_decoder)",
    "BartForConditionalGeneration": "an encoder-decoder with cross-attention (BartConfig "
                                    "is_encoder_decoder)",
}


def from_hf(model, *, tokenizer=None) -> Weights:
    """``Weights`` from a Hugging Face causal LM of a family in ``FAMILIES`` (``transformers``
    imported lazily); ``tokenizer``: a Hugging Face tokenizer to keep (``HFTokenizer``)."""
    require("transformers", "hf", "loading Hugging Face models")
    cls = type(model).__name__
    family = FAMILIES.get(cls)
    if family is None:
        _refuse_class(cls, model.config)
    sd = {k: to_numpy(v) for k, v in model.state_dict().items()}
    params, config = family(model, sd)
    name = getattr(model.config, "name_or_path", None) or None
    tok = tokenizer
    if tok is not None and not isinstance(tok, HFTokenizer):
        tok = HFTokenizer(tok)
    return Weights.from_state_dict(params, **config, name=name, tokenizer=tok)


def _refuse_class(cls: str, cfg) -> None:
    """Raise for a class without a mapping, naming its feature where it has a known one."""
    supported = ", ".join(list(FAMILIES)[1:]) + " and GPT2LMHeadModel"
    reason = _REFUSED.get(cls)
    kind = type(cfg).__name__
    if reason is None and getattr(cfg, "is_encoder_decoder", False):
        reason = f"an encoder-decoder with cross-attention ({kind} is_encoder_decoder=True)"
    for attr in ("num_local_experts", "num_experts"):
        if reason is None and getattr(cfg, attr, None):
            reason = f"a mixture of experts ({kind} {attr}={getattr(cfg, attr)})"
    for attr in ("attn_logit_softcapping", "final_logit_softcapping"):
        if reason is None and getattr(cfg, attr, None) is not None:
            reason = f"soft-capping ({kind} {attr}={getattr(cfg, attr)})"
    if reason is not None:
        raise UnsupportedArchitecture(
            f"{cls} is not supported: {reason}; from_hf reads {supported}"
        )
    raise UnsupportedArchitecture(f"from_hf reads {supported} only, got {cls}")


# shared pieces ---------------------------------------------------------------------------------
def _refuse(cfg, attr: str, feature: str, fix: str = "") -> None:
    """Raise ``UnsupportedArchitecture``: the feature, then the config attribute and its value."""
    value = getattr(cfg, attr, None)
    raise UnsupportedArchitecture(
        f"{feature} is not supported ({type(cfg).__name__} {attr}={value!r}){fix}"
    )


def _act(cfg, attr: str) -> str:
    """Our name of the MLP activation the config's ``attr`` names."""
    act = getattr(cfg, attr)
    if act not in _ACT:
        _refuse(cfg, attr, f"MLP activation {act!r}", f"; use one of {sorted(_ACT)}")
    return _ACT[act]


def _rope(cfg) -> tuple[float, float]:
    """``(rotary_base, partial_rotary_factor)`` of plain rotary positions; scaled RoPE refused."""
    params = getattr(cfg, "rope_parameters", None)
    if params is None:  # transformers 4.x keeps them as attributes
        params = dict(getattr(cfg, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(cfg, "rope_theta", None)
                          or getattr(cfg, "rotary_emb_base", 10000.0))
        params.setdefault("partial_rotary_factor", getattr(cfg, "rotary_pct", 1.0))
        attr = "rope_scaling"
    else:
        attr = "rope_parameters"
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise UnsupportedArchitecture(
            f"RoPE scaling {kind!r} is not supported ({type(cfg).__name__} {attr}"
            f"['rope_type']={kind!r}); pathexpand expands default rotary positions"
        )
    return float(params["rope_theta"]), float(params.get("partial_rotary_factor") or 1.0)


def _check_scale(attn_module, d_head: int) -> None:
    """Refuse an attention scale other than ``1/√d_head``."""
    scale = getattr(attn_module, "scaling", None)
    if scale is not None and not math.isclose(scale, d_head ** -0.5, rel_tol=1e-6):
        raise UnsupportedArchitecture(
            f"an attention scale of {scale:.4g} (not 1/sqrt(d_head)={d_head ** -0.5:.4g}) is "
            f"not supported ({type(attn_module).__name__}.scaling)"
        )


def _unembed(model, out: dict) -> None:
    """``W_U`` ``[d_model, d_vocab]`` (and ``b_U``) from the output Linear, tied or not."""
    head = model.get_output_embeddings()
    out["W_U"] = to_numpy(head.weight).T                                       # [d, d_vocab]
    if getattr(head, "bias", None) is not None:
        out["b_U"] = to_numpy(head.bias)


def _heads_in(w: np.ndarray, n: int, dh: int) -> np.ndarray:
    """A Linear weight ``[n·d_head, d_model]`` → per-head ``[n, d_model, d_head]``."""
    return w.reshape(n, dh, w.shape[-1]).transpose(0, 2, 1)


def _heads_out(w: np.ndarray, n: int, dh: int) -> np.ndarray:
    """The output Linear weight ``[d_model, n·d_head]`` → ``W_O [n, d_head, d_model]``."""
    return w.T.reshape(n, dh, w.shape[0])


def _layernorm(out: dict, ours: str, sd: dict, theirs: str) -> None:
    """A LayerNorm's ``w``, ``b`` under our name."""
    out[f"{ours}.w"], out[f"{ours}.b"] = sd[f"{theirs}.weight"], sd[f"{theirs}.bias"]


def _linear(out: dict, ours: str, which: str, sd: dict, theirs: str) -> None:
    """An MLP Linear ``[out, in]`` → ``W_{which}`` ``[in, out]`` and its bias ``b_{which}``."""
    out[f"{ours}.W_{which}"] = sd[f"{theirs}.weight"].T
    if f"{theirs}.bias" in sd:
        out[f"{ours}.b_{which}"] = sd[f"{theirs}.bias"]


# families ------------------------------------------------------------------------------------
def _gpt2(model, sd):
    """GPT-2: learned positions, LayerNorm, GELU MLP, fused ``c_attn`` (``Conv1D``, [in, out])."""
    cfg = model.config
    for attr, bad, feature in (
        ("add_cross_attention", True, "cross-attention"),
        ("scale_attn_weights", False, "attention without the 1/sqrt(d_head) scale"),
        ("scale_attn_by_inverse_layer_idx", True, "attention scaled by inverse layer index"),
    ):
        if getattr(cfg, attr, not bad) == bad:
            raise UnsupportedArchitecture(f"{feature} is not supported (GPT2Config {attr}={bad})")
    act = getattr(cfg, "activation_function", "gelu_new")
    if act not in _ACT or _ACT[act] == "silu":
        raise UnsupportedArchitecture(
            f"MLP activation {act!r} is not supported (GPT2Config activation_function); "
            f"use one of {sorted(k for k, v in _ACT.items() if v != 'silu')}"
        )
    L, H, d = cfg.n_layer, cfg.n_head, cfg.n_embd
    if d % H:
        raise PathexpandError(f"n_embd={d} is not divisible by n_head={H}")
    dh = d // H
    out = {}
    for ours, theirs in HF_NAME_MAP.items():
        for l in range(L) if "{l}" in ours else [None]:
            out[ours.format(l=l)] = sd[theirs.format(l=l)]
    for l in range(L):
        a = f"transformer.h.{l}.attn"
        w, b = sd[f"{a}.c_attn.weight"], sd[f"{a}.c_attn.bias"]       # [d, 3d], [3d]
        for i, x in enumerate("QKV"):
            cols = w[:, i * d:(i + 1) * d]                                     # [d, H·dh]
            out[f"blocks.{l}.attn.W_{x}"] = cols.reshape(d, H, dh).transpose(1, 0, 2)
            out[f"blocks.{l}.attn.b_{x}"] = b[i * d:(i + 1) * d].reshape(H, dh)
        out[f"blocks.{l}.attn.W_O"] = sd[f"{a}.c_proj.weight"].reshape(H, dh, d)
    _unembed(model, out)
    config = {
        "n_layers": L, "n_heads": H, "d_model": d, "d_head": dh, "d_vocab": cfg.vocab_size,
        "n_ctx": cfg.n_positions, "d_mlp": getattr(cfg, "n_inner", None) or 4 * d,
        "act_fn": _ACT[act], "normalization": "LN", "positional": "standard",
        "eps": float(cfg.layer_norm_epsilon),
    }
    return out, config


def _llama(model, sd, *, gemma: bool = False):
    """Llama, Mistral, Qwen2 (and Gemma with ``gemma=True``): RMSNorm, rotary, GQA, SwiGLU."""
    cfg = model.config
    H, d = cfg.num_attention_heads, cfg.hidden_size
    G = getattr(cfg, "num_key_value_heads", None) or H
    dh = getattr(cfg, "head_dim", None) or d // H
    base, _ = _rope(cfg)  # these families rotate all of d_head whatever partial_rotary_factor says
    n_ctx = cfg.max_position_embeddings
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    slides = getattr(cfg, "use_sliding_window", True) and (
        layer_types is None or "sliding_attention" in layer_types)
    if window is not None and slides and window < n_ctx:
        n_ctx = window    # exact for prompts that fit in the window; longer prompts are refused
    if getattr(cfg, "mlp_bias", False):
        _refuse(cfg, "mlp_bias", "a gated MLP with biases on gate_proj and up_proj")
    if getattr(cfg, "use_bidirectional_attention", False):
        _refuse(cfg, "use_bidirectional_attention", "bidirectional attention")
    _check_scale(model.model.layers[0].self_attn, dh)
    act = _act(cfg, "hidden_activation" if gemma and getattr(cfg, "hidden_activation", None) else "hidden_act")
    norm = (lambda w: 1.0 + w) if gemma else (lambda w: w)   # Gemma: x/rms · (1 + w)
    out = {"W_E": sd["model.embed_tokens.weight"]}                       # [d_vocab, d]
    if gemma:   # embeddings × √d_model (a float32 buffer cast to the weights' dtype)
        scale = getattr(model.model.embed_tokens, "embed_scale", None)
        scale = to_numpy(scale) if scale is not None else np.float32(d ** 0.5)
        out["W_E"] = out["W_E"] * scale.astype(out["W_E"].dtype)
    for l in range(cfg.num_hidden_layers):
        p, q = f"model.layers.{l}", f"blocks.{l}"
        a = f"{p}.self_attn"
        out[f"{q}.ln1.w"] = norm(sd[f"{p}.input_layernorm.weight"])
        out[f"{q}.ln2.w"] = norm(sd[f"{p}.post_attention_layernorm.weight"])
        for x, n in (("q", H), ("k", G), ("v", G)):
            w = sd[f"{a}.{x}_proj.weight"]                                     # [n·dh, d]
            out[f"{q}.attn.W_{x.upper()}"] = _heads_in(w, n, dh)               # [n, d, dh]
            if f"{a}.{x}_proj.bias" in sd:
                out[f"{q}.attn.b_{x.upper()}"] = sd[f"{a}.{x}_proj.bias"].reshape(n, dh)
        out[f"{q}.attn.W_O"] = _heads_out(sd[f"{a}.o_proj.weight"], H, dh)       # [H, dh, d]
        if f"{a}.o_proj.bias" in sd:
            out[f"{q}.attn.b_O"] = sd[f"{a}.o_proj.bias"]
        m = f"{p}.mlp"
        out[f"{q}.mlp.W_gate"] = sd[f"{m}.gate_proj.weight"].T                  # [d, d_mlp]
        out[f"{q}.mlp.W_in"] = sd[f"{m}.up_proj.weight"].T                      # [d, d_mlp]
        out[f"{q}.mlp.W_out"] = sd[f"{m}.down_proj.weight"].T                   # [d_mlp, d]
    out["ln_final.w"] = norm(sd["model.norm.weight"])
    _unembed(model, out)
    config = {
        "n_layers": cfg.num_hidden_layers, "n_heads": H, "d_model": d, "d_head": dh,
        "d_vocab": cfg.vocab_size, "n_ctx": n_ctx, "d_mlp": cfg.intermediate_size, "act_fn": act,
        "normalization": "RMS", "eps": float(cfg.rms_norm_eps), "n_key_value_heads": G,
        "positional": "rotary", "rotary_dim": dh, "rotary_base": base, "gated_mlp": True,
    }
    return out, config


def _gemma(model, sd):
    """Gemma: Llama's map with ``w' = 1 + w`` norms and ``√d_model`` folded into ``W_E``."""
    return _llama(model, sd, gemma=True)


def _neox(model, sd):
    """GPT-NeoX (Pythia): fused QKV per head, partial rotary (halves), parallel blocks, LN."""
    cfg = model.config
    H, d = cfg.num_attention_heads, cfg.hidden_size
    dh = d // H
    base, pct = _rope(cfg)
    rotary = int(dh * pct)
    if rotary < 2 or rotary % 2:
        raise UnsupportedArchitecture(
            f"rotary on {rotary} of {dh} head dims is not supported ({type(cfg).__name__} "
            f"partial_rotary_factor={pct}); rotary_dim must be even and at least 2"
        )
    _check_scale(model.gpt_neox.layers[0].attention, dh)
    out = {"W_E": sd["gpt_neox.embed_in.weight"]}
    for l in range(cfg.num_hidden_layers):
        p, q = f"gpt_neox.layers.{l}", f"blocks.{l}"
        for ours, theirs in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")):
            _layernorm(out, f"{q}.{ours}", sd, f"{p}.{theirs}")
        a = f"{p}.attention"
        w = sd[f"{a}.query_key_value.weight"].reshape(H, 3, dh, d)             # [head, q|k|v, dh]
        for i, x in enumerate("QKV"):
            out[f"{q}.attn.W_{x}"] = w[:, i].transpose(0, 2, 1)                # [H, d, dh]
        if f"{a}.query_key_value.bias" in sd:
            b = sd[f"{a}.query_key_value.bias"].reshape(H, 3, dh)
            for i, x in enumerate("QKV"):
                out[f"{q}.attn.b_{x}"] = b[:, i]                               # [H, dh]
        out[f"{q}.attn.W_O"] = _heads_out(sd[f"{a}.dense.weight"], H, dh)     # [H, dh, d]
        if f"{a}.dense.bias" in sd:
            out[f"{q}.attn.b_O"] = sd[f"{a}.dense.bias"]
        _linear(out, f"{q}.mlp", "in", sd, f"{p}.mlp.dense_h_to_4h")
        _linear(out, f"{q}.mlp", "out", sd, f"{p}.mlp.dense_4h_to_h")
    _layernorm(out, "ln_final", sd, "gpt_neox.final_layer_norm")
    _unembed(model, out)
    config = {
        "n_layers": cfg.num_hidden_layers, "n_heads": H, "d_model": d, "d_head": dh,
        "d_vocab": cfg.vocab_size, "n_ctx": cfg.max_position_embeddings,
        "d_mlp": cfg.intermediate_size, "act_fn": _act(cfg, "hidden_act"), "normalization": "LN",
        "eps": float(cfg.layer_norm_eps), "positional": "rotary", "rotary_dim": rotary,
        "rotary_base": base, "parallel_attn_mlp": bool(getattr(cfg, "use_parallel_residual", True)),
    }
    return out, config


def _gptj(model, sd):
    """GPT-J: one LayerNorm ``ln_1`` for a parallel block, adjacent-pair rotary, ``b_U``."""
    cfg = model.config
    H, d = cfg.n_head, cfg.n_embd
    dh = d // H
    _check_scale(model.transformer.h[0].attn, dh)
    out = {"W_E": sd["transformer.wte.weight"]}
    for l in range(cfg.n_layer):
        p, q = f"transformer.h.{l}", f"blocks.{l}"
        for ours in ("ln1", "ln2"):   # attention and MLP both read ln_1(x)
            _layernorm(out, f"{q}.{ours}", sd, f"{p}.ln_1")
        for x in "qkv":
            out[f"{q}.attn.W_{x.upper()}"] = _heads_in(sd[f"{p}.attn.{x}_proj.weight"], H, dh)
        out[f"{q}.attn.W_O"] = _heads_out(sd[f"{p}.attn.out_proj.weight"], H, dh)
        _linear(out, f"{q}.mlp", "in", sd, f"{p}.mlp.fc_in")
        _linear(out, f"{q}.mlp", "out", sd, f"{p}.mlp.fc_out")
    _layernorm(out, "ln_final", sd, "transformer.ln_f")
    _unembed(model, out)                                                       # with b_U
    config = {
        "n_layers": cfg.n_layer, "n_heads": H, "d_model": d, "d_head": dh,
        "d_vocab": cfg.vocab_size, "n_ctx": cfg.n_positions, "d_mlp": cfg.n_inner or 4 * d,
        "act_fn": _act(cfg, "activation_function"), "normalization": "LN",
        "eps": float(cfg.layer_norm_epsilon), "positional": "rotary",
        "rotary_dim": cfg.rotary_dim or dh, "rotary_base": 10000.0, "rotary_adjacent_pairs": True,
        "parallel_attn_mlp": True,
    }
    return out, config


# class name -> mapping; GPT-2 first, the error message lists the rest, then GPT-2
FAMILIES = {
    "GPT2LMHeadModel": _gpt2,
    "LlamaForCausalLM": _llama,
    "MistralForCausalLM": _llama,
    "Qwen2ForCausalLM": _llama,
    "GemmaForCausalLM": _gemma,
    "GPTNeoXForCausalLM": _neox,
    "GPTJForCausalLM": _gptj,
}


def from_hf_folder(path) -> Weights:
    """``Weights`` (and its tokenizer, when the folder has one) from a Hugging Face checkpoint
    folder: ``config.json`` plus ``model.safetensors`` (sharded or not). Nothing is downloaded,
    no remote code runs, and a folder with only pickled ``*.bin`` weights is refused."""
    from pathlib import Path

    from ..errors import WeightsFileError

    transformers = require("transformers", "hf", "loading Hugging Face checkpoints")
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise WeightsFileError(f"{str(folder)!r} is a folder without a config.json; a Hugging Face "
                               "checkpoint folder holds config.json and model.safetensors")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        raise WeightsFileError(
            f"{str(folder)!r} has no .safetensors weights"
            + (f" (only {', '.join(pickled)}: pickles, never loaded)" if pickled else ""))
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), use_safetensors=True, local_files_only=True, trust_remote_code=False).eval()
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsFileError(f"cannot load the Hugging Face checkpoint in {str(folder)!r}: {first}") from None
    tokenizer = None
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True),
                                name=folder.name)
    weights = from_hf(model, tokenizer=tokenizer)
    weights.name = folder.name
    return weights


class HFTokenizer:
    """A Hugging Face tokenizer in pathexpand's tokenizer protocol: ``encode`` (no special
    tokens added), ``decode``, ``token_str``, ``name``, ``d_vocab``."""

    def __init__(self, tokenizer, name: str | None = None):
        self._tok = tokenizer
        self.name = name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        self.d_vocab = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids) -> str:
        """Text of token ids."""
        return self._tok.decode([int(i) for i in ids])

    def token_str(self, token: int) -> str:
        """One token as the text it decodes to (``' Paris'``; newline and tab escaped), or its
        vocabulary entry (``'<0xE2>'``) when it is not text on its own (a partial UTF-8 byte)."""
        text = self._tok.decode([int(token)])
        if not text or "\ufffd" in text:
            return str(self._tok.convert_ids_to_tokens(int(token)))
        return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r})"
