"""The sections of the HTML report, one builder each: ``section_x(ctx) -> HTML``.

Each builder calls the public API (symbolic, numeric, diagrams, plots) and lays out what
it returns; ``Context`` holds the model, the sample text and the results several sections
share (head detection, composition scores), each computed once. ``SECTIONS`` lists
``(id, title, builder)`` in page order; ``render.html.report`` puts them on one page.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PathexpandError
from ..names import parse_node
from .markup import (
    Raw,
    diagram_figure,
    escape,
    figure,
    kv_table,
    note,
    num,
    ranking_table,
    table,
    unavailable,
)

__all__ = ["Context", "SECTIONS", "DEFAULT_TEXT", "sample_tokens"]

DEFAULT_TEXT = (
    "def attention(query, key):\n"
    "    return softmax(query @ key)\n"
    "\n"
    "def attention(query, key):\n"
    "    return softmax(query"
)
"""The sample for byte-level models: in the second copy an induction head can predict."""

TOP = 12  # rows in each ranked table


@dataclass
class Context:
    """The model, the sample tokens and the results several sections share (computed once)."""

    weights: Any
    tokens: np.ndarray
    labels: list[str]
    text: str | None
    arch: Any
    _memo: dict = field(default_factory=dict, repr=False)
    views: list = field(default_factory=list, repr=False)   # interactive views on the page

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def detected(self):
        """``detect_heads`` on repeated random tokens (its defaults, as ``induction_circuit``)."""
        from ..numeric.detect import detect_heads

        return self._once("detected", lambda: detect_heads(self.weights))

    def composition(self):
        """``composition_scores`` of every kind with the random-weights null."""
        from ..numeric.composition import composition_scores

        return self._once("composition", lambda: composition_scores(self.weights, "all",
                                                                     baseline="random"))

    def circuit(self):
        """``render.dot.default_circuit``: the graph, highlight and title every caller draws, and
        the ``InductionCircuit`` (None with heads in fewer than two layers)."""
        from .dot import default_circuit

        def make():
            from ..numeric.detect import induction_circuit

            if self.arch.n_layers < 2:  # none possible: no head scores or composition needed
                return default_circuit(self.weights, circuit=induction_circuit(self.weights))
            ic = induction_circuit(self.weights, heads=self.detected(), composition=self.composition())
            return default_circuit(self.weights, circuit=ic, composition=self.composition())

        return self._once("circuit", make)

    def induction(self):
        """The ``InductionCircuit`` (found or not)."""
        return self.circuit()[3]

    def attribution(self):
        """``attribute`` of the sample: the model's own top prediction at the last position."""
        from ..numeric.attribute import attribute

        return self._once("attribution", lambda: attribute(self.weights, self.tokens[None]))

    def terms(self):
        """The data-free ranking of every (listable) logit term by ‖W‖_F."""
        from ..numeric.evaluate import evaluate
        from ..symbolic import expand_logits

        return self._once("terms", lambda: evaluate(_listable(expand_logits, self.arch), self.weights,
                                                       metric="frobenius"))


