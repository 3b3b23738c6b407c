"""Register-tiled correlations skip the taps whose rows read only padding: where the
zero rows around the data are wide against the map, their output rows run in nests
of their own over the taps that reach data (``TiledCorrelation.row_groups``), and
the layer still agrees with PyTorch."""

import numpy as np
import pytest
import torch

from devito_ml.layers.conv import Conv
from devito_ml.layers.conv_tiles import MAX_ROW_RUNS
from devito_ml.vector_width import LANES_VARIABLE
from reference import compare_layer


def computed(groups):
    """Row taps a correlation's nests compute."""
    return sum((last - first + 1) * len({ty for ty, _ in taps})
               for first, last, taps in groups)


def input_gradient_tiles(layer):
    (phase,) = layer.input_gradient_tiles.phases
    return phase.tiles


@pytest.mark.parametrize('width', ['8', '16'])
def test_full_correlation_of_a_small_gradient_skips_the_halo_rows(width, monkeypatch):
    """LeNet-5's second convolution: its input gradient's 14 rows read a 10-row
    gradient through 5 tap rows; 50 of the 70 row taps read data."""
    monkeypatch.setenv(LANES_VARIABLE, width)
    tiles = input_gradient_tiles(Conv((16, 5, 5), (2, 16, 14, 14), winograd=False))
    groups = tiles.row_groups()
    assert 1 < len(groups) <= MAX_ROW_RUNS
    assert groups[0][0] == 0 and groups[-1][1] == 13
    assert all(a[1] + 1 == b[0] for a, b in zip(groups, groups[1:]))
    assert 50 <= computed(groups) < 0.9 * 70
    # every row computes every tap that reads data
    first, last = tiles.filled_rows
    for start, end, taps in groups:
        for row in range(start, end + 1):
            assert {t for t in tiles.taps if first <= row + t[0] <= last} <= set(taps)


def test_narrow_padding_keeps_one_nest():
    """3x3 with padding 1 on 8 rows skips 2 of 24 row taps: not worth a nest."""
    layer = Conv((16, 3, 3), (2, 16, 8, 8), padding=1, winograd=False)
    assert len(layer.forward_tiles.row_groups()) == 1
    assert len(input_gradient_tiles(layer).row_groups()) == 1


@pytest.mark.parametrize('size, kernel, stride, padding, dtype', [
    ((3, 16, 14, 14), (16, 5, 5), 1, 0, np.float32),   # LeNet-5's second convolution
    ((3, 16, 14, 14), (16, 5, 5), 1, 0, np.float64),
    ((2, 16, 3, 5), (16, 3, 3), 1, 1, np.float64),     # 3x3 on 3x5 maps
    ((2, 16, 5, 6), (24, 5, 5), 1, 2, np.float64),     # padded forward rows too
    ((2, 16, 9, 9), (16, 5, 5), 2, 4, np.float64),     # strided: rows of phases
    ((1, 16, 6, 7), (16, 5, 3), 1, (3, 1), np.float64),  # padding past the taps' reach
])
def test_clipped_rows_match_torch(size, kernel, stride, padding, dtype, rng):
    layer = Conv(kernel, size, stride=stride, padding=padding, dtype=dtype, seed=0,
                 winograd=False)
    assert len(layer.forward_tiles.row_groups()) > 1 or any(
        len(phase.tiles.row_groups()) > 1 for phase in
        layer.input_gradient_tiles.phases if phase.tiles is not None)
    module = torch.nn.Conv2d(size[1], kernel[0], kernel[1:], stride=stride,
                             padding=padding)
    compare_layer(layer, module, rng)
