"""Register-tiled correlation: the schedule of wide convolution passes.

One loop nest computes

    target[n, y, x, k] = sum over taps t and channels c of
                         weights[t, c, k] * source[n, y*sy + ty_t, x*sx + tx_t, c]

for the forward pass (source: the padded input, channels last) and for the input
gradient (source: the stuffed, padded output gradient; weights: the kernel with its
channels swapped). The maths of each pass stays in ``conv.py``; this is the
schedule, after ``../shared/notes/fast-conv.md``:

- ``k`` is split into blocks of one vector register (:func:`vector_lanes`); the
  lane loop is a :class:`~devito_ml.lanes.LaneDimension`, vectorised by
  :mod:`devito_ml.lanes` although a reduction loop runs inside it.
- A tile of ``columns x blocks`` outputs lives in Scalars (one vector register
  each) while the loop over ``c`` runs; every tap is one fused multiply-add
  statement (``fmaf``: with ``-ffast-math`` gcc reassociates ``a + w*x`` chains into
  multiplies and adds and spills the tile).
- Source, weights and target are one-dimensional with literal strides, so that
  every tap is one displacement from two base pointers (with run-time strides gcc
  keeps a pointer a tap and spills them).
- Channel counts and columns are padded up to whole tiles (zeros in, the extra
  outputs never read), so any channel count, stride, dilation and padding runs on
  the same nest.
"""

import numpy as np
from devito import CustomDimension, Eq, configuration
from devito.symbolics import DefFunction
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.lanes import LaneDimension
from devito_ml.symbolics import tensor

__all__ = ['TiledCorrelation', 'vector_lanes', 'MAX_TILED_TAPS']

MAX_TILED_TAPS = 25
"""Above this many taps (5x5), one statement a tap and tile entry is too much code."""


def vector_lanes(dtype):
    """Elements of ``dtype`` in one vector register of this machine."""
    return configuration['platform'].simd_reg_nbytes // np.dtype(dtype).itemsize


def vector_registers():
    """Architectural vector registers: 32 with AVX-512, else 16."""
    return 32 if configuration['platform'].simd_reg_nbytes >= 64 else 16


