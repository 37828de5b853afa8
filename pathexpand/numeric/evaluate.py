"""``evaluate``: a data-free number for every term of an expansion, as a ``Ranking``.

Each term's virtual weight matrix is its chain from the circuit builder (``numeric.circuits``),
e.g. ``("embed", "L0H1", "L1H0")`` → ``W_E W_OV^{0,1} W_OV^{1,0} W_U``; score terms
``X_q W_Q W_Kᵀ X_kᵀ`` (before ``/√d_head``). Metrics, all computed by ``Factored``:

* ``frobenius`` — ‖M‖_F;
* ``spectral`` — σ_max(M);
* ``copying`` — the paper's Re Σλ / Σ|λ| over M's eigenvalues, for terms that map a space to
  itself (tokens to logits ``W_E ⋯ W_U``, embed×embed score terms, and in residual scope the
  terms that start at the residual stream; NaN for bias rows and mixed token/position terms),
  with ``positive_share`` = Σ_{Re λ>0}|λ| / Σ|λ| — the same statistic as ``copying_scores``.

Speed: terms whose paths pass the same layers are one ``Factored`` whose heads sit on
broadcast axes (every combination at once), so ``Factored`` shares each sub-product among the
terms that have it (a depth-2 group costs one Gram per earlier and per later head). The
vocabulary-sized ends are reduced once per call: for the norms ``W_E``/``W_U`` are replaced by
``Factored.thin`` roots (``d_model × d_model``, same singular values); for eigenvalues the
chain is closed through ``W_U W_E`` (``d_model × d_model``), formed once. No ``vocab × vocab``
matrix is built.

``baseline="random"`` adds, per term, the mean metric over ``n_null`` draws in which every
weight factor other than the embeddings and unembedding is replaced by a Gaussian matrix of
the same shape and Frobenius norm (seeded), and the ratio value / null: how much more aligned
the term's weights are than chance.

Data-free caveats, stated in the ranking's notes: MLP paths use the linearised MLP
``W_in W_out`` (gates = 1; ``mlp="refuse"`` raises instead); normalization as the circuit
builder says (readers ``C diag(w) W``, writers ``W C``, no per-position ``1/σ``); the remainder of
a depth-limited expansion is not evaluated.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from ..architecture import Architecture
from ..errors import PathexpandError, check_int
from ..names import REMAINDER, parse_node
from ..ranking import Ranking, Row
from ..symbolic import ScoreTerm, Term
from ._progress import progress as track
from .circuits import MLP_MODES, SCOPES, Circuits, _Axes, _nodes
from .factored import Factored
from .weights import as_weights

__all__ = ["METRICS", "copying_statistics", "evaluate"]

METRICS = ("frobenius", "spectral", "copying")
MAX_TERMS = 2_000_000
_MEMO_ELEMENTS = 2**26   # shared Grams kept per evaluate() call (512 MB in float64), then dropped


def evaluate(
    expansion,
    model,
    metric: str = "frobenius",
    *,
    scope: str = "full",
    positional: bool = False,
    baseline: str | None = None,
    mlp: str = "linear",
    n_null: int = 16,
    seed: int = 0,
    batch_size: int = 2048,
    offset: int | None = None,
    progress: bool = False,
    device=None,
    dtype=None,
) -> Ranking:
    """One ``Ranking`` row per term of ``expansion`` (an ``Expansion``, selection or list of terms).

    ``model`` is anything ``pe.load`` takes. ``metric``: ``"frobenius"``, ``"spectral"`` or
    ``"copying"`` (module docstring). ``scope="residual"`` evaluates the residual-to-residual part
    (no ``W_E``/``W_pos``/``W_U``). ``positional=True`` keeps only the terms whose every source is
    ``pos``: for scores ``(W_pos ⋯) W_QK (W_pos ⋯)ᵀ``, ``n_ctx × n_ctx`` positional attention
    structure (previous-token heads show here). ``batch_size`` bounds the terms evaluated at
    once. ``offset``: for score terms of a rotary model, the key position minus the query
    position ``Δ = j − i`` their rotation ``R̃_Δ`` is taken at. Rows are sorted by value, largest
    first.
    """
    w = as_weights(model)
    if metric not in METRICS:
        raise PathexpandError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if scope not in SCOPES:
        raise PathexpandError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    if baseline not in (None, "random"):
        raise PathexpandError(f"baseline must be None or 'random', got {baseline!r}")
    if mlp not in MLP_MODES:
        raise PathexpandError(f"mlp must be one of {list(MLP_MODES)}, got {mlp!r}")
    check_int("n_null", n_null, 1), check_int("batch_size", batch_size, 1), check_int("seed", seed, 0)
    arch = _check_arch(expansion, w)
    terms = _terms(expansion, positional, arch)
    if offset is not None and not any(isinstance(t, ScoreTerm) for t in terms):
        raise PathexpandError("offset= is for score terms (pe.expand_scores); logit terms have no query–key product")
    stack = metric != "copying" and baseline is None  # norms: bias sources share one chain
    ev = _Evaluator(Circuits(w, offset=offset, device=device, dtype=dtype, mlp_product=baseline is None), metric,
                    scope, mlp, baseline, int(n_null), int(seed))

    rows: list[Row | None] = [None] * len(terms)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, term in enumerate(terms):
        if (term.is_remainder or (scope == "residual" and _source(term) == "b_U")
                or (metric == "copying" and not _maps_a_space_to_itself(term, scope, w.config))):
            rows[i] = _row(term, math.nan, {"positive_share": math.nan} if metric == "copying" else {})
        else:
            groups[_signature(term, stack)].append(i)
    chunks = [(sig, part) for sig, members in groups.items()
              for part in _chunks(sig, members, terms, int(batch_size) // (n_null if baseline else 1))]
    for sig, members in track(chunks, progress, f"evaluating {len(terms)} terms"):
        values, extra = ev.group(sig, [terms[i] for i in members])
        for j, i in enumerate(members):
            rows[i] = _row(terms[i], values[j], {k: v[j] for k, v in extra.items()})
    target = getattr(expansion, "target", None) or "terms"
    scores = any(isinstance(t, ScoreTerm) for t in terms)
    title = f"{metric} of {'logit' if target == 'logits' else target} terms" + (
        f" — {w.name}" if w.name else "")
    return Ranking(rows, title=title, value_label=metric,
                   notes=_notes(metric, scope, w, terms, baseline, n_null, seed, offset),
                   shares=False, of="score_terms" if scores else "paths").sort_by("value")


def copying_statistics(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's copying score ``Re Σλ / Σ|λ|`` and the positive share ``Σ_{Re λ>0}|λ| / Σ|λ|``
    over the last axis of eigenvalues ``λ`` (1 for a pure copier, −1 for an anti-copier)."""
    mag = lam.abs()
    total = mag.sum(-1)
    return lam.real.sum(-1) / total, (mag * (lam.real > 0)).sum(-1) / total


