"""Pooling: a generic window reduction with max and average wrappers."""

import numbers

import numpy as np
import sympy
from devito import Eq, Inc
from devito.types import Scalar
from sympy import Max, Min

from devito_ml.layer import Layer
from devito_ml.layout import stored_order
from devito_ml.layers.window import output_extent, padding_halo, window_output_size
from devito_ml.layers.window_reduction import WindowGradient, WindowReduction
from devito_ml.layers.window_tables import (WindowTables, adaptive_windows,
                                            sliding_windows)
from devito_ml.symbolics import (CondEq, CondNe, Halo, Select, kernel_taps,
                                 register_sum, sample_sums, stuffed_extent,
                                 stuffed_halo)
from devito_ml.validation import LayerArgumentError, as_pair, check_flag

__all__ = ['MaxPooling', 'AvgPooling', 'Subsampling', 'GlobalAvgPooling',
           'AdaptiveAvgPooling', 'AdaptiveMaxPooling']


class Pooling(Layer):
    r"""Base of window reductions over ``kernel_size`` windows of each channel.

    Notes
    -----
    The layer states its forward pass, a
    :class:`~devito_ml.layers.window_reduction.WindowReduction`; the backward pass
    is that operation's adjoint rule, lowered by :meth:`lower`. Both adjoints are
    gathers from :math:`\tilde{g}`, the output gradient with
    ``stride - 1`` zeros between entries and a zero halo:

    .. math::

        \text{avg:}\quad \partial x_{nchw} &= \frac{1}{RQ}\sum_{r,q}
            \tilde{g}_{n,c,h+p-r,w+p-q}\\
        \text{max:}\quad \partial x_{nchw} &= \sum_{r,q}
            \tilde{g}_{n,c,h+p-r,w+p-q}\,[\tilde{a}_{n,c,h+p-r,w+p-q} = rQ + q]

    where :math:`a_{ncij}` is the first tap (in row-major order) that holds the
    window's maximum, as PyTorch routes ties. Max pooling with windows that
    neither overlap nor pad (stride = kernel) scatters instead: each window's
    gradient goes straight to its maximum.
    """

    reduction = None   # 'max' or 'avg'
    preserves_layout = True   # an output and its window of the input: one channel
    dilation = (1, 1)
    ceil_mode = False
    count_include_pad = True

    def __init__(self, kernel_size, input_size=None, stride=None, padding=0, name=None,
                 dtype=None, generate_code=False, *, dilation=1, ceil_mode=False,
                 count_include_pad=True):
        self.name = name or self.family
        self.kernel_size = as_pair(self, 'kernel_size', kernel_size, minimum=1)
        self.stride = self.kernel_size if stride is None else \
            as_pair(self, 'stride', stride, minimum=1)
        self.padding = as_pair(self, 'padding', padding, minimum=0)
        self.dilation = as_pair(self, 'dilation', dilation, minimum=1)
        if self.dilation != (1, 1) and self.reduction != 'max':
            raise LayerArgumentError(f"{type(self).__name__} `{self.name}`: `dilation` "
                                     f"is for max pooling only, got {dilation!r}")
        self.ceil_mode = check_flag(self, 'ceil_mode', ceil_mode)
        self.count_include_pad = check_flag(self, 'count_include_pad',
                                            count_include_pad)
        reach = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation)]
        if any(2 * p > k for p, k in zip(self.padding, reach)):
            raise LayerArgumentError(
                f"{type(self).__name__} `{self.name}`: `padding` must be at most half "
                f"the kernel {self.kernel_size}"
                + (f" dilated by {self.dilation}" if self.dilation != (1, 1) else "")
                + f", got {self.padding}")
        super().__init__(input_size, name, dtype, generate_code)

    @property
    def input_fill(self):
        return -np.inf if self.reduction == 'max' else 0.0

    def axis_windows(self):
        """The windows of the rows and of the columns (:class:`AxisWindows`), or
        None where a kernel does not fit."""
        _, _, h, w = self.input_size
        return tuple(sliding_windows(size, k, s, p, d, self.ceil_mode,
                                     self.count_include_pad)
                     for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride,
                                                 self.padding, self.dilation))

    @property
    def tabled(self):
        """Whether the windows are read through index tables (``window_tables.py``):
        ceil_mode adding a window, dilation, or a mean that does not count the
        padding. Other windows are loops with affine indices."""
        if self.reduction is None:
            return False
        windows = self.axis_windows()
        if None in windows:
            return False
        _, _, h, w = self.input_size
        floor = [output_extent(size, k, s, p, 1) for size, k, s, p in
                 zip((h, w), self.kernel_size, self.stride, self.padding)]
        return self.dilation != (1, 1) or \
            [axis.outputs for axis in windows] != floor or \
            (self.reduction == 'avg' and not self.count_include_pad and
             self.padding != (0, 0))

    @property
    def output_size(self):
        if self.tabled:
            rows, columns = self.axis_windows()
            return self.input_size[:2] + (rows.outputs, columns.outputs)
        return window_output_size(self, self.input_size[1], self.kernel_size,
                                  self.dilation)

    @property
    def input_halo(self):
        return Halo.none(4) if self.tabled else padding_halo(self.padding)

    def reads_channels_last(self, index):
        """Affine windows read any layout (channels last, loops channels
        innermost); index tables are NCHW."""
        return not self.tabled

    def writes_channels_last(self):
        return not self.tabled

    def _create_functions(self):
        if self.tabled:
            if self.reduction == 'max':
                self.argmax = self.tensor('argmax', self.out_storage, self.output_size)
            self.tables = WindowTables(self, *self.axis_windows(), self.reduction)
            return
        _, c, h, w = self.input_size
        n, _, oh, ow = self.output_size
        r, q = self.kernel_size
        self.ky, self.kx = self.dim('ky', r), self.dim('kx', q)
        halos = [stuffed_halo(size, out, k, s, p) for size, out, k, s, p in
                 zip((h, w), (oh, ow), self.kernel_size, self.stride, self.padding)]
        stuffed = (stuffed_extent(oh, self.stride[0]), stuffed_extent(ow, self.stride[1]))
        dims = (self.batch_dim, self.out_dims[1], self.dim('dout_stuffed_h', stuffed[0]),
                self.dim('dout_stuffed_w', stuffed[1]))
        halo = Halo((0, 0), (0, 0), *halos)
        layout = self.result_channels_last
        if self.reduction == 'max':
            if self._disjoint_max:   # a scatter: no stuffed copies
                if len(self._taps()) == 1:    # the first maximum found by a loop
                    self.argmax = self.output_tensor('argmax')
                return
            self.argmax = self.output_tensor('argmax')
            self.stuffed_argmax = self.tensor('argmax_stuffed', dims, (n, c) + stuffed,
                                              halo, channels_last=layout)
        self.stuffed_gradients = self.tensor('dout_stuffed', dims, (n, c) + stuffed, halo,
                                             channels_last=layout)

    def _loops(self):
        """The output's loops in the order the output is stored."""
        return stored_order(self.result, self.out_dims)

    def _tap(self, ky=None, kx=None):
        n, c, y, x = self.out_dims
        ky = self.ky if ky is None else ky
        kx = self.kx if kx is None else kx
        (sy, sx), (py, px) = self.stride, self.padding
        return self.input[n, c, y * sy + ky - py, x * sx + kx - px]

    def _taps(self):
        return kernel_taps(*self.kernel_size, self.ky, self.kx)

    def _forward_equations(self, training):
        """The maths: one :class:`~devito_ml.layers.window_reduction.WindowReduction`
        (whose adjoint rule gives the backward pass)."""
        return [WindowReduction(self, self.result, self.input)]

    def lower(self, operation):
        """The loops of a window reduction or of its gradient: index tables, or
        affine windows."""
        if isinstance(operation, WindowGradient):
            return self._window_gradient(operation)
        if self.tabled:
            return self.tables.forward_equations()
        out = operation.target[self.out_dims]
        taps = [self._tap(i, j) for i, j in self._taps()]
        if self.reduction == 'max':
            if len(taps) > 1:
                return nan_propagating_max(out, taps, self.name, self._loops())
            tap = taps[0]
            return [Eq(out, -sympy.oo),
                    Eq(out, Select(CondNe(out, out), out,
                                   Select(CondNe(tap, tap), tap, Max(out, tap))))]
        area = self.kernel_size[0] * self.kernel_size[1]
        if len(taps) > 1:
            return [Eq(out, sympy.Add(*taps) / area)]
        return [Eq(out, 0), Inc(out, taps[0]), Eq(out, out / area)]

    def _first_maximum(self, arg):
        """Equations of ``arg``: the row-major index of the first tap at the max."""
        n, c, y, x = self.out_dims
        r, q = self.kernel_size
        out = self.result[n, c, y, x]
        taps = self._taps()
        # a NaN tap is the maximum (the output is NaN): the first NaN gets the gradient
        if len(taps) == 1:
            index, tap = self.ky * q + self.kx, self._tap()
            first = Select(CondNe(tap, tap), index,
                           Select(CondEq(tap, out), index, r * q))
            return [Eq(arg, r * q), Eq(arg, Min(arg, first))]
        first = sympy.Integer(r * q)
        for i, j in reversed(taps):
            tap = self._tap(i, j)
            first = Select(CondNe(tap, tap), i * q + j,
                           Select(CondEq(tap, out), i * q + j, first))
        # over the output's loops: ``arg`` may be a register
        return [Eq(arg, first, implicit_dims=self._loops())]

    @property
    def _disjoint_max(self):
        """Max pooling whose windows neither overlap nor pad (stride = kernel, the
        common 2x2): each input value lies in at most one window."""
        return self.reduction == 'max' and self.stride == self.kernel_size and \
            self.padding == (0, 0)

    def _disjoint_max_gradient(self, operation):
        r"""The adjoint as a scatter, no stuffed copies: each window's gradient to
        its first maximum, zeros to the rest of the window,
        :math:`\partial x_{n,c,yR+i,xQ+j} = g_{ncyx}\,[a_{ncyx} = iQ + j]`, and
        zeros past the last whole window.

        Unrolled taps pass the gradient along the window, row-major: a tap that
        holds the maximum (or is NaN: the first NaN is the maximum) takes what is
        left, and leaves 0 to the taps after it. Only selects between values
        loaded already, which gcc vectorises (2x2 on 64x32x28x28, AMD EPYC Zen 4,
        at the schedules' width, :mod:`devito_ml.compiler`: 2.5 -> 0.9 ms, against
        a first-maximum index computed, then compared); a tap loop finds the index
        as a minimum, in memory.
        """
        n, c, y, x = self.out_dims
        r, q = self.kernel_size
        taps = self._taps()
        gradient = operation.gradient[n, c, y, x]
        din = operation.target
        eqs = []
        _, _, h, w = self.input_size
        _, _, oh, ow = self.output_size
        if (h, w) != (oh * r, ow * q):
            eqs.append(Eq(din[self.input_gradient_dims], 0))
        if len(taps) == 1:
            arg = self.argmax[n, c, y, x]
            return eqs + self._first_maximum(arg) + [
                Eq(din[n, c, y * r + i, x * q + j],
                   Select(CondEq(arg, i * q + j), gradient, 0)) for i, j in taps]
        return eqs + self._passed_along(gradient, din)

    def _passed_along(self, gradient, din):
        """The unrolled scatter: the window's gradient passed from tap to tap."""
        n, c, y, x = self.out_dims
        r, q = self.kernel_size
        taps = self._taps()
        eqs = []

        def loaded(name, value):
            """``value`` read into a Scalar: a select of values read already is a
            blend; one that reads memory is a branch to gcc, and stops it
            vectorising the loop."""
            scalar = Scalar(name=f"{self.name}_{name}", dtype=din.function.dtype)
            eqs.append(Eq(scalar, value, implicit_dims=self._loops()))
            return scalar

        out = loaded('max', self.result[n, c, y, x])
        left = loaded('left', gradient)
        for index, (i, j) in enumerate(taps):
            tap = loaded(f"tap{index}", self._tap(i, j))

            def where_maximum(then, otherwise, tap=tap):
                return Select(CondEq(tap, out), then,
                              Select(CondNe(tap, tap), then, otherwise))
            eqs.append(Eq(din[n, c, y * r + i, x * q + j], where_maximum(left, 0)))
            if index < len(taps) - 1:
                left = loaded(f"left{index}", where_maximum(0, left))
        return eqs

    def _window_gradient(self, operation):
        if self.tabled:
            return self.tables.backward_equations()
        if self._disjoint_max:
            return self._disjoint_max_gradient(operation)
        n, c, y, x = self.out_dims
        _, ci, h, w = self.input_gradient_dims
        (sy, sx), (py, px) = self.stride, self.padding
        r, q = self.kernel_size
        stuffed = self.stuffed_gradients
        eqs = [Eq(stuffed[n, c, y * sy, x * sx], operation.gradient[n, c, y, x])]
        if self.reduction == 'max':
            arg = self.argmax[n, c, y, x]
            eqs += self._first_maximum(arg)
            eqs.append(Eq(self.stuffed_argmax[n, c, y * sy, x * sx], arg))

            def contribution(i, j):
                routed = self.stuffed_argmax[n, ci, h + py - i, w + px - j]
                return Select(CondEq(routed, i * q + j),
                              stuffed[n, ci, h + py - i, w + px - j], 0)
        else:
            def contribution(i, j):
                return stuffed[n, ci, h + py - i, w + px - j] / (r * q)
        din = operation.target[n, ci, h, w]
        total = sympy.Add(*[contribution(i, j) for i, j in self._taps()])
        return eqs + [Eq(din, 0), Inc(din, total)]


