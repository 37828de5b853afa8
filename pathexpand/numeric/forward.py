"""The forward pass, one computation for every caller: ``Norm``, ``Attention``, ``MLP``, ``Block``,
``Transformer`` (torch modules, in data-flow order), then ``forward`` and ``run_with_cache``.

``x0 = W_E[tokens] + W_pos[:n]``; per layer ``x += Σ_h A^h (ln1(x) W_V^h + b_V^h) W_O^h + b_O``
with ``A^h = softmax_causal((ln1(x) W_Q^h + b_Q^h)(ln1(x) W_K^h + b_K^h)ᵀ / √d_head)``, then
``x += act(ln2(x) W_in + b_in) W_out + b_out``; ``logits = ln_final(x) W_U + b_U`` (DESIGN.md §2,
the computation of TransformerLens's ``HookedTransformer``). With ``positional="shortformer"``
``W_pos`` never enters the residual stream: it is added after ``ln1`` to each head's query and
key inputs only. The modern blocks (DESIGN.md "Modern blocks"): ``positional="rotary"`` rotates
queries and keys (``numeric.rotary``) and has no ``W_pos``; grouped-query heads read key/value
head ``h // n_kv_groups``; a gated MLP is ``(act(h W_gate) ⊙ h W_in + b_in) W_out + b_out``;
parallel blocks add ``attn(ln1(x)) + mlp(ln2(x))`` to the same ``x``.

Three callers run these same modules: ``pe.forward``/``pe.run_with_cache`` (a ``Transformer``
whose parameters share the ``Weights``' memory, under ``torch.no_grad``), freezing
(``numeric.frozen``: ``run_with_cache`` stopped before the unembedding) and training
(``models.train``: a ``Transformer`` with fresh parameters). Parameter names are DESIGN.md
names (``blocks.0.attn.W_Q``), so a module's ``state_dict()`` is a ``Weights``' ``state_dict()``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PathexpandError
from . import norm, rotary
from .tokens import as_tokens, to_tensor
from .weights import Config, Weights, as_weights

__all__ = [
    "Attention",
    "Block",
    "Cache",
    "MLP",
    "Norm",
    "Recorder",
    "Transformer",
    "forward",
    "gate",
    "init_parameters",
    "run_with_cache",
    "torch_dtype",
]


def _param(*shape: int, device=None) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, device=device))


class Norm(nn.Module):
    """LayerNorm ``C x / σ · w + b`` or RMSNorm ``x / σ · w`` (``*Pre``: without ``w``, ``b``;
    ``None``: the identity); the math is ``numeric.norm.apply``."""

    def __init__(self, config: Config, name: str, device=None):
        super().__init__()
        self.kind, self.eps, self.name = config.normalization, config.eps, name
        has = self.kind is not None
        self.w = _param(config.d_model, device=device) if has and norm.has_weight(self.kind) else None
        self.b = _param(config.d_model, device=device) if has and norm.has_bias(self.kind) else None

    def forward(self, x, rec: Recorder | None = None):
        y, s = norm.apply(x, self.kind, self.w, self.b, self.eps)     # [batch, pos, d_model]
        if rec is not None and s is not None:
            rec.scales[self.name] = s                                 # [batch, pos]
        return y


class Attention(nn.Module):
    """``Σ_h A^h (h W_V^{g(h)} + b_V^{g(h)}) W_O^h + b_O`` for ``h = ln1(x)``, ``g(h)`` the
    key/value head of query head ``h``; queries and keys read ``h + W_pos`` with shortformer
    positions and are rotated with rotary ones."""

    def __init__(self, config: Config, device=None):
        super().__init__()
        H, G, d, e = config.n_heads, config.n_key_value_heads, config.d_model, config.d_head
        self.W_Q = _param(H, d, e, device=device)
        self.W_K, self.W_V = _param(G, d, e, device=device), _param(G, d, e, device=device)
        self.W_O = _param(H, e, d, device=device)
        self.b_Q = _param(H, e, device=device)
        self.b_K, self.b_V = _param(G, e, device=device), _param(G, e, device=device)
        self.b_O = _param(d, device=device)
        self.causal = config.attention_dir == "causal"
        self.scale = 1.0 / math.sqrt(e)
        self.config = config

    def forward(self, h, qk_pos=None, rec: Recorder | None = None):
        qk_in = h if qk_pos is None else h + qk_pos
        q = torch.einsum("bpd,hde->bhpe", qk_in, self.W_Q) + self.b_Q[:, None, :]   # [b, H, q, e]
        k = torch.einsum("bpd,hde->bhpe", qk_in, self.W_K) + self.b_K[:, None, :]   # [b, G, k, e]
        v = torch.einsum("bpd,hde->bhpe", h, self.W_V) + self.b_V[:, None, :]       # [b, G, k, e]
        k, v = self.config.per_query_head(k, 1), self.config.per_query_head(v, 1)   # [b, H, n, e]
        if self.config.positional == "rotary":
            q, k = rotary.rotate(q, self.config), rotary.rotate(k, self.config)
        if rec is None:   # same math, fused: softmax_causal(q kᵀ / √d_head) v
            z = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:   # written straight into the recorder's buffers where it has them
            b, H, n, e = q.shape
            scores = torch.matmul(q, k.mT, out=rec.slot("scores", (b, H, n, n), q)).mul_(self.scale)
            if self.causal:                                                         # [b, H, q, k]
                above = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu_(1)
                scores.masked_fill_(above, float("-inf"))
            pattern = torch.softmax(scores, dim=-1, out=rec.slot("patterns", (b, H, n, n), q))
            z = torch.matmul(pattern, v, out=rec.slot("z", (b, H, n, e), q))       # [b, H, q, e]
            rec.add_attention(scores, pattern, z)
        return torch.einsum("bhpe,hed->bpd", z, self.W_O) + self.b_O                # [b, pos, d]


class MLP(nn.Module):
    """``act(h W_in + b_in) W_out + b_out`` for ``h = ln2(x)``; gated:
    ``(act(h W_gate) ⊙ h W_in + b_in) W_out + b_out`` (TransformerLens's ``GatedMLP``)."""

    def __init__(self, config: Config, device=None):
        super().__init__()
        d, m = config.d_model, config.d_mlp
        self.W_in, self.b_in = _param(d, m, device=device), _param(m, device=device)
        self.W_gate = _param(d, m, device=device) if config.gated_mlp else None
        self.W_out, self.b_out = _param(m, d, device=device), _param(d, device=device)
        self.act = ACTIVATIONS[config.act_fn]
        self.config = config

    def forward(self, h, rec: Recorder | None = None):
        freezing = rec is not None and rec.freezing
        if self.W_gate is None:
            pre = torch.addmm(self.b_in, h.flatten(0, -2), self.W_in).view(*h.shape[:-1], -1)  # [b, pos, d_mlp]
            if freezing:   # the frozen gate g = act(pre)/pre, and act(pre) = pre ⊙ g
                g = gate(pre, self.config.act_fn, out=rec.slot("gates", pre.shape, pre))
                post = pre * g
            else:
                post = self.act(pre)
        else:
            pre = h @ self.W_gate                                        # [batch, pos, d_mlp]
            g = self.act(pre)                                            # the frozen gate
            post = torch.addcmul(self.b_in, g, h @ self.W_in)
        slot = None if rec is None else rec.slot("mlp_out", h.shape, h)
        out = torch.addmm(self.b_out, post.flatten(0, -2), self.W_out,
                          out=None if slot is None else slot.view(-1, h.shape[-1])).view(h.shape)  # [b, pos, d]
        if rec is not None:
            if freezing:
                rec.add("gates", g)
            else:
                rec.add("mlp_pre", pre)
                rec.add("mlp_post", post)
            rec.add("mlp_out", out)
        return out


class Block(nn.Module):
    """``x += attn(ln1(x))``, then ``x += mlp(ln2(x))`` (each part only where the model has it);
    parallel: ``x += attn(ln1(x)) + mlp(ln2(x))``."""

    def __init__(self, config: Config, layer: int, device=None):
        super().__init__()
        self.ln1 = Norm(config, f"blocks.{layer}.ln1", device)
        self.attn = Attention(config, device) if config.n_heads else None
        self.ln2 = Norm(config, f"blocks.{layer}.ln2", device) if config.d_mlp is not None else None
        self.mlp = MLP(config, device) if config.d_mlp is not None else None
        self.config = config

    def forward(self, x, qk_pos=None, rec: Recorder | None = None):
        if rec is not None:
            rec.add("resid_pre", x)
        h = self.ln1(x, rec)
        if self.config.parallel_attn_mlp:   # both read x: no head → MLP path inside the layer
            return x + self.attn(h, qk_pos, rec) + self.mlp(self.ln2(x, rec), rec)
        if self.attn is not None:
            x = x + self.attn(h, qk_pos, rec)                            # [batch, pos, d_model]
        elif rec is not None:  # an MLP-only layer: record empty attention
            b, n = x.shape[:2]
            empty = x.new_zeros(b, 0, n, n)
            rec.add_attention(empty, empty, x.new_zeros(b, 0, n, self.config.d_head))
        if self.mlp is not None:
            if rec is not None:
                rec.add("resid_mid", x)
            x = x + self.mlp(self.ln2(x, rec), rec)
        return x


class Transformer(nn.Module):
    """Token and positional embeddings, ``n_layers`` blocks, final norm, unembedding.

    ``Transformer(config)`` allocates parameters (``init_parameters`` fills them for
    training); ``Transformer.from_weights(weights)`` shares the weights' memory on the CPU.
    ``model(tokens)`` → logits ``[batch, pos, d_vocab_out]``; ``rec=`` records what
    ``run_with_cache`` returns; ``unembed=False`` stops at ``ln_final`` (returns its output).
    """

    def __init__(self, config: Config, device=None):
        super().__init__()
        if not isinstance(config, Config):
            raise PathexpandError(f"config must be a pathexpand Config, got {type(config).__name__}")
        self.config = c = config
        self.W_E = _param(c.d_vocab, c.d_model, device=device)
        self.W_pos = (_param(c.n_ctx, c.d_model, device=device)
                      if c.positional in ("standard", "shortformer") else None)
        self.blocks = nn.ModuleList(Block(c, l, device) for l in range(c.n_layers))
        self.ln_final = Norm(c, "ln_final", device)
        self.W_U = _param(c.d_model, c.d_vocab_out, device=device)
        self.b_U = _param(c.d_vocab_out, device=device)

    @classmethod
    def from_weights(cls, weights: Weights, *, device=None, dtype=None) -> Transformer:
        """The model of ``weights``, parameters frozen (``requires_grad=False``); on the CPU in
        the stored dtype they share the numpy memory (read-only arrays, never written)."""
        model = cls(weights.config, device="meta")
        tdtype = torch_dtype(dtype, weights)
        device = torch.device("cpu" if device is None else device)
        share = device.type == "cpu" and np.dtype(weights.dtype) == _NP_DTYPE[tdtype]
        for name, array in weights.state_dict().items():
            if share:
                with warnings.catch_warnings():  # "the given NumPy array is not writable"
                    warnings.simplefilter("ignore", UserWarning)
                    t = torch.from_numpy(array)
            else:
                t = torch.as_tensor(np.array(array), dtype=tdtype, device=device)
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, leaf,
                    nn.Parameter(t, requires_grad=False))
        return model

    def forward(self, tokens, rec: Recorder | None = None, unembed: bool = True):
        c = self.config
        n = tokens.shape[1]
        if n > c.n_ctx:
            raise PathexpandError(f"{n} tokens is longer than the model's context n_ctx={c.n_ctx}")
        x = self.W_E[tokens]                                             # [batch, pos, d_model]
        pos = self.W_pos[:n] if self.W_pos is not None else None
        if c.positional == "standard":
            x = x + pos
        qk_pos = pos if c.positional == "shortformer" else None
        for block in self.blocks:
            x = block(x, qk_pos, rec)
        if rec is not None:
            rec.add("resid_pre", x)
        x = self.ln_final(x, rec)
        return x @ self.W_U + self.b_U if unembed else x                # [batch, pos, d_vocab_out]