def sample_tokens(weights, text: str | None) -> tuple[np.ndarray, list[str], str | None]:
    """``(ids, token labels, text)`` of the sample, validated before any work is done.

    No text: ``DEFAULT_TEXT`` (its last ``n_ctx`` tokens) with a tokenizer, else a repeated
    random sequence ``[r, r]`` (seed 0).
    """
    cfg = weights.config
    tok = weights.tokenizer
    if text is not None and not isinstance(text, str):   # token ids: one prompt
        from ..numeric.tokens import as_tokens, to_tensor

        ids = as_tokens(weights, text)
        if ids.shape[0] != 1 or ids.shape[1] < 2:
            raise PathexpandError(f"the sample must be one prompt of at least 2 tokens, got shape "
                                  f"{list(ids.shape)}")
        to_tensor(ids, cfg)                                   # ids in range, within n_ctx
        ids = np.asarray(ids[0], dtype=np.int64)
        labels = [tok.token_str(int(t)) if tok is not None else str(int(t)) for t in ids]
        return ids, labels, None
    if text is None and tok is not None:
        ids = tok.encode(DEFAULT_TEXT)[-cfg.n_ctx:]
        text = tok.decode(ids)
    elif text is None:
        half = max(2, min(24, cfg.n_ctx // 2))
        r = np.random.default_rng(0).integers(0, cfg.d_vocab, size=half)
        ids = np.concatenate([r, r]).tolist()
    else:
        if tok is None:
            raise PathexpandError(
                f"text= needs a tokenizer and the model {weights.name or '(unnamed)'} has none; "
                "leave text out to use repeated random tokens"
            )
        ids = tok.encode(text)
        if len(ids) < 2:
            raise PathexpandError(f"text must be at least 2 tokens long, got {len(ids)}: {text!r}")
        if len(ids) > cfg.n_ctx:
            raise PathexpandError(
                f"text is {len(ids)} tokens long; this model's context is n_ctx={cfg.n_ctx} tokens"
            )
    ids = np.asarray(ids, dtype=np.int64)
    labels = [tok.token_str(int(t)) if tok is not None else str(int(t)) for t in ids]
    return ids, labels, text


# 0. summary -------------------------------------------------------------------------------------
SUMMARY_TERMS = 5


def section_summary(ctx: Context) -> str:
    """One screen: the model in one line, the circuit (or "none found"), top terms, detected heads."""
    w, arch = ctx.weights, ctx.arch
    cfg = w.config
    desc = (w.card or {}).get("description", "")
    facts = [str(arch), f"d_model {cfg.d_model}", f"context {cfg.n_ctx}", f"vocabulary {cfg.d_vocab:,}"]
    out = [f'<p class="lede"><b>{escape(w.name or "weights")}</b>: {escape(", ".join(facts))}.'
           + (f" {escape(desc.split('. ')[0].rstrip('.'))}." if desc else "") + "</p>"]
    ic = ctx.induction()
    if ic.found:
        prev, ind = ic.pair
        kc = ic.k_composition or {}
        score = (f" (K-composition {kc['score']:.3f} against a random baseline of {kc['baseline']:.3f}, "
                 f"z {kc['z']:.1f})" if {"score", "baseline", "z"} <= set(kc) else "")
        circuit = (f"<b>Induction circuit found</b>: the previous-token head <b>{escape(prev)}</b> "
                   f"writes into the key of the induction head <b>{escape(ind)}</b>{escape(score)}.")
    else:
        circuit = f"<b>Induction circuit: none found</b> — {escape(ic.reason)}."
    out.append(f'<p class="circuit">{circuit}</p>')
    out.append('<div class="grid summary">')
    res = ctx.attribution()
    sample = "the sample text" if ctx.text is not None else "the sample tokens"
    view = "path" if res.paths is not None else "node"
    out.append(f"<div><h3>Top {'paths' if view == 'path' else 'heads and MLPs'} on {sample}</h3>"
               + note(f"exact contributions to the {res.target_label} (value {res.total:.3g})")
               + ranking_table(res.ranking(view), SUMMARY_TERMS, columns=("name",)) + "</div>")
    out.append("<div><h3>Largest terms without data</h3>" + note("‖W‖_F of each term's virtual weights")
               + ranking_table(ctx.terms(), SUMMARY_TERMS, columns=("name",), share=False) + "</div>")
    out.append("<div><h3>Detected heads</h3>" + _heads_summary(ctx) + "</div>")
    out.append("</div>")
    return "".join(out)


def _heads_summary(ctx: Context) -> str:
    """Per statistic the best head with its score and chance level, or "none found", each by its
    own rule: previous-token and induction by ``induction_circuit``'s ``min_score`` (an induction
    head in layer ≥ 1, as that rule says); any other (duplicate-token) has no bar, only chance."""
    if not ctx.arch.heads:
        return note("none: this model has no attention heads")
    scores = ctx.detected()
    floor = ctx.induction().min_score
    items = []
    for kind in scores.kinds:
        rows = [r for r in scores.ranking(kind) if kind != "induction" or parse_node(r.name).layer >= 1]
        label = kind.replace("_", "-")
        if not rows:
            items.append(f"<li>{escape(label)}: none found (no head it applies to)</li>")
            continue
        r = rows[0]                                   # ranking: highest first
        chance = r["baseline"]
        if kind in _JUDGED:
            if r.value >= floor:
                items.append(f"<li>{escape(label)}: <b>{escape(r.name)}</b> {r.value:.2f} "
                             f"(chance {chance:.3f})</li>")
            else:
                items.append(f"<li>{escape(label)}: none found (best {escape(r.name)} {r.value:.3g} "
                             f"&lt; {floor:g}; chance {chance:.3g})</li>")
        elif r.value > chance:
            items.append(f"<li>{escape(label)}: best {escape(r.name)} {r.value:.3g}, "
                         f"{r.value / chance:.1f}× chance ({chance:.3g}); no bar is set for this "
                         "statistic, so no head is named</li>")
        else:
            items.append(f"<li>{escape(label)}: none found (best {escape(r.name)} {r.value:.3g}, "
                         f"not above chance {chance:.3g})</li>")
    judged = " or ".join(k.replace("_", "-") for k in _JUDGED if k in scores.kinds)
    return (f"<ul>{''.join(items)}</ul>"
            + note(f"mean attention on repeated random tokens; a {judged} head is named when it scores "
                   f"at least {floor:g}, the bar pe.induction_circuit sets for them (induction heads "
                   "in layer ≥ 1); the other statistics are compared with chance only; see Detected heads"))


_JUDGED = ("previous_token", "induction")   # the statistics induction_circuit's min_score is for


# 1. model card ---------------------------------------------------------------------------------
_CONFIG_KEYS = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "act_fn", "normalization",
                "positional", "attention_dir", "d_vocab", "d_vocab_out", "n_ctx")
_CARD_SKIP = ("name", "description", "config", "head_scores")


def _rounded(v: Any) -> Any:
    """``v`` with every float rounded to 4 significant digits (nested lists and dicts too)."""
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    if isinstance(v, float):
        return float(f"{v:.4g}")
    return v


def _card_value(v: Any) -> Any:
    if isinstance(v, dict):
        return Raw(kv_table([(str(k), _card_value(x)) for k, x in v.items()]))
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (dict, list)) for x in v):
            return ", ".join(str(_rounded(x)) for x in v)
        return json.dumps(_rounded(v), ensure_ascii=False)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return num(v)
    return v


