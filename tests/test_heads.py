import pytest

from interp.core.errors import HeadLabelError
from interp.core.heads import Head, all_heads, parse_head, parse_heads


def test_parse_label_forms():
    assert parse_head("L3H1") == Head(3, 1)
    assert parse_head(" l12h0 ") == Head(12, 0)
    assert parse_head((2, 5)) == Head(2, 5)
    assert parse_heads("L0H1, L2H3") == (Head(0, 1), Head(2, 3))
    assert Head(4, 2).label == "L4H2"


@pytest.mark.parametrize("bad", ["L3", "H1L3", "layer3head1", "L-1H0", "", "L3H1x"])
def test_unparseable_labels_say_the_expected_form(bad):
    with pytest.raises(HeadLabelError, match="L<layer>H<head>"):
        parse_head(bad)


def test_out_of_range_names_the_model_shape():
    with pytest.raises(HeadLabelError, match="L99H0.*30 layers"):
        parse_head("L99H0", n_layers=30, n_heads=9)
    with pytest.raises(HeadLabelError, match="L2H9.*9 heads"):
        parse_head("L2H9", n_layers=30, n_heads=9)


def test_duplicates_and_empty_lists_are_errors():
    with pytest.raises(HeadLabelError, match="twice"):
        parse_heads("L1H1,L1H1")
    with pytest.raises(HeadLabelError, match="No heads"):
        parse_heads(" , ")


def test_all_heads_is_layer_major():
    heads = all_heads(2, 3)
    assert heads[:4] == (Head(0, 0), Head(0, 1), Head(0, 2), Head(1, 0))
    assert len(heads) == 6
