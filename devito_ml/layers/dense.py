"""Fully connected layers: their forward maths (the adjoint is derived from it,
:mod:`devito_ml.autodiff`) and their schedule (matrix products as register tiles)."""

import numbers

import sympy
from devito import Eq, Inc
from sympy import Max

from devito_ml.activations import as_activation
from devito_ml.batch_sums import lowered
from devito_ml.layer import WeightedLayer
from devito_ml.layers.matmul_tiles import schedule_products
from devito_ml.symbolics import register_sum
from devito_ml.validation import LayerArgumentError, ShapeError, check_positive_ints

__all__ = ['FullyConnected', 'FullyConnectedSoftmax', 'softmax_equations',
           'row_sum_equations']

TILED_MIN_BATCH = 16
"""Smallest batch whose products are register-tiled (the batch fills the lanes)."""


class FullyConnected(WeightedLayer):
    r"""``y = f(x W^T + b)`` on ``(batch, features)`` inputs, as ``torch.nn.Linear``.

    Parameters
    ----------
    weight_size : int or pair of int
        ``out_features``, or ``(out_features, in_features)``.
    input_size : pair of int, optional
        ``(batch, in_features)``; inferred inside a net.
    bias : bool
    activation : Activation or callable, optional
    name, dtype, generate_code, seed
        As :class:`~devito_ml.Conv`.

    Shape
    -----
    ``(N, I) -> (N, O)``.

    Notes
    -----
    The layer states ``z = x W^T + b`` and ``y = f(z)``; its adjoint is derived
    (:mod:`devito_ml.autodiff`): with ``dz = dy . f'(z)``,

    .. math::

        \partial b_o = \sum_n dz_{no},\qquad
        \partial W_{oi} = \sum_n dz_{no} x_{ni},\qquad
        \partial x_{ni} = \sum_o W_{oi} dz_{no}

    From a batch of ``TILED_MIN_BATCH`` the three products run as register tiles
    (:meth:`schedule`).

    Examples
    --------
    >>> FullyConnected(weight_size=(10, 84), input_size=(32, 84)).output_size
    (32, 10)
    """

    family = 'fc'
    input_ndim = 2

    def __init__(self, weight_size, input_size=None, bias=True, activation=None,
                 name=None, dtype=None, generate_code=False, seed=None):
        self.name = name or self.family
        if isinstance(weight_size, numbers.Integral):
            self.out_features, = check_positive_ints(self, 'weight_size',
                                                     (weight_size,), 1)
            self.in_features = None
        else:
            self.out_features, self.in_features = check_positive_ints(
                self, 'weight_size', weight_size, 2)
        self.has_bias = bool(bias)
        self.activation = as_activation(activation)
        self.check_activation()
        super().__init__(input_size, name, dtype, generate_code, seed)

    def check_activation(self):
        """Refuse an activation the layer cannot apply (any is allowed here; a
        converter that fuses one into the layer asks again)."""

    def _check_input_size(self, input_size):
        size = super()._check_input_size(input_size)
        if self.in_features is not None and size[1] != self.in_features:
            raise ShapeError(
                f"{type(self).__name__} `{self.name}`: `weight_size` {self.weight_size} "
                f"needs {self.in_features} input features, `input_size` {size} has "
                f"{size[1]}")
        self.in_features = size[1]
        return size

    @property
    def weight_size(self):
        """``(out_features, in_features)``."""
        return (self.out_features, self.in_features)

    @property
    def output_size(self):
        return (self.input_size[0], self.out_features)

    def _create_functions(self):
        self.o, self.i = self.out_dims[1], self.in_dims[1]
        self.kernel = self.tensor('W', (self.o, self.i), self.weight_size)
        self.kernel_gradients = self.tensor('dW', (self.o, self.i), self.weight_size)
        self.bias = self.tensor('b', (self.o,), self.weight_size[:1])
        self.bias_gradients = self.tensor('db', (self.o,), self.weight_size[:1])
        self._create_pre_activation()

    def _create_pre_activation(self):
        """``z = x W^T + b``: the output itself with no activation, else a Function
        of its own (the activation's derivative reads it)."""
        self.pre_activation = self.result if self.activation.is_identity else \
            self.tensor('z', self.out_dims, self.output_size)

    @property
    def tiled(self):
        """Whether the products run as register tiles (``matmul_tiles.py``): with a
        batch of at least ``TILED_MIN_BATCH``, vectorised over the batch; below, one
        dot product an output, vectorised over the features."""
        return self.input_size[0] >= TILED_MIN_BATCH

    @property
    def fan_in(self):
        return self.weight_size[1]

    def _affine_equations(self, z):
        """``z = x W^T + b`` into the Function ``z``: each row-column product summed
        in a register (a Scalar private to its (n, o) iteration, which gcc
        vectorises; an ``Inc`` into ``z[n][o]`` in memory was not: 64x800 -> 500,
        2.8 GFLOP/s)."""
        n, o, i = self.batch_dim, self.o, self.i
        bias = self.bias[o] if self.has_bias else 0
        return register_sum(f"{self.name}_acc", z[n, o],
                            self.kernel[o, i] * self.input[n, i], (n, o), (i,),
                            dtype=self.dtype, finish=lambda total: total + bias)

    def _forward_equations(self, training):
        eqs = self._affine_equations(self.pre_activation)
        if not self.activation.is_identity:
            out = self.out_dims
            eqs.append(Eq(self.result[out],
                          self.activation.forward(self.pre_activation[out])))
        return eqs

    def schedule(self, equations):
        """The three products (``z = x W^T``, ``dx = dz W``, ``dW = dz^T x``) as
        register tiles from a batch of ``TILED_MIN_BATCH`` on, named ``fwd``,
        ``bwd`` and ``dW``; below, the forward one a dot product in a register and
        the gradients summed in memory along their rows
        (:func:`~devito_ml.layers.matmul_tiles.schedule_products`)."""
        names = {self.pre_activation: f"{self.name}_fwd",
                 self.input_gradients: f"{self.name}_bwd",
                 self.kernel_gradients: f"{self.name}_dW"}
        return schedule_products(equations, names, self.batch_dim, self.tiled)


