"""The Loss base class: the Functions a loss owns, named after it."""

import numpy as np
from devito import Dimension

from devito_ml.symbolics import plain_view, tap_dimension, tensor

__all__ = ['Loss']


class Loss:
    """Base of losses on a ``(batch, ...)`` output.

    ``equations(output, gradient)`` returns equations that write each sample's
    loss into ``per_sample`` and dL/doutput (of the batch mean) into ``gradient``.
    :meth:`value` sums the per-sample losses in a fixed order, so the same inputs
    give the same loss bit for bit (an ``Inc`` over the batch becomes an
    ``omp atomic`` whose order varies). A loss allocates ``targets`` and
    ``per_sample`` when bound to an output shape with :meth:`bind`.
    """

    name = 'loss'

    def bind(self, output_size, dtype):
        """Allocate ``targets`` and ``value`` for outputs of ``output_size``."""
        self.output_size = tuple(output_size)
        self.dtype = dtype
        self.n = Dimension('n')
        # the axes named as the layers name theirs (``layer.py``, Loop names)
        axes = ('f',) if len(output_size) == 2 else ('c', 'h', 'w')
        self.dims = (self.n,) + tuple(tap_dimension(f"{self.name}_{axis}", extent)
                                      for axis, extent in zip(axes, output_size[1:]))
        self.k = self.dims[1]
        self.targets = tensor(f"{self.name}_targets", self.dims, output_size, dtype)
        self.per_sample = tensor(f"{self.name}_per_sample", (self.n,),
                                 output_size[:1], dtype)
        self._allocate()
        self._targets = plain_view(self.targets)
        self._per_sample = plain_view(self.per_sample)
        return self

    def _allocate(self):
        """Internal buffers of a loss."""

    def value(self, batch):
        """The mean loss over the first ``batch`` samples."""
        return float(np.sum(self._per_sample[:batch]) / batch)

    def batch_size(self):
        """Number of active samples, as a symbol of the batch bound."""
        return self.n.symbolic_max - self.n.symbolic_min + 1

    def equations(self, output, gradient):
        raise NotImplementedError

    def set_targets(self, targets, batch):
        """Write a batch of targets (numpy) into ``targets``."""
        self._targets[:batch] = targets
