"""Dot-product tests in float64: for every linear layer A, <A x, y> = <x, A^T y>."""

import numpy as np
import pytest

from devito_ml import AvgPooling, Conv, Flat, FullyConnected, MaxPooling

LINEAR_LAYERS = [
    lambda: Conv((3, 3, 2), (2, 2, 7, 6), stride=2, padding=1, dilation=(1, 2),
                 bias=False, dtype=np.float64),
    lambda: Conv((2, 5, 5), (1, 3, 9, 9), stride=3, padding=2, bias=False,
                 dtype=np.float64),
    lambda: AvgPooling(3, (2, 2, 8, 7), stride=2, padding=1, dtype=np.float64),
    lambda: Flat((2, 3, 4, 5), dtype=np.float64),
    lambda: FullyConnected((4, 6), (3, 6), bias=False, dtype=np.float64),
]


@pytest.mark.parametrize('make_layer', LINEAR_LAYERS,
                         ids=['conv-strided', 'conv-5x5', 'avgpool', 'flat', 'fc'])
def test_adjoint_dot_product(make_layer, rng):
    layer = make_layer()
    x = rng.standard_normal(layer.input_size)
    y = rng.standard_normal(layer.output_size)
    forward = np.vdot(layer.forward(x), y)
    adjoint = np.vdot(x, layer.backward(y))
    assert abs(forward - adjoint) <= 1e-12 * max(abs(forward), 1.0)


def test_max_pooling_is_linear_around_a_fixed_argmax(rng):
    """Max pooling is the adjoint pair of its own routing for a fixed input."""
    layer = MaxPooling(3, (2, 2, 7, 7), stride=2, padding=1, dtype=np.float64)
    x = rng.standard_normal(layer.input_size)
    y = rng.standard_normal(layer.output_size)
    output = layer.forward(x)
    routed = layer.backward(y)
    assert abs(np.vdot(output, y) - np.vdot(x, routed)) <= 1e-12 * abs(np.vdot(output, y))