def _maps_a_space_to_itself(term, scope: str, config) -> bool:
    """Whether a term's matrix maps one space to itself, so its eigenvalues mean copying: a logit
    path from the tokens to the logits (``d_vocab_out = d_vocab``) or, in residual scope, from
    the residual stream; a score term whose both sides start at the tokens (or, in residual
    scope, at the residual stream). Bias rows, positions against tokens: no."""
    ends = ("embed", "pos") if scope == "residual" else ("embed",)
    if isinstance(term, ScoreTerm):
        return term.query_path[0] in ends and term.key_path[0] in ends
    return term.path[0] in ends and (scope == "residual" or config.d_vocab == config.d_vocab_out)


# grouping -----------------------------------------------------------------------------------------
def _source(term) -> str:
    return term.query_path[0] if isinstance(term, ScoreTerm) else term.path[0]


_RAW_PARAMS = ("ln1.b", "ln2.b", "ln_final.b")


def _class(source: str, stack: bool):
    """How a side's source enters its group: alone (its name), or — for the norms — stacked on a
    broadcast axis with the other bias rows that its first reader reads the same way
    (``("rows", reads raw?)``), so a group's chain after the source is built (and its Grams
    made) once for all of them."""
    if not stack or source in ("embed", "pos", "b_U", REMAINDER):
        return source
    param = parse_node(source).param
    if param in ("b_Q", "b_K"):  # the scored head's own biases skip W_Q/W_K: alone
        return source
    return ("rows", param in _RAW_PARAMS)


