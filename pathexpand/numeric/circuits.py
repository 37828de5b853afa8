"""The one circuit builder: every data-free matrix of the model — a head's OV and QK circuits, the
full circuits through ``W_E``/``W_U``, a path's virtual weights, a score term — is built here,
as a chain of factors (``Factored``), with normalization handled one way.

A logit path ``(source, n_1, ..., n_k)`` is (right-multiplying, DESIGN.md §2)

    S · R_{n_1} ⋯ R_{n_k} · W_U

with ``S`` the source's rows (``W_E``, ``W_pos``, or a bias row: ``b_V W_O``, ``b_O``,
``b_in W_out``, ``b_out``, ``ln1.b``, ``ln2.b``, ``ln_final.b``) and ``R`` a node's map on the
residual stream: a head's ``W_V W_O``, an MLP's **linearised** ``W_in W_out`` (gates frozen at
1: the MLP in its linear regime; a data-free number cannot know the real gates). A score term
``(query path, key path)`` of head ``h`` is ``X_q W_Q^h (X_k W_K^h)ᵀ`` (before ``1/√d_head``)
with ``X`` the two sides' chains without ``W_U``; ``b_Q``/``b_K`` are rows in ``d_head`` space
that skip ``W_Q``/``W_K``; shortformer ``pos`` joins the query/key input after ``ln1``.

**Normalization** (``numeric.norm``, the same algebra as ``fold_layernorm``): every matrix that
reads a norm's output is its reader form ``C diag(w) W`` (``W_Q``, ``W_K``, ``W_V`` of ln1,
``W_in`` of ln2, ``W_U`` of ln_final — the last as two factors, ``C diag(w)`` then ``W_U`` as
stored, so no vocabulary-sized copy is made) and every matrix that writes the residual stream
its writer form ``W C`` (``W_O``, ``W_out`` and the written biases; ``W_E`` and standard
``W_pos`` enter as stored: a reader always follows them, whose ``C`` makes their centring a
no-op); the per-position ``1/σ`` is dropped (only data gives it). Matrices on the far side of a norm —
LayerNorm biases, shortformer positions — meet the raw reader. A product of reader and writer
forms equals the same product of raw matrices whenever a reader sits between two writers (``C``
is a projector), so full circuits are the model's own; standalone residual-scope matrices
(``W_OV = W_V W_O``) are what a normalised reader can see. With no norm nothing changes. This is
TransformerLens's ``fold_ln`` + ``center_writing_weights``, so its ``OV``, ``QK`` and composition
scores on a processed model are ours.

``scope="residual"`` drops the token/positional embedding at the start (the identity for the
direct path) and ``W_U`` at the end (``b_U`` has no residual part and gives no chain).

**Modern blocks.** RMSNorm readers are ``diag(w) W`` and writers stay raw (no centring). Under
grouped-query attention every head's ``W_K``/``W_V`` is its key/value head's (``Weights.stacked``).
A gated MLP linearised freezes its gate ``act(x W_gate)`` at 1, leaving ``W_in W_out`` as for a
plain MLP. With **rotary positions** a score term is ``X_q W_Q R̃_Δ W_Kᵀ X_kᵀ``: the relative
rotation ``R̃_Δ`` (``numeric.rotary.relative``) of the offset ``Δ = j − i`` sits between the
query and key sides, so every QK circuit takes an ``offset`` (``Circuits(..., offset=Δ)``;
``Δ = −1``: a key one token back). Summaries over offsets are the callers' (e.g.
``composition_scores`` averages the nearest ``rotary.SUMMARY_OFFSETS``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..architecture import Architecture
from ..errors import PathexpandError
from ..names import REMAINDER, parse_node, term_name
from ..symbolic import ScoreTerm, Term, expand_logits, expand_scores
from . import norm
from .factored import Factored, _as_tensor
from .forward import torch_dtype
from .tokens import torch_device
from .weights import Weights, as_weights

__all__ = ["SCOPES", "MLP_MODES", "Circuits", "circuit"]

SCOPES = ("full", "residual")
MLP_MODES = ("linear", "refuse")
_RAW_SOURCES = ("ln1.b", "ln2.b", "ln_final.b")  # enter after a norm: meet raw readers


def circuit(what, model, *, scope: str = "full", mlp: str = "linear", offset: int | None = None,
            device=None, dtype=None) -> Factored:
    """A data-free circuit as a ``Factored`` chain (exact factors, nothing vocabulary-sized built).

    ``what``: ``"OV"`` (every head's ``W_E W_V W_O W_U``, ``[n_layers, n_heads, d_vocab,
    d_vocab_out]``; residual scope ``W_V W_O``), ``"QK"`` (every head's ``W_E W_Q W_Kᵀ W_Eᵀ``;
    residual scope ``W_Q W_Kᵀ``), a ``Term``, a ``ScoreTerm``, a logit path tuple
    (``("embed", "L0H1", "L1H0")``) or a term name (``"L1H0∘L0H1"``, ``"pos:L1H0"``).
    ``model`` is anything ``pe.load`` takes. ``offset``: the key's position minus the query's,
    ``Δ = j − i``, for QK circuits and score terms of a rotary model (``W_Q R̃_Δ W_Kᵀ``).
    """
    c = Circuits(as_weights(model), offset=offset, device=device, dtype=dtype)
    if offset is not None and not (what == "QK" or isinstance(what, ScoreTerm)):
        raise PathexpandError(f"offset= is for QK circuits and score terms; {what!r} has no query–key product")
    if isinstance(what, str) and what in ("OV", "QK"):
        return c.ov(scope) if what == "OV" else c.qk(scope)
    if not isinstance(what, (str, tuple, Term, ScoreTerm)):
        raise PathexpandError(
            "circuit takes 'OV', 'QK', a term name like 'L1H0∘L0H1', a Term or ScoreTerm, or a "
            f"logit path tuple like ('embed', 'L0H1'); got {type(what).__name__}"
        )
    return Factored(*c.term(what, scope=scope, mlp=mlp))


class Circuits:
    """The factors of a model's circuits on one device and dtype, each built once.

    Reader and writer forms (module docstring) of every weight, stacked over layers and heads:
    ``W_Q``, ``W_K``, ``W_V`` ``[L, H, d_model, d_head]``, ``W_O`` ``[L, H, d_head, d_model]``,
    ``W_in`` ``[L, d_model, d_mlp]``, ``W_out`` ``[L, d_mlp, d_model]``, ``W_E``, ``W_pos``,
    ``W_U``; raw forms under ``raw(name)``.
    """

    def __init__(self, weights: Weights, *, offset: int | None = None, device=None, dtype=None,
                 mlp_product: bool = False):
        """``mlp_product``: a linearised MLP enters chains as one ``d_model × d_model`` factor
        ``W_in W_out`` (made once per layer) instead of two through ``d_mlp``: the same matrix,
        cheaper chains for metrics of the whole product (a null baseline, which replaces factors
        one by one, keeps the two). ``offset``: ``Δ = j − i`` for the QK side of a rotary model."""
        self.rotary = weights.config.positional == "rotary"
        if offset is not None:
            if not self.rotary:
                raise PathexpandError(
                    f"offset={offset!r} is for rotary models, whose QK circuit depends on j − i; this "
                    f"model has positional={weights.config.positional!r}"
                )
            if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
                raise PathexpandError(f"offset must be an int (key position − query position), got {offset!r}")
        self.offset = None if offset is None else int(offset)
        self.weights = weights
        self.mlp_product = mlp_product
        self.config = weights.config
        self.arch = Architecture.from_weights(weights)
        self.device = torch_device(device)
        self.dtype = torch_dtype(dtype, weights)
        self._cache: dict[str, torch.Tensor] = {}
        self._picked: dict[tuple, torch.Tensor] = {}

    # tensors ---------------------------------------------------------------------------------
    def _t(self, array) -> torch.Tensor:
        return _as_tensor(array, self.device, self.dtype)

    def raw(self, name: str) -> torch.Tensor:
        """A weight as stored, stacked over layers (``W_V`` ``[L, H, d, e]``, ``b_O`` ``[L, d]``)."""
        key = "raw:" + name
        if key not in self._cache:
            w = self.weights
            if name in ("W_E", "W_U", "b_U", "ln_final.b"):
                t = self._t(w[name])
            elif name == "W_pos":
                if w.W_pos is None:
                    raise PathexpandError("this model has no positional embedding (W_pos)")
                t = self._t(w.W_pos)
            else:
                t = self._t(w.stacked(name))
            self._cache[key] = t
        return self._cache[key]

    def __getitem__(self, name: str) -> torch.Tensor:
        """The reader/writer form of a weight (module docstring)."""
        if name not in self._cache:
            kind = self.config.normalization
            if name in ("W_Q", "W_K", "W_V"):
                t = norm.reader(self.raw(name), kind, self._norm_w("ln1", 4), axis=-2)
            elif name == "W_in":
                t = norm.reader(self.raw(name), kind, self._norm_w("ln2", 3), axis=-2)
            elif name == "final":  # the unembedding's reader part C diag(w), d_model × d_model
                eye = torch.eye(self.config.d_model, device=self.device, dtype=self.dtype)
                t = norm.reader(eye, kind, self._norm_w("ln_final", 2), axis=-2)
            elif name in ("W_O", "W_out", "b_O", "b_out"):
                t = norm.writer(self.raw(name), kind)
            elif name in ("W_E", "W_pos"):
                t = self.raw(name)
            else:
                raise PathexpandError(f"unknown circuit tensor {name!r}")
            self._cache[name] = t
        return self._cache[name]

    def layer(self, name: str, layer: int) -> torch.Tensor:
        """One layer's reader (``W_Q``, ``W_K``, ``W_V``) or writer (``W_O``) form ``[H, ·, ·]``,
        made from that layer's parameter alone: no copy of every layer at once."""
        t = self._t(self.weights[f"blocks.{layer}.attn.{name}"])
        kind = self.config.normalization
        if name == "W_O":
            return norm.writer(t, kind)
        if name in ("W_K", "W_V"):
            t = self.config.per_query_head(t, 0)                           # per query head
        w = self._t(self.weights[f"blocks.{layer}.ln1.w"])[:, None] if kind in ("LN", "RMS") else None
        return norm.reader(t, kind, w, axis=-2)

    def rotation(self) -> list[torch.Tensor]:
        """``[R̃_Δ]`` (``[d_head, d_head]``) to put between a score's query and key sides; ``[]``
        without rotary positions. A rotary model needs ``offset``."""
        if not self.rotary:
            return []
        if self.offset is None:
            raise PathexpandError(
                "this model has rotary positions: its QK circuits depend on the offset j − i "
                "between key and query; pass offset= (e.g. offset=-1 for the previous token, 0 for "
                "the same position)"
            )
        if "rotation" not in self._cache:
            from . import rotary

            self._cache["rotation"] = rotary.relative(self.config, [self.offset], dtype=self.dtype,
                                                      device=self.device)[0]
        return [self._cache["rotation"]]

    def unembed(self, *, raw: bool = False) -> list[torch.Tensor]:
        """The unembedding as a reader: ``[C diag(w), W_U]`` (``[W_U]`` without a norm, or
        ``raw``: for what enters after ``ln_final``, its bias)."""
        if raw or self.config.normalization is None:
            return [self.raw("W_U")]
        return [self["final"], self.raw("W_U")]

    def _norm_w(self, ln: str, ndim: int):
        """The norm's weight shaped to broadcast along the d_model axis (-2) of an
        ``ndim``-dimensional stacked reader; None without norm weights (no norm, or folded)."""
        if self.config.normalization not in ("LN", "RMS"):
            return None
        if ln == "ln_final":
            w = self._t(self.weights["ln_final.w"])
        else:
            w = self._t(self.weights.stacked(f"{ln}.w"))                     # [L, d]
            w = w.reshape(w.shape[0], *([1] * (ndim - 3)), w.shape[1])     # [L, (1,) d]
        return w[..., :, None]

    # whole-model circuits --------------------------------------------------------------------------
    def ov(self, scope: str = "full") -> Factored:
        """Every head's OV circuit ``[L, H, ·, ·]``: ``W_E W_V W_O W_U`` (full) or ``W_V W_O``."""
        _check_scope(scope)
        self._need_heads()
        mid = (self["W_V"], self["W_O"])
        return Factored(self["W_E"], *mid, *self.unembed()) if scope == "full" else Factored(*mid)

    def qk(self, scope: str = "full") -> Factored:
        """Every head's QK circuit ``[L, H, ·, ·]``: ``W_E W_Q W_Kᵀ W_Eᵀ`` (full) or ``W_Q W_Kᵀ``
        (rotary: ``W_Q R̃_Δ W_Kᵀ`` at the ``offset`` Δ)."""
        _check_scope(scope)
        self._need_heads()
        mid = (self["W_Q"], *self.rotation(), self["W_K"].mT)
        return Factored(self["W_E"], *mid, self["W_E"].mT) if scope == "full" else Factored(*mid)

    def _need_heads(self) -> None:
        if not self.arch.heads:
            raise PathexpandError("this model has no attention heads, so no OV or QK circuits")

    # terms -------------------------------------------------------------------------------------
    def term(self, term, *, scope: str = "full", mlp: str = "linear") -> list[torch.Tensor]:
        """Factors of a ``Term``, ``ScoreTerm``, logit path tuple or term name, validated by the
        one rule for paths: it must be a term of this model's expansion (``expand_logits`` or
        ``expand_scores``), which names what exists when it is not."""
        _check_scope(scope)
        _check_mlp(mlp)
        if (isinstance(term, (Term, ScoreTerm)) and term.is_remainder) or term in ((REMAINDER,), REMAINDER):
            raise PathexpandError("the remainder term stands for many paths and has no single chain")
        if isinstance(term, ScoreTerm):
            term = expand_scores(self.arch, term.head)[term.name]
        elif isinstance(term, str):
            try:
                term = expand_logits(self.arch)[term]
            except PathexpandError as exc:
                raise type(exc)(f"{term!r} is neither 'OV', 'QK' nor a logit term of this model: "
                                f"{exc}") from None
        else:
            path = tuple(term.path) if isinstance(term, Term) else tuple(term)
            if not path:
                raise PathexpandError("an empty path has no circuit; paths start at a source, e.g. ('embed',)")
            term = expand_logits(self.arch)[term_name(path)]
        if isinstance(term, ScoreTerm):
            layer, head = self.arch.check_head(term.head)
            q, k = term.query_path, term.key_path
            return self.score_chain(layer, head, (q[0], _nodes(q)), (k[0], _nodes(k)),
                                    scope=scope, mlp=mlp)
        path = term.path
        factors = self.logit_chain(path[0], _nodes(path), scope=scope, mlp=mlp)
        if factors is None:
            raise PathexpandError(f"{path[0]!r} has no {scope!r}-scope chain (b_U never enters "
                                  "the residual stream)")
        return factors

    def logit_chain(self, source: str, nodes, *, scope: str, mlp: str) -> list[torch.Tensor] | None:
        """Factors of a logit path from ``source`` through ``nodes`` (``(kind, layer, head)``,
        ``head`` an int or, to batch, a 1-D index tensor: each such head gets its own broadcast
        axis, in order, so the chain is the stack of every combination); None when the scope
        leaves nothing (``b_U`` in residual scope)."""
        if source == "b_U":
            return [self.raw("b_U")[None]] if scope == "full" else None
        rows, raw = self.rows(source, scope)
        chain = ([] if rows is None else [rows]) + self.logit_tail(nodes, raw=raw, scope=scope, mlp=mlp)
        return chain or [self._eye()]

    def logit_tail(self, nodes, *, raw: bool, scope: str, mlp: str, lead: int = 0) -> list[torch.Tensor]:
        """The factors after a source's rows: its nodes, then ``W_U`` (full scope); ``raw``: the
        first reader reads the source as stored (it entered after a norm); batched heads take
        broadcast axes after ``lead`` leading ones."""
        out = self._nodes(nodes, raw, mlp, _Axes(nodes, lead))
        if scope == "full":
            out += self.unembed(raw=raw and not nodes)
        return out

    def score_chain(self, layer: int, head: int, query, key, *, scope: str, mlp: str) -> list[torch.Tensor]:
        """Factors of a score term of head ``(layer, head)``: query side, ``W_Q``, (``R̃_Δ``,)
        ``W_Kᵀ``, key side transposed. ``query``/``key`` are ``(source, nodes)`` as ``logit_chain`` takes
        (batched heads: the query side's axes first, then the key side's)."""
        axes = _Axes(list(query[1]) + list(key[1]))
        q = self._side(layer, head, "Q", *query, scope=scope, mlp=mlp, axes=axes)
        k = self._side(layer, head, "K", *key, scope=scope, mlp=mlp, axes=axes)
        return q + self.rotation() + [f.mT for f in reversed(k)]

    def _side(self, layer: int, head: int, side: str, source: str, nodes, *, scope, mlp, axes):
        if source == f"L{layer}H{head}.b_{side}":
            return [self.raw(f"b_{side}")[layer, head][None]]                 # [1, d_head]
        if source == "b_U":
            raise PathexpandError("'b_U' cannot feed a query or key")
        rows, raw = self.rows(source, scope, qk=True)
        head_rows = [] if rows is None else [rows]
        return head_rows + self.side_tail(layer, head, side, nodes, raw=raw, mlp=mlp, axes=axes)

    def side_tail(self, layer: int, head: int, side: str, nodes, *, raw: bool, mlp: str, axes) -> list[torch.Tensor]:
        """One side of a score term after its source's rows: its nodes, then ``W_Q``/``W_K``."""
        reader = self.raw(f"W_{side}") if raw and not nodes else self[f"W_{side}"]
        return self._nodes(nodes, raw, mlp, axes) + [reader[layer, head]]

    def rows(self, source: str, scope: str, *, qk: bool = False) -> tuple[torch.Tensor | None, bool]:
        """A source's row block in the residual stream ``[rows, d_model]`` (None: the identity, for
        the embeddings in residual scope) and whether the next reader reads it raw."""
        factors, raw = self._source(source, scope, qk=qk)
        if not factors:
            return None, raw
        if len(factors) == 1:
            return factors[0], raw
        key = ("rows", source, scope, qk)
        if key not in self._cache:
            self._cache[key] = factors[0] @ factors[1]                       # a bias row through W_O/W_out
        return self._cache[key], raw

    def _eye(self) -> torch.Tensor:
        return torch.eye(self.config.d_model, device=self.device, dtype=self.dtype)

    def _source(self, source: str, scope: str, *, qk: bool = False) -> tuple[list[torch.Tensor], bool]:
        """(factors, next reader raw?) of a source row block."""
        if source == "embed":
            return ([self["W_E"]] if scope == "full" else []), False
        if source == "pos":
            raw = qk and self.config.positional == "shortformer"
            return ([self["W_pos"]] if scope == "full" else []), raw
        node = parse_node(source)
        if node.kind != "bias":
            raise PathexpandError(f"{source!r} is not a source")
        l, h, p = node.layer, node.head, node.param
        if p == "b_V":
            return [self.raw("b_V")[l, h][None], self["W_O"][l, h]], False
        if p in ("b_O", "b_out"):
            return [self[p][l][None]], False
        if p == "b_in":
            return [self.raw("b_in")[l][None], self["W_out"][l]], False
        if p in _RAW_SOURCES:
            if self.config.normalization != "LN":  # folded away (LNPre) or absent: a zero row
                return [torch.zeros(1, self.config.d_model, device=self.device, dtype=self.dtype)], True
            stored = self.raw("ln_final.b") if p == "ln_final.b" else self.raw(p)[l]
            return [stored[None]], True
        raise PathexpandError(f"source {source!r} cannot start a chain")

    def _pick(self, name: str, raw: bool, layer: int, heads: torch.Tensor) -> torch.Tensor:
        """``W[layer][heads]`` for an index tensor, made once: chains that share these heads
        share the tensor itself (``Factored(memo=...)`` then shares its products)."""
        key = (name, raw, layer, tuple(heads.tolist()))
        if key not in self._picked:
            self._picked[key] = (self.raw(name) if raw else self[name])[layer][heads]
        return self._picked[key]

    def _nodes(self, nodes, raw: bool, mlp: str, axes: _Axes) -> list[torch.Tensor]:
        """Factors of the nodes after a source; the first reads raw when ``raw``."""
        out: list[torch.Tensor] = []
        for i, (kind, layer, head) in enumerate(nodes):
            first_raw = raw and i == 0
            if kind == "head":
                V = (self.raw("W_V") if first_raw else self["W_V"])[layer]      # [H, d, e]
                O = self["W_O"][layer]                                        # [H, e, d]
                if isinstance(head, torch.Tensor):
                    out += axes.place(self._pick("W_V", first_raw, layer, head),
                                      self._pick("W_O", False, layer, head))
                else:
                    out += [V[head], O[head]]
            else:
                if mlp == "refuse":
                    raise PathexpandError(
                        f"MLP{layer} is an MLP: a data-free metric needs its gates, which only data "
                        "gives; pass mlp='linear' to use the linearised W_in W_out (gates = 1), or "
                        "use pe.attribute for exact, data-frozen contributions"
                    )
                W_in = (self.raw("W_in") if first_raw else self["W_in"])[layer]   # [d, d_mlp]
                if self.mlp_product:
                    key = ("mlp_product", layer, first_raw)
                    if key not in self._cache:
                        self._cache[key] = W_in @ self["W_out"][layer]         # [d, d]
                    out.append(self._cache[key])
                else:
                    out += [W_in, self["W_out"][layer]]
        return out


def _nodes(path) -> list[tuple[str, int, int]]:
    """``[(kind, layer, head)]`` of a path's heads and MLPs, after its source."""
    out = []
    for name in tuple(path)[1:]:
        node = parse_node(name)
        out.append((node.kind, node.layer, node.head))
    return out


class _Axes:
    """Hands out broadcast axes, in order, to the batched heads (index tensors) of a chain, after
    ``lead`` axes the caller uses itself (stacked sources)."""

    def __init__(self, nodes, lead: int = 0):
        self.n = lead + sum(1 for _, _, h in nodes if isinstance(h, torch.Tensor))
        self.next = lead

    def place(self, *ts: torch.Tensor) -> list[torch.Tensor]:
        """Each ``[k, r, c]`` of one head as ``[1, .., k, .., 1, r, c]`` on the next axis."""
        shape = [1] * self.n
        shape[self.next] = ts[0].shape[0]
        self.next += 1
        return [t.reshape(*shape, *t.shape[-2:]) for t in ts]


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise PathexpandError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    return scope


def _check_mlp(mlp: str) -> str:
    if mlp not in MLP_MODES:
        raise PathexpandError(f"mlp must be one of {list(MLP_MODES)}, got {mlp!r}")
    return mlp

