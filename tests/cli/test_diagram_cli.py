"""``pathexpand diagram`` through ``pathexpand.cli.main``: every mode on small saved models,
checked against dense numpy (composition scores, term norms) and the attribution's path view;
bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.cli import main
from pathexpand.numeric.weights import Config, expected_shapes


def _random(seed=0, **cfg) -> pe.Weights:
    base = dict(n_layers=2, n_heads=3, d_model=8, d_head=4, d_vocab=10, n_ctx=8,
                positional="shortformer")
    base.update(cfg)
    c = Config(**base)
    rng = np.random.default_rng(seed)
    params = {}
    for k, s in expected_shapes(c).items():
        bias = k.rsplit(".", 1)[-1].startswith("b")
        params[k] = np.zeros(s) if bias else 0.5 * rng.standard_normal(s)
    return pe.Weights(params, c)


@pytest.fixture(scope="module")
def model2(tmp_path_factory):
    w = _random()
    path = tmp_path_factory.mktemp("models") / "tiny2.safetensors"
    pe.save(w, path)
    return w, str(path)


@pytest.fixture(scope="module")
def bytes_model(tmp_path_factory):
    w = _random(seed=5, n_layers=1, n_heads=2, d_vocab=256, positional="standard")
    path = tmp_path_factory.mktemp("models") / "bytes1.safetensors"
    pe.save(w, path, card={"tokenizer": "bytes"})
    return pe.load(path), str(path)  # loaded: the card gives it the byte tokenizer


def _highlighted(dot_text: str) -> set[str]:
    return {ln.split('id="')[1].split('"')[0] for ln in dot_text.splitlines()
            if "class=highlight" in ln}


def _drawn_edges(G, path) -> set[str]:
    """Ids of a path's drawn edges: its reads (``L0H0.v → L0H0`` steps are inside nodes)."""
    return {f"{u}->{v}" for u, v, _ in pe.graph.path_edges(G, path) if not u.endswith(".v")}


