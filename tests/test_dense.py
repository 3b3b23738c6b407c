"""Flat, FullyConnected and FullyConnectedSoftmax against torch, with every
activation."""

import re

import numpy as np
import pytest
import torch
from devito import Operator

from devito_ml import (Flat, FullyConnected, FullyConnectedSoftmax, Identity,
                       LeakyReLU, ReLU, ShapeError, Sigmoid, Tanh)
from reference import DTYPES, compare_layer

ACTIVATIONS = [(Identity(), lambda z: z), (ReLU(), torch.relu),
               (LeakyReLU(0.1), lambda z: torch.nn.functional.leaky_relu(z, 0.1)),
               (Sigmoid(), torch.sigmoid), (Tanh(), torch.tanh)]


class Activated(torch.nn.Module):
    def __init__(self, linear, activation):
        super().__init__()
        self.linear, self.activation = linear, activation
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        return self.activation(self.linear(x))


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('activation, reference', ACTIVATIONS,
                         ids=lambda a: type(a).__name__)
def test_fully_connected_matches_torch(activation, reference, dtype, rng):
    layer = FullyConnected((5, 7), (3, 7), activation=activation, dtype=dtype, seed=0)
    compare_layer(layer, Activated(torch.nn.Linear(7, 5), reference), rng)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('batch', [1, 4])
def test_fully_connected_softmax_matches_torch(batch, dtype, rng):
    layer = FullyConnectedSoftmax((6, 9), (batch, 9), dtype=dtype, seed=0)
    module = Activated(torch.nn.Linear(9, 6), lambda z: torch.softmax(z, 1))
    compare_layer(layer, module, rng)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('outputs, features, batch', [(13, 37, 16), (5, 130, 27),
                                                      (40, 3, 33)])
def test_batches_of_16_or_more_run_register_tiles_and_match_torch(outputs, features,
                                                                  batch, dtype, rng):
    """Remainders everywhere: no tile divides the outputs, the features or the
    batch."""
    layer = FullyConnected((outputs, features), (batch, features), activation=ReLU(),
                           dtype=dtype, seed=0)
    assert layer.tiled
    compare_layer(layer, Activated(torch.nn.Linear(features, outputs), torch.relu), rng)


def test_derived_gradients_run_the_register_tiles_of_the_forward_pass():
    """The adjoint is derived from the forward maths, and the schedule finds its
    two matrix products (dx and dW) as it finds the forward one: three tiled
    products, no atomics, and no sum left in memory."""
    layer = FullyConnected((13, 37), (16, 37), activation=ReLU(), seed=0)
    code = str(Operator(layer.equations() + layer.backprop_equations()).ccode)
    for tiles in ('fc_fwd', 'fc_bwd', 'fc_dW'):
        assert f'{tiles}_acc' in code
    assert 'atomic' not in code
    assert not re.search(r'(float|double) fc_(dW|din)_sum\b', code)   # registers


@pytest.mark.parametrize('batch', [3, 16], ids=['products', 'tiles'])
def test_backward_is_the_forward_transposed(batch, rng):
    """The derived gradients as each schedule lowers them: the dot product test in
    float64, for the input and for the weight (the output is linear in both)."""
    layer = FullyConnected((13, 37), (batch, 37), bias=False, dtype=np.float64, seed=0)
    x = rng.standard_normal((batch, 37))
    y = rng.standard_normal((batch, 13))
    forward = np.vdot(layer.forward(x), y)
    assert np.isclose(forward, np.vdot(x, layer.backward(y)), rtol=1e-12, atol=0)
    assert np.isclose(forward, np.vdot(layer.kernel.data, layer.kernel_gradients.data),
                      rtol=1e-12, atol=0)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_tiled_gradients_ignore_samples_past_the_active_batch(dtype, rng):
    """A full batch leaves its samples in the tiles' copies; a smaller batch after it
    must not sum them into the weight gradient."""
    layer = FullyConnectedSoftmax((10, 21), (24, 21), dtype=dtype, seed=0)
    module = Activated(torch.nn.Linear(21, 10), lambda z: torch.softmax(z, 1))
    compare_layer(layer, module, rng)
    module.zero_grad()
    compare_layer(layer, module, rng, batch=17)


@pytest.mark.parametrize('size', [(2, 3, 4, 5), (1, 2, 7, 3)])
def test_flat_is_torch_flatten(size, rng):
    compare_layer(Flat(size, dtype=np.float64), lambda x: torch.flatten(x, 1), rng)


def test_weight_size_must_match_input_features():
    with pytest.raises(ShapeError, match=r'`fc`.*needs 8 input features.*has 7'):
        FullyConnected((3, 8), (1, 7))
