r"""Correlations: the maths of a convolution, and the rule of its adjoint.

:class:`Correlation` states a :class:`~devito_ml.Conv`'s forward pass,

.. math::

    z_{nkij} = b_k + \sum_{c,r,q} W_{kcrq}\, x_{n,c_0(k)+c,\,is+rd-p,\,js+qd-p},
    \qquad y = f(z)

(``c_0(k)`` the first input channel of ``k``'s group), as an
:class:`~devito_ml.autodiff.Operation`. Its adjoint rule: with
``dz = dy . f'(y)`` (the activation's derivative from its output),
``db_k = sum dz``, the weight gradient a correlation of ``dz`` with the input
(:class:`WeightCorrelation`) and the input gradient a correlation of ``dz`` with the
kernel turned around (:class:`TransposedCorrelation`), a gather. Each operation's
:meth:`equations` are its NCHW loop nests; ``Conv.schedule`` lowers the three to
register tiles instead where their channels fill the vector lanes.
"""

from devito import Eq, Inc
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.autodiff import Operation
from devito_ml.layout import stored_order
from devito_ml.batch import batch_loop
from devito_ml.symbolics import channel_sum, kernel_taps

__all__ = ['Correlation', 'WeightCorrelation', 'TransposedCorrelation']


class _ConvOperation(Operation):
    """An operation over the loops, geometry and buffers of one convolution."""

    def __init__(self, conv, target, reads):
        self.conv, self.target, self.reads = conv, target, tuple(reads)

    def taps(self):
        """The kernel taps, unrolled (literal offsets) or as the tap loops."""
        _, r, q = self.conv.kernel_size
        return kernel_taps(r, q, self.conv.ky, self.conv.kx)

    def tap(self, source, n=None, ky=None, kx=None, y=None, x=None):
        """``source`` under kernel tap (ky, kx) of output (y, x) of sample n."""
        conv = self.conv
        _, k, oy, ox = conv.out_dims
        n = conv.in_dims[0] if n is None else n
        ky = conv.ky if ky is None else ky
        kx = conv.kx if kx is None else kx
        y = oy if y is None else y
        x = ox if x is None else x
        channel = conv.in_dims[1] if conv.groups == 1 else \
            conv.group_input_start[k] + conv.wc
        (sy, sx), (py, px), (dy, dx) = conv.stride, conv.padding, conv.dilation
        return source[n, channel, y * sy + ky * dy - py, x * sx + kx * dx - px]


class Correlation(_ConvOperation):
    """``result = f(bias + kernel * source)``: a convolution's forward pass.

    Parameters
    ----------
    conv : Conv
        The layer whose loops, geometry and buffers it uses.
    result, source, kernel : Function
    bias : Function or None
    activation : Activation
    """

    def __init__(self, conv, result, source, kernel, bias, activation):
        super().__init__(conv, result, [source, kernel] + ([bias] if bias else []))
        self.source, self.kernel, self.bias = source, kernel, bias
        self.activation = activation

    def equations(self):
        n, k, y, x = self.conv.out_dims
        out = self.target[n, k, y, x]
        taps = sum(self.kernel[k, self.conv.wc, i, j] * self.tap(self.source, ky=i, kx=j)
                   for i, j in self.taps())
        eqs = [Eq(out, self.bias[k] if self.bias is not None else 0), Inc(out, taps)]
        if not self.activation.is_identity:
            eqs.append(Eq(out, self.activation.forward(out)))
        return eqs

    def adjoint(self, gradient, gradients):
        conv = self.conv
        n, k, y, x = conv.out_dims
        dz = gradient if self.activation.is_identity else conv.pre_activation_gradients
        shared = self.activation.gradient_equations(dz, gradient, self.target,
                                                    (n, k, y, x))
        each = {}
        if self.bias in gradients:
            # first: after the weight gradient's nests over (k, c), Devito would
            # fuse this sum over k into them, and sum it once a channel
            # (rows and columns of its own too: with dz channels last, its own
            # Dimensions would order the rows before the channels)
            batch, _, rows, columns = conv.output_size
            gy, gx = conv.dim('db_h', rows), conv.dim('db_w', columns)
            partial = conv.bias_sample_sums
            m = partial.dimensions[0] if partial else conv.reduction_batch_dim
            shared += channel_sum(f"{conv.name}_sum_dz", gradients[self.bias][k],
                                  dz[m, k, gy, gx], k, (m, gy, gx), partial,
                                  batch_loop(f"{conv.name}_db_n", batch)
                                  if partial else None)
            each[self.bias] = []
        if self.kernel in gradients:
            each[self.kernel] = [WeightCorrelation(conv, gradients[self.kernel], dz,
                                                   self.source)]
        if self.source in gradients:
            each[self.source] = [TransposedCorrelation(conv, gradients[self.source], dz,
                                                       self.kernel)]
        return shared, each


