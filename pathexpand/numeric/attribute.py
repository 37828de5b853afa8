"""Exact attribution on tokens: each path's contribution to a linear function of the logits.

With patterns, LayerNorm scales and MLP gates frozen (``numeric/frozen.py``) the target
``T = Σ_t u_t · logits[p_t]`` is ``Σ_paths ⟨r, M_k ⋯ M_1 S⟩ + constants`` exactly, over
sources ``S`` and node maps ``M`` (DESIGN.md §2). Three views, all exact:

- **path**: every path's contribution (when the count is small; else use ``top_k_paths``);
- **node**: for each head/MLP ``n``, the sum over every path through ``n``:
  ``⟨G_n, O_n⟩`` with ``O_n`` = everything that reaches ``n`` pushed through ``n``
  (forward) and ``G_n`` = everything from ``n``'s output to the target (backward);
- **edge**: for ``a → b``, the sum over every path in which ``b`` reads ``a`` directly
  (``a`` immediately before ``b`` on the path): ``⟨M_bᵀ G_b, O_a⟩``; ``a`` may be a source,
  ``b`` may be ``"logits"``. Into and out of every node the edges sum to the node.

No view enumerates paths except the path view. ``attribute_scores`` splits one attention
score the same way into (query path × key path) terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .._repr import TextTableHTML
from ..errors import PathexpandError, check_int
from ..names import parse_node
from ._progress import progress as track
from .forward import token_array
from .frozen import CONSTANTS, Frozen, freeze
from .targets import Target, encode_tokens, resolve_target
from .weights import Weights

__all__ = [
    "attribute",
    "attribute_scores",
    "Attribution",
    "ScoreAttribution",
    "path_info",
    "VIEWS",
]

VIEWS = ("path", "node", "edge")
MAX_PATHS = 20_000


# result -------------------------------------------------------------------------------------
@dataclass
class Attribution(TextTableHTML):
    """Contributions to ``target`` of paths, nodes and edges, exact to rounding.

    Arrays are ``[rows, batch, *target_shape]`` where ``target_shape`` is ``(T,)`` (one value
    per chosen position) or ``(T, d_vocab_out)`` for ``target="logits"``. ``output`` is the
    model's own target value ``[batch, *target_shape]``; ``constants`` the terms no input
    changes (``b_U``, ``ln_final.b``). A row's headline ``value`` (used for ranking) is its
    mean over prompts and positions — the mean logit (difference) — or, for
    ``target="logits"``, the root-mean-square over prompts, positions and vocabulary.
    """

    target_kind: str
    target_label: str
    positions: tuple[int, ...]
    tokens: np.ndarray
    output: np.ndarray
    constants: dict[str, np.ndarray]
    ends: tuple[str, ...]
    end_values: np.ndarray
    scale: np.ndarray
    paths: tuple[tuple[str, ...], ...] | None = None
    path_values: np.ndarray | None = None
    nodes: tuple[str, ...] | None = None
    node_values: np.ndarray | None = None
    edges: tuple[tuple[str, str], ...] | None = None
    edge_values: np.ndarray | None = None
    n_paths: int = 0
    model: str | None = None
    notes: list[str] = field(default_factory=list)

    # checks ------------------------------------------------------------------------------
    def residual_error(self) -> float:
        """``max |Σ contributions + constants − output| / scale``.

        The sum is over every path when paths were enumerated, else over the partition of
        all paths by their last step (``ends``: each source's direct path and each node's
        edge into the logits). ``scale`` is, per prompt, the largest ``‖u‖₁ · |logit|`` the
        target reads (a target is a linear function of logits, so no term of the model's
        own computation is larger than this), and at least ``|output|``.
        """
        parts = self.path_values if self.path_values is not None else self.end_values
        total = parts.sum(0) + sum(self.constants.values())
        err = np.abs(total - self.output)
        err = err.reshape(err.shape[0], -1).max(-1)
        return float((err / self.scale).max())

    # headline numbers ----------------------------------------------------------------------
    def summarize(self, values: np.ndarray) -> np.ndarray:
        """One number per row of ``values`` ``[rows, batch, *shape]`` (see the class doc)."""
        flat = values.reshape(values.shape[0], -1)
        if self.target_kind == "logits":
            return np.sqrt((flat**2).mean(-1))
        return flat.mean(-1)

    @property
    def total(self) -> float:
        """Headline value of the model's own target output."""
        return float(self.summarize(self.output[None])[0])

    def path(self, path) -> np.ndarray:
        """Contribution of one path (a tuple, or a name such as ``"L1H0∘L0H1"``) ``[batch, *shape]``."""
        if self.paths is None:
            raise PathexpandError("this attribution has no path view; ask for views=('path', ...)")
        key = _as_path(path, self.paths)
        return self.path_values[self.paths.index(key)]

    def node(self, name: str) -> np.ndarray:
        """Sum over every path through head/MLP ``name``: ``[batch, *shape]``."""
        if self.nodes is None:
            raise PathexpandError("this attribution has no node view; ask for views=('node', ...)")
        if name not in self.nodes:
            raise PathexpandError(f"{name!r} is not a node of this model; nodes are {list(self.nodes)}")
        return self.node_values[self.nodes.index(name)]

    def edge(self, a: str, b: str) -> np.ndarray:
        """Sum over every path in which ``b`` reads ``a`` directly: ``[batch, *shape]``."""
        if self.edges is None:
            raise PathexpandError("this attribution has no edge view; ask for views=('edge', ...)")
        try:
            return self.edge_values[self._edge_index[(a, b)]]
        except KeyError:
            raise PathexpandError(
                f"no edge {a!r} → {b!r}: {b!r} must come after {a!r} in forward order "
                "(a later layer, or the MLP of the same layer); 'logits' is the last node"
            ) from None

    @cached_property
    def _edge_index(self) -> dict[tuple[str, str], int]:
        return {e: i for i, e in enumerate(self.edges or ())}

    # tables ----------------------------------------------------------------------------------
    def ranking(self, view: str = "path"):
        """A ``Ranking`` of one view (name, kind, depth, path, value, share = value / output).

        Rows keep the view's order; ``.top(k)`` sorts by ``|value|``.
        """
        from .ranking import Ranking

        return Ranking(
            self.records(view),
            total=self.total,
            title=f"{view} contributions to {self.target_label}",
            value_label="contribution",
            notes=tuple(self.notes),
        )

    def records(self, view: str = "path") -> list[dict]:
        """Rows of one view as plain dicts (``name``, ``kind``, ``depth``, ``path``, ``value``).

        Paths: depth = heads and MLPs passed. Nodes (``kind`` head/mlp) and edges (``kind``
        like ``head→head``, ``source→logits``): depth = heads and MLPs the row names.
        """
        if view not in VIEWS:
            raise PathexpandError(f"view must be one of {VIEWS}, got {view!r}")
        if view == "path":
            if self.paths is None:
                raise PathexpandError("this attribution has no path view (too many paths?); "
                                      "use pe.top_k_paths for the largest ones")
            vals = self.summarize(self.path_values)
            out = []
            for p, v in zip(self.paths, vals):
                name, kind, depth = path_info(p)
                out.append(dict(name=name, kind=kind, depth=depth, path=p, value=float(v)))
            return out
        if view == "node":
            if self.nodes is None:
                raise PathexpandError("this attribution has no node view")
            vals = self.summarize(self.node_values)
            return [
                dict(name=n, kind=parse_node(n).kind, depth=1, path=(n,), value=float(v))
                for n, v in zip(self.nodes, vals)
            ]
        if self.edges is None:
            raise PathexpandError("this attribution has no edge view")
        vals = self.summarize(self.edge_values)
        return [
            dict(name=f"{a} → {b}", kind=_edge_kind(a, b), path=(a, b), value=float(v),
                 depth=sum(parse_node(x).kind in ("head", "mlp") for x in (a, b)))
            for (a, b), v in zip(self.edges, vals)
        ]

    def top(self, k: int = 10, view: str = "path") -> list[dict]:
        """The ``k`` rows of a view with the largest ``|value|``."""
        rows = self.records(view)
        rows.sort(key=lambda r: -abs(r["value"]))
        return rows[:k]

    def to_dict(self, k: int | None = None) -> dict:
        """JSON-ready summary: target, output, residual error, constants and the views (top ``k``)."""
        out: dict[str, Any] = {
            "model": self.model,
            "target": self.target_label,
            "positions": list(self.positions),
            "output": self.total,
            "residual_error": self.residual_error(),
            "n_paths": self.n_paths,
            "constants": {n: float(self.summarize(v[None])[0]) for n, v in self.constants.items()},
        }
        for view, have in (("path", self.paths), ("node", self.nodes), ("edge", self.edges)):
            if have is not None:
                rows = self.top(k or 10**9, view)
                for r in rows:
                    r["path"] = list(r["path"])
                out[view + "s"] = rows
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def __str__(self) -> str:
        lines = [(
            f"attribution of {self.target_label} at position(s) {list(self.positions)}: "
            f"output {self.total:.4g}, residual error {self.residual_error():.1e}"
        )]
        for view, have in (("path", self.paths), ("node", self.nodes), ("edge", self.edges)):
            if have is None:
                continue
            lines.append(f"  top {view}s:")
            for r in self.top(5, view):
                lines.append(f"    {r['name']:<28} {r['value']:+.4g}")
        return "\n".join(lines)