def _folded(summary: str, body: str) -> str:
    """``body`` inside a closed ``<details>`` whose one-line ``summary`` says what it holds."""
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def section_card(ctx: Context) -> str:
    """Architecture, config and the model card (training data, steps, losses, command)."""
    w = ctx.weights
    card = dict(w.card or {})
    cfg = w.config.to_dict()
    out = []
    lede = f'<p class="lede">{escape(card["description"])}</p>' if card.get("description") else ""
    stored = num(w.n_params()) + " (every W and b as stored: absent biases are zeros, a tied W_U a copy)"
    pairs: list[tuple[str, Any]] = [("architecture", str(ctx.arch)), ("stored scalars", stored)]
    pairs += [(k, _card_value(cfg[k])) for k in _CONFIG_KEYS if cfg.get(k) is not None]
    if w.tokenizer is not None:
        pairs.append(("tokenizer", getattr(w.tokenizer, "name", repr(w.tokenizer))))
    out.append('<div class="grid"><div><h3>Architecture</h3>' + kv_table(pairs) + "</div><div>")
    rest = [(k, v) for k, v in card.items() if k not in _CARD_SKIP]
    short = [(k, _card_value(v)) for k, v in rest if not isinstance(v, (dict, list, tuple))]
    long = [(k, _card_value(v)) for k, v in rest if isinstance(v, (dict, list, tuple))]
    if short:
        out.append("<h3>Training</h3>" + kv_table(short))
    elif not long:
        out.append(note("no model card: these weights are not a bundled model"))
    if long:
        out.append(_folded(f"the full training record ({', '.join(k for k, _ in long)})", kv_table(long)))
    out.append("</div></div>")
    return lede + _folded(f"{ctx.arch}; {num(w.n_params())} stored scalars: configuration and training",
                          "".join(out))


# 2. derivation ---------------------------------------------------------------------------------
def _mathml(expansion) -> str:
    """An expansion's derivation as MathML markup to inline (any XML prolog dropped), its
    equations aligned on "=" and the notation in its prose drawn as math."""
    markup = expansion.to_mathml()
    if markup.startswith("<?xml"):
        markup = markup[markup.index("?>") + 2:].lstrip()
    return _prose_math(_align_equations(markup))


_TAG = re.compile(r"<(/?)([a-z]+)[^>]*?(/?)>")


def _element_end(markup: str, start: int) -> int:
    """Index just past the element that opens at ``start`` (balanced tags)."""
    depth = 0
    for m in _TAG.finditer(markup, start):
        if m.group(3):
            pass
        elif m.group(1):
            depth -= 1
        else:
            depth += 1
        if depth == 0:
            return m.end()
    raise ValueError("unbalanced markup")


