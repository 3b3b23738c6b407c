"""The Loss base class: the Functions a loss owns, named after it, and its gradient,
derived from the per-sample losses (:mod:`devito_ml.autodiff`)."""

import numpy as np
from devito_ml.autodiff import adjoint, gradient_of, intermediates
from devito_ml.batch import batch_dimension
from devito_ml.symbolics import plain_view, tap_dimension, tensor

__all__ = ['Loss']


class Loss:
    """Base of losses on a ``(batch, ...)`` output.

    A loss states its maths, ``forward_equations(output)``: each sample's loss
    into ``per_sample``. ``equations(output, gradient)`` adds dL/doutput of the
    batch mean, derived from them, into ``gradient``.
    :meth:`value` sums the per-sample losses in a fixed order, so the same inputs
    give the same loss bit for bit (an ``Inc`` over the batch becomes an
    ``omp atomic`` whose order varies). A loss allocates ``targets`` and
    ``per_sample`` when bound to an output shape with :meth:`bind`.
    """

    name = 'loss'

    reads = ('output',)
    """The kinds of a net's last layer's outputs this loss reads, the one it
    prefers first (:meth:`~devito_ml.Layer.loss_outputs`)."""

    def reads_from(self, layer):
        """``(value, gradient)``: the Function of ``layer`` (the last of a net) this
        loss reads, and the one it writes dL/dvalue into."""
        offered = layer.loss_outputs()
        for kind in self.reads:
            if kind in offered:
                return offered[kind]
        raise ValueError(f"loss `{self.name}` reads {' or '.join(self.reads)}; "
                         f"{type(layer).__name__} `{layer.name}` offers "
                         f"{', '.join(offered)}")

    def bind(self, output_size, dtype):
        """Allocate ``targets`` and ``value`` for outputs of ``output_size``."""
        self.output_size = tuple(output_size)
        self.dtype = dtype
        self.n = batch_dimension()
        # the axes named as the layers name theirs (``layer.py``, Loop names)
        axes = ('f',) if len(output_size) == 2 else ('c', 'h', 'w')
        self.dims = (self.n,) + tuple(tap_dimension(f"{self.name}_{axis}", extent)
                                      for axis, extent in zip(axes, output_size[1:]))
        self.k = self.dims[1]
        self.targets = tensor(f"{self.name}_targets", self.dims, output_size, dtype)
        self.per_sample = tensor(f"{self.name}_per_sample", (self.n,),
                                 output_size[:1], dtype)
        self._allocate()
        # the gradients of what the loss computes and reads again, made now, so
        # that a unit's description holds them
        placeholder = tensor(f"{self.name}_output", self.dims, output_size, dtype)
        for function in intermediates(self.forward_equations(placeholder),
                                      self._where(), self.constants()):
            self._intermediate_gradient(function)
        self._targets = plain_view(self.targets)
        self._per_sample = plain_view(self.per_sample)
        return self

    def _allocate(self):
        """Internal buffers of a loss."""

    def value(self, batch):
        """The mean loss over the first ``batch`` samples."""
        return float(np.sum(self._per_sample[:batch]) / batch)

    def sample_values(self, batch):
        """Each of the first ``batch`` samples' loss, a copy."""
        return np.array(self._per_sample[:batch])

    def batch_size(self):
        """Number of active samples, as a symbol of the batch bound."""
        return self.n.symbolic_max - self.n.symbolic_min + 1

    def forward_equations(self, output):
        """Equations writing each sample's loss of ``output`` into ``per_sample``."""
        raise NotImplementedError

    def constants(self):
        """Functions the gradient does not flow through (see
        :func:`~devito_ml.autodiff.adjoint`)."""
        return ()

    def equations(self, output, gradient):
        """Each sample's loss into ``per_sample``, and dL/doutput of their mean
        over the active batch into ``gradient``."""
        forward = self.forward_equations(output)
        return forward + adjoint(
            forward, {self.per_sample: 1 / self.batch_size(), output: gradient},
            where=self._where(), make_gradient=self._intermediate_gradient,
            constants=self.constants())

    def _where(self):
        return f"loss `{self.name}`"

    def _intermediate_gradient(self, function):
        made = self.__dict__.setdefault('_intermediate_gradients', {})
        return gradient_of(function, made)

    def set_targets(self, targets, batch):
        """Write a batch of targets (numpy) into ``targets``."""
        self._targets[:batch] = targets