def _shape_of(path, stack: bool) -> tuple:
    """A path's source class and, per node, its kind and layer (the heads are what a group varies)."""
    return (_class(path[0], stack), tuple((k, l) for k, l, _ in _nodes(path)))


def _heads_of(path) -> list[int]:
    return [h for k, _, h in _nodes(path) if k == "head"]


def _signature(term, stack: bool = False) -> tuple:
    if isinstance(term, ScoreTerm):
        return ("score", term.head, _shape_of(term.query_path, stack), _shape_of(term.key_path, stack))
    return ("logit", _shape_of(term.path, stack))


def _sides(sig) -> list[tuple]:
    """The ``_shape_of`` of each side of a signature (one for a logit path, query and key)."""
    return [sig[1]] if sig[0] == "logit" else [sig[2], sig[3]]


def _coords(term, sig) -> list:
    """The term's place on its group's broadcast axes: its stacked sources (query side first),
    then the heads it passes (query side first)."""
    paths = [term.path] if sig[0] == "logit" else [term.query_path, term.key_path]
    sources = [p[0] for p, (cls, _) in zip(paths, _sides(sig)) if isinstance(cls, tuple)]
    return sources + [h for p in paths for h in _heads_of(p)]


def _chunks(sig, members: list[int], terms, limit: int):
    """Members split so each chunk's grid of head combinations stays near ``limit`` terms."""
    if not members:
        return []
    coords = [_coords(terms[i], sig) for i in members]
    n_axes = len(coords[0])
    if n_axes == 0:
        return [members]
    sizes = [len({c[a] for c in coords}) for a in range(n_axes)]
    per_first = max(1, math.prod(sizes[1:]))
    step = max(1, limit // per_first)
    firsts = sorted({c[0] for c in coords})
    by_first = defaultdict(list)
    for i, c in zip(members, coords):
        by_first[c[0]].append(i)
    return [[i for f in firsts[s:s + step] for i in by_first[f]] for s in range(0, len(firsts), step)]


# evaluation ---------------------------------------------------------------------------------------
class _Evaluator:
    """One metric over groups of terms, the vocabulary-sized reductions made once."""

    def __init__(self, circuits: Circuits, metric: str, scope: str, mlp: str, baseline, n_null: int, seed: int):
        self.c, self.metric, self.scope, self.mlp = circuits, metric, scope, mlp
        self.baseline, self.n_null = baseline, n_null
        self.gen = torch.Generator().manual_seed(seed)
        self._reduced: dict[tuple, torch.Tensor] = {}
        self._memo: dict = {}   # Grams of sub-chains shared among groups (Factored(memo=...))
        self._memo_seen = self._memo_elements = 0

    def group(self, sig, terms) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Values (and extra columns) of ``terms``, which share ``sig``, in their order."""
        coords = [_coords(t, sig) for t in terms]
        axes = [sorted({c[a] for c in coords}) for a in range(len(coords[0]))]
        index = [{h: j for j, h in enumerate(ax)} for ax in axes]
        factors = self._chain(sig, terms[0], axes)
        outer = self._outer(factors)
        value, extra = self._metric(factors, outer)
        if self.baseline == "random":
            chain, drawn = self._gaussian(factors, outer)
            null = self._metric(chain, outer)[0]
            extra["null"] = np.nanmean(null, axis=0) if drawn else value  # nothing random: the value
            with np.errstate(invalid="ignore", divide="ignore"):
                extra["ratio"] = value / extra["null"]
        pick = [tuple(index[a][h] for a, h in enumerate(c)) for c in coords]
        return (np.array([_at(value, p) for p in pick]),
                {k: np.array([_at(v, p) for p in pick]) for k, v in extra.items()})

    def _chain(self, sig, term, axes) -> list[torch.Tensor]:
        """The group's factors: ``term``'s chain with each stacked source side replaced by its
        stack of rows and each head by the axis of heads."""
        c, n_axes = self.c, len(axes)
        values = iter(axes)
        stacked = [isinstance(cls, tuple) for cls, _ in _sides(sig)]
        lead = sum(stacked)
        rows = [self._stack(next(values), raw=cls[1], qk=sig[0] == "score", axis=sum(stacked[:i]),
                            n_axes=n_axes) if is_stacked else None
                for i, ((cls, _), is_stacked) in enumerate(zip(_sides(sig), stacked))]
        heads = iter(torch.tensor(ax, device=c.device) for ax in values)

        def nodes(path):
            return [(k, l, next(heads) if k == "head" else h) for k, l, h in _nodes(path)]

        if sig[0] == "logit":
            path = term.path
            if rows[0] is None:
                return c.logit_chain(path[0], nodes(path), scope=self.scope, mlp=self.mlp)
            return [rows[0]] + c.logit_tail(nodes(path), raw=sig[1][0][1], scope=self.scope,
                                            mlp=self.mlp, lead=lead)
        layer, head = c.arch.check_head(term.head)
        q, k = term.query_path, term.key_path
        if lead == 0:
            return c.score_chain(layer, head, (q[0], nodes(q)), (k[0], nodes(k)), scope=self.scope, mlp=self.mlp)
        qn, kn = nodes(q), nodes(k)
        ax = _Axes(qn + kn, lead)
        sides = []
        for side, path, pn, row, (cls, _) in (("Q", q, qn, rows[0], sig[2]), ("K", k, kn, rows[1], sig[3])):
            if row is None:
                sides.append(c._side(layer, head, side, path[0], pn, scope=self.scope, mlp=self.mlp, axes=ax))
            else:
                sides.append([row] + c.side_tail(layer, head, side, pn, raw=cls[1], mlp=self.mlp, axes=ax))
        return sides[0] + c.rotation() + [f.mT for f in reversed(sides[1])]

    def _stack(self, sources, *, raw: bool, qk: bool, axis: int, n_axes: int) -> torch.Tensor:
        """The one-row blocks of bias ``sources`` stacked on broadcast ``axis``: ``[.., n, .., 1, d]``."""
        key = ("stack", tuple(sources), qk, axis, n_axes)
        if key not in self._reduced:
            rows = torch.stack([self.c.rows(s, self.scope, qk=qk)[0] for s in sources])   # [n, 1, d]
            shape = [1] * n_axes
            shape[axis] = len(sources)
            self._reduced[key] = rows.reshape(*shape, *rows.shape[-2:])
        return self._reduced[key]

    def _outer(self, factors) -> tuple[bool, bool]:
        """Whether the first/last factor is a vocabulary- or position-sized end (``W_E``,
        ``W_pos``, ``W_U``, their transposes): fixed in the null, reduced once for the metric."""
        ends = [self.c.raw("W_E"), self.c.raw("W_U")]
        if self.c.weights.W_pos is not None:
            ends.append(self.c.raw("W_pos"))

        def is_end(t):
            return any(t.data_ptr() == e.data_ptr() and t.shape in (e.shape, e.mT.shape) for e in ends)

        first, last = is_end(factors[0]), is_end(factors[-1])
        return first, last and (len(factors) > 1 or not first)

    def _metric(self, factors, outer) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.metric == "copying":
            return self._copying(factors, outer)
        f = list(factors)
        if outer[0]:
            f[0] = self._reduce("first", f[0])
        if outer[1]:
            f[-1] = self._reduce("last", f[-1])
        M = Factored(*f, memo=self._memo)
        value = M.norm() if self.metric == "frobenius" else M.spectral_norm()
        if len(self._memo) > self._memo_seen:      # count what this chain added, drop all past the cap
            self._memo_elements += sum(g.numel() for _, g in list(self._memo.values())[self._memo_seen:])
            self._memo_seen = len(self._memo)
            if self._memo_elements > _MEMO_ELEMENTS:
                self._memo.clear()
                self._memo_seen = self._memo_elements = 0
        return _np(value), {}

    def _copying(self, factors, outer) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        first, last = factors[0], factors[-1]
        if first.shape[-2] != last.shape[-1]:
            nan = np.full(torch.broadcast_shapes(*(f.shape[:-2] for f in factors)), math.nan)
            return nan, {"positive_share": nan.copy()}
        chain = list(factors)
        if all(outer) and len(chain) > 2:  # eig(S X T) = eig(X T S) on the non-zero part
            chain = chain[1:-1] + [self._reduce("cycle", last, first)]
        score, share = copying_statistics(Factored(*chain).eigenvalues())
        return _np(score), {"positive_share": _np(share)}

    def _reduce(self, how: str, t: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        """A vocabulary-sized end reduced once per call: its thin root, or ``T S`` for a cycle."""
        key = (how, t.data_ptr(), tuple(t.shape), tuple(t.stride()),
               None if other is None else (other.data_ptr(), tuple(other.shape)))
        if key not in self._reduced:
            if how == "cycle":
                self._reduced[key] = t @ other
            elif how == "first":   # only the left end is thinned (a tall first factor)
                eye = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
                self._reduced[key] = Factored(t, eye).thin().factors[0]
            else:                  # only the right end (a wide last factor)
                eye = torch.eye(t.shape[-2], dtype=t.dtype, device=t.device)
                self._reduced[key] = Factored(eye, t).thin().factors[-1]
        return self._reduced[key]

    def _gaussian(self, factors, outer) -> tuple[list[torch.Tensor], bool]:
        """The null chain ``[n_null, *axes, ·, ·]``: every factor but the outer ends and identities
        a Gaussian matrix of the same shape and Frobenius norm; and whether any was drawn."""
        n_axes = max(f.ndim for f in factors) - 2
        out, drawn = [], False
        for i, f in enumerate(factors):
            f = f.reshape((1,) * (n_axes + 2 - f.ndim) + tuple(f.shape))     # [*axes, r, c]
            fixed = (i == 0 and outer[0]) or (i == len(factors) - 1 and outer[1]) or _is_eye(f)
            if fixed:
                out.append(f[None])
                continue
            G = torch.randn((self.n_null, *f.shape), generator=self.gen, dtype=torch.float64)
            G = G.to(device=f.device, dtype=f.dtype)
            scale = torch.linalg.matrix_norm(f) / torch.linalg.matrix_norm(G)
            out.append(G * scale[..., None, None])
            drawn = True
        return out, drawn


def _is_eye(t: torch.Tensor) -> bool:
    t = t.reshape(t.shape[-2:]) if t.numel() == t.shape[-2] * t.shape[-1] else t
    return t.ndim == 2 and t.shape[0] == t.shape[1] and bool(
        torch.equal(t, torch.eye(t.shape[0], dtype=t.dtype, device=t.device)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _at(a: np.ndarray, coord: tuple[int, ...]) -> float:
    """``a`` at ``coord`` (a broadcast array: size-1 axes and missing leading axes repeat)."""
    a = np.asarray(a)
    coord = coord[len(coord) - a.ndim:] if a.ndim < len(coord) else coord
    return float(a[tuple(0 if a.shape[i] == 1 else c for i, c in enumerate(coord))]) if a.ndim else float(a)


def _row(term, value: float, extra: dict) -> Row:
    if isinstance(term, ScoreTerm):
        extra = {"head": term.head, "key_path": tuple(term.key_path),
                 "softmax_invariant": term.softmax_invariant, **extra}
        path = tuple(term.query_path)
    else:
        path = tuple(term.path)
    return Row(term.name, term.kind, int(term.depth), path, float(value),
               extra={k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in extra.items()})


def _check_arch(expansion, w) -> Architecture:
    aw = Architecture.from_weights(w)
    ea = getattr(expansion, "arch", None)
    if ea is None:
        return aw
    fields = ("n_layers", "n_heads", "mlp", "normalization", "positional", "gated_mlp", "parallel_attn_mlp")
    diff = [f for f in fields if getattr(ea, f) != getattr(aw, f)]
    if diff:
        raise PathexpandError(
            "the expansion's architecture does not match the weights: "
            + ", ".join(f"{f} {getattr(ea, f)!r} vs {getattr(aw, f)!r}" for f in diff)
            + "; expand pe.Architecture.from_weights(weights) instead"
        )
    return ea


def _terms(expansion, positional: bool, arch) -> list:
    n = getattr(expansion, "n_terms", None)
    if n is not None and n > MAX_TERMS:
        raise PathexpandError(
            f"this expansion has {n:.3g} terms; evaluate at most {MAX_TERMS:,} — pass "
            "max_depth= to expand_logits/expand_scores (deeper paths go to the remainder)"
        )
    if isinstance(expansion, str):
        raise PathexpandError(
            f"evaluate takes an Expansion, not a string ({expansion!r}); expand first: "
            "pe.evaluate(pe.expand_logits(model), model) or pe.expand_scores(model, 'L1H0')"
        )
    try:
        terms = list(expansion)
    except TypeError:
        raise PathexpandError(
            f"evaluate takes an Expansion (pe.expand_logits/expand_scores), a selection of one "
            f"or a list of terms; got {type(expansion).__name__}"
        ) from None
    for t in terms:
        if not isinstance(t, (Term, ScoreTerm)):
            raise PathexpandError(f"evaluate takes Term or ScoreTerm objects; got {t!r}")
    for t in terms:
        if not t.is_remainder:
            for n in t.nodes:
                arch.check_node(n)
    if positional:
        if arch.positional is None:
            raise PathexpandError("positional=True needs a model with positional embeddings")
        if arch.positional == "rotary":
            raise PathexpandError(
                "positional=True picks the terms of W_pos; a rotary model has none (positions rotate "
                "queries and keys): its purely positional score terms are the bias × bias terms, "
                "functions of the offset (see docs/conventions.md)")

        def is_pos(t):
            if t.is_remainder:
                return False
            if isinstance(t, ScoreTerm):
                return t.query_path[0] == "pos" and t.key_path[0] == "pos"
            return t.path[0] == "pos"

        terms = [t for t in terms if is_pos(t)]
    return terms


def _notes(metric, scope, w, terms, baseline, n_null, seed, offset=None) -> list[str]:
    notes = []
    cfg = w.config
    if scope == "residual":
        notes.append("scope residual: W_E/W_pos and W_U dropped (residual stream to residual stream)")
    if any(isinstance(t, ScoreTerm) for t in terms):
        qk = f"W_Q R̃_Δ W_Kᵀ (rotary, offset Δ = j − i = {offset})" if offset is not None else "W_Q W_Kᵀ"
        notes.append(f"score terms: X_q {qk} X_kᵀ before the 1/√d_head scale; path = query side")
    if any(any(str(n).startswith("MLP") for n in t.nodes) for t in terms):
        notes.append("MLP paths: linearised MLP W_in diag(g) W_out with the gate g = act(x W_gate) frozen "
                     "at 1 (data-free)" if cfg.gated_mlp else
                     "MLP paths: linearised MLP W_in W_out (gates frozen at 1, data-free)")
    if cfg.normalization in ("LN", "LNPre"):
        notes.append("LayerNorm: readers C diag(w) W, writers W C; the per-position 1/σ is omitted "
                     "(data-free)")
    elif cfg.normalization in ("RMS", "RMSPre"):
        notes.append("RMSNorm: readers diag(w) W (no centring); the per-position 1/rms is omitted (data-free)")
    if any(t.is_remainder for t in terms):
        notes.append("remainder: the sum of every cut path, not evaluated")
    if metric == "copying":
        notes.append("copying = Re Σλ / Σ|λ|; NaN where the term does not map a space to itself "
                     "(bias rows, tokens against positions) or is zero (no eigenvalue to weigh)")
    else:
        notes.append("no share column: norms of terms do not add up to the norm of their sum")
    if baseline == "random":
        notes.append(f"null: weight factors (not W_E/W_pos/W_U) replaced by Gaussian matrices of equal "
                     f"Frobenius norm, mean of {n_null} draws (seed {seed}); ratio = value / null")
    return notes
