"""Graphs and ownership: Add and Concat against torch, gradients summed where an
output feeds several layers, sizes inferred, and the errors a new user meets."""

import numpy as np
import pytest
import torch

from devito_ml import (Add, BatchNorm, Concat, Conv, Dropout, Flat, FullyConnected,
                       GlobalAvgPooling, Input, LayerArgumentError, MaxPooling, Net,
                       ReLU)
from reference import DTYPES, assert_close, torch_dtype


def _residual_and_concat_net(dtype):
    x = Input((2, 7, 6))
    a = Conv((3, 3, 3), padding=1, activation=ReLU(), name='a')(x)
    b = Conv((3, 1, 1), name='b')(x)
    s = Add(activation=ReLU())(a, b)                 # x feeds a and b, a feeds s and p
    p = MaxPooling(3, stride=1, padding=1)(a)        # -inf padding on a shared output
    c = Concat()(s, p, x)
    y = FullyConnected(4)(Flat()(GlobalAvgPooling()(c)))
    return Net(y, batch_size=3, dtype=dtype, seed=0)


def _torch_residual_and_concat(xt, tensors):
    conv = torch.nn.functional.conv2d
    at = torch.relu(conv(xt, tensors['a_W'], tensors['a_b'], padding=1))
    bt = conv(xt, tensors['b_W'], tensors['b_b'])
    st = torch.relu(at + bt)
    pt = torch.nn.functional.max_pool2d(at, 3, 1, 1)
    ct = torch.cat([st, pt, xt], 1).mean((2, 3))
    return ct @ tensors['fc1_W'].T + tensors['fc1_b']


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_residual_and_concat_graph_matches_torch(dtype, rng):
    net = _residual_and_concat_net(dtype)
    W = {layer.name: layer for layer in net.layers}
    t = torch_dtype(dtype)
    tensors = {name: torch.from_numpy(np.array(data)).requires_grad_(True)
               for name, data in net.parameters().items()}
    data = rng.standard_normal((3, 2, 7, 6)).astype(dtype)
    labels = np.array([0, 3, 1])
    out, loss = net.forward(data), net.backward(labels)
    yt = _torch_residual_and_concat(torch.from_numpy(data), tensors)
    lt = torch.nn.functional.cross_entropy(yt, torch.from_numpy(labels))
    lt.backward()
    assert yt.dtype == t
    assert_close(out, yt.detach().numpy(), dtype, 'output')
    assert_close(loss, lt.item(), dtype, 'loss')
    for name, gradient in net.gradients().items():
        assert_close(gradient, tensors[name].grad.numpy(), dtype, name)
    assert [layer.name for layer in net.layers] == \
        ['a', 'b', 'add1', 'pool1', 'concat1', 'avgpool1', 'flat1', 'fc1']
    assert W['concat1'].output_size == (3, 8, 7, 6)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_input_gradient_sums_every_consumer_of_the_input(dtype, rng):
    """The input feeds two convolutions and the concatenation; the gradient with
    respect to it is what torch's autograd gives, and so are the per-sample losses."""
    net = _residual_and_concat_net(dtype)
    tensors = {name: torch.from_numpy(np.array(data))
               for name, data in net.parameters().items()}
    data = rng.standard_normal((3, 2, 7, 6)).astype(dtype)
    labels = np.array([2, 0, 1])
    gradient = net.input_gradient(data, labels)
    xt = torch.from_numpy(data).requires_grad_(True)
    yt = _torch_residual_and_concat(xt, tensors)
    per_sample = torch.nn.functional.cross_entropy(yt, torch.from_numpy(labels),
                                                   reduction='none')
    per_sample.mean().backward()
    assert gradient.shape == data.shape and gradient.dtype == dtype
    assert_close(gradient, xt.grad.numpy(), dtype, 'input gradient')
    assert_close(net.sample_losses(), per_sample.detach().numpy(), dtype, 'losses')
    assert net.input_gradient(data[:2], labels[:2]).shape == (2, 2, 7, 6)


def _shared_gradient_net(dtype):
    x = Input((2, 5, 5))
    a = Conv((2, 3, 3), padding=1, activation=ReLU(), name='a')(x)
    s = Add(activation=ReLU())(x, a)           # x and a each feed two layers
    p = MaxPooling(3, stride=1, padding=1)(a)
    y = FullyConnected(3)(Flat()(Concat()(s, p)))
    return Net(y, batch_size=3, dtype=dtype, seed=0)


