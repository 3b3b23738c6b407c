"""Pooling over windows of any geometry, read through index tables.

Regular windows (one kernel, one stride, padding within half the kernel) are
loops with affine indices (``pooling.py``). PyTorch also pools over windows that
no such loop describes: adaptive pooling (start ``floor(i * in / out)``, end
``ceil((i + 1) * in / out)``: sizes vary, windows overlap), ``ceil_mode`` (a last
window cut by the input's end), dilated max pooling and average pooling that does
not count the padding. All are separable: a window is the product of a row window
and a column window, and its divisor the product of theirs. Per axis,
:class:`AxisWindows` lists each output's input positions; :class:`WindowTables`
stores them as integer tables and writes the equations:

.. math::

    \\text{avg:}\\quad y_{ncij} &= \\sum_{u,v} a_{iu} b_{jv}\\, x_{n,c,R_{iu},C_{jv}},
    \\qquad \\partial x_{nchw} = \\sum_{s,t} \\bar{a}_{hs} \\bar{b}_{wt}\\,
        g_{n,c,\\bar{R}_{hs},\\bar{C}_{wt}}\\\\
    \\text{max:}\\quad y_{ncij} &= \\max_{u,v} x_{n,c,R_{iu},C_{jv}},\\qquad
    \\partial x_{nchw} = \\sum_{s,t} \\bar{a}_{hs} \\bar{b}_{wt}\\,
        g_{n,c,\\bar{R}_{hs},\\bar{C}_{wt}}\\,
        [p_{n,c,\\bar{R}_{hs},\\bar{C}_{wt}} = hW + w]

where :math:`R_{iu}` is the ``u``-th input row of output row ``i`` (the window's
first row again past its end: a repeated tap changes neither a maximum nor,
weighted by :math:`a_{iu} = 0`, a mean), :math:`a_{iu}` its weight (one over the
row divisor), :math:`\\bar{R}_{hs}` the ``s``-th output row whose window holds
input row ``h`` with weight :math:`\\bar{a}_{hs}` (0 past the last, 1 for max), and
:math:`p` the flat input position of the first maximum, in row-major order as
PyTorch routes ties. Both adjoints are gathers: no two threads write one value.
"""

import functools
from dataclasses import dataclass

import numpy as np
import sympy
from devito import Eq
from sympy import Max, Min

from devito_ml.symbolics import CondEq, CondNe, Select, register_sum
from devito_ml.validation import ShapeError

__all__ = ['AxisWindows', 'adaptive_windows', 'sliding_windows', 'WindowTables']


@dataclass(frozen=True)
class AxisWindows:
    """The windows of one axis.

    Attributes
    ----------
    size : int
        Input extent.
    taps : tuple of tuple of int
        Each output's input positions, increasing (at least one each).
    divisors : tuple of int
        Each output's divisor along this axis for a mean.
    """

    size: int
    taps: tuple
    divisors: tuple

    @property
    def outputs(self):
        return len(self.taps)

    @property
    def widest(self):
        """Most taps of one window."""
        return max(len(t) for t in self.taps)

    @property
    def regular(self):
        """``(kernel, stride)`` when every window is ``kernel`` consecutive inputs
        starting ``stride`` apart from 0, divided by ``kernel``; else None."""
        kernel = len(self.taps[0])
        stride = self.taps[1][0] - self.taps[0][0] if self.outputs > 1 else kernel
        if stride < 1:
            return None
        for i, taps in enumerate(self.taps):
            if taps != tuple(range(i * stride, i * stride + kernel)) or \
                    self.divisors[i] != kernel:
                return None
        return kernel, stride

    def covers(self):
        """Per input position, the outputs whose windows hold it."""
        found = [[] for _ in range(self.size)]
        for output, taps in enumerate(self.taps):
            for position in taps:
                found[position].append(output)
        return found