def nan_propagating_max(target, values, name, dimensions):
    """Equations that set ``target`` to the maximum of ``values``, NaN when one of
    them is NaN, as torch.

    The maximum is a chain of ``a > b ? a : b`` through Scalars named ``<name>_max<i>``
    (one per value, over the loops ``dimensions``: a ternary nested in a ternary
    would repeat it), then the first NaN is selected explicitly (``x != x``; the
    compiler keeps NaN semantics, see :mod:`devito_ml.compiler`). gcc vectorises
    that; C's ``fmaxf`` it does not, with NaN semantics kept (2x2 pooling of
    64x32x28x28, AMD EPYC Zen 4: 1.4 -> 0.25 ms).
    """
    eqs, result = [], values[-1]
    for index, value in enumerate(reversed(values[:-1])):
        larger = Scalar(name=f"{name}_max{index}", dtype=target.function.dtype)
        eqs.append(Eq(larger, Select(value > result, value, result),
                      implicit_dims=dimensions))
        result = larger
    for value in reversed(values):
        result = Select(CondNe(value, value), value, result)
    return eqs + [Eq(target, result)]


class MaxPooling(Pooling):
    """Max pooling, as ``torch.nn.MaxPool2d`` (stride defaults to the kernel).

    Parameters
    ----------
    kernel_size : int or pair of int
    input_size : tuple of int, optional
        ``(batch, channels, rows, cols)``; inferred inside a net.
    stride : int or pair of int, optional
    padding : int or pair of int
        Implicit -inf padding, at most half the kernel.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``, ``OH = floor((H + 2p - R)/s) + 1``.

    Examples
    --------
    >>> MaxPooling(kernel_size=3, input_size=(1, 2, 7, 7), stride=2).output_size
    (1, 2, 3, 3)
    """

    family = 'pool'
    reduction = 'max'


