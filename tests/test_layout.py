"""One layout through the net: activations between register-tiled convolutions are
stored channels last, indexed as NCHW, and the net still agrees with torch at
every vector width; what users read and write stays NCHW."""

import pickle
import re

import numpy as np
import pytest
from devito import Dimension, Eq, Function, Operator

from devito_ml import (Add, BatchNorm, Conv, Flat, FullyConnected, GlobalAvgPooling,
                       Input, MaxPooling, Net, ReLU)
from devito_ml.interop import torch_models
from devito_ml.layout import ChannelsLastFunction, is_channels_last
from devito_ml.models import resnet
from devito_ml.symbolics import channel_sum, tap_dimension, tensor
from twins import compare_model


def _dimensions(prefix):
    return (Dimension('n'),) + tuple(Dimension(f"{prefix}_{r}") for r in 'chw')


def test_channels_last_storage_is_indexed_and_read_as_nchw():
    """Pins what the layout relies on in the Devito version in use: a Function
    subclass whose ``[]`` reorders its indices lowers to channels-innermost loops,
    and ``Function.data`` is a property whose getter the subclass can wrap."""
    assert isinstance(Function.data, property)
    dims_a, dims_b = _dimensions('a'), _dimensions('b')
    a = tensor('a', dims_a, (2, 16, 3, 4), np.float64, channels_last=True)
    b = tensor('b', dims_b, (2, 16, 3, 4), np.float64, channels_last=True)
    assert type(a) is ChannelsLastFunction and a.shape == (2, 3, 4, 16)
    x = np.random.default_rng(0).standard_normal((2, 16, 3, 4))
    a.data[:] = x
    assert np.array_equal(a.data, x)
    assert np.array_equal(np.asarray(a.data_with_halo), x.transpose(0, 2, 3, 1))
    n, c, h, w = dims_b
    op = Operator([Eq(b[n, c, h, w], 2 * a[n, c, h, w])])
    op.apply()
    assert np.array_equal(b.data, 2 * x)
    loops = re.findall(r'for \(int (\w+) =', str(op))
    assert loops == ['n', 'b_h', 'b_w', 'b_c']          # channels innermost
    assert type(pickle.loads(pickle.dumps(b))) is ChannelsLastFunction
    assert type(b._rebuild(name='b2')) is ChannelsLastFunction


def test_channels_last_activation_refuses_other_indices():
    a = tensor('a', _dimensions('a'), (2, 16, 3, 4), np.float32, channels_last=True)
    with pytest.raises(IndexError, match=r"`a`.*\(n, c, h, w\)"):
        a[Dimension('n'), Dimension('c')]


def _block_net(channels, pooling=None, dtype=np.float32):
    x = Input((3, 8, 8))
    stem = Conv((channels, 3, 3), padding=1, name='stem')(x)
    h = BatchNorm(activation=ReLU(), name='bn1')(
        Conv((channels, 3, 3), padding=1, name='conv1')(stem))
    h = BatchNorm(name='bn2')(Conv((channels, 3, 3), padding=1, name='conv2')(h))
    s = Add(activation=ReLU(), name='add')(h, stem)
    p = (pooling or MaxPooling(2, name='pool'))(Conv((channels, 1, 1), name='head')(s))
    y = FullyConnected(4, name='fc')(Flat()(GlobalAvgPooling()(p)))
    return Net(y, batch_size=2, dtype=dtype, seed=0)


def test_activations_from_the_stem_to_the_head_are_channels_last(width):
    """16 channels fill the lanes of every width: every activation from the first
    convolution to the global pooling is channels last (Flat reads any layout);
    the net's input and the fully connected output are not."""
    net = _block_net(16)
    stored = {layer.name: is_channels_last(layer.result) for layer in net.layers}
    assert stored == {'stem': True, 'conv1': True, 'bn1': True, 'conv2': True,
                      'bn2': True, 'add': True, 'head': True, 'pool': True,
                      'avgpool1': True, 'flat1': False, 'fc': False}
    assert not is_channels_last(net.input)
    layers = {layer.name: layer for layer in net.layers}
    assert is_channels_last(layers['bn1'].input_gradients)     # conv1's dout
    assert is_channels_last(layers['add'].input_gradients_of(1))


