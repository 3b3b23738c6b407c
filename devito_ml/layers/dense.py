"""Fully connected layers, forward and backward side by side."""

import numbers

import sympy
from devito import Eq, Inc
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort
from sympy import Max, Min

from devito_ml.activations import as_activation
from devito_ml.layer import WeightedLayer
from devito_ml.layers.matmul_tiles import TiledMatmul
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
    With ``dz = dy . f'(y)``:

    .. math::

        \partial b_o = \sum_n dz_{no},\qquad
        \partial W_{oi} = \sum_n dz_{no} x_{ni},\qquad
        \partial x_{ni} = \sum_o W_{oi} dz_{no}

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
        self._check_activation()
        super().__init__(input_size, name, dtype, generate_code, seed)

    def _check_activation(self):
        """Any activation is allowed here."""

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
        if self.tiled:
            self._create_tiles()

    @property
    def tiled(self):
        """Whether the products run as register tiles (``matmul_tiles.py``): with a
        batch of at least ``TILED_MIN_BATCH``, vectorised over the batch; below, one
        dot product an output, vectorised over the features."""
        return self.input_size[0] >= TILED_MIN_BATCH

    def _create_tiles(self):
        """The three products, each with the batch or the input features as lanes:
        ``z^T = W x^T``, ``dx^T = W^T dz^T`` and ``dW = dz^T x``."""
        (n, i), o = self.input_size, self.out_features
        self.forward_tiles = TiledMatmul(f"{self.name}_fwd", self.dtype, o, i, n,
                                         lambda row, c: self.kernel[row, c])
        self.input_gradient_tiles = TiledMatmul(f"{self.name}_bwd", self.dtype, i, o, n)
        self.weight_gradient_tiles = TiledMatmul(f"{self.name}_dW", self.dtype, o, n, i)

    def _create_pre_activation(self):
        if self.activation.is_identity:
            self.pre_activation_gradients = self.result_gradients
        else:
            self.pre_activation_gradients = self.tensor('dz', self.out_storage,
                                                        self.output_size)

    @property
    def fan_in(self):
        return self.weight_size[1]

    def _affine_equations(self, z):
        """``z = x W^T + b`` into the Function ``z``.

        Each row-column product is summed in a Scalar private to its (n, o)
        iteration, which gcc keeps in a register and vectorises; an ``Inc`` into
        ``z[n][o]`` in memory was not (measured, 64x800 -> 500: 2.8 GFLOP/s).
        """
        n, o, i = self.batch_dim, self.o, self.i
        if self.tiled:
            tiles = self.forward_tiles
            bias = self.bias[o] if self.has_bias else 0
            return [Eq(tiles.b_at(i, n), self.input[n, i]),
                    *tiles.equations(),
                    # the target is read column-major: the loop order is named
                    Eq(z[n, o], tiles.target_at(o, n) + bias,
                       implicit_dims=IgnoreDimSort((n, o)))]
        total = Scalar(name=f"{self.name}_acc", dtype=self.dtype.type)
        return [Eq(total, self.bias[o] if self.has_bias else 0, implicit_dims=(n, o)),
                Eq(total, total + self.kernel[o, i] * self.input[n, i]),
                Eq(z[n, o], total, implicit_dims=(n, o))]

    def _forward_equations(self, training):
        eqs = self._affine_equations(self.result)
        if not self.activation.is_identity:
            out = self.result[self.out_dims]
            eqs.append(Eq(out, self.activation.forward(out)))
        return eqs

    def _pre_activation_gradient_equations(self):
        dz = self.pre_activation_gradients
        if dz is self.result_gradients:
            return []
        out = self.out_dims
        return [Eq(dz[out], self.result_gradients[out]
                   * self.activation.derivative_from_output(self.result[out]))]

    def _backward_equations(self, training):
        n, o, i, m = self.batch_dim, self.o, self.i, self.reduction_batch_dim
        f = self.input_gradient_dims[1]
        dz = self.pre_activation_gradients
        eqs = self._pre_activation_gradient_equations()
        if self.has_bias:
            eqs += register_sum(f"{self.name}_sum_dz", self.bias_gradients[o], dz[m, o],
                                (o,), (m,))
        if self.tiled:
            return eqs + self._tiled_gradient_equations()
        return eqs + [
            Eq(self.kernel_gradients[o, i], 0),
            Inc(self.kernel_gradients[o, i], dz[m, o] * self.input[m, i],
                implicit_dims=IgnoreDimSort((o, m, i))),
            Eq(self.input_gradients[n, f], 0),
            Inc(self.input_gradients[n, f], self.kernel[o, f] * dz[n, o])]

    def _tiled_gradient_equations(self):
        """dx and dW as register-tiled products. dW reduces over every row of its
        copies, so rows past the active batch are copied as zeros."""
        n, o, i = self.batch_dim, self.o, self.i
        f = self.input_gradient_dims[1]
        dz = self.pre_activation_gradients
        dx, dw = self.input_gradient_tiles, self.weight_gradient_tiles
        rows = self.dim('dW_out_f', self.out_features)
        columns = self.dim('dW_in_f', self.in_features)
        # every row of the copies, past the active batch too (so not named `_n`)
        sample = self.dim('dW_row', self.input_size[0])
        # 1 for the active samples (n <= n_M), else 0
        active = Min(Max(n.symbolic_max + 1 - sample, 0), 1)
        return [Eq(dx.a_entry(i, o), self.kernel[o, i]),   # W, with literal strides
                Eq(dx.b_at(o, n), dz[n, o]),
                *dx.equations(),
                Eq(self.input_gradients[n, f], dx.target_at(f, n),
                   implicit_dims=IgnoreDimSort((n, f))),
                Eq(dw.a_entry(rows, sample), dz[sample, rows] * active,
                   implicit_dims=IgnoreDimSort((sample, rows))),
                Eq(dw.b_at(sample, columns), self.input[sample, columns] * active,
                   implicit_dims=IgnoreDimSort((sample, columns))),
                *dw.equations(),
                Eq(self.kernel_gradients[o, i], dw.target_at(o, i))]


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
    the softmax Jacobian, :math:`dz_{no} = y_{no}(dy_{no} - \sum_j dy_{nj}y_{nj})`;
    a Net pairing it with cross entropy writes ``dz`` directly from the logits
    instead (``backprop_equations(from_logits=True)``), which stays exact when a
    probability underflows.

    Examples
    --------
    >>> FullyConnectedSoftmax(weight_size=(3, 8), input_size=(1, 8)).output_size
    (1, 3)
    """

    family = 'fc'

    def _create_pre_activation(self):
        self.logits = self.tensor('logits', self.out_storage, self.output_size)
        self.pre_activation_gradients = self.tensor('dz', self.out_storage,
                                                    self.output_size)
        self.logits_gradients = self.pre_activation_gradients
        batch = (self.batch_dim,)
        self.row_max = self.tensor('max', batch, self.output_size[:1])
        self.row_sum = self.tensor('sum', batch, self.output_size[:1])
        self.row_dot = self.tensor('dot', batch, self.output_size[:1])

    def _forward_equations(self, training):
        return self._affine_equations(self.logits) + softmax_equations(
            self.logits, self.result, self.row_max, self.row_sum, self.batch_dim,
            self._class_passes())

    def _class_passes(self):
        classes = self.output_size[1]
        return self.dim('max_f', classes), self.dim('sum_f', classes), self.o

    def _check_activation(self):
        if not self.activation.is_identity:
            raise LayerArgumentError(
                f"FullyConnectedSoftmax `{self.name}`: its activation is the softmax; "
                f"`activation` must be None, got {self.activation!r}")

    def backprop_equations(self, input_gradients=None, from_logits=False, training=True):
        self._from_logits = from_logits
        return super().backprop_equations(input_gradients, training)

    def _pre_activation_gradient_equations(self):
        if getattr(self, '_from_logits', False):
            return []
        n, o = self.batch_dim, self.o
        j = self.dim('dot_f', self.output_size[1])
        y, dy = self.result[n, o], self.result_gradients[n, o]
        return [Eq(self.row_dot[n], 0),
                Inc(self.row_dot[n], self.result_gradients[n, j] * self.result[n, j]),
                Eq(self.pre_activation_gradients[n, o], y * (dy - self.row_dot[n]))]
