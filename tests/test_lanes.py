"""The lane-vectorising extension of Devito and the register tiles it serves.

``devito_ml.lanes`` relies on pieces of Devito 4.8 named here; a new Devito that
changes one of them fails these tests loudly instead of silently generating scalar
convolutions.
"""

import inspect
import re
import sys

import devito
import numpy as np
import pytest
import torch
from devito.core import Cpu64AdvOmpOperator, Intel64AdvOmpOperator
from devito.types.utils import IgnoreDimSort
from devito.operator.operator import Operator
from devito.passes.iet.parpragma import PragmaSimdTransformer

from devito_ml import FullyConnected, Flat, Net, ReLU, compiled, lanes
from devito_ml.interop import to_torch, torch_state_dict
from devito_ml.optim import SGD
from devito_ml.layers.conv import Conv
from devito_ml.layers.conv_tiles import (MAX_TILE_COLUMNS, TiledCorrelation,
                                         TiledWeightGradient, gradient_tile_shape,
                                         tap_grid, tile_shape)
from devito_ml.vector_width import LANES_VARIABLE, vector_registers


def test_pinned_devito_version():
    assert devito.__version__.startswith('4.8.23')


def test_operator_new_is_the_sequence_build_operator_mirrors():
    source = inspect.getsource(Operator.__new__)
    steps = ['parse_kwargs(**kwargs)', 'operator_selector(**kwargs)',
             'cls._normalize_kwargs(**kwargs)', 'cls._check_kwargs(**kwargs)',
             'cls._sanitize_exprs(expressions, **kwargs)', "timed_region('op-compile')",
             'cls._build(expressions, **kwargs)', 'CacheInstances.clear_caches()',
             'memoized_func.clear_build_caches()', 'op._emit_build_profiling()']
    positions = [source.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions) if p < 0]
    assert positions == sorted(positions)


def test_simd_pass_is_the_method_the_extension_overrides():
    assert 'def _make_simd(self, iet)' in inspect.getsource(PragmaSimdTransformer)
    assert 'IsPerfectIteration' in inspect.getsource(PragmaSimdTransformer._make_simd)
    for base in (Cpu64AdvOmpOperator, Intel64AdvOmpOperator):
        module = inspect.getsource(sys.modules[base.__module__])
        assert 'parizer = cls._Target.Parizer(**kwargs)' in module
        assert 'parizer.make_simd(graph)' in module
        assert lanes.lane_operator_class(base)._Target.Parizer is lanes.LaneOmpizer


def _lane_pragma(code, lane):
    """The line above the loop over ``lane``."""
    lines = code.splitlines()
    for i, line in enumerate(lines):
        if re.search(rf'for \(int {lane} = 0; {lane} <= \d+; {lane} \+= 1\)', line):
            return lines[i - 1].strip()
    raise AssertionError(f"no loop over {lane}")


def test_lane_loop_with_a_reduction_inside_is_vectorised(width):
    """The body {scalar init; loop over c; store} is not a perfect innermost loop:
    Devito alone leaves it scalar, the extension vectorises it."""
    tiles = TiledCorrelation('t', np.float32, devito.Dimension('n'), 2, 5, 11, (4, 7),
                             [(0, 0), (1, 2)], (1, 1), (5, 9))
    eqs = tiles.equations()
    code = str(lanes.build_operator(eqs, name='tiles', language='openmp'))
    assert _lane_pragma(code, 't_lane').startswith('#pragma omp simd')
    assert f'for (int t_lane = 0; t_lane <= {width - 1}; t_lane += 1)' in code
    plain = str(Operator(eqs, name='tiles', language='openmp'))
    assert not _lane_pragma(plain, 't_lane').startswith('#pragma omp simd')


