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
        ((2, 2), {"positional": "rotary"}, "positional must be"),
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
