"""Reference forward pass (torch): logits, and the cache that freezing needs.

``x0 = W_E[tokens] + W_pos[:n]``; per layer ``x += Σ_h A^h (ln1(x) W_V^h + b_V^h) W_O^h + b_O``
with ``A^h = softmax_causal((ln1(x) W_Q^h + b_Q^h)(ln1(x) W_K^h + b_K^h)ᵀ / √d_head)``, then
``x += act(ln2(x) W_in + b_in) W_out + b_out``; ``logits = ln_final(x) W_U + b_U``
(DESIGN.md §2, the same computation as TransformerLens's ``HookedTransformer``).

With ``positional="shortformer"`` ``W_pos`` never enters the residual stream: it is added
after ``ln1`` to each head's query and key inputs only (as TransformerLens does).
Runs under ``torch.no_grad()``: a reference to compare against, not a training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PathexpandError
from .weights import Weights

__all__ = ["Cache", "forward", "run_with_cache"]


@dataclass
class Cache:
    """What one forward pass recorded (torch tensors on the pass's device).

    - ``tokens``    ``[batch, pos]`` (int64)
    - ``patterns``  ``[batch, n_layers, n_heads, q_pos, k_pos]`` attention after softmax
    - ``scores``    same shape, before softmax (``/ √d_head`` applied; masked entries ``-inf``)
    - ``resid_pre`` ``[batch, n_layers + 1, pos, d_model]``: ``resid_pre[:, l]`` enters layer
      ``l``; ``resid_pre[:, n_layers]`` is the final residual before ``ln_final``
    - ``resid_mid`` ``[batch, n_layers, pos, d_model]`` after attention, before the MLP
      (None without MLPs)
    - ``ln_scale``  ``{"blocks.{l}.ln1", "blocks.{l}.ln2", "ln_final"}`` → ``[batch, pos]``,
      ``sqrt(var(x) + eps)`` (TransformerLens's ``hook_scale``); empty without LayerNorm
    - ``mlp_pre``, ``mlp_post`` ``[batch, n_layers, pos, d_mlp]``: ``x W_in + b_in`` and
      ``act(mlp_pre)`` (None without MLPs)
    - ``z``         ``[batch, n_layers, n_heads, pos, d_head]``: ``A (ln1(x) W_V + b_V)``, each
      head's value mix before ``W_O`` (TransformerLens's ``hook_z``, heads first)
    """

    tokens: Any
    patterns: Any
    scores: Any
    resid_pre: Any
    resid_mid: Any = None
    ln_scale: dict = field(default_factory=dict)
    mlp_pre: Any = None
    mlp_post: Any = None
    z: Any = None

    def pattern(self, layer: int):
        """Attention patterns of one layer: ``[batch, n_heads, q_pos, k_pos]``."""
        n_layers = self.patterns.shape[1]
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not (
            -n_layers <= layer < n_layers
        ):
            raise PathexpandError(f"layer {layer!r} is not in this {n_layers}-layer model")
        return self.patterns[:, layer]


def forward(weights: Weights, tokens, *, device=None, dtype=None):
    """Logits ``[batch, pos, d_vocab_out]`` of ``tokens`` (``[pos]`` or ``[batch, pos]`` ids)."""
    logits, _, _ = _run(weights, tokens, device=device, dtype=dtype, record=False)
    return logits


def run_with_cache(weights: Weights, tokens, *, device=None, dtype=None):
    """``(logits, Cache)``: logits ``[batch, pos, d_vocab_out]`` and every pattern, LN scale,
    residual and MLP activation of the pass (see ``Cache``)."""
    logits, cache, _ = _run(weights, tokens, device=device, dtype=dtype, record=True)
    return logits, cache


# the pass ---------------------------------------------------------------------------------
def _run(weights, tokens, *, device, dtype, record, unembed=True):
    """``(logits, Cache or None, params)``; ``unembed=False`` stops at ``ln_final`` (logits None),
    for callers that never need the vocabulary-sized output."""
    import torch

    if not isinstance(weights, Weights):
        raise PathexpandError(f"expected pathexpand Weights, got {type(weights).__name__}; "
                              "use pe.load(...) first")
    c = weights.config
    tdtype = _torch_dtype(dtype, weights)
    tokens = _tokens(tokens, c, device)                          # [batch, pos]
    p = _params(weights, tokens.device, tdtype)
    n = tokens.shape[1]
    rec = _Recorder(record)
    with torch.no_grad():
        x = p["W_E"][tokens]                                     # [batch, pos, d_model]
        pos = p["W_pos"][:n] if c.positional is not None else None
        qk_pos = pos if c.positional == "shortformer" else None  # added after ln1, to q and k
        if c.positional == "standard":
            x = x + pos
        mask = _mask(n, c.attention_dir, tokens.device)
        for l in range(c.n_layers):
            rec.add("resid_pre", x)
            h = _norm(x, p, f"blocks.{l}.ln1", c, rec)
            x = x + _attention(h, p, l, c, mask, qk_pos, rec)
            if c.d_mlp is not None:
                rec.add("resid_mid", x)
                x = x + _mlp(_norm(x, p, f"blocks.{l}.ln2", c, rec), p, l, c, rec)
        rec.add("resid_pre", x)
        x = _norm(x, p, "ln_final", c, rec)
        logits = x @ p["W_U"] + p["b_U"] if unembed else None    # [batch, pos, d_vocab_out]
    return logits, (rec.cache(tokens, c, x) if record else None), p


def _attention(h, p, l, c, mask, qk_pos, rec):
    """``Σ_h A^h (h W_V + b_V) W_O + b_O`` for layer ``l``; ``h`` is ``ln1(x)`` ``[batch, pos, d_model]``."""
    import torch

    a = f"blocks.{l}.attn"
    if c.n_heads == 0:  # an MLP-only layer: no heads, no attention parameters
        empty = h.new_zeros(h.shape[0], 0, h.shape[1], h.shape[1])
        rec.add_attention(empty, empty, h.new_zeros(h.shape[0], 0, h.shape[1], c.d_head))
        return torch.zeros_like(h)
    qk_in = h if qk_pos is None else h + qk_pos
    q = torch.einsum("bpd,hde->bhpe", qk_in, p[a + ".W_Q"]) + p[a + ".b_Q"][:, None, :]  # [b, H, q, e]
    k = torch.einsum("bpd,hde->bhpe", qk_in, p[a + ".W_K"]) + p[a + ".b_K"][:, None, :]  # [b, H, k, e]
    v = torch.einsum("bpd,hde->bhpe", h, p[a + ".W_V"]) + p[a + ".b_V"][:, None, :]      # [b, H, k, e]
    scores = q @ k.transpose(-1, -2) / math.sqrt(c.d_head)                               # [b, H, q, k]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    z = pattern @ v                                                                      # [b, H, q, e]
    rec.add_attention(scores, pattern, z)
    return torch.einsum("bhpe,hed->bpd", z, p[a + ".W_O"]) + p[a + ".b_O"]


def _mlp(h, p, l, c, rec):
    """``act(h W_in + b_in) W_out + b_out``; ``h`` is ``ln2(x)`` ``[batch, pos, d_model]``."""
    m = f"blocks.{l}.mlp"
    pre = h @ p[m + ".W_in"] + p[m + ".b_in"]                    # [batch, pos, d_mlp]
    post = _ACT[c.act_fn](pre)
    rec.add("mlp_pre", pre)
    rec.add("mlp_post", post)
    return post @ p[m + ".W_out"] + p[m + ".b_out"]              # [batch, pos, d_model]


def _norm(x, p, name, c, rec):
    """LayerNorm ``(x - mean) / sqrt(var + eps) · w + b``; ``LNPre`` without ``w``, ``b``; None: ``x``."""
    if c.normalization is None:
        return x
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + c.eps).sqrt()    # [batch, pos, 1]
    rec.scale(name, scale[..., 0])
    x = x / scale
    if c.normalization == "LN":
        x = x * p[name + ".w"] + p[name + ".b"]
    return x


def _gelu_new(x):
    """GPT-2's tanh approximation of GELU (TransformerLens ``gelu_new``)."""
    import torch

    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _relu(x):
    return x.clamp_min(0)


def _gelu(x):
    import torch

    return torch.nn.functional.gelu(x)  # exact erf form


_ACT = {"relu": _relu, "gelu": _gelu, "gelu_new": _gelu_new}


def _mask(n, attention_dir, device):
    import torch

    if attention_dir == "bidirectional":
        return None
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()    # [q, k]


# inputs -----------------------------------------------------------------------------------
def _torch_dtype(dtype, weights):
    import torch

    if dtype is None:
        return torch.float64 if weights.dtype == np.float64 else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
    else:
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            np_dtype = None
        if np_dtype == np.float32:
            return torch.float32
        if np_dtype == np.float64:
            return torch.float64
    raise PathexpandError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")


def token_array(tokens) -> np.ndarray:
    """Token ids (not text) as an integer numpy array ``[batch, pos]``, checked; a memory-mapped
    token file stays memory-mapped (nothing is read until a batch is used)."""
    if isinstance(tokens, str):
        raise PathexpandError(
            "tokens must be integer ids, got a string; encode it first, e.g. "
            "weights.tokenizer.encode(text)"
        )
    try:
        a = tokens if isinstance(tokens, np.memmap) else np.asarray(tokens)
    except (ValueError, TypeError):
        raise PathexpandError(f"tokens must be a rectangular array of integer ids, got {tokens!r}") from None
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        if a.size == 0 and a.dtype == np.float64:      # [] reads as float64: say it is empty
            a = a.astype(np.int64)
        else:
            raise PathexpandError(f"tokens must be integer ids, got dtype {a.dtype}: {_short(a)}")
    return _batch_shape(a)


def _batch_shape(a):
    """``a`` as ``[batch, pos]`` (a single prompt ``[pos]`` gains a batch axis), non-empty."""
    shape = list(a.shape)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise PathexpandError(f"tokens must be [pos] or [batch, pos], got shape {shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise PathexpandError(f"tokens must hold at least one token, got shape {shape}")
    return a


def _tokens(tokens, c, device):
    """Validate token ids and return an int64 tensor ``[batch, pos]`` on ``device``."""
    import torch

    if isinstance(tokens, torch.Tensor):
        t = tokens.detach()
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise PathexpandError(f"tokens must be integer ids, got a tensor of dtype {t.dtype}")
        t = t.to(device=device if device is not None else t.device, dtype=torch.int64)
        t = _batch_shape(t)
    else:
        t = torch.as_tensor(token_array(tokens).astype(np.int64), device=device)
    n = t.shape[1]
    if n > c.n_ctx:
        raise PathexpandError(f"{n} tokens is longer than the model's context n_ctx={c.n_ctx}")
    bad = (t < 0) | (t >= c.d_vocab)
    if bool(bad.any()):
        value = int(t[bad][0])
        raise PathexpandError(f"token id {value} is out of range; ids must be in [0, {c.d_vocab})")
    return t


def _short(a) -> str:
    flat = np.ravel(a)[:6].tolist()
    return f"{flat}{' ...' if np.size(a) > 6 else ''}"


def _params(weights: Weights, device, dtype) -> dict:
    """Parameters as torch tensors; on the CPU in the stored dtype they share the numpy memory
    (read-only arrays, never written: no copy of a GPT-2-sized model per call)."""
    import warnings

    import torch

    if torch.device(device).type == "cpu" and np.dtype(weights.dtype) == np.dtype(
        {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
            return {k: torch.from_numpy(v) for k, v in weights.state_dict().items()}
    return weights.to_torch(device=device, dtype=dtype)


# recording ------------------------------------------------------------------------------
class _Recorder:
    """Collects per-layer tensors during the pass; does nothing when ``on`` is False."""

    def __init__(self, on: bool):
        self.on = on
        self.lists: dict[str, list] = {"resid_pre": [], "resid_mid": [], "mlp_pre": [],
                                       "mlp_post": [], "scores": [], "patterns": [], "z": []}
        self.scales: dict[str, Any] = {}

    def add(self, key, value):
        if self.on:
            self.lists[key].append(value)

    def add_attention(self, scores, pattern, z):
        if self.on:
            self.lists["scores"].append(scores)
            self.lists["patterns"].append(pattern)
            self.lists["z"].append(z)

    def scale(self, name, value):
        if self.on:
            self.scales[name] = value

    def cache(self, tokens, c, like) -> Cache:
        import torch

        def stack(key):
            items = self.lists[key]
            return torch.stack(items, dim=1) if items else None

        b, n = tokens.shape
        patterns = stack("patterns")
        scores = stack("scores")
        if patterns is None:  # 0-layer model
            patterns = like.new_zeros(b, 0, c.n_heads, n, n)
            scores = patterns.clone()
        return Cache(
            tokens=tokens,
            patterns=patterns,
            scores=scores,
            resid_pre=stack("resid_pre"),
            resid_mid=stack("resid_mid"),
            ln_scale=dict(self.scales),
            mlp_pre=stack("mlp_pre"),
            mlp_post=stack("mlp_post"),
            z=stack("z"),
        )
