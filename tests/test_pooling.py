"""Pooling against torch: max and avg, kernels 2 and 3 (and 3x2), strides 1-3,
paddings 0-1, disjoint windows with and without a remainder, ties routed to the
first maximum, and the tutorial's Subsampling."""

import numpy as np
import pytest
import sympy
import torch
from sympy import Max

from devito_ml import (AdaptiveAvgPooling, AdaptiveMaxPooling, AvgPooling,
                       LayerArgumentError, MaxPooling, Subsampling)
from devito_ml.layers.window_tables import adaptive_windows, sliding_windows
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


@pytest.mark.parametrize('layer', [
    lambda: AvgPooling(3, (2, 3, 9, 8), stride=2, padding=1, dtype=np.float64),
    lambda: AvgPooling((2, 3), (1, 2, 7, 9), stride=(1, 2), dtype=np.float64),
    lambda: AvgPooling(3, (2, 2, 9, 9), stride=2, ceil_mode=True, padding=1,
                       count_include_pad=False, dtype=np.float64),       # tables
    lambda: AdaptiveAvgPooling((4, 3), (2, 2, 7, 9), dtype=np.float64)],
    ids=['padded', 'overlapping', 'tabled', 'adaptive'])
def test_average_pooling_backward_is_its_forward_transposed(layer, rng):
    """The window reduction's adjoint rule, as each schedule lowers it: the dot
    product test ``<A x, y> = <x, A^T y>`` in float64, and no atomics."""
    layer = layer()
    x = rng.standard_normal(layer.input_size)
    y = rng.standard_normal(layer.output_size)
    forward = np.vdot(layer.forward(x), y)
    assert np.isclose(forward, np.vdot(x, layer.backward(y)), rtol=1e-12, atol=0)
    assert 'atomic' not in layer.backward_operator.code


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


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_subsampling_with_any_other_function_gets_a_derived_adjoint(dtype, rng):
    """The tutorial's generic pooling with a function nobody wrote an adjoint for:
    the root of the sum of squares of each window, torch's LPPool2d(2)."""
    layer = Subsampling((2, 3), (2, 3, 7, 8),
                        function=lambda window: sympy.sqrt(sum(t * t for t in window)),
                        stride=(2, 1), dtype=dtype)
    assert layer.reduction is None
    compare_layer(layer, lambda x: torch.nn.functional.lp_pool2d(x, 2, (2, 3), (2, 1)),
                  rng)


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


@pytest.mark.parametrize('kernel', [2, 3, 8], ids=['unrolled2', 'unrolled3', 'looped'])
def test_max_pooling_routes_non_finite_gradients_to_the_first_maximum_only(kernel):
    """An infinite or NaN output gradient goes to the window's first maximum (ties
    included) and nowhere else: the other taps get 0, not inf * 0."""
    pool = MaxPooling(kernel_size=kernel, input_size=(2, 2, 8, 8), dtype=np.float64)
    x = np.random.default_rng(1).integers(-2, 3, (2, 2, 8, 8)).astype(np.float64)
    y = pool.forward(x)
    upstream = np.random.default_rng(2).standard_normal(y.shape)
    upstream.flat[::3] = np.inf
    upstream.flat[1::3] = np.nan
    dx = pool.backward(upstream)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(x_torch, kernel).backward(torch.from_numpy(upstream))
    np.testing.assert_array_equal(dx, x_torch.grad.numpy())


ADAPTIVE = [((2, 3, 1, 1), (7, 7)),    # VGG's pool on a 1x1 map: every output repeats
            ((1, 2, 5, 5), (2, 2)),    # overlapping windows of 3
            ((2, 2, 6, 4), (6, 6)),    # a map smaller than the output in one axis
            ((1, 2, 13, 11), (6, 6)),  # AlexNet's pool on a 13x11 map
            ((2, 1, 14, 14), (7, 7)),  # regular: 2x2 windows, stride 2
            ((1, 2, 9, 7), (3, None)),  # None keeps the columns
            ((2, 2, 4, 10), (3, 4))]   # regular rows (2, stride 1), irregular columns


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('size, output_size', ADAPTIVE)
@pytest.mark.parametrize('kind', ['max', 'avg'])
def test_adaptive_pooling_matches_torch(kind, size, output_size, dtype, rng):
    layer_class, function = {
        'max': (AdaptiveMaxPooling, torch.nn.functional.adaptive_max_pool2d),
        'avg': (AdaptiveAvgPooling, torch.nn.functional.adaptive_avg_pool2d)}[kind]
    layer = layer_class(output_size, size, dtype=dtype)
    compare_layer(layer, lambda x: function(x, output_size), rng)


def test_adaptive_windows_follow_torch_formula():
    windows = adaptive_windows(5, 3)
    assert windows.taps == ((0, 1), (1, 2, 3), (3, 4))
    assert adaptive_windows(2, 4).taps == ((0,), (0,), (1,), (1,))
    assert adaptive_windows(4, 3).regular == (2, 1)
    assert adaptive_windows(5, 3).regular is None


