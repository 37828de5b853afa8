"""What benchmark task modules share: shapes, the ``Task`` record, model builders, comparisons.

A task module ``benchmarks/bench_<topic>.py`` defines ``TASKS = [Task(...), ...]``; ``run.py``
finds it, runs every (task, shape, implementation) in a fresh subprocess and prints the table.
A task's ``ours``/``theirs`` take a ``Shape`` and return a zero-argument callable: everything
before the return (loading, building the TransformerLens model) is setup and is neither timed
nor counted in the task's memory; calling it is the timed work, and its return value (numpy
arrays) is compared across the two implementations with ``compare``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["QUICK_SHAPES", "SHAPES", "Floor", "Shape", "Task", "config_of", "max_rel_diff", "tl_model",
           "weights_of"]


@dataclass(frozen=True)
class Shape:
    """A model to run on: a bundled model by name, or random weights of a TransformerLens config."""

    name: str
    bundled: str | None = None
    config: dict = field(default_factory=dict)  # HookedTransformerConfig fields
    seed: int = 0

    def describe(self) -> str:
        if self.bundled:
            return f"{'pretrained' if self.bundled == 'smollm2-135m' else 'bundled'} {self.bundled}"
        c = self.config
        return (f"{c['n_layers']}×{c['n_heads']} heads, d_model {c['d_model']}, d_head {c['d_head']}, "
                f"d_vocab {c['d_vocab']}" + (", MLP+LN" if not c.get("attn_only") else ", attn-only"))


_GPT2 = dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_vocab=50257, n_ctx=1024, d_mlp=3072,
             act_fn="gelu_new", normalization_type="LN", attn_only=False)
_QUICK = dict(n_layers=4, n_heads=4, d_model=256, d_head=32, d_vocab=8192, n_ctx=256, d_mlp=1024,
              act_fn="gelu_new", normalization_type="LN", attn_only=False)

SHAPES = {
    "attn-only-1l": Shape("attn-only-1l", bundled="attn-only-1l"),
    "attn-only-2l": Shape("attn-only-2l", bundled="attn-only-2l"),
    "gelu-2l": Shape("gelu-2l", bundled="gelu-2l"),
    "modern-2l": Shape("modern-2l", bundled="modern-2l"),
    "gpt2-small": Shape("gpt2-small", config=_GPT2),
    # pretrained, from the smollm2 extra; run with --shapes smollm2-135m (not in the default run)
    "smollm2-135m": Shape("smollm2-135m", bundled="smollm2-135m"),
}
QUICK_SHAPES = {
    "attn-only-2l": SHAPES["attn-only-2l"],
    "gpt2-quick": Shape("gpt2-quick", config=_QUICK),
}


@dataclass(frozen=True)
class Floor:
    """The least work that gives a task's answer, measured in the same run as the task.

    Either ``build`` (like a task's ``ours``: ``Shape`` → zero-argument callable, timed in a fresh
    process as the tasks are) or ``flops`` (``Shape`` → ``(float32 FLOPs, float64 FLOPs)``, turned
    into seconds at the GEMM rates ``run.py`` measures in the run)."""

    name: str
    build: Callable[[Shape], Callable[[], Any]] | None = None
    flops: Callable[[Shape], tuple[float, float]] | None = None


@dataclass(frozen=True)
class Task:
    """One benchmarked computation, done by pathexpand (``ours``) and TransformerLens (``theirs``)."""

    name: str
    description: str
    target: str  # the goal, e.g. "≥ 40× faster, ≤ 1/20 peak memory"
    ours: Callable[[Shape], Callable[[], Any]]
    theirs: Callable[[Shape], Callable[[], Any]]
    compare: Callable[[Any, Any], float] | None = None
    shapes: tuple[str, ...] = ("attn-only-1l", "attn-only-2l", "gelu-2l", "modern-2l", "gpt2-small")
    floors: tuple[Floor, ...] = ()   # the first is the one the table's "÷ floor" column uses


def tl_model(shape: Shape, *, processed: bool = False):
    """A TransformerLens ``HookedTransformer`` (eval mode, no grad) for ``shape``, on the CPU.

    ``processed``: LayerNorm folded into its readers and writing weights centred, as
    TransformerLens's ``from_pretrained`` does by default (and as pathexpand's circuits read a
    LayerNorm model); the unembedding is not centred."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.set_grad_enabled(False)
    if shape.bundled is None:
        cfg = HookedTransformerConfig(**shape.config, seed=shape.seed, device="cpu")
        return _processed(HookedTransformer(cfg).eval(), processed)
    import pathexpand as pe

    w = pe.load(shape.bundled)
    c = w.config
    modern = {}
    if c.positional == "rotary":
        modern.update(rotary_dim=c.rotary_dim, rotary_base=c.rotary_base,
                      rotary_adjacent_pairs=c.rotary_adjacent_pairs)
    if c.n_key_value_heads != c.n_heads:
        modern["n_key_value_heads"] = c.n_key_value_heads
    cfg = HookedTransformerConfig(
        n_layers=c.n_layers, n_heads=c.n_heads, d_model=c.d_model, d_head=c.d_head, d_vocab=c.d_vocab,
        n_ctx=min(c.n_ctx, 2048), d_vocab_out=c.d_vocab_out, attn_only=c.d_mlp is None, d_mlp=c.d_mlp,
        act_fn=c.act_fn, normalization_type=c.normalization, gated_mlp=c.gated_mlp,
        parallel_attn_mlp=c.parallel_attn_mlp, positional_embedding_type=c.positional or "standard",
        device="cpu", **modern,
    )
    model = HookedTransformer(cfg).eval()
    names = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U", "b_U": "unembed.b_U"}
    grouped = c.n_key_value_heads != c.n_heads    # TransformerLens keeps shared K/V as _W_K, _W_V
    state = {}
    for k, v in w.state_dict().items():
        key = names.get(k, k)
        if grouped and key.rsplit(".", 1)[-1] in ("W_K", "W_V", "b_K", "b_V"):
            key = key.rsplit(".", 1)[0] + "._" + key.rsplit(".", 1)[-1]
        state[key] = torch.as_tensor(np.array(v))
    missing, _ = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    if params & set(missing):
        raise RuntimeError(f"TransformerLens parameters not loaded: {sorted(params & set(missing))[:5]}")
    return _processed(model, processed)