def row_sum_equations(logits, row_max, row_sum, n, passes):
    """Equations of each row's maximum and its sum of ``exp(logits - max)``, into the
    ``(batch,)`` Functions ``row_max`` and ``row_sum``; ``passes`` are two
    Dimensions over the classes, one per pass: Devito fuses equations over the same
    Dimensions point-wise, which would read a partial maximum."""
    k_max, k_sum = passes
    return [Eq(row_max[n], -sympy.oo),
            Eq(row_max[n], Max(row_max[n], logits[n, k_max])),
            Eq(row_sum[n], 0), Inc(row_sum[n], sympy.exp(logits[n, k_sum] - row_max[n]))]


def softmax_equations(logits, probabilities, row_max, row_sum, n, passes):
    """Equations of ``probabilities[n, k] = softmax(logits[n, :])[k]``, stable.

    ``row_max`` and ``row_sum`` are ``(batch,)`` Functions that the equations fill
    (:func:`row_sum_equations`); ``passes`` are three Dimensions over the classes,
    one per pass.
    """
    k_max, k_sum, k = passes
    return row_sum_equations(logits, row_max, row_sum, n, (k_max, k_sum)) + [
        Eq(probabilities[n, k], sympy.exp(logits[n, k] - row_max[n]) / row_sum[n])]


class FullyConnectedSoftmax(FullyConnected):
    r"""A fully connected layer followed by a softmax over the output features.

    ``logits`` holds ``x W^T + b``; ``result`` the probabilities. Its adjoint is
    derived through the softmax; it offers a loss its logits too
    (:meth:`loss_outputs`), and where the loss reads them (cross entropy does),
    the loss writes ``logits_gradients`` and the adjoint starts there
    (``backprop_equations(from_logits=True)`` alone), which stays exact when a
    probability underflows.

    Examples
    --------
    >>> FullyConnectedSoftmax(weight_size=(3, 8), input_size=(1, 8)).output_size
    (1, 3)
    """

    family = 'fc'

    def _create_pre_activation(self):
        self.logits = self.output_tensor('logits')
        self.pre_activation = self.logits
        batch = (self.batch_dim,)
        self.row_max = self.tensor('max', batch, self.output_size[:1])
        self.row_sum = self.tensor('sum', batch, self.output_size[:1])
        # what a cross-entropy loss writes from the logits (made with the layer's
        # Functions, as the derived adjoint's other intermediates)
        self.logits_gradients = self._intermediate_gradient(self.logits)
        self._intermediate_gradient(self.row_sum)

    def _forward_equations(self, training):
        return self._affine_equations(self.logits) + softmax_equations(
            self.logits, self.result, self.row_max, self.row_sum, self.batch_dim,
            self._class_passes())

    def _class_passes(self):
        classes = self.output_size[1]
        return self.dim('max_f', classes), self.dim('sum_f', classes), self.o

    def check_activation(self):
        if not self.activation.is_identity:
            raise LayerArgumentError(
                f"FullyConnectedSoftmax `{self.name}`: its activation is the softmax; "
                f"`activation` must be None, got {self.activation!r}")

    def backprop_equations(self, input_gradients=None, from_logits=False, training=True):
        """As :meth:`Layer.backprop_equations`; ``from_logits``: the loss has
        written ``logits_gradients`` (cross entropy does, from the logits), and the
        adjoint starts there instead of at the probabilities."""
        self._wire_input_gradients(input_gradients)
        return lowered(self.net_backprop_equations(
            training, self.logits if from_logits else None))

    def loss_outputs(self):
        """The probabilities, and the logits (what cross entropy reads: exact
        where a probability underflows)."""
        return dict(super().loss_outputs(), logits=(self.logits, self.logits_gradients))

    def net_backprop_equations(self, training, output=None):
        """Derived from the logits' gradient where the loss wrote it, else through
        the softmax."""
        if output is not self.logits:
            return super().net_backprop_equations(training, output)
        gradients, _ = self.gradient_map()
        del gradients[self.result]
        gradients[self.logits] = self.logits_gradients
        return self.schedule(self._derived(self._affine_equations(self.logits),
                                           gradients, constants=(self.row_max,)))

    def _backward_equations(self, training):
        """Derived through the softmax (its row maximum only shifts the logits, a
        constant)."""
        gradients, _ = self.gradient_map()
        return self.schedule(self._derived(self._forward_equations(training), gradients,
                                           constants=(self.row_max,)))