def init_parameters(model: Transformer, std: float | None = None) -> Transformer:
    """Initialise like TransformerLens, in parameter order: weights ``~ N(0, std)``
    (``std = 0.8/√d_model``), biases 0, norm weights 1."""
    std = 0.8 / math.sqrt(model.config.d_model) if std is None else std
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "w":
                p.fill_(1.0)
            elif leaf.startswith("b"):
                p.zero_()
            else:
                nn.init.normal_(p, std=std)
    return model


# activations ---------------------------------------------------------------------------------------
def _gelu_new(x):
    """GPT-2's tanh approximation of GELU (TransformerLens ``gelu_new``):
    ``½ x (1 + tanh(√(2/π)(x + 0.044715 x³)))``, torch's fused ``gelu(approximate="tanh")``."""
    return nn.functional.gelu(x, approximate="tanh")


ACTIVATIONS = {
    "relu": lambda x: x.clamp_min(0),
    "gelu": nn.functional.gelu,  # exact erf form
    "gelu_new": _gelu_new,
    "silu": nn.functional.silu,  # x σ(x), SwiGLU's gate
}


def gate(pre, act_fn: str, out=None):
    """The frozen gate ``g = act(pre) / pre`` in closed form (no division; finite at ``pre = 0``):
    ``[pre > 0]`` for relu, ``Φ(pre)`` for gelu, ``½(1 + tanh(u)) = σ(2u)`` with
    ``u = √(2/π) pre (1 + 0.044715 pre²)`` for gelu_new, ``σ(pre)`` for silu; ``pre ⊙ g`` is the
    activation. Computed in one buffer (``out``, when given), in place."""
    if act_fn == "relu":
        return (pre > 0).to(pre.dtype)
    if act_fn == "gelu":
        return torch.erf(pre * (1.0 / math.sqrt(2.0))).add_(1.0).mul_(0.5)
    if act_fn == "gelu_new":
        k = 2.0 * math.sqrt(2.0 / math.pi)
        t = torch.addcmul(pre.new_tensor(k), pre, pre, value=k * 0.044715, out=out)   # 2u / pre
        return t.mul_(pre).sigmoid_()
    if act_fn == "silu":
        return torch.sigmoid(pre)
    raise PathexpandError(f"cannot freeze MLP activation {act_fn!r}")


