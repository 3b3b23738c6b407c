"""Batch normalization of 2D feature maps: the layer, and its maths as an operation
with the rule of its adjoint."""

import numpy as np
import sympy
from devito import Eq

from devito_ml.activations import as_activation
from devito_ml.autodiff import Operation
from devito_ml.batch import batch_dimension, batch_loop
from devito_ml.batch_sums import BatchSums
from devito_ml.layer import Layer
from devito_ml.symbolics import channel_sum
from devito_ml.validation import LayerArgumentError, ShapeError

__all__ = ['BatchNorm']


class BatchNorm(Layer):
    r"""Batch normalization over ``(batch, rows, cols)`` per channel, as
    ``torch.nn.BatchNorm2d``, with an optional activation after it.

    Parameters
    ----------
    input_size : tuple of int, optional
        ``(batch, channels, rows, cols)``; inferred inside a net.
    eps : float
        Added to the variance.
    momentum : float
        Weight of the batch statistics in the running ones (PyTorch's convention).
    affine : bool
        Learn a scale ``W`` (gamma, initially 1) and a shift ``b`` (beta, 0).
    activation : Activation, optional
        Applied after the normalization (ResNet's ``bn`` then ``relu``).
    name, dtype, generate_code
        As :class:`~devito_ml.Conv`.

    Notes
    -----
    In training, with :math:`M = N H W` values per channel,
    :math:`\mu_c = \frac{1}{M}\sum x`, :math:`\sigma^2_c = \frac{1}{M}\sum(x-\mu_c)^2`,
    :math:`\hat{x} = (x - \mu_c)/\sqrt{\sigma^2_c + \epsilon}` and
    :math:`z = W_c \hat{x} + b_c`; the running statistics become
    :math:`(1-m)\,r + m\,\mu_c` and :math:`(1-m)\,v + m\,\frac{M}{M-1}\sigma^2_c`.
    The adjoint, with :math:`dz = dy\, f'(y)`:

    .. math::

        \partial b_c &= \sum dz,\qquad \partial W_c = \sum dz\,\hat{x}\\
        \partial x &= \frac{W_c}{\sqrt{\sigma^2_c+\epsilon}}\Big(dz
            - \frac{\partial b_c}{M} - \hat{x}\,\frac{\partial W_c}{M}\Big)

    In evaluation, :math:`\mu, \sigma^2` are the running statistics, constants:
    :math:`\partial x = W_c\, dz/\sqrt{v_c + \epsilon}`. Statistics are summed
    in double precision (two passes: the mean, then squared deviations).

    Examples
    --------
    >>> bn = BatchNorm(input_size=(4, 3, 5, 5))
    >>> sorted(bn.parameters()), sorted(bn.buffers())
    (['W', 'b'], ['num_batches_tracked', 'running_mean', 'running_var'])
    """

    preserves_layout = True
    family = 'bn'
    mode_dependent = True
    draws_per_step = True
    batch_statistics = True

    def __init__(self, input_size=None, eps=1e-5, momentum=0.1, affine=True,
                 activation=None, name=None, dtype=None, generate_code=False):
        self.name = name or self.family
        if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
            raise LayerArgumentError(f"BatchNorm `{self.name}`: `eps` must be a "
                                     f"positive finite number, got {eps!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise LayerArgumentError(f"BatchNorm `{self.name}`: `momentum` must be a "
                                     f"number in [0, 1], got {momentum!r}")
        self.eps, self.momentum, self.affine = float(eps), float(momentum), bool(affine)
        self.activation = as_activation(activation)
        self.num_batches_tracked = np.zeros((), np.int64)
        super().__init__(input_size, name, dtype, generate_code)

    @property
    def output_size(self):
        return self.input_size

    def _create_functions(self):
        n, c, h, w = self.input_size
        self.c = self.out_dims[1]
        channels = (self.c,)
        self.kernel = self.tensor('W', channels, (c,))
        self.bias = self.tensor('b', channels, (c,))
        self.kernel_gradients = self.tensor('dW', channels, (c,))
        self.bias_gradients = self.tensor('db', channels, (c,))
        self.running_mean = self.tensor('running_mean', channels, (c,))
        self.running_var = self.tensor('running_var', channels, (c,))
        statistics = np.float64
        self.mean = self.tensor('mean', channels, (c,), dtype=statistics)
        self.variance = self.tensor('var', channels, (c,), dtype=statistics)
        self.inverse_std = self.tensor('invstd', channels, (c,), dtype=statistics)
        # the values a channel's statistics are taken over: a sum over the batch as
        # the statistics are (a net can have it summed over more processes)
        self.count = self.tensor('count', channels, (c,), dtype=statistics)
        # the adjoint's two sums as the input gradient reads them (the parameter
        # gradients hold them as this process's)
        self.gradient_sums = {
            role: self.tensor(f"{role}_sum", channels, (c,), dtype=statistics)
            for role in ('dz', 'dz_xhat')}
        self.pre_activation_gradients = self.result_gradients \
            if self.activation.is_identity else \
            self.output_tensor('dz')
        # one set of reduction loops a pass: Devito would fuse the mean and the
        # variance loops if they shared Dimensions, reading a partial mean
        self.mean_dims = self._reduction_dims('mean')
        self.var_dims = self._reduction_dims('var')
        self.grad_dims = self._reduction_dims('grad')
        # channels last, each sample's sums first, stored on the pass's batch loop
        # (symbolics.channel_sum): the gradient's pass makes two
        self.sample_sums = {
            name: self.tensor(f"{name}_samples", (dims[0], self.c), (n, c),
                              dtype=statistics)
            for name, dims in (('sum_x', self.mean_dims), ('sum_dev2', self.var_dims),
                               ('sum_dz', self.grad_dims),
                               ('sum_dz_xhat', self.grad_dims))} \
            if self.inputs_channels_last[0] else None

    def _reduction_dims(self, role):
        """(batch, rows, cols) loops of one reduction pass; the batch's runs over
        the active batch (:mod:`devito_ml.batch`; channels last, one the sample sums
        are stored on)."""
        n, _, h, w = self.input_size
        batch = batch_dimension(f"{self.name}_{role}_n") \
            if self.inputs_channels_last[0] else batch_loop(f"{self.name}_{role}_n", n)
        return (batch, self.dim(f"{role}_h", h), self.dim(f"{role}_w", w))

    def _channel_sum(self, name, target, value, loops, finish=None):
        """:func:`~devito_ml.symbolics.channel_sum` ``name`` of ``value`` over
        ``loops`` into ``target``, through sample sums where the input is stored
        channels last."""
        partial = self.sample_sums[name] if self.sample_sums else None
        batch = batch_loop(f"{self.name}_{name}_n", self.input_size[0]) \
            if partial else None
        return channel_sum(f"{self.name}_{name}", target, value, self.c, loops,
                           partial, batch, finish)

    def parameters(self):
        return {'W': self.kernel, 'b': self.bias} if self.affine else {}

    def gradients(self):
        return {'W': self.kernel_gradients, 'b': self.bias_gradients} \
            if self.affine else {}

    def buffers(self):
        return {'running_mean': self.running_mean.data,
                'running_var': self.running_var.data,
                'num_batches_tracked': self.num_batches_tracked}

    def reset_parameters(self, rng):
        """Scale 1 and shift 0, as PyTorch."""
        self.kernel.data[:] = 1
        self.bias.data[:] = 0

    def _reset_buffers(self):
        self.running_mean.data[:] = 0
        self.running_var.data[:] = 1
        self.num_batches_tracked[...] = 0

    def before_step(self, step):
        """Count a training step; refuse one of a single value per channel."""
        if not step.training:
            return
        _, _, h, w = self.input_size
        batch = step.statistics_samples
        if step.samples and batch * h * w < 2:
            raise ShapeError(f"BatchNorm `{self.name}`: training needs more than one "
                             f"value per channel, got batch {batch} of {h}x{w} maps "
                             "(use eval mode)")
        self.num_batches_tracked += 1

    def _count(self, dims):
        """M, the values per channel in the active batch, in a pass over ``dims``."""
        m = dims[0]
        _, _, h, w = self.input_size
        return (m.symbolic_max - m.symbolic_min + 1) * h * w

    def _x(self, dims):
        m, h, w = dims
        return self.input[m, self.c, h, w]

    def _statistics_equations(self, training):
        """The mean and the inverse standard deviation: of the batch in training
        (sums over it, each marked where complete: :mod:`devito_ml.batch_sums`), the
        running statistics in evaluation."""
        c, eps = self.c, self.eps
        mean, variance, inverse_std = self.mean[c], self.variance[c], \
            self.inverse_std[c]
        if not training:
            return [Eq(mean, self.running_mean[c]),
                    Eq(inverse_std, 1 / sympy.sqrt(self.running_var[c] + eps))]
        count, momentum = self.count[c], self.momentum
        deviation = self._x(self.var_dims) - mean
        return [Eq(count, self._count(self.mean_dims))] + \
            self._channel_sum('sum_x', mean, self._x(self.mean_dims),
                              self.mean_dims) + [
            BatchSums(f"{self.name}_mean", [(self.mean, self.mean),
                                            (self.count, self.count)]),
            Eq(mean, mean / count)] + \
            self._channel_sum('sum_dev2', variance, deviation * deviation,
                              self.var_dims) + [
            BatchSums(f"{self.name}_variance", [(self.variance, self.variance)]),
            Eq(inverse_std, 1 / sympy.sqrt(variance / count + eps)),
            Eq(self.running_mean[c], (1 - momentum) * self.running_mean[c]
               + momentum * mean),
            Eq(self.running_var[c], (1 - momentum) * self.running_var[c]
               + momentum * variance / (count - 1))]

    def _normalized(self, n, h, w):
        return (self.input[n, self.c, h, w] - self.mean[self.c]) * \
            self.inverse_std[self.c]

    def _forward_equations(self, training):
        """The maths: one :class:`Standardization`, whose adjoint rule gives the
        backward pass."""
        return [Standardization(self, training)]

    def normalization_equations(self, training):
        """The loops of the forward pass: the statistics (of the batch in
        training, the running ones in evaluation), then the normalized output."""
        n, c, h, w = self.out_dims
        value = self.kernel[c] * self._normalized(n, h, w) + self.bias[c] \
            if self.affine else self._normalized(n, h, w)
        return self._statistics_equations(training) + [
            Eq(self.result[n, c, h, w], self.activation.forward(value))]


