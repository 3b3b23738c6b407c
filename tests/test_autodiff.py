"""Adjoints derived from forward equations (devito_ml.autodiff), against PyTorch
autograd, dot-product and Taylor tests; gather form (no atomics) where the index map
inverts, a warned scatter where it does not, and errors naming the term otherwise."""

import warnings

import numpy as np
import pytest
import sympy
import torch
from devito import Dimension, Eq, Function, Inc, Operator

from devito_ml import (ActivationLayer, Conv, Flat, FullyConnected, Layer, LeakyReLU,
                       MaxPooling, Net, ReLU, Sigmoid, Tanh)
from devito_ml.autodiff import AutodiffError, ScatterWarning, adjoint, derivative
from devito_ml.symbolics import Select, register_sum, tap_dimension, tensor
from reference import DTYPES, assert_close, compare_layer
from twins import compare_net


def dims(*names):
    return tuple(Dimension(name) for name in names)


class Maths:
    """Forward equations over fresh Functions, their derived adjoint, and runs."""

    def __init__(self, dtype=np.float64):
        self.dtype, self.inputs, self.outputs, self.gradients = dtype, [], [], {}

    def tensor(self, name, dimensions, shape, halo=None, role='input'):
        function = tensor(name, dimensions, shape, self.dtype, halo)
        storage = tuple(Dimension(f"{name}_g{axis}") for axis in range(len(shape)))
        self.gradients[function] = tensor(f"{name}_grad", storage, shape, self.dtype)
        (self.inputs if role == 'input' else self.outputs).append(function)
        return function

    def derive(self, forward, where='test'):
        with warnings.catch_warnings():
            warnings.simplefilter('error', ScatterWarning)
            self.backward = adjoint(forward, self.gradients, where=where)
        self.forward = forward
        self.operator = Operator(forward + self.backward)
        return self

    def run(self, values, seeds):
        for function, value in zip(self.inputs, values):
            function.data[:] = value
        for function, seed in zip(self.outputs, seeds):
            self.gradients[function].data[:] = seed
        self.operator.apply()
        return ([np.array(f.data) for f in self.outputs],
                [np.array(self.gradients[f].data) for f in self.inputs])


def against_torch(maths, reference, rng, scale=1.0):
    """Outputs and every input gradient against torch autograd."""
    values = [scale * rng.standard_normal(f.shape).astype(maths.dtype)
              for f in maths.inputs]
    seeds = [rng.standard_normal(f.shape).astype(maths.dtype) for f in maths.outputs]
    outputs, gradients = maths.run(values, seeds)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    results = reference(*tensors)
    results = results if isinstance(results, tuple) else (results,)
    sum((r * torch.tensor(s)).sum() for r, s in zip(results, seeds)).backward()
    for value, result in zip(outputs, results):
        assert_close(value, result.detach().numpy(), maths.dtype, 'output')
    for function, value, tensor_ in zip(maths.inputs, gradients, tensors):
        assert_close(value, tensor_.grad.numpy(), maths.dtype, function.name)
    return maths


