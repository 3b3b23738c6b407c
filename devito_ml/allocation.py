"""Allocating a net's Functions without one sweep of Devito's symbol cache each.

Devito 4.8 calls ``CacheManager.clear(force=False)`` before it allocates the data of
each Function (``devito/types/dense.py``, ``_allocate_memory``): a pass over every
symbol it has cached, which grows with the Functions already made, so allocating a
net's ``N`` Functions costs ``O(N^2)``. Measured on a ResNet-152 of width 8: 21 of
the 27 s that constructing its ``Net`` took. Inside :func:`batched_allocation` the
sweep is skipped, and made once when the block ends. The one name it swaps,
``devito.types.dense.CacheManager``, is pinned by ``tests/test_allocation.py``.
"""

import contextlib

from devito.types import dense
from devito.types.caching import CacheManager

__all__ = ['batched_allocation']


class _DeferredSweep:
    """Stands for ``CacheManager`` in ``devito.types.dense`` during a batch."""

    @staticmethod
    def clear(force=True):
        """Nothing: the batch sweeps once at its end."""


@contextlib.contextmanager
def batched_allocation():
    """Allocate any number of Functions with one cache sweep, at the end."""
    previous = dense.CacheManager
    dense.CacheManager = _DeferredSweep
    try:
        yield
    finally:
        dense.CacheManager = previous
        if previous is CacheManager:
            CacheManager.clear(force=False)