class AvgPooling(Pooling):
    """Average pooling, as ``torch.nn.AvgPool2d`` (zero padding counted).

    Parameters are those of :class:`MaxPooling`.

    Examples
    --------
    >>> AvgPooling(kernel_size=2, input_size=(1, 2, 6, 6)).output_size
    (1, 2, 3, 3)
    """

    family = 'pool'
    reduction = 'avg'


class Subsampling(Pooling):
    """The tutorial's generic pooling: ``function`` reduces each window.

    Parameters
    ----------
    kernel_size : pair of int
    input_size : tuple of int
    function : callable
        Receives the list of a window's values (row-major) and returns an
        expression, e.g. ``lambda l: Max(*l)``. Max and mean are recognised (a
        :class:`~devito_ml.layers.window_reduction.WindowReduction`); the adjoint
        of any other is derived from it (:mod:`devito_ml.autodiff`).
    stride : pair of int
        Default ``(1, 1)``, as in the tutorial.
    padding : pair of int

    Examples
    --------
    >>> from sympy import Max
    >>> Subsampling((2, 2), (1, 2, 4, 4), function=lambda l: Max(*l)).output_size
    (1, 2, 3, 3)
    """

    family = 'pool'

    def __init__(self, kernel_size, input_size=None, function=None, stride=(1, 1),
                 padding=0, name=None, dtype=None, generate_code=False):
        if not callable(function):
            raise TypeError(f"Subsampling `{name or self.family}`: `function` must be "
                            f"a callable reducing a window, got {function!r}")
        self.function = function
        self.reduction = self._recognise(
            function, as_pair(self, 'kernel_size', kernel_size, 1))
        super().__init__(kernel_size, input_size, stride, padding, name, dtype,
                         generate_code)

    @staticmethod
    def _recognise(function, kernel_size):
        taps = sympy.symbols(f"t0:{kernel_size[0] * kernel_size[1]}", real=True)
        value = sympy.sympify(function(list(taps)))
        if value == Max(*taps):
            return 'max'
        if sympy.simplify(value - sympy.Add(*taps) / len(taps)) == 0:
            return 'avg'
        return None

    def _forward_equations(self, training):
        if self.reduction is not None:
            return super()._forward_equations(training)
        n, c, y, x = self.out_dims
        (sy, sx), (py, px) = self.stride, self.padding
        r, q = self.kernel_size
        window = [self.input[n, c, y * sy + i - py, x * sx + j - px]
                  for i in range(r) for j in range(q)]
        return [Eq(self.result[n, c, y, x], self.function(window))]


