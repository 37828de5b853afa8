"""Matplotlib figures of the paper's analyses: composition, OV eigenvalues, attention, rankings.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state,
the Agg canvas), labelled with head names and token strings, never bare indices:

- ``composition_heatmaps``: Q-, K- and V-composition scores side by side, earlier heads ×
  later heads, the random-weights null marked on each colour bar;
- ``eigenvalue_plot``: eigenvalues of each head's full OV circuit ``W_E W_OV W_U`` in the
  complex plane with its copying score ``Re(Σλ)/Σ|λ|`` (the paper's figure): the circuit
  builder's OV circuits (``pe.circuit("OV", w)``) and the statistic of ``copying_scores``,
  through the factored ``AB``/``BA`` identity — never a ``d_vocab × d_vocab`` matrix;
- ``attention_patterns``: each head's pattern over a text, axes labelled with its tokens;
- ``head_scores_heatmap``: each statistic of a ``HeadScores`` per head;
- ``ranking_bars``: the top rows of any ``Ranking`` or result (through ``.ranking()``);
- ``order_importance_curve``: loss of the frozen model keeping paths up to depth n.

``figure_svg(fig)`` gives an SVG string ready to inline in HTML (ids made unique, text as
paths so no font is needed); ``fig.savefig("x.svg"|"x.png")`` writes files.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import PathexpandError, check_int
from ..names import parse_head
from ..numeric.composition import KINDS as COMPOSITION_KINDS
from ..numeric.composition import CompositionScores
from ..numeric.detect import HeadScores
from ..numeric.order import OrderImportance
from ..numeric.weights import as_weights
from ..ranking import Ranking, Result

__all__ = [
    "composition_heatmaps",
    "eigenvalue_plot",
    "ov_eigenvalues",
    "attention_patterns",
    "head_scores_heatmap",
    "ranking_bars",
    "order_importance_curve",
    "figure_svg",
    "figure_png_base64",
]

_POSITIVE, _NEGATIVE, _MUTED = "#1f77b4", "#d62728", "#9a9a9a"
_svg_counter = itertools.count()


# figure plumbing ----------------------------------------------------------------------------
def _figure(width: float, height: float):
    """A pyplot-free ``Figure`` on the Agg canvas, constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_svg(fig, *, id_prefix: str | None = None) -> str:
    """The figure as one ``<svg>`` element for inlining in HTML.

    Text is drawn as paths (no font needed); the XML prolog is dropped and every ``id`` (and
    each ``#id`` / ``url(#id)`` reference) gets ``id_prefix`` so several figures can share a
    page without their clip paths and glyphs colliding.
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "pathexpand"}):
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    return scope_svg_ids(svg, id_prefix or f"fig{next(_svg_counter)}-")


def scope_svg_ids(svg: str, prefix: str) -> str:
    """Prefix every ``id="…"`` of an SVG document and every reference to it.

    An id that occurs more than once (matplotlib names images by a hash of their printed
    data, which can coincide) keeps its first occurrence; later ones get ``-2``, ``-3``…
    (references resolve to the first, as a browser would), so ids are unique on the page.
    """
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg
    seen: dict[str, int] = {}

    def rename(m: re.Match) -> str:
        name = m.group(1)
        seen[name] = seen.get(name, 0) + 1
        suffix = f"-{seen[name]}" if seen[name] > 1 else ""
        return f'id="{prefix}{name}{suffix}"'

    def ref(m: re.Match) -> str:
        name = m.group(2)
        return f"{m.group(1)}#{prefix}{name}" if name in ids else m.group(0)

    svg = re.sub(r'\bid="([^"]+)"', rename, svg)
    return re.sub(r'(href="|url\()#([^")]+)', ref, svg)


def figure_png_base64(fig, *, dpi: int = 110) -> str:
    """The figure as base64 PNG bytes (for ``<img src="data:image/png;base64,…">``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _head_labels(layers: Iterable[int], n_heads: int) -> list[str]:
    from ..names import head_name

    return [head_name(l, h) for l in layers for h in range(n_heads)]


def _check_heads(arch, heads) -> list[str]:
    if isinstance(heads, str):
        heads = [heads]
    chosen = list(heads)
    for h in chosen:
        arch.check_head(h)
    if not chosen:
        raise PathexpandError("heads= is empty; pass head names like 'L1H0', or None for every head")
    return chosen


# composition scores -------------------------------------------------------------------------
_KIND_TITLES = {"q_composition": "Q-composition", "k_composition": "K-composition",
                "v_composition": "V-composition"}


def composition_heatmaps(
    scores: CompositionScores,
    *,
    kinds: Sequence[str] | None = None,
    annotate: bool | None = None,
    title: str | None = None,
):
    """Composition scores ‖W_OV^{h1} R^{h2}‖ / (‖W_OV^{h1}‖‖R^{h2}‖), one panel per kind.

    ``scores``: a ``CompositionScores`` (``pe.composition_scores``); ``kinds`` default: all it
    holds, in the order q, k, v. Rows are the earlier (writing) heads of
    layers 0…L-2, columns the later (reading) heads of layers 1…L-1; pairs where the row's
    layer is not earlier are blank. Raw scores are shown; the null mean (Gaussian weights of
    the same shapes) is a line on each colour bar. ``annotate`` writes each value in its cell
    (default: when the grid is at most 12 × 12).
    """
    if not isinstance(scores, CompositionScores):
        raise PathexpandError(
            f"expected CompositionScores from pe.composition_scores, got {type(scores).__name__}")
    kinds = tuple(k for k in COMPOSITION_KINDS if k in scores.kinds) if kinds is None else tuple(kinds)
    for k in kinds:
        if k not in scores.kinds:
            raise PathexpandError(
                f"composition kind {k!r} is not in these scores; they hold {list(scores.kinds)}"
            )
    L, H = scores.shape[:2]
    if L < 2:
        raise PathexpandError(
            f"composition needs two layers (an earlier head writing, a later head reading); "
            f"this model has {L}"
        )
    rows = _head_labels(range(L - 1), H)
    cols = _head_labels(range(1, L), H)
    mask = scores.mask[: L - 1, :, 1:, :].reshape(len(rows), len(cols))
    grids = {k: np.where(mask, scores[k][: L - 1, :, 1:, :].reshape(len(rows), len(cols)), np.nan)
             for k in kinds}
    vmax = max(float(np.nanmax(g)) if np.isfinite(g).any() else 0.0 for g in grids.values()) or 1.0
    if annotate is None:
        annotate = len(rows) <= 12 and len(cols) <= 12
    cell = min(0.42 if annotate else 0.28, 6.0 / max(len(rows), len(cols)))  # inches per cell
    fig = _figure(max(3.2, 1.2 + cell * len(cols)) * len(kinds), max(2.6, 1.4 + cell * len(rows)))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    import matplotlib

    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#f2f2f2")
    for ax, k in zip(axes, kinds):
        grid = grids[k]
        im = ax.imshow(grid, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
        im.set_gid(f"composition-{k[0]}")
        ax.set_xticks(range(len(cols)), cols, rotation=90 if len(cols) > 8 else 0)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("later head (reads)")
        ax.set_ylabel("earlier head (writes W_OV)")
        ax.set_title(_KIND_TITLES[k])
        bar = fig.colorbar(im, ax=ax, shrink=0.9)
        mean = scores.null_mean.get(k, math.nan)
        if math.isfinite(mean):
            bar.ax.axhline(mean, color=_NEGATIVE, linewidth=2)
            bar.ax.set_ylabel(f"score (red line: null {mean:.3f})")
        else:
            bar.ax.set_ylabel("score")
        if annotate:
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 * vmax else "black")
    fig.suptitle(title or "Composition scores of head pairs")
    return fig


# OV eigenvalues ------------------------------------------------------------------------------
def ov_eigenvalues(model, *, scope: str = "full") -> np.ndarray:
    """Eigenvalues ``[n_layers, n_heads, d_head]`` (complex) of each head's OV circuit, from the
    circuit builder: ``pe.circuit("OV", model, scope=scope).eigenvalues()``."""
    from ..numeric.circuits import circuit

    return circuit("OV", model, scope=scope).eigenvalues().cpu().numpy()


def eigenvalue_plot(model, *, heads: Sequence[str] | None = None, scope: str = "full",
                    title: str | None = None):
    """Eigenvalues of each head's full OV circuit in the complex plane, with its copying score.

    One panel per head (rows = layers), points coloured by the sign of their real part
    (blue: positive — the head copies; red: negative), the panel title reads
    ``L0H1  copying 0.83``. Axes are symmetric about 0 and equal in scale.
    """
    import torch

    from ..numeric.evaluate import copying_statistics

    w = as_weights(model)
    lam = ov_eigenvalues(w, scope=scope)
    L, H = lam.shape[:2]
    names = _head_labels(range(L), H)
    if heads is None:
        chosen = names
    else:
        from ..architecture import Architecture

        arch = Architecture.from_weights(w)
        chosen = _check_heads(arch, heads)
    cols = H if heads is None else min(len(chosen), 4)
    nrows = L if heads is None else math.ceil(len(chosen) / cols)
    side = min(2.3, 16.0 / cols)  # inches per panel: 12 heads a row still fit a page
    fig = _figure(side * cols + 0.4, side * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    copy = copying_statistics(torch.as_tensor(lam))[0].numpy()
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, chosen):
        l, h = parse_head(name)
        z = lam[l, h]
        colors = [_POSITIVE if v >= 0 else _NEGATIVE for v in z.real]
        pts = ax.scatter(z.real, z.imag, s=14, c=colors, alpha=0.85, linewidths=0)
        pts.set_gid(f"eig-{name}")
        r = float(np.abs(z).max()) if z.size and np.abs(z).max() > 0 else 1.0
        ax.set_xlim(-1.1 * r, 1.1 * r)
        ax.set_ylim(-1.1 * r, 1.1 * r)
        ax.set_aspect("equal")
        ax.axhline(0, color=_MUTED, linewidth=0.6)
        ax.axvline(0, color=_MUTED, linewidth=0.6)
        ax.set_title(f"{name}  copying {copy[l, h]:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("Re λ", fontsize=8)
        ax.set_ylabel("Im λ", fontsize=8)
    circuit = "W_E W_OV W_U" if scope == "full" else "W_OV"
    fig.suptitle(title or f"Eigenvalues of each head's OV circuit {circuit}  (copying = Re Σλ / Σ|λ|)")
    return fig


# attention ------------------------------------------------------------------------------------
def _tokens_and_labels(weights, tokens) -> tuple[np.ndarray, list[str]]:
    """One prompt's ids ``[pos]`` (``as_tokens``: text, ids or a ``.npy`` path) and their labels."""
    from ..numeric.tokens import as_tokens

    ids = as_tokens(weights, tokens)
    if ids.shape[0] != 1:
        raise PathexpandError(f"give one prompt, got a batch of {ids.shape[0]}")
    tok = weights.tokenizer
    ids = np.asarray(ids[0], dtype=np.int64)
    return ids, [tok.token_str(int(t)) if tok is not None else str(int(t)) for t in ids]


def attention_patterns(weights, tokens, *, heads: Sequence[str] | None = None,
                       title: str | None = None):
    """Attention pattern ``A^h[query, key]`` of each head on one prompt.

    ``tokens``: text (encoded with the weights' tokenizer) or ids ``[pos]``. Rows are query
    tokens, columns key tokens, both labelled with the token strings (``token_str``).
    ``heads``: names like ``["L0H1", "L1H2"]`` (default: every head, one row per layer).
    """
    from ..architecture import Architecture
    from ..numeric.forward import run_with_cache

    w = as_weights(weights)
    ids, labels = _tokens_and_labels(w, tokens)
    arch = Architecture.from_weights(w)
    if not arch.heads:
        raise PathexpandError("this model has no attention heads")
    chosen = list(arch.heads) if heads is None else _check_heads(arch, heads)
    _, cache = run_with_cache(w, ids[None])
    patterns = cache.patterns[0].detach().cpu().numpy()  # [L, H, q, k]
    n = len(ids)
    H = max(arch.n_heads)
    cols = H if heads is None else min(len(chosen), 4)
    nrows = math.ceil(len(chosen) / cols)
    side = min(4.2 if cols > 2 else 7.0, max(2.4, 0.065 * n + 1.2))  # inches per panel
    fig = _figure(side * cols + 0.6, side * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat[len(chosen):]:
        ax.set_visible(False)
    cell = 72 * (side - 1.0) / n  # points per token along an axis
    fontsize = 7 if cell >= 8 else 5
    ticks = list(range(0, n, max(1, math.ceil((fontsize + 1) / cell))))
    for ax, name in zip(axes.flat, chosen):
        l, h = parse_head(name)
        im = ax.imshow(patterns[l, h], cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        im.set_gid(f"attn-{name}")
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=fontsize)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key token", fontsize=8)
        ax.set_ylabel("query token", fontsize=8)
    fig.suptitle(title or "Attention patterns (row: query, column: key)")
    return fig


def head_scores_heatmap(scores: HeadScores, *, title: str | None = None):
    """Head scores per head, one panel per statistic (previous-token, induction, ...).

    ``scores``: a ``HeadScores`` from ``pe.detect_heads`` or ``pe.copying_scores``. Rows =
    layers, columns = heads, each cell labelled with its head name and score.
    """
    if not isinstance(scores, HeadScores):
        raise PathexpandError(f"expected HeadScores from pe.detect_heads, got {type(scores).__name__}")
    KINDS = scores.kinds
    L, H = scores.shape
    fig = _figure(max(3.0, 0.75 * H + 1.6) * len(KINDS), max(2.2, 0.7 * L + 1.4))
    axes = fig.subplots(1, len(KINDS), squeeze=False)[0]
    for ax, kind in zip(axes, KINDS):
        grid = np.asarray(scores[kind], dtype=np.float64)
        im = ax.imshow(grid, cmap="Purples", vmin=min(0.0, float(np.nanmin(grid))), vmax=1.0,
                       aspect="auto", interpolation="nearest")
        im.set_gid(f"heads-{kind}")
        ax.set_xticks(range(H), [f"H{h}" for h in range(H)])
        ax.set_yticks(range(L), [f"L{l}" for l in range(L)])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(kind.replace("_", "-"))
        for (l, h), v in np.ndenumerate(grid):
            ax.text(h, l, f"L{l}H{h}\n{v:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if v > 0.6 else "black")
        fig.colorbar(im, ax=ax, shrink=0.9)
    how = (f"on repeated random tokens (seq_len {scores.settings['seq_len']}, "
           f"{scores.settings['n_samples']} samples)" if scores.method == "data" else "from the weights alone")
    fig.suptitle(title or f"Detected heads {how}")
    return fig


# rankings -------------------------------------------------------------------------------------
def _as_ranking(obj) -> Ranking:
    if isinstance(obj, Result):
        return obj.ranking()
    raise PathexpandError(
        f"expected a Ranking or a result (Attribution, TopK, CompositionScores, HeadScores, "
        f"OrderImportance, ...), got {type(obj).__name__}"
    )


def ranking_bars(ranking, *, k: int = 15, title: str | None = None):
    """Horizontal bars of the ``k`` largest rows (``Ranking.top``: by ``|value|`` for signed
    contributions, else by value), largest on top.

    ``ranking``: a ``Ranking`` or a result (its ``.ranking()``). Bars are blue for positive
    values and red for negative ones; labels are the row names; the x label is the
    ranking's value label.
    """
    r = _as_ranking(ranking).top(check_int("k", k, 1))
    if len(r) == 0:
        raise PathexpandError("the ranking has no rows to plot")
    names = r.names[::-1]
    values = r.values[::-1]
    fig = _figure(6.4, 0.8 + 0.28 * len(names))
    ax = fig.subplots()
    finite = np.where(np.isfinite(values), values, 0.0)
    bars = ax.barh(range(len(names)), finite,
                   color=[_POSITIVE if v >= 0 else _NEGATIVE for v in finite])
    for i, bar in enumerate(bars):
        bar.set_gid(f"ranking-bar-{len(names) - i}")  # ranking-bar-1 is the top row
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.axvline(0, color=_MUTED, linewidth=0.8)
    ax.set_xlabel(r.value_label)
    ax.set_title(title or r.title or "ranking")
    return fig


def order_importance_curve(result: OrderImportance, *, title: str | None = None):
    """Loss of the frozen model keeping only paths up to depth n, against n.

    ``result``: an ``OrderImportance`` (``pe.order_importance``). The model's own loss is the
    dashed line (reached at full depth, exactly); the right axis shows the root-mean-square
    logit error of each truncation.
    """
    if not isinstance(result, OrderImportance):
        raise PathexpandError(
            f"expected an OrderImportance from pe.order_importance, got {type(result).__name__}")
    depths = np.asarray(result.depths)
    fig = _figure(5.6, 3.4)
    ax = fig.subplots()
    (loss_line,) = ax.plot(depths, result.loss, marker="o", color=_POSITIVE, label="loss, paths ≤ n")
    loss_line.set_gid("order-loss")
    ax.axhline(result.model_loss, color="black", linestyle="--", linewidth=1,
               label=f"model loss {result.model_loss:.3f}")
    ax.set_xticks(depths, [str(int(d)) for d in depths])
    ax.set_xlabel("n: most heads (and MLPs) a kept path passes")
    ax.set_ylabel("loss (nats / token)")
    right = ax.twinx()
    (err_line,) = right.plot(depths, result.logit_rms, marker="s", color=_NEGATIVE, alpha=0.7,
                             label="rms logit error")
    err_line.set_gid("order-logit-rms")
    right.set_ylabel("rms |logits_n − logits|", color=_NEGATIVE)
    handles = [loss_line, ax.lines[1], err_line]
    fig.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="outside lower center",
               ncols=3, frameon=False)
    ax.set_title(title or f"Term importance by order ({result.n_tokens} predicted tokens)")
    return fig