def convolution(maths, batch, channels, kernels, size, window, stride, padding,
                dilation, groups):
    """``torch.nn.functional.conv2d`` as forward maths (grouped: the output channel
    ``g * K/G + k`` reads the input channels ``g * C/G + c``)."""
    (h_in, w_in), (kh, kw) = size, window
    h_out = (h_in + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (w_in + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    per_in, per_out = channels // groups, kernels // groups
    x = maths.tensor('conv_in', dims('xn', 'xc', 'xh', 'xw'),
                     (batch, channels, h_in, w_in),
                     halo=((0, 0), (0, 0), (padding, padding), (padding, padding)))
    w = maths.tensor('conv_W', dims('wk', 'wc', 'wy', 'wx'), (kernels, per_in, kh, kw))
    n, h, w_ = dims('n', 'oh', 'ow')
    k, c = tap_dimension('k', per_out), tap_dimension('c', per_in)
    g = tap_dimension('g', groups)
    ky, kx = tap_dimension('ky', kh), tap_dimension('kx', kw)
    y = maths.tensor('conv_out', (n, Dimension('ok'), h, w_),
                     (batch, kernels, h_out, w_out), role='output')
    # (one channel a group is indexed by the group alone: Devito orders the loops
    # of ``c + g`` and ``g`` in two ways and refuses the nest)
    channel = g * per_out + k if per_out > 1 else g
    source, tap = (g * per_in + c, c) if per_in > 1 else (g, 0)
    return [Eq(y[n, channel, h, w_], 0),
            Inc(y[n, channel, h, w_],
                w[channel, tap, ky, kx] * x[n, source,
                                            stride * h + dilation * ky - padding,
                                            stride * w_ + dilation * kx - padding])]


CONVOLUTIONS = [
    # batch, channels, kernels, size, window, stride, padding, dilation, groups
    (2, 3, 4, (9, 8), (3, 2), 2, 1, 2, 1),
    (1, 2, 3, (7, 7), (3, 3), 1, 1, 1, 1),
    (2, 4, 6, (8, 9), (3, 3), 3, 2, 1, 2),
    (2, 4, 4, (6, 7), (3, 3), 1, 1, 1, 4),        # depthwise
    (3, 2, 2, (5, 5), (5, 5), 1, 2, 1, 1),
]


@pytest.mark.parametrize('case', CONVOLUTIONS, ids=[
    'strided-dilated', '3x3', 'stride3-grouped', 'depthwise', '5x5'])
@pytest.mark.parametrize('dtype', DTYPES, ids=['f64', 'f32'])
def test_convolution_gradients_match_torch_as_gathers(case, dtype, rng):
    """Every gradient as torch's; the input gradient is the adjoint of the
    convolution (<A x, y> = <x, A^T y>, float64); no gradient is written at a
    computed index, and the C holds no atomic."""
    *_, stride, padding, dilation, groups = case
    maths = Maths(dtype)
    maths.derive(convolution(maths, *case))
    against_torch(maths, lambda x, w: torch.nn.functional.conv2d(
        x, w, stride=stride, padding=padding, dilation=dilation, groups=groups), rng)
    assert 'atomic' not in str(maths.operator)
    assert all(not isinstance(eq.lhs.indices[0], sympy.Add) for eq in maths.backward
               if isinstance(eq.lhs, sympy.Indexed))
    if dtype == np.float64:
        values = [rng.standard_normal(f.shape) for f in maths.inputs]
        seed = rng.standard_normal(maths.outputs[0].shape)
        (y,), (dx, _) = maths.run(values, [seed])
        left, right = np.vdot(y, seed), np.vdot(values[0], dx)
        assert abs(left - right) <= 1e-12 * max(abs(left), 1.0)


def test_dense_with_register_sum_bias_and_tanh(rng):
    batch, features, outputs = 5, 7, 3
    maths = Maths()
    x = maths.tensor('fc_in', dims('xn', 'xi'), (batch, features))
    w = maths.tensor('fc_W', dims('wo', 'wi'), (outputs, features))
    b = maths.tensor('fc_b', dims('bo'), (outputs,))
    n, o, i = Dimension('n'), Dimension('fc_o'), tap_dimension('fc_i', features)
    y = maths.tensor('fc_out', (n, o), (batch, outputs), role='output')
    z = tensor('fc_z', (n, o), (batch, outputs), np.float64)
    forward = register_sum('fc_sum', z[n, o], w[o, i] * x[n, i], (n, o), (i,)) + \
        [Eq(y[n, o], sympy.tanh(z[n, o] + b[o]))]
    against_torch(maths.derive(forward),
                  lambda x, w, b: torch.tanh(x @ w.T + b), rng)


def test_max_pooling_routes_to_the_first_maximum(rng):
    maths = Maths()
    x = maths.tensor('pool_in', dims('xn', 'xc', 'xh', 'xw'), (2, 2, 7, 6))
    out = dims('n', 'pc', 'ph', 'pw')
    y = maths.tensor('pool_out', out, (2, 2, 3, 3), role='output')
    n, c, h, w = out
    maths.derive([Eq(y[out], sympy.Max(*[x[n, c, 2 * h + a, 2 * w + b]
                                         for a in range(2) for b in range(2)]))])
    values = rng.standard_normal(x.shape)
    values[0, 0, 0, :2] = 5.0         # a tie along a row
    values[1, 1, 2:4, 4] = 7.0        # and down a column
    seed = rng.standard_normal(y.shape)
    _, (dx,) = maths.run([values], [seed])
    tx = torch.tensor(values, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2).backward(torch.tensor(seed))
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    assert 'atomic' not in str(maths.operator)


def test_layer_norm_through_intermediate_statistics(rng):
    batch, features = 4, 6
    maths = Maths()
    x = maths.tensor('ln_in', dims('xn', 'xf'), (batch, features))
    gamma = maths.tensor('ln_W', dims('wf'), (features,))
    beta = maths.tensor('ln_b', dims('bf'), (features,))
    n, f = dims('n', 'ln_f')
    y = maths.tensor('ln_out', (n, f), (batch, features), role='output')
    mean, var = (tensor(f"ln_{r}", (n,), (batch,), np.float64) for r in ('mean', 'var'))
    first, second = tap_dimension('ln_f1', features), tap_dimension('ln_f2', features)
    forward = [Eq(mean[n], 0), Inc(mean[n], x[n, first] / features),
               Eq(var[n], 0), Inc(var[n], (x[n, second] - mean[n]) ** 2 / features),
               Eq(y[n, f], (x[n, f] - mean[n]) / sympy.sqrt(var[n] + 1e-5) * gamma[f]
                  + beta[f])]
    against_torch(maths.derive(forward), lambda x, w, b: torch.nn.functional.layer_norm(
        x, (features,), w, b, 1e-5), rng)


def test_gated_activation_of_two_inputs_taylor(rng):
    """``x * sigmoid(g)``: the error of the first-order model falls as h^2."""
    maths = Maths()
    shape = (3, 5)
    x = maths.tensor('gate_in0', dims('an', 'af'), shape)
    g = maths.tensor('gate_in1', dims('bn', 'bf'), shape)
    n, f = dims('n', 'gate_f')
    y = maths.tensor('gate_out', (n, f), shape, role='output')
    maths.derive([Eq(y[n, f], x[n, f] / (1 + sympy.exp(-g[n, f])))])
    values = [rng.standard_normal(shape) for _ in range(2)]
    seed = rng.standard_normal(shape)
    (base,), gradients = maths.run(values, [seed])
    directions = [rng.standard_normal(shape) for _ in range(2)]
    slope = sum(np.vdot(d, v) for d, v in zip(gradients, directions))
    errors = []
    for h in (1e-2, 5e-3, 2.5e-3):
        (moved,), _ = maths.run([v + h * d for v, d in zip(values, directions)], [seed])
        errors.append(abs(np.vdot(moved - base, seed) - h * slope))
    assert errors[1] / errors[0] < 0.3 and errors[2] / errors[1] < 0.3, errors


def test_non_invertible_index_is_scattered_with_a_warning(rng):
    """``y[i] = x[i*i]``: no gather exists; the scatter is correct and said so."""
    x = tensor('sq_in', dims('xi'), (10,), np.float64)
    i = Dimension('i')
    y = tensor('sq_out', (i,), (4,), np.float64)
    dx = tensor('sq_din', dims('gi'), (10,), np.float64)
    dy = tensor('sq_dout', (Dimension('gy'),), (4,), np.float64)
    with pytest.warns(ScatterWarning, match=r"Square `sq`.*sq_in\[i\*\*2\]"):
        backward = adjoint([Eq(y[i], 3 * x[i * i])], {y: dy, x: dx}, "Square `sq`")
    dy.data[:] = [1, 2, 3, 4]
    Operator(backward).apply()
    expected = np.zeros(10)
    expected[[0, 1, 4, 9]] = [3, 6, 9, 12]
    np.testing.assert_array_equal(dx.data, expected)


def test_what_cannot_be_differentiated_is_an_error_naming_the_term():
    i = Dimension('i')
    x, y = (tensor(name, (i,), (4,), np.float64) for name in ('t_in', 't_out'))
    table = Function(name='t_index', dimensions=(i,), shape=(4,), dtype=np.int32,
                     space_order=0)
    gradients = {x: tensor('t_din', (i,), (4,), np.float64),
                 y: tensor('t_dout', (i,), (4,), np.float64)}
    unknown = sympy.Function('mystery')
    with pytest.raises(AutodiffError, match=r"Odd `odd`.*no derivative rule.*mystery"):
        adjoint([Eq(y[i], unknown(x[i]))], gradients, "Odd `odd`")
    with pytest.raises(AutodiffError, match=r"Odd `odd`.*t_index.*depends on data"):
        adjoint([Eq(y[i], x[table[i]] * x[i])], gradients, "Odd `odd`")
    with pytest.raises(AutodiffError, match=r"Odd `odd`.*recurrence"):
        adjoint([Inc(y[i], y[i - 1] * x[i])], gradients, "Odd `odd`")
    with pytest.raises(AutodiffError, match=r"overwrites.*a sum is an Inc"):
        adjoint([Eq(y[i], x[tap_dimension('j', 4)])], gradients, "Odd `odd`")


def value_at(expression, values):
    """``expression`` at ``values``, its C ternaries taken as C takes them."""
    if isinstance(expression, Select):
        condition, true, false = expression.args
        taken = true if bool(condition.xreplace(values)) else false
        return value_at(taken, values)
    if not expression.args:
        return expression.xreplace(values)
    return expression.func(*[value_at(a, values) for a in expression.args])


def test_derivative_rules_follow_torch_conventions():
    i = Dimension('i')
    x, y = (Function(name=n, dimensions=(i,), shape=(4,), space_order=0)
            for n in ('x', 'y'))
    relu = derivative(Select(x[i] < 0, 0, x[i]), x[i])
    assert value_at(relu, {x[i]: 0}) == 0 and value_at(relu, {x[i]: 2}) == 1
    assert value_at(derivative(sympy.Max(0, x[i]), x[i]), {x[i]: 0}) == 0
    assert value_at(derivative(sympy.Abs(x[i]), x[i]), {x[i]: 0}) == 0
    tie = {x[i]: 1, x[i + 1]: 1}
    assert value_at(derivative(sympy.Max(x[i + 1], x[i]), x[i]), tie) == 1
    assert value_at(derivative(sympy.Max(x[i + 1], x[i]), x[i + 1]), tie) == 0
    assert derivative(sympy.tanh(x[i]) * y[i], x[i]) == (1 - sympy.tanh(x[i]) ** 2) * y[i]


@pytest.mark.parametrize('activation', [ReLU(), LeakyReLU(0.2), Sigmoid(), Tanh(),
                                        lambda z: z * z * z],
                         ids=['relu', 'leaky', 'sigmoid', 'tanh', 'cube'])
@pytest.mark.parametrize('dtype', DTYPES, ids=['f64', 'f32'])
def test_activation_layer_backward_is_derived(activation, dtype, rng):
    """ActivationLayer writes no backward pass: its adjoint is derived, a user's
    sympy lambda included."""
    torch_of = {ReLU: torch.relu, Sigmoid: torch.sigmoid, Tanh: torch.tanh,
                LeakyReLU: lambda t: torch.nn.functional.leaky_relu(t, 0.2)}
    module = torch_of.get(type(activation), lambda t: t * t * t)
    layer = ActivationLayer(activation, input_size=(3, 2, 4, 5), dtype=dtype)
    assert '_backward_equations' not in type(layer).__dict__
    compare_layer(layer, module, rng)


@pytest.mark.parametrize('dtype', DTYPES, ids=['f64', 'f32'])
def test_a_net_trains_through_a_derived_adjoint(dtype, rng):
    """An adjoint derived term by term inside a net's fused backward pass, beside
    those of operations (correlation, window reduction): every gradient as
    torch's."""
    net = Net([Conv((4, 3, 3), padding=1), MaxPooling(2), ActivationLayer(Tanh()),
               Flat(), FullyConnected(5)], dtype=dtype, seed=2, batch_size=3,
              input_shape=(2, 6, 6))
    compare_net(net, rng)


class PReLU(Layer):
    """A layer that is not built in, written as its forward maths alone:
    ``torch.nn.PReLU(channels)``, ``y = max(x, 0) + a[c] min(x, 0)``."""

    family = 'prelu'

    @property
    def output_size(self):
        return self.input_size

    def _create_functions(self):
        channel, size = self.out_dims[1], self.input_size[1:2]
        self.slope = self.tensor('a', (channel,), size)
        self.slope_gradients = self.tensor('da', (channel,), size)

    def reset_parameters(self, rng):
        self.slope.data[:] = rng.uniform(0.1, 0.4, self.slope.shape)

    def parameters(self):
        return {'a': self.slope}

    def gradients(self):
        return {'a': self.slope_gradients}

    def _forward_equations(self, training):
        n, c, h, w = self.out_dims
        x = self.input[n, c, h, w]
        return [Eq(self.result[n, c, h, w],
                   sympy.Max(x, 0) + self.slope[c] * sympy.Min(x, 0))]


@pytest.mark.parametrize('dtype', DTYPES, ids=['f64', 'f32'])
def test_a_custom_layer_of_forward_maths_alone_trains_in_a_net(dtype, rng):
    net = Net([Conv((3, 3, 3), padding=1), PReLU(), Flat(), FullyConnected(4)],
              dtype=dtype, seed=1, batch_size=2, input_shape=(2, 5, 5))
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    labels = np.array([1, 3])
    net.forward(x)
    loss = net.backward(labels)
    reference = {k: torch.tensor(v, requires_grad=True)
                 for k, v in net.parameters().items()}
    y = torch.nn.functional.conv2d(torch.tensor(x), reference['conv1_W'],
                                   reference['conv1_b'], padding=1)
    y = torch.nn.functional.prelu(y, reference['prelu1_a'])
    y = y.flatten(1) @ reference['fc1_W'].T + reference['fc1_b']
    expected = torch.nn.functional.cross_entropy(y, torch.tensor(labels))
    expected.backward()
    assert_close(loss, expected.item(), dtype, 'loss')
    gradients = net.gradients()
    for name, parameter in reference.items():
        assert_close(gradients[name], parameter.grad.numpy(), dtype, name)


class Lookup(Layer):
    """Reads its input through a table of indices: no adjoint exists."""

    family = 'lookup'
    input_ndim = 2

    @property
    def output_size(self):
        return self.input_size

    def _create_functions(self):
        n, f = self.out_dims
        self.table = Function(name=f"{self.name}_table", dimensions=(f,),
                              shape=self.input_size[1:], dtype=np.int32, space_order=0)
        self.table.data[:] = np.arange(self.input_size[1])[::-1]

    def _forward_equations(self, training):
        n, f = self.out_dims
        return [Eq(self.result[n, f], self.input[n, self.table[f]])]


def test_a_layer_without_an_adjoint_runs_forward_and_says_why_it_cannot_train(rng):
    net = Net([FullyConnected(4), Lookup(), FullyConnected(3)], dtype=np.float64,
              batch_size=2, input_shape=(5,), seed=0)
    x = rng.standard_normal((2, 5))
    hidden = x @ net.parameters()['fc1_W'].T + net.parameters()['fc1_b']
    expected = hidden[:, ::-1] @ net.parameters()['fc2_W'].T + net.parameters()['fc2_b']
    assert_close(net.forward(x), expected, np.float64, 'output')
    with pytest.raises(AutodiffError, match=r"Lookup `lookup1`.*lookup1_table.*depends "
                                            r"on data"):
        net.backward(np.array([0, 2]))
