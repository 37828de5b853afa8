"""Exact attribution of one attention score: a head's pre-softmax score at (query, key) split
into (query path × key path) terms.

With earlier attention, LayerNorm scales and MLP gates frozen (``numeric/frozen.py``) the
query input at position ``q`` is ``Σ_paths ln1(f_path)[q] W_Q`` (+ ``b_Q``, ``ln1.b W_Q``,
shortformer ``W_pos[q] W_Q``), the key input likewise, and the score is the sum over every
pair of ``q_path · k_path / √d_head`` — exactly. The terms are the ``ScoreTerm``s of
``expand_scores(arch, head)``, named and classified (direct, Q-, K-, Q&K-composition,
softmax-invariant) there.

A head deep in a large model reads astronomically many paths (SmolLM2's layer 18: about
``20¹⁸`` per side). ``by="writer"`` then splits each side by the **last writer** into the
residual stream instead — a source (``embed``, a bias) or one earlier head or MLP, carrying
everything that reached it — so a term ``q:L17H8 · k:embed`` is what the query side got from
L17H8's output meeting what the key side got straight from the embedding. Still exact: the
writers' outputs add up to the stream the head reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..architecture import Architecture
from ..errors import PathexpandError
from ..names import parse_node
from ..ranking import Ranking, Result
from ..symbolic import expand_scores
from . import norm
from .frozen import Frozen, freeze
from .tokens import as_tokens
from .weights import as_weights

__all__ = ["MAX_SIDE_PATHS", "ScoreAttribution", "attribute_scores"]

MAX_SIDE_PATHS = 5_000   # beyond this many paths per side, split by writer (by="writer")
BY = ("path", "writer")


@dataclass(repr=False)  # repr: Result's one-line summary
class ScoreAttribution(Result):
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
    by: str = "path"                 # "path" or "writer": what each side of a term is

    def residual_error(self) -> float:
        """``|Σ terms − score| / max(|score|, Σ|terms|)``."""
        total = sum(t["value"] for t in self.terms)
        scale = max(abs(self.score), sum(abs(t["value"]) for t in self.terms), 1e-300)
        return abs(total - self.score) / scale

    def by_kind(self) -> dict[str, float]:
        """Sum of the terms of each composition kind."""
        out: dict[str, float] = {}
        for t in self.terms:
            out[t["kind"]] = out.get(t["kind"], 0.0) + t["value"]
        return out

    def ranking(self, by: str = "effect", *, invariant: bool = False) -> Ranking:
        """The terms as a ``Ranking`` whose value is ``by``: ``"effect"`` (the default: how much
        more the term favours this key than the query's other keys) or ``"value"`` (the score
        term itself; these sum to ``score``); the other is a column (``score_term``, ``effect``).
        A row's ``path`` is its query path, ``key_path`` a column. Softmax-invariant terms
        (effect 0) are left out unless ``invariant``. ``top(k)`` is the ``k`` terms that most
        raise attention to the key.
        """
        if by not in ("effect", "value"):
            raise PathexpandError(f"by must be 'effect' or 'value', got {by!r}")
        rows = [
            dict(name=t["name"], kind=t["kind"], depth=len(t["query_path"]) + len(t["key_path"]) - 2,
                 path=t["query_path"], value=t[by], head=self.head, key_path=t["key_path"],
                 **({"score_term": t["value"]} if by == "effect" else {"effect": t["effect"]}),
                 softmax_invariant=t["softmax_invariant"])
            for t in self.terms if invariant or not t["softmax_invariant"]
        ]
        return Ranking(rows, total=self.score if by == "value" else None, shares=by == "value",
                       title=f"{self.head} score at ({self.query}, {self.key}): {by} of each term",
                       value_label="score term" if by == "value" else "effect", of="score_terms")

    def summary(self) -> str:
        return (f"{self.head} score at query {self.query}, key {self.key}: {self.score:.4g} "
                f"(attention {self.pattern:.3f})")

    def to_dict(self) -> dict:
        terms = [dict(t, query_path=list(t["query_path"]), key_path=list(t["key_path"])) for t in self.terms]
        return {"head": self.head, "query": self.query, "key": self.key, "score": self.score,
                "pattern": self.pattern, "residual_error": self.residual_error(), "terms": terms}

    def __str__(self) -> str:
        lines = [self.summary()]
        for r in self.top(8):
            lines.append(f"  {r.name:<40} {r.kind:<15} {r['score_term']:+.4g}  effect {r.value:+.4g}")
        return "\n".join(lines)


def attribute_scores(
    model,
    tokens,
    head: str,
    query: int,
    key: int,
    *,
    by: str = "path",
    device=None,
    dtype=None,
) -> ScoreAttribution:
    """Split ``head``'s pre-softmax score at ``(query, key)`` into (query path × key path) terms.

    Earlier attention (and LN scales, MLP gates) frozen, the query input at position
    ``query`` is ``Σ_paths ln1(f_path)[query] W_Q`` + ``b_Q`` (+ ``ln1.b W_Q``, + shortformer
    ``W_pos[query] W_Q``), the key input likewise, and the score is the sum over every pair
    of ``q_path · k_path / √d_head``, exactly. With rotary positions each side is rotated at
    its position before the product (``R_p`` is linear, so the split stays exact). Terms are the ``ScoreTerm``s of
    ``expand_scores(arch, head)`` (kinds and softmax invariance from there). One prompt.
    ``by="writer"``: each side split by the last writer into the stream (module docstring),
    for heads that read more than ``MAX_SIDE_PATHS`` paths per side.
    """
    import torch

    weights = as_weights(model)
    tokens = as_tokens(weights, tokens)
    if tokens.shape[0] != 1:
        raise PathexpandError(f"attribute_scores explains one prompt; got a batch of {tokens.shape[0]}")
    arch = Architecture.from_weights(weights)
    layer, h = arch.check_head(head)
    n = tokens.shape[1]
    for label, v in (("query", query), ("key", key)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not -n <= v < n:
            raise PathexpandError(f"{label} must be a position in [0, {n}) (or counted from the end, "
                                  f"in [-{n}, 0)), got {v!r}")
    query, key = int(query) % n, int(key) % n
    if by not in BY:
        raise PathexpandError(f"by must be 'path' or 'writer', got {by!r}")
    if by == "path":
        per_side = math.isqrt(arch.n_score_pairs(head))
        if per_side > MAX_SIDE_PATHS:
            raise PathexpandError(
                f"{head} reads {per_side:.3g} paths per source on each side, more than "
                f"{MAX_SIDE_PATHS:,}; split each side by its last writer instead: by='writer'")
    if weights.config.attention_dir == "causal" and key > query:
        raise PathexpandError(
            f"key {key} is after query {query}: the causal mask hides it (score -inf); pick key ≤ query"
        )
    with torch.no_grad():
        fz = freeze(weights, tokens, device=device, dtype=dtype)
        side = _score_side if by == "path" else _writer_side
        q_side = side(fz, layer, h, "q", slice(query, query + 1))
        k_side = side(fz, layer, h, "k", slice(None))
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
    if by == "writer":
        invariant = [bool(torch.allclose(kv[j][visible], kv[j][visible][:1].expand_as(kv[j][visible]),
                                         rtol=1e-6, atol=1e-9 * float(kv.abs().max())))
                     for j in range(len(k_side))]
        terms = []
        for i, qw in enumerate(q_side):
            for j, kw in enumerate(k_side):
                comp = ("q" if _is_node(qw) else "") + ("k" if _is_node(kw) else "")
                terms.append(dict(name=f"q:{qw} · k:{kw}", kind=_KIND[comp], query_path=(qw,),
                                  key_path=(kw,), value=float(values[i, j]), effect=float(effects[i, j]),
                                  softmax_invariant=invariant[j]))
        return ScoreAttribution(head, query, key, score, pattern, terms, getattr(weights, "name", None),
                                by="writer")
    qi = {p: i for i, p in enumerate(q_side)}
    ki = {p: i for i, p in enumerate(k_side)}
    terms = []
    for t in expand_scores(arch, head):
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


_KIND = {"": "direct", "q": "q_composition", "k": "k_composition", "qk": "qk_composition"}


def _is_node(writer: str) -> bool:
    """True for a head or MLP writer, False for a source (``embed``, ``pos``, a bias)."""
    return parse_node(writer).kind in ("head", "mlp")


def _project(fz: Frozen, parts: dict, layer: int, h: int, side: str, positions: slice) -> dict:
    """Each part ``[b, n, d]`` of the head's input read through ln1 and W_Q or W_K at
    ``positions`` (and rotated there, with rotary positions), plus the side's own bias."""
    import torch

    a = f"blocks.{layer}.attn"
    W = fz.p[a + (".W_Q" if side == "q" else ".W_K")][h]                  # [d, e]
    ln = f"blocks.{layer}.ln1"
    where = range(*positions.indices(fz.patterns.shape[-1]))
    out = {name: fz.ln(f, ln)[0, positions] @ W for name, f in parts.items()}      # [n, e] each
    if fz.config.positional == "shortformer":
        out["pos"] = fz.p["W_pos"][: fz.patterns.shape[-1]][positions] @ W
    if fz.arch.biases:
        if norm.has_bias(fz.config.normalization):
            out[f"L{layer}.ln1.b"] = (fz.p[ln + ".b"] @ W).expand(len(where), -1)
        b = "b_Q" if side == "q" else "b_K"
        out[f"L{layer}H{h}.{b}"] = fz.p[f"{a}.{b}"][h].expand(len(where), -1)
    if fz.config.positional == "rotary":
        from . import rotary

        stacked = rotary.rotate(torch.stack(list(out.values())), fz.config, list(where))
        out = dict(zip(out, stacked.unbind(0)))
    return out


