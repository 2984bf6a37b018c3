"""RLE: the Severstal convention (column-major, 1-based, start/length pairs), exact round trips."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeseg.edge.rle import decode, encode
from edgeseg.errors import EdgesegError

masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 1))
)


@settings(max_examples=200, deadline=None)
@given(masks)
def test_decode_inverts_encode(mask):
    assert np.array_equal(decode(encode(mask), mask.shape), mask)


@settings(max_examples=200, deadline=None)
@given(masks)
def test_encode_inverts_decode_on_canonical_strings(mask):
    rle = encode(mask)  # canonical: sorted, non-touching runs
    assert encode(decode(rle, mask.shape)) == rle


def test_hand_checked_column_major_one_based():
    # 3 rows x 2 columns. Column-major numbering from 1:  1 4
    #                                                     2 5
    #                                                     3 6
    mask = np.array([[1, 0], [1, 1], [0, 0]], dtype=np.uint8)
    assert encode(mask) == "1 2 5 1"
    assert np.array_equal(decode("1 2 5 1", (3, 2)), mask)
    # a run continues from the bottom of one column to the top of the next
    assert np.array_equal(decode("3 2", (3, 2)), np.array([[0, 1], [0, 0], [1, 0]], dtype=np.uint8))


def test_empty_mask_is_empty_string():
    assert encode(np.zeros((4, 5), np.uint8)) == ""
    assert decode("", (4, 5)).sum() == 0


@pytest.mark.parametrize("bad", ["1 2 3", "a 2", "0 2", "5 0", "6 3"])
def test_malformed_strings_raise_one_line_errors(bad):
    with pytest.raises(EdgesegError) as info:
        decode(bad, (3, 2))
    assert "\n" not in str(info.value)