def test_an_unrolled_innermost_loop_hands_its_simd_to_the_loop_around_it():
    """A row's entries stored over an unrolled loop (a Winograd transform):
    Devito would vectorise the short unrolled loop; the pragma goes to the
    channels' loop around it, and the unrolled loop gets ``GCC unroll``."""
    sample, channel = devito.Dimension('n'), lanes.LiteralDimension.of('c', 16)
    entry = lanes.UnrolledDimension.of('b', 6)
    source = devito.Function(name='source', dimensions=(sample, channel),
                             shape=(4, 16), dtype=np.float32)
    table = devito.Function(name='table', dimensions=(entry,), shape=(6,),
                            dtype=np.float32)
    target = devito.Function(name='target', dimensions=(entry, sample, channel),
                             shape=(6, 4, 16), dtype=np.float32)
    row = devito.types.Scalar(name='row', dtype=np.float32)
    eqs = [devito.Eq(row, 2 * source[sample, channel], implicit_dims=(sample, channel)),
           devito.Eq(target[entry, sample, channel], table[entry] * row,
                     implicit_dims=IgnoreDimSort((sample, channel, entry)))]
    code = str(lanes.build_operator(eqs, name='rows', language='openmp'))
    assert _lane_pragma(code, 'c').startswith('#pragma omp simd')
    assert _lane_pragma(code, 'b') == '#pragma GCC unroll 6'


def test_wide_convolution_keeps_vectorised_lane_loops(width):
    """24 output and 16 input channels fill the lanes of every width: every pass
    is register-tiled, its lane loops vectorised."""
    layer = Conv((24, 3, 3), (2, 16, 13, 11), stride=2, padding=1, generate_code=True)
    assert layer.channels_last and layer.input_gradient_channels_last
    assert layer.forward_tiles.lanes == width
    assert layer.weight_gradient_tiles.stride == (2, 2)
    forward, backward = layer.forward_operator.code, layer.backward_operator.code
    assert _lane_pragma(forward, 'conv_fwd_lane').startswith('#pragma omp simd')
    for phase in ('00', '01', '10', '11'):   # the input gradient's stride phases
        pragma = _lane_pragma(backward, f'conv_bwd{phase}_lane')
        assert pragma.startswith('#pragma omp simd')
    assert _lane_pragma(backward, 'conv_dW_lane').startswith('#pragma omp simd')
    # the taps: loops in the equations, unrolled back into statements by gcc
    assert _lane_pragma(forward, 'conv_fwd_ky') == '#pragma GCC unroll 3'
    assert _lane_pragma(forward, 'conv_fwd_kx') == '#pragma GCC unroll 3'
    assert 'fmaf(' in forward and 'fmaf(' in backward
    assert 'atomic' not in forward + backward


def test_taps_of_a_grid_are_loops_others_one_statement_each():
    assert tap_grid([(0, 0), (0, 2), (1, 0), (1, 2)]) == ((2, 0, 1), (2, 0, 2))
    assert tap_grid([(3, 1), (1, 1)]) == ((2, 3, -2), (1, 1, 0))
    assert tap_grid([(0, 0), (1, 2), (2, 1)]) is None          # not a grid
    assert tap_grid([(0, 0), (0, 1), (1, 0)]) is None          # a grid, less a tap
    assert tap_grid([(0, 0), (1, 1), (0, 1), (1, 0)]) is None  # not row by row
    assert tap_grid([(0, 0), (0, 1), (0, 3)]) is None          # uneven steps


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('taps', [[(0, 0), (1, 2), (2, 1)],
                                  [(2, 3), (2, 1), (0, 3), (0, 1)]],
                         ids=['scattered', 'grid-backwards'])