def _writer_side(fz: Frozen, layer: int, h: int, side: str, positions: slice) -> dict:
    """The head's query or key input split by the last writer into the stream: ``{writer:
    [n_positions, d_head]}``; the writers' fields add up to the stream the head reads."""
    stop = next(st.index for st in fz.stages if st.has_heads and st.layer == layer)
    parts = {}
    for src in fz.sources():   # LN biases write through their readers: in those nodes' outputs
        if src.entry is None and src.birth < stop:
            parts[src.name] = fz.source_field(src.name)                   # [b, n, d]
    for st in fz.stages[:stop]:
        for name, f in zip(st.nodes, fz.node_outputs(st.index)):
            parts[name] = f
    return _project(fz, parts, layer, h, side, positions)


def _score_side(fz: Frozen, layer: int, h: int, side: str, positions: slice) -> dict:
    """Each path's contribution to the head's query (``side="q"``) or key input at
    ``positions``, projected (and rotated, with rotary positions): ``{path: [n_positions,
    d_head]}`` (paths into the heads of ``layer``; bias paths broadcast over positions)."""
    stop = next(st.index for st in fz.stages if st.has_heads and st.layer == layer)
    out = _project(fz, dict(fz.iter_paths(stop=stop)), layer, h, side, positions)
    return {k if isinstance(k, tuple) else (k,): v for k, v in out.items()}
