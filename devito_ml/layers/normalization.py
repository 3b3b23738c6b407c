"""Batch normalization of 2D feature maps: the layer, and its maths as an operation
with the rule of its adjoint."""

import numpy as np
import sympy
from devito import Dimension, Eq

from devito_ml.activations import as_activation
from devito_ml.autodiff import Operation
from devito_ml.compiled import SyncPoint
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
        """(batch, rows, cols) loops of one reduction pass; the batch ends in ``_n``
        so that it runs over the active batch (channels last, a plain Dimension:
        the sample sums are stored on it)."""
        n, _, h, w = self.input_size
        batch = Dimension(f"{self.name}_{role}_n") if self.inputs_channels_last[0] \
            else self.dim(f"{role}_n", n)
        return (batch, self.dim(f"{role}_h", h), self.dim(f"{role}_w", w))

    def _channel_sum(self, name, target, value, loops, finish=None):
        """:func:`~devito_ml.symbolics.channel_sum` ``name`` of ``value`` over
        ``loops`` into ``target``, through sample sums where the input is stored
        channels last."""
        partial = self.sample_sums[name] if self.sample_sums else None
        batch = self.dim(f"{name}_n", self.input_size[0]) if partial else None
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

    def before_step(self, batch, training):
        if not training:
            return
        _, _, h, w = self.input_size
        # synchronized: the values of every rank's shard count
        batch = batch if self.sync is None else self.sync.total
        if batch * h * w < 2:
            raise ShapeError(f"BatchNorm `{self.name}`: training needs more than one "
                             f"value per channel, got batch {batch} of {h}x{w} maps "
                             "(use eval mode)")
        self.num_batches_tracked += 1

    def skip_step(self):
        self.num_batches_tracked += 1

    def _count(self, dims):
        """M, the values per channel in the active batch, in a pass over ``dims``."""
        m = dims[0]
        _, _, h, w = self.input_size
        return (m.symbolic_max - m.symbolic_min + 1) * h * w

    def _x(self, dims):
        m, h, w = dims
        return self.input[m, self.c, h, w]

    sync = None
    """Set by :class:`~devito_ml.distributed.DataParallel` to synchronize the
    statistics of training over the ranks of an MPI job (PyTorch's SyncBatchNorm):
    an object with ``allreduce(array)`` and the step's ``shard`` and ``total``
    batch sizes. None: the statistics of this process's batch."""

    def _statistics_equations(self, training):
        if training and self.sync is not None:
            return self._synchronized_statistics_equations()
        c, eps = self.c, self.eps
        mean, variance, inverse_std = self.mean[c], self.variance[c], \
            self.inverse_std[c]
        if not training:
            return [Eq(mean, self.running_mean[c]),
                    Eq(inverse_std, 1 / sympy.sqrt(self.running_var[c] + eps))]
        count = self._count(self.mean_dims)
        momentum = self.momentum
        deviation = self._x(self.var_dims) - mean
        return self._channel_sum('sum_x', mean, self._x(self.mean_dims),
                                 self.mean_dims, finish=lambda total: total / count) + \
            self._channel_sum('sum_dev2', variance, deviation * deviation,
                              self.var_dims) + [
                Eq(inverse_std, 1 / sympy.sqrt(variance / count + eps)),
                Eq(self.running_mean[c], (1 - momentum) * self.running_mean[c]
                   + momentum * mean),
                Eq(self.running_var[c], (1 - momentum) * self.running_var[c]
                   + momentum * variance / (count - 1))]

    # -- synchronized over MPI ranks: sums in C, summed over ranks in Python ----------

    def _synchronized_statistics_equations(self):
        """Each rank sums its shard; the sums meet between two operators
        (:class:`~devito_ml.compiled.SyncPoint`), where the mean, the inverse
        standard deviation and the running statistics are finished in numpy."""
        c = self.c
        deviation = self._x(self.var_dims) - self.mean[c]
        return self._channel_sum('sum_x', self.mean[c], self._x(self.mean_dims),
                                 self.mean_dims) + [
            SyncPoint(f"{self.name}_mean", self._sync_mean,
                      lambda: self._idle((self.mean,), self._sync_mean))] + \
            self._channel_sum('sum_dev2', self.variance[c], deviation * deviation,
                              self.var_dims) + [
            SyncPoint(f"{self.name}_variance", self._sync_variance,
                      lambda: self._idle((self.variance,), self._sync_variance))]

    def _global_count(self):
        _, _, h, w = self.input_size
        return self.sync.total * h * w

    def _idle(self, sums, action):
        """A rank without samples: its sums are zeros, the collective goes on."""
        for function in sums:
            function.data[:] = 0
        action(0)

    def _sync_mean(self, batch):
        self.mean.data[:] = self.sync.allreduce(self.mean.data) / self._global_count()

    def _sync_variance(self, batch):
        count, m = self._global_count(), self.momentum
        total = self.sync.allreduce(self.variance.data)
        self.variance.data[:] = total
        self.inverse_std.data[:] = 1 / np.sqrt(total / count + self.eps)
        self.running_mean.data[:] = (1 - m) * self.running_mean.data \
            + m * self.mean.data
        self.running_var.data[:] = (1 - m) * self.running_var.data \
            + m * total / (count - 1)

    def _synchronized_gradient_means(self):
        """Sums of dz and dz * x_hat over every rank, per value of this rank's
        shard (its dz is of its own shard's mean loss)."""
        if not hasattr(self, 'dz_mean'):
            channels, c = (self.c,), self.input_size[1]
            self.dz_mean = self.tensor('dz_mean', channels, (c,), dtype=np.float64)
            self.dz_xhat_mean = self.tensor('dz_xhat_mean', channels, (c,),
                                            dtype=np.float64)
        return self.dz_mean[self.c], self.dz_xhat_mean[self.c]

    def _sync_gradient_sums(self, batch):
        """Rank r's dz is d(its shard's mean loss); scaled by shard / total the
        sums add up to those of the global mean loss, and back in rank r's terms
        they are divided by its own count of values."""
        _, c, h, w = self.input_size
        shard, total = self.sync.shard, self.sync.total
        local = np.concatenate([self.bias_gradients.data, self.kernel_gradients.data])
        summed = self.sync.allreduce(local.astype(np.float64) * (shard / total))
        if shard:
            self.dz_mean.data[:] = summed[:c] / (shard * h * w)
            self.dz_xhat_mean.data[:] = summed[c:] / (shard * h * w)

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
    backward pass reads the input twice instead of five times. Synchronized over
    MPI ranks, the two sums meet between two operators first
    (:class:`~devito_ml.compiled.SyncPoint`).
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
        shared = [] if dz is gradient else [
            Eq(dz[n, c, h, w], gradient[n, c, h, w]
               * bn.activation.derivative_from_output(bn.result[n, c, h, w]))]
        # both sums are needed by the input gradient, whether learnt or not
        m, y, x = bn.grad_dims
        dgamma, dbeta = bn.kernel_gradients[c], bn.bias_gradients[c]
        shared += bn._channel_sum('sum_dz', dbeta, dz[m, c, y, x], (m, y, x))
        shared += bn._channel_sum('sum_dz_xhat', dgamma,
                                  dz[m, c, y, x] * bn._normalized(m, y, x), (m, y, x))
        each = {function: [] for function in self.reads[1:] if function in gradients}
        if bn.input in gradients:
            each[bn.input] = self._input_gradient(dz, dgamma, dbeta,
                                                  gradients[bn.input])
        return shared, each

    def _input_gradient(self, dz, dgamma, dbeta, input_gradient):
        bn = self.bn
        n, c, h, w = bn.out_dims
        gain = (bn.kernel[c] if bn.affine else 1) * bn.inverse_std[c]
        value = dz[n, c, h, w]
        if self.training and bn.sync is not None:
            mean_dz, mean_dz_xhat = bn._synchronized_gradient_means()
            return [SyncPoint(f"{bn.name}_gradient_sums", bn._sync_gradient_sums,
                              lambda: bn._idle((bn.bias_gradients, bn.kernel_gradients),
                                               bn._sync_gradient_sums)),
                    Eq(input_gradient[n, c, h, w],
                       gain * (value - mean_dz - bn._normalized(n, h, w) * mean_dz_xhat))]
        if self.training:
            count = bn._count(bn.grad_dims)
            value = value - dbeta / count - bn._normalized(n, h, w) * dgamma / count
        return [Eq(input_gradient[n, c, h, w], gain * value)]
