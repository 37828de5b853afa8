"""The frozen model: attention patterns, LayerNorm scales and MLP gates of one forward pass
held fixed, so the model is affine in its sources and every path is a chain of linear maps.

With ``σ`` (per position), ``A`` and ``g = act(pre)/pre`` recorded (DESIGN.md §2 "Freezing"):

- a frozen norm reads ``x_p ↦ C x_p / σ_p ⊙ w`` (``numeric.norm.read``: LayerNorm centres,
  RMSNorm does not); a LayerNorm bias ``b`` is a source, read only by the nodes after the norm;
- a frozen head maps ``x ↦ A^{l,h} · ln1(x) · W_V^{g(h)} W_O^h`` (``g(h)`` its key/value head
  under grouped-query attention); its ``b_V`` enters as the source ``rowsum(A) ⊗ b_V W_O``
  (rows of ``A`` sum to one; the recorded sums are used, so the decomposition stays exact to
  the last bit of the pass). Rotary positions act only inside ``A``, which is frozen;
- a frozen MLP maps ``x_p ↦ ((ln2(x)_p W_in) ⊙ g_p) W_out`` position by position; ``b_in``
  enters as the source ``(b_in ⊙ g_p) W_out``. The gate is taken in closed form, with no
  division (``Φ(pre)`` for gelu, ``½(1 + tanh(√(2/π)(pre + 0.044715 pre³)))`` for gelu_new,
  ``[pre > 0]`` for relu, ``σ(pre)`` for silu), so it is finite where ``pre ≈ 0`` and
  ``g · pre == act(pre)``. A gated MLP freezes ``g_p = act(ln2(x)_p W_gate)`` and is the
  same map, ``W_in diag(g_p) W_out``; its ``b_in`` (added after the gate) is the source
  ``b_in W_out``;
- with parallel blocks a layer is one stage: its heads and its MLP read the same stream, so
  a path takes at most one of them.

Fields are torch tensors ``[*, batch, pos, d_model]``: any leading axes ``*`` (target
functionals, heads) broadcast. ``Frozen.forward()`` replays the frozen model and reproduces
the recorded logits; paths are evaluated by ``Frozen.path_field``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..architecture import Architecture
from ..errors import PathexpandError
from ..names import head_name, mlp_name, parse_node
from ..symbolic.paths import logit_sources, node_stage
from . import norm
from .forward import record
from .tokens import as_tokens
from .weights import Weights, as_weights

__all__ = ["Frozen", "Stage", "Source", "Scratch", "freeze", "CONSTANTS"]

CONSTANTS = ("ln_final.b", "b_U")  # terms no input changes: ln_final.b W_U and b_U


@dataclass(frozen=True)
class Stage:
    """One step of the forward order: the heads of layer ``layer`` ("attn"), its MLP ("mlp"),
    or both when they read the same stream ("parallel": heads first, then the MLP)."""

    index: int
    kind: str
    layer: int
    nodes: tuple[str, ...]

    @property
    def has_heads(self) -> bool:
        return self.kind in ("attn", "parallel")

    @property
    def has_mlp(self) -> bool:
        return self.kind in ("mlp", "parallel")


@dataclass(frozen=True)
class Source:
    """A source of residual-stream paths.

    ``birth`` is the index of the stage after which its field exists (−1: before every
    stage). LayerNorm biases (``L0.ln1.b``, ``L0.ln2.b``) write nothing to the residual
    stream themselves: ``entry`` is the stage whose nodes read them (after the LN),
    ``readers`` those nodes, and every path from them starts with one of ``readers``.
    """

    name: str
    birth: int
    entry: int | None = None
    readers: tuple[str, ...] = ()


class Scratch:
    """Reused output buffers for repeated node maps (``stage_T(..., scratch=)``): a fresh
    tensor of tens of MB costs page faults on every call; one buffer per role, grown as needed."""

    def __init__(self):
        self._bufs: dict = {}

    def get(self, role: str, shape, like):
        """A tensor of ``shape`` (dtype and device of ``like``) that the next ``get(role)`` reuses."""
        import math

        import torch

        n = math.prod(shape)
        buf = self._bufs.get(role)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._bufs[role] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)


def freeze(model, tokens, *, device=None, dtype=None) -> Frozen:
    """Run ``model`` (anything ``pe.load`` takes) on ``tokens`` (text, ids or a ``.npy`` path)
    once and hold patterns, LN scales and MLP gates fixed."""
    w = as_weights(model)
    return Frozen(w, as_tokens(w, tokens), device=device, dtype=dtype)


class PathStructure:
    """The paths of a model, from its shapes alone: stages, sources, ``n_paths`` (no forward
    pass). ``Frozen`` adds the recorded input and the maps along the paths."""

    def __init__(self, weights: Weights):
        self.weights = weights
        self.config = weights.config
        self.arch = Architecture.from_weights(weights)
        self.stages = _stages(weights.config)
        self._stage_of = {n: s for s in self.stages for n in s.nodes}

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every head and MLP in forward order."""
        return tuple(n for s in self.stages for n in s.nodes)

    def stage_of(self, node: str) -> Stage:
        """The stage a head or MLP belongs to, or ``UnknownHeadError``."""
        if node not in self._stage_of:
            self.arch.check_node(node)  # raises with the list of valid names
            raise PathexpandError(f"{node!r} has no stage in this model")  # pragma: no cover
        return self._stage_of[node]

    def sources(self, *, include_constants: bool = False) -> tuple[Source, ...]:
        """Sources of paths in forward order: ``symbolic.paths.logit_sources`` placed on this
        model's stages, where the weights store them (LNPre folds its LayerNorm biases away; a
        model without attention has no ``b_O``, which the architecture keeps for pruned layers)."""
        reads_at = [node_stage(self.arch, s.nodes[0]) for s in self.stages]  # symbolic stages
        stored_ln_bias = norm.has_bias(self.config.normalization)
        out = []
        for src in logit_sources(self.arch):
            if src.name in CONSTANTS or (src.forced and not stored_ln_bias) or (
                    not self.config.n_heads and src.name.endswith(".b_O")):
                continue
            birth = sum(t < src.start for t in reads_at) - 1   # the last stage before it enters
            out.append(Source(src.name, birth, entry=birth + 1, readers=src.first) if src.forced
                       else Source(src.name, birth))
        if include_constants:
            if stored_ln_bias:
                out.append(Source("ln_final.b", len(self.stages)))
            out.append(Source("b_U", len(self.stages)))
        return tuple(out)

    def source(self, name: str) -> Source:
        """The ``Source`` called ``name`` (``PathexpandError`` listing the valid ones)."""
        for s in self.sources(include_constants=True):
            if s.name == name:
                return s
        valid = [s.name for s in self.sources(include_constants=True)]
        raise PathexpandError(f"{name!r} is not a source of this model; sources are {valid}")

    def n_paths(self) -> int:
        """Number of residual-stream paths ``iter_paths`` yields (closed form, no enumeration)."""
        total = 0
        for src in self.sources():
            if src.entry is not None:
                total += len(src.readers) * self._n_suffixes(src.entry + 1)
            else:
                total += self._n_suffixes(src.birth + 1)
        return total

    def _n_suffixes(self, start: int) -> int:
        return math.prod(1 + len(s.nodes) for s in self.stages[start:])