def _align_equations(markup: str) -> str:
    """Each table row ``lhs = rhs`` (or ``name : term``) becomes two cells, ``lhs`` right-aligned
    and ``= rhs`` left-aligned, so a derivation's equations line up on "=" as with ``align``."""
    out, i, head = [], 0, "<mtd><mrow>"
    while (j := markup.find(head, i)) >= 0:
        lhs_at = j + len(head)
        try:
            lhs_end = _element_end(markup, lhs_at)
        except ValueError:
            break
        if not markup.startswith(("<mo>=</mo>", "<mo>:</mo>"), lhs_end):
            out.append(markup[i:lhs_at])
            i = lhs_at
            continue
        row_end = _element_end(markup, j + len("<mtd>"))          # past the row's </mrow>
        rhs = markup[lhs_end:row_end - len("</mrow>")]
        out.append(markup[i:j] + f'<mtd class="lhs">{markup[lhs_at:lhs_end]}</mtd>'
                   f'<mtd class="rhs"><mrow>{rhs}</mrow>')
        i = row_end
    out.append(markup[i:])
    return "".join(out)


# raw notation in prose (A^h, W_OV^h, Π_{l'<l}, b_U): one letter (or Π, Σ) with a sub/superscript
_NOTATION = re.compile(r"(?<![\w&#])([A-Za-zΠΣ])(?:_(\{[^{}<>]*\}|[A-Za-z0-9]+'?))?(?:\^(\{[^{}<>]*\}|[A-Za-z0-9]+'?))?")


def _mi(text: str) -> str:
    text = text[1:-1] if text.startswith("{") else text
    return f"<mi>{text}</mi>"


def _notation(m: re.Match) -> str:
    base, sub, sup = m.groups()
    if sub is None and sup is None:
        return m.group(0)
    if sub is not None and sup is not None:
        inner = f"<msubsup><mi>{base}</mi>{_mi(sub)}{_mi(sup)}</msubsup>"
    elif sub is not None:
        inner = f"<msub><mi>{base}</mi>{_mi(sub)}</msub>"
    else:
        inner = f"<msup><mi>{base}</mi>{_mi(sup)}</msup>"
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML">{inner}</math>'


def _prose_math(markup: str) -> str:
    """Raw notation in the text of ``<p>`` and ``<h3>`` (outside ``<math>``) as inline MathML."""
    def fix(m: re.Match) -> str:
        return m.group(1) + _NOTATION.sub(_notation, m.group(2)) + m.group(3)

    return re.sub(r"(<(?:p|h[2-4])>)([^<]*)(</(?:p|h[2-4])>)", fix, markup)




def _listable(expand, *args):
    """``expand(*args)``, cut at the largest depth whose terms still number at most
    ``MAX_PATHS`` (the limit on rows listed one by one; a prompt's path view has the same,
    over paths from every source: see ``numeric.attribute.MAX_PATHS``)."""
    from ..numeric.attribute import MAX_PATHS

    full = expand(*args)
    if full.n_terms <= MAX_PATHS:
        return full
    depth = 0
    while expand(*args, max_depth=depth + 1).n_terms <= MAX_PATHS:
        depth += 1
    return expand(*args, max_depth=depth)


def section_derivation(ctx: Context) -> str:
    """The logits as a sum over paths (and the induction head's scores), in MathML."""
    from ..symbolic import expand_logits, expand_scores

    arch = ctx.arch
    exp = _listable(expand_logits, arch)
    out = [
        f'<p>The frozen model\'s logits are a sum of <b class="count">{expand_logits(arch).n_terms:,}</b> '
        f"terms: {arch.n_logit_paths():,} paths per source over the sources "
        f"{escape(', '.join(exp.sources))}."
        + (f" Shown to depth {exp.max_depth}; deeper paths are one remainder term."
           if exp.max_depth is not None else "")
        + " MathML, drawn by the browser itself.</p>",
        _folded(f"the derivation, step by step, and all {exp.n_terms:,} terms",
                f'<div class="math-block" id="derivation-logits">{_mathml(exp)}</div>'),
    ]
    if arch.n_layers > 1 and arch.heads:
        ic = ctx.induction()
        if ic.found:
            head, why = ic.induction_head, "the induction head"
        else:
            head, why = f"L{arch.n_layers - 1}H0", "a head of the last layer (no induction circuit found)"
        scores = _listable(expand_scores, arch, head)
        out.append(
            f"<h3>Attention scores of {escape(head)}, {escape(why)}</h3>"
            f"<p>{expand_scores(arch, head).n_terms:,} (query path, key path) terms: direct, Q-, K- and "
            "Q&amp;K-composition"
            + (f"; shown to depth {scores.max_depth}, deeper pairs as one remainder"
               if scores.max_depth is not None else "")
            + ".</p>"
            + _folded(f"the derivation of {head}'s scores and all {scores.n_terms:,} terms",
                      f'<div class="math-block" id="derivation-scores">{_mathml(scores)}</div>')
        )
    return "".join(out)


