"""Winograd's minimal filtering: a 3x3, stride-1 correlation as ``F(m x m, 3 x 3)``.

Each ``m x m`` block of outputs is computed from the ``(m + 2) x (m + 2)`` block of
the padded input that it reads (Lavin and Gray, *Fast Algorithms for Convolutional
Neural Networks*, 2016):

    Y = A^T [ sum over c of (G g_c G^T) . (B^T d_c B) ] A

The sum over input channels is, at each of the ``(m + 2)**2`` transformed positions,
one matrix product over the blocks of the batch: ``(m + 2)**2`` multiply-adds per
channel make ``m**2`` outputs, where the direct correlation spends ``9 m**2`` (F(2x2):
16 against 36, F(4x4): 36 against 144). The transforms are passes before and after
the products, each two sums over a table of its matrix
(:func:`two_sided_transform`).

The maths is the correlation's (``correlation.py``); this is a schedule of it that
changes only the rounding: float32 outputs differ from the direct sums by about
``2e-7`` (F(2x2)) and ``5e-6`` (F(4x4)) of their largest magnitude, float64 ones by
``1e-15``.
"""

import numpy as np
import sympy
from devito import Eq
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.layers.conv_tiles import (flat_tensor, literal_extent, spread_stride,
                                         unaliased_stride)
from devito_ml.lanes import UnrolledDimension
from devito_ml.layers.matmul_tiles import TiledMatmul
from devito_ml.layers.weight_layouts import lane_blocked_copy
from devito_ml.batch import batch_loop
from devito_ml.symbolics import Select, tensor

__all__ = ['WinogradCorrelation', 'winograd_block', 'transform_table',
           'two_sided_transform', 'TRANSFORMS']

_R = sympy.Rational
TRANSFORMS = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [_R(1, 2), _R(1, 2), _R(1, 2)], [_R(1, 2), -_R(1, 2), _R(1, 2)],
         [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[_R(1, 4), 0, 0], [-_R(1, 6), -_R(1, 6), -_R(1, 6)],
         [-_R(1, 6), _R(1, 6), -_R(1, 6)], [_R(1, 24), _R(1, 12), _R(1, 6)],
         [_R(1, 24), -_R(1, 12), _R(1, 6)], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}
"""``{m: (B^T, G, A^T)}`` of ``F(m x m, 3 x 3)``, exact: interpolation points 0, -1,
1 (and -2, 2 for m = 4) and infinity."""

MIN_CHANNELS = 32
"""Fewest input and output channels worth the transforms."""
MIN_SIZE = 4
"""Fewest output rows and columns worth the transforms. On 4x4 maps (batch 32,
AMD EPYC Zen 4, 8 lanes) F(4x4), a block a map, took 11.7-13.0 ms and 19.4-19.9
ms for a 512-channel convolution's forward and backward passes, F(2x2) 12.8 and
20.1, the direct sums 13.9 and 29.4 (128 channels: 0.7 + 1.0, 0.8 + 1.5, 0.9 +
3.1), once the kernels' copies walked lanes of outputs at a time
(``weight_layouts.py``) and the products kept an operand in L2
(:func:`~devito_ml.layers.matmul_tiles.sum_blocking`); before those, F(2x2) was
as slow as the direct sums."""


def winograd_block(kernel, stride, dilation, groups, out_size, channels, outputs):
    """The ``m`` of the ``F(m x m, 3 x 3)`` that schedules a correlation, or None.

    Eligible: a 3x3 kernel at stride 1, no dilation, one group, at least
    ``MIN_CHANNELS`` input and output channels, at least ``MIN_SIZE`` output rows
    and columns, in whole blocks of ``m``: F(4x4) where they divide by 4, else
    F(2x2) where by 2.
    """
    if tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or \
            tuple(dilation) != (1, 1) or groups != 1 or \
            min(channels, outputs) < MIN_CHANNELS:
        return None
    if min(out_size) < MIN_SIZE:
        return None
    for m in (4, 2):
        if all(size % m == 0 for size in out_size):
            return m
    return None