class Frozen(PathStructure):
    """The model linearised on one input: node maps, their transposes, sources and readout.

    One pass of ``forward.run_with_cache`` (stopped before the unembedding)
    keeps what freezing needs and nothing vocabulary-sized: ``tokens`` ``[b, n]``;
    ``patterns``/``scores`` ``[b, L, H, q, k]``; ``z`` ``[b, L, H, n, d_head]`` (``A v``, the
    heads' value mix); ``resid_pre`` ``[b, L + 1, n, d]`` and ``resid_mid`` ``[b, L, n, d]``;
    ``inv_scale[name]`` ``[b, n, 1]`` = ``1/σ`` of each LayerNorm; ``gates``
    ``[b, L, n, d_mlp]``. Logits are computed on demand: ``logits_at(positions)`` (the last
    call's kept), or ``logits`` (every position, kept); both are shared, not to be modified.
    """

    def __init__(self, weights: Weights, tokens, *, device=None, dtype=None):
        """``tokens``: checked ids ``[batch, pos]`` (``freeze`` takes any model and tokens)."""
        super().__init__(weights)
        c = self.config
        self._logits = self._logits_at = self._constant_logits = self._ln_final_logits = None
        _record(self, weights, tokens, device, dtype)
        self.batch, self.n_pos = self.tokens.shape
        self._rowsum = self.patterns.sum(-1, keepdim=True) if c.n_heads else None  # [b,L,H,q,1]

    @property
    def logits(self):
        """The model's logits at every position ``[b, n, d_vocab_out]`` (computed once)."""
        if self._logits is None:
            self._logits = self.logits_at(list(range(self.n_pos)))
        return self._logits

    def logits_at(self, positions):
        """The model's logits at ``positions``: ``[b, T, d_vocab_out]`` (the last call's kept:
        a target's value and its scale read the same vocabulary-wide product)."""
        positions = tuple(int(p) for p in positions)
        if self._logits_at is None or self._logits_at[0] != positions:
            final = self.resid_pre[:, self.config.n_layers]
            y = self.ln(final, "ln_final", positions=list(positions)) @ self.p["W_U"] + self.constant_logits()
            self._logits_at = (positions, y)
        return self._logits_at[1]

    def stage_input(self, index: int):
        """The recorded residual stream ``[b, n, d]`` read by stage ``index`` (``len(stages)``:
        the final residual before ``ln_final``)."""
        if index >= len(self.stages):
            return self.resid_pre[:, self.config.n_layers]
        st = self.stages[index]
        return self.resid_mid[:, st.layer] if st.kind == "mlp" else self.resid_pre[:, st.layer]

    def node_outputs(self, index: int, out=None):
        """What each node of stage ``index`` writes on the recorded input, bias sources left
        out: ``[k, b, n, d]`` (into ``out`` when given, a contiguous ``[k, b, n, d]``). That is
        everything reaching the node pushed through it (LN-bias paths included). Heads:
        ``(z − rowsum(A) b_V) W_O`` from the recorded value mix; the MLP: its recorded output
        minus ``b_out`` and the ``b_in`` source."""
        import torch

        st = self.stages[index]
        b, n, d = self.batch, self.n_pos, self.config.d_model
        k = len(st.nodes)
        if out is None:
            out = torch.empty(k, b, n, d, dtype=self.dtype, device=self.device)
        if st.has_heads:
            a = f"blocks.{st.layer}.attn."
            z = self.z[:, st.layer]                                             # [b, H, n, e]
            if self.arch.biases:
                z = z - self._rowsum[:, st.layer] * self.p[a + "b_V"][:, None, :]
            H, e = z.shape[1], z.shape[-1]
            torch.bmm(z.transpose(0, 1).reshape(H, b * n, e), self.p[a + "W_O"],
                      out=out[:H].view(H, b * n, d))                            # [H, b, n, d]
        if st.has_mlp:
            mo = self.mlp_out[:, st.layer]                                      # [b, n, d]
            if self.arch.biases:
                mo = mo - self.source_field(f"MLP{st.layer}.b_in") - self.source_field(f"MLP{st.layer}.b_out")
            out[k - 1] = mo
        return out

    def ln_bias_outputs(self, name: str):
        """What LN bias source ``name`` writes through each of its readers ``[k, b, n, d]``
        (heads: ``rowsum(A) ⊗ b W_V W_O``; the MLP: ``((b W_in) ⊙ g) W_out``)."""
        import torch

        src = self.source(name)
        if src.entry is None:
            raise PathexpandError(f"{name!r} is not a LayerNorm bias source")
        st = self.stages[src.entry]
        if parse_node(src.readers[0]).kind == "head":
            a = f"blocks.{st.layer}.attn."
            b = self.p[f"blocks.{st.layer}.ln1.b"]
            vec = torch.einsum("d,hde,hef->hf", b, self.p[a + "W_V"], self.p[a + "W_O"])  # [H, d]
            return self._rowsum[:, st.layer].movedim(1, 0) * vec[:, None, None, :]
        return self.mlp(self.ln_bias_vector(name), st.layer, read=False).unsqueeze(0)

    def ln_bias_stage(self, name: str):
        """LN bias source ``name`` pushed through its readers by the node maps: ``[k, b, n, d]``
        (the same numbers as ``ln_bias_outputs``, computed like any other field)."""
        src = self.source(name)
        st = self.stages[src.entry]
        f = self.ln_bias_vector(name)
        if parse_node(src.readers[0]).kind == "head":
            return self.heads(f, st.layer, read=False).movedim(-3, -4)
        return self.mlp(f, st.layer, read=False).unsqueeze(-4)

    # LayerNorm -----------------------------------------------------------------------------
    def ln(self, f, name: str, *, positions=None):
        """Frozen norm read ``C f / σ ⊙ w`` (no bias; ``numeric.norm.read``); identity without one.

        ``positions``: read only these positions (``f[..., positions, :]``).
        """
        if positions is not None:
            f = f[..., positions, :]
        return norm.read(f, self.config.normalization, self._inv_scale(name, False, positions),
                         self.p.get(name + ".w"))

    def ln_T(self, g, name: str):
        """Transpose of ``ln``: ``g_p ↦ C (w ⊙ g_p) / σ_p`` (``numeric.norm.read_T``)."""
        return norm.read_T(g, self.config.normalization, self._inv_scale(name, False, None),
                           self.p.get(name + ".w"))

    def _inv_scale(self, name: str, heads_axis: bool, positions):
        """``1/σ`` of norm ``name`` as ``[b, (1,) n, 1]`` (None without a norm)."""
        if self.config.normalization is None:
            return None
        s = self.inv_scale[name]
        if positions is not None:
            s = s[:, positions]
        return s[:, None] if heads_axis else s

    # node maps --------------------------------------------------------------------------------
    def heads(self, f, layer: int, heads=None, *, read: bool = True):
        """``[*, b, n, d] → [*, b, H', n, d]``: ``A^{l,h} ln1(f) W_V^h W_O^h`` per head.

        ``heads`` selects heads (default all); ``read=False`` means ``f`` is already past the
        LayerNorm (an LN bias, or shortformer positions).
        """
        import torch

        a = f"blocks.{layer}.attn"
        sel = slice(None) if heads is None else heads
        h = self.ln(f, f"blocks.{layer}.ln1") if read else f
        v = torch.einsum("...bnd,hde->...bhne", h, self.p[a + ".W_V"][sel])
        z = self.patterns[:, layer, sel] @ v                               # [*, b, H', n, e]
        return torch.einsum("...bhne,hed->...bhnd", z, self.p[a + ".W_O"][sel])

    def heads_T(self, g, layer: int, heads=None, *, scratch: Scratch | None = None):
        """Transpose of each head's map, back to its input before LN: ``[*, b, n, d] → [*, b, H', n, d]``
        (a view of a ``[*, H', b, n, d]`` tensor): ``(1/σ ⊙ A^{h T} g W_O^{h T}) (C diag(w) W_V^h)ᵀ``.

        ``scratch``: the result is written into (and is a view of) its reused buffer."""
        import torch

        a = f"blocks.{layer}.attn"
        sel = slice(None) if heads is None else heads
        lead, (b, n, d) = g.shape[:-3], g.shape[-3:]
        W_O = self.p[a + ".W_O"][sel]                                      # [H', e, d]
        H, e = W_O.shape[:2]
        y = (g.reshape(-1, d) @ W_O.reshape(H * e, d).T).view(*lead, b, n, H, e)
        z = self.patterns[:, layer, sel].mT @ y.transpose(-2, -3)          # [*, b, H', n, e]
        s = self._inv_scale(f"blocks.{layer}.ln1", True, None)             # [b, 1, n, 1]
        if s is not None:
            z = z * s
        z = z.movedim(-3, 0).reshape(H, -1, e)                             # [H', * b n, e]
        out = None if scratch is None else scratch.get("heads_T", (H, z.shape[1], d), z)
        v = torch.bmm(z, self._reader(layer, "ln1", a + ".W_V", transposed=True)[sel], out=out)   # [H', * b n, d]
        return v.view(H, *lead, b, n, d).movedim(0, -4).movedim(-4, -3)

    def mlp(self, f, layer: int, *, read: bool = True):
        """``[*, b, n, d] → [*, b, n, d]``: ``((ln2(f) W_in) ⊙ g) W_out`` at each position."""
        m = f"blocks.{layer}.mlp"
        h = self.ln(f, f"blocks.{layer}.ln2") if read else f
        return ((h @ self.p[m + ".W_in"]) * self.gates[:, layer]) @ self.p[m + ".W_out"]

    def mlp_T(self, g, layer: int, *, positions=None, scratch: Scratch | None = None):
        """Transpose of ``mlp``: ``1/σ ⊙ ((g W_outᵀ) ⊙ gate) (C diag(w) W_in)ᵀ``.

        ``positions``: ``g`` holds only these positions (``[*, b, P, d]``; the map acts position
        by position), and so does the result. ``scratch``: as in ``heads_T``.
        """
        import torch

        m = f"blocks.{layer}.mlp"
        gate = self.gates[:, layer]                                        # [b, n, m]
        if positions is not None:
            gate = gate[:, positions]                                      # [b, P, m]
        W_out, W_in = self.p[m + ".W_out"], self._reader(layer, "ln2", m + ".W_in")   # [m, d], [d, m]
        flat = g.reshape(-1, g.shape[-1])                                  # [* b P, d]
        y = None if scratch is None else scratch.get("mlp_T.hidden", (len(flat), W_out.shape[0]), g)
        y = torch.mm(flat, W_out.T, out=y).view(*g.shape[:-1], -1).mul_(gate)   # [*, b, P, m]
        out = None if scratch is None else scratch.get("mlp_T", flat.shape, g)
        y = torch.mm(y.view(len(flat), -1), W_in.T, out=out).view(g.shape)      # [*, b, P, d]
        s = self._inv_scale(f"blocks.{layer}.ln2", False, positions)       # [b, P, 1]
        return y if s is None else y.mul_(s)

    def _reader(self, layer: int, ln: str, key: str, *, transposed: bool = False):
        """``C diag(w) W`` of the weight ``key`` that reads norm ``ln`` of ``layer`` (``numeric.norm.reader``:
        the frozen norm without its ``1/σ``), made once; ``transposed``: its ``.mT``, contiguous
        (a GEMM reads it row by row)."""
        cache = self.__dict__.setdefault("_readers", {})
        if key not in cache:
            w = self.p.get(f"blocks.{layer}.{ln}.w")
            cache[key] = norm.reader(self.p[key], self.config.normalization,
                                     None if w is None else w[:, None], axis=-2).contiguous()
        if not transposed:
            return cache[key]
        if (key, "T") not in cache:
            cache[key, "T"] = cache[key].mT.contiguous()
        return cache[key, "T"]

    def stage(self, f, stage: Stage, *, read: bool = True):
        """Outputs of every node of ``stage`` on field ``f``: ``[*, b, n, d] → [*, k, b, n, d]``."""
        import torch

        parts = []
        if stage.has_heads:
            parts.append(self.heads(f, stage.layer, read=read).movedim(-3, -4))
        if stage.has_mlp:
            parts.append(self.mlp(f, stage.layer, read=read).unsqueeze(-4))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -4)

    def stage_T(self, g, stage: Stage, *, positions=None, scratch: Scratch | None = None):
        """Transposed maps of every node of ``stage``: ``[*, b, n, d] → [*, k, b, n, d]``.

        ``positions`` (an MLP stage only): ``g`` holds only these positions, as in ``mlp_T``.
        ``scratch``: reuse its buffers (the result is overwritten by the next call with it).
        """
        import torch

        if positions is not None:
            if stage.has_heads:
                raise ValueError(f"stage_T(positions=...) needs an MLP stage, got {stage.kind!r}")
            return self.mlp_T(g, stage.layer, positions=positions, scratch=scratch).unsqueeze(-4)
        parts = []
        if stage.has_heads:
            parts.append(self.heads_T(g, stage.layer, scratch=scratch).movedim(-3, -4))
        if stage.has_mlp:
            parts.append(self.mlp_T(g, stage.layer, scratch=scratch).unsqueeze(-4))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -4)

    def node(self, f, node: str, *, read: bool = True):
        """One node's output on ``f``: ``[*, b, n, d] → [*, b, n, d]``."""
        st = self.stage_of(node)
        parsed = parse_node(node)
        if parsed.kind == "head":
            return self.heads(f, st.layer, [parsed.head], read=read).select(-3, 0)
        return self.mlp(f, st.layer, read=read)

    # sources ----------------------------------------------------------------------------------
    def source_field(self, name: str):
        """The field ``[b, n, d]`` a source writes into the residual stream.

        LayerNorm biases write nothing themselves; use ``ln_bias_vector`` for them.
        """
        p, b, n = self.p, self.batch, self.n_pos
        node = parse_node(name)
        if name == "embed":
            return p["W_E"][self.tokens]
        if name == "pos":
            if self.config.positional != "standard":
                raise PathexpandError(
                    f"'pos' is not a residual-stream source with positional={self.config.positional!r}"
                )
            return p["W_pos"][:n].expand(b, n, -1)
        if node.kind == "bias" and node.param == "b_V":
            a = f"blocks.{node.layer}.attn"
            bv = p[a + ".b_V"][node.head] @ p[a + ".W_O"][node.head]             # [d]
            return self._rowsum[:, node.layer, node.head] * bv                   # [b, n, d]
        if node.kind == "bias" and node.param == "b_O":
            return p[f"blocks.{node.layer}.attn.b_O"].expand(b, n, -1)
        if node.kind == "bias" and node.param == "b_in":
            m = f"blocks.{node.layer}.mlp"
            if self.config.gated_mlp:   # added after the gate: (act(x W_gate) ⊙ x W_in + b_in) W_out
                return (p[m + ".b_in"] @ p[m + ".W_out"]).expand(b, n, -1)
            return (p[m + ".b_in"] * self.gates[:, node.layer]) @ p[m + ".W_out"]
        if node.kind == "bias" and node.param == "b_out":
            return p[f"blocks.{node.layer}.mlp.b_out"].expand(b, n, -1)
        raise PathexpandError(f"{name!r} writes no field of its own into the residual stream")

    def ln_bias_vector(self, name: str):
        """An LN bias broadcast over positions ``[b, n, d]`` (it enters after the LayerNorm)."""
        node = parse_node(name)
        key = {"ln1.b": f"blocks.{node.layer}.ln1.b", "ln2.b": f"blocks.{node.layer}.ln2.b"}.get(
            node.param or "", "ln_final.b" if name == "ln_final.b" else None
        )
        if key is None or key not in self.p:
            raise PathexpandError(f"{name!r} is not a LayerNorm bias of this model")
        return self.p[key].expand(self.batch, self.n_pos, -1)

    # paths ------------------------------------------------------------------------------------
    def check_path(self, path) -> tuple[Source, tuple[Stage, ...]]:
        """Validate a path (source first, then nodes in strictly later stages)."""
        path = tuple(path)
        if not path:
            raise PathexpandError("a path needs at least its source, e.g. ('embed', 'L0H1')")
        src = self.source(path[0])
        if path[0] in CONSTANTS:
            if len(path) > 1:
                raise PathexpandError(f"{path[0]!r} is a constant term; nothing follows it")
            return src, ()
        stages = []
        last = src.birth
        for i, n in enumerate(path[1:]):
            st = self.stage_of(n)
            if src.entry is not None and i == 0 and n not in src.readers:
                first = ", ".join(src.readers)
                raise PathexpandError(
                    f"{path[0]!r} is read only by {first}; path {path} starts with {n!r}"
                )
            if st.index <= last:
                raise PathexpandError(
                    f"path {path} is not in forward order: {n!r} cannot read "
                    f"{path[i]!r} (a path takes at most one head per layer, heads before the MLP"
                    + ("; with parallel blocks a layer's MLP does not read its heads)"
                       if self.config.parallel_attn_mlp else ")")
                )
            last = st.index
            stages.append(st)
        if src.entry is not None and len(path) == 1:
            first = ", ".join(src.readers)
            raise PathexpandError(f"{path[0]!r} alone is not a path; it reaches the residual "
                                  f"stream only through {first}")
        return src, tuple(stages)

    def path_field(self, path):
        """The field ``[b, n, d]`` that path ``path`` adds to the final residual stream."""
        src, _ = self.check_path(path)
        if path[0] in CONSTANTS:
            raise PathexpandError(f"{path[0]!r} is a constant term, not a residual-stream field")
        if src.entry is not None:
            f = self.node(self.ln_bias_vector(path[0]), path[1], read=False)
            rest = path[2:]
        else:
            f = self.source_field(path[0])
            rest = path[1:]
        for n in rest:
            f = self.node(f, n)
        return f

    def iter_paths(self, sources=None, *, stop: int | None = None) -> Iterator[tuple[tuple[str, ...], Any]]:
        """Every path with its field ``[b, n, d]``, depth-first, prefixes shared (no constants).

        ``stop``: only stages before this index (the paths into a head's input); sources
        born later are left out. ``sources``: only these source names.
        """
        stop = len(self.stages) if stop is None else stop
        for src in self.sources():
            if sources is not None and src.name not in sources:
                continue
            if src.entry is not None:
                if src.entry >= stop:
                    continue
                outs = self.ln_bias_stage(src.name)
                stack = [((src.name, n), outs[i], src.entry) for i, n in enumerate(src.readers)]
            else:
                if src.birth >= stop:
                    continue
                stack = [((src.name,), self.source_field(src.name), src.birth)]
            stack.reverse()
            while stack:
                path, f, last = stack.pop()
                yield path, f
                children = []
                for st in self.stages[last + 1 : stop]:
                    outs = self.stage(f, st)
                    children.extend((path + (n,), outs[i], st.index) for i, n in enumerate(st.nodes))
                stack.extend(reversed(children))

    # replay -----------------------------------------------------------------------------------
    def forward(self):
        """Replay the frozen model on its own input: logits ``[b, n, d_vocab_out]``.

        Equal to ``self.logits`` up to rounding; the frozen model is exact on this input.
        """
        x = self.source_field("embed")
        if self.config.positional == "standard":
            x = x + self.source_field("pos")
        for st in self.stages:
            x = x + self.stage_output(x, st)
        return self.unembed(x) + self.constant_logits()

    def stage_output(self, x, st: Stage):
        """Everything stage ``st`` writes given residual ``x``: node maps, LN bias and biases."""
        out = self.stage(x, st).sum(-4)
        if self.arch.biases:
            for src in self.sources():
                if src.entry == st.index:
                    out = out + self.ln_bias_stage(src.name).sum(-4)
                elif src.entry is None and src.birth == st.index:
                    out = out + self.source_field(src.name)
        return out

    def unembed(self, f):
        """``ln_final(f) W_U`` without biases: ``[*, b, n, d] → [*, b, n, d_vocab_out]``."""
        return self.ln(f, "ln_final") @ self.p["W_U"]

    def constant_logits(self):
        """``b_U`` (+ ``ln_final.b W_U``): ``[d_vocab_out]``, the part no input changes (made once)."""
        if self._constant_logits is None:
            out = self.p["b_U"]
            if norm.has_bias(self.config.normalization):
                out = out + self.constant("ln_final.b")
            self._constant_logits = out
        return self._constant_logits

    def constant(self, name: str):
        """One constant term's logits ``[d_vocab_out]``: ``b_U`` or ``ln_final.b W_U``."""
        if name == "b_U":
            return self.p["b_U"]
        if name == "ln_final.b" and norm.has_bias(self.config.normalization):
            if self._ln_final_logits is None:   # [d] @ [d, V]: read W_U once
                self._ln_final_logits = self.p["ln_final.b"] @ self.p["W_U"]
            return self._ln_final_logits
        raise PathexpandError(f"{name!r} is not a constant term of this model; they are {list(CONSTANTS)}")


