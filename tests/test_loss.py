"""Losses against torch: value and gradient, stability for huge logits, soft targets,
and the mean taken over a smaller last batch."""

import numpy as np
import pytest
import torch

from devito_ml import Conv, FullyConnected, Net
from devito_ml.loss import MSE, CrossEntropy
from reference import DTYPES, assert_close


def linear_net(loss, dtype, batch=4, classes=5):
    return Net([FullyConnected((classes, 3), (batch, 3))], dtype=dtype, loss=loss,
               seed=0)


def torch_linear(net):
    layer = net.layers[0]
    linear = torch.nn.Linear(3, layer.weight_size[0]).to(
        torch.float64 if net.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(layer.kernel.data.copy()))
        linear.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
    return linear


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('batch', [4, 2])
@pytest.mark.parametrize('scale', [1.0, 1e4])
def test_cross_entropy_matches_torch(scale, batch, dtype, rng):
    net = linear_net(CrossEntropy(), dtype)
    x = (scale * rng.standard_normal((batch, 3))).astype(dtype)
    labels = rng.integers(0, 5, batch)
    net.forward(x)
    loss = net.backward(labels)
    linear = torch_linear(net)
    reference = torch.nn.functional.cross_entropy(linear(torch.from_numpy(x)),
                                                  torch.from_numpy(labels))
    reference.backward()
    assert np.isfinite(loss)
    assert_close(loss, reference.item(), dtype, 'loss')
    assert_close(net.gradients()['fc1_W'], linear.weight.grad.numpy(), dtype, 'dW')


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('row_sums', ['one', 'any'])
def test_cross_entropy_accepts_probabilities(row_sums, dtype, rng):
    """Rows that do not sum to one give torch's value and gradient too."""
    net = linear_net('cross_entropy', dtype)
    x = rng.standard_normal((4, 3)).astype(dtype)
    targets = rng.dirichlet(np.ones(5), 4) if row_sums == 'one' else \
        3 * rng.random((4, 5))
    targets = targets.astype(dtype)
    net.forward(x)
    loss = net.backward(targets)
    linear = torch_linear(net)
    reference = torch.nn.functional.cross_entropy(linear(torch.from_numpy(x)),
                                                  torch.from_numpy(targets))
    reference.backward()
    assert_close(loss, reference.item(), dtype, 'loss')
    assert_close(net.gradients()['fc1_W'], linear.weight.grad.numpy(), dtype, 'dW')


def test_cross_entropy_of_large_logits_keeps_float32_precision(rng):
    """Logits of ~1e4: the loss is not formed as max + log(sum) - z_t, which
    cancelled ~1e-4 of relative precision in float32."""
    net = linear_net('cross_entropy', np.float32)
    x = (1e4 * rng.standard_normal((4, 3))).astype(np.float32)
    labels = rng.integers(0, 5, 4)
    logits = net.forward(x)
    loss = net.backward(labels)
    exact = torch.nn.functional.cross_entropy(torch.from_numpy(logits.astype(np.float64)),
                                              torch.from_numpy(labels)).item()
    assert abs(loss - exact) <= 1e-6 * abs(exact)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_mse_matches_torch(dtype, rng):
    net = linear_net(MSE(), dtype)
    x = rng.standard_normal((3, 3)).astype(dtype)
    targets = rng.standard_normal((3, 5)).astype(dtype)
    net.forward(x)
    loss = net.backward(targets)
    linear = torch_linear(net)
    reference = torch.nn.functional.mse_loss(linear(torch.from_numpy(x)),
                                             torch.from_numpy(targets))
    reference.backward()
    assert_close(loss, reference.item(), dtype, 'loss')
    assert_close(net.gradients()['fc1_b'], linear.bias.grad.numpy(), dtype, 'db')


def test_bad_labels_are_refused():
    net = linear_net('cross_entropy', np.float64)
    net.forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r'labels in \[0, 5\)'):
        net.backward(np.array([0, 1, 2, 5]))


def test_mse_on_a_feature_map_matches_torch(rng):
    net = Net([Conv((3, 3, 3), (2, 2, 5, 4), padding=1)], dtype=np.float64, loss='mse',
              seed=0)
    x, targets = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 3, 5, 4))
    net.forward(x)
    loss = net.backward(targets)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(net.layers[0].kernel.data.copy()))
        conv.bias.copy_(torch.from_numpy(net.layers[0].bias.data.copy()))
    reference = torch.nn.functional.mse_loss(conv(torch.from_numpy(x)),
                                             torch.from_numpy(targets))
    reference.backward()
    assert_close(loss, reference.item(), np.float64, 'loss')
    assert_close(net.gradients()['conv1_W'], conv.weight.grad.numpy(), np.float64, 'dW')


def test_cross_entropy_needs_a_two_dimensional_output():
    with pytest.raises(ValueError, match=r'\(batch, classes\)'):
        Net([Conv((3, 3, 3), (2, 2, 5, 4))], loss='cross_entropy')