# the public calls -------------------------------------------------------------------------------
def forward(model, tokens, *, device=None, dtype=None):
    """Logits ``[batch, pos, d_vocab_out]`` of ``tokens`` (text, ids ``[pos]``/``[batch, pos]`` or
    a ``.npy`` path); ``model`` is anything ``pe.load`` takes."""
    w = as_weights(model)
    t = to_tensor(as_tokens(w, tokens), w.config, device)                # [batch, pos]
    with torch.no_grad():
        return Transformer.from_weights(w, device=t.device, dtype=dtype)(t)


def run_with_cache(model, tokens, *, device=None, dtype=None):
    """``(logits, Cache)``: logits ``[batch, pos, d_vocab_out]`` and every pattern, norm scale,
    residual and MLP activation of the pass (see ``Cache``)."""
    w = as_weights(model)
    logits, cache, _ = record(w, as_tokens(w, tokens), device=device, dtype=dtype)
    return logits, cache


def record(weights: Weights, ids, *, device=None, dtype=None, unembed: bool = True,
           freezing: bool = False):
    """``(logits or None, Cache, model)``: one recorded pass over checked ids ``[batch, pos]``;
    ``unembed=False`` stops at ``ln_final`` (nothing vocabulary-sized is built); ``freezing``
    records the MLP gates instead of ``mlp_pre``/``mlp_post`` (``Recorder``)."""
    t = to_tensor(ids, weights.config, device)
    model = Transformer.from_weights(weights, device=t.device, dtype=dtype)
    rec = Recorder(freezing, weights.config.n_layers)
    with torch.no_grad():
        out = model(t, rec=rec, unembed=unembed)
    return (out if unembed else None), rec.cache(t, weights.config, out), model


