"""Register-tiled matrix products: the schedule of wide fully connected passes.

One loop nest computes

    target[m, k] = sum over c of a[m, c] * b[c, k]

with ``k`` in blocks of vector lanes (``b`` flat, literal strides, padded to whole
blocks) and a tile of ``rows x blocks`` outputs in Scalars while the loop over
``c`` runs, one ``fmaf`` a tile entry; ``a`` is broadcast, read through whatever
expression the caller gives (clamped to its last row, so that padded rows read in
bounds). As in ``conv_tiles.py``, the lane loop is a
:class:`~devito_ml.lanes.LaneDimension`, and the target lives on the row-tile loop
itself so that Devito proves it parallel. The maths of each pass stays in
``dense.py``.
"""

import numpy as np
from devito import Eq
from devito.symbolics import DefFunction, IntDiv
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort
from sympy import Min

from devito_ml.lanes import LaneDimension
from devito_ml.layers.conv_tiles import (flat_tensor, gradient_tile_shape,
                                         literal_extent, round_up)
from devito_ml.symbolics import tensor
from devito_ml.vector_width import vector_lanes

__all__ = ['TiledMatmul']


class TiledMatmul:
    """``target = a @ b``, register-tiled, and the flat tensors it runs on.

    Parameters
    ----------
    name : str
        Prefix of its tensors and loops (``fc1_fwd``).
    dtype : numpy dtype
    rows, channels, columns : int
        ``m``, ``c`` and ``k`` extents.
    a_at : callable, optional
        ``a_at(m, c)``: the expression of ``a`` at row ``m`` (``m < rows``) and
        reduced index ``c``; it must read along ``c`` with a literal stride (gcc
        does not vectorise the lane loop over a run-time one), as a Function's
        last Dimension does. By default ``a`` is a flat tensor of the matmul's own,
        ``c``-major, written by the caller through :meth:`a_entry`.
    """

    def __init__(self, name, dtype, rows, channels, columns, a_at=None):
        self.name, self.dtype = name, np.dtype(dtype)
        self.rows, self.channels, self.columns = rows, channels, columns
        self.lanes = vector_lanes(self.dtype)
        if a_at is None:
            size = channels * rows
            self.a = flat_tensor(f"{name}_a", f"{name}_ai", size, dtype)
            a_at = self.a_entry
        self.a_at = a_at
        blocks = -(-columns // self.lanes)
        self.tile_rows, self.tile_blocks = gradient_tile_shape(rows, blocks)
        self.padded_rows = round_up(rows, self.tile_rows)
        self.padded_columns = round_up(blocks, self.tile_blocks) * self.lanes
        size = channels * self.padded_columns
        self.b = flat_tensor(f"{name}_b", f"{name}_bi", size, dtype)
        self.row_tile = literal_extent(f"{name}_row_tile",
                                       self.padded_rows // self.tile_rows)
        size = self.tile_rows * self.padded_columns
        self.target = tensor(f"{name}_acc",
                             (self.row_tile, literal_extent(f"{name}_mk", size)),
                             (self.padded_rows // self.tile_rows, size), dtype)

    def a_entry(self, row, channel):
        """The matmul's own ``a`` at (row, reduced index)."""
        return self.a[channel * self.rows + row]

    def b_at(self, channel, column):
        """``b`` at (reduced index, column)."""
        return self.b[channel * self.padded_columns + column]

    def target_at(self, row, column):
        """The product at (row, column); ``row`` and ``column`` are loop indices."""
        tile = IntDiv(row, self.tile_rows)
        return self.target[tile, (row - tile * self.tile_rows) * self.padded_columns
                           + column]

    def equations(self):
        """The tiled loop nest: zero the tile, accumulate over ``c``, store."""
        name, lanes, row_tile = self.name, self.lanes, self.row_tile
        block = literal_extent(f"{name}_column_block",
                               self.padded_columns // (lanes * self.tile_blocks))
        lane = LaneDimension.of(f"{name}_lane", lanes)
        channel = literal_extent(f"{name}_sum", self.channels)
        outer = (row_tile, block, lane)
        fma = 'fmaf' if self.dtype == np.float32 else 'fma'
        entries = [(i, j) for i in range(self.tile_rows) for j in range(self.tile_blocks)]
        acc = {e: Scalar(name=f"{name}_a{e[0]}_{e[1]}", dtype=self.dtype.type)
               for e in entries}
        eqs = [Eq(acc[e], 0, implicit_dims=outer) for e in entries]
        for i, j in entries:
            row = Min(row_tile * self.tile_rows + i, self.rows - 1)
            column = (block * self.tile_blocks + j) * lanes + lane
            term = (self.a_at(row, channel), self.b_at(channel, column))
            eqs.append(Eq(acc[i, j], DefFunction(fma, term + (acc[i, j],)),
                          implicit_dims=IgnoreDimSort(outer + (channel,))))
        for i, j in entries:
            column = (block * self.tile_blocks + j) * lanes + lane
            eqs.append(Eq(self.target[row_tile, i * self.padded_columns + column],
                          acc[i, j], implicit_dims=outer))
        return eqs
