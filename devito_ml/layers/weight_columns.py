"""A convolution's weight gradient as one matrix product a tap, over the whole batch.

``dW[t, c, k] = sum over p of columns[t, p, c] * grad[p, k]`` where ``p`` runs over
every (sample, row, column) of the output and ``columns[t, p, c]`` is the source that
tap ``t`` reads there (im2col, one copy a tap). The schedule of wide layers on small
images, where :class:`~devito_ml.layers.conv_tiles.TiledWeightGradient`'s partial
sums (one a sample) outgrow memory: ResNet-50's 3x3 and 1x1 convolutions of 256 to
2048 channels on 4x4 to 16x16 maps, which before this ran as a memory-accumulated
``Inc`` 10-20x slower than their forward pass; and wherever the columns and the
packed gradient take fewer entries than those partial sums (the choice of
:class:`~devito_ml.layers.conv.Conv`: a 1x1 1024->256 layer on 8x8 maps, 12.2 ->
6.9 ms).

Both operands are packed by tile, so that a tile reads two contiguous streams:
``columns`` by blocks of ``tile_channels`` channels, ``grad`` by blocks of
``tile_blocks`` vector registers of output channels (the channels padded with
zeros to whole tiles). A tile of ``tile_channels x
tile_blocks`` accumulators runs the reduction over ``p`` inside its lane loop (as
:mod:`devito_ml.layers.conv_tiles`' tiles do) and stores its entries of ``dW``:
no partial sums, no atomics; the tiles of distinct channels run in parallel.
The reduction runs over the largest batch: copies past the active batch are
zeros.
"""

import numpy as np
from devito import Eq, Max, Min
from devito.symbolics import DefFunction
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.lanes import LaneDimension
from devito_ml.layers.conv_tiles import FMA_CHAINS, flat_tensor, literal_extent
from devito_ml.symbolics import Select, tensor
from devito_ml.vector_width import vector_lanes, vector_registers

__all__ = ['ColumnWeightGradient', 'column_tile_shape']


