"""Register-tiled correlation: the schedule of wide convolution passes.

One loop nest computes

    target[n, y, x, k] = sum over taps t and channels c of
                         weights[t, c, k] * source[n, y*sy + ty_t, x*sx + tx_t, c]

for the forward pass (source: the padded input, channels last) and, one nest a
stride phase, for the input gradient (:class:`TiledTransposedCorrelation`; source:
the padded output gradient; weights: the kernel with its channels swapped).
:class:`TiledWeightGradient` sums source times gradient over output positions, one
partial sum a sample. The maths of each pass stays in ``conv.py``; this is the
schedule, after ``../shared/notes/fast-conv.md``:

- ``k`` is split into blocks of one vector register
  (:func:`~devito_ml.vector_width.vector_lanes`); the lane loop is a
  :class:`~devito_ml.lanes.LaneDimension`, vectorised by :mod:`devito_ml.lanes`
  although a reduction loop runs inside it.
- A tile of ``columns x blocks`` outputs lives in Scalars (one vector register
  each) while the loop over ``c`` runs; every tap is one fused multiply-add
  statement (``fmaf``: with ``-ffast-math`` gcc reassociates ``a + w*x`` chains into
  multiplies and adds and spills the tile).
- Source, weights and target are one-dimensional with literal strides, so that
  every tap is one displacement from two base pointers (with run-time strides gcc
  keeps a pointer a tap and spills them).
- What a tile streams through, the weights (forward and input gradient) and the
  output gradient (weight gradient), is laid out in the order the tile reads it:
  a tile block's own, front to back (``weight_at``, ``gradient_at``).
- Channel counts and columns are padded up to whole tiles (zeros in, the extra
  outputs never read), so any channel count, stride, dilation and padding runs on
  the same nest.
"""

import numpy as np
from devito import Eq, Min
from devito.symbolics import DefFunction
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.batch import batch_loop
from devito_ml.lanes import LaneDimension, LiteralDimension, UnrolledDimension
from devito_ml.symbolics import Select, tensor
from devito_ml.vector_width import vector_lanes, vector_registers

__all__ = ['TiledCorrelation', 'TiledTransposedCorrelation', 'TiledWeightGradient',
           'tap_grid', 'MAX_TILED_TAPS']

MAX_TILED_TAPS = 25
"""Above this many taps (5x5), one statement a tap and tile entry is too much code."""


MAX_TILE_COLUMNS = 8
"""Widest tile, in output columns, whatever registers are left."""


FULL_TILE = 10
"""Accumulators from which a tile of 16 registers runs at its best; below, in
proportion (8x1 ran at 0.8-0.9 of 5x2 on maps where neither pads columns)."""


def tile_shape(blocks, columns, registers=None):
    """``(tile columns, tile blocks)`` for ``blocks`` lane blocks over ``columns``,
    with ``registers`` vector registers (default: :func:`vector_registers`).

    The tile, one weight vector a block and one broadcast input fit the
    registers with two to spare, and it is at most ``MAX_TILE_COLUMNS`` wide.

    With 16 registers, of the tiles of one or two blocks, the one with the least
    padded work (columns and blocks rounded up to whole tiles) per
    ``FULL_TILE`` accumulators; ties go to one block. Measured on 8 lanes (AMD
    EPYC Zen 4), 3x3 forward, GFLOP/s: 32->64 on 28x28, 5x2 138, 6x2 (spilling)
    85, 8x1 110 (32 columns for 28); 256->256 on 8x8, 5x2 (10 columns for 8)
    138, 8x1 164, 4x2 131; 128->128 on 16x16, 5x2 143, 8x1 166; 64->64 on 32x32,
    5x2 134, 8x1 136, 4x2 117; 512->512 on 4x4, 4x2 104, 4x1 78.

    With 32 registers and 16 lanes (AMD EPYC Zen 4 scheduled as AVX-512), tiles
    of one or two blocks filled them with 13 or 28 columns and ran far slower
    than at 8: the input gradient of 32->64 channels 2.0-2.2x PyTorch at 13
    columns, 1.4-1.5x at 8 (stride 2: 2.3-2.7x, 1.3-1.4x), 16->16 channels
    1.8-2.3x, 1.4-1.5x; 6 and 10 columns no better. There, up to four blocks and
    as many columns as fit.
    """
    registers = registers or vector_registers()
    budget = registers - 3
    if registers > 16:
        tile_blocks = min(blocks, 4)
        return (max(1, min(columns, (budget - tile_blocks) // tile_blocks,
                           MAX_TILE_COLUMNS)), tile_blocks)
    shapes = [(c, b) for b in range(1, min(blocks, 2) + 1)
              for c in range(1, min(columns, MAX_TILE_COLUMNS) + 1)
              if c * b + b <= budget]

    def cost(shape):
        c, b = shape
        work = round_up(columns, c) * round_up(blocks, b)
        return work * FULL_TILE / min(c * b, FULL_TILE), b
    return min(shapes, key=cost)