def transform_table(name, matrix, dtype):
    """A transform's matrix as a Function of its own (``two_sided_transform``
    reads its entries), made with its layer: a unit's record finds every Function
    its equations read among its layers' (``unit_records.py``)."""
    rows, columns = len(matrix), len(matrix[0])
    table = tensor(name, (literal_extent(f"{name}_row", rows),
                          literal_extent(f"{name}_column", columns)),
                   (rows, columns), dtype)
    table.data[:] = np.array([[float(v) for v in row] for row in matrix])
    return table


def two_sided_transform(name, table, read, store, loops):
    """``T @ values @ T.T`` of a block, ``T`` the ``table``
    (:func:`transform_table`) and ``values[i][j] = read(i, j)``, each entry stored
    by ``store(row, column, value)`` (an Eq; ``row`` and ``column`` loop Dimensions
    ``<name>_a`` and ``<name>_b``), inside ``loops`` (the innermost vectorised).

    In a loop over the rows ``a`` around the innermost, a row of the left product
    in Scalars, ``rows[j] = sum over i of T[a, i] * values[i][j]``; then, inside
    the innermost loop, each entry of that row, ``sum over j of T[b, j] *
    rows[j]``, in a loop over ``b`` that gcc unrolls
    (:class:`~devito_ml.lanes.UnrolledDimension`): ``p (q^2 + p q)``
    multiply-adds for ``p x p`` entries from ``q x q`` values, in ``q + 1``
    equations.

    Measured on AMD EPYC Zen 4 (8 lanes), a 64-channel convolution's input
    transform on 32x32 maps, batch 32: one equation, each entry's rows
    recomputed (``p^2 (q^2 + q)``), 4.0 ms; an equation an entry (the rows in
    Scalars too, 72 equations) ~2x faster but twice what Devito lowered and gcc
    compiled (a 64-channel convolution's kernels built in 15.6 s, 8.8 s with
    one equation). The entries of a row stored by ``p`` equations (constant
    columns) were writes Devito could not tell apart: it ran the samples' loop
    serially and the block columns' in parallel, one fork and join a block row
    (2-4x slower in a ResNet-18 step).
    """
    *outer, inner = loops
    points, size = table.shape
    a = literal_extent(f"{name}_a", points)
    b = UnrolledDimension.of(f"{name}_b", points)
    order = IgnoreDimSort((*outer, a, inner))
    rows = [Scalar(name=f"{name}_row{j}", dtype=table.dtype) for j in range(size)]
    eqs = [Eq(row, sum(table[a, i] * read(i, j) for i in range(size)),
              implicit_dims=order) for j, row in enumerate(rows)]
    value = sum(table[b, j] * row for j, row in enumerate(rows))
    eqs.append(store(a, b, value)._rebuild(
        implicit_dims=IgnoreDimSort((*outer, a, inner, b))))
    return eqs


