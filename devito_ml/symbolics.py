"""Small Devito building blocks shared by the layers.

Everything here is pinned to Devito 4.8 behaviour, measured with the version in
``setup.cfg``:

- ``Select`` is Devito's ``InlineIf`` (a C ternary) made usable inside equations:
  Devito's cluster passes rebuild expressions with ``evaluate=...``, which
  ``InlineIf`` does not accept, and ``sympy.Piecewise`` does not survive lowering.
- ``tensor`` builds a Grid-free ``Function`` with an explicit halo (zero padding lives
  in the halo, so padded reads need no branch and no copy).
- ``tap_dimension`` gives kernel-tap loops a default extent, so a loop over taps works
  even where no Function carries that Dimension.
- ``register_sum`` sums into a Scalar, not into the target's memory: an ``Inc`` of a
  per-channel entry stores it at every term, and two threads storing channels of
  one cache line took 10 ms over the 512 K values of one BatchNorm gradient; in a
  register no BatchNorm part of the small ResNet's step took more than 2.3 ms.
"""

import numpy as np
import sympy
from devito import DefaultDimension, Eq, Function
from devito.symbolics import CondEq, CondNe, InlineIf
from devito.types import Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml import compiler
from devito_ml.layout import (ChannelsLastFunction, is_channels_last, logical_dimensions,
                              logical_order, storage_order)

__all__ = ['Select', 'CondEq', 'CondNe', 'plain_view', 'tensor', 'tensor_like',
           'tap_dimension', 'Halo', 'stuffed_extent', 'stuffed_halo', 'kernel_taps',
           'MAX_UNROLLED_TAPS', 'register_sum', 'channel_sum', 'sample_sums']

MAX_UNROLLED_TAPS = 49


class Select(InlineIf):
    """``cond ? true_expr : false_expr`` in the generated C.

    Examples
    --------
    >>> from devito import Dimension
    >>> x = Dimension('x')
    >>> Select(CondEq(x, 0), 1, 2)
    (Eq(x, 0)) ? 1 : 2
    """

    def __new__(cls, cond, true_expr, false_expr, evaluate=None, **kwargs):
        return super().__new__(cls, cond, sympy.sympify(true_expr),
                               sympy.sympify(false_expr), **kwargs)


def tap_dimension(name, extent):
    """A kernel-tap Dimension whose extent defaults to ``extent``."""
    return DefaultDimension(name=name, default_value=int(extent))


class Halo(tuple):
    """Per-dimension ``(left, right)`` halo widths of a tensor."""

    def __new__(cls, *pairs):
        return super().__new__(cls, tuple((int(a), int(b)) for a, b in pairs))

    @classmethod
    def none(cls, ndim):
        return cls(*[(0, 0)] * ndim)


def tensor(name, dimensions, shape, dtype, halo=None, channels_last=False):
    """A Grid-free Devito Function with an explicit (default empty) halo.

    With ``channels_last``, a 4D activation stored ``(n, h, w, c)``
    (:class:`~devito_ml.layout.ChannelsLastFunction`); ``dimensions``, ``shape``
    and ``halo`` are given in NCHW order either way.
    """
    halo = Halo.none(len(shape)) if halo is None else halo
    padded = [extent + sum(sides) for extent, sides in zip(shape, halo)]
    nbytes = int(np.prod(padded)) * np.dtype(dtype).itemsize
    kind, order = (ChannelsLastFunction, storage_order) if channels_last else \
        (Function, tuple)
    return kind(name=name, dimensions=order(tuple(dimensions)), shape=order(tuple(shape)),
                dtype=np.dtype(dtype).type, space_order=0, halo=order(tuple(halo)),
                **compiler.allocation(nbytes))


def tensor_like(name, function, dtype=None):
    """A Function stored like ``function`` (Dimensions, shape and layout), no halo."""
    return tensor(name, logical_dimensions(function), logical_order(function.shape)
                  if is_channels_last(function) else function.shape,
                  dtype or function.dtype, channels_last=is_channels_last(function))