@functools.lru_cache(maxsize=None)
def adaptive_windows(size, outputs):
    """PyTorch's adaptive pooling windows: output ``i`` averages or maximises inputs
    ``floor(i * size / outputs)`` to ``ceil((i + 1) * size / outputs)`` (excluded)."""
    taps = tuple(tuple(range(i * size // outputs, -(-(i + 1) * size // outputs)))
                 for i in range(outputs))
    return AxisWindows(size, taps, tuple(len(t) for t in taps))


@functools.lru_cache(maxsize=None)
def sliding_windows(size, kernel, stride, padding, dilation=1, ceil_mode=False,
                    count_include_pad=True):
    """The windows of ``torch.nn.MaxPool2d`` / ``AvgPool2d`` along one axis.

    Output extent ``floor`` (or with ``ceil_mode`` ``ceil``) of
    ``(size + 2 padding - dilation (kernel - 1) - 1) / stride``, plus one; with
    ``ceil_mode`` a last window that would start in the right padding is dropped.
    The divisor of a mean counts the padding inside ``size + padding`` when
    ``count_include_pad``, else only the inputs.
    """
    reach = size + 2 * padding - dilation * (kernel - 1) - 1
    if reach < 0:
        return None
    outputs = (-(-reach // stride) if ceil_mode else reach // stride) + 1
    if ceil_mode and (outputs - 1) * stride >= size + padding:
        outputs -= 1
    taps, divisors = [], []
    for i in range(outputs):
        start = i * stride - padding
        inside = tuple(p for p in range(start, start + dilation * kernel, dilation)
                       if 0 <= p < size)
        taps.append(inside)
        divisors.append(min(start + kernel, size + padding) - start
                        if count_include_pad else len(inside))
    return AxisWindows(size, tuple(taps), tuple(divisors))


class WindowTables:
    """Integer tables of two axes' windows and the pooling equations over them.

    Parameters
    ----------
    layer : Layer
        The pooling layer: its ``input``, ``result``, gradients and Dimensions.
    rows, columns : AxisWindows
    reduction : {'max', 'avg'}
    """

    def __init__(self, layer, rows, columns, reduction):
        for axis, windows in (('rows', rows), ('columns', columns)):
            if any(not taps for taps in windows.taps):
                raise ShapeError(f"{type(layer).__name__} `{layer.name}`: a window "
                                 f"along the {axis} holds no input")
        self.layer, self.reduction = layer, reduction
        self.rows, self.columns = rows, columns
        _, _, oy, ox = layer.out_dims
        _, _, h, w = layer.input_gradient_dims
        self.ky, self.kx = layer.dim('ky', rows.widest), layer.dim('kx', columns.widest)
        self.forward = [self._taps_table(axis, windows, out, tap)
                        for axis, windows, out, tap in (('h', rows, oy, self.ky),
                                                        ('w', columns, ox, self.kx))]
        covers = [windows.covers() for windows in (rows, columns)]
        most = [max(1, max(map(len, found))) for found in covers]
        # loops over the outputs whose windows hold an input row / column
        self.holder_row = layer.dim('cover_h', most[0])
        self.holder_column = layer.dim('cover_w', most[1])
        self.backward = [self._covers_table(axis, windows, found, din, cover, extent)
                         for axis, windows, found, din, cover, extent in (
                             ('h', rows, covers[0], h, self.holder_row, most[0]),
                             ('w', columns, covers[1], w, self.holder_column, most[1]))]

    def _taps_table(self, axis, windows, out, tap):
        """``(positions[out, tap], weights[out, tap])``: each window's inputs, its
        first again past its end, with one over the divisor (0 past the end)."""
        layer, extent = self.layer, (windows.outputs, windows.widest)
        positions = layer.tensor(f'taps_{axis}', (out, tap), extent, dtype=np.int32)
        weights = layer.tensor(f'taps_{axis}_weight', (out, tap), extent)
        for i, taps in enumerate(windows.taps):
            padded = list(taps) + [taps[0]] * (windows.widest - len(taps))
            positions.data[i] = padded
            weights.data[i] = [1 / windows.divisors[i] if u < len(taps) else 0
                               for u in range(windows.widest)]
        return positions, weights

    def _covers_table(self, axis, windows, found, din, cover, most):
        """``(outputs[in, s], weights[in, s])``: the outputs whose windows hold each
        input, with the input's weight there (1 for max; 0 past the last)."""
        layer = self.layer
        extent = (windows.size, most)
        outputs = layer.tensor(f'covers_{axis}', (din, cover), extent, dtype=np.int32)
        weights = layer.tensor(f'covers_{axis}_weight', (din, cover), extent)
        for position, holders in enumerate(found):
            for s in range(extent[1]):
                if s < len(holders):
                    outputs.data[position, s] = holders[s]
                    weights.data[position, s] = 1 if self.reduction == 'max' else \
                        1 / windows.divisors[holders[s]]
                else:
                    outputs.data[position, s] = holders[0] if holders else 0
                    weights.data[position, s] = 0
        return outputs, weights

    def _tap(self):
        n, c, oy, ox = self.layer.out_dims
        (rows, _), (columns, _) = self.forward
        return rows[oy, self.ky], columns[ox, self.kx]

    def forward_equations(self):
        """The window reduction into the layer's result (and, for max, the flat
        input position of each window's first maximum into ``layer.argmax``)."""
        layer = self.layer
        n, c, oy, ox = layer.out_dims
        row, column = self._tap()
        value = layer.input[n, c, row, column]
        out = layer.result[n, c, oy, ox]
        if self.reduction == 'avg':
            (_, a), (_, b) = self.forward
            return register_sum(f"{layer.name}_sum", out,
                                a[oy, self.ky] * b[ox, self.kx] * value,
                                (n, c, oy, ox), (self.ky, self.kx), dtype=layer.dtype)
        return [Eq(out, -sympy.oo),
                Eq(out, Select(CondNe(out, out), out,
                               Select(CondNe(value, value), value, Max(out, value))))]

    def first_maximum_equations(self):
        """``argmax = `` the flat input position (``h * W + w``) of each window's
        first maximum, a NaN first of all (after :meth:`forward_equations`)."""
        layer = self.layer
        n, c, oy, ox = layer.out_dims
        row, column = self._tap()
        value = layer.input[n, c, row, column]
        out = layer.result[n, c, oy, ox]
        arg = layer.argmax[n, c, oy, ox]
        past = self.rows.size * self.columns.size
        position = row * self.columns.size + column
        first = Select(CondNe(value, value), position,
                       Select(CondEq(value, out), position, past))
        return [Eq(arg, past), Eq(arg, Min(arg, first))]

    def backward_equations(self):
        """The input gradient, gathered from the outputs whose windows hold each
        input (for max, after the first maxima: :meth:`first_maximum_equations`)."""
        layer = self.layer
        eqs = self.first_maximum_equations() if self.reduction == 'max' else []
        n, c, h, w = layer.input_gradient_dims
        (rows, a), (columns, b) = self.backward
        held = (rows[h, self.holder_row], columns[w, self.holder_column])
        gradient = layer.result_gradients[n, c, held[0], held[1]]
        if self.reduction == 'max':
            routed = layer.argmax[n, c, held[0], held[1]]
            gradient = Select(CondEq(routed, h * self.columns.size + w), gradient, 0)
        return eqs + register_sum(
            f"{layer.name}_din_sum", layer.input_gradients[n, c, h, w],
            a[h, self.holder_row] * b[w, self.holder_column] * gradient, (n, c, h, w),
            (self.holder_row, self.holder_column),
            dtype=layer.dtype)
