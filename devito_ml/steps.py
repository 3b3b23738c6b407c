"""What one run of a net's passes takes: its samples, its mode, and where they sit
in the step's whole batch (one process's shard of it, in data-parallel training)."""

import dataclasses

__all__ = ['Step']


@dataclasses.dataclass(frozen=True)
class Step:
    """The samples of one step, as layers that change per step see them
    (:meth:`~devito_ml.Layer.before_step`: Dropout draws its mask, BatchNorm counts
    the step).

    Attributes
    ----------
    samples : int
        The samples this process runs (0: a step it takes part in without any).
    training : bool
    first : int
        The index of the first of them in the step's whole batch.
    total : int
        The samples of the step's whole batch (default: ``samples``).
    statistics_samples : int
        The samples batch statistics are taken over: ``total`` where the net has
        them summed over the processes that share the batch, else ``samples``
        (the default).
    """

    samples: int
    training: bool = True
    first: int = 0
    total: int = None
    statistics_samples: int = None

    def __post_init__(self):
        if self.total is None:
            object.__setattr__(self, 'total', self.samples)
        if self.statistics_samples is None:
            object.__setattr__(self, 'statistics_samples', self.samples)