def register_sum(name, target, value, outer, inner, dtype=np.float64, finish=None):
    """Equations for ``target = finish(sum of value over the loops inner)``, the sum
    kept in a Scalar (a register) inside the loops ``outer``.

    Parameters
    ----------
    name : str
        Name of the Scalar (unique in an operator).
    target : Indexed
        Where the sum goes, indexed by ``outer`` only.
    value : expression
        The term, over ``outer + inner``.
    outer, inner : tuple of Dimension
        The loops around the sum (parallel) and those it runs over, in that order.
    dtype : numpy dtype
        Of the sum (double by default: a sum over a batch of images).
    finish : callable, optional
        Applied to the sum before it is stored (``lambda s: s / count``).
    """
    total = Scalar(name=name, dtype=np.dtype(dtype).type)
    outer, inner = tuple(outer), tuple(inner)
    return [Eq(total, 0, implicit_dims=outer),
            Eq(total, total + value, implicit_dims=IgnoreDimSort(outer + inner)),
            Eq(target, total if finish is None else finish(total), implicit_dims=outer)]


def channel_sum(name, target, value, channel, loops, partial=None, batch=None,
                finish=None, dtype=np.float64):
    """Equations for ``target = finish(sum of value over loops)``, one sum a
    channel: the per-channel sums of BatchNorm and of a bias gradient.

    Parameters
    ----------
    name : str
        Name of the register the sum is kept in (unique in an operator).
    target : Indexed
        Where the sum goes, indexed by ``channel`` only.
    value : expression
        The term, over ``channel`` and ``loops``.
    channel : Dimension
    loops : tuple of Dimension
        ``(batch, rows, columns)`` summed over, Dimensions of the caller's own.
    partial : Function, optional
        Stored on ``(loops[0], channels)`` in ``dtype``, where ``value`` is read
        channels last: each sample's sums first (:func:`sample_sums`), then their
        sum over ``batch`` (a batch Dimension of its own) in a register. Without
        it, a register sum, the channel outermost (an NCHW read).
    finish, dtype
        As :func:`register_sum`.
    """
    if partial is None:
        return register_sum(name, target, value, (channel,), loops, dtype, finish)
    return sample_sums(partial, value, loops, channel) + \
        register_sum(name, target, partial[batch, channel], (channel,), (batch,), dtype,
                     finish)


def sample_sums(partial, value, loops, channel):
    """Equations for ``partial[n, channel]`` = the sum of ``value`` over a sample's
    rows and columns, ``loops = (n, rows, columns)``, read channels last: the
    channels innermost (vectorised), parallel over samples. ``partial`` must be
    stored on ``n`` (Devito parallelises a loop over a Function's own Dimension,
    not over a DefaultDimension)."""
    n, rows, columns = loops
    if partial.dimensions[0] is not n:
        raise ValueError(f"sample_sums: `{partial.name}` must be stored on the batch "
                         f"loop `{n}`, got {partial.dimensions}")
    return [Eq(partial[n, channel], 0),
            # (an Eq, not an Inc: Devito makes an Inc inside a parallel loop atomic)
            Eq(partial[n, channel], partial[n, channel] + value,
               implicit_dims=IgnoreDimSort((n, rows, columns, channel)))]


def plain_view(function):
    """``function.data`` as a plain numpy view of the same memory.

    Devito's ``Data`` translates every index for MPI decompositions (~20 us a
    slice); the hot path of a step (inputs, targets, losses, outputs) slices plain
    views instead. The allocation never moves, so the view stays valid.
    """
    return function.data.view(np.ndarray)


def stuffed_extent(out_size, stride):
    """Extent of an output gradient with ``stride - 1`` zeros between entries."""
    return (out_size - 1) * stride + 1


def stuffed_halo(in_size, out_size, kernel, stride, padding, dilation=1):
    """Halo that lets ``in`` positions gather from a stuffed output gradient.

    The input gradient at ``h`` reads stuffed position ``h + padding - r*dilation``
    for every tap ``r``; that position must exist (halo entries stay zero).
    """
    length = stuffed_extent(out_size, stride)
    left = max(0, (kernel - 1) * dilation - padding)
    right = max(0, in_size - 1 + padding - (length - 1))
    return left, right


def kernel_taps(rows, cols, ky, kx):
    """The taps of a ``rows x cols`` window to unroll into one statement.

    Up to ``MAX_UNROLLED_TAPS`` taps, the literal offsets ``(i, j)`` row-major;
    above, the tap Dimensions ``(ky, kx)`` themselves, i.e. a loop. Measured on a
    3x3 convolution: one statement per output element (one load and one store,
    ``rows*cols`` multiply-adds) is 2-6 times faster than a loop over the taps,
    which loads and stores the output once per tap.
    """
    if rows * cols <= MAX_UNROLLED_TAPS:
        return [(i, j) for i in range(rows) for j in range(cols)]
    return [(ky, kx)]