def column_tile_shape(channels, blocks, registers=None):
    """``(tile channels, tile blocks)`` for ``channels`` and ``blocks`` lane blocks
    of output channels, with ``registers`` vector registers (default:
    :func:`vector_registers`); None if no tile of two or more accumulators fits.

    The tile blocks divide ``blocks`` (the output channels are never padded); the
    channels are padded up to whole tiles (zeros). Among the tiles whose
    accumulators, one vector a block and one broadcast fit the registers, the one
    with the fewest cycles: padded work times what limits a tile (its
    multiply-adds, its loads, or the latency under ``FMA_CHAINS`` accumulators);
    ties go to fewer loads a multiply-add. Measured on AMD EPYC Zen 4, 8 lanes,
    ResNet-18 width 64 (256 and 512 channels on 8x8 and 4x4 maps, batch 32): the
    tiles of 8 accumulators that divide 256 and 512 ran at 148-166 GFLOP/s where
    the forward tiles ran at 180-188; 6x2 on channels padded to 258 and 516
    (0.8% more work) at 200-213 (a 2.4 GFLOP pass 14.6-16.3 -> 11.3-11.9 ms; the
    step's column passes 124 -> 95 ms).
    """
    registers = registers or vector_registers()

    def cycles(shape):
        a, b = shape
        work = -(-channels // a) * a * blocks
        return work * max(a * b, a + b, FMA_CHAINS) / (a * b), (a + b) / (a * b)

    shapes = [(a, b) for a in range(1, channels + 1)
              for b in range(1, blocks + 1) if blocks % b == 0
              and a * b + b + 1 <= registers and a * b >= 2]
    return min(shapes, key=cycles) if shapes else None


class ColumnWeightGradient:
    """The weight gradient of a :class:`~devito_ml.layers.conv_tiles.TiledCorrelation`
    as one register-tiled matrix product a tap, reduced over the whole batch.

    Parameters
    ----------
    name : str
        Prefix of its tensors and loops (``conv1_dWcol``).
    correlation : TiledCorrelation
        The forward pass: its source (padded input, channels last) and stride.
    batch_dim : Dimension
        The net's batch; its bound at run time is the active batch.
    batch, outputs : int
        Largest batch; output channels ``k``.
    out_size, kernel, dilation : pair of int
        Rows and columns of the output; the kernel; its dilation.
    shape : pair of int
        ``(tile channels, tile blocks)`` (:func:`column_tile_shape`).
    """

    def __init__(self, name, correlation, batch_dim, batch, outputs, out_size, kernel,
                 dilation, shape):
        self.name, self.correlation = name, correlation
        self.dtype = correlation.dtype
        self.lanes = correlation.lanes
        self.channels, self.outputs = correlation.channels, outputs
        self.tile_channels, self.tile_blocks = shape
        # whole channel tiles: the columns past `channels` are zeros
        self.padded_channels = -(-self.channels // self.tile_channels) \
            * self.tile_channels
        self.block_width = self.tile_blocks * self.lanes     # outputs of a tile
        self.batch_dim, self.batch = batch_dim, batch
        self.rows, self.columns = out_size
        self.kernel, self.dilation = tuple(kernel), tuple(dilation)
        self.taps = self.kernel[0] * self.kernel[1]
        self.positions = batch * self.rows * self.columns
        self.packed_columns = flat_tensor(
            f"{name}_cols", f"{name}_colsi",
            self.taps * self.positions * self.padded_channels, self.dtype)
        self.packed_gradient = flat_tensor(f"{name}_grad", f"{name}_gradi",
                                           self.positions * outputs, self.dtype)
        # on the tile and tap loops themselves, so that Devito proves them parallel
        # (flat, it found only the tap loop parallel: none for a 1x1 kernel)
        tiles = self.padded_channels // self.tile_channels
        self.tile = literal_extent(f"{name}_c_tile", tiles)
        self.tap = literal_extent(f"{name}_tap", self.taps)
        entries = literal_extent(f"{name}_ck", self.tile_channels * outputs)
        self.result = tensor(f"{name}_dW", (self.tile, self.tap, entries),
                             (tiles, self.taps, self.tile_channels * outputs),
                             self.dtype)

    @staticmethod
    def fits(batch, taps, channels, out_size, dtype, max_bytes):
        """Whether the tap columns for these sizes fit in ``max_bytes``."""
        size = batch * taps * channels * out_size[0] * out_size[1]
        return size * np.dtype(dtype).itemsize <= max_bytes

    @staticmethod
    def shape_for(channels, outputs, dtype, width=None):
        """The tile shape for these channels at ``width`` float32 lanes (default:
        the width scheduled for), or None where none fits (the output channels
        must fill whole vector registers)."""
        lanes = vector_lanes(dtype, width)
        if outputs % lanes:
            return None
        return column_tile_shape(channels, outputs // lanes, vector_registers(width))

    def _position(self, n, row, column):
        return (n * self.rows + row) * self.columns + column

    def _in_batch(self, n):
        """1 for a sample of the active batch, else 0."""
        return Min(Max(self.batch_dim.symbolic_max + 1 - n, 0), 1)

    def _loops(self, role):
        name = f"{self.name}_{role}"
        return (literal_extent(f"{name}_sample", self.batch),
                literal_extent(f"{name}_h", self.rows),
                literal_extent(f"{name}_w", self.columns))

    def copies(self, gradient):
        """Pack the columns of every tap and the output gradient.

        ``gradient(n, k, row, column)`` is the output gradient's entry.
        """
        a, width = self.tile_channels, self.block_width
        sy, sx = self.correlation.stride
        dy, dx = self.dilation
        n, y, x = self._loops('col')
        ky = literal_extent(f"{self.name}_col_ky", self.kernel[0])
        kx = literal_extent(f"{self.name}_col_kx", self.kernel[1])
        tiles = self.padded_channels // a
        tile = literal_extent(f"{self.name}_col_c_tile", tiles)
        entry = literal_extent(f"{self.name}_col_c", a)
        tap = ky * self.kernel[1] + kx
        p = self._position(n, y, x)
        column = self.packed_columns[
            ((tap * tiles + tile) * self.positions + p) * a + entry]
        channel = tile * a + entry
        read = self.correlation.source_at(n, y * sy + ky * dy, x * sx + kx * dx,
                                          Min(channel, self.channels - 1))
        if self.padded_channels > self.channels:
            read = Select(channel < self.channels, read, 0)
        gn, gy, gx = self._loops('grad')
        block = literal_extent(f"{self.name}_grad_block", self.outputs // width)
        lane = literal_extent(f"{self.name}_grad_k", width)
        packed = self.packed_gradient[(block * self.positions
                                       + self._position(gn, gy, gx)) * width + lane]
        return [Eq(column, read * self._in_batch(n),
                   implicit_dims=IgnoreDimSort((ky, kx, tile, n, y, x, entry))),
                Eq(packed, gradient(gn, block * width + lane, gy, gx)
                   * self._in_batch(gn),
                   implicit_dims=IgnoreDimSort((block, gn, gy, gx, lane)))]

    def gradient_equations(self, target):
        """Store the products into ``target(output, channel, tap row, tap column)``
        (a callable giving the entry of the layer's ``dW``): every whole channel
        tile, then the channels of the last one, its padding left out."""
        a, name = self.tile_channels, self.name
        k = literal_extent(f"{name}_out_k", self.outputs)
        ky = literal_extent(f"{name}_out_ky", self.kernel[0])
        kx = literal_extent(f"{name}_out_kx", self.kernel[1])

        def store(tile, entry, outer):
            # a channel tile's products (taps x tile channels x outputs) stay in
            # cache while every output channel's row of `dW` is written (with the
            # output channels outermost, every read missed: 7 ms for 512x512x3x3)
            return Eq(target(k, tile * a + entry, ky, kx),
                      self.result[tile, ky * self.kernel[1] + kx,
                                  entry * self.outputs + k],
                      implicit_dims=IgnoreDimSort(outer + (k, entry, ky, kx)))

        whole, left = divmod(self.channels, a)
        eqs = []
        if whole:
            tile = literal_extent(f"{name}_out_c_tile", whole)
            eqs.append(store(tile, literal_extent(f"{name}_out_c", a), (tile,)))
        if left:
            eqs.append(store(whole, literal_extent(f"{name}_out_c_last", left), ()))
        return eqs

    def equations(self):
        """The tiled products: for each channel tile (in parallel), tap and block of
        output channels, the tile's accumulators over every position."""
        name, lanes, a, b = self.name, self.lanes, self.tile_channels, self.tile_blocks
        tile, tap = self.tile, self.tap
        block = literal_extent(f"{name}_k_block", self.outputs // self.block_width)
        lane = LaneDimension.of(f"{name}_lane", lanes)
        position = literal_extent(f"{name}_pos", self.positions)
        outer = (tile, tap, block, lane)
        fma = 'fmaf' if self.dtype == np.float32 else 'fma'
        entries = [(i, j) for i in range(a) for j in range(b)]
        acc = {e: Scalar(name=f"{name}_a{e[0]}_{e[1]}", dtype=self.dtype.type)
               for e in entries}
        eqs = [Eq(acc[e], 0, implicit_dims=outer) for e in entries]
        for i, j in entries:
            column = self.packed_columns[
                ((tap * (self.padded_channels // a) + tile) * self.positions + position)
                * a + i]
            gradient = self.packed_gradient[
                (block * self.positions + position) * self.block_width + j * lanes + lane]
            eqs.append(Eq(acc[i, j], DefFunction(fma, (column, gradient, acc[i, j])),
                          implicit_dims=IgnoreDimSort(outer + (position,))))
        for i, j in entries:
            k = block * self.block_width + j * lanes + lane
            eqs.append(Eq(self.result[tile, tap, i * self.outputs + k], acc[i, j],
                          implicit_dims=outer))
        return eqs
