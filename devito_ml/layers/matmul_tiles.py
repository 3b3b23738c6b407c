"""Register-tiled matrix products: the schedule of wide fully connected passes.

One loop nest computes

    target[m, k] = sum over c of a[m, c] * b[c, k]

with ``k`` in blocks of vector lanes (``b`` flat, literal strides, padded to whole
blocks) and a tile of ``rows x blocks`` outputs in Scalars while the loop over
``c`` runs, one ``fmaf`` a tile entry; ``a`` is broadcast, read through whatever
expression the caller gives (clamped to its last row, so that padded rows read in
bounds). As in ``conv_tiles.py``, the lane loop is a
:class:`~devito_ml.lanes.LaneDimension`, and the target lives on the row-tile loop
itself so that Devito proves it parallel.

`schedule_products` is the schedule step that uses them: it finds the matrix
products among a layer's equations (its forward maths, or the adjoint derived from
it) and lowers each to a :class:`TiledMatmul`, so that the maths stays in
``dense.py`` and the derived gradients run the same tiles as the forward pass.
"""

from collections import namedtuple

import numpy as np
import sympy
from devito import Dimension, Eq, Inc
from devito.symbolics import DefFunction, IntDiv
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort
from sympy import Max, Min

from devito_ml.lanes import LaneDimension
from devito_ml.layers.conv_tiles import (CACHE_LINE_BYTES, flat_tensor,
                                         gradient_tile_shape,
                                         literal_extent, round_up, spread_stride)
from devito_ml.batch import is_batch_dimension
from devito_ml.symbolics import tap_dimension, tensor
from devito_ml.vector_width import vector_lanes

__all__ = ['TiledMatmul', 'schedule_products', 'sum_blocking']

L1_SHARE_BYTES = 16 << 10
"""What a product's strip read by every tile of a sweep may take of L1 (half of
the 32 KiB of AMD Zen and most Intel cores)."""
L2_SHARE_BYTES = 256 << 10
"""What a product's operand read again by every sweep may take of L2 (a quarter
of Zen 4's and Intel's 1 MiB, half of Zen 2's)."""
SHORTEST_CHUNK = 32
"""Fewest reduced indices worth a pass of the tiles' accumulators through memory."""