def test_tiled_correlation_matches_numpy(dtype, taps, width):
    """Remainders everywhere: 11 outputs (not a whole lane block), 7 columns (not a
    whole tile), stride 2, taps one statement each or as unrolled loops (a grid
    walked backwards, as a stride phase of an input gradient reads it)."""
    rows, columns, channels, outputs, batch = 3, 7, 5, 11, 2
    stride = (2, 2)
    tiles = TiledCorrelation('u', dtype, devito.Dimension('n'), batch, channels, outputs,
                             (rows, columns), taps, stride, (6, 10))
    kernel = devito.Function(name='kernel', shape=(len(taps), channels, outputs),
                             dimensions=tuple(devito.Dimension(f'kernel_{axis}')
                                              for axis in 'tck'), dtype=dtype)
    copies = [eq for t in range(len(taps))
              for eq in tiles.weight_equations(t, lambda c, k, t=t: kernel[t, c, k])]
    op = compiled.CompiledOperator(copies + tiles.equations(), 'tiles')
    rng = np.random.default_rng(0)
    source = rng.standard_normal((batch, tiles.source_rows, tiles.source_columns,
                                  channels)).astype(dtype)
    weights = rng.standard_normal((len(taps), channels, outputs)).astype(dtype)
    tiles.source.data[:source.size] = source.ravel()
    kernel.data[:] = weights
    op.run(batch)
    got = tiles.target.data.reshape(batch, rows, tiles.columns, -1)
    got = got[:, :, :columns, :outputs]
    want = np.zeros((batch, rows, columns, outputs))
    for t, (ty, tx) in enumerate(taps):
        window = source[:, ty:ty + rows * 2:2, tx:tx + columns * 2:2, :]
        want += np.einsum('nyxc,ck->nyxk', window.astype(np.float64),
                          weights[t].astype(np.float64))
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('stride', [(1, 1), (2, 2), (3, 2)])
def test_tiled_weight_gradient_matches_numpy(dtype, stride, width):
    """Per-sample partial sums with remainders everywhere: 7 channels (no tile
    divides them), 11 outputs, a 2x3 kernel with dilation (2, 1), strides 1 to 3."""
    rows, columns, channels, outputs, batch = 3, 5, 7, 11, 2
    kernel, dilation = (2, 3), (2, 1)
    taps = [(i * dilation[0], j * dilation[1]) for i in range(2) for j in range(3)]
    n = devito.Dimension('n')
    forward = TiledCorrelation('u', dtype, n, batch, channels, outputs,
                               (rows, columns), taps, stride, (8, 12))
    tiles = TiledWeightGradient('g', forward, n, batch, outputs, (rows, columns),
                                kernel, dilation)
    row, column = (devito.Dimension(f'grad_{axis}') for axis in 'hw')
    grad = devito.Function(name='grad', shape=(batch, outputs, rows, columns),
                           dimensions=(n, devito.Dimension('grad_k'), row, column),
                           dtype=dtype)
    copy = tiles.gradient_equations(n, row, column, lambda k: grad[n, k, row, column])
    op = compiled.CompiledOperator(copy + tiles.equations(), 'weight_tiles')
    rng = np.random.default_rng(1)
    source = rng.standard_normal((batch, forward.source_rows, forward.source_columns,
                                  channels)).astype(dtype)
    gradient = rng.standard_normal((batch, rows, columns, outputs)).astype(dtype)
    forward.source.data[:source.size] = source.ravel()
    grad.data[:] = gradient.transpose(0, 3, 1, 2)
    op.run(batch)
    got = tiles.partial.data.reshape(batch, kernel[0], kernel[1], tiles.padded_channels,
                                     tiles.padded_outputs)[..., :channels, :outputs]
    want = np.zeros(got.shape)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            ty, tx = i * dilation[0], j * dilation[1]
            sy, sx = stride
            window = source[:, ty:ty + rows * sy:sy, tx:tx + columns * sx:sx, :]
            want[:, i, j] = np.einsum('nyxc,nyxk->nck', window.astype(np.float64),
                                      gradient.astype(np.float64))
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


def test_weight_gradient_tile_fits_the_registers_and_hides_latency(width):
    registers = vector_registers()
    for channels, blocks in [(32, 8), (16, 2), (3, 2), (64, 16), (1, 1)]:
        tile_channels, tile_blocks = gradient_tile_shape(channels, blocks)
        assert tile_channels <= channels and tile_blocks <= blocks
        assert tile_channels * tile_blocks + tile_blocks + 1 <= registers
    assert np.prod(gradient_tile_shape(32, 8)) >= 8   # two FMA units, 4 cycles each


def test_tile_fits_the_registers(width):
    columns, blocks = tile_shape(8, 28)
    assert columns * blocks + blocks + 1 <= vector_registers() - 2
    assert columns * blocks >= 8     # enough independent multiply-adds in flight
    assert tile_shape(1, 3) == (3, 1)


