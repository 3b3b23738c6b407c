"""Batch normalization of 2D feature maps, forward and backward side by side."""

import numpy as np
import sympy
from devito import Eq

from devito_ml.activations import as_activation
from devito_ml.layer import Layer
from devito_ml.symbolics import register_sum
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
        _, c, h, w = self.input_size
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
            self.tensor('dz', self.out_storage, self.output_size)
        # one set of reduction loops a pass: Devito would fuse the mean and the
        # variance loops if they shared Dimensions, reading a partial mean
        self.mean_dims = self._reduction_dims('mean')
        self.var_dims = self._reduction_dims('var')
        self.grad_dims = self._reduction_dims('grad')

    def _reduction_dims(self, role):
        """(batch, rows, cols) loops of one reduction pass; the batch ends in ``_n``
        so that it runs over the active batch."""
        n, _, h, w = self.input_size
        return (self.dim(f"{role}_n", n), self.dim(f"{role}_h", h),
                self.dim(f"{role}_w", w))

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
        if batch * h * w < 2:
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
        c, eps = self.c, self.eps
        mean, variance, inverse_std = self.mean[c], self.variance[c], \
            self.inverse_std[c]
        if not training:
            return [Eq(mean, self.running_mean[c]),
                    Eq(inverse_std, 1 / sympy.sqrt(self.running_var[c] + eps))]
        count = self._count(self.mean_dims)
        momentum = self.momentum
        deviation = self._x(self.var_dims) - mean
        return register_sum(f"{self.name}_sum_x", mean, self._x(self.mean_dims), (c,),
                            self.mean_dims, finish=lambda total: total / count) + \
            register_sum(f"{self.name}_sum_dev2", variance, deviation * deviation, (c,),
                         self.var_dims) + [
                Eq(inverse_std, 1 / sympy.sqrt(variance / count + eps)),
                Eq(self.running_mean[c], (1 - momentum) * self.running_mean[c]
                   + momentum * mean),
                Eq(self.running_var[c], (1 - momentum) * self.running_var[c]
                   + momentum * variance / (count - 1))]

    def _normalized(self, n, h, w):
        return (self.input[n, self.c, h, w] - self.mean[self.c]) * \
            self.inverse_std[self.c]

    def _forward_equations(self, training):
        n, c, h, w = self.out_dims
        value = self.kernel[c] * self._normalized(n, h, w) + self.bias[c] \
            if self.affine else self._normalized(n, h, w)
        return self._statistics_equations(training) + [
            Eq(self.result[n, c, h, w], self.activation.forward(value))]

    def _backward_equations(self, training):
        n, c, h, w = self.out_dims
        dz = self.pre_activation_gradients
        eqs = []
        if dz is not self.result_gradients:
            eqs.append(Eq(dz[n, c, h, w], self.result_gradients[n, c, h, w]
                          * self.activation.derivative_from_output(
                              self.result[n, c, h, w])))
        m, y, x = self.grad_dims
        dgamma, dbeta = self.kernel_gradients[c], self.bias_gradients[c]
        eqs += register_sum(f"{self.name}_sum_dz", dbeta, dz[m, c, y, x], (c,),
                            (m, y, x))
        eqs += register_sum(f"{self.name}_sum_dz_xhat", dgamma,
                            dz[m, c, y, x] * self._normalized(m, y, x), (c,), (m, y, x))
        gain = (self.kernel[c] if self.affine else 1) * self.inverse_std[c]
        gradient = dz[n, c, h, w]
        if training:
            count = self._count(self.grad_dims)
            gradient = gradient - dbeta / count \
                - self._normalized(n, h, w) * dgamma / count
        return eqs + [Eq(self.input_gradients[n, c, h, w], gain * gradient)]