# 3. circuit diagram ------------------------------------------------------------------------------
def section_diagram(ctx: Context) -> str:
    """The circuit ``pathexpand diagram`` draws (``render.dot.default_circuit``), by Graphviz."""
    from .dot import diagram

    graph, highlight, title, ic = ctx.circuit()
    if ic.found:
        prev, ind = ic.pair
        caption = (f"The induction circuit: the previous-token head {prev} writes into the key of "
                   f"the induction head {ind} (K-composition, labelled with its score), and {ind} "
                   "writes to the logits. Labels on head → head edges are composition scores; the "
                   "legend names every colour drawn.")
    else:
        caption = ic.reason + ". Shown instead: the five terms with the largest ‖W‖_F."
    return diagram_figure(diagram(graph, highlight=highlight, title=title), caption,
                          "diagram-")


# 4. ranked terms ---------------------------------------------------------------------------------
def section_terms(ctx: Context) -> str:
    """Data-free ranking of every logit term by the Frobenius norm of its virtual weights."""
    from .plots import ranking_bars

    ranking = ctx.terms()
    fig = ranking_bars(ranking, k=15, title="Logit terms by the norm of their virtual weights")
    return (
        "<p>Each term's virtual weight matrix (e.g. W<sub>E</sub> W<sub>OV</sub><sup>0,1</sup> "
        "W<sub>OV</sub><sup>1,0</sup> W<sub>U</sub> for L1H0∘L0H1) measured without data, in "
        "factored form.</p>"
        + '<div class="grid"><div>' + ranking_table(ranking, TOP) + "</div><div>"
        + figure(fig, "the 15 largest terms", "terms-") + "</div></div>"
    )


# 5. detected heads -------------------------------------------------------------------------------
def section_heads(ctx: Context) -> str:
    """Previous-token / induction / duplicate-token heads, from activations and from weights."""
    from .plots import head_scores_heatmap

    scores = ctx.detected()
    best = {kind: scores.top(1, kind=kind)[0] for kind in scores.kinds}
    L, H = scores.shape
    rows, marked = [], []
    for l in range(L):
        for h in range(H):
            name = f"L{l}H{h}"
            rows.append([name] + [num(scores[k][l, h], ".3f") for k in scores.kinds])
            if name in (best["previous_token"].name, best["induction"].name):
                marked.append(len(rows) - 1)
    summary = "".join(
        f"<li>{escape(k.replace('_', '-'))}: <b>{escape(r.name)}</b> ({r.value:.2f}; chance "
        f"{r['baseline']:.3f})</li>" for k, r in best.items()
    )
    settings = scores.settings
    return "".join([
        f"<p>Mean attention on repeated random tokens [r, r] ({settings['n_samples']} samples, "
        f"seq_len {settings['seq_len']}): on the previous token, on the token after the earlier copy "
        "(induction), on the earlier copy itself (duplicate). Best heads:</p>",
        f"<ul>{summary}</ul>",
        table(["head", "previous-token", "induction", "duplicate-token"], rows, numeric=[1, 2, 3],
              best=marked),
        figure(head_scores_heatmap(scores), "chance is the mean of 1/(q+1) over the scored queries",
               "heads-"),
        _weight_detectors(ctx),
    ])


def _weight_detectors(ctx: Context) -> str:
    """The weight-only detectors (no tokens run), each against its Gaussian null."""
    from ..numeric.detect import detect_heads

    try:
        stats = detect_heads(ctx.weights, method="weights")
    except PathexpandError as exc:
        return unavailable(f"from the weights alone: {exc}")
    L, H = stats.shape
    z = {k: stats.z(k) for k in stats.kinds}
    rows = [[f"L{l}H{h}"] + [f"{num(stats[k][l, h], '.3f')} (z {num(z[k][l, h], '.1f')})" for k in stats.kinds]
            for l in range(L) for h in range(H)]
    return ("<h3>From the weights alone</h3>"
            + _folded(f"{len(rows)} heads × {len(stats.kinds)} weight statistics, each with its z against "
                      "a Gaussian null",
                      table(["head", *stats.kinds], rows, numeric=list(range(1, len(stats.kinds) + 1))))
            + "".join(note(f"{k}: {stats.descriptions[k]}") for k in stats.kinds if k in stats.descriptions))


