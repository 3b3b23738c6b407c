"""2D convolution (cross-correlation): hyperparameters, Functions, and the schedule
that lowers its maths (``correlation.py``: the forward pass and its adjoint rule)
to register tiles or NCHW nests."""

import numbers

import numpy as np
from devito import Dimension, Eq, Inc
from devito.types.utils import IgnoreDimSort

from devito_ml.activations import as_activation
from devito_ml.layer import WeightedLayer
from devito_ml.layout import stored_order
from devito_ml.autodiff import plain_equations
from devito_ml.layers.conv_tiles import (MAX_TILED_TAPS, TiledCorrelation,
                                         TiledTransposedCorrelation, TiledWeightGradient,
                                         literal_extent, tap_grid)
from devito_ml.layers.correlation import (Correlation, TransposedCorrelation,
                                          WeightCorrelation)
from devito_ml.layers.weight_columns import ColumnWeightGradient
from devito_ml.layers.weight_layouts import lane_blocked_copy
from devito_ml.layers.winograd import WinogradCorrelation, winograd_block
from devito_ml.layers.winograd_weights import WinogradWeightGradient
from devito_ml.layers.window import padding_halo, window_output_size
from devito_ml.batch import batch_dimension, batch_loop
from devito_ml.symbolics import Halo, stuffed_extent, stuffed_halo
from devito_ml.validation import (LayerArgumentError, ShapeError, as_pair,
                                  check_positive_ints)
from devito_ml.vector_width import tile_widths, vector_lanes

__all__ = ['Conv']

LANE_FILL = 0.75
"""Least share of their vector lanes that register-tiled channels must fill."""
TILED_WEIGHT_GRADIENT_MAX_BYTES = 64 << 20
"""Largest per-sample partial sums of a tiled weight gradient (above: the columns)."""
COLUMN_WEIGHT_GRADIENT_MAX_BYTES = 256 << 20
"""Largest tap columns of a weight gradient as matrix products (above: the ``Inc``)."""


