"""``pe.source_contributions``: a path's contribution split by the position of its source.

Second routes: ``pe.attribute``'s path values (each column sums to them, for every target form
``attribute`` takes), on a bundled model and a random model with MLPs and LayerNorm; and a
dense numpy computation on a tiny attention-only model, from its own forward pass:
``mean_p (A^{h_k} ⋯ A^{h_1})[p, j] · S[j] W_OV^{h_1} ⋯ W_OV^{h_k} W_U u``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe
from pathexpand.errors import PathexpandError

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = np.array([3, 1, 4, 1, 5, 9, 2, 6])


def _field_paths(res):
    """Every path of ``res`` whose source is a field over positions (not an LN bias)."""
    return [p for p in res.paths if ".ln" not in p[0]]


@pytest.mark.parametrize("name,kw", [
    ("attn2", dict(target=None)),
    ("attn2", dict(diff=(2, 7), positions=[-1, -3])),
    ("gelu", dict(target=5, positions="all")),
    ("gelu", dict(target=np.linspace(-1, 1, 11))),
    ("ln_attn", dict(target=("diff", 4, 0))),
])
def test_columns_sum_to_attribute_on_random_models(name, kw):
    w = cases.random_weights(**cases.CONFIGS[name])
    res = pe.attribute(w, TOKENS[None], views=("path",), **kw)
    paths = _field_paths(res)
    split = pe.source_contributions(w, TOKENS, paths, **kw)
    assert split.values.shape == (len(TOKENS), len(paths))
    assert split.target_label == res.target_label and split.positions == res.positions
    expect = [res.ranking("path")[i].value for i, p in enumerate(res.paths) if p in paths]
    np.testing.assert_allclose(split.values.sum(0), expect, rtol=1e-9, atol=1e-12)
    # causal: nothing after the last target position reaches it
    last = max(res.positions)
    assert np.abs(split.values[last + 1:]).max(initial=0.0) == 0.0


def test_columns_sum_to_attribute_on_a_bundled_model():
    w = pe.load("gelu-2l")
    text = "def f(x): return f(x)"
    res = pe.attribute(w, text, views=("path",))
    paths = [p for p in res.paths if p[0] in ("embed", "pos")][:40]
    split = pe.source_contributions(w, text, paths)
    assert split.values.shape == (len(w.tokenizer.encode(text)), len(paths))
    np.testing.assert_allclose(split.values.sum(0), [float(res.path(p).mean()) for p in paths],
                               rtol=1e-4, atol=1e-5)                       # float32 weights
    direct = split.column(("embed",))
    assert np.count_nonzero(direct[:-1]) == 0 and direct[-1] != 0         # the direct path reads the last token


def _dense_patterns(P, tokens):
    """Attention patterns ``{(l, h): A [n, n]}`` of an attention-only model with standard
    positions and no LayerNorm, from the DESIGN.md forward pass in plain numpy."""
    n = len(tokens)
    x = P["W_E"][tokens] + P["W_pos"][:n]
    L = sum(k.endswith("attn.W_Q") for k in P)
    H = P["blocks.0.attn.W_Q"].shape[0]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    A = {}
    for l in range(L):
        a = f"blocks.{l}.attn."
        out = np.zeros_like(x)
        for h in range(H):
            q = x @ P[a + "W_Q"][h] + P[a + "b_Q"][h]
            k = x @ P[a + "W_K"][h] + P[a + "b_K"][h]
            s = q @ k.T / np.sqrt(q.shape[1]) + mask
            e = np.exp(s - s.max(1, keepdims=True))
            A[l, h] = e / e.sum(1, keepdims=True)
            out += A[l, h] @ (x @ P[a + "W_V"][h] + P[a + "b_V"][h]) @ P[a + "W_O"][h]
        x = x + out + P[a + "b_O"]
    return A


def test_split_is_the_dense_path_term_per_source_position():
    w = cases.random_weights(**cases.CONFIGS["attn2"])
    P = {k: np.asarray(v, dtype=np.float64) for k, v in w.state_dict().items()}
    A = _dense_patterns(P, TOKENS)
    n = len(TOKENS)
    positions = [n - 1, n - 3]
    u = np.zeros(P["W_U"].shape[1])
    u[2], u[7] = 1.0, -1.0
    rows = {"embed": P["W_E"][TOKENS], "pos": P["W_pos"][:n], "L0.b_O": np.tile(P["blocks.0.attn.b_O"], (n, 1))}
    paths = [("embed",), ("pos", "L0H1"), ("embed", "L0H0", "L1H2"), ("pos", "L0H2", "L1H0"), ("L0.b_O", "L1H1")]
    split = pe.source_contributions(w, TOKENS, paths, diff=(2, 7), positions=positions)
    for i, path in enumerate(paths):
        mix, vec = np.eye(n), rows[path[0]]                                  # [n, n], [n, d]
        for node in path[1:]:
            l, h = int(node[1]), int(node[3])
            a = f"blocks.{l}.attn."
            mix = A[l, h] @ mix
            vec = vec @ P[a + "W_V"][h] @ P[a + "W_O"][h]
        per_source = vec @ P["W_U"] @ u                                      # [n]: S[j] W_OV… W_U u
        expect = np.mean([mix[p] * per_source for p in positions], axis=0)   # [n]
        np.testing.assert_allclose(split.values[:, i], expect, rtol=1e-9, atol=1e-12)


def test_result_protocol_and_names():
    w = cases.random_weights(**cases.CONFIGS["attn2"])
    split = pe.source_contributions(w, TOKENS, ["L1H0∘L0H1", ("pos", "L1H2")])
    assert split.paths == (("embed", "L0H1", "L1H0"), ("pos", "L1H2"))
    ranked = split.ranking()
    assert len(ranked) == 2 * len(TOKENS)
    top = split.top(1)[0]
    assert abs(top.value) == np.abs(split.values).max() and top.name.endswith(f" @ {top['position']}")
    assert split.column("L1H0∘L0H1").tolist() == split.values[:, 0].tolist()
    assert split.to_records()[0]["position"] == 0


@pytest.mark.parametrize("paths,kw,message", [
    ([("embed",)], dict(target="logits"), "target='logits'"),
    ([("L0.ln1.b", "L0H0")], {}, "no source position"),
    ([("b_U",)], {}, "no source position"),
    ([("embed", "L1H0", "L0H1")], {}, "not in forward order"),
])
def test_refusals_are_one_line(paths, kw, message):
    w = cases.random_weights(**cases.CONFIGS["ln_attn"])
    with pytest.raises(PathexpandError, match=message) as err:
        pe.source_contributions(w, TOKENS, paths, **kw)
    assert "\n" not in str(err.value)


def test_one_prompt_only():
    w = cases.random_weights(**cases.CONFIGS["attn2"])
    with pytest.raises(PathexpandError, match="one prompt"):
        pe.source_contributions(w, np.stack([TOKENS, TOKENS]), [("embed",)])
