"""``Weights``: a model's parameters in DESIGN.md names and shapes, validated, read-only.

Every loader (bundled name, ``.npz``/``.safetensors``, TransformerLens, Hugging Face)
ends here; nothing downstream knows where the numbers came from. numpy only: torch is
imported by the code that computes, never by this module.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .._hooks import load_model
from ..errors import PathexpandError, ShapeError, UnsupportedArchitecture

__all__ = ["Config", "Weights", "as_weights", "expected_shapes", "TL_KEY_MAP", "to_numpy"]

ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")
POSITIONAL = ("standard", "shortformer", "rotary", None)
ATTENTION_DIRS = ("causal", "bidirectional")

# TransformerLens state_dict names that differ from ours; per-block names are shared.
TL_KEY_MAP = {
    "embed.W_E": "W_E",
    "pos_embed.W_pos": "W_pos",
    "unembed.W_U": "W_U",
    "unembed.b_U": "b_U",
}
# Buffers TransformerLens keeps in its state_dict that are not parameters.
_BUFFERS = re.compile(r"(^|\.)(mask|IGNORE|rotary_sin|rotary_cos|hook_\w+)$")
# Keys that betray a feature we cannot expand, with the feature's name.
_FEATURE_KEYS = (
    (re.compile(r"\.attn\.(W_|b_)\w+_moe|experts"), "mixture of experts"),
)
# TransformerLens keeps grouped-query key/value weights as ``_W_K``; ours are ``W_K``.
_GQA_KEY = re.compile(r"\.attn\._([Wb]_[KV])$")


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, a list, or a torch tensor (without importing torch)."""
    if "torch" in sys.modules and isinstance(value, sys.modules["torch"].Tensor):
        t = value.detach().cpu()
        if t.dtype == sys.modules["torch"].bfloat16:
            t = t.float()
        return t.numpy()
    return np.asarray(value)


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of a model in TransformerLens's vocabulary.

    ``normalization`` is ``None``, ``"LN"`` (LayerNorm with weight and bias), ``"LNPre"``
    (LayerNorm whose weight and bias were folded into the next layer), ``"RMS"`` (RMSNorm
    ``x / rms(x) · w``) or ``"RMSPre"`` (its weight folded). ``positional`` is
    TransformerLens's ``positional_embedding_type``: ``"standard"``, ``"shortformer"``
    (positions added only to query and key inputs), ``"rotary"`` (queries and keys rotated:
    ``rotary_dim`` dims of each head, default all, angles ``pos · rotary_base^(−2m/rotary_dim)``,
    pairs ``m, m + rotary_dim/2``, or ``2m, 2m+1`` with ``rotary_adjacent_pairs``) or ``None``.
    ``n_key_value_heads`` < ``n_heads``: grouped-query attention (query head ``h`` reads
    key/value head ``h // (n_heads // n_key_value_heads)``). ``gated_mlp``: the MLP is
    ``(act(x W_gate) ⊙ x W_in + b_in) W_out + b_out``. ``parallel_attn_mlp``: attention and
    MLP read the same residual stream (``x + attn(ln1(x)) + mlp(ln2(x))``).
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int | None = None
    act_fn: str | None = None
    normalization: str | None = None
    positional: str | None = "standard"
    attention_dir: str = "causal"
    d_vocab_out: int | None = None
    eps: float = 1e-5
    n_key_value_heads: int | None = None
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_adjacent_pairs: bool = False
    gated_mlp: bool = False
    parallel_attn_mlp: bool = False

    def __post_init__(self):
        for name in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise PathexpandError(f"config {name} must be a non-negative int, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("d_model", "d_vocab", "n_ctx"):
            if getattr(self, name) == 0:
                raise PathexpandError(f"config {name} must be positive, got 0")
        if self.n_layers and (self.n_heads == 0 or self.d_head == 0) and self.d_mlp is None:
            raise PathexpandError("a model with layers needs heads (n_heads, d_head > 0) or MLPs")
        eps = self.eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)) \
                or not math.isfinite(eps) or eps <= 0:
            raise PathexpandError(f"config eps must be a finite number > 0 (LayerNorm's "
                                  f"sqrt(var + eps)), got {eps!r}")
        object.__setattr__(self, "eps", float(eps))
        if self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)
        if self.positional == "none":
            object.__setattr__(self, "positional", None)
        if self.positional not in POSITIONAL:
            raise UnsupportedArchitecture(
                f"positional embedding {self.positional!r} is not supported; "
                "pathexpand expands 'standard', 'shortformer', 'rotary' and none "
                "(ALiBi adds a bias to the scores that no path of the residual stream carries)"
            )
        if self.normalization not in NORMALIZATIONS:
            raise UnsupportedArchitecture(
                f"normalization {self.normalization!r} is not supported; use one of {NORMALIZATIONS}"
            )
        self._check_modern()
        if self.attention_dir not in ATTENTION_DIRS:
            raise PathexpandError(
                f"attention_dir must be 'causal' or 'bidirectional', got {self.attention_dir!r}"
            )
        if self.d_mlp is not None:
            if self.act_fn not in ACT_FNS:
                raise UnsupportedArchitecture(
                    f"MLP activation {self.act_fn!r} is not supported; use one of {ACT_FNS}"
                )
        elif self.act_fn is not None:
            object.__setattr__(self, "act_fn", None)

    def _check_modern(self) -> None:
        """Grouped-query heads, rotary dims and the block flags, validated and defaulted."""
        for flag in ("rotary_adjacent_pairs", "gated_mlp", "parallel_attn_mlp"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise PathexpandError(f"config {flag} must be True or False, got {getattr(self, flag)!r}")
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        kv = self.n_heads if self.n_key_value_heads is None else self.n_key_value_heads
        if isinstance(kv, bool) or not isinstance(kv, (int, np.integer)) or kv < 0 or (
            self.n_heads and (kv == 0 or self.n_heads % kv)
        ):
            raise PathexpandError(
                f"config n_key_value_heads must divide n_heads={self.n_heads} (each key/value head "
                f"serves n_heads // n_key_value_heads query heads), got {self.n_key_value_heads!r}"
            )
        object.__setattr__(self, "n_key_value_heads", int(kv))
        if self.positional == "rotary":
            r = self.d_head if self.rotary_dim is None else self.rotary_dim
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r <= 0 or r % 2 \
                    or r > self.d_head:
                raise PathexpandError(
                    f"config rotary_dim must be an even int in [2, d_head={self.d_head}], got {r!r}"
                )
            object.__setattr__(self, "rotary_dim", int(r))
            base = self.rotary_base
            if isinstance(base, bool) or not isinstance(base, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(base) or base <= 1:
                raise PathexpandError(f"config rotary_base must be a finite number > 1, got {base!r}")
            object.__setattr__(self, "rotary_base", float(base))
        else:
            stray = [f"{k}={getattr(self, k)!r}" for k, default in
                     (("rotary_dim", None), ("rotary_base", 10000.0), ("rotary_adjacent_pairs", False))
                     if getattr(self, k) != default]
            if stray:
                raise PathexpandError(f"config {', '.join(stray)} apply to positional='rotary'; this "
                                      f"model has positional={self.positional!r}")
        if self.gated_mlp and self.d_mlp is None:
            raise PathexpandError("config gated_mlp=True needs an MLP (d_mlp)")
        if self.parallel_attn_mlp and (self.d_mlp is None or not self.n_heads):
            raise PathexpandError("config parallel_attn_mlp=True needs both heads and an MLP")

    @property
    def n_kv_groups(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_key_value_heads if self.n_key_value_heads else 1

    def per_query_head(self, x, axis: int = 0):
        """Key/value weights ``[…, n_key_value_heads, …]`` → ``[…, n_heads, …]`` along ``axis``:
        query head ``h`` reads key/value head ``h // n_kv_groups`` (Hugging Face's ``repeat_kv``
        order). numpy arrays or torch tensors; the one place this expansion is written."""
        g = self.n_kv_groups
        if g == 1:
            return x
        return np.repeat(x, g, axis=axis) if isinstance(x, np.ndarray) else x.repeat_interleave(g, axis)

    @property
    def attn_only(self) -> bool:
        """True when the model has no MLPs."""
        return self.d_mlp is None

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready); the modern-block fields only where they differ from a
        classic block (so files of classic models keep their short header)."""
        out = asdict(self)
        classic = {"n_key_value_heads": self.n_heads, "rotary_dim": None, "gated_mlp": False,
                   "parallel_attn_mlp": False, "rotary_adjacent_pairs": False}
        for key, value in classic.items():
            if out[key] == value:
                del out[key]
        if self.positional != "rotary":
            del out["rotary_base"]
        return out


def expected_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every parameter name a model with ``config`` has, with its shape (DESIGN.md table)."""
    c = config
    shapes: dict[str, tuple[int, ...]] = {"W_E": (c.d_vocab, c.d_model)}
    if c.positional in ("standard", "shortformer"):
        shapes["W_pos"] = (c.n_ctx, c.d_model)
    for l in range(c.n_layers):
        p = f"blocks.{l}"
        _norm_shapes(shapes, f"{p}.ln1", c)
        if c.n_heads:
            kv = c.n_key_value_heads
            for w, n in (("W_Q", c.n_heads), ("W_K", kv), ("W_V", kv)):
                shapes[f"{p}.attn.{w}"] = (n, c.d_model, c.d_head)
            shapes[f"{p}.attn.W_O"] = (c.n_heads, c.d_head, c.d_model)
            for b, n in (("b_Q", c.n_heads), ("b_K", kv), ("b_V", kv)):
                shapes[f"{p}.attn.{b}"] = (n, c.d_head)
            shapes[f"{p}.attn.b_O"] = (c.d_model,)
        if c.d_mlp is not None:
            _norm_shapes(shapes, f"{p}.ln2", c)
            shapes[f"{p}.mlp.W_in"] = (c.d_model, c.d_mlp)
            if c.gated_mlp:
                shapes[f"{p}.mlp.W_gate"] = (c.d_model, c.d_mlp)
            shapes[f"{p}.mlp.b_in"] = (c.d_mlp,)
            shapes[f"{p}.mlp.W_out"] = (c.d_mlp, c.d_model)
            shapes[f"{p}.mlp.b_out"] = (c.d_model,)
    _norm_shapes(shapes, "ln_final", c)
    shapes["W_U"] = (c.d_model, c.d_vocab_out)
    shapes["b_U"] = (c.d_vocab_out,)
    return shapes


def _norm_shapes(shapes: dict, name: str, c: Config) -> None:
    """A norm's parameters: LayerNorm ``w``, ``b``; RMSNorm ``w`` only; folded norms none."""
    if c.normalization in ("LN", "RMS"):
        shapes[f"{name}.w"] = (c.d_model,)
    if c.normalization == "LN":
        shapes[f"{name}.b"] = (c.d_model,)


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("b") and not name.endswith(".w")


class Weights:
    """A model's parameters (numpy, read-only) under DESIGN.md names, plus its ``Config``.

    ``weights["blocks.0.attn.W_Q"]`` is ``[n_heads, d_model, d_head]``; stacked views
    ``weights.W_Q`` are ``[n_layers, n_heads, d_model, d_head]`` (built once, cached).
    Construction validates everything and keeps nothing half-built: missing or unknown
    keys, shape mismatches and NaN/Inf raise before any state is stored.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        config: Config,
        *,
        name: str | None = None,
        card: Mapping[str, Any] | None = None,
        tokenizer: Any = None,
    ):
        if not isinstance(config, Config):
            raise PathexpandError(f"config must be a pathexpand Config, got {type(config).__name__}")
        arrays = {str(k): to_numpy(v) for k, v in params.items()}
        _validate(arrays, config)
        size = getattr(tokenizer, "d_vocab", None)
        if size is not None and size > config.d_vocab:
            raise PathexpandError(
                f"the tokenizer {getattr(tokenizer, 'name', type(tokenizer).__name__)!r} makes ids "
                f"up to {size - 1}, but this model's d_vocab is {config.d_vocab}: the card names "
                "the wrong tokenizer (or none is needed)"
            )
        dtype = np.result_type(*arrays.values())
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(np.float32)
        stored = {}
        for k, v in arrays.items():
            a = np.array(v, dtype=dtype, copy=True)
            a.setflags(write=False)
            stored[k] = a
        self._params = stored
        self._config = config
        self._stacked: dict[str, np.ndarray] = {}
        self.name = name
        self.card = dict(card) if card else {}
        self.tokenizer = tokenizer

    # construction ----------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], **config) -> Weights:
        """Rebuild from a dict in DESIGN.md or TransformerLens names; missing biases are zeros.

        Config values not given are inferred from the shapes (``n_layers`` from the block
        keys, ``n_heads``/``d_head`` from ``W_Q``, ``d_mlp`` from ``W_in``, LayerNorm from
        ``ln1.w``, ``positional`` from the presence of ``W_pos``). ``act_fn`` defaults to
        ``"gelu_new"`` when the model has MLPs; ``positional`` to ``"standard"`` when
        ``W_pos`` is present.
        """
        extra = {k: config.pop(k) for k in ("name", "card", "tokenizer") if k in config}
        params = normalize_keys(state_dict)
        cfg = infer_config(params, **{**_rotary_from_buffers(state_dict), **config})
        shapes = expected_shapes(cfg)
        dtype = np.result_type(*(to_numpy(v) for v in params.values())) if params else np.float32
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(np.float32)
        for key, shape in shapes.items():
            if key not in params and _is_bias(key):
                params[key] = np.zeros(shape, dtype=dtype)
        return cls(params, cfg, **extra)

    # access ----------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The model's ``Config``."""
        return self._config

    @property
    def dtype(self) -> np.dtype:
        """Floating dtype of every parameter (float32 or float64)."""
        return next(iter(self._params.values())).dtype

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter keyed exactly by its DESIGN.md name (read-only numpy arrays)."""
        return dict(self._params)

    def keys(self):
        """Parameter names in DESIGN.md order."""
        return self._params.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._params[key]
        except KeyError:
            raise KeyError(
                f"{key!r} is not a parameter of this model; it has "
                f"{', '.join(list(self._params)[:6])}, ... ({len(self._params)} in all)"
            ) from None

    def __contains__(self, key: str) -> bool:
        return key in self._params

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def stacked(self, param: str) -> np.ndarray:
        """Per-layer parameter stacked over layers: ``stacked("W_Q")`` is ``[L, H, d_model, d_head]``.

        ``param`` is the last part of the name (``W_Q``, ``b_O``, ``W_in``, ``ln1.w``, ...).
        Key and value weights come per query head (``[L, n_heads, ...]``): with grouped-query
        attention each stored key/value head is repeated for the query heads it serves,
        while ``weights["blocks.0.attn.W_K"]`` is the stored ``[n_key_value_heads, ...]``.
        Built once and cached.
        """
        if param not in self._stacked:
            L = self._config.n_layers
            where = {
                "W_Q": "attn", "W_K": "attn", "W_V": "attn", "W_O": "attn",
                "b_Q": "attn", "b_K": "attn", "b_V": "attn", "b_O": "attn",
                "W_in": "mlp", "b_in": "mlp", "W_out": "mlp", "b_out": "mlp", "W_gate": "mlp",
                "ln1.w": None, "ln1.b": None, "ln2.w": None, "ln2.b": None,
            }
            if param not in where:
                raise KeyError(f"{param!r} is not a per-layer parameter; one of {sorted(where)}")
            keys = [f"blocks.{l}." + (f"{where[param]}.{param}" if where[param] else param) for l in range(L)]
            missing = [k for k in keys if k not in self._params]
            if missing or L == 0:
                raise KeyError(f"this model has no {param} ({'no layers' if L == 0 else missing[0]} )")
            a = np.stack([self._params[k] for k in keys])
            if param in ("W_K", "W_V", "b_K", "b_V"):
                a = self._config.per_query_head(a, axis=1)           # per query head
            a.setflags(write=False)
            self._stacked[param] = a
        return self._stacked[param]

    W_E = property(lambda self: self._params["W_E"], doc="Token embedding ``[d_vocab, d_model]``.")
    W_U = property(lambda self: self._params["W_U"], doc="Unembedding ``[d_model, d_vocab_out]``.")
    b_U = property(lambda self: self._params["b_U"], doc="Unembedding bias ``[d_vocab_out]``.")
    W_Q = property(lambda self: self.stacked("W_Q"), doc="``[n_layers, n_heads, d_model, d_head]``.")
    W_K = property(lambda self: self.stacked("W_K"), doc="``[n_layers, n_heads, d_model, d_head]``.")
    W_V = property(lambda self: self.stacked("W_V"), doc="``[n_layers, n_heads, d_model, d_head]``.")
    W_O = property(lambda self: self.stacked("W_O"), doc="``[n_layers, n_heads, d_head, d_model]``.")
    b_Q = property(lambda self: self.stacked("b_Q"), doc="``[n_layers, n_heads, d_head]``.")
    b_K = property(lambda self: self.stacked("b_K"), doc="``[n_layers, n_heads, d_head]``.")
    b_V = property(lambda self: self.stacked("b_V"), doc="``[n_layers, n_heads, d_head]``.")
    b_O = property(lambda self: self.stacked("b_O"), doc="``[n_layers, d_model]``.")

    @property
    def W_pos(self) -> np.ndarray | None:
        """Positional embedding ``[n_ctx, d_model]``, or None without positions."""
        return self._params.get("W_pos")

    # derived ---------------------------------------------------------------------------
    def has_biases(self) -> bool:
        """True when any bias (attention, MLP, LayerNorm, unembedding) is non-zero."""
        return any(_is_bias(k) and np.any(v != 0) for k, v in self._params.items())

    def astype(self, dtype) -> Weights:
        """A copy with every parameter cast to ``dtype`` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise PathexpandError(f"dtype must be float32 or float64, got {dtype}")
        return self.replace({k: v.astype(dtype) for k, v in self._params.items()})

    def replace(self, params: Mapping[str, Any] | None = None, **config) -> Weights:
        """A new ``Weights`` with some parameters and/or config fields replaced (validated)."""
        new = dict(self._params)
        new.update(params or {})
        cfg = replace(self._config, **config) if config else self._config
        for k in [k for k in new if k not in expected_shapes(cfg)]:
            del new[k]
        return Weights(new, cfg, name=self.name, card=self.card, tokenizer=self.tokenizer)

    def to_torch(self, device=None, dtype=None) -> dict:
        """Every parameter as a torch tensor on ``device`` (``dtype`` defaults to the stored one)."""
        import torch

        tdtype = dtype or {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
            self.dtype
        ]
        return {k: torch.as_tensor(np.array(v), dtype=tdtype, device=device) for k, v in self._params.items()}

    def n_params(self) -> int:
        """Number of scalars stored."""
        return sum(int(v.size) for v in self._params.values())

    def __repr__(self) -> str:
        c = self._config
        parts = [f"n_layers={c.n_layers}", f"n_heads={c.n_heads}", f"d_model={c.d_model}",
                 f"d_head={c.d_head}", f"d_vocab={c.d_vocab}", f"n_ctx={c.n_ctx}"]
        if c.d_mlp is not None:
            parts.append(f"d_mlp={c.d_mlp}, act_fn={c.act_fn!r}")
        if c.normalization:
            parts.append(f"normalization={c.normalization!r}")
        parts.append(f"positional={c.positional!r}")
        if c.positional == "rotary":
            parts.append(f"rotary_dim={c.rotary_dim}")
        if c.n_key_value_heads != c.n_heads:
            parts.append(f"n_key_value_heads={c.n_key_value_heads}")
        for flag in ("gated_mlp", "parallel_attn_mlp"):
            if getattr(c, flag):
                parts.append(f"{flag}=True")
        if c.attention_dir != "causal":
            parts.append(f"attention_dir={c.attention_dir!r}")
        label = f"{self.name!r}, " if self.name else ""
        return f"Weights({label}{', '.join(parts)}, dtype={self.dtype})"


def as_weights(model: Any) -> Weights:
    """The one input rule for a model: ``Weights`` as they are; a bundled name, a weights file
    (``str`` or ``Path``), a TransformerLens ``HookedTransformer`` or a Hugging Face model
    through ``pe.load``. Anything else raises ``PathexpandError`` saying what is accepted."""
    if isinstance(model, Weights):
        return model
    return load_model(model)


# helpers -------------------------------------------------------------------------------
def normalize_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Map TransformerLens names onto DESIGN.md names, drop buffers, refuse unknown features."""
    if not isinstance(state_dict, Mapping):
        raise PathexpandError(f"expected a dict of arrays, got {type(state_dict).__name__}")
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        key = str(key)
        for pattern, feature in _FEATURE_KEYS:
            if pattern.search(key):
                raise UnsupportedArchitecture(
                    f"{feature} is not supported (found parameter {key!r})"
                )
        if _BUFFERS.search(key):
            continue
        new = _GQA_KEY.sub(r".attn.\1", TL_KEY_MAP.get(key, key))
        if new in out:
            raise PathexpandError(f"parameter {new!r} appears twice (as {key!r} too)")
        out[new] = value
    return out


def _rotary_from_buffers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rotary settings read off TransformerLens's ``rotary_sin`` buffer ``[n_ctx, rotary_dim]``
    (``sin(p θ_m)``; pairs as halves or adjacent): positional, rotary_dim, base, pairing, n_ctx."""
    sin = state_dict.get("blocks.0.attn.rotary_sin") if isinstance(state_dict, Mapping) else None
    if sin is None:
        return {}
    sin = to_numpy(sin).astype(np.float64)
    if sin.ndim != 2 or sin.shape[0] < 2 or sin.shape[1] < 2 or sin.shape[1] % 2:
        raise ShapeError(f"blocks.0.attn.rotary_sin must be [n_ctx, rotary_dim], got {sin.shape}")
    n_ctx, r = sin.shape
    adjacent = r >= 4 and np.isclose(sin[1, 0], sin[1, 1]) and not np.isclose(sin[1, 1], sin[1, 2])
    out = {"positional": "rotary", "rotary_dim": r, "n_ctx": n_ctx, "rotary_adjacent_pairs": bool(adjacent)}
    if r >= 4:
        theta_1 = float(np.arcsin(np.clip(sin[1, 2 if adjacent else 1], -1, 1)))  # θ_1 = base^(−2/r)
        if 0 < theta_1 < 1:
            base = theta_1 ** (-r / 2)
            rounded = float(f"{base:.4g}")       # a float32 buffer blurs the base by ~r/2 · 1e-7
            out["rotary_base"] = rounded if abs(rounded - base) <= base * r * 1e-6 else base
    return out


def infer_config(params: Mapping[str, Any], **given) -> Config:
    """A ``Config`` from parameter shapes, with ``given`` values taking precedence."""
    unknown = set(given) - {f for f in Config.__dataclass_fields__}
    if unknown:
        raise PathexpandError(
            f"unknown config field(s) {sorted(unknown)}; fields are {sorted(Config.__dataclass_fields__)}"
        )

    def shape(key):
        return tuple(np.shape(to_numpy(params[key]))) if key in params else None

    if "W_E" not in params:
        raise PathexpandError("missing key 'W_E' (or 'embed.W_E'): every model needs a token embedding")
    we = shape("W_E")
    if len(we) != 2:
        raise ShapeError(f"W_E must be [d_vocab, d_model], got shape {we}")
    layers = sorted({int(m.group(1)) for k in params if (m := re.match(r"blocks\.(\d+)\.", k))})
    if layers != list(range(len(layers))):
        raise PathexpandError(f"block indices must be 0..L-1, got {layers}")
    inferred: dict[str, Any] = {"d_vocab": we[0], "d_model": we[1], "n_layers": len(layers)}
    wq = shape("blocks.0.attn.W_Q")
    if wq is not None:
        if len(wq) != 3:
            raise ShapeError(f"blocks.0.attn.W_Q must be [n_heads, d_model, d_head], got {wq}")
        inferred["n_heads"], inferred["d_head"] = wq[0], wq[2]
    else:
        inferred["n_heads"], inferred["d_head"] = 0, 0
    win = shape("blocks.0.mlp.W_in")
    inferred["d_mlp"] = win[1] if win is not None and len(win) == 2 else None
    if inferred["d_mlp"] is not None:
        inferred["act_fn"] = "gelu_new"
    wpos = shape("W_pos")
    if wpos is not None and len(wpos) == 2:
        inferred["n_ctx"] = wpos[0]
        inferred["positional"] = "standard"
    else:
        inferred["positional"] = None
        inferred["n_ctx"] = given.get("n_ctx", 1024)
    wk = shape("blocks.0.attn.W_K")
    if wq is not None and wk is not None and len(wk) == 3 and wk[0] != wq[0]:
        inferred["n_key_value_heads"] = wk[0]
    if "blocks.0.mlp.W_gate" in params:
        inferred["gated_mlp"] = True
    has_ln_w = any(k.endswith("ln1.w") or k == "ln_final.w" for k in params)
    has_ln_b = any(k.endswith("ln1.b") or k == "ln_final.b" for k in params)
    inferred["normalization"] = ("LN" if has_ln_b else "RMS") if has_ln_w else None
    wu = shape("W_U")
    if wu is not None and len(wu) == 2:
        inferred["d_vocab_out"] = wu[1]
    inferred.update(given)
    return Config(**inferred)


def _validate(arrays: Mapping[str, np.ndarray], config: Config) -> None:
    shapes = expected_shapes(config)
    missing = [k for k in shapes if k not in arrays]
    unknown = [k for k in arrays if k not in shapes]
    if missing:
        raise PathexpandError(
            f"missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            f"({len(missing)} of {len(shapes)} expected for {_describe(config)})"
        )
    if unknown:
        raise PathexpandError(
            f"unknown key(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
            f"expected only DESIGN.md names such as 'W_E', 'blocks.0.attn.W_Q', 'W_U'"
        )
    for key, want in shapes.items():
        got = tuple(arrays[key].shape)
        if got != want:
            raise ShapeError(f"{key}: expected shape {list(want)}, got {list(got)}")
        a = arrays[key]
        if not np.issubdtype(a.dtype, np.floating):
            raise PathexpandError(f"{key}: expected floating-point values, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise PathexpandError(f"{key}: {bad} NaN/Inf value(s); weights must be finite")


def _describe(c: Config) -> str:
    return f"a {c.n_layers}-layer model with {c.n_heads} heads" + (
        f" and MLPs (d_mlp={c.d_mlp})" if c.d_mlp else ""
    )
