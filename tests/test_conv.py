"""Conv against torch.nn.Conv2d: kernels 1x1 to 5x5 and 3x2, strides 1-3, paddings
0-2, dilations 1-2, non-square inputs, batch 1 and several, float32 and float64."""

import numpy as np
import pytest
import torch

from devito_ml import Conv, LayerArgumentError, ReLU, ShapeError, Tanh
from reference import DTYPES, compare_layer

# (input NCHW, (K, R, Q), stride, padding, dilation)
CASES = [
    ((2, 3, 7, 6), (4, 1, 1), 1, 0, 1),
    ((1, 2, 6, 5), (3, 2, 2), 1, 0, 1),
    ((3, 3, 9, 8), (4, 3, 3), 1, 1, 1),
    ((2, 2, 9, 11), (3, 3, 2), 2, (1, 0), 1),
    ((2, 3, 10, 9), (2, 5, 5), 1, 2, 1),
    ((1, 2, 11, 10), (4, 3, 3), 3, 2, 1),
    ((2, 2, 9, 9), (3, 3, 3), 2, 1, 2),
    ((2, 1, 12, 10), (2, 3, 2), (1, 3), 2, (2, 1)),
    ((1, 2, 10, 9), (2, 8, 7), 1, 1, 1),    # above MAX_UNROLLED_TAPS: tap loops
    # >= 16 input channels: the input gradient runs channels last too
    ((2, 16, 7, 6), (4, 3, 3), 2, 1, 2),
    ((1, 17, 6, 7), (3, 3, 2), 1, (2, 1), 1),
    ((1, 16, 10, 9), (2, 8, 7), (2, 1), 1, 1),
    # >= 16 output channels: forward and weight gradient run channels last
    ((2, 3, 7, 6), (16, 3, 3), 2, 1, 2),
    ((1, 16, 6, 7), (17, 3, 2), 1, (2, 1), 1),
    ((1, 2, 10, 9), (16, 8, 7), (2, 1), 1, 1),
]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('size, kernel, stride, padding, dilation', CASES)
def test_conv_matches_torch(size, kernel, stride, padding, dilation, dtype, rng):
    layer = Conv(kernel, size, stride=stride, padding=padding, dilation=dilation,
                 dtype=dtype, seed=0)
    module = torch.nn.Conv2d(size[1], kernel[0], kernel[1:], stride=stride,
                             padding=padding, dilation=dilation)
    compare_layer(layer, module, rng)


@pytest.mark.parametrize('activation, reference', [(ReLU(), torch.relu),
                                                   (Tanh(), torch.tanh)])
def test_conv_activation_matches_torch(activation, reference, rng):
    layer = Conv((3, 3, 3), (2, 2, 6, 7), padding=1, activation=activation,
                 dtype=np.float64, seed=0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    compare_layer(layer, _Wrapped(conv, reference), rng)


class _Wrapped(torch.nn.Module):
    def __init__(self, conv, activation):
        super().__init__()
        self.conv, self.activation = conv, activation
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x):
        return self.activation(self.conv(x))


def test_conv_without_bias(rng):
    layer = Conv((3, 2, 2), (2, 2, 5, 5), bias=False, dtype=np.float64, seed=0)
    module = torch.nn.Conv2d(2, 3, 2, bias=False)
    compare_layer(layer, module, rng)
    assert set(layer.parameters()) == {'W'}


def test_smaller_batch_reuses_operator(rng):
    layer = Conv((3, 3, 3), (4, 2, 6, 6), padding=1, dtype=np.float64, seed=0)
    compare_layer(layer, torch.nn.Conv2d(2, 3, 3, padding=1), rng)
    operator = layer.forward_operator
    compare_layer(layer, torch.nn.Conv2d(2, 3, 3, padding=1), rng, batch=3)
    assert layer.forward_operator is operator


def pragma_of_innermost_loop(code, statement):
    """The line just above the innermost ``for`` that encloses ``statement``."""
    lines = code[:code.index(statement)].splitlines()
    loop = max(i for i, line in enumerate(lines) if line.strip().startswith('for ('))
    return lines[loop - 1].strip()


NESTS = {  # (input channels, output channels) -> statements whose loop must be simd
    # too few channels to tile at any vector width: the NCHW nests
    (2, 2): ['conv_out[n][conv_out_c][conv_out_h][conv_out_w] += ',
             'conv_din[n][conv_din_c][conv_din_h][conv_din_w] += '],
    # the rest: test_lanes.py
    (16, 16): ['conv_dW_cl[conv_ky][conv_kx][conv_in_cl_c][conv_dz_cl_k] += '],
}