SLIDING = [  # size, kernel, stride, padding, dilation, ceil_mode, count_include_pad
    ((2, 2, 7, 8), 3, 2, 0, 1, True, True),       # ceil adds a cut window
    ((1, 2, 8, 9), 2, 2, 0, 1, True, True),       # disjoint windows and a cut one
    ((2, 1, 10, 9), 3, 2, 1, 1, True, True),      # ceil with padding
    ((1, 2, 6, 7), (3, 2), (2, 3), (1, 1), 1, True, False),
    ((2, 2, 7, 7), 3, 1, 1, 1, False, False),     # padding not counted
    ((1, 2, 11, 10), 3, 2, 1, 2, False, True),    # dilation (max)
    ((2, 1, 9, 12), (2, 3), 1, (1, 0), (3, 2), True, True)]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('size, kernel, stride, padding, dilation, ceil, counted',
                         SLIDING)
@pytest.mark.parametrize('kind', ['max', 'avg'])
def test_ceil_mode_dilation_and_uncounted_padding_match_torch(
        kind, size, kernel, stride, padding, dilation, ceil, counted, dtype, rng):
    if kind == 'max':
        layer = MaxPooling(kernel, size, stride=stride, padding=padding, dtype=dtype,
                           dilation=dilation, ceil_mode=ceil)
        function = lambda x: torch.nn.functional.max_pool2d(  # noqa: E731
            x, kernel, stride, padding, dilation, ceil_mode=ceil)
    else:
        if dilation != 1:
            pytest.skip('average pooling has no dilation (torch neither)')
        layer = AvgPooling(kernel, size, stride=stride, padding=padding, dtype=dtype,
                           ceil_mode=ceil, count_include_pad=counted)
        function = lambda x: torch.nn.functional.avg_pool2d(  # noqa: E731
            x, kernel, stride, padding, ceil_mode=ceil, count_include_pad=counted)
    assert layer.tabled == (kind == 'avg' or ceil or dilation != 1)
    compare_layer(layer, function, rng)


def test_tabled_max_pooling_routes_ties_to_first_maximum():
    layer = AdaptiveMaxPooling(3, (1, 1, 5, 5), dtype=np.float64)
    assert layer.tabled
    x = np.zeros((1, 1, 5, 5))
    upstream = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3) + 1
    layer.forward(x)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    torch.nn.functional.adaptive_max_pool2d(x_torch, 3).backward(
        torch.from_numpy(upstream))
    assert_close(layer.backward(upstream), x_torch.grad.numpy(), np.float64, 'ties')


@pytest.mark.parametrize('arguments, message', [
    (dict(dilation=2), r"`dilation` is for max pooling only"),
    (dict(ceil_mode='yes'), r"`ceil_mode` must be True or False, got 'yes'"),
    (dict(count_include_pad=None), r"`count_include_pad` must be True or False")])
def test_bad_pooling_options_are_named(arguments, message):
    with pytest.raises(LayerArgumentError, match=message):
        AvgPooling(2, **arguments)


@pytest.mark.parametrize('output_size', [0, (2, 0), (1, 2, 3), 'seven', 2.5])
def test_bad_adaptive_output_size_is_named(output_size):
    with pytest.raises(LayerArgumentError, match=r"AdaptiveAvgPooling `avgpool`: "
                       r"`output_size` must be a positive int or a pair"):
        AdaptiveAvgPooling(output_size)


def test_sliding_windows_have_torchs_output_extent_and_divisors():
    """Every kernel, stride, padding, dilation and mode on 1-12 inputs: the number of
    windows is torch's output extent, and the mean of ones is torch's (the divisor)."""
    for size in range(1, 13):
        for kernel in range(1, 5):
            for stride in range(1, 4):
                for padding in range(0, kernel // 2 + 1):
                    for dilation, ceil, counted in [(1, False, True), (1, True, True),
                                                    (1, True, False), (2, True, True)]:
                        windows = sliding_windows(size, kernel, stride, padding,
                                                  dilation, ceil, counted)
                        x = torch.ones((1, 1, 1, size))
                        if dilation * (kernel - 1) + 1 > size + 2 * padding or \
                                2 * padding > dilation * (kernel - 1) + 1:
                            continue
                        out = torch.nn.functional.max_pool2d(
                            x, (1, kernel), (1, stride), (0, padding), (1, dilation),
                            ceil_mode=ceil)
                        assert windows.outputs == out.shape[-1]
                        if dilation == 1:
                            mean = torch.nn.functional.avg_pool2d(
                                x, (1, kernel), (1, stride), (0, padding),
                                ceil_mode=ceil, count_include_pad=counted)[0, 0, 0]
                            ours = [len(t) / d for t, d in
                                    zip(windows.taps, windows.divisors)]
                            assert np.allclose(ours, mean.numpy())
