"""Register-tiled convolutions against torch, run by ``test_fuzz.py`` under
AddressSanitizer: remainders of lane blocks and tiles, strides, dilation, padding,
1x1 to 5x5 kernels, 1 to 40 channels (tiled where they fill the lanes), Winograd's
blocks at paddings 0 to 2."""

import numpy as np
import pytest
import torch

from devito_ml import Conv
from devito_ml.layers import conv as conv_module
from devito_ml.layers.conv import fills_lanes

SHAPES = [  # in, out channels, rows, cols, kernel rows, cols, stride, padding, dilation
    (20, 24, 9, 7, 3, 3, 2, 1, 1),
    (16, 17, 6, 11, 5, 5, 1, 2, 1),
    (17, 16, 10, 8, 3, 2, 3, 0, 2),
    (33, 40, 5, 5, 1, 1, 1, 0, 1),
    (6, 16, 14, 13, 5, 5, 1, 0, 1),   # LeNet-5's second convolution, 6 channels
    (1, 6, 12, 10, 5, 5, 1, 2, 1),    # one channel: weight gradient tiles over taps
]


WINOGRAD_SHAPES = [  # 3x3 stride 1: Winograd's forward pass and input gradient
    (33, 40, 8, 12, 3, 3, 1, 1, 1),   # F(4x4); channels past whole vectors
    (32, 35, 10, 10, 3, 3, 1, 0, 1),  # F(4x4) forward, F(2x2) input gradient
    (40, 32, 8, 10, 3, 3, 1, 2, 1),   # F(2x2) forward (10x12) and gradient (8x10)
]


@pytest.mark.parametrize('c, k, h, w, r, q, s, p, d', WINOGRAD_SHAPES)
def test_winograd_convolution_matches_torch(c, k, h, w, r, q, s, p, d):
    layer = _matches_torch(c, k, h, w, r, q, s, p, d)
    assert layer.forward_winograd is not None
    assert layer.input_gradient_winograd is not None


COLUMN_SHAPES = [  # weight gradients as tap products (layers too wide for tiles)
    (23, 24, 6, 5, 3, 3, 1, 1, 1),    # channels padded to whole column tiles
    (20, 24, 9, 7, 3, 3, 2, 1, 1),
]


@pytest.mark.parametrize('c, k, h, w, r, q, s, p, d', COLUMN_SHAPES)
def test_column_weight_gradient_matches_torch(c, k, h, w, r, q, s, p, d, monkeypatch):
    monkeypatch.setattr(conv_module, 'TILED_WEIGHT_GRADIENT_MAX_BYTES', 0)
    layer = _matches_torch(c, k, h, w, r, q, s, p, d)
    assert layer.weight_gradient_columns is not None


@pytest.mark.parametrize('c, k, h, w, r, q, s, p, d', SHAPES)
def test_tiled_convolution_matches_torch(c, k, h, w, r, q, s, p, d):
    _matches_torch(c, k, h, w, r, q, s, p, d)


def _matches_torch(c, k, h, w, r, q, s, p, d):
    """A layer of these sizes, its outputs and gradients checked against torch."""
    rng = np.random.default_rng(0)
    layer = Conv((k, r, q), (3, c, h, w), stride=s, padding=p, dilation=d,
                 dtype=np.float64, seed=0)
    assert layer.channels_last == fills_lanes(k)
    assert layer.input_gradient_channels_last == fills_lanes(c)
    x = rng.standard_normal((3, c, h, w))
    out = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    layer.backward(upstream)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(layer.kernel.data.copy()).requires_grad_(True)
    tb = torch.from_numpy(layer.bias.data.copy()).requires_grad_(True)
    reference = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d)
    reference.backward(torch.from_numpy(upstream))
    for ours, theirs in ((out, reference), (layer.input_gradients.data, tx.grad),
                         (layer.kernel_gradients.data, tw.grad),
                         (layer.bias_gradients.data, tb.grad)):
        theirs = theirs.detach().numpy()
        assert np.abs(ours - theirs).max() <= 1e-12 * max(1.0, np.abs(theirs).max())
    return layer