# 6. composition ----------------------------------------------------------------------------------
def section_composition(ctx: Context) -> str:
    """Q-, K-, V-composition heatmaps with the random-weights null, and the strongest pairs."""
    from .plots import composition_heatmaps

    if ctx.arch.n_layers < 2:
        return unavailable("a 1-layer model has no composition: no head reads another head's output")
    comp = ctx.composition()
    null = ", ".join(f"{k.split('_')[0].upper()} {comp.null_mean[k]:.3f}" for k in comp.kinds)
    return (
        "<p>‖W<sub>OV</sub><sup>h₁</sup> R<sup>h₂</sup>‖ / (‖W<sub>OV</sub><sup>h₁</sup>‖ "
        "‖R<sup>h₂</sup>‖) for every earlier head h₁ and later head h₂, with R = W<sub>Q</sub>"
        "W<sub>K</sub><sup>T</sup> (Q), W<sub>K</sub>W<sub>Q</sub><sup>T</sup> (K) or "
        f"W<sub>OV</sub> (V). Mean on Gaussian weights of the same shapes: {escape(null)}.</p>"
        + figure(composition_heatmaps(comp), "red line on each colour bar: the null mean",
                 "composition-")
        + "<h3>Strongest pairs</h3>"
        + _pairs_table(comp.ranking(), 10, ctx.induction().min_z)
    )


def _pairs_table(ranking, k: int, min_z: float) -> str:
    """Pairs by score − null, the score beside its baseline; those not at least ``min_z`` null
    standard deviations above it (``induction_circuit``'s rule) marked and greyed."""
    rows, dim = [], []
    for i, r in enumerate(ranking.top(k), 1):
        z = float(r["z"])
        verdict = ("above baseline" if z >= min_z else
                   "below baseline" if r["score"] <= r["baseline"] else f"within noise (z < {min_z:g})")
        rows.append([i, r.name, r.kind, num(r["score"], ".3f"), num(r["baseline"], ".3f"), num(z, ".1f"),
                     verdict])
        if z < min_z:
            dim.append(i - 1)
    found = sum(1 for r in ranking if float(r["z"]) >= min_z)
    out = table(["#", "pair", "kind", "score", "baseline", "z", "vs baseline"], rows,
                numeric=[0, 3, 4, 5], dim=dim)
    out += note(f"{found} of {len(ranking)} pairs above the random baseline (z ≥ {min_z:g})"
                if found else f"none found: no pair of the {len(ranking)} is above the random baseline "
                              f"(z ≥ {min_z:g})")
    return out + "".join(note(n) for n in ranking.notes)


# 7. eigenvalues ----------------------------------------------------------------------------------
_MAX_PANELS = 16   # eigenvalue panels drawn for a model with more heads than this


def section_eigenvalues(ctx: Context) -> str:
    """Eigenvalues of every full OV circuit (factored) and the copying scores."""
    from ..numeric.detect import copying_scores
    from .plots import eigenvalue_plot

    w = ctx.weights
    if w.config.d_vocab != w.config.d_vocab_out:
        return unavailable("the full OV circuit is not square (d_vocab ≠ d_vocab_out): no eigenvalues")
    stat = copying_scores(w)
    heads, caption, rows = None, "blue: Re λ > 0, red: Re λ < 0", len(ctx.arch.heads)
    if len(ctx.arch.heads) > _MAX_PANELS:     # a large model: the extremes, not a wall of panels
        ranked = [r.name for r in stat.ranking()]
        half = _MAX_PANELS // 2
        heads = ranked[:half] + ranked[-half:]
        caption = (f"the {half} most and {half} least copying of {len(ranked)} heads; "
                   "blue: Re λ > 0, red: Re λ < 0")
        rows = 2 * TOP
    out = (
        "<p>A head whose OV circuit W<sub>E</sub> W<sub>OV</sub> W<sub>U</sub> maps a token to "
        "itself has positive eigenvalues: copying = Re Σλ / Σ|λ| is 1 for a pure copier. "
        f"The eigenvalues come from the {w.config.d_head} × {w.config.d_head} rotation "
        "W<sub>O</sub> W<sub>U</sub> W<sub>E</sub> W<sub>V</sub>: no vocabulary-sized matrix is "
        "formed.</p>"
        + figure(eigenvalue_plot(w, heads=heads), caption, "eig-")
        + ranking_table(stat.ranking(), rows, columns=("name",),
                        extra=("positive_share", "baseline", "z"), share=False)
    )
    if rows < len(ctx.arch.heads):
        out += note(f"the {rows} most copying of {len(ctx.arch.heads)} heads shown; pe.copying_scores "
                    "has every head")
    if w.config.normalization is not None:
        rms = w.config.normalization.startswith("RMS")
        out += note(("RMSNorm: the circuit reads through diag(w) (as folded; no centring), without "
                     "the per-position 1/rms" if rms else
                     "LayerNorm: the circuit reads through C diag(w) (as folded), without the "
                     "per-position 1/σ")
                    + " — the same circuit pe.evaluate and pe.copying_scores use")
    return out