def _as_path(path, paths) -> tuple[str, ...]:
    if isinstance(path, tuple):
        if path in paths:
            return path
        raise PathexpandError(f"path {path} is not among this attribution's paths")
    for p in paths:
        if path_info(p)[0] == path:
            return p
    raise PathexpandError(f"no path named {path!r}; names look like 'L1H0∘L0H1' or 'pos:L1H0'")


def _edge_kind(a: str, b: str) -> str:
    ka = parse_node(a).kind
    kb = "logits" if b == "logits" else parse_node(b).kind
    return f"{ka}→{kb}"


def path_info(path: Iterable[str]) -> tuple[str, str, int]:
    """``(name, kind, depth)`` of a path exactly as the symbolic ``Term`` names it.

    name: ``L1H0∘L0H1``, ``direct``, ``pos:L1H0``, ``L0.b_O`` (``symbolic.terms.term_name``);
    kind: ``bias`` > ``mlp`` > ``virtual`` > ``head`` > ``direct`` (``logit_kind``); depth:
    heads and MLPs passed.
    """
    from ..symbolic.terms import logit_kind, term_name

    path = tuple(path)
    return term_name(path), logit_kind(path), len(path) - 1


# attribute ----------------------------------------------------------------------------------
def attribute(
    weights: Weights,
    tokens,
    *,
    target=None,
    diff=None,
    positions=None,
    views: Iterable[str] | None = None,
    max_paths: int = MAX_PATHS,
    device=None,
    dtype=None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Attribution:
    """Exact contributions of paths, nodes and edges to a linear function of the logits.

    ``target``: a token (int or one-token string; its logit), ``("diff", a, b)`` or
    ``diff=(a, b)`` (logit difference; ``a``/``b`` may be one id per prompt), ``"logits"``
    (every logit), a vector ``[d_vocab_out]`` or ``[batch, d_vocab_out]`` (any linear function
    of the logits), or None (the logit of the model's own top prediction). ``positions``:
    None (last), an int, a list of ints or ``"all"``. ``tokens``: ids ``[pos]``/``[batch, pos]``
    or text when the weights have a tokenizer. ``views``: any of ``"path"``, ``"node"``,
    ``"edge"`` (default: all, leaving out paths when there are more than ``max_paths``;
    asking for ``"path"`` then raises, pointing at ``top_k_paths``). Prompts are processed
    ``batch_size`` at a time (bounded memory), with a progress bar if ``progress``.

    >>> res = pe.attribute(pe.load("attn-only-2l"), "def f(x):", target=" ")   # doctest: +SKIP
    >>> res.residual_error() < 1e-5                                             # doctest: +SKIP
    True
    """
    tokens = _token_array(weights, tokens)
    B, n = tokens.shape
    chosen = views is not None
    views = _views(views)
    own_top = target is None and diff is None
    tgt = None if own_top else resolve_target(weights, target, diff, positions, (B, n))
    chunks, first, dropped = [], None, False
    for lo, hi in track(_batches(B, batch_size), progress, "attributing"):
        frozen = freeze(weights, tokens[lo:hi], device=device, dtype=dtype)
        if "path" in views and frozen.n_paths() > max_paths:
            if chosen:
                raise PathexpandError(
                    f"this model has {frozen.n_paths():,} paths, more than max_paths={max_paths:,}; "
                    "use pe.top_k_paths(weights, tokens, target=...) for the largest ones, or the "
                    "node and edge views (views=('node', 'edge'))"
                )
            views, dropped = tuple(v for v in views if v != "path"), True
        part = own_target(frozen, weights, positions) if own_top else tgt.for_batch(lo, hi)
        first = first or part
        chunks.append(_attribute_chunk(frozen, part, views))
    tgt = tgt or first
    res = _merge(chunks, tgt, tokens, views)
    res.model = getattr(weights, "name", None)
    if dropped:
        res.notes.append(
            f"{res.n_paths:,} paths > max_paths={max_paths:,}: no per-path view; "
            "pe.top_k_paths finds the largest ones with a certificate"
        )
    return res


def _views(views) -> tuple[str, ...]:
    if views is None:
        return VIEWS
    if isinstance(views, str):
        views = (views,)
    views = tuple(views)
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise PathexpandError(f"views must be among {VIEWS}, got {bad}")
    return views


def _token_array(weights, tokens) -> np.ndarray:
    """Ids ``[batch, pos]`` from ids, text or a token file (memory-mapped files stay so)."""
    import torch

    tokens = encode_tokens(weights, tokens)
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    a = token_array(tokens)
    return a if isinstance(a, np.memmap) else a.astype(np.int64)


def _batches(B: int, batch_size: int | None):
    step = B if batch_size is None else check_int("batch_size", batch_size, 1)
    return [(lo, min(B, lo + step)) for lo in range(0, B, step)]


def own_target(frozen: Frozen, weights, positions) -> Target:
    """The target "logit of the model's own top prediction" for the prompts of ``frozen``."""
    from .targets import resolve_positions

    pos = resolve_positions(positions, frozen.n_pos)
    top = frozen.logits_at(pos).argmax(-1).cpu().numpy()                   # [b, T]
    return resolve_target(weights, None, None, positions, (frozen.batch, frozen.n_pos), top=top)


# one chunk --------------------------------------------------------------------------------
def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _attribute_chunk(fz: Frozen, tgt: Target, views) -> dict:
    """Every view for one batch of prompts: arrays ``[rows, b, K]`` (numpy)."""
    import torch

    with torch.no_grad():
        return _attribute_chunk_inner(fz, tgt, views)


def _attribute_chunk_inner(fz: Frozen, tgt: Target, views) -> dict:
    import torch

    out: dict[str, Any] = {}
    c = fz.config
    sources = fz.sources()
    fields = {s.name: fz.source_field(s.name) for s in sources if s.entry is None}
    entry_of = {s.entry: s.name for s in sources if s.entry is not None}
    logits_val = tgt.of_logits(None, fz)                                   # [b, K]
    out["output"] = _np(logits_val)
    out["constants"] = {
        name: _np(tgt.of_logits(fz.constant(name), fz))
        for name in CONSTANTS
        if name == "b_U" or c.normalization == "LN"
    }
    out["scale"] = _np(_scale(fz, tgt, logits_val))

    # forward sweep: everything that reaches each node, pushed through it (from the recorded
    # pass: no second forward), and the LN-bias part of it for the LN-bias → node edges.
    # node outputs live in one buffer [b, N, n, d] (the edge products read it without copies)
    starts = np.cumsum([0] + [len(st.nodes) for st in fz.stages])
    buf = torch.empty(fz.batch, int(starts[-1]), fz.n_pos, c.d_model, dtype=fz.dtype, device=fz.device)
    O = []
    for st in fz.stages:
        buf[:, starts[st.index]: starts[st.index + 1]] = fz.node_outputs(st.index).movedim(0, 1)
        O.append(buf[:, starts[st.index]: starts[st.index + 1]].movedim(1, 0))  # [k, b, n, d] view
    ln_parts = [fz.ln_bias_outputs(st.index) if st.index in entry_of else None for st in fz.stages]
    # ends: each source's direct path and each node's edge into the logits
    ends, end_vals = [], []
    for s in sources:
        if s.entry is None:
            ends.append(s.name)
            end_vals.append(tgt.readout(fz, fields[s.name]))
    for st, outs in zip(fz.stages, O):
        ends.extend(st.nodes)
        end_vals.extend(tgt.readout(fz, outs).unbind(0))
    out["ends"] = tuple(ends)
    out["end_values"] = _np(torch.stack(end_vals))

    if "node" in views or "edge" in views:
        G = tgt.readout_vectors(fz)                                        # [K, b, n, d]
        node_vals = [None] * len(fz.stages)
        edge_rows: list[tuple[tuple[str, str], Any]] = []
        flat = buf.flatten(-2)                                             # [b, N, n·d]
        for st in reversed(fz.stages):
            node_vals[st.index] = torch.einsum("Kbnd,jbnd->jbK", G, O[st.index])
            g = fz.stage_T(G, st)                                          # [K, j, b, n, d]
            if "edge" in views:
                rows = []
                for s in sources:
                    if s.entry is None and s.birth < st.index:
                        v = torch.einsum("Kjbnd,bnd->jbK", g, fields[s.name])
                        rows.extend(((s.name, nd), v[i]) for i, nd in enumerate(st.nodes))
                    elif s.entry == st.index:
                        v = torch.einsum("Kbnd,jbnd->jbK", G, ln_parts[st.index])
                        rows.extend(((s.name, nd), v[i]) for i, nd in enumerate(st.nodes))
                i_end = int(starts[st.index])
                if i_end:
                    K, j = g.shape[0], g.shape[1]
                    left = g.movedim(2, 0).reshape(fz.batch, K * j, -1)            # [b, K·j, n·d]
                    v = torch.bmm(left, flat[:, :i_end].transpose(1, 2))           # [b, K·j, i]
                    v = v.view(fz.batch, K, j, i_end).permute(3, 2, 0, 1)          # [i, j, b, K]
                    earlier = [a for st1 in fz.stages[: st.index] for a in st1.nodes]
                    rows.extend(
                        ((a, nd), v[i, jj]) for i, a in enumerate(earlier) for jj, nd in enumerate(st.nodes)
                    )
                edge_rows = rows + edge_rows
            G = G + g.sum(1)
        out["nodes"] = fz.nodes
        out["node_values"] = _np(torch.cat(node_vals)) if fz.stages else np.zeros((0,) + out["output"].shape)
        if "edge" in views:
            to_logits = [((e, "logits"), None) for e in ends]
            out["edges"] = tuple(k for k, _ in edge_rows) + tuple(k for k, _ in to_logits)
            vals = [v for _, v in edge_rows]
            stacked = _np(torch.stack(vals)) if vals else np.zeros((0,) + out["output"].shape)
            out["edge_values"] = np.concatenate([stacked, out["end_values"]])

    if "path" in views:
        paths, vals = [], []
        for path, f in fz.iter_paths():
            paths.append(path)
            vals.append(tgt.readout(fz, f))
        order = _path_order(fz, paths)
        out["paths"] = tuple(paths[i] for i in order)
        out["path_values"] = _np(torch.stack([vals[i] for i in order])) if vals else None
    out["n_paths"] = fz.n_paths()
    return out


def _scale(fz: Frozen, tgt: Target, logits_val):
    """Per prompt: ``max_t ‖u_t‖₁ · max |logits[p_t]|``, at least ``max |output|``."""
    y = fz.logits_at(tgt.positions).abs().amax(-1)                         # [b, T]
    if tgt.U is not None:
        y = y * tgt.U.to(device=y.device, dtype=y.dtype).abs().sum(-1)
    s = y.amax(-1)
    s = s.maximum(logits_val.abs().amax(-1))
    return s.clamp_min(math.ldexp(1.0, -100))


def _path_order(fz: Frozen, paths) -> list[int]:
    """Rows in the order of the symbolic expansion when it is available, else depth-first."""
    try:
        from ..symbolic import expand_logits
    except ImportError:  # the symbolic layer is optional for numbers
        return list(range(len(paths)))
    index = {p: i for i, p in enumerate(paths)}
    order: list[int] = []
    for term in expand_logits(fz.arch):
        i = index.pop(tuple(term.path), None)
        if i is not None:
            order.append(i)
    return order + sorted(index.values())


def _merge(chunks: list[dict], tgt: Target, tokens, views) -> Attribution:
    shape = tgt.shape

    def cat(key, axis):
        parts = [ch[key] for ch in chunks]
        if any(p is None for p in parts):
            return None
        return np.concatenate(parts, axis=axis)

    def rows(a):  # [rows, B, K] → [rows, B, *shape]
        return None if a is None else a.reshape(a.shape[0], a.shape[1], *shape)

    first = chunks[0]
    res = Attribution(
        target_kind=tgt.kind,
        target_label=tgt.label,
        positions=tgt.positions,
        tokens=tokens,
        output=cat("output", 0).reshape(-1, *shape),
        constants={k: np.concatenate([ch["constants"][k] for ch in chunks]).reshape(-1, *shape)
                   for k in first["constants"]},
        ends=first["ends"],
        end_values=rows(cat("end_values", 1)),
        scale=cat("scale", 0),
        n_paths=first["n_paths"],
    )
    if "path" in views:
        res.paths = first["paths"]
        res.path_values = rows(cat("path_values", 1))
    if "node" in views:
        res.nodes = first["nodes"]
        res.node_values = rows(cat("node_values", 1))
    if "edge" in views:
        res.edges = first["edges"]
        res.edge_values = rows(cat("edge_values", 1))
    return res


# attention scores ---------------------------------------------------------------------------
@dataclass
class ScoreAttribution(TextTableHTML):
    """A head's pre-softmax score at (query, key) split into (query path × key path) terms.

    ``terms``: dicts with ``name`` (``q:direct · k:L0H0``), ``kind`` (direct, q_composition,
    k_composition, qk_composition), ``query_path``, ``key_path``, ``value`` (the term at
    (query, key); the values sum to ``score``), ``effect`` and ``softmax_invariant`` (the term
    is the same for every key of this query, so it cannot change where the head attends).
    ``effect = value − mean_k value_k`` over the other keys k the query sees: how much more
    the term favours this key than a typical other key (the softmax ignores what is common to
    all keys, so softmax-invariant terms have effect 0; 0 when the query sees one key). ``score`` is the model's own score (``/√d_head`` applied, as
    ``Cache.scores``).
    """

    head: str
    query: int
    key: int
    score: float
    pattern: float
    terms: list[dict]
    model: str | None = None

    def residual_error(self) -> float:
        """``|Σ terms − score| / max(|score|, Σ|terms|)``."""
        total = sum(t["value"] for t in self.terms)
        scale = max(abs(self.score), sum(abs(t["value"]) for t in self.terms), 1e-300)
        return abs(total - self.score) / scale

    def top(self, k: int = 10, *, by: str = "effect", invariant: bool = False) -> list[dict]:
        """The ``k`` terms that most raise attention to this key (largest ``by`` first:
        ``"effect"``, or ``"value"`` for the raw score terms); softmax-invariant ones left out
        unless ``invariant``."""
        if by not in ("effect", "value"):
            raise PathexpandError(f"by must be 'effect' or 'value', got {by!r}")
        rows = [t for t in self.terms if invariant or not t["softmax_invariant"]]
        return sorted(rows, key=lambda t: -t[by])[:k]

    def by_kind(self) -> dict[str, float]:
        """Sum of the terms of each composition kind."""
        out: dict[str, float] = {}
        for t in self.terms:
            out[t["kind"]] = out.get(t["kind"], 0.0) + t["value"]
        return out

    def ranking(self):
        """The terms as a ``Ranking`` (extra columns: query_path, key_path, softmax_invariant)."""
        from .ranking import Ranking

        rows = [
            dict(name=t["name"], kind=t["kind"], depth=len(t["query_path"]) + len(t["key_path"]) - 2,
                 path=(self.head,), value=t["value"], query_path=t["query_path"],
                 key_path=t["key_path"], effect=t["effect"], softmax_invariant=t["softmax_invariant"])
            for t in self.terms
        ]
        return Ranking(rows, total=self.score, title=f"{self.head} score at ({self.query}, {self.key})",
                       value_label="score term")

    def to_dict(self) -> dict:
        terms = [dict(t, query_path=list(t["query_path"]), key_path=list(t["key_path"])) for t in self.terms]
        return {"head": self.head, "query": self.query, "key": self.key, "score": self.score,
                "pattern": self.pattern, "residual_error": self.residual_error(), "terms": terms}

    def __str__(self) -> str:
        lines = [(f"{self.head} score at query {self.query}, key {self.key}: {self.score:.4g} "
                  f"(attention {self.pattern:.3f})")]
        for t in self.top(8):
            lines.append(f"  {t['name']:<40} {t['kind']:<15} {t['value']:+.4g}  effect {t['effect']:+.4g}")
        return "\n".join(lines)


def attribute_scores(
    weights: Weights,
    tokens,
    head: str,
    query: int,
    key: int,
    *,
    device=None,
    dtype=None,
) -> ScoreAttribution:
    """Split ``head``'s pre-softmax score at ``(query, key)`` into (query path × key path) terms.

    Earlier attention (and LN scales, MLP gates) frozen, the query input at position
    ``query`` is ``Σ_paths ln1(f_path)[query] W_Q`` + ``b_Q`` (+ ``ln1.b W_Q``, + shortformer
    ``W_pos[query] W_Q``), the key input likewise, and the score is the sum over every pair
    of ``q_path · k_path / √d_head``, exactly. Terms are the ``ScoreTerm``s of
    ``expand_scores(arch, head)`` (kinds and softmax invariance from there). One prompt.
    """
    import torch

    tokens = _token_array(weights, tokens)
    if tokens.shape[0] != 1:
        raise PathexpandError(f"attribute_scores explains one prompt; got a batch of {tokens.shape[0]}")
    from ..architecture import Architecture

    arch = Architecture.from_weights(weights)
    layer, h = arch.check_head(head)
    n = tokens.shape[1]
    for label, v in (("query", query), ("key", key)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not -n <= v < n:
            raise PathexpandError(f"{label} must be a position in [0, {n}), got {v!r}")
    query, key = int(query) % n, int(key) % n
    if weights.config.attention_dir == "causal" and key > query:
        raise PathexpandError(
            f"key {key} is after query {query}: the causal mask hides it (score -inf); pick key ≤ query"
        )
    with torch.no_grad():
        fz = freeze(weights, tokens, device=device, dtype=dtype)
        q_side = _score_side(fz, layer, h, "q", slice(query, query + 1))
        k_side = _score_side(fz, layer, h, "k", slice(None))
        qv = torch.stack(list(q_side.values()))[:, 0]                  # [Pq, e]
        kv = torch.stack(list(k_side.values()))                        # [Pk, pos, e]
        rows = torch.einsum("qe,kpe->qkp", qv, kv) / math.sqrt(weights.config.d_head)  # [Pq, Pk, pos]
        visible = torch.isfinite(fz.scores[0, layer, h, query])       # [pos]: keys the query sees
        others = visible.clone()
        others[key] = False
        values = rows[..., key].cpu().numpy()
        baseline = rows[..., others].mean(-1) if bool(others.any()) else rows[..., key]
        effects = (rows[..., key] - baseline).cpu().numpy()            # value − mean over other keys
        score = float(fz.scores[0, layer, h, query, key])
        pattern = float(fz.patterns[0, layer, h, query, key])
    qi = {p: i for i, p in enumerate(q_side)}
    ki = {p: i for i, p in enumerate(k_side)}
    terms = []
    for t in _score_terms(arch, head):
        i, j = qi.get(t.query_path), ki.get(t.key_path)
        if i is None or j is None:
            continue  # a source this model does not have (e.g. an LN bias of an LNPre model)
        terms.append(dict(name=t.name, kind=t.kind, query_path=t.query_path, key_path=t.key_path,
                          value=float(values[i, j]), effect=float(effects[i, j]),
                          softmax_invariant=bool(t.softmax_invariant)))
    if len(terms) != len(qi) * len(ki):
        raise PathexpandError(  # pragma: no cover - the two enumerations disagree
            f"{head}: {len(terms)} score terms named, {len(qi) * len(ki)} evaluated"
        )
    return ScoreAttribution(head, query, key, score, pattern, terms, getattr(weights, "name", None))


def _score_terms(arch, head):
    from ..symbolic import expand_scores

    return expand_scores(arch, head)


def _score_side(fz: Frozen, layer: int, h: int, side: str, positions: slice) -> dict:
    """Each path's contribution to the head's query (``side="q"``) or key input at
    ``positions``, projected: ``{path: [n_positions, d_head]}`` (paths into stage ``attn``
    of ``layer``; bias paths broadcast over positions)."""
    a = f"blocks.{layer}.attn"
    W = fz.p[a + (".W_Q" if side == "q" else ".W_K")][h]                  # [d, e]
    stop = next(st.index for st in fz.stages if st.kind == "attn" and st.layer == layer)
    out = {}
    ln = f"blocks.{layer}.ln1"
    n = len(range(*positions.indices(fz.patterns.shape[-1])))
    for path, f in fz.iter_paths(stop=stop):
        out[path] = fz.ln(f, ln)[0, positions] @ W
    if fz.config.positional == "shortformer":
        out[("pos",)] = fz.p["W_pos"][: fz.patterns.shape[-1]][positions] @ W
    if fz.arch.biases:
        if fz.config.normalization == "LN":
            out[(f"L{layer}.ln1.b",)] = (fz.p[ln + ".b"] @ W).expand(n, -1)
        b = "b_Q" if side == "q" else "b_K"
        out[(f"L{layer}H{h}.{b}",)] = fz.p[f"{a}.{b}"][h].expand(n, -1)
    return out