def _record(fz: Frozen, weights: Weights, tokens, device, dtype) -> None:
    """One forward pass (``forward.record`` without the unembedding), keeping on ``fz`` what
    freezing needs: patterns, scores, ``z``, residuals, norm ``1/σ`` and MLP gates."""
    c = weights.config
    _, cache, model = record(weights, tokens, device=device, dtype=dtype, unembed=False, freezing=True)
    fz.tokens, fz.p = cache.tokens, dict(model.named_parameters())
    if c.n_kv_groups > 1:   # node maps see key/value weights per query head
        for name in [k for k in fz.p if k.rsplit(".", 1)[-1] in ("W_K", "W_V", "b_K", "b_V")]:
            fz.p[name] = c.per_query_head(fz.p[name], 0)
    fz.device, fz.dtype = cache.tokens.device, cache.resid_pre.dtype
    fz.patterns, fz.scores, fz.z = cache.patterns, cache.scores, cache.z
    fz.resid_pre, fz.resid_mid, fz.mlp_out = cache.resid_pre, cache.resid_mid, cache.mlp_out
    fz.gates = cache.gates   # act(pre)/pre (gated: act(x W_gate)), the MLP is W_in diag(g) W_out
    fz.inv_scale = {name: 1.0 / s[..., None] for name, s in cache.ln_scale.items()}   # [b, n, 1]


def _stages(c) -> tuple[Stage, ...]:
    out: list[Stage] = []
    for l in range(c.n_layers):
        if c.parallel_attn_mlp:   # heads and MLP read the same stream: one stage
            heads = tuple(head_name(l, h) for h in range(c.n_heads))
            out.append(Stage(len(out), "parallel", l, heads + (mlp_name(l),)))
            continue
        if c.n_heads:
            out.append(Stage(len(out), "attn", l, tuple(head_name(l, h) for h in range(c.n_heads))))
        if c.d_mlp is not None:
            out.append(Stage(len(out), "mlp", l, (mlp_name(l),)))
    return tuple(out)


def to_numpy(t) -> np.ndarray:
    """A torch tensor as a float64-or-float32 numpy array on the CPU."""
    return t.detach().cpu().numpy()