def torch_dtype(dtype, weights) -> torch.dtype:
    """``torch.float32``/``float64`` from ``dtype`` (a torch or numpy dtype or its name); None:
    the weights' own dtype."""
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
        for t, n in _NP_DTYPE.items():
            if np_dtype == n:
                return t
    raise PathexpandError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")


_NP_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


# recording --------------------------------------------------------------------------------------
@dataclass
class Cache:
    """What one forward pass recorded (torch tensors on the pass's device).

    - ``tokens``    ``[batch, pos]`` (int64)
    - ``patterns``  ``[batch, n_layers, n_heads, q_pos, k_pos]`` attention after softmax
    - ``scores``    same shape, before softmax (``/ √d_head`` applied; masked entries ``-inf``)
    - ``resid_pre`` ``[batch, n_layers + 1, pos, d_model]``: ``resid_pre[:, l]`` enters layer
      ``l``; ``resid_pre[:, n_layers]`` is the final residual before ``ln_final``
    - ``resid_mid`` ``[batch, n_layers, pos, d_model]`` after attention, before the MLP
      (None without MLPs, and for parallel blocks, whose MLP reads ``resid_pre``)
    - ``ln_scale``  ``{"blocks.{l}.ln1", "blocks.{l}.ln2", "ln_final"}`` → ``[batch, pos]``,
      ``σ = sqrt(var(x) + eps)`` (TransformerLens's ``hook_scale``); empty without a norm
    - ``mlp_pre``, ``mlp_post`` ``[batch, n_layers, pos, d_mlp]``: ``x W_in + b_in`` and
      ``act(mlp_pre)``; gated: ``x W_gate`` and ``act(mlp_pre) ⊙ x W_in + b_in``
      (TransformerLens's ``hook_pre``, ``hook_post``; None without MLPs)
    - ``mlp_out``   ``[batch, n_layers, pos, d_model]``: what each MLP adds to the stream
    - ``z``         ``[batch, n_layers, n_heads, pos, d_head]``: ``A (ln1(x) W_V + b_V)``, each
      head's value mix before ``W_O`` (TransformerLens's ``hook_z``, heads first)
    - ``gates``     ``[batch, n_layers, pos, d_mlp]``: the frozen MLP gates ``act(pre)/pre``
      (gated MLPs: ``act(x W_gate)``), recorded instead of ``mlp_pre``/``mlp_post`` when
      freezing (``record(..., freezing=True)``); None otherwise
    """

    tokens: Any
    patterns: Any
    scores: Any
    resid_pre: Any
    resid_mid: Any = None
    ln_scale: dict = field(default_factory=dict)
    mlp_pre: Any = None
    mlp_post: Any = None
    mlp_out: Any = None
    z: Any = None
    gates: Any = None

    def pattern(self, layer: int):
        """Attention patterns of one layer: ``[batch, n_heads, q_pos, k_pos]``."""
        n_layers = self.patterns.shape[1]
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not (
            -n_layers <= layer < n_layers
        ):
            raise PathexpandError(f"layer {layer!r} is not in this {n_layers}-layer model")
        return self.patterns[:, layer]