class GlobalAvgPooling(AvgPooling):
    """Average over each whole feature map, as ``torch.nn.AdaptiveAvgPool2d(1)``.

    The window is the input's rows x columns, known once the input size is; the
    adjoint (every position gets ``dy / (H W)``) is derived.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, 1, 1)``.

    Examples
    --------
    >>> GlobalAvgPooling(input_size=(2, 8, 7, 5)).output_size
    (2, 8, 1, 1)
    """

    family = 'avgpool'

    def __init__(self, input_size=None, name=None, dtype=None, generate_code=False):
        self.name = name or self.family
        self.kernel_size = self.stride = None
        self.padding = (0, 0)
        Layer.__init__(self, input_size, name, dtype, generate_code)

    def _check_input_size(self, input_size):
        size = super()._check_input_size(input_size)
        self.kernel_size = self.stride = tuple(size[2:])
        return size

    def _create_functions(self):
        # no stuffed gradient: every input position has one window; a channels-last
        # input is summed into each sample's sums, vectorised over the channels
        n, c = self.input_size[:2]
        self.sample_sums = self.tensor('sum_samples', self.out_dims[:2], (n, c),
                                       dtype=np.float64) \
            if self.inputs_channels_last[0] else None

    def _forward_equations(self, training):
        n, c = self.out_dims[:2]
        _, _, h, w = self.input_gradient_dims
        area = self.kernel_size[0] * self.kernel_size[1]
        if self.sample_sums is not None:
            return sample_sums(self.sample_sums, self.input[n, c, h, w], (n, h, w), c) \
                + [Eq(self.result[n, c, 0, 0], self.sample_sums[n, c] / area)]
        return register_sum(f"{self.name}_sum_x", self.result[n, c, 0, 0],
                            self.input[n, c, h, w], (n, c), (h, w),
                            finish=lambda total: total / area)


