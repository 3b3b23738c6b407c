"""Pooling against torch: max and avg, kernels 2 and 3 (and 3x2), strides 1-3,
paddings 0-1, disjoint windows with and without a remainder, ties routed to the
first maximum, and the tutorial's Subsampling."""

import numpy as np
import pytest
import torch
from sympy import Max

from devito_ml import AvgPooling, LayerArgumentError, MaxPooling, Subsampling
from reference import DTYPES, assert_close, compare_layer

CASES = [((2, 3, 8, 8), 2, None, 0), ((1, 2, 7, 9), 3, 1, 1), ((3, 2, 9, 8), 3, 2, 1),
         ((2, 2, 10, 7), 2, 3, 0), ((2, 1, 9, 9), (3, 2), (2, 1), (1, 1)),
         ((1, 2, 10, 9), (8, 7), 1, (1, 3)),    # above MAX_UNROLLED_TAPS: tap loops
         # disjoint windows (stride = kernel, no padding): max's adjoint is a scatter,
         # with values past the last window left at zero
         ((2, 2, 9, 7), 2, None, 0), ((1, 2, 7, 8), (3, 2), None, 0),
         ((1, 1, 17, 15), (8, 7), None, 0)]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('size, kernel, stride, padding', CASES)
@pytest.mark.parametrize('kind', ['max', 'avg'])
def test_pooling_matches_torch(kind, size, kernel, stride, padding, dtype, rng):
    layer_class, function = {'max': (MaxPooling, torch.nn.functional.max_pool2d),
                             'avg': (AvgPooling, torch.nn.functional.avg_pool2d)}[kind]
    layer = layer_class(kernel, size, stride=stride, padding=padding, dtype=dtype)
    stride = kernel if stride is None else stride
    compare_layer(layer, lambda x: function(x, kernel, stride, padding), rng)


def test_max_pooling_routes_ties_to_first_maximum():
    # After a ReLU whole windows are zero: torch gives the gradient to the first tap.
    layer = MaxPooling(3, (1, 1, 6, 6), stride=1, dtype=np.float64)
    x = np.zeros((1, 1, 6, 6))
    x[0, 0, 2, 2] = x[0, 0, 3, 3] = 1.0
    layer.forward(x)
    upstream = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(x_torch, 3, 1).backward(torch.from_numpy(upstream))
    assert_close(layer.backward(upstream), x_torch.grad.numpy(), np.float64, 'ties')


def test_subsampling_with_max_is_max_pooling(rng):
    layer = Subsampling((2, 2), (1, 2, 4, 4), function=lambda window: Max(*window),
                        dtype=np.float64)
    assert layer.reduction == 'max'
    compare_layer(layer, lambda x: torch.nn.functional.max_pool2d(x, 2, 1), rng)


def test_subsampling_with_mean_is_avg_pooling(rng):
    layer = Subsampling((2, 3), (2, 1, 5, 6),
                        function=lambda window: sum(window) / len(window),
                        stride=(1, 2), dtype=np.float64)
    compare_layer(layer, lambda x: torch.nn.functional.avg_pool2d(x, (2, 3), (1, 2)),
                  rng)


def test_subsampling_with_other_function_runs_forward_only():
    layer = Subsampling((2, 2), (1, 1, 3, 3),
                        function=lambda window: sum(t * t for t in window),
                        dtype=np.float64)
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    expected = [[0 + 1 + 9 + 16, 1 + 4 + 16 + 25], [9 + 16 + 36 + 49, 16 + 25 + 49 + 64]]
    assert np.array_equal(layer.forward(x)[0, 0], expected)
    with pytest.raises(NotImplementedError, match='max or mean'):
        layer.backprop_equations()


def test_padding_above_half_the_kernel_is_refused():
    with pytest.raises(LayerArgumentError, match='padding'):
        MaxPooling(2, (1, 1, 4, 4), padding=2)


@pytest.mark.parametrize('kernel', [2, 3, 8], ids=['unrolled2', 'unrolled3', 'looped'])
def test_max_pooling_propagates_nan_as_torch(kernel):
    """A NaN anywhere in a window, first tap included, makes the output NaN (fmaxf
    would drop it); infinities stay infinities; the gradient is routed as torch's."""
    pool = MaxPooling(kernel_size=kernel, input_size=(2, 2, 8, 8), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    x[0, 0, 0, 0] = np.nan                  # first tap of the first window
    x[1, 1, 7, 7] = np.inf
    x[1, 0, 4, 5] = -np.inf
    y = pool.forward(x)
    upstream = np.ones_like(y)
    dx = pool.backward(upstream)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    y_torch = torch.nn.functional.max_pool2d(x_torch, kernel)
    y_torch.backward(torch.from_numpy(upstream))
    np.testing.assert_array_equal(y, y_torch.detach().numpy())     # NaN == NaN here
    np.testing.assert_array_equal(dx, x_torch.grad.numpy())
    assert np.isnan(y[0, 0, 0, 0])
