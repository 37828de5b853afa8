"""Exact attribution on tokens: each path's contribution to a linear function of the logits.

With patterns, LayerNorm scales and MLP gates frozen (``numeric/frozen.py``) the target
``T = Σ_t u_t · logits[p_t]`` is ``Σ_paths ⟨r, M_k ⋯ M_1 S⟩ + constants`` exactly, over
sources ``S`` and node maps ``M`` (DESIGN.md §2). Three views, all exact:

- **path**: every path's contribution when there are at most ``max_paths``; past that, the
  ``max_paths`` largest by ``|contribution|`` from ``top_k_paths``' best-first search, with
  its certificate and the exact remainder (the sum over every unlisted path);
- **node**: for each head/MLP ``n``, the sum over every path through ``n``:
  ``⟨G_n, O_n⟩`` with ``O_n`` = everything that reaches ``n`` pushed through ``n``
  (forward) and ``G_n`` = everything from ``n``'s output to the target (backward);
- **edge**: for ``a → b``, the sum over every path in which ``b`` reads ``a`` directly
  (``a`` immediately before ``b`` on the path): ``⟨M_bᵀ G_b, O_a⟩``; ``a`` may be a source,
  ``b`` may be ``"logits"``. Into and out of every node the edges sum to the node.

No view enumerates paths except the path view. ``numeric.attribute_scores`` splits one
attention score the same way into (query path × key path) terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import PathexpandError, check_int, check_number
from ..names import parse_node, parse_term_name, path_info, term_name
from ..ranking import Ranking, Result
from ..symbolic import expand_logits
from . import norm
from ._progress import progress as track
from .frozen import CONSTANTS, Frozen, PathStructure, Scratch, freeze
from .targets import Target, own_target, resolve_target
from .tokens import as_tokens, batches
from .topk import TopK, search
from .weights import as_weights

__all__ = ["MAX_PATHS", "VIEWS", "Attribution", "attribute", "n_paths"]

VIEWS = ("path", "node", "edge")
# The most rows listed one by one: paths of a prompt's path view (past it, ``attribute`` lists
# the largest by search), and the terms of a symbolic listing (cut by depth past it; the
# report's ``_listable``, step 5 of ``pathexpand demo``). Different objects (a term is a path
# from ``embed``/``pos`` without biases, a path may start at any source), one limit.
MAX_PATHS = 20_000


def n_paths(model) -> int:
    """Number of paths from every source (``embed``, ``pos``, each ``b_V``, ``b_O``, LN and MLP
    bias) to the logits: ``Frozen.n_paths``, the count ``attribute`` compares with ``max_paths``,
    from the weights' shape alone (no forward pass)."""
    return PathStructure(as_weights(model)).n_paths()