# 8. attribution ----------------------------------------------------------------------------------
def section_attribution(ctx: Context) -> str:
    """Exact per-path attribution of the model's prediction after the sample text."""
    from .plots import attention_patterns

    w = ctx.weights
    res = ctx.attribution()
    heads, who = _shown_heads(ctx)
    shown = ctx.text if ctx.text is not None else " ".join(ctx.labels)
    paths = (ranking_table(res.ranking("path"), TOP) if res.paths is not None else _top_k(ctx))
    return "".join([
        f'<pre class="sample">{escape(shown)}</pre>',
        f"<p>Target: the <b>{escape(res.target_label)}</b>, value {num(res.total)}. With the "
        "attention patterns (and LayerNorm scales, MLP gates) of this input frozen, the "
        f"contributions of all {res.n_paths:,} paths plus the constants sum to it exactly: "
        f"residual error {res.residual_error():.1e}.</p>",
        figure(attention_patterns(w, ctx.tokens, heads=heads),
               f"attention of {who} on the sample (row: query, column: key)", "attn-"),
        '<div class="grid"><div><h3>Top paths</h3>', paths, "</div>",
        "<div><h3>Heads and MLPs</h3>",
        note("each node: the sum over every path through it"),
        ranking_table(res.ranking("node"), TOP, columns=("name",)), "</div></div>",
        "<h3>Edges</h3>", note("a → b: the sum over every path in which b reads a directly"),
        ranking_table(res.ranking("edge"), 10, columns=("name", "kind")),
        _attribution_diagram(ctx, res),
        _why_attend(ctx),
    ])


def _shown_heads(ctx: Context) -> tuple[list[str] | None, str]:
    """The heads whose patterns are drawn (None: every head) and how to name them."""
    ic = ctx.induction()
    if len(ctx.arch.heads) > 4 and ic.found:  # many heads: the pair only
        prev, ind = ic.pair
        return [prev, ind], f"the previous-token head {prev} and the induction head {ind}"
    if len(ctx.arch.heads) > 16:
        heads = list(ctx.arch.heads_in_layer(ctx.arch.n_layers - 1))[:4]
        return heads, ", ".join(heads)
    return None, "each head"


def _attribution_diagram(ctx: Context, res) -> str:
    """The prompt's five strongest paths drawn on the path graph (edge width: contribution)."""
    from ..graph import path_graph
    from .dot import diagram

    dig = diagram(path_graph(ctx.weights, ranking=res), top=5,
                  title=f"top paths of the {res.target_label}")
    return ("<h3>The strongest paths as a circuit</h3>"
            + diagram_figure(dig, "edge width and colour: contribution (blue positive, red negative)",
                             "attr-diagram-"))


def _top_k(ctx: Context) -> str:
    """Certified top paths when the model has too many paths to list them all."""
    from ..numeric.topk import top_k_paths

    tk = top_k_paths(ctx.weights, ctx.tokens[None], k=TOP, budget_seconds=20.0)
    return (ranking_table(tk.ranking(), TOP)     # its notes say whether the list is certified
            + note(f"the listed paths explain {tk.explained:.1%}"))


def _why_attend(ctx: Context) -> str:
    """The induction head's score at the last query, split into (query path × key path) terms."""
    from ..numeric.attribute_scores import attribute_scores
    from ..numeric.forward import run_with_cache

    ic = ctx.induction()
    if not ic.found:
        return ""
    head = ic.induction_head
    l, h = ctx.arch.check_head(head)
    _, cache = run_with_cache(ctx.weights, ctx.tokens[None])
    q = len(ctx.tokens) - 1
    k = int(cache.patterns[0, l, h, q].argmax())
    from ..numeric.attribute_scores import MAX_SIDE_PATHS

    by = "path" if math.isqrt(ctx.arch.n_score_pairs(head)) <= MAX_SIDE_PATHS else "writer"
    sa = attribute_scores(ctx.weights, ctx.tokens[None], head, q, k, by=by)
    top = sorted(sa.top(TOP), key=lambda r: r.value, reverse=True)   # by effect, largest first
    rows = [[r.name, r.kind, num(r.value, ".3f"), num(r["score_term"], ".3f")] for r in top]
    kinds = ", ".join(f"{kind} {v:+.3g}" for kind, v in sa.by_kind().items())
    return (
        f"<h3>Why {escape(head)} attends where it does</h3>"
        f"<p>At the last query ({escape(ctx.labels[q])}) {escape(head)} puts {sa.pattern:.0%} of its "
        f"attention on key {k} ({escape(ctx.labels[k])}). Its score there, {sa.score:.4g}, split "
        
        + ("into (query path × key path) terms" if by == "path" else
           "into (query writer × key writer) terms — each side split by the last head, MLP or source "
           "that wrote into the stream, since the paths are too many to list")
        + f" (residual error {sa.residual_error():.1e}); by kind: "
        f"{escape(kinds)}. The {len(rows)} terms that move the softmax most, by their effect:</p>"
        + table(["term", "kind", "effect", "score term"], rows, numeric=[2, 3])
    )


