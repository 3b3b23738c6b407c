"""Crop against torch's slicing: forward and input gradient, both dtypes."""

import pytest

from devito_ml import Crop, ShapeError
from reference import DTYPES, compare_layer


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('before, after', [((1, 0), (0, 0)), ((0, 2), (3, 1)),
                                           ((0, 0), (0, 0))])
def test_crop_matches_slicing(before, after, dtype, rng):
    size = (2, 3, 7, 6)
    layer = Crop(before, after, size, dtype=dtype)
    rows = slice(before[0], size[2] - after[0])
    columns = slice(before[1], size[3] - after[1])
    compare_layer(layer, lambda x: x[:, :, rows, columns], rng)


def test_crop_that_leaves_nothing_is_refused():
    with pytest.raises(ShapeError, match=r"Crop `crop`: dropping \(2, 0\) before and "
                       r"\(2, 0\) after leaves nothing of input \(4, 4\)"):
        Crop((2, 0), (2, 0), (1, 1, 4, 4))