class Standardization(Operation):
    r"""``result = f(W (x - mean) / std + b)`` per channel: a :class:`BatchNorm`'s
    forward pass, with the statistics of the batch (training) or the running ones
    (evaluation, constants).

    Its adjoint rule, with ``dz = dy . f'(y)`` (the activation's derivative from
    its output), ``db = sum dz``, ``dW = sum dz x_hat`` (one pass, two sums) and
    ``dx = W / std (dz - (db + x_hat dW) / M)`` in training, ``W dz / std`` in
    evaluation: the mean and the variance's own gradients folded in, so that the
    backward pass reads the input twice instead of five times. The sums, and ``M``
    (the count of the forward pass), are marked as sums over the batch
    (:mod:`devito_ml.batch_sums`): a net whose statistics are synchronized over
    processes has them summed there.
    """

    def __init__(self, bn, training):
        self.bn, self.training, self.target = bn, training, bn.result
        self.reads = (bn.input, bn.kernel, bn.bias) if bn.affine else (bn.input,)

    def equations(self):
        return self.bn.normalization_equations(self.training)

    def adjoint(self, gradient, gradients):
        bn = self.bn
        n, c, h, w = bn.out_dims
        dz = bn.pre_activation_gradients
        shared = bn.activation.gradient_equations(dz, gradient, bn.result, (n, c, h, w))
        # both sums are needed by the input gradient, whether learnt or not
        m, y, x = bn.grad_dims
        dgamma, dbeta = bn.kernel_gradients[c], bn.bias_gradients[c]
        shared += bn._channel_sum('sum_dz', dbeta, dz[m, c, y, x], (m, y, x))
        shared += bn._channel_sum('sum_dz_xhat', dgamma,
                                  dz[m, c, y, x] * bn._normalized(m, y, x), (m, y, x))
        each = {function: [] for function in self.reads[1:] if function in gradients}
        if bn.input in gradients:
            each[bn.input] = self._input_gradient(dz, gradients[bn.input])
        return shared, each

    def _input_gradient(self, dz, input_gradient):
        bn = self.bn
        n, c, h, w = bn.out_dims
        gain = (bn.kernel[c] if bn.affine else 1) * bn.inverse_std[c]
        value = dz[n, c, h, w]
        if not self.training:
            return [Eq(input_gradient[n, c, h, w], gain * value)]
        sums = bn.gradient_sums
        count = bn.count[c]
        return [BatchSums(f"{bn.name}_gradient_sums",
                          [(bn.bias_gradients, sums['dz']),
                           (bn.kernel_gradients, sums['dz_xhat'])], gradients=True),
                Eq(input_gradient[n, c, h, w],
                   gain * (value - sums['dz'][c] / count
                           - bn._normalized(n, h, w) * sums['dz_xhat'][c] / count))]
