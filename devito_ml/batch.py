"""The batch, typed: the loops over a net's samples, which every generated operator
runs over the active batch only (a smaller last batch runs on the operators built
for the full one).

A layer loops over the batch on the net's ``n`` (a :class:`BatchDimension`), or on
a batch loop of its own where Devito's one loop order per operator needs another
(a parameter gradient's reduction, a tile's batch): a :class:`BatchLoop`, whose
extent defaults to the allocated batch. :func:`is_batch_dimension` finds both by
their type, whatever their names (:mod:`devito_ml.kernel_calls` bounds them by the
active batch at every call).
"""

from devito.types.dimension import BasicDimension, DefaultDimension

__all__ = ['BATCH', 'BatchDimension', 'BatchLoop', 'batch_dimension', 'batch_loop',
           'is_batch_dimension']

BATCH = 'n'
"""The name of the net's batch Dimension, and the last word of its loops' names."""


class BatchDimension(BasicDimension):
    """The batch of a net's tensors (``n``): bounded by the active batch."""


class BatchLoop(DefaultDimension):
    """A loop over the batch of its own (``<layer>_<role>_n``), bounded by the
    active batch; its extent defaults to the allocated batch."""


def batch_dimension(name=BATCH):
    """The batch Dimension of a net's tensors."""
    return BatchDimension(name)


def batch_loop(name, extent):
    """A loop over the batch of its own, of ``extent`` samples allocated."""
    return BatchLoop(name=name, default_value=int(extent))


def is_batch_dimension(dimension):
    """Whether ``dimension`` runs over the batch (either kind)."""
    return isinstance(dimension, (BatchDimension, BatchLoop))
