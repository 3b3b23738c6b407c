"""Window reductions: the maths of pooling, and the rule of its adjoint.

:class:`WindowReduction` states a pooling's forward pass, each output the maximum
or the mean of a window of its input, as an :class:`~devito_ml.autodiff.Operation`.
Its adjoint rule: the gradient of the input is a :class:`WindowGradient`, each
window's output gradient routed to the window's first maximum (row-major; a NaN is
the maximum, as in PyTorch) or spread evenly over it. The pooling layer lowers both
(:meth:`~devito_ml.layers.pooling.Pooling.lower`): sliding windows as affine loops
(the gradient a gather from a stuffed copy, or for max windows that neither overlap
nor pad a scatter to each maximum), other windows through index tables
(``window_tables.py``).
"""

from devito_ml.autodiff import Operation

__all__ = ['WindowReduction', 'WindowGradient']


class WindowReduction(Operation):
    """``result[n, c, i, j]`` = the max or mean of window (i, j) of ``source``.

    Parameters
    ----------
    pool : Pooling
        The layer whose windows, loops and buffers it uses.
    result, source : Function
    """

    def __init__(self, pool, result, source):
        self.pool, self.target, self.source = pool, result, source
        self.reads = (source,)

    def equations(self):
        return self.pool.lower(self)

    def adjoint(self, gradient, gradients):
        each = {}
        if self.source in gradients:
            each[self.source] = [WindowGradient(self.pool, gradients[self.source],
                                                gradient)]
        return [], each


class WindowGradient(Operation):
    """``source_gradient``: each window's ``gradient`` to its first maximum, or
    spread evenly over it; overwritten (0 where no window reaches)."""

    def __init__(self, pool, source_gradient, gradient):
        self.pool, self.target, self.gradient = pool, source_gradient, gradient
        self.reads = (gradient,)

    def equations(self):
        return self.pool.lower(self)