@pytest.mark.parametrize('columns', [4, 8, 16, 32, 28, 14, 7])
def test_tiles_fit_the_registers_on_every_map_width(columns, width):
    for blocks in (1, 2, 4, 32):
        tile_columns, tile_blocks = tile_shape(blocks, columns)
        assert tile_columns <= columns and tile_blocks <= blocks
        assert tile_columns * tile_blocks + tile_blocks + 1 <= vector_registers() - 2


def test_with_16_registers_tiles_pad_no_columns_where_a_full_tile_divides_them(
        monkeypatch):
    """ResNet's 8x8 and 16x16 maps: 5 columns (the widest of two blocks) padded
    8 to 10 and 16 to 20; one block of 8 columns pads none and ran 1.2x faster
    (256->256 3x3 on 8x8: 138 -> 164 GFLOP/s, 8 lanes)."""
    monkeypatch.setenv(LANES_VARIABLE, '8')
    assert tile_shape(32, 8) == (8, 1)
    assert tile_shape(16, 16) == (8, 1)
    assert tile_shape(8, 28) == (5, 2)       # 30 columns for 28, 32 with 8
    assert tile_shape(64, 4) == (4, 2)       # no wider tile fits 4 columns


def test_tiles_of_few_blocks_stay_narrow_whatever_registers_are_left(width):
    """One or two lane blocks would fill 32 registers with 13 or 28 columns, which
    ran 1.4-1.9x slower than 8 (conv_tiles.tile_shape)."""
    for blocks in (1, 2):
        columns, tile_blocks = tile_shape(blocks, 28)
        assert tile_blocks == blocks and columns <= MAX_TILE_COLUMNS
        assert columns * blocks + blocks + 1 <= vector_registers() - 2


def loop_order(code, names):
    """The order in which loops over ``names`` open in ``code``."""
    return sorted(names, key=lambda name: code.index(f"for (int {name} ="))


@pytest.mark.parametrize('size, blocks_first', [(4, True), (8, False)])
def test_on_maps_narrower_than_a_tile_blocks_of_outputs_run_outermost(
        size, blocks_first, monkeypatch):
    """Where a tile spends each weight on few columns, every block's weights are
    read once for all samples and rows (ResNet's 4x4 maps: 256->512 stride 2 ran
    2.2x faster); wider maps keep samples outermost."""
    monkeypatch.setenv(LANES_VARIABLE, '8')
    # the direct tiles (at 8x8 this convolution would run Winograd's transforms)
    layer = Conv((64, 3, 3), (2, 32, size, size), padding=1, generate_code=True,
                 winograd=False)
    code = layer.forward_operator.code
    batch = layer.forward_tiles.batch_dim.name
    order = loop_order(code, ['conv_fwd_k_block', batch, 'conv_fwd_h'])
    assert (order[0] == 'conv_fwd_k_block') == blocks_first


def test_blocks_outermost_in_a_fused_train_step(monkeypatch, rng):
    """The forward tiles of a narrow map order blocks before samples, the input
    gradient's samples before blocks: on one batch Dimension the fused train
    operator's loop order was cyclic (Devito refused to lower it)."""
    monkeypatch.setenv(LANES_VARIABLE, '8')
    net = Net([Conv((16, 3, 3), padding=1, activation=ReLU()),
               Conv((16, 3, 3), padding=1), Flat(), FullyConnected(3)],
              dtype=np.float64, seed=0, batch_size=2, input_shape=(8, 6, 6))
    assert net.layers[1].forward_tiles.blocks_outside
    x = rng.standard_normal(net.input_size)
    labels = np.array([0, 2])
    twin = to_torch(net)
    optimizer = SGD(net, lr=0.1, momentum=0.9)
    net.train_step(x, labels, optimizer)
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)),
                                      torch.from_numpy(labels)).backward()
    torch_optimizer.step()
    ours, theirs = torch_state_dict(net), twin.state_dict()
    assert len(ours) == len(theirs)
    for value, reference in zip(ours.values(), theirs.values()):
        np.testing.assert_allclose(value, reference.numpy(), rtol=1e-10, atol=1e-12)