class Recorder:
    """Collects per-layer tensors during a pass (``Transformer.forward(..., rec=Recorder())``).

    ``freezing=True`` records what freezing needs and no more: the MLP gates ``act(pre)/pre``
    (gated: ``act(x W_gate)``) instead of ``mlp_pre`` and ``mlp_post``. With ``n_layers`` (and
    autograd off) each key lives in one layer-major buffer ``[n_layers(+1), *shape]`` that the
    modules write into (``slot``: ``out=``), so nothing is stacked afterwards; the cache views it
    as ``[batch, n_layers, ...]``."""

    def __init__(self, freezing: bool = False, n_layers: int | None = None):
        self.freezing = freezing
        self.n_layers = n_layers
        self.lists: dict[str, list] = {"resid_pre": [], "resid_mid": [], "mlp_pre": [],
                                       "mlp_post": [], "mlp_out": [], "scores": [], "patterns": [],
                                       "z": [], "gates": []}
        self.buffers: dict[str, Any] = {}
        self.scales: dict[str, Any] = {}

    def slot(self, key: str, shape, like):
        """Where this layer's ``key`` goes (a view into its buffer), or None (no buffers)."""
        if self.n_layers is None or torch.is_grad_enabled():
            return None
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = like.new_empty(self.n_layers + (key == "resid_pre"), *shape)
        i = len(self.lists[key])
        return buf[i] if i < buf.shape[0] and tuple(buf.shape[1:]) == tuple(shape) else None

    def add(self, key: str, value) -> None:
        s = self.slot(key, value.shape, value)
        if s is not None and s.data_ptr() != value.data_ptr():
            s.copy_(value)
        self.lists[key].append(value if s is None else s)

    def add_attention(self, scores, pattern, z) -> None:
        self.add("scores", scores)
        self.add("patterns", pattern)
        self.add("z", z)

    def cache(self, tokens, config: Config, like) -> Cache:
        """The recorded tensors stacked over layers (``like``: any tensor of the pass)."""

        def stack(key):
            items, buf = self.lists[key], self.buffers.get(key)
            if buf is not None and len(items) == buf.shape[0] and all(
                    x.data_ptr() == buf[i].data_ptr() for i, x in enumerate(items)):
                return buf.movedim(0, 1)                                    # [batch, layers, ...]
            return torch.stack(items, dim=1) if items else None

        b, n = tokens.shape
        patterns, scores = stack("patterns"), stack("scores")
        if patterns is None:  # 0-layer model
            patterns = like.new_zeros(b, 0, config.n_heads, n, n)
            scores = patterns.clone()
        return Cache(tokens=tokens, patterns=patterns, scores=scores,
                     resid_pre=stack("resid_pre"), resid_mid=stack("resid_mid"),
                     ln_scale=dict(self.scales), mlp_pre=stack("mlp_pre"),
                     mlp_post=stack("mlp_post"), mlp_out=stack("mlp_out"), z=stack("z"),
                     gates=stack("gates"))
