"""Losses against torch: value and gradient, stability for huge logits, soft targets,
and the mean taken over a smaller last batch."""

import numpy as np
import pytest
import torch

from devito_ml import Conv, Flat, FullyConnected, FullyConnectedSoftmax, Net
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


def _identity_head(head, batch, classes):
    """A net whose logits are its input, exactly: W = I, b = 0."""
    net = Net([Flat(), head(classes)], batch_size=batch, input_shape=(1, 1, classes),
              dtype=np.float32)
    net.layers[-1].kernel.data[:] = np.eye(classes)
    net.layers[-1].bias.data[:] = 0
    return net


@pytest.mark.parametrize('head', [FullyConnected, FullyConnectedSoftmax],
                         ids=['fc', 'softmax-head'])
@pytest.mark.parametrize('offset', [1e2, -1e4, 1e4, 1e6, -1e6])
@pytest.mark.parametrize('spread', [1e-3, 1.0, 1e3])
def test_cross_entropy_of_offset_logits_keeps_float32_precision(head, offset, spread):
    """Logits of a large common offset plus a spread (``1e4 + N(0, 1)``): loss,
    per-sample losses and the logits' gradient within 1e-6 of the float64 value
    of the same float32 logits, or no further from it than torch's float32."""
    batch, classes = 5, 7
    rng = np.random.default_rng(int(abs(offset) + spread * 1e3))
    logits = (offset + spread * rng.standard_normal((batch, classes))).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    net = _identity_head(head, batch, classes)
    x = logits.reshape(batch, 1, 1, classes)
    net.forward(x)
    loss = net.backward(labels)
    per_sample = net.sample_losses()
    gradient = net.input_gradient(x, labels).reshape(batch, classes)
    results = {}
    for dtype in (np.float64, np.float32):
        z = torch.from_numpy(logits.astype(dtype)).requires_grad_(True)
        losses = torch.nn.functional.cross_entropy(z, torch.from_numpy(labels),
                                                   reduction='none')
        losses.mean().backward()
        results[dtype] = (losses.mean().item(), losses.detach().numpy(),
                          z.grad.numpy())
    for ours, exact, theirs in zip((loss, per_sample, gradient), results[np.float64],
                                   results[np.float32]):
        scale = np.abs(exact).max()
        error = np.abs(np.asarray(ours, np.float64) - exact).max()
        assert error <= max(1e-6 * scale, np.abs(theirs - exact).max() * 1.01)


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


@pytest.mark.parametrize('labels', [np.array([], int), np.array([[0, 1]])],
                         ids=['empty', 'two-dimensional'])
def test_labels_of_the_wrong_shape_are_named(labels):
    net = linear_net('cross_entropy', np.float64)
    net.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"cross_entropy: `targets` must be 2 integer "
                       r"labels .* or shape \(2, 5\), got int64 \(.*\)"):
        net.backward(labels)


def test_mse_takes_targets_as_lists_and_refuses_bad_ones():
    net = linear_net(MSE(), np.float64, batch=2)
    x = np.ones((2, 3))
    net.forward(x)
    targets = [[0.5, 1, 0, 0, 2], [1, 0, 0, 3, 0]]
    assert net.backward(targets) == net.backward(np.array(targets))
    with pytest.raises(ValueError, match=r"mse: `targets` must be of shape \(2, 5\), "
                       r"got float64 \(2, 4\)"):
        net.backward([[0.0] * 4] * 2)
    with pytest.raises(ValueError, match=r"mse: `targets` must be finite"):
        net.backward([[np.nan] * 5] * 2)


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
