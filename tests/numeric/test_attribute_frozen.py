"""The frozen model: its recording pass, its path enumeration and its validation.

Second routes: ``forward.run_with_cache`` (patterns, scores, residuals, LN scales, MLP
activations, logits), the closed-form path counts of ``Architecture``/``expand_logits``,
and the plain-numpy path fields of ``attribute_cases.brute_paths``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.errors import PathexpandError, UnknownHeadError
from pathexpand.numeric.forward import run_with_cache
from pathexpand.numeric.frozen import CONSTANTS, freeze

_spec = importlib.util.spec_from_file_location("attribute_cases", Path(__file__).with_name("attribute_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOKENS = np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])


@pytest.mark.parametrize("name", sorted(cases.CONFIGS))
def test_recording_pass_equals_the_reference_forward(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    logits, cache = run_with_cache(w, TOKENS)
    fz = freeze(w, TOKENS)
    close = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fz.logits, logits, **close)
    torch.testing.assert_close(fz.logits_at([6, 2]), logits[:, [6, 2]], **close)
    torch.testing.assert_close(fz.patterns, cache.patterns, **close)
    torch.testing.assert_close(fz.scores, cache.scores, **close)
    torch.testing.assert_close(fz.resid_pre, cache.resid_pre, **close)
    if cache.resid_mid is not None:
        torch.testing.assert_close(fz.resid_mid, cache.resid_mid, **close)
        torch.testing.assert_close(fz.gates * cache.mlp_pre, cache.mlp_post, **close)
    for key, scale in cache.ln_scale.items():
        torch.testing.assert_close(1 / fz.inv_scale[key][..., 0], scale, **close)
    torch.testing.assert_close(fz.forward(), logits, **close)        # the replay is exact


@pytest.mark.parametrize("name", ["attn3", "gelu_new", "shortformer_ln", "lnpre", "no_pos"])
def test_path_count_enumeration_and_fields(name):
    w = cases.random_weights(**cases.CONFIGS[name])
    fz = freeze(w, TOKENS)
    listed = dict(fz.iter_paths())
    brute, consts, _ = cases.brute_paths(w, TOKENS)
    assert len(listed) == fz.n_paths() == len(brute)
    symbolic = {t.path for t in pe.expand_logits(pe.Architecture.from_weights(w))}
    assert set(listed) | {(c,) for c in consts} <= symbolic
    if w.config.normalization != "LNPre":   # LNPre has no LN biases; the symbolic side lists them
        assert set(listed) | {(c,) for c in consts} == symbolic
    for path in list(listed)[:: max(1, len(listed) // 20)]:
        np.testing.assert_allclose(fz.path_field(path).numpy(), brute[path], atol=1e-12)
        np.testing.assert_allclose(listed[path].numpy(), brute[path], atol=1e-12)


@pytest.mark.parametrize("cfg", [
    dict(d_mlp=10, act_fn="gelu", normalization="LN", parallel_attn_mlp=True),
    dict(d_mlp=10, act_fn="silu", normalization="RMS", gated_mlp=True, parallel_attn_mlp=True),
    dict(d_mlp=10, act_fn="relu", normalization="LN", n_layers=3, n_heads=2),
    dict(positional="shortformer", normalization="LN"),
    dict(n_heads=0, d_mlp=10, act_fn="gelu", normalization="LN"),     # MLPs only: no b_O
    dict(d_mlp=10, act_fn="gelu", normalization="LNPre"),             # LN biases folded away
])
def test_frozen_paths_are_the_graphs_and_the_expansions(cfg):
    """Where a bias enters and who reads it is decided once (``symbolic.paths``); the frozen
    model's paths (walked stage by stage), the graph's simple paths (walked edge by edge) and
    the expansion's terms are three routes to one set, with parallel blocks too. (LNPre: the
    architecture is LayerNorm, so the graph and the expansion list the LN-bias terms, which
    the folded weights do not have; likewise ``b_O`` of layers without heads.)"""
    w = cases.random_weights(**cfg)
    arch = pe.Architecture.from_weights(w)
    fz = freeze(w, TOKENS)
    fields = dict(fz.iter_paths())
    constants = [(s.name,) for s in fz.sources(include_constants=True) if s.name in CONSTANTS]
    assert len(fields) == fz.n_paths()
    walked = set(fields) | set(constants)
    graph = set(pe.paths(pe.path_graph(arch)))
    assert graph == {t.path for t in pe.expand_logits(arch)}
    stored = set(w.state_dict())
    absent = {p for p in graph
              if (p[0].endswith((".ln1.b", ".ln2.b", "ln_final.b")) and cfg.get("normalization") == "LNPre")
              or (p[0].endswith(".b_O") and f"blocks.{p[0][1:].split('.')[0]}.attn.b_O" not in stored)}
    assert walked == graph - absent
    # and the walked fields add up to the stream the recorded logits read
    torch.testing.assert_close(fz.unembed(sum(fields.values())) + fz.constant_logits(), fz.logits)


def test_gate_is_exact_where_the_preactivation_is_zero():
    """A neuron whose pre-activation is exactly 0 everywhere: gate act'(0), sums still exact."""
    for act in ("gelu", "gelu_new", "relu"):
        w = cases.random_weights(d_mlp=6, act_fn=act, normalization="LN")
        p = w.state_dict()
        for l in range(2):
            p[f"blocks.{l}.mlp.W_in"] = p[f"blocks.{l}.mlp.W_in"].copy()
            p[f"blocks.{l}.mlp.W_in"][:, 0] = 0.0
            p[f"blocks.{l}.mlp.b_in"] = p[f"blocks.{l}.mlp.b_in"].copy()
            p[f"blocks.{l}.mlp.b_in"][0] = 0.0
        w = w.replace(p)
        fz = freeze(w, TOKENS)
        g0 = fz.gates[..., 0]
        assert torch.all(torch.isfinite(fz.gates))
        assert torch.all(g0 == (0.0 if act == "relu" else 0.5))
        res = pe.attribute(w, TOKENS, target=1)
        assert res.residual_error() <= 1e-10


def test_paths_are_validated():
    w = cases.random_weights(**cases.CONFIGS["gelu_new"])
    fz = freeze(w, TOKENS[:1])
    with pytest.raises(PathexpandError, match="not in forward order"):
        fz.path_field(("embed", "L1H0", "L0H0"))
    with pytest.raises(PathexpandError, match="not in forward order"):
        fz.path_field(("embed", "L0H0", "L0H1"))
    with pytest.raises(PathexpandError, match="not in forward order"):
        fz.path_field(("L0.b_O", "L0H1"))                  # b_O is written after layer 0's heads
    with pytest.raises(UnknownHeadError, match="L5H0"):
        fz.path_field(("embed", "L5H0"))
    with pytest.raises(PathexpandError, match="read only by MLP0"):
        fz.path_field(("L0.ln2.b", "L1H0"))
    with pytest.raises(PathexpandError, match="alone is not a path"):
        fz.path_field(("L0.ln1.b",))
    with pytest.raises(PathexpandError, match="constant term"):
        fz.path_field(("b_U",))
    with pytest.raises(PathexpandError, match="not a source"):
        fz.path_field(("W_E", "L0H0"))
    with pytest.raises(PathexpandError, match="cannot load a model from 'dict'"):
        freeze({"W_E": 1}, TOKENS)
    with pytest.raises(PathexpandError, match="out of range"):
        freeze(w, [[1, 99]])
    fz.path_field(("L0.b_O", "MLP0", "L1H2"))             # valid: b_O is read by MLP0
