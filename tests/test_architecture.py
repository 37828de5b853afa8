import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pathexpand import Architecture, PathexpandError, UnknownHeadError


def test_heads_and_writers():
    arch = Architecture(2, (1, 2), mlp=True)
    assert arch.heads == ("L0H0", "L1H0", "L1H1")
    assert arch.writers == ("L0H0", "MLP0", "L1H0", "L1H1", "MLP1")
    assert arch.n_heads == (1, 2)
    assert Architecture(3, 4).n_heads == (4, 4, 4)


def test_sources_follow_positional():
    assert Architecture(1, 1).sources == ("embed", "pos")
    assert Architecture(1, 1, positional="shortformer").sources == ("embed",)
    assert Architecture(1, 1, positional=None).sources == ("embed",)
    assert Architecture(1, 1, positional="none").positional is None


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0, 4), {}, "0-layer model has no heads"),
        ((-1, 2), {}, "n_layers must be a non-negative int"),
        ((2, (1,)), {}, "one head count per layer"),
        ((2, (1, -1)), {}, r"n_heads\[1\]"),
        ((2, 2.5), {}, "n_heads must be"),
        ((2, 2), {"positional": "alibi"}, "positional must be"),
        ((2, 2), {"mlp": "yes"}, "mlp must be True or False"),
        ((True, 2), {}, "n_layers"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(PathexpandError, match=match):
        Architecture(*args, **kwargs)


def test_unknown_head():
    arch = Architecture(2, 4)
    assert arch.check_head("L1H3") == (1, 3)
    with pytest.raises(UnknownHeadError, match=r"'L7H0' is not in this 2-layer model; heads are L0H0…L1H3"):
        arch.check_head("L7H0")
    with pytest.raises(UnknownHeadError, match="L0H4"):
        arch.check_head("L0H4")
    with pytest.raises(UnknownHeadError, match="MLPs are absent"):
        arch.check_node("MLP0")
    # UnknownHeadError is a KeyError too, like dict lookups
    with pytest.raises(KeyError):
        arch.check_head("L9H9")


def test_frozen_and_hashable():
    arch = Architecture(2, 4)
    with pytest.raises(AttributeError):
        arch.n_layers = 3
    assert {arch: 1}[Architecture(2, (4, 4))] == 1


@given(st.lists(st.integers(0, 5), min_size=0, max_size=5), st.booleans())
def test_closed_form_counts(heads, mlp):
    if heads and not any(heads) and not mlp:
        with pytest.raises(PathexpandError, match="no heads and no MLPs"):
            Architecture(len(heads), heads, mlp=mlp)
        return
    arch = Architecture(len(heads), heads, mlp=mlp)
    assert arch.n_logit_paths() == math.prod((1 + h) * (2 if mlp else 1) for h in heads)
    for name in arch.heads:
        l, _ = arch.check_head(name)
        side = math.prod((1 + h) * (2 if mlp else 1) for h in heads[:l])
        assert arch.n_score_pairs(name) == side**2


# modern blocks -------------------------------------------------------------------------------
def test_normalization_and_the_layernorm_shorthand():
    assert Architecture(1, 1, layernorm=True) == Architecture(1, 1, normalization="LN")
    rms = Architecture(1, 1, normalization="RMS")
    assert (rms.layernorm, rms.normed, rms.normalization) == (False, True, "RMS")
    assert (Architecture(1, 1).layernorm, Architecture(1, 1).normed) == (False, False)
    assert "RMSNorm" in str(rms) and "LayerNorm" not in str(rms)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"normalization": "BN"}, "normalization must be None, 'LN' or 'RMS'"),
        ({"layernorm": True, "normalization": "RMS"}, "contradicts normalization='RMS'"),
        ({"gated_mlp": True}, r"gated_mlp=True needs MLPs \(mlp=True\)"),
        ({"parallel_attn_mlp": True}, r"parallel_attn_mlp=True needs MLPs"),
        ({"mlp": True, "gated_mlp": 1}, "gated_mlp must be True or False"),
        ({"n_kv_heads": 3}, "n_kv_heads=3 must divide every layer's head count"),
        ({"n_kv_heads": 0}, "n_kv_heads must be None or a positive int"),
        ({"n_kv_heads": True}, "n_kv_heads must be None or a positive int"),
    ],
)
def test_bad_modern_arguments(kwargs, match):
    with pytest.raises(PathexpandError, match=match):
        Architecture(2, 4, **kwargs)


def test_rotary_has_no_positional_source():
    arch = Architecture(2, 2, positional="rotary")
    assert arch.sources == ("embed",) and "rotary positions" in str(arch)


def test_grouped_query_attention():
    arch = Architecture(2, (4, 2), n_kv_heads=2)
    assert arch.grouped and arch.kv_group(0) == 2 and arch.kv_group(1) == 1
    assert "grouped-query attention (2 key/value heads per layer)" in str(arch)
    # one key/value head per query head is ordinary attention: the same architecture
    assert Architecture(2, 4, n_kv_heads=4) == Architecture(2, 4)
    assert Architecture(2, 4).kv_group(1) == 1
    # names and counts stay per query head
    assert arch.heads == Architecture(2, (4, 2)).heads
    assert arch.n_logit_paths() == Architecture(2, (4, 2)).n_logit_paths()


@given(st.lists(st.integers(0, 5), min_size=1, max_size=5))
def test_closed_form_counts_parallel(heads):
    arch = Architecture(len(heads), heads, mlp=True, parallel_attn_mlp=True)
    assert arch.n_logit_paths() == math.prod(2 + h for h in heads)
    for name in arch.heads:
        l, _ = arch.check_head(name)
        assert arch.n_score_pairs(name) == math.prod(2 + h for h in heads[:l]) ** 2
    # gating changes no count
    assert Architecture(len(heads), heads, mlp=True, gated_mlp=True).n_logit_paths() == math.prod(
        2 * (1 + h) for h in heads)


def test_from_weights_reads_modern_blocks():
    import numpy as np

    import pathexpand as pe
    from pathexpand.numeric.weights import Config, expected_shapes

    cfg = Config(n_layers=2, n_heads=4, d_model=8, d_head=4, d_vocab=7, n_ctx=5, d_mlp=6,
                 act_fn="silu", normalization="RMS", positional="rotary", n_key_value_heads=2,
                 gated_mlp=True, parallel_attn_mlp=True)
    rng = np.random.default_rng(0)
    w = pe.Weights({k: rng.normal(size=s) for k, s in expected_shapes(cfg).items()}, cfg)
    arch = Architecture.from_weights(w)
    assert arch == Architecture(2, 4, mlp=True, normalization="RMS", positional="rotary", biases=True,
                                n_kv_heads=2, gated_mlp=True, parallel_attn_mlp=True)
