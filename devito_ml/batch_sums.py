"""Sums over the batch that a layer's statistics are made of (BatchNorm's mean,
variance and count, its adjoint's two sums), marked where they are complete, so
that a net can have them summed over more samples than its own.

A layer writes each of its per-channel sums over its samples, then a
:class:`BatchSums` marker, then the equations that use them (the mean is the sum
over the count, both marked). Lowered by :func:`lowered` for a net:

- alone (no ``sums`` given), a marker is nothing, or a copy where it names a
  target apart from the sum: the sums are this process's batch's;
- with ``sums`` (a data-parallel trainer's:
  :meth:`~devito_ml.Net.synchronize_statistics`), a marker is a
  :class:`~devito_ml.compiled.SyncPoint`: the generated code stops, ``sums.sum``
  adds the values over every process, and the next operator goes on from the whole
  batch's sums. Sums of gradients come back in this process's terms
  (its gradients are of its shard's mean loss: :meth:`RankSums.sum
  <devito_ml.distributed.RankSums.sum>`).

So the layer states its maths once, and knows nothing of processes.
"""

import numpy as np
from devito import Eq

from devito_ml.compiled import SyncPoint

__all__ = ['BatchSums', 'lowered']


class BatchSums:
    """A marker: the sums ``pairs`` are complete over this process's samples.

    Parameters
    ----------
    name : str
        Names the sync point it may become (``bn1_mean``).
    pairs : list of (Function, Function)
        ``(sum, target)``: the sum as computed, and the Function the equations
        after the marker read it from (the sum itself, or a Function apart where
        the sum must stay this process's: a parameter's gradient, which is summed
        over the processes on its own).
    gradients : bool
        Sums of gradients of the loss (scaled by each process's share of the
        batch when summed), else of values.
    """

    def __init__(self, name, pairs, gradients=False):
        self.name, self.pairs, self.gradients = name, list(pairs), bool(gradients)

    def __repr__(self):
        return f"BatchSums({self.name})"


def lowered(equations, sums=None):
    """``equations`` with each :class:`BatchSums` marker lowered: to copies into
    its targets (``sums`` None), or to a :class:`~devito_ml.compiled.SyncPoint`
    where ``sums.sum(values, gradients)`` sums them over the processes."""
    result = []
    for item in equations:
        if not isinstance(item, BatchSums):
            result.append(item)
        elif sums is None:
            result += [Eq(target.indexify(), total.indexify())
                       for total, target in item.pairs if target is not total]
        else:
            result.append(_sync_point(item, sums))
    return result


def _sync_point(marker, sums):
    def action(batch):
        for total, target in marker.pairs:
            target.data[:] = sums.sum(total.data, marker.gradients)

    def idle():
        for total, target in marker.pairs:
            sums.sum(np.zeros_like(total.data), marker.gradients)
    return SyncPoint(marker.name, action, idle)