def _processed(model, on: bool):
    if on and model.cfg.normalization_type == "LN":
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)
    elif on and model.cfg.normalization_type == "RMS":   # RMSNorm: folded, nothing to centre
        model.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    return model


def weights_of(shape: Shape):
    """pathexpand ``Weights`` for ``shape``: the bundled file, or the same random weights as ``tl_model``."""
    import pathexpand as pe

    if shape.bundled is not None:
        return pe.load(shape.bundled)
    model = tl_model(shape)
    w = pe.load(model)
    del model
    return w


def config_of(shape: Shape) -> dict:
    """``n_layers, n_heads, d_model, d_head, d_vocab`` (and, rotary, ``rotary_dim``/``n_ctx``) of a
    shape without building its weights: the TransformerLens config, or the bundled file's config."""
    if shape.bundled is None:
        return dict(shape.config)
    import pathexpand as pe

    c = pe.load(shape.bundled).config
    return dict(n_layers=c.n_layers, n_heads=c.n_heads, d_model=c.d_model, d_head=c.d_head,
                d_vocab=c.d_vocab, n_ctx=c.n_ctx, positional=c.positional)


def max_rel_diff(a, b) -> float:
    """max |a − b| / max |b| over arrays (or tuples of arrays) — one number per comparison."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"results differ in shape: {a.shape} vs {b.shape}")
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / scale) if scale else float(np.abs(a - b).max())
