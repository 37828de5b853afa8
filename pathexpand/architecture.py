"""The shape of a transformer as the path expansion sees it: layers, heads, MLPs, LN, biases.

No weights, no torch: an ``Architecture`` is what ``expand_logits`` and ``expand_scores``
expand. ``Architecture.from_weights(w)`` reads one off loaded weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._hooks import load_model
from .errors import PathexpandError, UnknownHeadError
from .names import head_name, mlp_name, parse_node

__all__ = ["Architecture", "POSITIONAL", "as_architecture"]

POSITIONAL = ("standard", "shortformer", "rotary", None)
NORMALIZATIONS = (None, "LN", "RMS")


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PathexpandError(f"{what} must be a non-negative int, got {value!r}")
    return value


def _kv_heads(value, heads: tuple[int, ...]) -> int | None:
    """``n_kv_heads`` checked against the head counts; ``None`` when every query head has its own
    key/value head (ordinary attention)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PathexpandError(f"n_kv_heads must be None or a positive int, got {value!r}")
    bad = [h for h in heads if h and h % value]
    if bad:
        raise PathexpandError(
            f"n_kv_heads={value} must divide every layer's head count (groups of equal size); "
            f"it does not divide {bad[0]}"
        )
    if all(h in (0, value) for h in heads):
        return None  # one key/value head per query head: nothing is shared
    return value