class AdaptivePooling(Pooling):
    """Base of adaptive pooling: ``output_size`` windows whatever the input size,
    output ``i`` over inputs ``floor(i * in / out)`` to ``ceil((i + 1) * in / out)``
    (excluded), as ``torch.nn.AdaptiveAvgPool2d`` / ``AdaptiveMaxPool2d``: windows
    may differ in size, overlap, or repeat inputs (more outputs than inputs).

    Windows that are all one kernel at one stride run as such (7x7 from 14x14:
    2x2, stride 2); others read index tables (``window_tables.py``).
    """

    def __init__(self, output_size, input_size=None, name=None, dtype=None,
                 generate_code=False):
        self.name = name or self.family
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) \
            else (output_size, output_size)
        if len(sizes) != 2 or not all(
                s is None or (isinstance(s, numbers.Integral) and s >= 1) for s in sizes):
            raise LayerArgumentError(
                f"{type(self).__name__} `{self.name}`: `output_size` must be a positive "
                f"int or a pair of them (None keeps the input's extent), got "
                f"{output_size!r}")
        self.target_size = tuple(None if s is None else int(s) for s in sizes)
        self.kernel_size = self.stride = (1, 1)
        self.padding = (0, 0)
        Layer.__init__(self, input_size, name, dtype, generate_code)

    def _check_input_size(self, input_size):
        size = super()._check_input_size(input_size)
        rows, columns = self._windows(size)
        if rows.regular and columns.regular:
            (kh, sh), (kw, sw) = rows.regular, columns.regular
            self.kernel_size, self.stride = (kh, kw), (sh, sw)
        return size

    def _windows(self, input_size):
        _, _, h, w = input_size
        return tuple(adaptive_windows(size, size if out is None else out)
                     for size, out in zip((h, w), self.target_size))

    def axis_windows(self):
        return self._windows(self.input_size)

    @property
    def tabled(self):
        return any(axis.regular is None for axis in self.axis_windows())


class AdaptiveAvgPooling(AdaptivePooling):
    """Average pooling to ``output_size``, as ``torch.nn.AdaptiveAvgPool2d``.

    Parameters
    ----------
    output_size : int or pair of int
        Rows and columns of the output (None in a pair keeps the input's).
    input_size : tuple of int, optional
        ``(batch, channels, rows, cols)``; inferred inside a net.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, OH, OW)``.

    Examples
    --------
    >>> AdaptiveAvgPooling(7, input_size=(1, 2, 3, 3)).output_size
    (1, 2, 7, 7)
    >>> AdaptiveAvgPooling((2, None), input_size=(1, 2, 5, 4)).output_size
    (1, 2, 2, 4)
    """

    family = 'avgpool'
    reduction = 'avg'


class AdaptiveMaxPooling(AdaptivePooling):
    """Max pooling to ``output_size``, as ``torch.nn.AdaptiveMaxPool2d`` (the
    gradient goes to each window's first maximum).

    Parameters are those of :class:`AdaptiveAvgPooling`.

    Examples
    --------
    >>> AdaptiveMaxPooling((3, 2), input_size=(1, 2, 8, 5)).output_size
    (1, 2, 3, 2)
    """

    family = 'pool'
    reduction = 'max'