def _torch_shared_gradient(xt, tensors):
    at = torch.relu(torch.nn.functional.conv2d(xt, tensors['a_W'], tensors['a_b'],
                                               padding=1))
    st = torch.relu(xt + at)
    pt = torch.nn.functional.max_pool2d(at, 3, 1, 1)
    return torch.cat([st, pt], 1).flatten(1) @ tensors['fc1_W'].T + tensors['fc1_b']


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_an_add_writes_the_gradient_its_inputs_share_once(dtype, rng):
    """Both of the Add's inputs feed other layers too: their gradient, equal, is
    one buffer the Add writes once; the network's input is one of them, and the
    other input's gradient sum still reads it, in training and for
    ``input_gradient``."""
    net = _shared_gradient_net(dtype)
    tensors = {name: torch.from_numpy(np.array(data)).requires_grad_(True)
               for name, data in net.parameters().items()}
    data = rng.standard_normal((3, 2, 5, 5)).astype(dtype)
    labels = np.array([2, 0, 1])
    net.forward(data)
    loss = net.backward(labels)
    xt = torch.from_numpy(data).requires_grad_(True)
    lt = torch.nn.functional.cross_entropy(_torch_shared_gradient(xt, tensors),
                                           torch.from_numpy(labels))
    lt.backward()
    assert_close(loss, lt.item(), dtype, 'loss')
    for name, gradient in net.gradients().items():
        assert_close(gradient, tensors[name].grad.numpy(), dtype, name)
    add = next(layer for layer in net.layers if isinstance(layer, Add))
    assert add.input_gradients_of(1) is add.input_gradients_of(0)
    assert 'add1_din1' not in net.backward_code
    assert_close(net.input_gradient(data, labels), xt.grad.numpy(), dtype,
                 'input gradient')


def test_sizes_are_inferred_and_given_once():
    net = Net([Conv((4, 3, 3)), BatchNorm(), Flat(), Dropout(0.2), FullyConnected(3)],
              input_shape=(2, 6, 5), batch_size=4, dtype=np.float64)
    assert net.layers[0].input_size == (4, 2, 6, 5)
    assert net.layers[-1].weight_size == (3, 4 * 4 * 3)
    assert all(layer.dtype == np.float64 for layer in net.layers)


def test_a_layer_of_another_dtype_is_refused():
    with pytest.raises(TypeError, match='float64'):
        Net([Flat(dtype=np.float64), FullyConnected(2)], input_shape=(1, 2, 2),
            batch_size=1, dtype=np.float32)


def test_a_layer_belongs_to_one_net():
    layers = [Flat(), FullyConnected(2)]
    Net(layers, input_shape=(1, 2, 2), batch_size=1)
    with pytest.raises(LayerArgumentError, match='already used'):
        Net(layers, input_shape=(1, 2, 2), batch_size=1)


def test_a_layer_used_alone_cannot_join_a_net():
    conv = Conv((2, 3, 3), (1, 1, 5, 5))
    conv.kernel.data[:] = 1                      # its Functions now exist
    with pytest.raises(LayerArgumentError, match='used alone'):
        Net([conv, Flat(), FullyConnected(2)])


def test_functions_taken_after_building_are_the_nets():
    conv = Conv((2, 3, 3), bias=False)
    net = Net([conv, Flat(), FullyConnected(2)], input_shape=(1, 5, 5), batch_size=1,
              dtype=np.float64, seed=0)
    kernel = conv.kernel
    before = net.forward(np.ones((1, 1, 5, 5)))
    kernel.data[:] = 0
    assert np.allclose(net.forward(np.ones((1, 1, 5, 5))), net.parameters()['fc1_b'])
    assert not np.allclose(before, net.parameters()['fc1_b'])


@pytest.mark.parametrize('arguments, message', [
    (dict(name='3conv'), 'C identifier'),
    (dict(name='for'), 'C identifier'),
])
def test_names_must_be_c_identifiers(arguments, message):
    with pytest.raises(LayerArgumentError, match=message):
        Flat(**arguments)


def test_a_layer_without_size_says_how_to_get_one():
    with pytest.raises(AttributeError, match='put in a Net'):
        Conv((2, 3, 3)).kernel
