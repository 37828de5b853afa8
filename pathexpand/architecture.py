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

POSITIONAL = ("standard", "shortformer", None)


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PathexpandError(f"{what} must be a non-negative int, got {value!r}")
    return value


@dataclass(frozen=True, init=False)
class Architecture:
    """Layers of attention heads (and optionally MLPs, LayerNorm, biases) on a residual stream.

    ``n_heads`` is one int for every layer or one int per layer. ``positional`` is
    ``"standard"`` (``W_pos`` added to the residual stream), ``"shortformer"`` (added only to
    each head's query and key inputs) or ``None``.

    >>> Architecture(2, 4).heads
    ('L0H0', 'L0H1', 'L0H2', 'L0H3', 'L1H0', 'L1H1', 'L1H2', 'L1H3')
    >>> Architecture(2, (1, 2), mlp=True).n_logit_paths()
    24
    """

    n_layers: int
    n_heads: tuple[int, ...]
    mlp: bool = False
    layernorm: bool = False
    positional: str | None = "standard"
    biases: bool = False

    def __init__(
        self,
        n_layers: int,
        n_heads: int | Sequence[int] = 0,
        *,
        mlp: bool = False,
        layernorm: bool = False,
        positional: str | None = "standard",
        biases: bool = False,
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
                f"positional must be 'standard', 'shortformer' or None (on the command line "
                f"'none'); got {positional!r}"
            )
        for flag, value in (("mlp", mlp), ("layernorm", layernorm), ("biases", biases)):
            if not isinstance(value, bool):
                raise PathexpandError(f"{flag} must be True or False, got {value!r}")
        if n_layers and not any(heads) and not mlp:
            raise PathexpandError(
                f"a {n_layers}-layer model with no heads and no MLPs has nothing in its layers; "
                "give at least one head (n_heads ≥ 1) or mlp=True, or n_layers=0 for the direct path"
            )
        set_ = object.__setattr__
        set_(self, "n_layers", n_layers)
        set_(self, "n_heads", heads)
        set_(self, "mlp", mlp)
        set_(self, "layernorm", layernorm)
        set_(self, "positional", positional)
        set_(self, "biases", biases)

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
            layernorm=cfg.normalization is not None,
            positional=cfg.positional,
            biases=weights.has_biases(),
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
    def n_logit_paths(self, source: str = "embed") -> int:
        """Paths from one source to the logits: ``Π_l (1 + H_l)``, times ``2^L`` with MLPs."""
        per_layer = [(1 + h) * (2 if self.mlp else 1) for h in self.n_heads]
        return math.prod(per_layer)

    def n_score_pairs(self, head: str) -> int:
        """(query path, key path) pairs per pair of sources: ``(Π_{l'<l} (1 + H_l'))²``."""
        layer, _ = self.check_head(head)
        one_side = math.prod((1 + h) * (2 if self.mlp else 1) for h in self.n_heads[:layer])
        return one_side * one_side

    def __str__(self) -> str:
        extras = [
            name
            for name, on in (("MLP", self.mlp), ("LayerNorm", self.layernorm), ("biases", self.biases))
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
