"""Kernels copied between the user's ``(k, c, i, j)`` order and the orders the
tiles read, a block of vector lanes of ``k`` at a time.

Between the two orders ``k`` is the outermost index on one side and the innermost
on the other: walked along either side, each read (or write) of the other lands
in a cache line of its own, thousands of them between two uses of a line. Walked
a block of ``k`` at a time, the other indices inside and the block's lanes
innermost, one side reads (or writes) whole vectors and the other touches one
line a lane, the same few lines for every index inside: both stay in L1.

Measured on AMD EPYC Zen 4 (8 lanes), a 512 -> 512 3x3 kernel (9.4 MB): the
Winograd forward pass's copy, outputs innermost, 2.9 ms each tap's outputs
gathered, 1.5 a block of lanes at a time; the weight gradient's transpose from
channels last, 6.5 ms output by output, 1.1 a block at a time.
"""

from devito import Eq
from devito.types.utils import IgnoreDimSort

from devito_ml.lanes import LaneDimension
from devito_ml.layers.conv_tiles import literal_extent

__all__ = ['lane_blocked_copy']


def lane_blocked_copy(name, write, read, outputs, loops, lanes):
    """``write(k, *loops) = read(k, *loops)`` for ``k < outputs``, in blocks of
    ``lanes``: the loops ``<name>_k_block``, then ``loops``, then the lanes
    ``<name>_k_lane``. Where ``lanes`` does not divide ``outputs``, ``k``
    outermost (``<name>_k``), then ``loops``.

    Parameters
    ----------
    name : str
        Prefix of its loops.
    write, read : callable
        ``(k, *loops) -> Indexed`` and ``-> expression``.
    outputs : int
        The extent of ``k``.
    loops : tuple of Dimension
        The other indices, outermost first.
    lanes : int

    Returns
    -------
    Eq
    """
    if outputs % lanes:
        k = literal_extent(f"{name}_k", outputs)
        return Eq(write(k, *loops), read(k, *loops),
                  implicit_dims=IgnoreDimSort((k, *loops)))
    block = literal_extent(f"{name}_k_block", outputs // lanes)
    lane = LaneDimension.of(f"{name}_k_lane", lanes)
    k = block * lanes + lane
    return Eq(write(k, *loops), read(k, *loops),
              implicit_dims=IgnoreDimSort((block, *loops, lane)))
