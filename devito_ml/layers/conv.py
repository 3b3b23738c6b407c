"""2D convolution (cross-correlation), forward and backward side by side."""

import numpy as np
from devito import Eq, Inc
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.activations import as_activation
from devito_ml.layer import WeightedLayer
from devito_ml.layers.window import padding_halo, window_output_size
from devito_ml.symbolics import Halo, kernel_taps, stuffed_extent, stuffed_halo
from devito_ml.validation import as_pair, check_positive_ints

__all__ = ['Conv']


class Conv(WeightedLayer):
    r"""2D convolution of an NCHW input with ``out_channels`` kernels.

    Parameters
    ----------
    kernel_size : tuple of int
        ``(out_channels, rows, cols)``; input channels come from ``input_size``.
    input_size : tuple of int
        ``(batch, channels, rows, cols)``.
    stride, padding, dilation : int or pair of int
        As ``torch.nn.Conv2d``; padding is zeros.
    bias : bool
        Whether to add a learnt bias per output channel.
    activation : Activation or callable, optional
        Applied to the output (default identity).
    name : str, optional
        Prefix of every Function and loop of the layer (default ``conv``).
    dtype : numpy dtype
        float32 (default) or float64.
    generate_code : bool
        Build standalone forward/backward operators now.
    seed : int, optional
        Seed of the parameter initialisation.

    Shape
    -----
    ``(N, C, H, W) -> (N, K, OH, OW)`` with
    ``OH = floor((H + 2*p - d*(R - 1) - 1)/s) + 1`` (likewise ``OW``).

    Notes
    -----
    With ``z = W * x + b`` and ``y = f(z)``, ``dz = dy . f'(y)``:

    .. math::

        y_{nkij} &= f\big(b_k + \sum_{c,r,q} W_{kcrq}\, x_{n,c,is+rd-p,js+qd-p}\big)\\
        \partial b_k &= \sum_{n,i,j} dz_{nkij}\\
        \partial W_{kcrq} &= \sum_{n,i,j} dz_{nkij}\, x_{n,c,is+rd-p,js+qd-p}\\
        \partial x_{nchw} &= \sum_{k,r,q} W_{kcrq}\, \tilde{dz}_{n,k,h+p-rd,w+p-qd}

    where :math:`\tilde{dz}` is ``dz`` with ``s - 1`` zeros between entries and a
    zero halo: the input gradient is a gather, with no atomics. The weight gradient
    loops over its own indices outermost (parallel), the batch inside.

    Examples
    --------
    >>> import numpy as np
    >>> conv = Conv(kernel_size=(4, 3, 3), input_size=(2, 3, 8, 8), padding=1)
    >>> conv.kernel.shape, conv.result.shape
    ((4, 3, 3, 3), (2, 4, 8, 8))
    """

    family = 'conv'

    def __init__(self, kernel_size, input_size, stride=1, padding=0, dilation=1,
                 bias=True, activation=None, name=None, dtype=np.float32,
                 generate_code=False, seed=None):
        self.name = name or self.family
        self.kernel_size = check_positive_ints(self, 'kernel_size', kernel_size, 3)
        self.stride = as_pair(self, 'stride', stride, minimum=1)
        self.padding = as_pair(self, 'padding', padding, minimum=0)
        self.dilation = as_pair(self, 'dilation', dilation, minimum=1)
        self.has_bias = bool(bias)
        self.activation = as_activation(activation)
        self._seed = seed
        super().__init__(input_size, name, dtype, generate_code=False)
        self.reset_parameters(np.random.default_rng(seed))
        if generate_code:
            self.compile()

    @property
    def output_size(self):
        _, r, q = self.kernel_size
        return window_output_size(self, self.kernel_size[0], (r, q), self.dilation)

    @property
    def input_halo(self):
        return padding_halo(self.padding)

    def _create_functions(self):
        _, c, h, w = self.input_size
        _, k, oh, ow = self.output_size
        _, r, q = self.kernel_size
        self.k = self.out_dims[1]
        self.ky, self.kx = self.dim('ky', r), self.dim('kx', q)
        weight_dims = (self.k, self.in_dims[1], self.ky, self.kx)
        self.kernel = self.tensor('W', weight_dims, (k, c, r, q))
        self.kernel_gradients = self.tensor('dW', weight_dims, (k, c, r, q))
        self.bias = self.tensor('b', (self.k,), (k,))
        self.bias_gradients = self.tensor('db', (self.k,), (k,))
        if self.activation.is_identity:
            self.pre_activation_gradients = self.result_gradients
        else:
            self.pre_activation_gradients = self.tensor('dz', self.out_storage,
                                                        self.output_size)
        halos = [stuffed_halo(size, out, kern, s, p, d) for size, out, kern, s, p, d in
                 zip((h, w), (oh, ow), (r, q), self.stride, self.padding,
                     self.dilation)]
        stuffed = (stuffed_extent(oh, self.stride[0]), stuffed_extent(ow, self.stride[1]))
        self.stuffed_gradients = self.tensor(
            'dz_stuffed',
            (self.batch_dim, self.k, self.dim('sy', stuffed[0]),
             self.dim('sx', stuffed[1])),
            (self.input_size[0], k) + stuffed, Halo((0, 0), (0, 0), *halos))

    @property
    def fan_in(self):
        _, r, q = self.kernel_size
        return self.input_size[1] * r * q

    def _tap(self, n=None, ky=None, kx=None):
        """The input value under kernel tap (ky, kx) of output (y, x) of sample n."""
        n = self.in_dims[0] if n is None else n
        ky = self.ky if ky is None else ky
        kx = self.kx if kx is None else kx
        c = self.in_dims[1]
        _, _, y, x = self.out_dims
        (sy, sx), (py, px), (dy, dx) = self.stride, self.padding, self.dilation
        return self.input[n, c, y * sy + ky * dy - py, x * sx + kx * dx - px]

    def _taps(self):
        _, r, q = self.kernel_size
        return kernel_taps(r, q, self.ky, self.kx)

    def _forward_equations(self):
        n, k, y, x = self.out_dims
        c = self.in_dims[1]
        out = self.result[n, k, y, x]
        taps = sum(self.kernel[k, c, i, j] * self._tap(ky=i, kx=j)
                   for i, j in self._taps())
        eqs = [Eq(out, self.bias[k] if self.has_bias else 0), Inc(out, taps)]
        if not self.activation.is_identity:
            eqs.append(Eq(out, self.activation.forward(out)))
        return eqs

    def _weight_gradient_equations(self, dz):
        """dW[k, c, i, j] = sum over (batch, y, x) of dz * tap, one accumulator a tap.

        The accumulators are Scalars, private to each (k, c) iteration: gcc keeps
        them in registers and vectorises the x loop, which a reduction into
        ``dW[k][c][i][j]`` in memory prevents (measured: 2.6 -> 9.8 GFLOP/s for
        one Inc per tap, more with the Scalars).
        """
        k, c, m = self.k, self.in_dims[1], self.reduction_batch_dim
        _, _, y, x = self.out_dims
        taps = self._taps()
        if taps == [(self.ky, self.kx)]:
            return [Eq(self.kernel_gradients[k, c, self.ky, self.kx], 0),
                    Inc(self.kernel_gradients[k, c, self.ky, self.kx],
                        dz[m, k, y, x] * self._tap(m),
                        implicit_dims=IgnoreDimSort((k, c, self.ky, self.kx, m, y, x)))]
        eqs = []
        for i, j in taps:
            total = Scalar(name=f"{self.name}_dW_{i}_{j}", dtype=self.dtype.type)
            eqs += [Eq(total, 0, implicit_dims=(k, c)),
                    Eq(total, total + dz[m, k, y, x] * self._tap(m, i, j),
                       implicit_dims=IgnoreDimSort((k, c, m, y, x))),
                    Eq(self.kernel_gradients[k, c, i, j], total, implicit_dims=(k, c))]
        return eqs

    def _backward_equations(self):
        n, k, y, x = self.out_dims
        _, ci, h, w = self.input_gradient_dims
        (sy, sx), (py, px), (dy, dx) = self.stride, self.padding, self.dilation
        dz = self.pre_activation_gradients
        eqs = []
        if dz is not self.result_gradients:
            eqs.append(Eq(dz[n, k, y, x], self.result_gradients[n, k, y, x]
                          * self.activation.derivative_from_output(
                              self.result[n, k, y, x])))
        m = self.reduction_batch_dim
        if self.has_bias:
            eqs += [Eq(self.bias_gradients[k], 0),
                    Inc(self.bias_gradients[k], dz[m, k, y, x],
                        implicit_dims=IgnoreDimSort((k, m, y, x)))]
        stuffed = self.stuffed_gradients
        eqs += self._weight_gradient_equations(dz)
        eqs += [
                Eq(stuffed[n, k, y * sy, x * sx], dz[n, k, y, x]),
                Eq(self.input_gradients[n, ci, h, w], 0),
                Inc(self.input_gradients[n, ci, h, w],
                    sum(self.kernel[k, ci, i, j]
                        * stuffed[n, k, h + py - i * dy, w + px - j * dx]
                        for i, j in self._taps()))]
        return eqs
