import pytest

from pathexpand.errors import PathexpandError
from pathexpand.names import head_name, parse_head, parse_node, parse_path_name, path_name


class TestHeads:
    def test_round_trip(self):
        for l, h in [(0, 0), (1, 4), (11, 11)]:
            assert parse_head(head_name(l, h)) == (l, h)

    @pytest.mark.parametrize("bad", ["L1", "H1", "l1h4", "L1H", "L-1H0", "MLP0", ""])
    def test_bad(self, bad):
        with pytest.raises(PathexpandError, match="not a head name"):
            parse_head(bad)


class TestNodes:
    @pytest.mark.parametrize(
        "name, kind, layer, head, extra",
        [
            ("embed", "source", None, None, None),
            ("pos", "source", None, None, None),
            ("logits", "logits", None, None, None),
            ("L2H3", "head", 2, 3, None),
            ("MLP1", "mlp", 1, None, None),
            ("L1H0.k", "sink", 1, 0, "k"),
            ("L0H2.b_V", "bias", 0, 2, "b_V"),
            ("L0.b_O", "bias", 0, None, "b_O"),
            ("MLP0.b_out", "bias", 0, None, "b_out"),
            ("L1.ln2.b", "bias", 1, None, "ln2.b"),
            ("ln_final.b", "bias", None, None, "ln_final.b"),
        ],
    )
    def test_parse(self, name, kind, layer, head, extra):
        node = parse_node(name)
        assert (node.kind, node.layer, node.head) == (kind, layer, head)
        assert extra in (None, node.channel, node.param)

    def test_unknown(self):
        with pytest.raises(PathexpandError, match="not a node name"):
            parse_node("L1H0.x")


def test_path_names():
    assert path_name(("embed", "L0H3", "L1H2")) == "L1H2∘L0H3"
    assert path_name(("embed",)) == "direct"
    assert parse_path_name("L1H2∘L0H3") == ("L0H3", "L1H2")
    assert parse_path_name("direct") == ()
    with pytest.raises(PathexpandError):
        parse_path_name("L1H2∘embed")
