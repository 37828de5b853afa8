"""Plots: labels are head names and token strings, the data drawn equals the numeric API's
(read back from the artists), and a second, dense route agrees at small sizes."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError, UnknownHeadError
from pathexpand.models.tokenizer import ByteTokenizer
from pathexpand.numeric.composition import composition_scores
from pathexpand.numeric.detect import DATA_KINDS as KINDS
from pathexpand.numeric.detect import copying_scores, detect_heads
from pathexpand.numeric.forward import run_with_cache
from pathexpand.numeric.order import order_importance
from pathexpand.ranking import Ranking
from pathexpand.render import plots

TEXT = "ab(cd)\nab"


def _random_weights(n_layers: int, n_heads: int, *, seed: int = 0, biases: bool = True) -> pe.Weights:
    rng = np.random.default_rng(seed)
    V, d, dh, n_ctx = 256, 16, 4, 24
    sd = {"W_E": rng.normal(size=(V, d)), "W_pos": rng.normal(size=(n_ctx, d)),
          "W_U": rng.normal(size=(d, V)) / 4, "b_U": rng.normal(size=V) if biases else np.zeros(V)}
    for l in range(n_layers):
        for m in "QKV":
            sd[f"blocks.{l}.attn.W_{m}"] = rng.normal(size=(n_heads, d, dh)) / 3
            sd[f"blocks.{l}.attn.b_{m}"] = rng.normal(size=(n_heads, dh)) * biases
        sd[f"blocks.{l}.attn.W_O"] = rng.normal(size=(n_heads, dh, d)) / 3
        sd[f"blocks.{l}.attn.b_O"] = rng.normal(size=d) * biases
    return pe.Weights.from_state_dict(sd, tokenizer=ByteTokenizer(), name=f"random-{n_layers}l")


@pytest.fixture(scope="module")
def w2():
    return _random_weights(2, 3)


def _labels(ticklabels) -> list[str]:
    return [t.get_text() for t in ticklabels]


def _images(fig):
    return {im.get_gid(): im for ax in fig.axes for im in ax.get_images() if im.get_gid()}


# composition -----------------------------------------------------------------------------------
def test_composition_heatmaps_draw_the_api_scores_with_head_names(w2):
    comp = composition_scores(w2, "all", baseline="random")
    fig = plots.composition_heatmaps(comp)
    images = _images(fig)
    assert set(images) == {"composition-q", "composition-k", "composition-v"}
    for kind in "qkv":
        im = images[f"composition-{kind}"]
        drawn = np.ma.filled(im.get_array(), np.nan)
        np.testing.assert_allclose(drawn, comp[f"{kind}_composition"][0, :, 1, :], rtol=1e-12)
        ax = im.axes
        assert _labels(ax.get_yticklabels()) == ["L0H0", "L0H1", "L0H2"]
        assert _labels(ax.get_xticklabels()) == ["L1H0", "L1H1", "L1H2"]
        assert ax.get_title() == f"{kind.upper()}-composition"
    # the baseline: a line on each colour bar at the null mean
    bars = [ax for ax in fig.axes if ax not in [im.axes for im in images.values()]]
    marks = sorted(float(line.get_ydata()[0]) for ax in bars for line in ax.get_lines())
    assert marks == pytest.approx(sorted(comp.null_mean.values()))


def test_composition_cell_is_the_dense_score_of_that_head_pair(w2):
    """Second route: cell (L0H1 row, L1H2 column) of the K panel is ‖W_OV W_K W_Qᵀ‖/(‖W_OV‖‖W_K W_Qᵀ‖)."""
    fig = plots.composition_heatmaps(composition_scores(w2, baseline=None), kinds=("k_composition",))
    im = _images(fig)["composition-k"]
    row = _labels(im.axes.get_yticklabels()).index("L0H1")
    col = _labels(im.axes.get_xticklabels()).index("L1H2")
    W = {m: np.asarray(w2[f"blocks.{l}.attn.W_{m}"], dtype=np.float64) for l, m in ((0, "V"), (0, "O"))}
    ov = W["V"][1] @ W["O"][1]
    R = w2["blocks.1.attn.W_K"][2].astype(np.float64) @ w2["blocks.1.attn.W_Q"][2].T.astype(np.float64)
    dense = np.linalg.norm(ov @ R) / (np.linalg.norm(ov) * np.linalg.norm(R))
    assert im.get_array()[row, col] == pytest.approx(dense, rel=1e-5)


def test_composition_three_layers_blanks_pairs_that_do_not_compose():
    w3 = _random_weights(3, 2, seed=1, biases=False)
    fig = plots.composition_heatmaps(composition_scores(w3, baseline=None), kinds=("v_composition",))
    im = _images(fig)["composition-v"]
    rows, cols = _labels(im.axes.get_yticklabels()), _labels(im.axes.get_xticklabels())
    assert rows == ["L0H0", "L0H1", "L1H0", "L1H1"] and cols == ["L1H0", "L1H1", "L2H0", "L2H1"]
    drawn = np.ma.filled(im.get_array(), np.nan)
    assert np.isnan(drawn[2:, :2]).all()  # L1 heads cannot feed L1 heads
    assert np.isfinite(drawn[:2, :]).all() and np.isfinite(drawn[2:, 2:]).all()


def test_composition_needs_two_layers():
    with pytest.raises(PathexpandError, match="two layers"):
        plots.composition_heatmaps(composition_scores(_random_weights(1, 2, biases=False), baseline=None))
    with pytest.raises(PathexpandError, match="kind 'x'"):
        plots.composition_heatmaps(composition_scores(_random_weights(2, 1), "q_composition"), kinds=("x",))
    with pytest.raises(PathexpandError, match="CompositionScores"):
        plots.composition_heatmaps(_random_weights(2, 1))


# eigenvalues -----------------------------------------------------------------------------------
def test_eigenvalue_scatter_is_the_dense_spectrum_and_copying_matches_weight_detect(w2):
    fig = plots.eigenvalue_plot(w2)
    stat = copying_scores(w2)  # the weight-only detector: the same circuit, another public route
    WE, WU = (np.asarray(w2[k], np.float64) for k in ("W_E", "W_U"))
    titles = {}
    for ax in fig.axes:
        (pts,) = [c for c in ax.collections if (c.get_gid() or "").startswith("eig-")]
        name = pts.get_gid()[4:]
        l, h = int(name[1]), int(name[3])
        V = np.asarray(w2[f"blocks.{l}.attn.W_V"][h], np.float64)
        O = np.asarray(w2[f"blocks.{l}.attn.W_O"][h], np.float64)
        dense = np.linalg.eigvals(WE @ V @ O @ WU)  # 256 × 256: small enough to build here
        dense = dense[np.argsort(-np.abs(dense))][: V.shape[1]]
        drawn = pts.get_offsets()
        got = np.sort_complex(np.asarray(drawn[:, 0]) + 1j * np.asarray(drawn[:, 1]))
        np.testing.assert_allclose(got, np.sort_complex(dense), rtol=1e-6, atol=1e-6 * np.abs(dense).max())
        copying = float(re.search(r"copying (-?\d\.\d\d)", ax.get_title()).group(1))
        assert copying == pytest.approx(stat["copying"][l, h], abs=0.005)
        assert copying == pytest.approx(dense.sum().real / np.abs(dense).sum(), abs=0.005)
        assert ax.get_xlabel() == "Re λ" and ax.get_ylabel() == "Im λ"
        titles[name] = ax.get_title()
    assert sorted(titles) == [f"L{l}H{h}" for l in range(2) for h in range(3)]


def test_eigenvalue_plot_selected_heads_and_errors(w2):
    fig = plots.eigenvalue_plot(w2, heads=["L1H2", "L0H0"])
    shown = [ax.get_title().split()[0] for ax in fig.axes if ax.get_visible()]
    assert shown == ["L1H2", "L0H0"]
    with pytest.raises(UnknownHeadError, match="L5H0"):
        plots.eigenvalue_plot(w2, heads=["L5H0"])
    with pytest.raises(PathexpandError, match="scope"):
        plots.ov_eigenvalues(w2, scope="vocab")


def test_copying_score_of_a_pure_copier_is_one():
    import torch

    from pathexpand.numeric.evaluate import copying_statistics

    assert float(copying_statistics(torch.tensor([2.0, 1.0 + 0j, 0.5]))[0]) == pytest.approx(1.0)
    assert float(copying_statistics(torch.tensor([-1.0, 1j, -1j]))[0]) == pytest.approx(-1 / 3)


# attention -------------------------------------------------------------------------------------
def test_attention_axes_are_token_strings_and_data_is_the_pattern(w2):
    fig = plots.attention_patterns(w2, TEXT)
    tok = ByteTokenizer()
    ids = tok.encode(TEXT)
    expected = [tok.token_str(i) for i in ids]
    assert "\\n" in expected
    _, cache = run_with_cache(w2, np.array([ids]))
    images = _images(fig)
    assert sorted(images) == sorted(f"attn-L{l}H{h}" for l in range(2) for h in range(3))
    for gid, im in images.items():
        l, h = int(gid[6]), int(gid[8])
        np.testing.assert_allclose(im.get_array(), cache.patterns[0, l, h].numpy(), rtol=1e-6)
        assert _labels(im.axes.get_xticklabels()) == expected
        assert _labels(im.axes.get_yticklabels()) == expected
        assert im.axes.get_title() == gid[5:]


def test_attention_layer0_pattern_equals_a_hand_softmax(w2):
    """Second route for layer 0: softmax_causal((x W_Q + b_Q)(x W_K + b_K)ᵀ/√d_head)."""
    ids = ByteTokenizer().encode(TEXT)
    fig = plots.attention_patterns(w2, TEXT, heads=["L0H1"])
    (im,) = _images(fig).values()
    p = {k: np.asarray(w2[k], np.float64) for k in w2.keys()}
    x = p["W_E"][ids] + p["W_pos"][: len(ids)]
    q = x @ p["blocks.0.attn.W_Q"][1] + p["blocks.0.attn.b_Q"][1]
    k = x @ p["blocks.0.attn.W_K"][1] + p["blocks.0.attn.b_K"][1]
    s = q @ k.T / math.sqrt(q.shape[1])
    s[np.triu_indices(len(ids), 1)] = -np.inf
    a = np.exp(s - s.max(1, keepdims=True))
    np.testing.assert_allclose(im.get_array(), a / a.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_attention_token_ids_without_tokenizer_and_bad_input(w2):
    bare = w2.replace()
    bare.tokenizer = None
    fig = plots.attention_patterns(bare, [5, 7, 9], heads="L1H0")
    (im,) = _images(fig).values()
    assert _labels(im.axes.get_xticklabels()) == ["5", "7", "9"]
    with pytest.raises(PathexpandError, match="tokenizer"):
        plots.attention_patterns(bare, "abc")
    with pytest.raises(PathexpandError, match="empty"):
        plots.attention_patterns(w2, "")
    with pytest.raises(PathexpandError, match="integer ids"):
        plots.attention_patterns(w2, [[1.5, 2.0], [1.0, 2.0]])


# detected heads, rankings, order -----------------------------------------------------------------
def test_head_scores_heatmap_draws_detect_heads(w2):
    scores = detect_heads(w2, seq_len=6, n_samples=4)
    fig = plots.head_scores_heatmap(scores)
    images = _images(fig)
    for kind in KINDS:
        im = images[f"heads-{kind}"]
        np.testing.assert_array_equal(im.get_array(), scores[kind])
        assert _labels(im.axes.get_yticklabels()) == ["L0", "L1"]
        assert _labels(im.axes.get_xticklabels()) == ["H0", "H1", "H2"]
        cells = {t.get_text().split("\n")[0] for t in im.axes.texts}
        assert cells == {f"L{l}H{h}" for l in range(2) for h in range(3)}
    with pytest.raises(PathexpandError, match="HeadScores"):
        plots.head_scores_heatmap({"previous_token": 1})


def test_ranking_bars_draw_the_top_rows():
    rows = [dict(name=f"t{i}", kind="head", depth=1, path=("embed", f"L0H{i}"), value=v)
            for i, v in enumerate([0.5, -3.0, 2.0, 0.1, -1.0])]
    ranking = Ranking(rows, value_label="contribution", by_magnitude=True)
    fig = plots.ranking_bars(ranking, k=3)
    (ax,) = fig.axes
    bars = {p.get_gid(): p.get_width() for p in ax.patches}
    assert bars == {"ranking-bar-1": -3.0, "ranking-bar-2": 2.0, "ranking-bar-3": -1.0}
    assert [p.get_width() for p in ax.patches] == [-1.0, 2.0, -3.0]  # the top row drawn last
    assert _labels(ax.get_yticklabels()) == ["t4", "t2", "t1"]
    assert ax.get_xlabel() == "contribution"
    with pytest.raises(PathexpandError, match="Ranking"):
        plots.ranking_bars([1, 2, 3])
    with pytest.raises(PathexpandError, match="positive int"):
        plots.ranking_bars(ranking, k=0)


def test_ranking_bars_accept_objects_with_ranking(w2):
    comp = composition_scores(w2, "all", baseline="random")
    fig = plots.ranking_bars(comp, k=4)
    (ax,) = fig.axes
    top = comp.ranking().top(4)
    assert _labels(ax.get_yticklabels()) == top.names[::-1]
    assert [p.get_width() for p in ax.patches] == pytest.approx(list(top.values[::-1]))


def test_order_importance_curve_draws_losses(w2):
    oi = order_importance(w2, [ByteTokenizer().encode("def f(x): return x")], terms=False)
    fig = plots.order_importance_curve(oi)
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}
    np.testing.assert_allclose(lines["order-loss"].get_ydata(), oi.loss)
    np.testing.assert_allclose(lines["order-logit-rms"].get_ydata(), oi.logit_rms)
    assert list(lines["order-loss"].get_xdata()) == [0, 1, 2]
    ax = lines["order-loss"].axes
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert dashed[0].get_ydata()[0] == pytest.approx(oi.model_loss)
    assert oi.loss[-1] == pytest.approx(oi.model_loss, rel=1e-5)  # full depth is the model
    assert _labels(ax.get_xticklabels()) == ["0", "1", "2"]
    with pytest.raises(PathexpandError, match="OrderImportance"):
        plots.order_importance_curve(w2)


# files and inline SVG ----------------------------------------------------------------------------
def test_figures_save_to_svg_and_png(w2, tmp_path):
    fig = plots.composition_heatmaps(composition_scores(w2, baseline=None), kinds=("q_composition",))
    fig.savefig(tmp_path / "c.svg")
    fig.savefig(tmp_path / "c.png", dpi=40)
    root = ET.parse(tmp_path / "c.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.figure_png_base64(fig, dpi=30).startswith("iVBORw0KGgo")  # base64 of the PNG magic


def test_duplicate_ids_are_made_unique():
    svg = '<svg><image id="a"/><image id="a"/><use href="#a"/><g id="b"/></svg>'
    out = plots.scope_svg_ids(svg, "p-")
    assert re.findall(r'id="([^"]+)"', out) == ["p-a", "p-a-2", "p-b"]
    assert 'href="#p-a"' in out


def test_inline_svgs_have_disjoint_ids_and_local_references(w2):
    figs = [plots.ranking_bars(composition_scores(w2, "q_composition"), k=3) for _ in range(2)]
    svgs = [plots.figure_svg(f, id_prefix=f"f{i}-") for i, f in enumerate(figs)]
    id_sets = []
    for svg, prefix in zip(svgs, ("f0-", "f1-")):
        assert svg.startswith("<svg") and "<?xml" not in svg
        ET.fromstring(svg)  # well-formed on its own
        all_ids = re.findall(r'\bid="([^"]+)"', svg)
        ids = set(all_ids)
        assert len(all_ids) == len(ids)
        refs = set(re.findall(r'(?:href="|url\()#([^")]+)', svg))
        assert ids and all(i.startswith(prefix) for i in ids)
        assert refs <= ids  # every reference points inside the same figure
        id_sets.append(ids)
    assert not id_sets[0] & id_sets[1]
