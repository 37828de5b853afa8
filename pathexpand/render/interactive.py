"""Interactive views for one offline HTML page or a notebook: attention, a coloured prompt, paths.

- ``attention_view(weights, tokens)``: every head's pattern ``A^h[query, key]`` on one prompt:
  the tokens, hover one to colour what it attends to (a few lines of our own script), and
  CircuitsVis ``AttentionHeads`` (a heatmap per head; hover a head to enlarge it);
- ``prompt_view(weights, tokens)``: the prompt's tokens coloured by how much each one, as the
  source of a path, adds to a target of ``pe.attribute`` (default: the top prediction at the
  last position) — one button per path (CircuitsVis ``ColoredTokensMulti``); the numbers are
  ``pe.source_contributions``', so per path the colours sum to the path's contribution;
- ``path_graph_view(attribution)``: the top paths of ``pe.attribute`` drawn as a layered graph
  (our own SVG and a few lines of script): click a path to light up its edges and read its
  contribution, click a head to read the sum over every path through it.

Each returns a ``View``: ``.html`` is the markup to place in a page that loads the scripts
once (``page_scripts``); ``_repr_html_`` is a standalone fragment for a notebook. The
CircuitsVis bundle (``circuitsvis/dist/cdn/iife.js``, 1.3 MB) is read from the installed
package at run time and inlined once per page; without the package the CircuitsVis parts are
a one-line note saying why, and our own parts (token hover, path graph) still work.
(CircuitsVis's ``AttentionPatterns`` also hovers tokens, but on a 110-token prompt with 8
heads it kept headless Chromium from rendering a frame for over 20 s: our token view is
40 lines.)
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PathexpandError
from ..names import parse_node

__all__ = ["VIEW_CSS", "View", "attention_view", "circuitsvis_bundle", "page_scripts", "path_graph_view",
           "prompt_view"]

CIRCUITSVIS_MISSING = ("the attention heatmaps and the coloured prompt need CircuitsVis: "
                       "pip install 'circuitsvis>=1.43' (the token and path views work without it)")


# the CircuitsVis bundle ---------------------------------------------------------------------------
def circuitsvis_bundle() -> str | None:
    """The installed CircuitsVis browser bundle (one ``<script>``'s text), or None if absent.

    Found without importing circuitsvis (which imports torch); ``</script`` is escaped so the
    text can sit inside a ``<script>`` element.
    """
    spec = importlib.util.find_spec("circuitsvis")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script")


# one script renders every CircuitsVis view on the page: <div data-cv="Component" data-props="{…}">,
# the props merged over a shared <script type="application/json"> named by data-src (data sent once)
_CV_INIT = """(function(){
document.querySelectorAll('[data-cv]').forEach(function(el){
  if (el.dataset.cvDone) return; el.dataset.cvDone = '1';
  var shared = el.dataset.src ? JSON.parse(document.getElementById(el.dataset.src).textContent) : {};
  var props = Object.assign({}, shared, JSON.parse(el.dataset.props || '{}'));
  CircuitsVis.render(el.id, CircuitsVis[el.dataset.cv], props);
});
})();"""

# the path graph: click a path (list row or its line) or a node; data in data-pg on the root
_PG_SCRIPT = """(function(){
document.querySelectorAll('.pg').forEach(function(root){
  if (root.dataset.pgDone) return; root.dataset.pgDone = '1';
  var data = JSON.parse(root.dataset.pg), out = root.querySelector('.pg-out');
  function show(paths, node, text){
    root.classList.add('pg-focus');
    root.querySelectorAll('.on').forEach(function(e){ e.classList.remove('on'); });
    paths.forEach(function(i){
      root.querySelectorAll('[data-i="' + i + '"]').forEach(function(e){ e.classList.add('on'); });
    });
    if (node !== null) root.querySelectorAll('[data-node="' + node + '"]').forEach(function(e){ e.classList.add('on'); });
    out.textContent = text;
  }
  root.addEventListener('click', function(ev){
    var p = ev.target.closest('[data-i]'), n = ev.target.closest('[data-node]');
    if (p) { var i = +p.dataset.i; show([i], null, data.paths[i].text); }
    else if (n) { var d = data.nodes[n.dataset.node]; show(d.paths, n.dataset.node, d.text); }
  });
});
})();"""

# the attention tokens: pick a head, hover a query token, its keys coloured by A[head][query][key]
_AT_SCRIPT = """(function(){
document.querySelectorAll('.at').forEach(function(root){
  if (root.dataset.atDone) return; root.dataset.atDone = '1';
  var d = JSON.parse(document.getElementById(root.dataset.src).textContent);
  var heads = root.querySelectorAll('.at-head'), toks = root.querySelectorAll('.at-tok');
  var out = root.querySelector('.at-out'), h = 0;
  function paint(q){
    var row = q === null ? [] : d.attention[h][q], best = 0;
    toks.forEach(function(t, k){
      var a = row[k] || 0;
      if (a > (row[best] || 0)) best = k;
      t.style.backgroundColor = a ? 'rgba(31,95,168,' + a + ')' : '';
      t.style.color = a > 0.5 ? '#fff' : '';
      t.classList.toggle('q', k === q);
    });
    out.textContent = q === null ? 'Hover a token.' : d.attentionHeadNames[h] + ': query ' + q + ' (' +
      d.tokens[q] + ') attends most to key ' + best + ' (' + d.tokens[best] + '), ' + Math.round(100 * row[best]) + '%';
  }
  heads.forEach(function(b, i){ b.addEventListener('click', function(){
    h = i; heads.forEach(function(x){ x.classList.toggle('on', x === b); }); paint(null); }); });
  toks.forEach(function(t, q){ t.addEventListener('mouseenter', function(){ paint(q); }); });
});
})();"""

VIEW_CSS = """
.view { margin: 10px 0 18px; }
.view .cv { min-height: 40px; max-width: 820px; }
.at-heads button { font: inherit; font-size: 13px; margin: 0 4px 6px 0; padding: 1px 8px; cursor: pointer;
                   border: 1px solid #5b6672; border-radius: 3px; background: #fff; }
.at-heads button.on { background: #1d232b; color: #fff; }
.at-toks { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 13px; line-height: 1.9;
           max-width: 96ch; overflow-wrap: anywhere; }
.at-tok { padding: 1px 1px; border-radius: 2px; cursor: default; }
.at-tok.q { outline: 2px solid #a8501f; }
.at .at-out { font-size: 13.5px; font-weight: 600; min-height: 1.5em; margin: 4px 0; }
.pg { display: grid; grid-template-columns: minmax(300px, 3fr) minmax(240px, 2fr); gap: 8px 24px;
      align-items: start; font-size: 13.5px; }
.pg svg { width: 100%; height: auto; }
.pg .pg-edge { fill: none; stroke-linecap: round; opacity: 0.55; cursor: pointer; }
.pg.pg-focus .pg-edge { opacity: 0.12; }
.pg.pg-focus .pg-edge.on { opacity: 1; }
.pg .pg-node rect { fill: #fff; stroke: #5b6672; }
.pg .pg-node { cursor: pointer; }
.pg .pg-node text { font: 12px system-ui, sans-serif; fill: #1d232b; text-anchor: middle; }
.pg .pg-node.on rect { fill: #fff3c4; stroke: #1d232b; stroke-width: 2; }
.pg ol { margin: 0; padding-left: 2.2em; }
.pg li button { font: inherit; border: 0; background: none; padding: 1px 4px; cursor: pointer;
                color: #1f5fa8; text-align: left; }
.pg li.on { background: #fff3c4; font-weight: 600; }
.pg li .v { font-variant-numeric: tabular-nums; color: #5b6672; margin-left: 6px; }
.pg .pg-out { grid-column: 1 / -1; min-height: 1.6em; margin: 0; font-weight: 600; }
"""
"""Styles of the views (the report inlines them once; a notebook fragment carries its own)."""


def page_scripts(views) -> str:
    """The ``<script>`` elements a page holding ``views`` needs, each exactly once, to put
    after them: the CircuitsVis bundle and its one render call, the path-graph script."""
    views = list(views)
    out = []
    if any(v.circuitsvis for v in views):
        bundle = circuitsvis_bundle()
        if bundle is not None:
            out.append(f"<script>{bundle}</script><script>{_CV_INIT}</script>")
    if any(v.kind == "attention" for v in views):
        out.append(f"<script>{_AT_SCRIPT}</script>")
    if any(v.kind == "path_graph" for v in views):
        out.append(f"<script>{_PG_SCRIPT}</script>")
    return "".join(out)


@dataclass(frozen=True)
class View:
    """One interactive view: ``html`` to place in a page (scripts from ``page_scripts``);
    ``circuitsvis``: whether it draws CircuitsVis components (False: ours only, or a note)."""

    kind: str
    html: str
    circuitsvis: bool = False

    def _repr_html_(self) -> str:
        return f"<style>{VIEW_CSS}</style>{self.html}{page_scripts([self])}"


_COUNTER = [0]


def _id(prefix: str) -> str:
    _COUNTER[0] += 1
    return f"{prefix}-{_COUNTER[0]}"


def _json(value) -> str:
    """Compact JSON: floats to 3 decimals, whole numbers as integers (0.25, 0, 1, 0.125)."""
    def compact(v):
        if isinstance(v, float):
            x = float(f"{v:.3f}")
            return int(x) if x.is_integer() else x
        if isinstance(v, dict):
            return {k: compact(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [compact(x) for x in v]
        return v

    return json.dumps(compact(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _cv(parts: list[tuple[str, dict, str]], prefix: str, kind: str, shared: dict | None = None) -> View:
    """CircuitsVis components ``(name, props, caption)`` as placeholder ``<div>``s that the
    page's one render call fills, ``shared`` props written once for all of them; a one-line
    note instead when CircuitsVis is not installed."""
    if circuitsvis_bundle() is None:
        return View(kind, f'<p class="unavailable">{html.escape(CIRCUITSVIS_MISSING)}</p>', True)
    out, src = [], ""
    if shared is not None:
        key = _id(prefix + "-data")
        text = _json(shared).replace("</", "<\\/")   # JSON's own escape: no "</script" inside
        out.append(f'<script type="application/json" id="{key}">{text}</script>')
        src = f' data-src="{key}"'
    for component, props, caption in parts:
        data = html.escape(_json(props), quote=True)
        out.append(f'<figure class="view"><div class="cv" id="{_id(prefix)}" data-cv="{component}"{src} '
                   f'data-props="{data}"></div><figcaption>{html.escape(caption)}</figcaption></figure>')
    return View(kind, "".join(out), True)


def _prompt(weights, tokens) -> tuple[Any, np.ndarray, list[str]]:
    from ..numeric.tokens import as_tokens
    from ..numeric.weights import as_weights

    w = as_weights(weights)
    ids = as_tokens(w, tokens)
    if ids.shape[0] != 1:
        raise PathexpandError(f"give one prompt, got a batch of {ids.shape[0]}")
    ids = np.asarray(ids[0], dtype=np.int64)
    tok = w.tokenizer
    return w, ids, [tok.token_str(int(t)) if tok is not None else str(int(t)) for t in ids]


# attention --------------------------------------------------------------------------------------
def attention_view(weights, tokens, *, heads=None) -> View:
    """Each head's attention pattern ``A^h[query, key]`` on one prompt: the prompt's tokens, hover
    one to colour the keys it attends to (our script), and CircuitsVis ``AttentionHeads`` (a
    heatmap per head; hover or click one to enlarge it).

    ``tokens``: text or ids of one prompt; ``heads``: names like ``["L0H1", "L1H2"]`` (default
    every head). The patterns are written once; both parts read them.
    """
    from ..architecture import Architecture
    from ..numeric.forward import run_with_cache

    w, ids, labels = _prompt(weights, tokens)
    arch = Architecture.from_weights(w)
    if not arch.heads:
        raise PathexpandError("this model has no attention heads")
    chosen = list(arch.heads) if heads is None else [heads] if isinstance(heads, str) else list(heads)
    if not chosen:
        raise PathexpandError("heads= is empty; pass head names like 'L1H0', or None for every head")
    at = [arch.check_head(h) for h in chosen]
    _, cache = run_with_cache(w, ids[None])
    pat = cache.patterns[0].detach().cpu().numpy()                      # [L, H, q, k]
    attention = np.stack([pat[l, h] for l, h in at])                   # [heads, q, k]
    key = _id("attn-data")
    shared = _json({"attention": attention.tolist(), "tokens": labels, "attentionHeadNames": chosen})
    shared = shared.replace("</", "<\\/")   # JSON's own escape: no "</script" inside
    out = [f'<script type="application/json" id="{key}">{shared}</script>']
    buttons = "".join(f'<button type="button" class="at-head{" on" if i == 0 else ""}">{html.escape(h)}</button>'
                      for i, h in enumerate(chosen))
    toks = "".join(f'<span class="at-tok">{html.escape(t)}</span>' for t in labels)
    out.append(f'<figure class="view at" data-src="{key}"><div class="at-heads">{buttons}</div>'
               f'<div class="at-toks">{toks}</div><p class="at-out">Hover a token.</p>'
               "<figcaption>pick a head, then hover a token (a query): the tokens it attends to "
               "(keys) are coloured by its attention</figcaption></figure>")
    bundle = circuitsvis_bundle() is not None
    if bundle:
        props = html.escape(_json({"maskUpperTri": w.config.attention_dir != "bidirectional"}), quote=True)
        out.append(f'<figure class="view"><div class="cv" id="{_id("attn-view")}" data-cv="AttentionHeads" '
                   f'data-src="{key}" data-props="{props}"></div><figcaption>'
                   "each head's pattern (CircuitsVis): hover or click a head to enlarge it, hover a cell for its value "
                   "(row: query, column: key)</figcaption></figure>")
    else:
        out.append(f'<p class="unavailable">{html.escape(CIRCUITSVIS_MISSING)}</p>')
    return View("attention", "".join(out), bundle)


# prompt coloured by a path ----------------------------------------------------------------------
def prompt_view(weights, tokens, *, paths=None, k: int = 8, target=None, diff=None, positions=None) -> View:
    """The prompt coloured by each path's contribution per source token (CircuitsVis
    ``ColoredTokensMulti``, values from ``pe.source_contributions``): one button per path;
    hover a token for all its values.

    ``paths``: tuples like ``("embed", "L0H1", "L1H2")`` (default: the ``k`` largest paths of
    ``pe.attribute`` with a token or position source, when the model has at most
    ``MAX_PATHS`` paths to rank); ``target``/``diff``/``positions`` as in ``pe.attribute``.
    """
    from ..names import term_name
    from ..numeric.attribute import MAX_PATHS, attribute, source_contributions
    from ..numeric.attribute import n_paths as count_paths

    w, ids, labels = _prompt(weights, tokens)
    if paths is None:
        n_paths = count_paths(w)     # attribute's count (closed form, from the shapes)
        if n_paths > MAX_PATHS:   # ranking them all would be a search, not a listing
            raise PathexpandError(
                f"this model has {n_paths:,} paths, more than the {MAX_PATHS:,} prompt_view ranks "
                "for its default; pass paths= (e.g. the paths of pe.top_k_paths(weights, tokens, k=8))"
            )
        res = attribute(w, ids[None], target=target, diff=diff, positions=positions, views=("path",))
        ranked = res.ranking("path")
        rows = [r for r in ranked.top(len(ranked)) if parse_node(r.path[0]).kind == "source"]
        paths = [r.path for r in rows[:k]]
    if not paths:
        raise PathexpandError("no path with a token or position source to colour the prompt by")
    split = source_contributions(w, ids, paths, target=target, diff=diff, positions=positions)
    names = [term_name(p) for p in split.paths]
    caption = (f"each token coloured by what it adds, as the source of the chosen path, to the "
               f"{split.target_label} (blue adds, red takes away); pick a path above the text, hover a "
               "token for every path's value")
    props = {"tokens": labels, "values": split.values.tolist(), "labels": names}
    return _cv([("ColoredTokensMulti", props, caption)], "prompt-view", "prompt")


# path graph --------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:+.3g}"


def path_graph_view(attribution, *, k: int = 10) -> View:
    """The ``k`` largest paths of an ``Attribution`` as a clickable layered graph.

    Click a path (its line or its row) to light up its edges and read its contribution and
    share; click a head to light up the listed paths through it and read its node value (the
    sum over every path through it, ``Attribution.node``).
    """
    res = attribution
    if res.paths is None:
        raise PathexpandError("the attribution has no path view; ask pe.attribute for views=('path', ...) "
                              "(past max_paths it lists the largest paths by certified search)")
    rows = list(res.ranking("path").top(k))
    if not rows:
        raise PathexpandError("the attribution has no paths to draw")
    node_rank = {r.name: r for r in res.ranking("node")} if res.nodes is not None else {}

    def column(node: str) -> int:
        if node == "logits":
            return 10_000
        p = parse_node(node)
        if p.kind in ("source", "bias"):   # sources (embed, pos, biases) on the left
            return -1
        return 2 * p.layer + (1 if p.kind == "mlp" else 0)

    nodes: dict[str, int] = {}
    for r in rows:
        for n in (*r.path, "logits"):
            nodes.setdefault(n, column(n))
    cols = sorted(set(nodes.values()))
    by_col = {c: sorted((n for n in nodes if nodes[n] == c), key=_node_order) for c in cols}
    W, row_h, col_w, pad = 640, 44, 640 / max(len(cols), 1), 16
    height = pad * 2 + row_h * max(len(v) for v in by_col.values())
    pos = {}
    for ci, c in enumerate(cols):
        col = by_col[c]
        top = (height - row_h * len(col)) / 2
        for i, n in enumerate(col):
            pos[n] = (col_w * (ci + 0.5), top + row_h * (i + 0.5))
    biggest = max(abs(r.value) for r in rows) or 1.0
    edges = []
    for i, r in enumerate(rows):
        pts = [pos[n] for n in (*r.path, "logits")]
        off = (i - len(rows) / 2) * 1.2           # a small offset keeps shared segments apart
        d = "M" + " L".join(f"{x:.1f},{y + off:.1f}" for x, y in pts)
        width = 1.5 + 7 * abs(r.value) / biggest
        colour = "#1f5fa8" if r.value >= 0 else "#b2182b"
        edges.append(f'<path class="pg-edge" data-i="{i}" d="{d}" stroke="{colour}" '
                     f'stroke-width="{width:.1f}"><title>{html.escape(r.name)}: {_fmt(r.value)}</title></path>')
    boxes = []
    for n, (x, y) in pos.items():
        w_box = 12 + 7.5 * len(n)
        boxes.append(f'<g class="pg-node" data-node="{html.escape(n)}" tabindex="0">'
                     f'<rect x="{x - w_box / 2:.1f}" y="{y - 12:.1f}" width="{w_box:.1f}" height="24" rx="4"/>'
                     f'<text x="{x:.1f}" y="{y + 4:.1f}">{html.escape(n)}</text></g>')
    svg = (f'<svg viewBox="0 0 {W} {height}" role="img" aria-label="top paths">'
           + "".join(edges) + "".join(boxes) + "</svg>")
    items = "".join(f'<li data-i="{i}"><button type="button">{html.escape(r.name)}</button>'
                    f'<span class="v">{_fmt(r.value)}</span></li>' for i, r in enumerate(rows))
    total = res.total

    def path_text(r) -> str:
        return (f"{r.name} ({' → '.join(r.path)} → logits): {_fmt(r.value)}, "
                f"{_share(r.value, total)} of the {res.target_label} ({total:.4g})")

    node_data = {}
    for n in pos:
        through = [i for i, r in enumerate(rows) if n in r.path or n == "logits"]
        if n in node_rank:
            v = node_rank[n].value
            text = (f"{n}: {_fmt(v)} summed over every path through it ({len(through)} of the "
                    f"{len(rows)} listed)")
        elif n == "logits":
            text = f"logits: the {res.target_label} is {total:.4g}; the {len(rows)} listed paths sum to " \
                   f"{sum(r.value for r in rows):.4g}"
        else:
            text = f"{n}: source of {len(through)} of the {len(rows)} listed paths"
        node_data[n] = {"paths": through, "text": text}
    data = {"paths": [{"name": r.name, "path": list(r.path), "value": round(r.value, 6),
                       "text": path_text(r)} for r in rows], "nodes": node_data}
    attr = html.escape(json.dumps(data, separators=(",", ":"), ensure_ascii=False), quote=True)
    body = (f'<div class="pg view" id="{_id("path-graph")}" data-pg="{attr}">{svg}'
            f'<div><ol>{items}</ol></div>'
            '<p class="pg-out" aria-live="polite">Click a path or a node.</p></div>')
    return View("path_graph", body)


def _share(v: float, total: float) -> str:
    return "—" if total == 0 or not math.isfinite(total) else f"{v / total:.0%}"


def _node_order(n: str):
    p = parse_node(n)
    order = {"embed": 0, "pos": 1}
    return (order.get(n, 2), p.head if p.head is not None else -1, n)
