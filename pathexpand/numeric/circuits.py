"""The virtual weight matrix of a term, built from its path as a chain of factors.

A logit path ``(source, n_1, ..., n_k)`` is the product (right-multiplying, DESIGN.md §2)

    S · R_{n_1} · R_{n_2} ⋯ R_{n_k} · W_U

with ``S`` the source's rows (``W_E``, ``W_pos``, or one bias row: ``b_V W_O``, ``b_O``,
``b_in W_out``, ``b_out``, ``ln1.b``, ``ln2.b``, ``ln_final.b``), ``R`` a node's map on the
residual stream — a head's ``W_V W_O``, an MLP's **linearised** ``W_in W_out`` (gates frozen
at 1: what the MLP does in its linear regime; a data-free number cannot know the real
gates) — e.g. ``("embed", "L0H1", "L1H0")`` → ``W_E · W_OV^{0,1} · W_OV^{1,0} · W_U``.

A score term ``(query path, key path)`` of head ``h`` is ``X_q W_Q^h (X_k W_K^h)ᵀ`` with ``X``
the two sides' chains without ``W_U`` — before the ``1/√d_head`` scale, like ``ScoreTerm``.
``L{l}H{h}.b_Q``/``b_K`` sources are rows in ``d_head`` space that skip ``W_Q``/``W_K``;
shortformer ``pos`` is added to the query/key input itself (no LayerNorm in between).

LayerNorm: a frozen LN is ``x ↦ (x/σ) C diag(w) + b`` (``C`` centres over ``d_model``). The
data-free circuit keeps ``C diag(w)`` in every reader (``W_V, W_Q, W_K, W_in, W_U`` become
``C diag(w) W``, exactly what ``fold_layernorm`` does) and **drops the per-position 1/σ**,
which only data can give; the LN bias is its own source and meets the raw reader. LNPre
models keep ``C`` only.

``scope="residual"`` drops the token/positional embedding at the start (the chain starts
from the residual stream, the identity for the direct path) and ``W_U`` at the end
(``b_U`` has no residual part and gives no chain).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import PathexpandError
from ..names import parse_head, parse_node
from .factored import Factored, _as_tensor
from .forward import _torch_dtype

__all__ = ["SCOPES", "CircuitContext", "circuit", "logit_keys", "score_keys"]

SCOPES = ("full", "residual")
Key = tuple  # (tensor name, index tuple, transposed)


def _key(name: str, index: tuple = (), transposed: bool = False) -> Key:
    return (name, tuple(index), transposed)


class CircuitContext:
    """The tensors a chain is made of, on one device and dtype, built lazily and cached.

    Names: ``W_E``, ``W_pos``, ``W_U``, ``I`` (identity), per head ``W_V``, ``W_O``, ``W_Q``,
    ``W_K`` (``[L, H, ...]``), their LayerNorm readers ``W_V~``, ``W_Q~``, ``W_K~``, ``W_U~``,
    per layer ``W_in``, ``W_in~``, ``W_out``, and bias rows ``b_V``/``b_Q``/``b_K``
    (``[L, H, 1, d_head]``), ``b_O``, ``b_in``, ``b_out``, ``ln1.b``, ``ln2.b`` (``[L, 1, ·]``),
    ``ln_final.b``, ``b_U`` (``[1, ·]``).
    """

    def __init__(self, weights, *, device=None, dtype=None):
        self.weights = weights
        self.config = weights.config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = _torch_dtype(dtype, weights)
        self._cache: dict[str, torch.Tensor] = {}

    def _t(self, array) -> torch.Tensor:
        return _as_tensor(array, self.device, self.dtype)

    def _reader(self, W: torch.Tensor, ln: str) -> torch.Tensor:
        """C diag(w) W over the d_model axis (-2) for LayerNorm ``ln`` (``"ln1"``, ``"ln2"``,
        ``"ln_final"``); ``W`` is stacked ``[L, H, d, ·]`` (ln1), ``[L, d, ·]`` (ln2) or ``[d, ·]``."""
        norm = self.config.normalization
        if norm is None:
            return W
        if norm == "LN":
            if ln == "ln_final":
                w = self._t(self.weights["ln_final.w"])[:, None]
            elif ln == "ln1":
                w = self._t(self.weights.stacked("ln1.w"))[:, None, :, None]
            else:
                w = self._t(self.weights.stacked("ln2.w"))[:, :, None]
            W = W * w
        return W - W.mean(-2, keepdim=True)

    def get(self, name: str) -> torch.Tensor:
        if name in self._cache:
            return self._cache[name]
        w, c = self.weights, self.config
        if name == "ln_final.b" and c.normalization == "LNPre":
            t = torch.zeros(1, c.d_model, device=self.device, dtype=self.dtype)
        elif name in ("W_E", "W_U", "ln_final.b", "b_U"):
            t = self._t(w[name])
            if name in ("ln_final.b", "b_U"):
                t = t.unsqueeze(0)
        elif name == "W_pos":
            if w.W_pos is None:
                raise PathexpandError("this model has no positional embedding (W_pos)")
            t = self._t(w.W_pos)
        elif name == "I":
            t = torch.eye(c.d_model, device=self.device, dtype=self.dtype)
        elif name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
            t = self._t(w.stacked(name))
        elif name in ("W_Q~", "W_K~", "W_V~"):
            t = self._reader(self.get(name[:-1]), "ln1")
        elif name == "W_in~":
            t = self._reader(self.get("W_in"), "ln2")
        elif name == "W_U~":
            t = self._reader(self.get("W_U"), "ln_final")
        elif name in ("ln1.b", "ln2.b") and c.normalization == "LNPre":
            t = torch.zeros(c.n_layers, 1, c.d_model, device=self.device, dtype=self.dtype)  # folded away
        elif name in ("b_V", "b_Q", "b_K", "b_O", "b_in", "b_out", "ln1.b", "ln2.b"):
            t = self._t(w.stacked(name)).unsqueeze(-2)
        else:
            raise PathexpandError(f"unknown circuit tensor {name!r}")
        self._cache[name] = t
        return t

    def tensor(self, key: Key) -> torch.Tensor:
        """One factor: the named tensor at its index, transposed when asked."""
        name, index, transposed = key
        t = self.get(name)[index] if index else self.get(name)
        return t.mT if transposed else t


def _raw(name: str, raw: bool) -> str:
    return name if raw else f"{name}~"


def _source_keys(source: str, arch, scope: str, *, shortformer_pos_raw=False):
    """(keys, next reader raw?) for a source; ``None`` keys when the scope has no such chain."""
    if source == "embed":
        return ([_key("W_E")] if scope == "full" else []), False
    if source == "pos":
        return ([_key("W_pos")] if scope == "full" else []), shortformer_pos_raw
    node = parse_node(source)
    if node.kind != "bias":
        raise PathexpandError(f"{source!r} is not a source")
    l, h, p = node.layer, node.head, node.param
    if source == "b_U":
        return None, False
    if p == "b_V":
        return [_key("b_V", (l, h)), _key("W_O", (l, h))], False
    if p == "b_O":
        return [_key("b_O", (l,))], False
    if p == "b_in":
        return [_key("b_in", (l,)), _key("W_out", (l,))], False
    if p == "b_out":
        return [_key("b_out", (l,))], False
    if p in ("ln1.b", "ln2.b"):
        return [_key(p, (l,))], True
    if source == "ln_final.b":
        return [_key("ln_final.b")], True
    raise PathexpandError(f"source {source!r} cannot start an OV chain")


def _node_keys(node_name: str, raw: bool, mlp: str) -> list[Key]:
    node = parse_node(node_name)
    if node.kind == "head":
        return [_key(_raw("W_V", raw), (node.layer, node.head)), _key("W_O", (node.layer, node.head))]
    if node.kind == "mlp":
        if mlp == "refuse":
            raise PathexpandError(
                f"{node_name} is an MLP: a data-free metric needs its gates, which only data gives; "
                "pass mlp='linear' to use the linearised W_in W_out (gates = 1), or use "
                "pe.attribute for exact, data-frozen contributions"
            )
        return [_key(_raw("W_in", raw), (node.layer,)), _key("W_out", (node.layer,))]
    raise PathexpandError(f"{node_name!r} is not a head or MLP")


def logit_keys(path, arch, *, scope: str = "full", mlp: str = "linear") -> list[Key] | None:
    """Factor keys of a logit path, or None when the scope leaves nothing (``b_U``, residual)."""
    path = tuple(path)
    if path[0] == "b_U":
        return [_key("b_U")] if scope == "full" else None
    keys, raw = _source_keys(path[0], arch, scope)
    for n in path[1:]:
        keys = keys + _node_keys(n, raw, mlp)
        raw = False
    if scope == "full":
        keys.append(_key(_raw("W_U", raw)))
    return keys or [_key("I")]


def _side_keys(path, arch, head: str, side: str, scope: str, mlp: str) -> list[Key]:
    l, h = parse_head(head)
    path = tuple(path)
    if path == (f"{head}.b_{side.upper()}",):
        return [_key(f"b_{side.upper()}", (l, h))]
    shortformer = arch.positional == "shortformer"
    keys, raw = _source_keys(path[0], arch, scope, shortformer_pos_raw=shortformer)
    if keys is None:
        raise PathexpandError(f"{path[0]!r} cannot feed a query or key")
    for n in path[1:]:
        keys = keys + _node_keys(n, raw, mlp)
        raw = False
    reader = _key(_raw(f"W_{side.upper()}", raw), (l, h))
    return (keys or [_key("I")]) + [reader]


def score_keys(term, arch, *, scope: str = "full", mlp: str = "linear") -> list[Key]:
    """Factor keys of a score term: query chain, ``W_Q``, ``W_Kᵀ``, key chain transposed."""
    q = _side_keys(term.query_path, arch, term.head, "q", scope, mlp)
    k = _side_keys(term.key_path, arch, term.head, "k", scope, mlp)
    return q + [(n, i, not t) for (n, i, t) in reversed(k)]


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise PathexpandError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    return scope


def circuit(term, weights, *, scope: str = "full", mlp: str = "linear", device=None, dtype=None) -> Factored:
    """The term's virtual weight matrix as a ``Factored`` chain (exact factors, no reduction).

    ``term`` is a ``Term``, a ``ScoreTerm`` or a logit path tuple like ``("embed", "L0H1", "L1H0")``.
    """
    from ..architecture import Architecture

    _check_scope(scope)
    arch = Architecture.from_weights(weights)
    ctx = CircuitContext(weights, device=device, dtype=dtype)
    keys = term_keys(term, arch, scope=scope, mlp=mlp)
    if keys is None:
        raise PathexpandError(f"{_term_label(term)} has no {scope!r}-scope chain (b_U never enters the residual stream)")
    return Factored(*(ctx.tensor(k) for k in keys))


def term_keys(term, arch, *, scope: str = "full", mlp: str = "linear") -> list[Key] | None:
    """Factor keys of a ``Term``, ``ScoreTerm`` or path tuple (validated against ``arch``)."""
    if isinstance(term, tuple):
        path = term
        _check_nodes(path[1:], arch)
        return logit_keys(path, arch, scope=scope, mlp=mlp)
    if getattr(term, "is_remainder", False):
        raise PathexpandError("the remainder term stands for many paths and has no single chain")
    if hasattr(term, "query_path"):
        arch.check_head(term.head)
        _check_nodes(term.query_path[1:] + term.key_path[1:], arch)
        return score_keys(term, arch, scope=scope, mlp=mlp)
    _check_nodes(term.path[1:], arch)
    return logit_keys(term.path, arch, scope=scope, mlp=mlp)


def _check_nodes(nodes, arch) -> None:
    for n in nodes:
        arch.check_node(n)  # UnknownHeadError naming the heads that exist


def _term_label(term: Any) -> str:
    return getattr(term, "name", None) or repr(term)