def tile_shape(blocks, columns):
    """``(tile columns, tile blocks)`` for ``blocks`` lane blocks over ``columns``.

    The tile, one weight vector a block and one broadcast input fit the
    registers with two to spare; measured on 32->64 channels 3x3 with 8 lanes,
    a 5x2 tile ran at 138 GFLOP/s, 6x2 (spilling) at 85, 8x1 at 110.
    """
    budget = vector_registers() - 3
    tile_blocks = min(blocks, 2 if vector_registers() == 16 else 4)
    tile_columns = max(1, min(columns, (budget - tile_blocks) // tile_blocks))
    return tile_columns, tile_blocks


def _extent(name, size):
    return CustomDimension(name, symbolic_min=0, symbolic_max=size - 1,
                           symbolic_size=size)


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


class TiledCorrelation:
    """A register-tiled correlation and the flat tensors it runs on.

    Parameters
    ----------
    name : str
        Prefix of its tensors and loops (``conv1_fwd``).
    dtype : numpy dtype
    batch_dim : Dimension
        The batch loop of the tiles (bounded by the active batch).
    batch : int
        Largest batch.
    channels, outputs : int
        Reduced channels ``c`` and computed channels ``k``.
    out_size : pair of int
        Rows and columns of the target.
    taps : list of pair of int
        Source offsets ``(ty, tx)`` of each tap (non-negative).
    stride : pair of int
    source_size : pair of int
        Rows and columns of the source its writers fill; columns are widened to
        what whole tiles read.
    """

    def __init__(self, name, dtype, batch_dim, batch, channels, outputs, out_size, taps,
                 stride, source_size):
        self.name, self.dtype = name, np.dtype(dtype)
        self.channels, self.outputs, self.taps = channels, outputs, list(taps)
        self.stride = tuple(stride)
        self.lanes = vector_lanes(self.dtype)
        blocks = -(-outputs // self.lanes)
        self.rows, columns = out_size
        self.tile_columns, self.tile_blocks = tile_shape(blocks, columns)
        self.columns = _round_up(columns, self.tile_columns)
        self.padded_outputs = _round_up(blocks, self.tile_blocks) * self.lanes
        sy, sx = self.stride
        reach_rows = (self.rows - 1) * sy + max(t[0] for t in self.taps) + 1
        reach_columns = (self.columns - 1) * sx + max(t[1] for t in self.taps) + 1
        self.source_rows = max(source_size[0], reach_rows)
        self.source_columns = max(source_size[1], reach_columns)
        size = batch * self.source_rows * self.source_columns * channels
        self.source = tensor(f"{name}_src", (_extent(f"{name}_si", size),), (size,),
                             dtype)
        size = len(self.taps) * channels * self.padded_outputs
        self.weights = tensor(f"{name}_wts", (_extent(f"{name}_wi", size),), (size,),
                              dtype)
        # the target on the batch and row loops themselves: Devito then proves them
        # parallel (flat, it parallelised only the tile loop, a region a row)
        self.batch_dim, self.row = batch_dim, _extent(f"{name}_y", self.rows)
        size = self.columns * self.padded_outputs
        self.target = tensor(f"{name}_acc", (batch_dim, self.row,
                                             _extent(f"{name}_xk", size)),
                             (batch, self.rows, size), dtype)

    def source_at(self, n, row, column, channel):
        """The source at (sample, row, column, channel)."""
        return self.source[((n * self.source_rows + row) * self.source_columns + column)
                           * self.channels + channel]

    def weight_at(self, tap, channel, output):
        """The weight of tap number ``tap`` from ``channel`` to ``output``."""
        return self.weights[(tap * self.channels + channel) * self.padded_outputs
                            + output]

    def target_at(self, n, row, column, output):
        """The target at (sample, row, column, output channel)."""
        return self.target[n, row, column * self.padded_outputs + output]

    def equations(self):
        """The tiled loop nest: zero the tile, accumulate over taps and channels,
        store."""
        name, lanes = self.name, self.lanes
        batch_dim, row = self.batch_dim, self.row
        tile = _extent(f"{name}_xt", self.columns // self.tile_columns)
        block = _extent(f"{name}_kt",
                        self.padded_outputs // (lanes * self.tile_blocks))
        lane = LaneDimension.of(f"{name}_lane", lanes)
        channel = _extent(f"{name}_c", self.channels)
        outer = (batch_dim, row, tile, block, lane)
        fma = 'fmaf' if self.dtype == np.float32 else 'fma'
        entries = [(i, b) for i in range(self.tile_columns)
                   for b in range(self.tile_blocks)]
        acc = {e: Scalar(name=f"{name}_a{e[0]}_{e[1]}", dtype=self.dtype.type)
               for e in entries}
        eqs = [Eq(acc[e], 0, implicit_dims=outer) for e in entries]
        sy, sx = self.stride
        for t, (ty, tx) in enumerate(self.taps):
            for i, b in entries:
                k = (block * self.tile_blocks + b) * lanes + lane
                x = tile * self.tile_columns + i
                term = (self.weight_at(t, channel, k),
                        self.source_at(batch_dim, row * sy + ty, x * sx + tx, channel))
                eqs.append(Eq(acc[i, b], DefFunction(fma, term + (acc[i, b],)),
                              implicit_dims=IgnoreDimSort(outer + (channel,))))
        for i, b in entries:
            k = (block * self.tile_blocks + b) * lanes + lane
            eqs.append(Eq(self.target_at(batch_dim, row, tile * self.tile_columns + i,
                                         k), acc[i, b], implicit_dims=outer))
        return eqs