class WinogradCorrelation:
    """``target[n, y, x, k] = sum over (c, i, j) of source[n, y + i, x + j, c]
    * W[k, c, i, j]`` on ``m x m`` output blocks, its tensors and loop nests.

    Parameters
    ----------
    name : str
        Prefix of its tensors and loops (``conv1_wino``).
    dtype : numpy dtype
    batch : int
        Largest batch.
    channels, outputs : int
        Reduced channels ``c`` and computed channels ``k``.
    out_size : pair of int
        Output rows and columns, whole blocks of ``block``.
    block : int
        ``m``, a key of :data:`TRANSFORMS`.

    Notes
    -----
    Three nests and the products between them:

    - :meth:`weight_equations`: ``U = G g G^T`` for every (output, input) pair of
      channels, into the products' ``b`` (its lanes run over outputs);
    - :meth:`input_equations`: ``V = B^T d B`` for every block of every sample
      and channel, a plane a transformed position, blocks of the batch front to
      back and channels innermost;
    - ``products.equations()``: at each transformed position, ``M = V U`` over
      the channels (:class:`~devito_ml.layers.matmul_tiles.TiledMatmul`, one group
      a position);
    - :meth:`output_equations`: ``Y = A^T M A``, handed to the caller to store.

    The products run over every block of the largest batch (a partial batch's
    transform leaves stale rows, whose products nobody reads).
    """

    def __init__(self, name, dtype, batch, channels, outputs, out_size, block):
        self.name, self.dtype, self.block = name, np.dtype(dtype), block
        self.channels, self.outputs, self.batch = channels, outputs, batch
        input_transform, kernel_transform, output_transform = TRANSFORMS[block]
        self.points = points = block + 2
        rows, columns = out_size
        self.out_size = tuple(out_size)
        self.block_rows, self.block_columns = rows // block, columns // block
        self.positions = batch * self.block_rows * self.block_columns
        groups = points ** 2
        # the transformed input, a row of channels a block and a flat plane a
        # transformed position; the position its own index (one flat index hid
        # from Devito that the 36 positions' writes are disjoint: 36 nests, each
        # serial over the batch); planes an odd number of cache lines apart
        # (the input transform writes all 36 side by side)
        self.input_loops = self._block_loops('V')
        self.pixel = pixel = unaliased_stride(channels, dtype)
        plane = spread_stride(self.positions * pixel, dtype)
        self.transformed = tensor(
            f"{name}_V", (literal_extent(f"{name}_V_xi", groups),
                          literal_extent(f"{name}_V_entry", plane)),
            (groups, plane), dtype)
        self.products = TiledMatmul(
            f"{name}_gemm", dtype, self.positions, channels, outputs,
            a_at=lambda row, channel: self.transformed_at(self.products.group, row,
                                                          channel),
            groups=groups)
        self.kernel_copy = flat_tensor(f"{name}_Wt", f"{name}_Wti",
                                       channels * 9 * self.products.padded_columns,
                                       dtype)
        # the kernel's and the output's transforms as tables, read by one nest each
        self.kernel_table = transform_table(f"{name}_G", kernel_transform, dtype)
        self.output_table = transform_table(f"{name}_AT", output_transform, dtype)
        self.input_table = transform_table(f"{name}_BT", input_transform, dtype)

    def _block_loops(self, role):
        """(sample, block row, block column) loops of a transform; the sample's a
        :class:`~devito_ml.batch.BatchLoop`, bounded by the active batch."""
        name = f"{self.name}_{role}"
        return (batch_loop(f"{name}_n", self.batch),
                literal_extent(f"{name}_by", self.block_rows),
                literal_extent(f"{name}_bx", self.block_columns))

    def block_number(self, n, block_row, block_column):
        """The number of a block (a row of the products): the batch's blocks
        front to back."""
        return (n * self.block_rows + block_row) * self.block_columns + block_column

    def transformed_at(self, position, row, channel):
        """The transformed input at ``position`` of block number ``row`` (kept
        for the weight gradient, ``winograd_weights.py``)."""
        return self.transformed[position, row * self.pixel + channel]

    def weight_equations(self, read, outputs_outermost=True):
        """``U = G g G^T`` from ``read(output, input channel, row, column)`` of the
        kernel, into the products' ``b``; outputs past ``outputs`` (the products'
        padding) get zeros.

        Two nests: the kernel copied with its outputs innermost, then the
        transform over (channel, position row, position column, output),
        vectorised over outputs, a channel's copied kernel in cache while its 36
        (or 16) positions read it (read in place, outputs innermost was a
        strided gather a position: 512 channels took 26 ms). Where the outputs
        are the kernel's outermost index (``outputs_outermost``: the forward
        pass), the copy walks a block of lanes of them at a time
        (``weight_layouts.py``; each tap's outputs gathered took 2.9 ms for
        512->512 channels, 1.5 so; scattering the kernel's own order 7.5 ms for
        256->512); else (the input gradient's, each output a few taps from the
        next) each tap's outputs are read in the order of memory (1.0 ms, 2.3
        a block of lanes at a time).
        """
        products, g, points = self.products, self.kernel_table, self.points
        name = self.name

        def value(output, channel, i, j):
            value = read(sympy.Min(output, self.outputs - 1), channel, i, j)
            if products.padded_columns > self.outputs:
                value = Select(output < self.outputs, value, 0)
            return value

        # the copy loops on Dimensions of its own: one Dimension in two orders
        # makes Devito's loop order cyclic
        taps = (literal_extent(f"{name}_Wt_c", self.channels),
                literal_extent(f"{name}_Wt_i", 3), literal_extent(f"{name}_Wt_j", 3))
        if outputs_outermost:
            copy = lane_blocked_copy(
                f"{name}_Wt", lambda output, *tap: self._kernel_at(*tap, output),
                value, products.padded_columns, taps, products.lanes)
        else:
            output = literal_extent(f"{name}_Wt_k", products.padded_columns)
            copy = Eq(self._kernel_at(*taps, output), value(output, *taps),
                      implicit_dims=IgnoreDimSort((*taps, output)))
        channel = literal_extent(f"{name}_U_c", self.channels)
        output = literal_extent(f"{name}_U_k", products.padded_columns)
        return [copy] + two_sided_transform(
            f"{name}_U", g,
            lambda r, q: self._kernel_at(channel, r, q, output),
            lambda a, b, value: Eq(products.b_at(channel, output, a * points + b),
                                   value),
            (channel, output))

    def _kernel_at(self, channel, row, column, output):
        """The kernel copied for its transform: each channel's taps, outputs
        innermost."""
        return self.kernel_copy[((channel * 3 + row) * 3 + column)
                                * self.products.padded_columns + output]

    def input_equations(self, read):
        """``V = B^T d B`` of every block, ``d`` from ``read(sample, row, column,
        channel)`` of the padded source (row 0 its first padded row), in one nest
        over the blocks, channels innermost (:func:`two_sided_transform`)."""
        n, by, bx = self.input_loops
        channel = literal_extent(f"{self.name}_V_c", self.channels)
        m, points = self.block, self.points
        block = self.block_number(n, by, bx)
        return two_sided_transform(
            f"{self.name}_V", self.input_table,
            lambda i, j: read(n, by * m + i, bx * m + j, channel),
            lambda a, b, value: Eq(self.transformed_at(a * points + b, block, channel),
                                   value),
            (n, by, bx, channel))

    def output_equations(self, store):
        """``Y = A^T M A`` of every output, stored by ``store(sample, output
        channel, row, column, value, loops)`` (an Eq; ``loops`` the nest's
        Dimensions in their order): one nest over the blocks, outputs innermost
        (:func:`two_sided_transform`; a block's products stay in L1 while its
        rows read them)."""
        n, by, bx = self._block_loops('Y')
        output = literal_extent(f"{self.name}_Y_k", self.outputs)
        m, points, at = self.block, self.points, self.output_table
        position = self.block_number(n, by, bx)
        loops = (n, by, bx, output)
        return two_sided_transform(
            f"{self.name}_Y", at,
            lambda a, b: self.products.target_at(position, output, a * points + b),
            lambda p, q, value: store(n, output, by * m + p, bx * m + q, value, loops),
            loops)

    def equations(self, read_kernel, read_source, store, outputs_outermost=True):
        """Every nest, in order: the weights', the input's, the products, the
        output's (see :meth:`weight_equations` and the others)."""
        return self.weight_equations(read_kernel, outputs_outermost) + \
            self.input_equations(read_source) + self.products.equations() + \
            self.output_equations(store)
