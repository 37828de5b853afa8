"""Hugging Face Llama, Mistral, Qwen2, Gemma, GPT-NeoX, GPT-J (and GGUF) → ``Weights``.

Second routes: each library's own forward pass (logits equal to 1e-5 relative), its parameters
sliced by hand, and exact attribution (paths sum back to the logits). Every model is a tiny
random one built from a config: nothing is downloaded.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import transformers as T

import pathexpand as pe
from pathexpand.errors import MissingDependencyError, PathexpandError, UnsupportedArchitecture, WeightsFileError

V, D, CTX = 64, 32, 32          # vocab, d_model, max positions
LLAMA = dict(vocab_size=V, hidden_size=D, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CTX)
NEOX = dict(vocab_size=V, hidden_size=D, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=CTX)
GPTJ = dict(vocab_size=V, n_embd=D, n_layer=2, n_head=4, n_positions=CTX, rotary_dim=4,
            bos_token_id=0, eos_token_id=0)


def tiny(cls: str, config: str, seed: int = 0, **kwargs):
    """A random-init ``transformers.<cls>`` in eval mode, float32, every weight and bias O(0.2)
    (HF's init leaves biases at zero and weights at std 0.02); norm weights near their identity."""
    torch.manual_seed(seed)
    model = getattr(T, cls)(getattr(T, config)(**kwargs)).eval()
    gemma = cls.startswith("Gemma")
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key or ".ln_" in key:   # Gemma stores w − 1
                p.copy_((0.0 if gemma else 1.0) + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    return model


def tokens(n=16, batch=2, seed=1):
    return torch.randint(0, V, (batch, n), generator=torch.Generator().manual_seed(seed))


def numpy(t):
    return t.detach().numpy()


# what every Llama-like family reads as
RMS = {"normalization": "RMS", "gated_mlp": True, "parallel_attn_mlp": False,
       "rotary_adjacent_pairs": False}
# family: class, config class, config kwargs, expected Config fields
FAMILIES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(LLAMA, attention_bias=True),
              dict(RMS, n_key_value_heads=2, rotary_dim=8, d_head=8, act_fn="silu")),
    "llama-tied": ("LlamaForCausalLM", "LlamaConfig", dict(LLAMA, tie_word_embeddings=True),
                   dict(RMS, n_key_value_heads=2, rotary_dim=8)),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(LLAMA, sliding_window=None),
                dict(RMS, n_key_value_heads=2, rotary_dim=8)),
    "mistral-wide-window": ("MistralForCausalLM", "MistralConfig", dict(LLAMA, sliding_window=CTX),
                            dict(RMS, n_key_value_heads=2)),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(LLAMA, num_key_value_heads=1),
              dict(RMS, n_key_value_heads=1, rotary_dim=8)),
    "gemma-tied": ("GemmaForCausalLM", "GemmaConfig", dict(LLAMA, head_dim=16),
                   dict(RMS, n_key_value_heads=2, d_head=16, rotary_dim=16, act_fn="gelu_new")),
    "gemma-untied": ("GemmaForCausalLM", "GemmaConfig",
                     dict(LLAMA, head_dim=16, tie_word_embeddings=False), dict(RMS, d_head=16)),
    "neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(NEOX, rotary_pct=0.5),
             dict(rotary_dim=4, parallel_attn_mlp=True, normalization="LN", gated_mlp=False,
                  act_fn="gelu")),
    "neox-sequential-tied": ("GPTNeoXForCausalLM", "GPTNeoXConfig",
                             dict(NEOX, rotary_pct=0.25, use_parallel_residual=False,
                                  tie_word_embeddings=True),
                             dict(rotary_dim=2, parallel_attn_mlp=False, normalization="LN")),
    "gptj": ("GPTJForCausalLM", "GPTJConfig", GPTJ,
             dict(rotary_dim=4, rotary_adjacent_pairs=True, parallel_attn_mlp=True,
                  normalization="LN", act_fn="gelu_new", d_mlp=4 * D)),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_forward_config_and_attribution(family):
    cls, config, kwargs, expect = FAMILIES[family]
    hf = tiny(cls, config, **kwargs)
    w = pe.load(hf)
    c = w.config
    assert (c.n_layers, c.n_heads, c.d_model, c.d_vocab, c.positional) == (2, 4, D, V, "rotary")
    for field, value in expect.items():
        assert getattr(c, field) == value, field
    toks = tokens()
    with torch.no_grad():
        theirs = hf(toks).logits
    ours = pe.forward(w, toks)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-5
    res = pe.attribute(w, toks[0])                     # path, node and edge views
    assert res.residual_error() <= 1e-5
    assert abs(res.output - float(theirs[0, -1].max())) <= 1e-5 * float(theirs.abs().max())
    res64 = pe.attribute(w.astype(np.float64), toks[0], dtype=torch.float64)
    assert res64.residual_error() <= 1e-10


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma-untied", "neox", "gptj"])
def test_every_weight_side_analysis_runs(family):
    """Head detectors (data and weights), composition scores, full-OV norms and copying scores
    run on each family and give finite numbers for every query head."""
    cls, config, kwargs, _ = FAMILIES[family]
    w = pe.load(tiny(cls, config, **kwargs))
    cs = pe.composition_scores(w, n_samples=8)
    assert cs.shape == (2, 4, 2, 4) and all(np.isfinite(cs[k][0, :, 1, :]).all() for k in cs.kinds)
    assert np.isfinite(pe.copying_scores(w, n_samples=8)["copying"]).all()
    ov = pe.evaluate(pe.expand_logits(w, max_depth=1).filter(kind="head"), w)
    assert len(ov) == 8 and all(np.isfinite(r["value"]) and r["value"] > 0 for r in ov.to_records())
    heads = pe.detect_heads(w, seq_len=12, n_samples=4)
    assert heads["induction"].shape == (2, 4)
    assert pe.detect_heads(w, method="weights").kinds == ("copying",)


