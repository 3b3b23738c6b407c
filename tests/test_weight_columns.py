"""Wide convolutions whose per-sample partial sums do not fit, or outgrow the
columns, compute the weight gradient as one register-tiled matrix product a tap over
the whole batch (``layers/weight_columns.py``), and agree with PyTorch."""

import numpy as np
import pytest
import torch

from devito_ml.layers import conv as conv_module
from devito_ml.layers.conv import Conv
from devito_ml.layers.conv_tiles import FMA_CHAINS
from devito_ml.layers.weight_columns import column_tile_shape
from devito_ml.vector_width import vector_registers
from reference import compare_layer


@pytest.fixture
def no_room_for_partial_sums(monkeypatch):
    """Every tiled weight gradient's partial sums 'too large': what ResNet-50's
    layers of 256-2048 channels meet at batch 32, at test sizes."""
    monkeypatch.setattr(conv_module, 'TILED_WEIGHT_GRADIENT_MAX_BYTES', 0)


@pytest.mark.parametrize('kernels, channels, kernel, stride, padding, dilation, dtype', [
    (16, 12, 3, 1, 1, 1, np.float64),
    (32, 16, 3, 2, 1, 1, np.float32),
    (16, 8, 1, 1, 0, 1, np.float64),      # 1x1: one tap, parallel over channel tiles
    (16, 10, 3, 2, 2, 2, np.float64)])    # strided and dilated
def test_wide_weight_gradient_as_tap_products_matches_torch(
        kernels, channels, kernel, stride, padding, dilation, dtype, rng,
        no_room_for_partial_sums):
    layer = Conv((kernels, kernel, kernel), (4, channels, 9, 7), stride=stride,
                 padding=padding, dilation=dilation, dtype=dtype, seed=0)

    def module():
        return torch.nn.Conv2d(channels, kernels, kernel, stride=stride,
                               padding=padding, dilation=dilation)
    compare_layer(layer, module(), rng)
    assert layer.weight_gradient_columns is not None
    # a smaller last batch after a full one: the products read zeros past it
    compare_layer(layer, module(), rng, batch=3)
    assert 'atomic' not in layer.backward_operator.code


@pytest.mark.parametrize('size, by_columns', [(4, True), (8, False)])
def test_weight_gradient_takes_the_columns_where_smaller_than_the_partial_sums(
        size, by_columns, rng):
    # 1x1, 64 -> 32 channels: a sample's partial sums 2048 entries; the columns
    # 96 a position, 16 positions a sample on 4x4 maps, 64 on 8x8
    layer = Conv((32, 1, 1), (2, 64, size, size), dtype=np.float64, seed=0)
    compare_layer(layer, torch.nn.Conv2d(64, 32, 1), rng)
    assert (layer.weight_gradient_columns is not None) == by_columns
    assert (layer.weight_gradient_tiles is not None) == (not by_columns)


def test_tap_products_at_every_vector_width(width, rng, no_room_for_partial_sums):
    layer = Conv((32, 3, 3), (3, 16, 6, 6), padding=1, dtype=np.float32, seed=0)
    compare_layer(layer, torch.nn.Conv2d(16, 32, 3, padding=1), rng)
    assert layer.weight_gradient_columns is not None


def test_without_room_for_columns_either_the_weight_gradient_accumulates(
        rng, no_room_for_partial_sums, monkeypatch):
    monkeypatch.setattr(conv_module, 'COLUMN_WEIGHT_GRADIENT_MAX_BYTES', 0)
    layer = Conv((16, 3, 3), (2, 8, 6, 6), padding=1, dtype=np.float64, seed=0)
    compare_layer(layer, torch.nn.Conv2d(8, 16, 3, padding=1), rng)
    assert layer.weight_gradient_columns is None and layer.weight_gradient_tiles is None


def test_column_tiles_divide_the_output_blocks_and_fit_the_registers(width):
    for channels, blocks in [(64, 4), (256, 16), (512, 32), (96, 6), (2048, 128),
                             (3, 1), (7, 2)]:
        a, b = column_tile_shape(channels, blocks)
        assert blocks % b == 0 and a <= channels
        assert a * b + b + 1 <= vector_registers()
    # wide layers: enough accumulators to hide the multiply-adds' latency, their
    # channels padded where no such tile divides them (256 = 42 x 6 + 4)
    assert np.prod(column_tile_shape(256, 16)) >= FMA_CHAINS
    assert column_tile_shape(1, 1) is None              # one accumulator: no tile


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_channels_padded_to_whole_column_tiles_match_torch(dtype, rng,
                                                           no_room_for_partial_sums):
    # 23 channels: the cheapest tile pads them to 24 at every width (each width is
    # run under AddressSanitizer by test_fuzz, tiled_convolutions.COLUMN_SHAPES)
    layer = Conv((32, 3, 3), (3, 23, 6, 5), padding=1, dtype=dtype, seed=0)
    compare_layer(layer, torch.nn.Conv2d(23, 32, 3, padding=1), rng)
    columns = layer.weight_gradient_columns
    assert columns is not None and columns.padded_channels > 23