def test_a_layer_that_reads_nchw_keeps_its_inputs_group_nchw():
    """Windows read through index tables (ceil_mode adds a window here) are NCHW:
    the pooling's input, its output and what shares their layout are NCHW, the
    residual block before them channels last."""
    net = _block_net(16, MaxPooling(3, stride=2, ceil_mode=True, name='pool'))
    stored = {layer.name: is_channels_last(layer.result) for layer in net.layers}
    assert stored == {'stem': True, 'conv1': True, 'bn1': True, 'conv2': True,
                      'bn2': True, 'add': True, 'head': False, 'pool': False,
                      'avgpool1': False, 'flat1': False, 'fc': False}


def test_channels_last_needs_channels_in_whole_vectors(width):
    """12 channels are register-tiled at every width (12 of 16 lanes), but whole
    vectors only of 4 lanes: point-wise layers and pooling over a remainder of 4
    channels would not vectorise, so at 8 and 16 lanes the net stays NCHW."""
    net = _block_net(12)
    expected = 12 % min(8, width) == 0
    assert [is_channels_last(layer.result) for layer in net.layers[:6]] == [expected] * 6


def test_channels_that_fill_no_lanes_stay_nchw():
    """3 channels fill three quarters of no tile width: nothing is channels last."""
    net = _block_net(3)
    assert not any(is_channels_last(layer.result) for layer in net.layers)


def _small_resnet(dtype):
    """Stages of 8 and 16 channels, a downsampling shortcut: channels last but for
    the second stage's residual stream, which the pooling head reads."""
    return resnet(18, batch_size=3, image_size=(7, 6), classes=5, width=8,
                  small_input=True, blocks=(1, 1, 0, 0), dtype=dtype, seed=2)


def _compare_small_resnet(dtype, training, rng):
    net = _small_resnet(dtype)
    assert is_channels_last(net.layers[0].result)
    compare_model(net, lambda: torch_models.resnet(18, 5, 8, 3, True,
                                                   blocks=(1, 1, 0, 0)),
                  rng, training)


def test_channels_last_resnet_trains_like_torch_at_every_width(width, rng):
    """Outputs, loss, every gradient and the running statistics against torch,
    in float64, with the schedules of each vector width."""
    _compare_small_resnet(np.float64, True, rng)


def test_channels_last_resnet_matches_torch_in_float32(rng):
    _compare_small_resnet(np.float32, True, rng)


def test_channel_sums_of_a_channels_last_tensor_match_numpy():
    """Per-sample sums vectorised over the channels, then a sum over the batch: the
    per-channel sums of BatchNorm and of a bias gradient read channels last."""
    dims = _dimensions('x')
    n, c, h, w = dims
    x = tensor('x', dims, (3, 16, 4, 5), np.float64, channels_last=True)
    total = tensor('total', (c,), (16,), np.float64)
    samples = tensor('samples', (Dimension('s_n'), c), (3, 16), np.float64)
    rows, columns = tap_dimension('r_h', 4), tap_dimension('r_w', 5)
    batch = samples.dimensions[0]
    values = np.random.default_rng(0).standard_normal((3, 16, 4, 5))
    x.data[:] = values
    Operator(channel_sum('sum_x', total[c], x[batch, c, rows, columns], c,
                         (batch, rows, columns), samples, tap_dimension('b_n', 3),
                         finish=lambda t: t / 60)).apply()
    assert np.allclose(total.data, values.mean(axis=(0, 2, 3)), rtol=1e-14)
    with pytest.raises(ValueError, match='stored on the batch loop'):
        channel_sum('sum_x', total[c], x[n, c, rows, columns], c, (n, rows, columns),
                    samples, tap_dimension('b_n', 3))