def test_checkpoint_folder_loads_like_the_model_and_refuses_pickles(tmp_path):
    cls, config, kwargs, _ = FAMILIES["llama"]
    hf = tiny(cls, config, **kwargs)
    hf.save_pretrained(tmp_path / "ckpt", safe_serialization=True)
    w, again = pe.load(hf), pe.load(tmp_path / "ckpt")
    assert again.config == w.config and again.name == "ckpt"
    for key in w.keys():
        np.testing.assert_array_equal(again[key], w[key])
    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "config.json").write_text((tmp_path / "ckpt" / "config.json").read_text())
    (bins / "pytorch_model.bin").write_bytes(b"\x80\x04not read")
    with pytest.raises(WeightsFileError, match="no .safetensors weights .*pytorch_model.bin: pickles, never loaded"):
        pe.load(bins)
    with pytest.raises(PathexpandError, match="config overrides .* checkpoint folder"):
        pe.load(tmp_path / "ckpt", n_ctx=8)


def test_llama_biases_and_gqa_layout():
    hf = tiny("LlamaForCausalLM", "LlamaConfig", **dict(LLAMA, attention_bias=True))
    w = pe.load(hf)
    attn, mlp = hf.model.layers[1].self_attn, hf.model.layers[1].mlp
    k = numpy(attn.k_proj.weight)                              # [G·dh, d], kv-head-major rows
    for g in range(2):                                          # stored once per kv head
        np.testing.assert_array_equal(w["blocks.1.attn.W_K"][g], k[8 * g:8 * (g + 1)].T)
    for h in range(4):                                          # stacked: per query head
        np.testing.assert_array_equal(w.W_K[1, h], w["blocks.1.attn.W_K"][h // 2])
    np.testing.assert_array_equal(w.W_O[1, 3], numpy(attn.o_proj.weight)[:, 24:32].T)
    np.testing.assert_array_equal(w.b_O[1], numpy(attn.o_proj.bias))
    np.testing.assert_array_equal(w["blocks.1.attn.b_V"], numpy(attn.v_proj.bias).reshape(2, 8))
    np.testing.assert_array_equal(w["blocks.1.mlp.W_gate"], numpy(mlp.gate_proj.weight).T)
    np.testing.assert_array_equal(w["blocks.1.mlp.W_in"], numpy(mlp.up_proj.weight).T)
    np.testing.assert_array_equal(w["blocks.1.mlp.W_out"], numpy(mlp.down_proj.weight).T)
    assert np.all(w["blocks.1.mlp.b_in"] == 0) and np.all(w.b_U == 0)
    assert "blocks.0.ln1.b" not in w.state_dict()


def test_qwen2_qkv_biases():
    hf = tiny("Qwen2ForCausalLM", "Qwen2Config", **LLAMA)
    w = pe.load(hf)
    attn = hf.model.layers[0].self_attn
    assert np.abs(w.b_Q).min() > 0
    np.testing.assert_array_equal(w.b_Q[0], numpy(attn.q_proj.bias).reshape(4, 8))
    np.testing.assert_array_equal(w["blocks.0.attn.b_K"], numpy(attn.k_proj.bias).reshape(2, 8))
    assert np.all(w.b_O == 0)                                   # o_proj has no bias


@pytest.mark.parametrize("tied", [True, False])
def test_gemma_folds_norm_and_embedding_scale(tied):
    hf = tiny("GemmaForCausalLM", "GemmaConfig", **LLAMA, head_dim=16, tie_word_embeddings=tied)
    w = pe.load(hf)
    embed = numpy(hf.model.embed_tokens.weight)
    scale = np.float32(D ** 0.5)                                # HF: a float32 buffer
    np.testing.assert_array_equal(w.W_E, embed * scale)
    np.testing.assert_array_equal(w.W_U, numpy(hf.lm_head.weight).T)   # never scaled
    if tied:
        np.testing.assert_array_equal(w.W_U, embed.T)
    ln1 = hf.model.layers[0].input_layernorm.weight             # Gemma: x/rms · (1 + w)
    np.testing.assert_array_equal(w["blocks.0.ln1.w"], 1 + numpy(ln1))
    np.testing.assert_array_equal(w["ln_final.w"], 1 + numpy(hf.model.norm.weight))


def test_neox_fused_qkv_per_head():
    hf = tiny("GPTNeoXForCausalLM", "GPTNeoXConfig", **dict(NEOX, rotary_pct=0.5))
    w = pe.load(hf)
    qkv = hf.gpt_neox.layers[1].attention.query_key_value
    rows, bias = numpy(qkv.weight), numpy(qkv.bias)             # [3d, d]: head, then q | k | v
    for h in range(4):
        for i, name in enumerate("QKV"):
            sl = slice(24 * h + 8 * i, 24 * h + 8 * (i + 1))
            np.testing.assert_array_equal(getattr(w, f"W_{name}")[1, h], rows[sl].T)
            np.testing.assert_array_equal(getattr(w, f"b_{name}")[1, h], bias[sl])
    np.testing.assert_array_equal(w["blocks.1.ln2.b"],
                                  numpy(hf.gpt_neox.layers[1].post_attention_layernorm.bias))


def test_gptj_shared_layernorm_and_unembedding_bias():
    hf = tiny("GPTJForCausalLM", "GPTJConfig", **GPTJ)
    w = pe.load(hf)
    ln = hf.transformer.h[0].ln_1
    for name in ("ln1", "ln2"):
        np.testing.assert_array_equal(w[f"blocks.0.{name}.w"], numpy(ln.weight))
        np.testing.assert_array_equal(w[f"blocks.0.{name}.b"], numpy(ln.bias))
    np.testing.assert_array_equal(w.b_U, numpy(hf.lm_head.bias))
    assert np.all(w.b_Q == 0) and np.all(w.b_O == 0)


# refusals --------------------------------------------------------------------------------------
ROPE = {
    "linear": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    "yarn": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
               "rope_theta": 10000.0},
}


# case: class, config class, config kwargs, what the one-line message must say
REFUSALS = {
    **{f"rope-{kind}": ("LlamaForCausalLM", "LlamaConfig", dict(LLAMA, rope_parameters=dict(p)),
                        f"RoPE scaling '{kind}' .*rope_parameters") for kind, p in ROPE.items()},
    "llama-mlp-bias": ("LlamaForCausalLM", "LlamaConfig", dict(LLAMA, mlp_bias=True),
                       "gated MLP with biases.*mlp_bias=True"),
    "llama-activation": ("LlamaForCausalLM", "LlamaConfig", dict(LLAMA, hidden_act="gelu_fast"),
                         "MLP activation 'gelu_fast'.*hidden_act"),
    "gemma-bidirectional": ("GemmaForCausalLM", "GemmaConfig",
                            dict(LLAMA, use_bidirectional_attention=True),
                            "bidirectional attention.*use_bidirectional_attention"),
    "neox-odd-rotary": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(NEOX, rotary_pct=0.125),
                        "rotary on 1 of 8 head dims.*partial_rotary_factor=0.125"),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(LLAMA, num_hidden_layers=1, head_dim=8),
               "Gemma2ForCausalLM.*soft-capped.*Gemma2Config"),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig",
                dict(LLAMA, num_hidden_layers=1, num_local_experts=2),
                "MixtralForCausalLM.*mixture of experts.*num_local_experts"),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(LLAMA, num_hidden_layers=1),
              "Qwen3ForCausalLM is not supported: query/key RMSNorm.*q_norm, k_norm"),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", dict(LLAMA, num_hidden_layers=1),
              "Olmo2ForCausalLM is not supported: query/key RMSNorm.*post_feedforward_layernorm"),
    "t5": ("T5ForConditionalGeneration", "T5Config",
           dict(vocab_size=V, d_model=D, d_kv=8, d_ff=48, num_layers=1, num_heads=4),
           "encoder-decoder with cross-attention.*is_encoder_decoder"),
    "bart": ("BartForConditionalGeneration", "BartConfig",
             dict(vocab_size=V, d_model=D, encoder_layers=1, decoder_layers=1,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
                  decoder_ffn_dim=48, max_position_embeddings=CTX),
             "encoder-decoder with cross-attention.*is_encoder_decoder"),
    "unknown-class": ("OPTForCausalLM", "OPTConfig",
                      dict(vocab_size=V, hidden_size=D, num_attention_heads=4, num_hidden_layers=1,
                           ffn_dim=48, max_position_embeddings=CTX, word_embed_proj_dim=D),
                      "from_hf reads LlamaForCausalLM, .* and GPT2LMHeadModel only, got OPT"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(case):
    cls, config, kwargs, feature = REFUSALS[case]
    model = getattr(T, cls)(getattr(T, config)(**kwargs))
    with pytest.raises(UnsupportedArchitecture, match=feature) as err:
        pe.load(model)
    assert "\n" not in str(err.value)


def test_attention_scale_refused():
    hf = tiny("LlamaForCausalLM", "LlamaConfig", **LLAMA)
    hf.model.layers[0].self_attn.scaling = 0.25
    with pytest.raises(UnsupportedArchitecture, match=r"scale of 0.25 .*1/sqrt\(d_head\)"):
        pe.load(hf)


# GGUF ------------------------------------------------------------------------------------------
def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order: in each head, halves pairs ``(m, m + d/2)`` become adjacent
    rows ``(2m, 2m+1)``."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, w.shape[1]).swapaxes(1, 2).reshape(w.shape)   # [n·dh, d]


GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
VOCAB = (["<unk>", "<s>", "</s>", "▁"] + [chr(c) for c in range(97, 123)]     # ▁, a … z
         + [chr(c) for c in range(65, 91)] + [str(i) for i in range(8)])      # A … Z, 0 … 7


def write_tiny_llama_gguf(hf, path):
    """Write a Llama model to GGUF as llama.cpp's converter does: float32 tensors, Q/K rows
    permuted, metadata under ``llama.*``, a tiny SentencePiece-style vocabulary."""
    gguf = pytest.importorskip("gguf")
    c = hf.config
    wr = gguf.GGUFWriter(str(path), "llama")
    wr.add_name("tiny")
    wr.add_context_length(c.max_position_embeddings)
    wr.add_embedding_length(c.hidden_size)
    wr.add_block_count(c.num_hidden_layers)
    wr.add_feed_forward_length(c.intermediate_size)
    wr.add_head_count(c.num_attention_heads)
    wr.add_head_count_kv(c.num_key_value_heads)
    wr.add_rope_dimension_count(c.head_dim)
    wr.add_rope_freq_base(c.rope_parameters["rope_theta"])
    wr.add_layer_norm_rms_eps(c.rms_norm_eps)
    wr.add_vocab_size(c.vocab_size)
    wr.add_tokenizer_model("llama")
    wr.add_token_list(VOCAB)
    wr.add_token_scores([0.0] * len(VOCAB))
    wr.add_token_types([2, 3, 3] + [1] * (len(VOCAB) - 3))
    wr.add_unk_token_id(0)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    top = {"model.embed_tokens.weight": "token_embd.weight",
           "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    for key, value in hf.state_dict().items():
        v = numpy(value)
        if key in top:
            wr.add_tensor(top[key], v)
            continue
        layer, module = key.split(".")[2], ".".join(key.split(".")[3:-1])
        if module == "self_attn.q_proj":
            v = _llama_cpp_permute(v, c.num_attention_heads)
        elif module == "self_attn.k_proj":
            v = _llama_cpp_permute(v, c.num_key_value_heads)
        wr.add_tensor(f"blk.{layer}.{GGUF_NAMES[module]}.weight", np.ascontiguousarray(v))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def test_gguf_round_trip(tmp_path):
    pytest.importorskip("gguf")
    hf = tiny("LlamaForCausalLM", "LlamaConfig", **dict(LLAMA, rms_norm_eps=1e-5))
    path = tmp_path / "tiny-llama.gguf"
    write_tiny_llama_gguf(hf, path)
    w = pe.load(str(path))
    assert w.name == "tiny-llama"
    c = w.config
    assert (c.n_key_value_heads, c.rotary_dim, c.rotary_adjacent_pairs) == (2, 8, False)
    q = numpy(hf.model.layers[0].self_attn.q_proj.weight)       # llama.cpp's permutation undone
    np.testing.assert_array_equal(w.W_Q[0, 1], q[8:16].T)
    toks = tokens()
    with torch.no_grad():
        theirs = hf(toks).logits
    assert float((pe.forward(w, toks) - theirs).abs().max() / theirs.abs().max()) <= 1e-5
    tok = w.tokenizer
    assert tok.d_vocab == len(VOCAB) and tok.token_str(4) == "a"
    assert tok.encode("ab c") == [3, 4, 5, 3, 6]               # ▁ a b ▁ c: no BOS added
    assert pe.attribute(w, "ab c", target=7).residual_error() <= 1e-5   # text prompt


def test_gguf_missing_package_names_extra(tmp_path, monkeypatch):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)             # import gguf -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'pathexpand\[gguf\]'"):
        pe.load(path)


def test_gguf_config_overrides_refused(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(PathexpandError, match="do not apply to a .gguf file"):
        pe.load(path, act_fn="relu")


@pytest.mark.parametrize("cls, config, kwargs", [
    ("MistralForCausalLM", "MistralConfig", dict(LLAMA, sliding_window=8)),
    ("Qwen2ForCausalLM", "Qwen2Config", dict(LLAMA, use_sliding_window=True, sliding_window=8, max_window_layers=0)),
])
def test_sliding_window_loads_as_its_window(cls, config, kwargs):
    """A sliding window shorter than the context: exact on prompts that fit in it (n_ctx = the
    window), longer prompts refused."""
    hf = tiny(cls, config, **kwargs)
    w = pe.load(hf)
    assert w.config.n_ctx == 8
    toks = tokens(n=8)
    with torch.no_grad():
        theirs = hf(toks).logits
    assert float((pe.forward(w, toks) - theirs).abs().max() / theirs.abs().max()) <= 1e-5
    with pytest.raises(PathexpandError, match="n_ctx"):
        pe.forward(w, tokens(n=9))