# result -------------------------------------------------------------------------------------
@dataclass(repr=False)  # repr: Result's one-line summary
class Attribution(Result):
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
    path_search: TopK | None = None     # past max_paths: the search that listed the paths
    path_remainder: np.ndarray | None = None   # then: Σ over unlisted paths [batch, *shape]
    model: str | None = None
    notes: list[str] = field(default_factory=list)

    # checks ------------------------------------------------------------------------------
    def residual_error(self) -> float:
        """``max |Σ contributions + constants − output| / scale``.

        The sum is over every path when paths were enumerated, else over the partition of
        all paths by their last step (``ends``: each source's direct path and each node's
        edge into the logits). The error is relative, per prompt, to the size of what was
        summed: the largest of ``Σ |term| + Σ |constant|`` (terms that cancel to a near-zero
        output are still large), ``|output|`` and ``‖u‖₁ · |logit|`` of the logits the target
        reads (``scale``).
        """
        parts = self.path_values if self.path_values is not None else self.end_values
        if self.path_remainder is not None:
            parts = np.concatenate([parts, self.path_remainder[None]])
        total = parts.sum(0) + sum(self.constants.values())
        err = np.abs(total - self.output)
        err = err.reshape(err.shape[0], -1).max(-1)
        size = np.abs(parts).sum(0) + sum(np.abs(c) for c in self.constants.values())
        size = size.reshape(size.shape[0], -1).max(-1)
        return float((err / np.maximum(self.scale, size)).max())

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
    @property
    def views(self) -> tuple[str, ...]:
        """The views this attribution holds, among ``path``, ``node``, ``edge``."""
        have = (("path", self.paths), ("node", self.nodes), ("edge", self.edges))
        return tuple(v for v, rows in have if rows is not None)

    def ranking(self, view: str | None = None) -> Ranking:
        """A ``Ranking`` of one view (default: paths when enumerated, else nodes); ``value`` is
        the contribution, ``share = value / output``. Rows keep the view's order; ``.top(k)``
        sorts by ``|value|``. A path view listed by search (past ``max_paths``) has the title of
        ``path_search.ranking()`` ("largest paths found (not certified) …" until proven).

        Paths: depth = heads and MLPs passed. Nodes (``kind`` head/mlp) and edges (``kind``
        like ``head→head``, ``source→logits``): depth = heads and MLPs the row names.
        """
        view = self._view(view)
        if view == "path":
            rows = [dict(zip(("name", "kind", "depth"), path_info(p)), path=p, value=float(v))
                    for p, v in zip(self.paths, self.summarize(self.path_values))]
        elif view == "node":
            rows = [dict(name=n, kind=parse_node(n).kind, depth=1, path=(n,), value=float(v))
                    for n, v in zip(self.nodes, self.summarize(self.node_values))]
        else:
            rows = [dict(name=f"{a} → {b}", kind=_edge_kind(a, b), path=(a, b), value=float(v),
                         depth=sum(parse_node(x).kind in ("head", "mlp") for x in (a, b)))
                    for (a, b), v in zip(self.edges, self.summarize(self.edge_values))]
        shares, notes = self._shares(view)
        title = f"{view} contributions to {self.target_label}"
        if view == "path" and self.path_search is not None:   # listed by search: its title rule
            notes, title = (*self._path_notes(), *notes), self.path_search.title()
        return Ranking(rows, total=self.total if shares else None, shares=shares,
                       title=title, value_label="contribution",
                       notes=(*notes, *self.notes), of=f"{view}s", by_magnitude=True)

    def _shares(self, view: str) -> tuple[bool, tuple[str, ...]]:
        """A share column only where the parts add up to the whole: the paths (with the
        constants) sum to the output; heads and edges overlap (a path passes several)."""
        if view != "path":
            return False, ("no share column: a path passes several heads and edges, so these "
                           "overlap and do not add up to the output",)
        if self.target_kind == "logits" or not self.total > 0:
            why = ("the value is a root-mean-square over logits" if self.target_kind == "logits"
                   else f"the output is {self.total:.4g}, and fractions of a negative or zero "
                        "whole would flip sign")
            return False, (f"no share column: {why}",)
        const = sum(float(self.summarize(v[None])[0]) for v in self.constants.values())
        if self.path_search is not None:
            why = (f"share = contribution / output ({self.total:.4g}); the listed paths, the "
                   f"remainder ({self.remainder:+.4g}) and the constants ({const:+.4g}) sum to it exactly")
            return True, (why,)
        return True, (f"share = contribution / output ({self.total:.4g}); the paths and the "
                      f"constants ({const:+.4g}) sum to it exactly",)

    @property
    def paths_complete(self) -> bool:
        """True when the path view lists every path (none left in a remainder)."""
        return self.paths is not None and len(self.paths) == self.n_paths

    @property
    def remainder(self) -> float:
        """Headline value of the sum over every path the path view does not list (0 when it
        lists them all): total − listed − constants, from the exact end-partition of all paths."""
        if self.path_remainder is None:
            return 0.0
        return float(self.summarize(self.path_remainder[None])[0])

    def _path_notes(self) -> tuple[str, ...]:
        """What a streamed path view is: the search's status and the remainder."""
        if self.path_search is None:
            return ()
        n_left = self.n_paths - len(self.paths)
        listed = (f"{len(self.paths):,} of {self.n_paths:,} paths listed (the largest found by "
                  f"best-first search): {self.path_search.status()}")
        return listed, f"remainder: the {n_left:,} unlisted paths sum to {self.remainder:+.4g}"

    def rankings(self) -> tuple[Ranking, ...]:
        """Every view held, as rankings (what ``path_graph`` reads)."""
        return tuple(self.ranking(v) for v in self.views)

    def _view(self, view: str | None) -> str:
        if view is None:
            return "path" if self.paths is not None else "node"
        if view not in VIEWS:
            raise PathexpandError(f"view must be one of {VIEWS}, got {view!r}")
        if view not in self.views:
            why = (f"{self.n_paths:,} paths > max_paths; ask for views=('path', ...) to list the "
                   "largest ones") if view == "path" else f"ask for views=('{view}', ...)"
            raise PathexpandError(f"this attribution has no {view} view ({why})")
        return view

    def summary(self) -> str:
        return (f"attribution of {self.target_label} at position(s) {list(self.positions)}: "
                f"output {self.total:.4g}, residual error {self.residual_error():.1e}")

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
        for view in self.views:
            out[view + "s"] = self.top(k or 10**9, view=view).to_records()
        if self.path_search is not None:
            out["path_search"] = {key: v for key, v in self.path_search.to_dict().items()
                                  if key not in ("paths", "notes")}
            out["path_remainder"] = self.remainder
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def __str__(self) -> str:
        lines = [self.summary()]
        for view in self.views:
            lines.append(f"  top {view}s:")
            for r in self.top(5, view=view):
                lines.append(f"    {r.name:<28} {r.value:+.4g}")
        return "\n".join(lines)


