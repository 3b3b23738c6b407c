"""The batch a net runs: the samples loaded into its input, the layers that change
per step told which step it is (:class:`~devito_ml.steps.Step`), the output read
back."""

import contextlib

import numpy as np

from devito_ml.steps import Step
from devito_ml.symbolics import plain_view
from devito_ml.validation import check_array

__all__ = ['NetBatch']


class NetBatch:
    """The batch of a :class:`~devito_ml.net_graph.NetGraph` (allocated).

    Attributes
    ----------
    size : int or None
        The samples of the batch loaded last (None: none yet).
    """

    def __init__(self, graph):
        self.graph, self.size, self._window = graph, None, None
        self._stepped = [layer for layer in graph.layers if layer.draws_per_step]
        self._input = plain_view(graph.input)
        self._output = plain_view(graph.output_layer.result)

    def load(self, x):
        """Copy the batch ``x`` (checked: the net's sample shape and dtype, at most
        its batch) into the net's input; return its size."""
        check_array(None, 'Net: x', x, self.graph.input_size, self.graph.dtype)
        self.size = x.shape[0]
        self._input[:self.size] = x
        return self.size

    def begin_step(self, training, samples=None):
        """Tell the layers that change per step (Dropout, BatchNorm) that a step of
        ``samples`` (default: the batch loaded) begins."""
        samples = self.size if samples is None else samples
        first, total = self._window or (0, samples)
        synchronized = self.graph.statistics is not None
        step = Step(samples, training, first, total,
                    total if synchronized else samples)
        for layer in self._stepped:
            layer.before_step(step)

    def output(self):
        """A copy of the output of the batch loaded."""
        return np.array(self._output[:self.size])

    @contextlib.contextmanager
    def shard(self, first, total):
        """The steps inside are of samples ``first``... of a batch of ``total``."""
        self._window = (int(first), int(total))
        try:
            yield
        finally:
            self._window = None