def tile_width(channels):
    """float32 lanes of the register tiles whose vector lanes run over
    ``channels``: the widest of :func:`~devito_ml.vector_width.tile_widths` whose
    whole registers the channels fill to ``LANE_FILL``; None where none is.

    Decided in float32 whatever the layer's dtype (not known yet when a net asks
    for input halos): float64 lanes are half as many, so they fill at least as
    well.
    """
    for width in tile_widths():
        if channels / (-(-channels // width) * width) >= LANE_FILL:
            return width
    return None


def fills_lanes(channels):
    """Whether ``channels`` fill ``LANE_FILL`` of the vector lanes of some tile
    width (:func:`tile_width`): whether passes over them are register-tiled."""
    return tile_width(channels) is not None


class Conv(WeightedLayer):
    r"""2D convolution of an NCHW input with ``out_channels`` kernels.

    Parameters
    ----------
    kernel_size : tuple of int
        ``(out_channels, rows, cols)``; input channels come from ``input_size``.
    input_size : tuple of int, optional
        ``(batch, channels, rows, cols)``; inside a net it is inferred from what
        feeds the layer.
    stride, padding, dilation : int or pair of int
        As ``torch.nn.Conv2d``; padding is zeros, and may be ``'valid'`` (none) or
        ``'same'`` (stride 1, where it pads both sides alike: an odd kernel, or an
        even reach ``dilation * (kernel - 1)``).
    bias : bool
        Whether to add a learnt bias per output channel.
    activation : Activation or callable, optional
        Applied to the output (default identity).
    name : str, optional
        Prefix of every Function and loop of the layer (default ``conv``).
    dtype : numpy dtype, optional
        float32 or float64; inside a net, the net's (default float32).
    generate_code : bool
        Build standalone forward/backward operators now.
    seed : int, optional
        Seed of the parameter initialisation.
    groups : int
        Grouped convolution, as ``torch.nn.Conv2d``: input and output channels
        split into ``groups`` blocks, each output block reading its input block.
    winograd : bool
        Let the forward pass of a 3x3 stride-1 convolution with 32 or more input
        and output channels run as Winograd's ``F(4x4, 3x3)`` or ``F(2x2, 3x3)``
        (``winograd.py``): fewer multiply-adds, different rounding (float32
        outputs within ~5e-6 of their largest magnitude of the direct sums).
        False: always the direct sums.

    Shape
    -----
    ``(N, C, H, W) -> (N, K, OH, OW)`` with
    ``OH = floor((H + 2*p - d*(R - 1) - 1)/s) + 1`` (likewise ``OW``).

    Notes
    -----
    The layer states its forward pass, a
    :class:`~devito_ml.layers.correlation.Correlation`; the backward pass comes from
    that operation's adjoint rule. With ``z = W * x + b`` and ``y = f(z)``,
    ``dz = dy . f'(y)``:

    .. math::

        y_{nkij} &= f\big(b_k + \sum_{c,r,q} W_{kcrq}\, x_{n,c,is+rd-p,js+qd-p}\big)\\
        \partial b_k &= \sum_{n,i,j} dz_{nkij}\\
        \partial W_{kcrq} &= \sum_{n,i,j} dz_{nkij}\, x_{n,c,is+rd-p,js+qd-p}\\
        \partial x_{nchw} &= \sum_{k,r,q} W_{kcrq}\, \tilde{dz}_{n,k,h+p-rd,w+p-qd}

    where :math:`\tilde{dz}` is ``dz`` with ``s - 1`` zeros between entries and a
    zero halo: the input gradient is a gather, with no atomics. Its schedule
    (:meth:`schedule`) runs every pass as register tiles (``conv_tiles.py``,
    channels last) when its vector channels fill three quarters of whole vector
    registers (the input gradient one tiled correlation a stride phase, the weight
    gradient one partial sum a sample, or one matrix product a tap over the batch
    where that writes fewer entries, ``weight_columns.py``), else NCHW nests
    (image columns innermost, the weight gradient parallel over its own
    channels); a 3x3 stride-1 convolution of 32 or more channels runs all three
    passes as Winograd's ``F(m x m, 3 x 3)`` instead (``winograd.py``,
    ``winograd_weights.py``: ResNet-18's training step 1.5x faster on AMD EPYC Zen
    4); what users read is NCHW either way (inside a net, the activations between
    tiled layers are stored channels last and indexed as NCHW,
    :mod:`devito_ml.layout`).

    Examples
    --------
    >>> conv = Conv(kernel_size=(4, 3, 3), input_size=(2, 3, 8, 8), padding=1)
    >>> conv.kernel.shape, conv.result.shape
    ((4, 3, 3, 3), (2, 4, 8, 8))
    """

    family = 'conv'
    forward_winograd = input_gradient_winograd = weight_gradient_winograd = None
    """The :class:`~devito_ml.layers.winograd.WinogradCorrelation` scheduling the
    forward pass, and the input gradient's, and the
    :class:`~devito_ml.layers.winograd_weights.WinogradWeightGradient` scheduling
    the weight gradient, where they do (see ``winograd``)."""

    def __init__(self, kernel_size, input_size=None, stride=1, padding=0, dilation=1,
                 bias=True, activation=None, name=None, dtype=None,
                 generate_code=False, seed=None, groups=1, winograd=True):
        self.name = name or self.family
        if not isinstance(winograd, (bool, np.bool_)):
            raise LayerArgumentError(f"Conv `{self.name}`: `winograd` must be True or "
                                     f"False, got {winograd!r}")
        self.winograd = bool(winograd)
        self.kernel_size = check_positive_ints(self, 'kernel_size', kernel_size, 3)
        self.stride = as_pair(self, 'stride', stride, minimum=1)
        self.dilation = as_pair(self, 'dilation', dilation, minimum=1)
        self.padding = self._padding(padding)
        if not isinstance(groups, numbers.Integral) or groups < 1:
            raise LayerArgumentError(f"Conv `{self.name}`: `groups` must be a positive "
                                     f"int, got {groups!r}")
        self.groups = int(groups)
        if self.kernel_size[0] % self.groups:
            raise LayerArgumentError(
                f"Conv `{self.name}`: out channels {self.kernel_size[0]} must be "
                f"divisible by `groups`, got groups={self.groups}")
        self.has_bias = bool(bias)
        self.activation = as_activation(activation)
        super().__init__(input_size, name, dtype, generate_code, seed)

    def _padding(self, padding):
        """``padding`` as a pair of ints; ``'valid'`` is none, ``'same'`` keeps the
        input size at stride 1 (as torch), where it is symmetric."""
        if not isinstance(padding, str):
            return as_pair(self, 'padding', padding, minimum=0)
        if padding == 'valid':
            return (0, 0)
        if padding != 'same':
            raise LayerArgumentError(f"Conv `{self.name}`: `padding` must be an int, a "
                                     f"pair of ints, 'valid' or 'same', got {padding!r}")
        if self.stride != (1, 1):
            raise LayerArgumentError(f"Conv `{self.name}`: padding='same' needs stride "
                                     f"1 (as torch), got stride {self.stride}")
        reach = [d * (k - 1) for k, d in zip(self.kernel_size[1:], self.dilation)]
        if any(r % 2 for r in reach):
            raise LayerArgumentError(
                f"Conv `{self.name}`: padding='same' with kernel "
                f"{self.kernel_size[1:]} and dilation {self.dilation} pads one more "
                "row or column after than before (torch does), and a Conv pads both "
                "sides alike: pad both by the larger amount and follow with "
                "Crop(before=1) on that axis (what from_torch does)")
        return tuple(r // 2 for r in reach)

    def _check_input_size(self, input_size):
        size = super()._check_input_size(input_size)
        if size[1] % self.groups:
            raise ShapeError(f"Conv `{self.name}`: in channels {size[1]} must be "
                             f"divisible by `groups`, got groups={self.groups}")
        return size

    @property
    def output_size(self):
        _, r, q = self.kernel_size
        return window_output_size(self, self.kernel_size[0], (r, q), self.dilation)

    def _create_functions(self):
        _, c, h, w = self.input_size
        _, k, oh, ow = self.output_size
        _, r, q = self.kernel_size
        g = self.groups
        self.k = self.out_dims[1]
        # literal extents: gcc unrolls the taps of every nest over the kernel (an
        # optimizer's update of the kernel ran 3x faster, no longer a vector loop of
        # three entries with run-time bounds)
        self.ky = literal_extent(f"{self.name}_ky", r)
        self.kx = literal_extent(f"{self.name}_kx", q)
        # the kernel's input channel: all of them, or those of one group
        self.wc = self.in_dims[1] if g == 1 else self.dim('W_c', c // g)
        weight_dims = (self.k, self.wc, self.ky, self.kx)
        self.kernel = self.tensor('W', weight_dims, (k, c // g, r, q))
        self.kernel_gradients = self.tensor('dW', weight_dims, (k, c // g, r, q))
        if g > 1:
            self._create_group_indices()
        self.bias = self.tensor('b', (self.k,), (k,))
        self.bias_gradients = self.tensor('db', (self.k,), (k,))
        # the bias gradient's sums, each sample's first where dz is channels last
        self.bias_sample_sums = self.tensor(
            'db_sample_sums', (batch_dimension(f"{self.name}_db_sample_n"), self.k),
            (self.input_size[0], k), dtype=np.float64) \
            if self.result_channels_last and self.has_bias else None
        if self.activation.is_identity:
            self.pre_activation_gradients = self.result_gradients
        else:
            self.pre_activation_gradients = self.output_tensor('dz')
        self._create_channels_last()

    def _create_group_indices(self):
        """Where each output channel's input block starts, and the converse.

        Grouped nests read channels through these integer tables (an indirect
        index), so one loop nest serves every group.
        """
        k, c, g = self.kernel_size[0], self.input_size[1], self.groups
        per_k, per_c = k // g, c // g
        channel = self.dim('group_c', c)
        self.group_input_start = self.tensor('group_in', (self.k,), (k,),
                                             dtype=np.int32)
        self.group_input_start.data[:] = (np.arange(k) // per_k) * per_c
        self.group_output_start = self.tensor('group_out', (channel,), (c,),
                                              dtype=np.int32)
        self.group_output_start.data[:] = (np.arange(c) // per_c) * per_k
        self.group_channel_start = self.tensor('group_c0', (channel,), (c,),
                                               dtype=np.int32)
        self.group_channel_start.data[:] = (np.arange(c) // per_c) * per_c

    @property
    def fan_in(self):
        _, r, q = self.kernel_size
        return self.input_size[1] // self.groups * r * q

    def _create_channels_last(self):
        """The register-tiled passes (``conv_tiles.py``) and the copies they need.

        The forward pass and the input gradient run channels last on flat tensors of
        their own when their vector channels fill ``LANE_FILL`` of their lanes; the
        weight gradient reads the forward pass's padded input and a channels-last
        copy of ``dz``. Copies live on Dimensions
        of their own: Devito imposes one loop order per operator and NCHW tensors
        order channels before rows.
        """
        n, c, h, w = self.input_size
        _, k, oh, ow = self.output_size
        _, r, q = self.kernel_size
        (sy, sx), (py, px), (dy, dx) = self.stride, self.padding, self.dilation
        self.cl_in_dims = (self.batch_dim, self.dim('in_cl_h', h),
                           self.dim('in_cl_w', w), self.dim('in_cl_c', c))
        yk = self.dim('dz_cl_k', k)
        self.dz_cl_dims = (self.batch_dim, self.dim('dz_cl_h', oh),
                           self.dim('dz_cl_w', ow), yk)
        taps = [(i, j) for i in range(r) for j in range(q)]
        # the tiles loop over a batch of their own, bounded by the active batch like
        # `n` (on `n`, Devito fuses them with the copies and serialises the batch)
        tile_n = batch_loop(f"{self.name}_tile_n", n)
        width = tile_width(k)     # float32 lanes of the forward and weight gradient
        self.input_gradient_tiles = TiledTransposedCorrelation(
            f"{self.name}_bwd", self.dtype, tile_n, n, k, c, (oh, ow), (h, w),
            (r, q), self.stride, self.padding, self.dilation, width=tile_width(c)) \
            if self.input_gradient_channels_last else None
        # the input gradient is a stride-1 correlation too (the kernel flipped,
        # its channels swapped) where the forward pass is
        block = winograd_block((r, q), self.stride, self.dilation, self.groups, (h, w),
                               k, c) if self.winograd and self.input_gradient_tiles \
            else None
        self.input_gradient_winograd = WinogradCorrelation(
            f"{self.name}_dwino", self.dtype, n, k, c, (h, w), block) if block else None
        if self.channels_last:
            self.forward_tiles = TiledCorrelation(
                f"{self.name}_fwd", self.dtype, tile_n, n, c, k, (oh, ow),
                [(i * dy, j * dx) for i, j in taps], self.stride,
                (h + 2 * py, w + 2 * px), width=width)
            block = winograd_block((r, q), self.stride, self.dilation, self.groups,
                                   (oh, ow), c, k) if self.winograd else None
            # Winograd's forward pass reads the tiles' padded source (which the
            # weight gradient reads too); the tiles' own nest is then not emitted
            self.forward_winograd = WinogradCorrelation(
                f"{self.name}_wino", self.dtype, n, c, k, (oh, ow), block) \
                if block else None
            kernel_cl_dims = (self.ky, self.kx, self.cl_in_dims[3], yk)
            self.kernel_gradients_cl = self.tensor('dW_cl', kernel_cl_dims,
                                                   (r, q, c, k))
            self.weight_gradient_tiles = self.weight_gradient_columns = None
            # Winograd's weight gradient reads the forward pass's transformed input
            self.weight_gradient_winograd = WinogradWeightGradient(
                f"{self.name}_wwino", self.forward_winograd) \
                if self.forward_winograd else None
            if self.weight_gradient_winograd is None:     # the direct sums'
                columns = ColumnWeightGradient.shape_for(c, k, self.dtype, width)
                columns_fit = columns is not None and ColumnWeightGradient.fits(
                    n, r * q, c, (oh, ow), self.dtype, COLUMN_WEIGHT_GRADIENT_MAX_BYTES)
                if TiledWeightGradient.fits(n, r * q, c, k, self.dtype,
                                            TILED_WEIGHT_GRADIENT_MAX_BYTES) and \
                        not (columns_fit and self._columns_smaller_than_partials):
                    self.weight_gradient_tiles = TiledWeightGradient(
                        f"{self.name}_dW", self.forward_tiles,
                        batch_loop(f"{self.name}_dW_tile_n", n), n, k, (oh, ow), (r, q),
                        self.dilation, self.input_gradient_tiles)
                elif columns_fit:
                    self.weight_gradient_columns = ColumnWeightGradient(
                        f"{self.name}_dWcol", self.forward_tiles, self.batch_dim, n, k,
                        (oh, ow), (r, q), self.dilation, columns)
                else:
                    self.dz_cl = self.tensor('dz_cl', self.dz_cl_dims, (n, oh, ow, k))
        if not self.input_gradient_channels_last:
            halos = [stuffed_halo(size, out, kern, s, p, d) for size, out, kern, s, p, d
                     in zip((h, w), (oh, ow), (r, q), self.stride, self.padding,
                            self.dilation)]
            stuffed = (stuffed_extent(oh, sy), stuffed_extent(ow, sx))
            plain = lambda role: Dimension(f"{self.name}_{role}")  # noqa: E731
            dims = (self.batch_dim, plain('dz_stuffed_c'), plain('dz_stuffed_h'),
                    plain('dz_stuffed_w'))
            self.stuffed_gradients = self.tensor('dz_stuffed', dims, (n, k) + stuffed,
                                                 Halo((0, 0), (0, 0), *halos))

    @property
    def _columns_smaller_than_partials(self):
        """Whether the weight gradient's tap columns and packed output gradient
        (:class:`~devito_ml.layers.weight_columns.ColumnWeightGradient`: the
        batch's output positions times taps x channels + outputs) take fewer
        entries than the tiles' partial sums, one a sample (taps x channels x
        outputs, :class:`~devito_ml.layers.conv_tiles.TiledWeightGradient`): both
        are written and read once a step, and the products cost the same.

        Measured on AMD EPYC Zen 4, 8 lanes, batch 32, fastest of 10 rounds
        (weight gradient, tiles against columns): 1x1 1024->256 on 8x8 maps 12.2
        against 6.9 ms, 256->1024 9.4 against 7.7, 1024->512 stride 2 from 8x8
        9.2 against 3.0, 3x3 128->256 stride 2 from 16x16 the columns faster by
        4.8 ms; the tiles faster where the partials are smaller: 1x1 512->128 on
        16x16 by 4.3 ms, 256->512 stride 2 from 32x32 by 9.7.
        """
        _, c = self.input_size[:2]
        _, k, oh, ow = self.output_size
        _, r, q = self.kernel_size
        return oh * ow * (r * q * c + k) < r * q * c * k

    @property
    def _tiled(self):
        """Whether register tiles fit: one group, at most ``MAX_TILED_TAPS`` taps."""
        _, r, q = self.kernel_size
        return self.groups == 1 and r * q <= MAX_TILED_TAPS

    @property
    def input_gradient_channels_last(self):
        """The input gradient register-tiled: when the input channels fill
        ``LANE_FILL`` of the lanes of some tile width (:func:`tile_width`)."""
        return fills_lanes(self.input_size[1]) and self._tiled

    @property
    def channels_last(self):
        """Forward and weight gradient register-tiled: when the output channels,
        their vector lanes, fill at least ``LANE_FILL`` of them at some tile width
        (:func:`tile_width`; LeNet-5's 6 channels fill 6 of 8 float32 lanes: its
        batch-64 step ran 16% faster tiled than with NCHW nests; 3 of 8 do not).
        """
        return fills_lanes(self.kernel_size[0]) and self._tiled

    def reads_channels_last(self, index):
        """A channels-last input where every pass over it is register-tiled: the
        tiles' copies read it in its own order."""
        return self.channels_last and self.input_gradient_channels_last

    def writes_channels_last(self):
        """A channels-last output where the forward pass and the weight gradient
        are register-tiled (they write and read it channels innermost)."""
        return self.channels_last

    @property
    def input_halo(self):
        """The NCHW nests read the input padded in place; channels last, a copy."""
        return Halo.none(4) if self.channels_last else padding_halo(self.padding)

    def _forward_equations(self, training):
        """The maths: one :class:`~devito_ml.layers.correlation.Correlation`, whose
        adjoint rule gives the backward pass; :meth:`schedule` lowers both."""
        return [Correlation(self, self.result, self.input, self.kernel,
                            self.bias if self.has_bias else None, self.activation)]

    def schedule(self, equations):
        """Each correlation as register tiles (channels last) where its vector
        channels fill ``LANE_FILL`` of the lanes, else as its NCHW nests."""
        lowered, copied = [], False
        for item in equations:
            if isinstance(item, Correlation) and self.channels_last:
                lowered += self._tiled_forward(item)
            elif isinstance(item, WeightCorrelation) and self.channels_last:
                if self._weight_gradient_reads_input_gradient_source and not copied:
                    lowered += self._input_gradient_source_copy(item.gradient)
                    copied = True
                lowered += self._weight_gradient_equations(item)
            elif isinstance(item, TransposedCorrelation) and \
                    self.input_gradient_channels_last:
                if not copied:
                    lowered += self._input_gradient_source_copy(item.gradient)
                    copied = True
                lowered += self._input_gradient_equations(item)
            else:
                lowered += plain_equations([item])
        return lowered

    def _tiled_forward(self, correlation):
        n, xh, xw, xc = self.cl_in_dims
        _, k, y, x = self.out_dims
        (py, px), (_, q) = self.padding, self.kernel_size[1:]
        tiles = self.forward_tiles
        bias = correlation.bias[k] if correlation.bias is not None else 0
        value = tiles.target_at(n, y, x, k) + bias
        # Transposing copies name their loop order: they relate the same Dimensions
        # in two orders, which Devito's dimension sort would find cyclic.
        copy = Eq(tiles.source_at(n, xh + py, xw + px, xc),
                  correlation.source[n, xc, xh, xw],
                  implicit_dims=IgnoreDimSort((n, xh, xw, xc)))
        if self.forward_winograd is not None:
            return [copy] + self._winograd_forward(correlation)
        return [copy,
                *tiles.weight_equations(
                    self.ky * q + self.kx,
                    lambda channel, output: correlation.kernel[output, channel,
                                                               self.ky, self.kx],
                    (self.ky, self.kx))] + \
            tiles.equations() + \
            [Eq(correlation.target[n, k, y, x], correlation.activation.forward(value),
                implicit_dims=IgnoreDimSort(stored_order(correlation.target,
                                                         (n, k, y, x))))]

    def _winograd_forward(self, correlation):
        """The forward pass as Winograd's ``F(m x m, 3 x 3)`` (``winograd.py``) on
        the tiles' padded source, bias and activation applied as each output is
        stored."""
        target, activation = correlation.target, correlation.activation

        def store(n, k, y, x, value, loops):
            if correlation.bias is not None:
                value = value + correlation.bias[k]
            return Eq(target[n, k, y, x], activation.forward(value),
                      implicit_dims=IgnoreDimSort(loops))

        return self.forward_winograd.equations(
            lambda k, c, i, j: correlation.kernel[k, c, i, j],
            self.forward_tiles.source_at, store)

    def _winograd_input_gradient(self, correlation):
        """dx as Winograd's ``F(m x m, 3 x 3)`` at stride 1: ``dx[y, x, c] = sum
        over (u, v, k) of dz[y + u + p - 2, x + v + p - 2, k] * W[k, c, 2 - u,
        2 - v]``, ``dz`` read from the tiles' padded source (its zero halo)."""
        transposed, target = self.input_gradient_tiles, correlation.target
        py, px = self.padding

        def store(n, c, y, x, value, loops):
            return Eq(target[n, c, y, x], value, implicit_dims=IgnoreDimSort(loops))

        return self.input_gradient_winograd.equations(
            lambda c, k, u, v: correlation.kernel[k, c, 2 - u, 2 - v],
            lambda n, y, x, k: transposed.source_at(n, y + py - 2, x + px - 2, k),
            store, outputs_outermost=False)

    def _weight_gradient_equations(self, correlation):
        r"""dW[k, c, i, j] = sum over (batch, y, x) of dz * input, channels last.

        Parallel over input channels, the batch and output positions inside, and
        one accumulation a tap vectorised over output channels: each thread owns its
        rows of ``dW_cl`` (no atomics); from register tiles where their per-sample
        partial sums fit.
        """
        n, gh, gw, yk = self.dz_cl_dims
        dz = correlation.gradient
        if self.weight_gradient_winograd is not None:
            return self._winograd_weight_gradient(correlation)
        if self.weight_gradient_columns is not None:
            return self._weight_gradient_equations_columns(correlation)
        if self.weight_gradient_tiles is not None:
            return self.weight_gradient_tiles.gradient_equations(
                n, gh, gw, lambda output: dz[n, output, gh, gw]) + \
                self._weight_gradient_equations_tiled(correlation)
        xc = self.cl_in_dims[3]
        _, yh, yw, _ = self.dz_cl.dimensions
        m = self.reduction_batch_dim
        (sy, sx), (dy, dx) = self.stride, self.dilation
        dw = self.kernel_gradients_cl
        eqs = [Eq(self.dz_cl[n, gh, gw, yk], dz[n, yk, gh, gw],
                  implicit_dims=IgnoreDimSort((n, gh, gw, yk))),
               Eq(dw[self.ky, self.kx, xc, yk], 0)]
        taps = correlation.taps()
        order = (xc, m, yh, yw, yk) if taps != [(self.ky, self.kx)] else \
            (self.ky, self.kx, xc, m, yh, yw, yk)
        for i, j in taps:
            read = self.forward_tiles.source_at(m, yh * sy + i * dy, yw * sx + j * dx, xc)
            eqs.append(Inc(dw[i, j, xc, yk], read * self.dz_cl[m, yh, yw, yk],
                           implicit_dims=IgnoreDimSort(order)))
        k, c = self.k, self.in_dims[1]
        eqs.append(Eq(correlation.target[k, c, self.ky, self.kx],
                      dw[self.ky, self.kx, c, k],
                      implicit_dims=IgnoreDimSort((k, c, self.ky, self.kx))))
        return eqs

    def _winograd_weight_gradient(self, correlation):
        """dW as Winograd's ``F(3 x 3, m x m)`` over the forward pass's transformed
        input (``winograd_weights.py``), into the channels-last ``dW_cl`` and
        from there, transposed, into the kernel's gradient."""
        dz, dw = correlation.gradient, self.kernel_gradients_cl

        def store(output, channel, i, j, value, loops):
            return Eq(dw[i, j, channel, output], value,
                      implicit_dims=IgnoreDimSort(loops))

        if self._weight_gradient_reads_input_gradient_source:
            source = self.input_gradient_tiles

            def read(n, output, y, x):
                return source.source_at(n, y, x, output)
        else:
            def read(n, output, y, x):
                return dz[n, output, y, x]
        # transposed a block of lanes of outputs at a time (weight_layouts.py)
        outputs, channels, rows, columns = correlation.target.shape
        name = f"{self.name}_dW_t"
        transpose = lane_blocked_copy(
            name, lambda k, c, i, j: correlation.target[k, c, i, j],
            lambda k, c, i, j: dw[i, j, c, k], outputs,
            (literal_extent(f"{name}_c", channels),
             literal_extent(f"{name}_i", rows), literal_extent(f"{name}_j", columns)),
            vector_lanes(self.dtype))
        return self.weight_gradient_winograd.equations(read, store) + [transpose]

    def _weight_gradient_equations_tiled(self, correlation):
        """dW from register tiles: one partial sum a sample (``conv_tiles.py``),
        then their sum over the batch, parallel over taps and input channels."""
        tiles = self.weight_gradient_tiles
        xc, yk = self.cl_in_dims[3], self.dz_cl_dims[3]
        m, dw = self.reduction_batch_dim, self.kernel_gradients_cl
        k, c = self.k, self.in_dims[1]
        return tiles.equations() + [
            Eq(dw[self.ky, self.kx, xc, yk], 0),
            Inc(dw[self.ky, self.kx, xc, yk],
                tiles.partial_at(m, self.ky, self.kx, xc, yk),
                implicit_dims=IgnoreDimSort((self.ky, self.kx, xc, m, yk))),
            Eq(correlation.target[k, c, self.ky, self.kx], dw[self.ky, self.kx, c, k],
               implicit_dims=IgnoreDimSort((k, c, self.ky, self.kx)))]

    def _weight_gradient_equations_columns(self, correlation):
        """dW as one matrix product a tap over the whole batch
        (``weight_columns.py``): wide layers whose per-sample partial sums do not
        fit."""
        columns, dz = self.weight_gradient_columns, correlation.gradient
        dw = correlation.target
        return columns.copies(lambda n, k, y, x: dz[n, k, y, x]) + \
            columns.equations() + \
            columns.gradient_equations(lambda k, c, ky, kx: dw[k, c, ky, kx])

    @property
    def _weight_gradient_reads_input_gradient_source(self):
        """Whether the weight gradient reads ``dz`` from the input gradient's
        padded source: its tiles (``TiledWeightGradient.reads_in_place``), or
        Winograd's transform of an NCHW ``dz`` (a layer alone), which read it
        there channels last, transposed once (read in place, each of its 16
        reads a strided gather: 32->64 channels on 28x28 maps, 4.9 ms)."""
        if not self.channels_last:
            return False
        if self.weight_gradient_winograd is not None:
            return not self.result_channels_last and \
                self.input_gradient_tiles is not None
        tiles = self.weight_gradient_tiles
        return tiles is not None and tiles.gradient_source is not None

    def _input_gradient_source_copy(self, dz):
        """``dz`` into the padded, channels-last source of the input gradient's
        tiles; the weight gradient's tiles may read it there too."""
        n, gh, gw, yk = self.dz_cl_dims
        return [Eq(self.input_gradient_tiles.source_at(n, gh, gw, yk), dz[n, yk, gh, gw],
                   implicit_dims=IgnoreDimSort((n, gh, gw, yk)))]

    def _swapped_weights(self, phase, kernel):
        """Fill a stride phase's tile weights: the taps it reads of ``kernel``, its
        channels swapped. Where those taps form a grid (every tap at stride 1), one
        nest over them, each row of the kernel read once; else one nest a tap."""
        tiles, grid = phase.tiles, tap_grid(phase.kernel_taps)
        if grid is None:
            return [eq for t, (i, j) in enumerate(phase.kernel_taps)
                    for eq in tiles.weight_equations(
                        t, lambda channel, output, i=i, j=j:
                        kernel[channel, output, i, j])]
        (rows, first_row, row_step), (columns, first_column, column_step) = grid
        u = literal_extent(f"{tiles.name}_W_ky", rows)
        v = literal_extent(f"{tiles.name}_W_kx", columns)
        return tiles.weight_equations(
            u * columns + v,
            lambda channel, output: kernel[channel, output, first_row + u * row_step,
                                           first_column + v * column_step], (u, v))

    def _input_gradient_equations(self, correlation):
        """dx as a gather, register-tiled channels last: one tiled correlation a
        stride phase (``conv_tiles.py``), or Winograd's (``winograd.py``)."""
        n, ci = self.input_gradient_dims[:2]
        transposed = self.input_gradient_tiles
        if self.input_gradient_winograd is not None:
            return self._winograd_input_gradient(correlation)
        eqs = []
        for phase in transposed.phases:
            if phase.tiles is not None:
                eqs += self._swapped_weights(phase, correlation.kernel)
        eqs += transposed.equations()
        (sy, sx) = self.stride
        for phase in transposed.phases:
            a, b = phase.row_phase, phase.column_phase
            y = self.dim(f'din{a}{b}_h', phase.rows)
            x = self.dim(f'din{a}{b}_w', phase.columns)
            value = 0 if phase.tiles is None else phase.tiles.target_at(n, y, x, ci)
            eqs.append(Eq(correlation.target[n, ci, y * sy + a, x * sx + b], value,
                          implicit_dims=IgnoreDimSort(stored_order(correlation.target,
                                                                   (n, ci, y, x)))))
        return eqs