def _as_path(path, paths) -> tuple[str, ...]:
    key = tuple(path) if isinstance(path, tuple) else parse_term_name(path)
    if key in paths:
        return key
    raise PathexpandError(f"path {term_name(key)!r} is not among this attribution's paths; "
                          "names look like 'L1H0∘L0H1', 'pos:L1H0' or 'direct'")


def _edge_kind(a: str, b: str) -> str:
    ka = parse_node(a).kind
    kb = "logits" if b == "logits" else parse_node(b).kind
    return f"{ka}→{kb}"


# attribute ----------------------------------------------------------------------------------
def attribute(
    model,
    tokens,
    *,
    target=None,
    diff=None,
    positions=None,
    views: Iterable[str] | None = None,
    max_paths: int | None = None,
    budget_seconds: float | None = 60.0,
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
    ``"edge"`` (default: all, leaving out paths when there are more than ``max_paths``,
    default ``MAX_PATHS``; the count is ``n_paths``).
    The path view lists every path when there are at most ``max_paths``; asked for past that,
    it lists the ``max_paths`` largest by ``|contribution|`` to the target summed over prompts
    and positions (the search of ``top_k_paths(..., k=max_paths)``, run once: the same rows,
    certificate and ranking title; stopped after ``budget_seconds``; its status in
    ``path_search`` says how many are proven the largest) and the exact sum of the rest in
    ``path_remainder``: listed + remainder + constants = output. Prompts are processed
    ``batch_size`` at a time (bounded memory), with a progress bar if ``progress``. ``model``
    is anything ``pe.load`` takes; ``tokens`` text, ids or a ``.npy`` path.

    >>> res = pe.attribute(pe.load("attn-only-2l"), "def f(x):", target=" ")   # doctest: +SKIP
    >>> res.residual_error() < 1e-5                                             # doctest: +SKIP
    True
    """
    weights = as_weights(model)
    tokens = as_tokens(weights, tokens)
    max_paths = MAX_PATHS if max_paths is None else max_paths
    check_int("max_paths", max_paths, 0)
    B, n = tokens.shape
    chosen = views is not None
    views = _views(views)
    own_top = target is None and diff is None
    tgt = None if own_top else resolve_target(weights, target, diff, positions, (B, n))
    if budget_seconds is not None:
        check_number("budget_seconds", budget_seconds)
    stream = dropped = False
    if "path" in views and n_paths(weights) > max_paths:
        stream, dropped = chosen, not chosen     # asked for: list the largest; else leave out
        views = tuple(v for v in views if v != "path")
    chunks, first = [], None
    for lo, hi in track(batches(B, batch_size), progress, "attributing"):
        frozen = freeze(weights, tokens[lo:hi], device=device, dtype=dtype)
        part = own_target(frozen, weights, positions) if own_top else tgt.for_batch(lo, hi)
        first = first or part
        chunks.append(_attribute_chunk(frozen, part, views))
    tgt = tgt or first
    res = _merge(chunks, tgt, tokens, views)
    res.model = getattr(weights, "name", None)
    if dropped:
        res.notes.append(
            f"{res.n_paths:,} paths > max_paths={max_paths:,}: no per-path view; "
            "views=('path', ...) or pe.top_k_paths lists the largest ones with a certificate"
        )
    if stream:   # one batch: its frozen model holds every prompt, so the search reuses it
        _stream_paths(res, weights, tokens, None if own_top else tgt, positions, max_paths,
                      budget_seconds, device, dtype, progress,
                      frozen=frozen if len(chunks) == 1 else None)
    return res


def _stream_paths(res: Attribution, weights, tokens, tgt, positions, k, budget_seconds, device,
                  dtype, progress, frozen=None) -> None:
    """The path view past ``max_paths``: the ``k`` largest paths by the best-first search of
    ``top_k_paths`` on every prompt at once, and the remainder ``Σ ends − Σ listed``
    (``frozen``: the model already frozen on all of ``tokens``, else frozen here)."""
    import time

    import torch

    if k < 1:
        raise PathexpandError("max_paths must be >= 1 to list the largest paths")
    start = time.monotonic()
    with torch.no_grad():
        fz = frozen if frozen is not None else freeze(weights, tokens, device=device, dtype=dtype)
        tgt = own_target(fz, weights, positions) if tgt is None else tgt
        if tgt.U is None:
            raise PathexpandError(
                f"this model has {res.n_paths:,} paths, more than max_paths={k:,}; past that the "
                "path view lists the largest by |contribution| to one number, and target='logits' "
                "is many: give a token, a difference or a vector, raise max_paths, or ask for "
                "views=('node', 'edge')"
            )
        found = search(fz, tgt, k, None, budget_seconds, progress, start)
    res.path_search = found
    res.paths = tuple(tuple(p) for p in found.paths)
    res.path_values = found.path_values.reshape(len(found.paths), *res.output.shape)
    res.path_remainder = res.end_values.sum(0) - res.path_values.sum(0)


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
    logits_val = tgt.of_logits(None, fz)                                   # [b, K]
    out["output"] = _np(logits_val)
    out["constants"] = {
        name: _np(tgt.of_logits(fz.constant(name), fz))
        for name in CONSTANTS
        if name == "b_U" or norm.has_bias(c.normalization)
    }
    out["scale"] = _np(_scale(fz, tgt, logits_val))

    # forward sweep, from the recorded pass (no second forward): one buffer [R, b, n, d] of every
    # field written into the residual stream, in order of birth — the sources' fields (embed,
    # pos, bias sources) and each node's output (everything that reaches it pushed through it).
    # What stage s reads is then the prefix buf[:first[s]]; the edge products read it in place.
    plain = [s for s in sources if s.entry is None]
    order = [s.name for s in plain if s.birth < 0]
    first = []
    for st in fz.stages:
        first.append(len(order))
        order += [*st.nodes, *(s.name for s in plain if s.birth == st.index)]
    row = {name: i for i, name in enumerate(order)}
    b, n, d = fz.batch, fz.n_pos, c.d_model
    buf = torch.empty(len(order), b, n, d, dtype=fz.dtype, device=fz.device)
    for s in plain:
        buf[row[s.name]] = fz.source_field(s.name)
    for st in fz.stages:
        fz.node_outputs(st.index, out=buf[first[st.index]: first[st.index] + len(st.nodes)])
    ln_parts = {s.name: fz.ln_bias_outputs(s.name) for s in sources if s.entry is not None}
    # ends: each source's direct path and each node's edge into the logits
    ends = [s.name for s in plain] + list(fz.nodes)
    read = torch.cat([tgt.readout(fz, buf[i: i + 64]) for i in range(0, len(order), 64)])   # [R, b, K]
    out["ends"] = tuple(ends)
    out["end_values"] = _np(read[[row[e] for e in ends]])

    if "node" in views or "edge" in views:
        G = tgt.readout_vectors(fz)                                        # [K, b, n, d]
        K = G.shape[0]
        flat = buf.view(len(order), b, n * d)                              # [R, b, n·d]
        node_vals = [None] * len(fz.stages)
        edges = _EdgeBlocks(flat, K, b) if "edge" in views else None
        edge_v, edge_ln = {}, {}     # stage → ⟨M_nodeᵀ G, field⟩ [i0, j, b, K]; LN-bias edges
        # G is zero outside the target positions until the sweep crosses a stage with heads
        # (MLPs act position by position): until then work on those positions only.
        pos = sorted(set(tgt.positions))
        sparse = len(pos) < n
        scratch = Scratch()      # reused output buffers: each stage's g is used up before the next
        for st in reversed(fz.stages):
            i0, j = first[st.index], len(st.nodes)
            sparse = sparse and not st.has_heads
            if sparse:
                idx = torch.tensor(pos, device=G.device)
                P = len(pos)
                Gp = G.index_select(2, idx)                                # [K, b, P, d]
                fl = buf.index_select(2, idx).view(len(order), b, P * d)   # [R, b, P·d]
            else:
                Gp, P, fl = G, n, flat
            Gt = Gp.reshape(K, b, P * d).permute(1, 2, 0)                  # [b, P·d, K]
            node_vals[st.index] = torch.bmm(fl[i0: i0 + j].transpose(0, 1), Gt).transpose(0, 1)  # [j, b, K]
            g = fz.stage_T(Gp, st, positions=pos if sparse else None, scratch=scratch)   # [K, j, b, P, d]
            if edges is not None:
                edge_ln[st.index] = [(s, torch.einsum("Kbnd,jbnd->jbK", G, ln_parts[s.name]))
                                     for s in sources if s.entry == st.index]   # LN bias → readers
                if sparse:   # a few positions: its own product, now
                    edge_v.update(edges.flush())
                    left = g.permute(2, 0, 1, 3, 4).reshape(b, K * j, P * d)  # [b, K·j, P·d]
                    edge_v[st.index] = _by_node(_edge_products(left, fl[:i0]), j, K)
                else:        # every field it reads: one product with the stages swept next
                    edge_v.update(edges.add(st.index, g, i0))
            if sparse:   # scatter the stage's transposed outputs back at the target positions
                G = (G.index_add_ if G.is_contiguous() else G.index_add)(2, idx, g.sum(1))
            else:
                G = G.add_(g.sum(1)) if G.is_contiguous() else G + g.sum(1)
        out["nodes"] = fz.nodes
        out["node_values"] = _np(torch.cat(node_vals)) if fz.stages else np.zeros((0,) + out["output"].shape)
        if edges is not None:
            edge_v.update(edges.flush())
            blocks, names = [], []
            for st in fz.stages:
                blk, nm = _stage_edges(fz, st, edge_v[st.index], edge_ln[st.index], plain, row, b, K)
                blocks += blk
                names += nm
            out["edges"] = tuple(names) + tuple((e, "logits") for e in ends)
            stacked = _np(torch.cat(blocks)) if blocks else np.zeros((0,) + out["output"].shape)
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


# edges ------------------------------------------------------------------------------------
_EDGE_BLOCK_ROWS = 40   # transposed node maps batched into one product with the field buffer


def _edge_products(left, fields):
    """``⟨left_r, field_i⟩`` per prompt: ``left`` ``[b, r, P·d]`` (transposed node maps applied
    to ``G``), ``fields`` ``[i, b, P·d]`` → ``[b, r, i]``."""
    import torch

    return torch.bmm(left, fields.permute(1, 2, 0))


def _by_node(v, j: int, K: int):
    """Products ``[b, K·j, i]`` of one stage's ``j`` nodes as ``[i, j, b, K]`` (None if ``i = 0``)."""
    b, _, i = v.shape
    return v.view(b, K, j, i).permute(3, 2, 0, 1) if i else None


class _EdgeBlocks:
    """The edge products of several consecutive stages in one GEMM over the fields they all
    read: a stage reads the prefix ``fields[:i0]`` of the buffer, so stages swept one after the
    other share the shorter prefix, and reading it once for all of them (``flush``) reads the
    buffer — which bounds this product — a few times instead of once per stage."""

    def __init__(self, flat, K: int, b: int):
        self.flat, self.K, self.b = flat, K, b
        self.buf = None
        self.pending: list = []          # (stage, offset, j, i0) in sweep order
        self.rows = 0

    def add(self, stage: int, g, i0: int) -> dict:
        """Queue stage output ``g`` ``[K, j, b, n, d]`` (copied) reading ``fields[:i0]``; returns
        the products of the stages this pushed out (``flush``)."""
        K, j = g.shape[:2]
        done = {}
        if self.pending and self.rows + K * j > _EDGE_BLOCK_ROWS:
            done = self.flush()
        if not i0:
            done[stage] = None
            return done
        need = max(_EDGE_BLOCK_ROWS, K * j)
        if self.buf is None or self.buf.shape[1] < need:
            self.buf = g.new_empty(self.b, need, self.flat.shape[-1])     # [b, M, n·d]
        self.buf[:, self.rows: self.rows + K * j].view(self.b, K, j, *g.shape[-2:]).copy_(
            g.permute(2, 0, 1, 3, 4))
        self.pending.append((stage, self.rows, j, i0))
        self.rows += K * j
        return done

    def flush(self) -> dict:
        """``{stage: [i0, j, b, K]}`` for every queued stage: one product over the prefix they
        all read, one per stage for the rest of its prefix."""
        import torch

        if not self.pending:
            return {}
        K, fl = self.K, self.flat
        common = min(i0 for *_, i0 in self.pending)
        shared = _edge_products(self.buf[:, : self.rows], fl[:common])   # [b, rows, common]
        out = {}
        for stage, off, j, i0 in self.pending:
            v = shared[:, off: off + K * j]
            if i0 > common:
                rest = _edge_products(self.buf[:, off: off + K * j], fl[common:i0])
                v = torch.cat([v, rest], 2)                                # [b, K·j, i0]
            out[stage] = _by_node(v, j, K)
        self.pending, self.rows = [], 0
        return out


def _stage_edges(fz: Frozen, st, v, ln, plain, row, b: int, K: int):
    """The edge rows into the nodes of stage ``st`` and their names: from every source field it
    reads, from each LN bias it reads (``ln``: (source, values)), from every earlier node."""
    blk, nm = [], []
    srcs = [s.name for s in plain if s.birth < st.index]
    if srcs:
        blk.append(v[[row[a] for a in srcs]].reshape(-1, b, K))
        nm += [(a, nd) for a in srcs for nd in st.nodes]
    for s, vals in ln:
        blk.append(vals)
        nm += [(s.name, nd) for nd in s.readers]
    earlier = [a for st1 in fz.stages[: st.index] for a in st1.nodes]
    if earlier:
        blk.append(v[[row[a] for a in earlier]].reshape(-1, b, K))
        nm += [(a, nd) for a in earlier for nd in st.nodes]
    return blk, nm


def _scale(fz: Frozen, tgt: Target, logits_val):
    """Per prompt: ``max_t ‖u_t‖₁ · max |logits[p_t]|``, at least ``max |output|``."""
    y = fz.logits_at(tgt.positions).abs().amax(-1)                         # [b, T]
    if tgt.U is not None:
        y = y * tgt.U.to(device=y.device, dtype=y.dtype).abs().sum(-1)
    s = y.amax(-1)
    s = s.maximum(logits_val.abs().amax(-1))
    return s.clamp_min(math.ldexp(1.0, -100))


def _path_order(fz: Frozen, paths) -> list[int]:
    """Rows in the order of the symbolic expansion (paths it does not list: depth-first, last)."""
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




# per source position ----------------------------------------------------------------------
__all__ += ["SourceContributions", "source_contributions"]   # kept here: appended with the section


@dataclass(repr=False)  # repr: Result's one-line summary
class SourceContributions(Result):
    """Each path's contribution to ``target`` split by the position of its source token:
    ``values[j, i]`` ``[pos, paths]`` is path ``i`` with its source field kept at position ``j``
    only; column ``i`` sums to path ``i``'s value in ``attribute`` (same target)."""

    paths: tuple[tuple[str, ...], ...]
    values: np.ndarray
    tokens: np.ndarray
    target_label: str
    positions: tuple[int, ...]

    def column(self, path) -> np.ndarray:
        """One path's contributions by source position ``[pos]`` (a tuple or a name like ``"L1H0∘L0H1"``)."""
        return self.values[:, self.paths.index(_as_path(path, self.paths))]

    def ranking(self) -> Ranking:
        """One row per (path, source position), named ``"L1H0∘L0H1 @ 3"``; ``.top(k)`` by ``|value|``."""
        rows = []
        for i, p in enumerate(self.paths):
            name, kind, depth = path_info(p)
            rows.extend(dict(name=f"{name} @ {j}", kind=kind, depth=depth, path=p, value=float(v),
                             position=j, token=int(self.tokens[j]))
                        for j, v in enumerate(self.values[:, i]))
        why = f"each path's rows sum to its value in pe.attribute (positions {list(self.positions)})"
        return Ranking(rows, title=f"path contributions to {self.target_label} by source position",
                       value_label="contribution", shares=False, by_magnitude=True, notes=(why,))

    def summary(self) -> str:
        return (f"{len(self.paths)} path(s) split over {len(self.tokens)} source positions: "
                f"contributions to the {self.target_label}")


def source_contributions(
    model,
    tokens,
    paths,
    *,
    target=None,
    diff=None,
    positions=None,
    device=None,
    dtype=None,
) -> SourceContributions:
    """Each path's contribution split by the position ``j`` of its source: ``[pos, paths]``.

    Exact with patterns frozen: a path is linear in its source field ``S`` ``[pos, d]``, so
    ``S ⊙ e_j`` (the field kept at position ``j`` only) gives position ``j``'s part, and the
    parts sum to the path's value in ``attribute``. ``tokens``: one prompt (text or ids);
    ``target``/``diff``/``positions`` as in ``attribute`` (several positions: their mean, as
    ``attribute``'s headline value); ``target="logits"`` is many numbers and is refused.
    ``paths``: tuples like ``("embed", "L0H1", "L1H2")`` or names like ``"L1H2∘L0H1"``; a
    source must be a field over positions (token, position or a bias row, not a LayerNorm
    bias or a constant).
    """
    import torch

    weights = as_weights(model)
    ids = as_tokens(weights, tokens)
    if ids.shape[0] != 1:
        raise PathexpandError(f"give one prompt, got a batch of {ids.shape[0]}")
    keys = [tuple(p) if isinstance(p, (tuple, list)) else parse_term_name(p) for p in paths]
    with torch.no_grad():
        fz = freeze(weights, ids, device=device, dtype=dtype)
        if target is None and diff is None:
            tgt = own_target(fz, weights, positions)
        else:
            tgt = resolve_target(weights, target, diff, positions, tuple(ids.shape))
        if tgt.U is None:
            raise PathexpandError("target='logits' is one number per vocabulary entry; a split by "
                                  "source position needs one: give a token, a difference or a vector")
        n = fz.n_pos
        step = max(1, (1 << 24) // max(1, n * fz.config.d_model))   # [step, 1, n, d] at a time
        cols = []
        for path in keys:
            src, _ = fz.check_path(path)
            if path[0] in CONSTANTS or src.entry is not None:
                raise PathexpandError(f"path {term_name(path)!r} has no source position: "
                                      f"{path[0]!r} is a constant or a LayerNorm bias")
            field = fz.source_field(path[0])                                   # [1, n, d]
            parts = []
            for lo in range(0, n, step):
                mask = torch.eye(n, dtype=field.dtype, device=field.device)[lo: lo + step]   # [j, n]
                f = field.unsqueeze(0) * mask[:, None, :, None]                # [j, 1, n, d]
                for node in path[1:]:
                    f = fz.node(f, node)                                       # [j, 1, n, d]
                parts.append(tgt.readout(fz, f)[:, 0].mean(-1))                # [j]
            cols.append(_np(torch.cat(parts)))
    values = np.stack(cols, axis=1) if cols else np.zeros((n, 0))             # [pos, paths]
    return SourceContributions(tuple(keys), values, np.asarray(ids[0]), tgt.label, tgt.positions)