def sum_blocking(rows, channels, columns, tile_rows, tile_columns, itemsize):
    """``(rows outermost, chunk)``: the loop order of a product's register tiles
    and the length of each of their passes over the reduced index, from what
    they keep in cache.

    With the row tiles outermost, a row tile's strip of ``a`` (``tile_rows`` rows
    of the chunk, a cache line a reduced index at least: ``a`` may be read across
    its stride) stays in L1 while the column blocks run, and the chunk of ``b``
    (``chunk x columns``) in L2 while the row tiles do. With the column blocks
    outermost, the chunk of ``a`` (``rows x chunk``) stays in L2 while they run (a
    column block's strip of ``b``, lines a row of ``b`` apart, is not counted on
    in L1). The first order that fits the whole sum is kept, rows outermost
    first; else rows outermost, the sum in chunks that fit: the longest divisor
    of ``channels`` (all of them if no divisor of at least
    :data:`SHORTEST_CHUNK` fits).

    Measured on AMD EPYC Zen 4 (8 lanes), batch 32: the forward products of a
    512-channel Winograd convolution on 4x4 maps (``b`` 1 MiB a position, 32
    rows), 6.3 ms column blocks outermost, 7.1 in chunks of 256, 7.4 rows
    outermost in chunks; the weight gradient's products of a 64-channel one on
    32x32 maps (a sum over 2048 blocks), 6.9 ms in one sweep, 4.7 in chunks of
    256 rows outermost, 5.8 in chunks of 512, 5.4 in chunks of 512 column blocks
    outermost.

    Parameters
    ----------
    rows, channels, columns : int
        The product's (padded) rows, reduced index and (padded) columns.
    tile_rows, tile_columns : int
        A register tile's rows and columns (lanes times blocks).
    itemsize : int
        Bytes an entry.

    Returns
    -------
    (bool, int)
        Whether the row tiles run outermost, and the chunk of the reduced index
        (``channels`` for one pass).
    """
    line = max(tile_rows * itemsize, CACHE_LINE_BYTES)
    by_rows = max(1, min(L1_SHARE_BYTES // line, L2_SHARE_BYTES // (columns * itemsize)))
    if by_rows >= channels:
        return True, channels
    if L2_SHARE_BYTES // (rows * itemsize) >= channels:
        return False, channels
    chunk = max(d for d in range(1, by_rows + 1) if channels % d == 0)
    return True, chunk if chunk >= SHORTEST_CHUNK else channels


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
    groups : int
        Independent products of this shape computed by one nest (the transformed
        positions of a Winograd correlation): ``b`` and the target have one of
        each a group, on the literal loop :attr:`group` (None for one group),
        outermost; ``a_at`` reads the group's ``a`` through it. Grouped products
        are blocked for the caches (:func:`sum_blocking`: :attr:`rows_outermost`,
        :attr:`chunk`, :attr:`chunks`); one product keeps one sweep, row tiles
        outermost.
    """

    def __init__(self, name, dtype, rows, channels, columns, a_at=None, groups=1):
        self.name, self.dtype = name, np.dtype(dtype)
        self.rows, self.channels, self.columns = rows, channels, columns
        self.lanes = vector_lanes(self.dtype)
        self.groups = groups
        self.group = literal_extent(f"{name}_group", groups) if groups > 1 else None
        if a_at is None:
            if groups > 1:
                raise ValueError(f"{name}: {groups} products need their own `a_at`")
            size = channels * rows
            self.a = flat_tensor(f"{name}_a", f"{name}_ai", size, dtype)
            a_at = self.a_entry
        self.a_at = a_at
        blocks = -(-columns // self.lanes)
        self.tile_rows, self.tile_blocks = gradient_tile_shape(rows, blocks)
        self.padded_rows = round_up(rows, self.tile_rows)
        self.padded_columns = round_up(blocks, self.tile_blocks) * self.lanes
        if self.group is None:
            size = channels * self.padded_columns
            self.b = flat_tensor(f"{name}_b", f"{name}_bi", size, dtype)
        else:
            # a plane a group: writers of every group at once (36 equations of a
            # Winograd transform) write distinct planes, as Devito sees it
            size = spread_stride(channels * self.padded_columns, dtype)
            self.b = tensor(f"{name}_b", (literal_extent(f"{name}_bg", groups),
                                          literal_extent(f"{name}_bi", size)),
                            (groups, size), dtype)
        self.row_tile = literal_extent(f"{name}_row_tile",
                                       self.padded_rows // self.tile_rows)
        # one product (a fully connected pass) keeps its one sweep, row tiles
        # outermost: its loops are the parallel ones
        self.rows_outermost, self.chunk = (True, channels) if groups == 1 else \
            sum_blocking(self.padded_rows, channels, self.padded_columns,
                         self.tile_rows, self.tile_blocks * self.lanes,
                         self.dtype.itemsize)
        self.chunks = channels // self.chunk
        self.partials = None
        if self.chunks > 1:
            # each chunk's products apart, summed after: added to the products
            # in place, read and written, their entries' flat indices overlapped
            # as Devito sees them, and it split the nest
            size = spread_stride(self.chunks * self.padded_rows * self.padded_columns,
                                 dtype)
            self.partials = tensor(f"{name}_partial",
                                   (self.group, literal_extent(f"{name}_pk", size)),
                                   (groups, size), dtype)
        size = self.tile_rows * self.padded_columns
        if self.group is None:
            self.target = tensor(f"{name}_acc",
                                 (self.row_tile, literal_extent(f"{name}_mk", size)),
                                 (self.padded_rows // self.tile_rows, size), dtype)
        else:
            # a flat product a group, each an odd number of cache lines apart: a
            # reader of every group's entry at once (the Winograd output
            # transform) then finds them in distinct cache sets
            size = spread_stride(self.padded_rows * self.padded_columns, dtype)
            self.target = tensor(f"{name}_acc",
                                 (self.group, literal_extent(f"{name}_mk", size)),
                                 (groups, size), dtype)

    def a_entry(self, row, channel):
        """The matmul's own ``a`` at (row, reduced index)."""
        return self.a[channel * self.rows + row]

    def b_at(self, channel, column, group=None):
        """``b`` at (reduced index, column) of product ``group`` (with more than
        one group)."""
        if group is None:
            return self.b[channel * self.padded_columns + column]
        return self.b[group, channel * self.padded_columns + column]

    def target_at(self, row, column, group=None):
        """The product at (row, column) of ``group`` (a loop index, with more than
        one group); ``row`` and ``column`` are loop indices."""
        if group is not None:
            return self.target[group, row * self.padded_columns + column]
        tile = IntDiv(row, self.tile_rows)
        return self.target[tile, (row - tile * self.tile_rows) * self.padded_columns
                           + column]

    def equations(self):
        """The tiled loop nest: zero the tile, accumulate over the reduced
        index (or a chunk of it, then the chunks' sums added), store."""
        name, lanes, row_tile = self.name, self.lanes, self.row_tile
        block = literal_extent(f"{name}_column_block",
                               self.padded_columns // (lanes * self.tile_blocks))
        lane = LaneDimension.of(f"{name}_lane", lanes)
        tiles = (row_tile, block) if self.rows_outermost else (block, row_tile)
        outer = (*tiles, lane)
        step = literal_extent(f"{name}_sum", self.chunk)
        channel, chunk = step, None
        if self.partials is not None:
            chunk = literal_extent(f"{name}_chunk", self.chunks)
            outer = (chunk, *outer)
            channel = chunk * self.chunk + step
        group = self.group
        if self.group is not None:
            outer = (self.group,) + outer
        fma = 'fmaf' if self.dtype == np.float32 else 'fma'
        entries = [(i, j) for i in range(self.tile_rows) for j in range(self.tile_blocks)]
        acc = {e: Scalar(name=f"{name}_a{e[0]}_{e[1]}", dtype=self.dtype.type)
               for e in entries}
        eqs = [Eq(acc[e], 0, implicit_dims=outer) for e in entries]
        for i, j in entries:
            row = Min(row_tile * self.tile_rows + i, self.rows - 1)
            column = (block * self.tile_blocks + j) * lanes + lane
            term = (self.a_at(row, channel), self.b_at(channel, column, group))
            eqs.append(Eq(acc[i, j], DefFunction(fma, term + (acc[i, j],)),
                          implicit_dims=IgnoreDimSort(outer + (step,))))
        size = self.padded_rows * self.padded_columns     # a chunk's products
        for i, j in entries:
            column = (block * self.tile_blocks + j) * lanes + lane
            if self.group is None:
                index = (row_tile, i * self.padded_columns + column)
            else:
                row = row_tile * self.tile_rows + i
                index = (self.group, row * self.padded_columns + column)
            if chunk is not None:
                index = (self.group, chunk * size + index[1])
            eqs.append(Eq((self.target if chunk is None else self.partials)[index],
                          acc[i, j], implicit_dims=outer))
        if chunk is not None:
            entry = literal_extent(f"{name}_entry", size)
            eqs.append(Eq(self.target[self.group, entry],
                          sum(self.partials[self.group, c * size + entry]
                              for c in range(self.chunks)),
                          implicit_dims=IgnoreDimSort((self.group, entry))))
        return eqs


Product = namedtuple('Product', 'total rows channels columns a b')
"""A register sum ``total = sum over channels of a * b`` at (rows, columns): ``a``
the Indexed read at (rows, channels), ``b`` the one read at (channels, columns)."""


def schedule_products(equations, names, batch, tiled):
    """``equations`` with each matrix product among them lowered for its shape.

    A matrix product is a register sum (:func:`~devito_ml.symbolics.register_sum`,
    or the sums of a derived adjoint) of one product of two Functions over one
    loop, into a Function of two Dimensions, every index a plain Dimension:
    ``T[p, q] = sum over r of A[.., r, ..] * B[.., r, ..] + rest``, with ``A``
    indexed by ``p`` and ``r``, ``B`` by ``q`` and ``r``.

    ``tiled``: each runs as register tiles (:class:`TiledMatmul`), its vector lanes
    along the batch where ``T`` has one (it fills them), else along ``T``'s last
    axis; the other operand is broadcast, read in place when it is stored (rows,
    sum), else copied; a sum over the batch reads zeros past the active batch.
    Otherwise a product whose operands are both stored along ``r`` stays a sum in a
    register (a dot product, vectorised along ``r``), and any other is summed into
    ``T`` in memory with ``r`` outside ``T``'s last axis (vectorised along it).

    Parameters
    ----------
    equations : list of Eq and Inc
    names : dict
        ``{Function: tile name}``: the targets whose products are lowered (others
        stay as they are), and the prefix of each one's tensors and loops.
    batch : Dimension
        The net's batch, whose bound at run time is the active batch.
    tiled : bool

    Returns
    -------
    list of Eq and Inc
    """
    equations, lowered = list(equations), []
    while equations:
        product, finish = _product(equations, names)
        if product is None or not (tiled or _strided(product)):
            lowered.append(equations.pop(0))
            continue
        target = equations[finish].lhs
        order = IgnoreDimSort(tuple(target.indices))
        if tiled:
            tiles, copies = _tiles(product, names[target.function], batch)
            value = equations[finish].rhs.xreplace(
                {product.total: tiles.target_at(product.rows, product.columns)})
            equations[finish] = Eq(target, value, implicit_dims=order)
            lowered += copies + tiles.equations()
        else:
            rest = equations[finish].rhs.xreplace({product.total: 0})
            outer, last = target.indices
            equations[finish:finish + 1] = [
                Eq(target, rest, implicit_dims=order),
                Inc(target, product.a * product.b,
                    implicit_dims=IgnoreDimSort((outer, product.channels, last)))]
        del equations[:2]
    return lowered


def _strided(product):
    """Whether an operand of ``product`` is not stored along its sum."""
    return any(access.indices[-1] is not product.channels
               for access in (product.a, product.b))


def _product(equations, names):
    """The :class:`Product` that ``equations`` start with, and the index of the
    equation storing it; ``(None, None)`` if they start with none."""
    if len(equations) < 3:
        return None, None
    start, step = equations[:2]
    total = start.lhs
    if not isinstance(total, Scalar) or start.rhs != 0 or step.lhs != total:
        return None, None
    term = sympy.expand(step.rhs - total)
    finish = next((i for i, eq in enumerate(equations[2:], 2) if eq.rhs.has(total)),
                  None)
    if finish is None or not isinstance(term, sympy.Mul) or term.has(total) or \
            sympy.diff(equations[finish].rhs, total) != 1:
        return None, None
    target = equations[finish].lhs
    factors = term.args
    if getattr(target, 'function', None) not in names or len(factors) != 2 or \
            not all(isinstance(f, sympy.Indexed) for f in factors):
        return None, None
    outer = tuple(target.indices)
    inner = [d for d in step.implicit_dims or () if d not in outer]
    plain = all(isinstance(i, Dimension) for f in (target, *factors)
                for i in f.indices)
    if not plain or len(outer) != 2 or len(inner) != 1:
        return None, None
    channels = inner[0]
    batch = [d for d in outer if is_batch_dimension(d)]
    columns = batch[0] if batch else outer[-1]
    rows = outer[0] if columns is outer[1] else outer[1]
    reads = {frozenset(f.indices): f for f in factors}
    a = reads.get(frozenset((rows, channels)))
    b = reads.get(frozenset((channels, columns)))
    if a is None or b is None or len(a.indices) != 2 or len(b.indices) != 2:
        return None, None
    return Product(total, rows, channels, columns, a, b), finish


def _extent(access, dimension):
    return access.function.shape[list(access.indices).index(dimension)]


def _tiles(product, name, batch):
    """The :class:`TiledMatmul` of ``product`` and the copies that feed it."""
    a, b = product.a, product.b
    rows, channels = _extent(a, product.rows), _extent(a, product.channels)
    columns = _extent(b, product.columns)
    dtype = a.function.dtype
    # copies loop on Dimensions of their own: Devito imposes one loop order per
    # operator, and they walk their source in its order
    own = {product.rows: tap_dimension(f"{name}_copy_row", rows),
           product.channels: tap_dimension(f"{name}_copy_sum", channels),
           product.columns: tap_dimension(f"{name}_copy_column", columns)}
    mask = 1
    if is_batch_dimension(product.channels):
        # every row of the copies, past the active batch too, as zeros
        mask = Min(Max(batch.symbolic_max + 1 - own[product.channels], 0), 1)
    elif is_batch_dimension(product.columns):
        own[product.columns] = product.columns   # the active batch only
    in_place = not is_batch_dimension(product.channels) and \
        tuple(a.indices) == (product.rows, product.channels) and \
        tuple(a.function.dimensions) == tuple(a.indices) and \
        all(tuple(h) == (0, 0) for h in a.function.halo)
    tiles = TiledMatmul(name, dtype, rows, channels, columns,
                        (lambda row, c: a.function[row, c]) if in_place else None)
    copies = []
    if not in_place:
        copies.append(Eq(tiles.a_entry(own[product.rows], own[product.channels]),
                         a.xreplace(own) * mask,
                         implicit_dims=IgnoreDimSort(tuple(own[d] for d in a.indices))))
    copies.append(Eq(tiles.b_at(own[product.channels], own[product.columns]),
                     b.xreplace(own) * mask,
                     implicit_dims=IgnoreDimSort(tuple(own[d] for d in b.indices))))
    return tiles, copies