def blocked_outputs(prefix, outputs, padded_outputs, block_width, read):
    """The loops of a copy into tile-block order and what it copies.

    Returns ``(block, entry, value)``: loops over the tile blocks of
    ``block_width`` output channels and over a block's channels
    (``<prefix>_k_block``, ``<prefix>_k``), and ``read(output)`` at output
    ``block * block_width + entry``, zero for the tiles' padding past
    ``outputs`` (the read itself never goes past ``outputs - 1``: nothing for a
    vectorised copy to load out of bounds).
    """
    block = literal_extent(f"{prefix}_k_block", padded_outputs // block_width)
    entry = literal_extent(f"{prefix}_k", block_width)
    output = block * block_width + entry
    if padded_outputs == outputs:
        return block, entry, read(output)
    return block, entry, Select(output < outputs, read(Min(output, outputs - 1)), 0)


def literal_extent(name, size):
    """A loop ``0 .. size - 1`` whose bounds are literals in the C (gcc unrolls and
    vectorises it; Devito passes no bound for it)."""
    return LiteralDimension.of(name, size)


def flat_tensor(name, index, size, dtype):
    """A one-dimensional Function of ``size`` entries on a literal extent ``index``:
    indexed with literal strides, one displacement from its base pointer."""
    return tensor(name, (literal_extent(index, size),), (size,), dtype)


def round_up(value, multiple):
    """``value`` rounded up to a whole number of ``multiple``."""
    return -(-value // multiple) * multiple


def correlation_reach(out_size, taps, stride):
    """Rows and columns of the source that the outputs ``out_size`` of a
    :class:`TiledCorrelation` read.

    A last tile padded past the outputs reads on past its row, into the next row
    (the slack row after the last sample's): what it computes there is never
    stored. A source only as wide as its outputs read keeps the weight
    gradient's positions, whole source rows, from running over columns of zeros
    (measured on AMD EPYC Zen 4, 8 lanes: with tiles of 5 columns, 32 outputs
    read rows of 37 columns where they need 34; ResNet-18 width 64's weight
    gradient tiles took 124 ms a step instead of 132).
    """
    return ((out_size[0] - 1) * stride[0] + max(t[0] for t in taps) + 1,
            (out_size[1] - 1) * stride[1] + max(t[1] for t in taps) + 1)


ALIASING_BYTES = 1024
"""Pixel strides of a whole multiple of this many bytes get a cache line more."""


def unaliased_stride(entries, dtype):
    """The stride of rows of ``entries`` that a tile reads several of at once: the
    entries, and one cache line more where they span a whole multiple of
    ``ALIASING_BYTES``.

    The L1 cache indexes lines by address modulo 4 KiB: with strides of 1-4 KiB
    (a pixel of 256-1024 float32 channels) the lines a tile reads together fall
    into one or two sets and evict one another. Measured on a 512->512 3x3
    convolution of 4x4 maps (AMD EPYC Zen 4, 8 lanes), forward, when the weights
    were laid out a tap at a time: 38 ms with the taps 1 MiB apart, 25-29 ms a
    cache line further (they are now read front to back: see
    :meth:`TiledCorrelation.weight_at`).
    """
    itemsize = np.dtype(dtype).itemsize
    if (entries * itemsize) % ALIASING_BYTES == 0:
        return entries + CACHE_LINE_BYTES // itemsize
    return entries


CACHE_LINE_BYTES = 64


def spread_stride(entries, dtype):
    """A stride of at least ``entries`` between tensors read side by side, entry by
    entry: an odd number of cache lines, so that up to 64 of them fall in distinct
    sets of the L1 cache (indexed by address modulo 4 KiB, 64 lines).

    Measured on AMD EPYC Zen 4 (8 lanes, 32 KiB L1): the Winograd output transform
    of a 128-channel convolution on 28x28 maps (batch 32) reads its 36 products
    side by side, 786 KiB apart (two sets of offsets modulo 4 KiB): 7.3 ms; an
    odd number of lines apart, 3.2 ms.
    """
    line = CACHE_LINE_BYTES // np.dtype(dtype).itemsize
    lines = -(-entries // line)
    return (lines + 1 - lines % 2) * line


def tap_grid(taps):
    """``((rows, first row, row step), (columns, first column, column step))`` when
    ``taps`` lists a grid row by row, ``(first row + u * row step, first column + v
    * column step)`` for ``u`` in ``range(rows)``, ``v`` in ``range(columns)``
    (a kernel's taps, or those of one stride phase); else None."""
    rows = list(dict.fromkeys(ty for ty, _ in taps))
    columns = list(dict.fromkeys(tx for _, tx in taps))

    def progression(values):
        step = values[1] - values[0] if len(values) > 1 else 0
        if values != [values[0] + u * step for u in range(len(values))]:
            return None
        return len(values), values[0], step

    grid = progression(rows), progression(columns)
    if None in grid or taps != [(ty, tx) for ty in rows for tx in columns]:
        return None
    return grid


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
    source : Function, optional
        Another correlation's source to read, as laid out by ``source_size`` (which
        must hold what the tiles read); by default the correlation has its own.
    width : int, optional
        float32 lanes of its vector registers (default: the width scheduled for,
        :func:`~devito_ml.vector_width.float32_lanes`).
    """

    def __init__(self, name, dtype, batch_dim, batch, channels, outputs, out_size, taps,
                 stride, source_size, source=None, width=None):
        self.name, self.dtype = name, np.dtype(dtype)
        self.channels, self.outputs, self.taps = channels, outputs, list(taps)
        self.pixel = unaliased_stride(channels, dtype)
        self.stride = tuple(stride)
        self.lanes = vector_lanes(self.dtype, width)
        self.registers = vector_registers(width)
        blocks = -(-outputs // self.lanes)
        self.rows, columns = out_size
        self.tile_columns, self.tile_blocks = tile_shape(blocks, columns, self.registers)
        # maps narrower than a full tile: every block's weights once, their rows
        # and samples inside (see `equations`)
        self.blocks_outside = columns < MAX_TILE_COLUMNS and blocks > self.tile_blocks
        self.columns = round_up(columns, self.tile_columns)
        self.padded_outputs = round_up(blocks, self.tile_blocks) * self.lanes
        self.block_width = self.tile_blocks * self.lanes     # outputs of a tile block
        sy, sx = self.stride
        self.reach = reach_rows, reach_columns = correlation_reach(
            out_size, self.taps, self.stride)
        if source is not None:
            if reach_rows > source_size[0] or reach_columns > source_size[1]:
                raise ValueError(f"{name}: tiles reach {self.reach}, beyond the shared "
                                 f"source {tuple(source_size)}")
            self.source_rows, self.source_columns = source_size
            self.source = source
        else:
            # whole strides, so that the source splits into stride phases
            self.source_rows = round_up(max(source_size[0], reach_rows), sy)
            self.source_columns = round_up(max(source_size[1], reach_columns), sx)
            # a row past the end: the weight gradient's tiles read whole rows a tap
            size = (batch * self.source_rows + 1) * self.source_columns * self.pixel
            self.source = flat_tensor(f"{name}_src", f"{name}_si", size, dtype)
        last = self._flat_index(batch - 1, (self.rows - 1) * sy + max(t[0] for t in taps),
                                (self.columns - 1) * sx + max(t[1] for t in taps),
                                self.channels - 1)
        if last >= self.source.shape[0]:
            raise ValueError(f"{name}: padded tiles read entry {last} of a source of "
                             f"{self.source.shape[0]}")
        # the weights in the order the tiles read them: a tile block's, channel by
        # channel, tap by tap (see `weight_at`)
        size = self.channels * len(self.taps) * self.padded_outputs
        self.weights = flat_tensor(f"{name}_wts", f"{name}_wi", size, dtype)
        # the target on the batch and row loops themselves: Devito then proves them
        # parallel (flat, it parallelised only the tile loop, a region a row)
        if self.blocks_outside:
            # a batch loop of its own: inside the blocks here, outermost in the
            # nests that share the caller's (ordered both ways, one Dimension made
            # a fused train operator's loop order cyclic); a BatchLoop, bounded by
            # the active batch
            batch_dim = batch_loop(f"{name}_tile_n", batch)
        self.batch_dim, self.row = batch_dim, literal_extent(f"{name}_h", self.rows)
        size = self.columns * self.padded_outputs
        self.target = tensor(f"{name}_acc", (batch_dim, self.row,
                                             literal_extent(f"{name}_xk", size)),
                             (batch, self.rows, size), dtype)

    def source_at(self, n, row, column, channel):
        """The source at (sample, row, column, channel)."""
        return self.source[self._flat_index(n, row, column, channel)]

    def _flat_index(self, n, row, column, channel):
        return ((n * self.source_rows + row) * self.source_columns + column) \
            * self.pixel + channel

    def weight_at(self, tap, channel, block, entry):
        """The weight of tap number ``tap`` from ``channel`` to output ``entry`` of
        tile block ``block`` (output ``block * block_width + entry``).

        A tile block's weights are one run in the order its tiles read them,
        channel by channel and tap by tap within: a tile streams through them
        front to back. Laid out a tap at a time, with every output of a channel
        side by side, each channel's taps were a whole tap's weights apart (nine
        streams for a 3x3 kernel) and a tile block's reads a cache line in eight.
        """
        width = self.block_width
        return self.weights[((block * self.channels + channel) * len(self.taps) + tap)
                            * width + entry]

    def weight_equations(self, tap, read, implicit_dims=()):
        """Fill the weights of tap ``tap`` from ``read(channel, output)``.

        ``tap`` is a tap number, or an expression of the Dimensions
        ``implicit_dims`` (loops around the copy: a kernel's rows and columns).
        Outputs past ``outputs``, the tiles' padding, get zeros.
        """
        channel = literal_extent(f"{self.name}_W_c", self.channels)
        block, entry, value = blocked_outputs(
            f"{self.name}_W", self.outputs, self.padded_outputs, self.block_width,
            lambda output: read(channel, output))
        return [Eq(self.weight_at(tap, channel, block, entry), value,
                   implicit_dims=IgnoreDimSort((block, channel) + tuple(implicit_dims)
                                               + (entry,)))]

    def target_at(self, n, row, column, output):
        """The target at (sample, row, column, output channel)."""
        return self.target[n, row, column * self.padded_outputs + output]

    def equations(self):
        """The tiled loop nest: zero the tile, accumulate over taps and channels,
        store.

        Tiles run sample by sample, row by row, and within a row over the blocks
        of output channels, each reading its block's weights (taps x channels x
        block). On maps narrower than ``MAX_TILE_COLUMNS`` a tile has few columns
        to spend each weight on, and the weights of all blocks, cycled through
        row after row, outrun the cache: there the blocks run outermost and their
        samples and rows inside (measured on AMD EPYC Zen 4, 8 lanes, batch 32,
        forward tiles: 512->512 3x3 on 4x4 maps 19.7 -> 15.5 ms, 256->512 3x3
        stride 2 to 4x4 18.1 -> 8.3, 512->2048 1x1 on 4x4 15.2 -> 13.9; on
        8x8 and wider maps the other order was faster, 256->256 3x3 on 8x8 13.1
        vs 15.6 ms, 64->64 on 32x32 13.2 vs 15.3).

        Every row runs every tap, those that read padding too. Rows split into
        nests by the taps that reach data (one nest a run of rows; a tap loop
        bounded by the row inside one nest would leave gcc a nest inside the lane
        loop, which it does not vectorise) took LeNet-5's second convolution's
        input gradient from 70 to 54 row taps and its batch-256 step from 10.5 to
        10.0 ms, but Devito's lowering of the extra nests added 2 s to its cold
        build (13 -> 15 s) and a minute to the test suite: left out.
        """
        name, lanes = self.name, self.lanes
        batch_dim, row = self.batch_dim, self.row
        tile = literal_extent(f"{name}_w_tile", self.columns // self.tile_columns)
        block = literal_extent(f"{name}_k_block",
                               self.padded_outputs // (lanes * self.tile_blocks))
        lane = LaneDimension.of(f"{name}_lane", lanes)
        channel = literal_extent(f"{name}_c", self.channels)
        fma = 'fmaf' if self.dtype == np.float32 else 'fma'
        if self.blocks_outside:
            outer = IgnoreDimSort((block, batch_dim, row, tile, lane))
        else:
            outer = (batch_dim, row, tile, block, lane)
        entries = [(i, b) for i in range(self.tile_columns)
                   for b in range(self.tile_blocks)]
        acc = {e: Scalar(name=f"{name}_a{e[0]}_{e[1]}", dtype=self.dtype.type)
               for e in entries}
        eqs = [Eq(acc[e], 0, implicit_dims=outer) for e in entries]
        sy, sx = self.stride
        for t, (ty, tx), taps in self._taps():
            for i, b in entries:
                x = tile * self.tile_columns + i
                term = (self.weight_at(t, channel, block, b * lanes + lane),
                        self.source_at(batch_dim, row * sy + ty, x * sx + tx, channel))
                eqs.append(Eq(acc[i, b], DefFunction(fma, term + (acc[i, b],)),
                              implicit_dims=IgnoreDimSort(tuple(outer) + (channel,)
                                                          + taps)))
        for i, b in entries:
            k = (block * self.tile_blocks + b) * lanes + lane
            eqs.append(Eq(self.target_at(batch_dim, row, tile * self.tile_columns + i,
                                         k), acc[i, b], implicit_dims=outer))
        return eqs

    def _taps(self):
        """``(tap number, (row offset, column offset), tap loops)``, once for a grid
        of taps (as unrolled loops: one equation a tile entry), else once a tap."""
        grid = tap_grid(self.taps)
        if grid is None:
            return [(t, tap, ()) for t, tap in enumerate(self.taps)]
        (rows, row0, row_step), (columns, column0, column_step) = grid
        u = UnrolledDimension.of(f"{self.name}_ky", rows)
        v = UnrolledDimension.of(f"{self.name}_kx", columns)
        return [(u * columns + v, (row0 + u * row_step, column0 + v * column_step),
                 (u, v))]


FMA_CHAINS = 12
"""Accumulators below which a weight gradient tile waits on its multiply-adds.

Measured on 32->64 channels 3x3, 28x28, 8 lanes: tiles of 8 accumulators ran at
62-81 GFLOP/s, of 12 at 100-112 (two FMA units, four cycles each, and the
loads between them)."""


def gradient_tile_shape(channels, blocks, registers=None):
    """``(tile channels, tile blocks)`` of a weight gradient tile, with
    ``registers`` vector registers (default: :func:`vector_registers`).

    Among the tiles whose accumulators, one vector a block and one broadcast fit
    the registers, the one with the fewest cycles: padded work, times what limits
    a tile (its multiply-adds, its loads, or the latency under ``FMA_CHAINS``
    accumulators); ties go to wider tiles (fewer vector loads a multiply-add:
    the gradient's vectors stream from L2, the broadcasts mostly hit L1; measured,
    6x2 ran at 110 GFLOP/s where 4x3 ran at 81).
    """
    registers = registers or vector_registers()

    def cycles(shape):
        a, b = shape
        work = round_up(channels, a) * round_up(blocks, b)
        return work * max(a * b, a + b, FMA_CHAINS) / (a * b), -a

    shapes = [(a, b) for b in range(1, blocks + 1) for a in range(1, channels + 1)
              if a * b + b + 1 <= registers]
    return min(shapes, key=cycles)


class TiledWeightGradient:
    """The weight gradient of a :class:`TiledCorrelation`, register-tiled.

    ``partial[n, t, c, k] = sum over (y, x) of source[n, y*sy + ty_t, x*sx + tx_t, c]
    * grad[n, y, x, k]``, one partial sum a sample: the samples run in parallel and
    each sample's source and gradient stay in cache while every tile reads them.
    The caller sums the partials over the batch. A tile holds ``channels x blocks``
    accumulators (consecutive channels of one tap, lane blocks of ``k``); the
    reduction over rows and columns runs inside the lane loop.

    Parameters
    ----------
    name : str
    correlation : TiledCorrelation
        The forward pass: its source, taps and stride.
    batch_dim : Dimension
        The batch loop of the tiles (bounded by the active batch).
    batch, outputs : int
        Largest batch; computed channels ``k`` (the correlation's outputs).
    out_size : pair of int
        Rows and columns of the correlation's target (of ``grad``).
    kernel, dilation : pair of int
        The taps: ``(ty, tx) = (i * dilation[0], j * dilation[1])`` for ``i, j`` in
        ``kernel``.
    gradient_source : TiledTransposedCorrelation, optional
        The input gradient's tiles: where its padded source holds the output
        gradient as these tiles read it (see :meth:`reads_in_place`), they read it
        there and copy none of their own.
    """

    def __init__(self, name, correlation, batch_dim, batch, outputs, out_size, kernel,
                 dilation, gradient_source=None):
        self.name, self.correlation = name, correlation
        self.dtype, self.lanes = correlation.dtype, correlation.lanes
        self.channels, self.pixel = correlation.channels, correlation.pixel
        self.outputs = outputs
        blocks = -(-outputs // self.lanes)
        self.registers = correlation.registers
        self.tile_channels, self.tile_blocks = gradient_tile_shape(self.channels,
                                                                   blocks, self.registers)
        self.padded_channels = round_up(self.channels, self.tile_channels)
        self.padded_outputs = round_up(blocks, self.tile_blocks) * self.lanes
        self.block_width = self.tile_blocks * self.lanes     # outputs of a tile block
        self.rows = out_size[0]
        self.kernel, self.dilation = tuple(kernel), tuple(dilation)
        self.tile_taps = self._tile_taps()
        self.batch_dim = batch_dim
        self.tap_row = literal_extent(f"{name}_ky", self.kernel[0])
        self.tap_column = literal_extent(f"{name}_kx", self.kernel[1])
        self.tap_group = literal_extent(f"{name}_kx_tile",
                                        self.kernel[1] // self.tile_taps)
        # The source read as stride phases: phase (a, b) holds the pixels at rows
        # a, a + sy, ... and columns b, b + sx, ...; tap (ty, tx) reads phase
        # (ty % sy, tx % sx) from (y + ty // sy, x + tx // sx). Every tap then reads
        # rows of the phase plane, and rows as wide as the plane's make the output
        # positions one loop, read at one displacement a tap (gcc vectorises a lane
        # loop over one inner loop, not two). The gradient's extra columns stay zero.
        sy, sx = self.stride = correlation.stride
        self.phase_rows = correlation.source_rows // sy
        self.width = correlation.source_columns // sx
        self.position = literal_extent(f"{name}_pos", self.rows * self.width)
        if self.stride == (1, 1):
            self.phases = None   # the correlation's source is the one phase
        else:
            # per sample, a row of slack: the last taps read past their plane
            size = (sy * sx * self.phase_rows + 1) * self.width * self.pixel
            self.phases = tensor(f"{name}_phs",
                                 (batch_dim, literal_extent(f"{name}_hi", size)),
                                 (batch, size), self.dtype)
        # where each tap's reads start in a sample's phases
        self.tap_offsets = tensor(f"{name}_toff", (self.tap_row, self.tap_column),
                                  self.kernel, np.int32)
        (dy, dx) = self.dilation
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                ty, tx = i * dy, j * dx
                self.tap_offsets.data[i, j] = self._phase_offset(ty % sy, tx % sx,
                                                                 ty // sy, tx // sx)
        self.gradient_source = gradient_source \
            if self.reads_in_place(gradient_source) else None
        if self.gradient_source is None:
            size = batch * self.rows * self.width * self.padded_outputs
            self.gradient = flat_tensor(f"{name}_grad", f"{name}_gi", size, self.dtype)
        # on the batch and tap loops themselves, so that Devito proves them parallel
        size = self.padded_channels * self.padded_outputs
        self.partial = tensor(f"{name}_part", (batch_dim, self.tap_row, self.tap_column,
                                               literal_extent(f"{name}_ck", size)),
                              (batch,) + self.kernel + (size,), self.dtype)

    @staticmethod
    def fits(batch, taps, channels, outputs, dtype, max_bytes):
        """Whether the partial sums for these sizes fit in ``max_bytes``."""
        size = batch * taps * channels * outputs * np.dtype(dtype).itemsize
        return size <= max_bytes

    def reads_in_place(self, transposed):
        """Whether the tiles can read the output gradient from ``transposed``'s
        source (a :class:`TiledTransposedCorrelation` of the same outputs).

        Its source holds the gradient at its ``origin`` with a zero halo: read
        from there, position ``row * width + column`` is one displacement when
        its rows are as wide as the tiles' positions, and what the tiles read
        past the gradient's columns (to ``width``) and outputs (to
        ``padded_outputs``) is halo and channel padding, zeros. One tile block
        a pixel reads the same cache lines as a copy of its own (measured, small
        ResNet, AMD EPYC Zen 4, 8 lanes: the copy was one of three writes of
        BatchNorm's backward nest); several read a pixel's lines once a block,
        the others from L2.
        """
        return transposed is not None and transposed.channels == self.outputs and \
            transposed.source_columns == self.width and \
            self.padded_outputs <= transposed.pixel and \
            transposed.source_rows >= self.rows + transposed.origin[0]

    def gradient_at(self, n, block, position, entry):
        """The output gradient of sample ``n`` at ``position`` (``row * width +
        column``), output ``entry`` of tile block ``block``.

        Each tile block's gradient is one run a sample, position by position, as
        its tiles read it: with all of a position's outputs side by side, a tile
        block read a cache line in ``padded_outputs / block_width``. Read in
        place (``gradient_source``), a position is a pixel of that source.
        """
        source = self.gradient_source
        if source is not None:
            sample = source.source_rows * source.source_columns * source.pixel
            origin = (source.origin[0] * source.source_columns + source.origin[1]) \
                * source.pixel
            return source.source[n * sample + origin + position * source.pixel
                                 + block * self.block_width + entry]
        width = self.block_width
        blocks = self.padded_outputs // width
        return self.gradient[((n * blocks + block) * self.rows * self.width + position)
                             * width + entry]

    def gradient_equations(self, n, row, column, read):
        """Fill sample ``n``'s gradient at (``row``, ``column``), Dimensions of the
        caller, from ``read(output)``; outputs past ``outputs`` get zeros. None
        when the tiles read the gradient in place (the input gradient's copy)."""
        if self.gradient_source is not None:
            return []
        block, entry, value = blocked_outputs(f"{self.name}_grad", self.outputs,
                                              self.padded_outputs, self.block_width,
                                              read)
        return [Eq(self.gradient_at(n, block, row * self.width + column, entry), value,
                   implicit_dims=IgnoreDimSort((n, block, row, column, entry)))]

    def _tile_taps(self):
        """Tap columns a tile holds: one, unless its channels and blocks make fewer
        than ``FMA_CHAINS`` accumulators (one input channel makes one); then the
        most of a kernel row that fit the registers, so that the multiply-adds
        overlap (LeNet-5's first convolution: 1 channel, 6 outputs, 5x5)."""
        entries = self.tile_channels * self.tile_blocks
        if entries >= FMA_CHAINS:
            return 1
        return max(j for j in range(1, self.kernel[1] + 1) if self.kernel[1] % j == 0
                   and j * entries + self.tile_blocks + 1 <= self.registers)

    def _phase_offset(self, phase_row, phase_column, row, column):
        """Offset in a sample's phases of (row, column) of phase plane (a, b)."""
        sy, sx = self.stride
        plane = phase_row * sx + phase_column
        return ((plane * self.phase_rows + row) * self.width + column) * self.pixel

    def _source_at(self, n, offset):
        """The source of sample ``n`` at ``offset`` in its phases."""
        if self.phases is None:
            correlation = self.correlation
            sample = correlation.source_rows * correlation.source_columns * self.pixel
            return correlation.source[n * sample + offset]
        return self.phases[n, offset]

    def phase_equations(self):
        """Copy the correlation's source into stride phases (none at stride 1):
        all of them, or only those some tap reads (a 1x1 kernel of stride 2
        reads one of four)."""
        if self.phases is None:
            return []
        (sy, sx), name, n = self.stride, self.name, self.batch_dim
        (dy, dx) = self.dilation
        read = sorted({(i * dy % sy, j * dx % sx) for i in range(self.kernel[0])
                       for j in range(self.kernel[1])})
        row = literal_extent(f"{name}_phase_h", self.phase_rows)
        column = literal_extent(f"{name}_phase_w", self.width)
        c = literal_extent(f"{name}_phase_c", self.channels)
        if len(read) < sy * sx:
            return [Eq(self.phases[n, self._phase_offset(a, b, row, column) + c],
                       self.correlation.source_at(n, row * sy + a, column * sx + b, c),
                       implicit_dims=IgnoreDimSort((n, row, column, c)))
                    for a, b in read]
        a = literal_extent(f"{name}_phase_h0", sy)
        b = literal_extent(f"{name}_phase_w0", sx)
        return [Eq(self.phases[n, self._phase_offset(a, b, row, column) + c],
                   self.correlation.source_at(n, row * sy + a, column * sx + b, c),
                   implicit_dims=IgnoreDimSort((n, a, b, row, column, c)))]

    def partial_at(self, n, tap_row, tap_column, channel, output):
        """Sample ``n``'s sum for one tap, ``channel`` and ``output``."""
        return self.partial[n, tap_row, tap_column,
                            channel * self.padded_outputs + output]

    def equations(self):
        """The stride phases, then the tiled loop nest: zero the tile, accumulate
        over output positions, store the sample's partial sums."""
        name, lanes, n = self.name, self.lanes, self.batch_dim
        tap_row, tap_group = self.tap_row, self.tap_group
        tile = literal_extent(f"{name}_c_tile",
                              self.padded_channels // self.tile_channels)
        block = literal_extent(f"{name}_k_block",
                               self.padded_outputs // (lanes * self.tile_blocks))
        lane = LaneDimension.of(f"{name}_lane", lanes)
        position = self.position
        outer = (n, tap_row, tap_group, tile, block, lane)
        fma = 'fmaf' if self.dtype == np.float32 else 'fma'
        entries = [(j, i, b) for j in range(self.tile_taps)
                   for i in range(self.tile_channels) for b in range(self.tile_blocks)]
        acc = {e: Scalar(name=f"{name}_a{e[0]}_{e[1]}_{e[2]}", dtype=self.dtype.type)
               for e in entries}
        eqs = self.phase_equations() + \
            [Eq(acc[e], 0, implicit_dims=outer) for e in entries]
        for j, i, b in entries:
            k = (block * self.tile_blocks + b) * lanes + lane
            c = tile * self.tile_channels + i
            first = self.tap_offsets[tap_row, tap_group * self.tile_taps + j]
            term = (self._source_at(n, first + position * self.pixel + c),
                    self.gradient_at(n, block, position, b * lanes + lane))
            eqs.append(Eq(acc[j, i, b], DefFunction(fma, term + (acc[j, i, b],)),
                          implicit_dims=IgnoreDimSort(outer + (position,))))
        for j, i, b in entries:
            k = (block * self.tile_blocks + b) * lanes + lane
            c = tile * self.tile_channels + i
            eqs.append(Eq(self.partial_at(n, tap_row, tap_group * self.tile_taps + j, c,
                                          k),
                          acc[j, i, b], implicit_dims=outer))
        return eqs


class Phase:
    """One stride phase of a :class:`TiledTransposedCorrelation`.

    Target rows ``row_phase, row_phase + sy, ...`` (likewise columns) read only the
    kernel taps ``kernel_taps`` (pairs ``(i, j)``); ``tiles`` computes them, target
    row ``Y`` being row ``Y * sy + row_phase``. ``tiles`` is None when no tap
    reaches the phase (its target is zero).
    """

    def __init__(self, row_phase, column_phase, rows, columns, kernel_taps, tiles):
        self.row_phase, self.column_phase = row_phase, column_phase
        self.rows, self.columns = rows, columns
        self.kernel_taps, self.tiles = kernel_taps, tiles


class TiledTransposedCorrelation:
    """The adjoint of a strided correlation, as one register-tiled correlation a
    stride phase.

    ``target[n, h, w, c] = sum over taps (i, j) and k of W[i, j, k, c] *
    grad[n, gy, gx, k]`` where ``h + py - i*dy = gy*sy`` and ``w + px - j*dx =
    gx*sx``: a target row of phase ``h % sy`` reads only the taps whose offset the
    stride divides, so each phase is a stride-1 :class:`TiledCorrelation` over the
    gradient itself (no zeros stuffed between its entries); all phases share one
    source, the gradient with a zero halo.

    Parameters
    ----------
    name : str
    dtype : numpy dtype
    batch_dim : Dimension
    batch : int
    channels, outputs : int
        Channels of the gradient (reduced) and of the target.
    grad_size, out_size : pair of int
        Rows and columns of the gradient and of the target.
    kernel, stride, padding, dilation : pair of int
        Of the forward correlation.
    width : int, optional
        float32 lanes of its tiles' vector registers (as :class:`TiledCorrelation`).
    """

    def __init__(self, name, dtype, batch_dim, batch, channels, outputs, grad_size,
                 out_size, kernel, stride, padding, dilation, width=None):
        self.name, self.channels = name, channels
        (sy, sx), (py, px), (dy, dx) = stride, padding, dilation
        offsets = {}   # phase -> [((i, j), (row offset, column offset))]
        for a in range(min(sy, out_size[0])):
            for b in range(min(sx, out_size[1])):
                offsets[a, b] = [((i, j), ((a + py - i * dy) // sy,
                                           (b + px - j * dx) // sx))
                                 for i in range(kernel[0]) for j in range(kernel[1])
                                 if (a + py - i * dy) % sy == 0
                                 and (b + px - j * dx) % sx == 0]
        reads = [d for taps in offsets.values() for _, d in taps]
        # the gradient's first row and column in the source: every read >= 0
        self.origin = (max([0] + [-d[0] for d in reads]),
                       max([0] + [-d[1] for d in reads]))

        shapes = {(a, b): ((-(-(out_size[0] - a) // sy), -(-(out_size[1] - b) // sx)),
                           [(oy + self.origin[0], ox + self.origin[1])
                            for _, (oy, ox) in taps])
                  for (a, b), taps in offsets.items()}
        reaches = [correlation_reach(size, reads, (1, 1))
                   for size, reads in shapes.values() if reads]
        size = (max([grad_size[0] + self.origin[0]] + [r[0] for r in reaches]),
                max([grad_size[1] + self.origin[1]] + [r[1] for r in reaches]))
        rows_total = batch * size[0] + 1   # a row of slack, like a correlation's own
        self.pixel = unaliased_stride(channels, dtype)
        length = rows_total * size[1] * self.pixel
        self.source = flat_tensor(f"{name}_src", f"{name}_si", length, dtype)
        self.source_rows, self.source_columns = size
        self.phases = []
        for (a, b), taps in offsets.items():
            (rows, columns), reads = shapes[a, b]
            tiles = TiledCorrelation(f"{name}{a}{b}", dtype, batch_dim, batch, channels,
                                     outputs, (rows, columns), reads, (1, 1), size,
                                     self.source, width) if taps else None
            self.phases.append(Phase(a, b, rows, columns, [t for t, _ in taps], tiles))

    def source_at(self, n, row, column, channel):
        """Where the gradient at (sample, row, column, channel) goes in the source."""
        row, column = row + self.origin[0], column + self.origin[1]
        return self.source[((n * self.source_rows + row) * self.source_columns + column)
                           * self.pixel + channel]

    def equations(self):
        """Every phase's tiled loop nest."""
        return [eq for p in self.phases if p.tiles is not None
                for eq in p.tiles.equations()]
