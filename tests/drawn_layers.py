"""A custom layer of forward maths alone, drawn by the fuzzer: a correlation whose
rows and columns may be read mirrored (an index map with negative steps), with any
stride, dilation and padding, plus a bias, through a pointwise function; its
adjoint is derived (:mod:`devito_ml.autodiff`). ``torch_twin`` computes the same
with ``flip``, ``conv2d`` and the function."""

import numpy as np
import sympy
import torch
from devito import Eq, Inc

from devito_ml import Layer
from devito_ml.symbolics import Halo

FUNCTIONS = {
    # name: (sympy, torch)
    'tanh': (sympy.tanh, torch.tanh),
    'sin': (sympy.sin, torch.sin),
    'gauss': (lambda z: sympy.exp(-z * z), lambda t: torch.exp(-t * t)),
    'softsign': (lambda z: z / (1 + sympy.Abs(z)), torch.nn.functional.softsign),
}


def extent(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Drawn(Layer):
    """``y[n,k,h,w] = f(b[k] + sum W[k,c,r,s] x[n, c, rows(h, r), cols(w, s)])``
    with ``rows(h, r) = e`` or ``H - 1 - e`` for ``e = stride h + dilation r -
    padding`` (the same for columns)."""

    family = 'drawn'

    def __init__(self, out, kernel, stride, padding, dilation, mirror, function,
                 **options):
        self.out, self.kernel, self.stride = out, tuple(kernel), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self.mirror, self.function = tuple(mirror), function
        super().__init__(**options)

    @property
    def output_size(self):
        n, _, h, w = self.input_size
        return (n, self.out) + tuple(extent(*a) for a in zip(
            (h, w), self.kernel, self.stride, self.padding, self.dilation))

    @property
    def input_halo(self):
        (ph, pw) = self.padding
        return Halo((0, 0), (0, 0), (ph, ph), (pw, pw))

    def _create_functions(self):
        k = self.out_dims[1]
        channels = self.input_size[1]
        self.c, self.r, self.s = (self.dim(role, e) for role, e in
                                  (('c', channels), ('r', self.kernel[0]),
                                   ('s', self.kernel[1])))
        shape = (self.out, channels) + self.kernel
        self.kernel_weights = self.tensor('W', (k, self.c, self.r, self.s), shape)
        self.kernel_gradients = self.tensor('dW', (k, self.c, self.r, self.s), shape)
        self.bias = self.tensor('b', (k,), (self.out,))
        self.bias_gradients = self.tensor('db', (k,), (self.out,))
        self.z = self.tensor('z', self.out_dims, self.output_size)

    def parameters(self):
        return {'W': self.kernel_weights, 'b': self.bias}

    def gradients(self):
        return {'W': self.kernel_gradients, 'b': self.bias_gradients}

    def reset_parameters(self, rng):
        bound = 1 / np.sqrt(self.input_size[1] * self.kernel[0] * self.kernel[1])
        for weight in (self.kernel_weights, self.bias):
            weight.data[:] = rng.uniform(-bound, bound, weight.shape)

    def _forward_equations(self, training):
        n, k, h, w = self.out_dims
        size = self.input_size[2:]
        index = []
        for out, tap, stride, dilation, padding, mirror, length in zip(
                (h, w), (self.r, self.s), self.stride, self.dilation, self.padding,
                self.mirror, size):
            position = stride * out + dilation * tap - padding
            index.append(length - 1 - position if mirror else position)
        x = self.input[n, self.c, index[0], index[1]]
        z = self.z[n, k, h, w]
        f = FUNCTIONS[self.function][0]
        return [Eq(z, self.bias[k]),
                Inc(z, self.kernel_weights[k, self.c, self.r, self.s] * x),
                Eq(self.result[n, k, h, w], f(z))]


class TorchDrawn(torch.nn.Module):
    """What :class:`Drawn` computes, in torch, with the same parameters."""

    def __init__(self, layer, dtype):
        super().__init__()
        self.layer = layer
        self.weight = torch.nn.Parameter(torch.zeros(
            layer.kernel_weights.shape, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(layer.bias.shape, dtype=dtype))

    def forward(self, x):
        mirrored = [2 + axis for axis, m in enumerate(self.layer.mirror) if m]
        x = x.flip(mirrored) if mirrored else x
        z = torch.nn.functional.conv2d(x, self.weight, self.bias,
                                       stride=self.layer.stride,
                                       padding=self.layer.padding,
                                       dilation=self.layer.dilation)
        return FUNCTIONS[self.layer.function][1](z)