# 8b. interactive views ---------------------------------------------------------------------------
def section_interactive(ctx: Context) -> str:
    """Attention per head (hover), the prompt coloured by a path, the clickable path graph."""
    from ..names import parse_node
    from .interactive import attention_view, circuitsvis_bundle, path_graph_view, prompt_view

    res = ctx.attribution()
    heads, who = _shown_heads(ctx)
    att = attention_view(ctx.weights, ctx.tokens[None], heads=heads)
    out = ["<h3>Attention patterns</h3>", note(f"{who} on the sample"), att.html]
    ctx.views.append(att)
    if res.paths is None:   # too many to list: no ranking to colour by, and no search here
        out.append(note(f"no coloured prompt: this model has {res.n_paths:,} paths, more than the report "
                        "lists, so there is no ranking of them all to pick the largest from; "
                        "pe.render.prompt_view(weights, text, paths=...) colours by paths you name"))
    elif circuitsvis_bundle() is not None:   # else att says what is missing
        ranked = res.ranking("path")
        paths = [r.path for r in ranked.top(len(ranked)) if parse_node(r.path[0]).kind == "source"][:8]
        if paths:
            pv = prompt_view(ctx.weights, ctx.tokens[None], paths=paths)
            out += ["<h3>The prompt, coloured by a path</h3>",
                    note("what each token adds to the prediction as the source of the chosen path; "
                         "each path's colours sum to its contribution in Top paths"), pv.html]
            ctx.views.append(pv)
    if res.paths is not None:
        pg = path_graph_view(res, k=10)
        out += ["<h3>The top paths, clickable</h3>",
                note(f"the 10 largest paths of the {res.target_label}: click a path or its row to light "
                     "it up and read its contribution; click a head for the sum over every path "
                     "through it"), pg.html]
        ctx.views.append(pg)
    else:
        from ..numeric.attribute import MAX_PATHS

        out.append(note(f"no path graph: this model has {res.n_paths:,} paths, more than the "
                        f"{MAX_PATHS:,} the attribution lists one by one; Top paths lists the "
                        "largest by certified search"))
    return "".join(out)


# 9. order importance -----------------------------------------------------------------------------
def section_order(ctx: Context) -> str:
    """Loss of the frozen model keeping paths up to depth n, and each term's marginal effect."""
    from ..numeric.order import order_importance
    from .plots import order_importance_curve

    oi = order_importance(ctx.weights, ctx.tokens[None])
    rows = [[int(n), num(l, ".4f"), num(l - oi.model_loss, "+.4f"), num(e), num(r)]
            for n, l, e, r in zip(oi.depths, oi.loss, oi.logit_error, oi.logit_rms)]
    out = [
        '<div class="grid"><div>',
        table(["depth ≤ n", "loss (nats)", "Δ vs model", "max |Δlogit|", "rms Δlogit"], rows,
              numeric=[0, 1, 2, 3, 4]),
        note(f"model loss {oi.model_loss:.4f} nats on the {oi.n_tokens} predicted tokens of the sample"),
        "</div><div>",
        figure(order_importance_curve(oi), "dashed: the model's own loss, reached at full depth",
               "order-"),
        "</div></div>",
    ]
    if oi.terms is not None:
        out.append("<h3>Loss increase when one term is removed</h3>"
                   + ranking_table(oi.ranking(), TOP, share=False))
    out += [note(n) for n in oi.notes]
    return "".join(out)


SECTIONS: tuple[tuple[str, str, Callable[[Context], str]], ...] = (
    ("summary", "Summary", section_summary),
    ("card", "Model card", section_card),
    ("derivation", "Derivation", section_derivation),
    ("diagram", "Circuit diagram", section_diagram),
    ("terms", "Ranked terms", section_terms),
    ("heads", "Detected heads", section_heads),
    ("composition", "Composition scores", section_composition),
    ("eigenvalues", "OV eigenvalues and copying", section_eigenvalues),
    ("attribution", "Attribution of a sample text", section_attribution),
    ("interactive", "Interactive views", section_interactive),
    ("order", "Term importance by order", section_order),
)
"""``(id, title, builder)`` of every section, in page order."""