class WeightCorrelation(_ConvOperation):
    """``kernel_gradient[k, c, r, q] = sum over (n, i, j) of gradient[n, k, i, j]
    * source[n, c_0(k) + c, i s + r d - p, j s + q d - p]``."""

    def __init__(self, conv, kernel_gradient, gradient, source):
        super().__init__(conv, kernel_gradient, [gradient, source])
        self.gradient, self.source = gradient, source

    def equations(self):
        """One register accumulator a tap, parallel over (k, c): gcc keeps the
        Scalars, private to each (k, c) iteration, in registers and vectorises the
        column loop (2.6 -> 17.6 GFLOP/s against an Inc into memory)."""
        conv, dw, dz = self.conv, self.target, self.gradient
        k, c, m = conv.k, conv.wc, conv.reduction_batch_dim
        _, _, y, x = conv.out_dims
        taps = self.taps()
        if taps == [(conv.ky, conv.kx)]:
            # Taps as loops outside the output rows: the forward pass (same operator
            # when training) orders rows before taps, so this nest walks rows and
            # columns of its own, or Devito finds the two orders cyclic.
            _, _, oh, ow = conv.output_size
            gy, gx = conv.dim('dW_h', oh), conv.dim('dW_w', ow)
            return [Eq(dw[k, c, conv.ky, conv.kx], 0),
                    Inc(dw[k, c, conv.ky, conv.kx],
                        dz[m, k, gy, gx] * self.tap(self.source, m, y=gy, x=gx),
                        implicit_dims=IgnoreDimSort((k, c, conv.ky, conv.kx, m, gy,
                                                     gx)))]
        eqs = []
        for i, j in taps:
            total = Scalar(name=f"{conv.name}_dW_{i}_{j}", dtype=conv.dtype.type)
            eqs += [Eq(total, 0, implicit_dims=(k, c)),
                    Eq(total, total + dz[m, k, y, x] * self.tap(self.source, m, i, j),
                       implicit_dims=IgnoreDimSort((k, c, m, y, x))),
                    Eq(dw[k, c, i, j], total, implicit_dims=(k, c))]
        return eqs


class TransposedCorrelation(_ConvOperation):
    """``source_gradient[n, c, h, w] = sum over (k, r, q) of kernel[k, c', r, q]
    * gradient[n, k, (h + p - r d) / s, (w + p - q d) / s]`` where the division
    is exact: a gather, parallel over every input point, no atomics."""

    def __init__(self, conv, source_gradient, gradient, kernel):
        super().__init__(conv, source_gradient, [gradient, kernel])
        self.gradient, self.kernel = gradient, kernel

    def equations(self):
        """From ``gradient`` stuffed (``s - 1`` zeros between entries, a zero halo:
        ``Conv.stuffed_gradients``), image columns innermost."""
        conv = self.conv
        n, k, y, x = conv.out_dims
        (sy, sx), (py, px), (dy, dx) = conv.stride, conv.padding, conv.dilation
        stuffed = conv.stuffed_gradients
        _, ci, h, w = conv.input_gradient_dims
        local, kk = ci, k
        if conv.groups > 1:   # only the output channels of ci's group
            per_group = conv.kernel_size[0] // conv.groups
            kk = conv.group_output_start[ci] + conv.dim('group_k', per_group)
            local = ci - conv.group_channel_start[ci]
        total = sum(self.kernel[kk, local, i, j]
                    * stuffed[n, kk, h + py - i * dy, w + px - j * dx]
                    for i, j in self.taps())
        # looping in the order the gradient is stored (channels last, from tiles)
        return [Eq(stuffed[n, k, y * sy, x * sx], self.gradient[n, k, y, x],
                   implicit_dims=IgnoreDimSort(stored_order(self.gradient,
                                                            (n, k, y, x)))),
                Eq(self.target[n, ci, h, w], 0),
                Inc(self.target[n, ci, h, w], total)]