@pytest.mark.parametrize('channels, out_channels', sorted(NESTS))
def test_innermost_loops_are_vectorised(channels, out_channels, width):
    layer = Conv((out_channels, 3, 3), (2, channels, 8, 8), padding=1,
                 generate_code=True)
    code = layer.forward_operator.code + layer.backward_operator.code
    for statement in NESTS[channels, out_channels]:
        assert pragma_of_innermost_loop(code, statement).startswith('#pragma omp simd')


def test_few_output_channels_accumulate_weight_gradients_in_registers(width):
    layer = Conv((2, 3, 3), (2, 2, 8, 8), padding=1, generate_code=True)
    assert not layer.channels_last
    backward = layer.backward_operator.code
    assert 'float conv_dW_1_1 = 0;' in backward
    assert 'conv_dW[conv_out_c][conv_in_c][1][1] = conv_dW_1_1;' in backward


@pytest.mark.parametrize('kernels, channels, stride, padding, dilation, groups', [
    (4, 3, 2, 1, 1, 1),      # NCHW nests
    (16, 16, 2, 2, 2, 1),    # register tiles, strided and dilated
    (16, 8, 3, 0, 1, 1),     # tiles forward, NCHW input gradient at 4 lanes
    (8, 8, 1, 1, 1, 4),      # grouped
    (12, 6, 2, 1, 2, 3)])
def test_backward_is_the_forward_transposed_and_gathers(kernels, channels, stride,
                                                        padding, dilation, groups, rng):
    """The adjoint rule of the correlation, as each schedule lowers it: the dot
    product test in float64, for the input (``<A x, y> = <x, A^T y>``) and for the
    kernel (the output is linear in it too), and no atomics in the C."""
    layer = Conv((kernels, 3, 3), (2, channels, 9, 11), stride=stride, padding=padding,
                 dilation=dilation, groups=groups, bias=False, dtype=np.float64,
                 seed=0, generate_code=True)
    x = rng.standard_normal(layer.input_size)
    y = rng.standard_normal(layer.output_size)
    forward = np.vdot(layer.forward(x), y)
    transposed = layer.backward(y)
    assert np.isclose(forward, np.vdot(x, transposed), rtol=1e-12, atol=0)
    assert np.isclose(forward, np.vdot(layer.kernel.data, layer.kernel_gradients.data),
                      rtol=1e-12, atol=0)
    assert 'atomic' not in layer.backward_operator.code


@pytest.mark.parametrize('arguments, message', [
    (dict(kernel_size=(4, 3), input_size=(1, 1, 5, 5)), 'kernel_size'),
    (dict(kernel_size=(4, 3, 3), input_size=(1, 5, 5)), 'input_size'),
    (dict(kernel_size=(4, 3, 3), input_size=(1, 1, 5, 5), stride=0), 'stride'),
    (dict(kernel_size=(4, 3, 3), input_size=(1, 1, 5, 5), padding=-1), 'padding'),
    (dict(kernel_size=(4, 7, 7), input_size=(1, 1, 5, 5)), 'does not fit'),
])
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises((LayerArgumentError, ShapeError), match=message):
        Conv(**arguments)


@pytest.mark.parametrize('kernel, dilation', [((3, 3), 1), ((5, 3), (1, 2)),
                                              ((4, 3), (2, 1))])
def test_same_padding_keeps_the_size_and_matches_torch(kernel, dilation, rng):
    layer = Conv((3,) + kernel, (2, 2, 7, 6), padding='same', dilation=dilation,
                 dtype=np.float64)
    assert layer.output_size == (2, 3, 7, 6)
    compare_layer(layer, torch.nn.Conv2d(2, 3, kernel, padding='same',
                                         dilation=dilation), rng)


@pytest.mark.parametrize('arguments, message', [
    (dict(padding='full'), r"`padding` must be an int, a pair of ints, 'valid' or "
     r"'same', got 'full'"),
    (dict(padding='same', stride=2), r"padding='same' needs stride 1"),
    (dict(kernel_size=(2, 4, 4), padding='same'), r"pads one more row or column")])
def test_bad_string_padding_is_named(arguments, message):
    arguments = {'kernel_size': (2, 3, 3), **arguments}
    with pytest.raises(LayerArgumentError, match=message):
        Conv(**arguments)