@dataclass(frozen=True, init=False)
class Architecture:
    """Layers of attention heads (and optionally MLPs, LayerNorm, biases) on a residual stream.

    ``n_heads`` is one int for every layer or one int per layer. ``positional`` is
    ``"standard"`` (``W_pos`` added to the residual stream), ``"shortformer"`` (added only to
    each head's query and key inputs), ``"rotary"`` (queries and keys rotated by position;
    nothing positional in the residual stream) or ``None``. ``normalization`` is ``None``,
    ``"LN"`` (LayerNorm; ``layernorm=True`` says the same) or ``"RMS"`` (RMSNorm: no centring,
    no bias). ``gated_mlp``: MLPs ``(act(x W_gate) ⊙ x W_in + b_in) W_out``; ``parallel_attn_mlp``:
    each layer's MLP reads the same stream as its heads. ``n_kv_heads``: grouped-query attention,
    ``n_kv_heads`` key/value heads per layer shared by groups of query heads (query head ``h``
    of a layer with ``H`` heads uses key/value head ``h // (H / n_kv_heads)``); names and counts
    stay per query head. ``None`` (or one key/value head per query head): ordinary attention.

    >>> Architecture(2, 4).heads
    ('L0H0', 'L0H1', 'L0H2', 'L0H3', 'L1H0', 'L1H1', 'L1H2', 'L1H3')
    >>> Architecture(2, (1, 2), mlp=True).n_logit_paths()
    24
    """

    n_layers: int
    n_heads: tuple[int, ...]
    mlp: bool = False
    normalization: str | None = None
    positional: str | None = "standard"
    biases: bool = False
    gated_mlp: bool = False
    parallel_attn_mlp: bool = False
    n_kv_heads: int | None = None

    def __init__(
        self,
        n_layers: int,
        n_heads: int | Sequence[int] = 0,
        *,
        mlp: bool = False,
        layernorm: bool = False,
        positional: str | None = "standard",
        biases: bool = False,
        normalization: str | None = None,
        gated_mlp: bool = False,
        parallel_attn_mlp: bool = False,
        n_kv_heads: int | None = None,
    ):
        n_layers = _count(n_layers, "n_layers")
        if isinstance(n_heads, int) and not isinstance(n_heads, bool):
            _count(n_heads, "n_heads")
            if n_layers == 0 and n_heads:
                raise PathexpandError(
                    f"a 0-layer model has no heads, got n_heads={n_heads}; use n_heads=0"
                )
            heads = (n_heads,) * n_layers
        else:
            try:
                heads = tuple(n_heads)
            except TypeError:
                raise PathexpandError(
                    f"n_heads must be an int or one int per layer, got {n_heads!r}"
                ) from None
            if len(heads) != n_layers:
                raise PathexpandError(
                    f"n_heads has {len(heads)} entries {heads} but n_layers={n_layers}; "
                    "give one head count per layer"
                )
            for i, h in enumerate(heads):
                _count(h, f"n_heads[{i}]")
        if positional == "none":
            positional = None
        if positional not in POSITIONAL:
            raise PathexpandError(
                f"positional must be 'standard', 'shortformer', 'rotary' or None (on the command "
                f"line 'none'); got {positional!r}"
            )
        for flag, value in (("mlp", mlp), ("layernorm", layernorm), ("biases", biases),
                            ("gated_mlp", gated_mlp), ("parallel_attn_mlp", parallel_attn_mlp)):
            if not isinstance(value, bool):
                raise PathexpandError(f"{flag} must be True or False, got {value!r}")
        if normalization not in NORMALIZATIONS:
            raise PathexpandError(
                f"normalization must be None, 'LN' or 'RMS', got {normalization!r}"
            )
        if layernorm and normalization not in (None, "LN"):
            raise PathexpandError(
                f"layernorm=True says normalization='LN'; it contradicts normalization={normalization!r}"
            )
        normalization = "LN" if layernorm else normalization
        if (gated_mlp or parallel_attn_mlp) and not mlp:
            raise PathexpandError(
                f"{'gated_mlp' if gated_mlp else 'parallel_attn_mlp'}=True needs MLPs (mlp=True)"
            )
        n_kv_heads = _kv_heads(n_kv_heads, heads)
        if n_layers and not any(heads) and not mlp:
            raise PathexpandError(
                f"a {n_layers}-layer model with no heads and no MLPs has nothing in its layers; "
                "give at least one head (n_heads ≥ 1) or mlp=True, or n_layers=0 for the direct path"
            )
        set_ = object.__setattr__
        set_(self, "n_layers", n_layers)
        set_(self, "n_heads", heads)
        set_(self, "mlp", mlp)
        set_(self, "normalization", normalization)
        set_(self, "positional", positional)
        set_(self, "biases", biases)
        set_(self, "gated_mlp", gated_mlp)
        set_(self, "parallel_attn_mlp", parallel_attn_mlp)
        set_(self, "n_kv_heads", n_kv_heads)

    @property
    def grouped(self) -> bool:
        """True with grouped-query (or multi-query) attention: key/value heads are shared."""
        return self.n_kv_heads is not None

    def kv_group(self, layer: int) -> int:
        """Query heads per key/value head in ``layer`` (1 without grouped-query attention)."""
        self._check_layer(layer)
        return self.n_heads[layer] // self.n_kv_heads if self.grouped else 1

    @property
    def layernorm(self) -> bool:
        """True for LayerNorm (centring, with a bias); RMSNorm is ``normalization == "RMS"``."""
        return self.normalization == "LN"

    @property
    def normed(self) -> bool:
        """True when a norm (LayerNorm or RMSNorm) reads the residual stream."""
        return self.normalization is not None

    @classmethod
    def from_weights(cls, weights) -> Architecture:
        """The architecture of a model (``Weights``, or anything ``pe.load`` takes): biases on
        when any bias is non-zero."""
        weights = load_model(weights)
        cfg = weights.config
        return cls(
            cfg.n_layers,
            cfg.n_heads,
            mlp=cfg.d_mlp is not None,
            normalization={"LNPre": "LN", "RMSPre": "RMS"}.get(cfg.normalization, cfg.normalization),
            positional=cfg.positional,
            biases=weights.has_biases(),
            gated_mlp=cfg.gated_mlp,
            parallel_attn_mlp=cfg.parallel_attn_mlp,
            n_kv_heads=int(cfg.n_key_value_heads) if cfg.n_key_value_heads else None,   # 0: no heads
        )

    # names ---------------------------------------------------------------------------
    @property
    def heads(self) -> tuple[str, ...]:
        """Every head name, layer by layer: ``('L0H0', ..., 'L1H3')``."""
        return tuple(head_name(l, h) for l, n in enumerate(self.n_heads) for h in range(n))

    def heads_in_layer(self, layer: int) -> tuple[str, ...]:
        """Head names of one layer."""
        self._check_layer(layer)
        return tuple(head_name(layer, h) for h in range(self.n_heads[layer]))

    @property
    def mlps(self) -> tuple[str, ...]:
        """``('MLP0', 'MLP1', ...)`` when the model has MLPs, else ``()``."""
        return tuple(mlp_name(l) for l in range(self.n_layers)) if self.mlp else ()

    @property
    def writers(self) -> tuple[str, ...]:
        """Nodes that read and write the residual stream, in forward order (heads, then MLP)."""
        out: list[str] = []
        for l in range(self.n_layers):
            out.extend(self.heads_in_layer(l))
            if self.mlp:
                out.append(mlp_name(l))
        return tuple(out)

    @property
    def sources(self) -> tuple[str, ...]:
        """Sources of residual-stream paths: ``embed``, ``pos`` when standard positions."""
        return ("embed", "pos") if self.positional == "standard" else ("embed",)

    def _check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise UnknownHeadError(
                f"layer {layer!r} is not in this {self.n_layers}-layer model"
            )

    def _head_range(self) -> str:
        if not self.heads:
            return "it has no heads"
        return f"heads are {self.heads[0]}…{self.heads[-1]}" + (
            "" if len(set(self.n_heads)) == 1 else f" ({', '.join(map(str, self.n_heads))} per layer)"
        )

    def check_head(self, name: str) -> tuple[int, int]:
        """``(layer, head)`` of a head name, or ``UnknownHeadError`` saying which heads exist."""
        node = parse_node(name) if isinstance(name, str) else None
        if node is None or node.kind != "head":
            raise UnknownHeadError(f"{name!r} is not a head name like 'L1H0'; {self._head_range()}")
        if node.layer >= self.n_layers or node.head >= self.n_heads[node.layer]:
            raise UnknownHeadError(
                f"{name!r} is not in this {self.n_layers}-layer model; {self._head_range()}"
            )
        return node.layer, node.head

    def check_node(self, name: str) -> str:
        """Return ``name`` if it is a head or MLP of this model, else ``UnknownHeadError``."""
        node = parse_node(name)
        if node.kind == "head":
            self.check_head(name)
        elif node.kind == "mlp":
            if not self.mlp or node.layer >= self.n_layers:
                raise UnknownHeadError(
                    f"{name!r} is not in this model; MLPs are "
                    + (f"MLP0…MLP{self.n_layers - 1}" if self.mlp else "absent (mlp=False)")
                )
        else:
            raise UnknownHeadError(f"{name!r} is a {node.kind}, not a head or MLP")
        return name

    # closed-form counts ------------------------------------------------------------------
    def _choices(self, h: int) -> int:
        """Ways a path crosses one layer with ``h`` heads: skip it or take one node of each
        stage (``(1 + H)·2`` with sequential MLPs; ``1 + H + 1`` with parallel ones)."""
        if self.parallel_attn_mlp:
            return 1 + h + 1
        return (1 + h) * (2 if self.mlp else 1)

    def n_logit_paths(self, source: str = "embed") -> int:
        """Paths from one source to the logits: ``Π_l (1 + H_l)``, times ``2^L`` with MLPs
        (``Π_l (2 + H_l)`` with parallel attention and MLP)."""
        return math.prod(self._choices(h) for h in self.n_heads)

    def n_score_pairs(self, head: str) -> int:
        """(query path, key path) pairs per pair of sources: ``(Π_{l'<l} c_l')²``, ``c_l`` the
        choices per layer (``1 + H_l``; ``(1 + H_l)·2`` with MLPs, ``2 + H_l`` parallel)."""
        layer, _ = self.check_head(head)
        one_side = math.prod(self._choices(h) for h in self.n_heads[:layer])
        return one_side * one_side

    def __str__(self) -> str:
        extras = [
            name
            for name, on in (("gated MLP" if self.gated_mlp else "MLP", self.mlp),
                             ("parallel attention and MLP", self.parallel_attn_mlp),
                             ("LayerNorm", self.layernorm), ("RMSNorm", self.normalization == "RMS"),
                             (f"grouped-query attention ({self.n_kv_heads} key/value "
                              f"head{'' if self.n_kv_heads == 1 else 's'} per layer)", self.grouped),
                             ("biases", self.biases))
            if on
        ]
        heads = (
            "no heads" if not self.n_heads
            else f"{self.n_heads[0]} head{'' if self.n_heads[0] == 1 else 's'}"
            if len(set(self.n_heads)) == 1
            else f"heads {self.n_heads}"
        )
        pos = self.positional or "no"
        return (
            f"{self.n_layers}-layer transformer, {heads}, {pos} positions"
            + (", " + ", ".join(extras) if extras else ", attention-only")
        )


def as_architecture(source) -> Architecture:
    """An ``Architecture`` as it is; anything else is a model (``Weights``, a bundled name, a file,
    a TransformerLens or Hugging Face model) read through ``pe.load``, and its architecture."""
    if isinstance(source, Architecture):
        return source
    if isinstance(source, (int, float, tuple, list, dict, set, type(None))):
        raise PathexpandError(
            f"expected an Architecture (pe.Architecture(n_layers, n_heads, ...)) or a model "
            f"(Weights, a bundled name, a weights file, a TransformerLens or Hugging Face model); "
            f"got {type(source).__name__}"
        )
    return Architecture.from_weights(load_model(source))