def _run(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _dense_k_composition(w):
    """argmax over (earlier, later) of ‖W_OV^1 W_K^2 W_Q^2ᵀ‖_F / (‖W_OV^1‖_F ‖W_K W_Qᵀ‖_F)."""
    best, pair = -1.0, None
    H = w.config.n_heads
    for h1, h2 in itertools.product(range(H), range(H)):
        L = w["blocks.0.attn.W_V"][h1] @ w["blocks.0.attn.W_O"][h1]
        R = w["blocks.1.attn.W_K"][h2] @ w["blocks.1.attn.W_Q"][h2].T
        s = np.linalg.norm(L @ R) / (np.linalg.norm(L) * np.linalg.norm(R))
        if s > best:
            best, pair = s, (f"L0H{h1}", f"L1H{h2}")
    return pair, best


def test_default_draws_the_induction_circuit(tmp_path, capsys):
    """The bundled default: the pair pe.induction_circuit names is the pair the forward-pass
    detector finds (behaviour on repeated random tokens) and the one whose K-composition, by
    dense products, is the largest; its score and z are in the title."""
    w = pe.load("attn-only-2l")
    out = tmp_path / "c.dot"
    rc, stdout, err = _run(["diagram", "-o", str(out)], capsys)
    assert rc == 0, err
    scores = pe.detect_heads(w, n_samples=32)
    prev = f"L0H{int(np.argmax(scores['previous_token'][0]))}"
    ind = f"L1H{int(np.argmax(scores['induction'][1]))}"
    (dense_prev, dense_ind), score = _dense_k_composition(w)
    assert (prev, ind) == (dense_prev, dense_ind)
    text = out.read_text()
    assert f"induction circuit {prev} → {ind} (K-composition {score:.2f}, null 0.088, z " in text
    assert _highlighted(text) == {
        f"{prev}->{ind}.k", f"embed->{prev}.v", f"embed->{ind}.q",       # key and query side
        f"embed->{ind}.v", f"{ind}->logits",                            # the copying OV path
        f"pos->{prev}.q", f"pos->{prev}.k",                              # positional attention
    }
    assert f'label="K {score:.2f}"' in text
    assert f"wrote {out}" in stdout


def test_random_weights_have_no_induction_circuit(model2, tmp_path, capsys):
    """Random weights: K-composition always has a largest pair, but no head attends like an
    induction head, so the diagram says none was found and draws the top terms instead."""
    w, path = model2
    out = tmp_path / "c.dot"
    rc, stdout, err = _run(["diagram", path, "-o", str(out)], capsys)
    assert rc == 0, err
    assert not pe.induction_circuit(w).found
    text = out.read_text()
    assert "no induction circuit found; top 5 terms by ‖W‖_F" in text
    assert "no induction circuit found" in stdout


def test_term_and_score_term(model2, tmp_path, capsys):
    _, path = model2
    out = tmp_path / "t.dot"
    rc, _, err = _run(["diagram", path, "--term", "L1H2∘L0H0", "-o", str(out)], capsys)
    assert rc == 0, err
    assert _highlighted(out.read_text()) == {"embed->L0H0.v", "L0H0->L1H2.v", "L1H2->logits"}
    rc, _, err = _run(["diagram", path, "--scores", "L1H0", "--term", "q:pos · k:L0H2",
                       "-o", str(out)], capsys)
    assert rc == 0, err
    assert _highlighted(out.read_text()) == {"pos->L1H0.q", "embed->L0H2.v", "L0H2->L1H0.k"}


def test_top_terms_are_the_largest_by_dense_norm(model2, tmp_path, capsys):
    w, path = model2
    out = tmp_path / "top.dot"
    rc, _, err = _run(["diagram", path, "--top", "3", "-o", str(out)], capsys)
    assert rc == 0, err
    WE, WU = w["W_E"], w["W_U"]
    ov = {f"L{l}H{h}": w[f"blocks.{l}.attn.W_V"][h] @ w[f"blocks.{l}.attn.W_O"][h]
          for l in range(2) for h in range(3)}
    norms = {("embed",): np.linalg.norm(WE @ WU)}
    for a in ov:
        norms[("embed", a)] = np.linalg.norm(WE @ ov[a] @ WU)
        for b in ov:
            if a[1] < b[1]:
                norms[("embed", a, b)] = np.linalg.norm(WE @ ov[a] @ ov[b] @ WU)
    top3 = sorted(norms, key=lambda p: -norms[p])[:3]
    G = pe.path_graph(pe.Architecture(2, 3, positional="shortformer"))
    want = {e for p in top3 for e in _drawn_edges(G, p)}
    assert _highlighted(out.read_text()) == want


def test_top_score_terms(model2, tmp_path, capsys):
    _, path = model2
    out = tmp_path / "s.dot"
    rc, _, err = _run(["diagram", path, "--scores", "L1H1", "--top", "2", "-o", str(out)], capsys)
    assert rc == 0, err
    text = out.read_text()
    assert "top 2 L1H1's score terms" in text
    # one panel per term (small multiples), its edges named term{i}/{writer}->{reader}
    assert text.count("subgraph cluster_term") == 2
    ids = {ln.split('id="')[1].split('"')[0] for ln in text.splitlines() if 'id="term' in ln
           and "->" in ln}
    hot = {i.split("/", 1)[1] for i in ids}
    assert hot and all(e.endswith((".q", ".k", ".v")) for e in hot)
    assert {e for e in hot if e.endswith((".q", ".k"))} <= {
        f"{s}->L1H1.{c}" for s in ("embed", "pos", "L0H0", "L0H1", "L0H2") for c in "qk"}
    for i in (0, 1):   # each panel reaches both the query and the key of L1H1
        assert {c for e in ids if e.startswith(f"term{i}/") for c in "qk"
                if e.endswith(f"->L1H1.{c}")} == {"q", "k"}


def test_text_draws_the_prompt_s_strongest_paths(bytes_model, tmp_path, capsys):
    w, path = bytes_model
    out = tmp_path / "p.dot"
    rc, _, err = _run(["diagram", path, "--text", "abcab", "--target", "c", "--top", "2",
                       "-o", str(out)], capsys)
    assert rc == 0, err
    text = out.read_text()
    # second route: the attribution's full path view, largest |contribution| first
    rows = pe.attribute(w, "abcab", target="c").to_records(view="path")
    best = max(rows, key=lambda r: abs(r["value"]))["path"]
    assert _drawn_edges(pe.path_graph(w), best) <= _highlighted(text)
    assert "top 2 paths of" in text
    hot_lines = [ln for ln in text.splitlines() if "class=highlight" in ln]
    assert all('label="+' in ln or 'label="-' in ln for ln in hot_lines)  # signed contributions


@pytest.mark.needs_graphviz
def test_every_format(model2, tmp_path, capsys):
    _, path = model2
    for suffix, magic in ((".svg", b"<?xml"), (".png", b"\x89PNG"), (".pdf", b"%PDF")):
        out = tmp_path / f"c{suffix}"
        rc, _, err = _run(["diagram", path, "-o", str(out)], capsys)
        assert rc == 0, err
        assert out.read_bytes()[: len(magic)] == magic
    ET.fromstring((tmp_path / "c.svg").read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pdf", "c.png", "c.svg"]


@pytest.mark.parametrize("args, message", [
    (["nope-model"], "neither a bundled model nor an existing file"),
    (["{model}", "--scores", "L7H0"], "'L7H0' is not in this 2-layer model"),
    (["{model}", "--term", "L1H0∘L1H1"], "is not a term of this expansion"),
    (["{model}", "--term", "L1H0", "--top", "2"], "do not combine it with --top"),
    (["{model}", "--target", "a"], "--target goes with --text"),
    (["{model}", "--text", "ab", "--scores", "L1H0"], "--scores with --text is not supported"),
    (["{model}", "--top", "0"], "--top must be a positive number"),
    (["{model}", "--layout", "circle"], "--layout must be one of layers, left-right"),
    (["{model}", "--text", "ab"], "no tokenizer"),
])
def test_bad_input_exits_2_with_one_line(model2, tmp_path, capsys, args, message):
    _, path = model2
    out = tmp_path / "c.svg"
    rc, stdout, err = _run(["diagram", *[a.replace("{model}", path) for a in args], "-o", str(out)],
                           capsys)
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err + stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, message", [
    ("c.jpg", "cannot tell the format"),
    ("missing/c.svg", "does not exist"),
    (".", "is a directory"),
])
def test_bad_output_path(model2, tmp_path, capsys, monkeypatch, target, message):
    _, path = model2
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["diagram", path, "-o", target], capsys)
    assert rc == 2 and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_dot_leaves_nothing_behind(model2, tmp_path, capsys, monkeypatch):
    _, path = model2
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    rc, _, err = _run(["diagram", path, "-o", str(tmp_path / "c.svg")], capsys)
    assert rc == 2 and "install Graphviz" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_help_has_an_example(capsys):
    rc, stdout, _ = _run(["diagram", "--help"], capsys)
    assert rc == 0
    assert "Examples" in stdout and "pathexpand diagram --term" in stdout


def test_other_reads_only_when_asked(model2, tmp_path, capsys):
    """By default only the highlighted terms are drawn; ``--max-edges N`` adds the N heaviest
    other reads, faded (their colour carries an alpha), and the legend says so."""
    _, path = model2
    out = tmp_path / "c.dot"
    rc, _, err = _run(["diagram", path, "--term", "L1H2∘L0H0", "-o", str(out)], capsys)
    assert rc == 0, err
    faded = [ln for ln in out.read_text().splitlines() if "weight=0" in ln]
    assert faded == [] and "(faded)" not in out.read_text()
    rc, _, err = _run(["diagram", path, "--term", "L1H2∘L0H0", "--max-edges", "3", "-o", str(out)],
                      capsys)
    assert rc == 0, err
    text = out.read_text()
    faded = [ln for ln in text.splitlines() if "weight=0" in ln]
    assert len(faded) == 3 and all(ln.split('color="')[1].split('"')[0].endswith("59")
                                   for ln in faded)
    assert "other reads, the 3 heaviest (faded)" in text
