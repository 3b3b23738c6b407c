"""Operations: steps of forward maths above Devito equations, each with its adjoint.

Most forward maths is plain equations, and :func:`~devito_ml.autodiff.adjoint`
derives it term by term. A few steps are stated once more coarsely, as an
:class:`Operation` (a correlation: :mod:`devito_ml.layers.correlation`), so that
the schedules can recognise the step and its adjoint whole (register tiles,
channels-last copies, stride phases) instead of finding them in derived equations.
An operation's adjoint is a rule of its own, :meth:`Operation.adjoint`: other
operations and equations, which a schedule lowers like the forward ones; its
:meth:`Operation.equations` are the plain loop nests that compute it where no
schedule lowers it otherwise.
"""

import sympy

__all__ = ['Operation', 'plain_equations']


class Operation:
    """A step of forward maths that writes ``target`` (overwritten) from ``reads``.

    Subclasses set ``target`` (a Function) and ``reads`` (the Functions read),
    and define :meth:`equations` and, for those on a forward path,
    :meth:`adjoint`.
    """

    target = None
    reads = ()

    @property
    def value(self):
        """The Functions read, one access each: what the reverse walk follows
        (which Functions the operation reads), not what it computes."""
        return sympy.Add(*[function.indexify() for function in self.reads])

    def equations(self):
        """The plain loop nests computing the operation.

        Returns
        -------
        list of Eq and Inc
        """
        raise NotImplementedError

    def adjoint(self, gradient, gradients):
        """The rule of the operation's adjoint.

        Parameters
        ----------
        gradient : Function
            The gradient of ``target``, given.
        gradients : dict
            ``{read Function: its gradient}`` for the reads that need one (each
            written whole by the result: overwritten).

        Returns
        -------
        shared : list
            Equations or operations every gradient reads, run first.
        each : dict
            ``{read Function: [equations or operations writing its gradient]}``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no adjoint rule")

    def __repr__(self):
        return f"{type(self).__name__}({self.target.name} <- " \
            f"{', '.join(f.name for f in self.reads)})"


def plain_equations(equations):
    """``equations`` with every :class:`Operation` among them as its plain loop
    nests (the default schedule)."""
    return [lowered for item in equations
            for lowered in (item.equations() if isinstance(item, Operation) else [item])]
