"""Reverse mode over forward equations: the equations of every gradient.

:func:`adjoint` walks the forward statements (:mod:`~devito_ml.autodiff.statements`)
from the last to the first. A statement ``Y[o] (+)= c * f(..., A[e], ...)`` over
loops ``d`` gives each Function ``A`` it reads the term ``dY[o] c df/dA[e]``, summed
over every point of ``d`` that reaches a point of ``A``. Written at ``dA``'s own
Dimensions (:func:`~devito_ml.autodiff.gather.invert`) the sum runs over the loops
the inversion leaves, each given a Dimension of its own, so that the gradient's
loops come outermost and run in parallel; where the map cannot be inverted the term
is scattered (``Inc`` at ``dA[e]``) with a :class:`ScatterWarning`.

A gradient is complete once every statement reading its Function has been walked:
the gradient of a Function the forward equations compute and read again (an
intermediate) is written then, before the statements that define that Function
are walked, and theirs read it.
"""

import warnings
from collections import OrderedDict

import sympy
from devito import Eq, Inc
from devito.types import DefaultDimension, Scalar
from devito.types.utils import IgnoreDimSort

from devito_ml.autodiff.gather import guarded, invert, opaque_indices
from devito_ml.autodiff.operations import Operation
from devito_ml.autodiff.rules import AutodiffError, derivative
from devito_ml.autodiff.statements import accesses, extents, statements
from devito_ml.batch import BATCH, batch_loop, is_batch_dimension
from devito_ml.layout import is_channels_last
from devito_ml.symbolics import tensor_like

__all__ = ['adjoint', 'intermediates', 'ScatterWarning', 'gradient_name', 'gradient_of']


class ScatterWarning(UserWarning):
    """An adjoint written as a scatter (its index map could not be inverted): correct,
    but its loops cannot all run in parallel."""


def gradient_name(name):
    """``conv1_W`` -> ``conv1_dW``: the gradient of a Function, named by its role."""
    head, _, role = name.rpartition('_')
    return f"{head}_d{role}" if head else f"d{name}"


def adjoint(equations, gradients, where='layer', make_gradient=None, constants=(),
            names=None):
    """The equations of the gradients of ``equations``.

    Parameters
    ----------
    equations : list of Eq or Inc
        The forward equations, in the order they run.
    gradients : dict
        ``{Function: its gradient}``: for each output, the gradient that is given
        (read: a Function, or an expression such as the ``1 / batch`` of a mean
        loss); for each input or parameter, the Function to write (overwritten: a
        gradient no statement reaches is set to 0).
    where : str
        Who the equations belong to, for messages (``"Conv `conv1`"``).
    make_gradient : callable, optional
        ``make_gradient(function)`` creates the gradient of an intermediate
        Function (computed by one statement and read by a later one); default: a
        Function of the same Dimensions and shape, named by
        :func:`gradient_name`.
    constants : tuple of Function, optional
        Functions held constant: the equations computing them are not
        differentiated, and no gradient flows through them (a softmax's row
        maximum, which only shifts the logits: :mod:`devito_ml.loss`).
    names : dict, optional
        ``{gradient: name}``: how the loops summing into a gradient are named
        (``<name>_<forward loop>``) where not by the gradient's own name: a layer
        names the gradient of its input, a Function of the layer before it, as its
        own (``fc1_din``).

    Returns
    -------
    list of Eq and Inc
    """
    forward = statements(_varying(equations, constants), where)
    written = list(OrderedDict.fromkeys(s.target.function for s in forward))
    grads = dict(gradients)
    for function in _read_again(forward):
        if function in gradients:
            raise AutodiffError(f"{where}: `{function.name}` is an output (its "
                                "gradient is given) and is read by a later equation")
        grads[function] = (make_gradient or _same_as)(function)
    walk = _Walk(grads, where, names or {})
    for index in reversed(range(len(forward))):
        statement = forward[index]
        function = statement.target.function
        if function not in gradients and function in grads and index == \
                _last(forward, function):
            walk.flush(function)
        if function in grads:
            walk.statement(statement)
    for function in gradients:
        if function not in written:
            walk.flush(function)
    return walk.equations


def intermediates(equations, where='layer', constants=()):
    """The Functions ``equations`` compute and read again: those whose gradients
    :func:`adjoint` makes (with ``make_gradient``), in the order computed. A layer
    makes them when its Functions are made, so that they are described with it."""
    return _read_again(statements(_varying(equations, constants), where))


def _varying(equations, constants):
    """``equations`` but those computing a Function held constant."""
    held = set(constants)
    return [eq for eq in equations
            if not (isinstance(getattr(eq, 'lhs', None), sympy.Indexed)
                    and eq.lhs.function in held)]


def _read_again(forward):
    written = list(OrderedDict.fromkeys(s.target.function for s in forward))
    return [function for function in written
            if any(a.function is function for s in forward[_last(forward, function) + 1:]
                   for a in accesses(s.value))]


def _last(forward, function):
    return max(i for i, s in enumerate(forward) if s.target.function is function)


def _same_as(function):
    return tensor_like(gradient_name(function.name), function)


def gradient_of(function, made):
    """The gradient of ``function`` kept in ``made`` (``{name: gradient}``, its
    owner's), made there first if it is not: a Function of the same Dimensions and
    shape, named by :func:`gradient_name`."""
    if function.name not in made:
        made[function.name] = _same_as(function)
    return made[function.name]


class _Walk:
    """The terms gathered for each gradient, and the equations written so far."""

    def __init__(self, grads, where, names):
        self.grads, self.where, self.names = grads, where, names
        self.terms = {}           # function -> [(equation kind, lhs, value, loops)]
        self.equations = []
        self.loops = {}

    def statement(self, statement):
        if isinstance(statement, Operation):
            self._operation(statement)
            return
        sizes = extents(statement, self.where)
        given = self.grads[statement.target.function]
        seed = given.indexed[statement.target.indices] \
            if getattr(given, 'is_DiscreteFunction', False) else given
        for access in accesses(statement.value):
            if access.function not in self.grads:
                continue
            term = derivative(statement.value, access,
                              lambda e, why: f"{self.where}: {why} `{e}` in "
                                             f"`{statement.equation}`")
            if term == 0:
                continue
            self._add(access, seed * statement.factor * term, statement, sizes)

    def _operation(self, operation):
        """An operation's adjoint, by its own rule: what every gradient reads now,
        and each gradient whole when it is flushed."""
        given = self.grads[operation.target]
        if not getattr(given, 'is_DiscreteFunction', False):
            raise AutodiffError(f"{self.where}: {operation!r} needs the gradient of "
                                f"`{operation.target.name}` in a Function, got {given}")
        wanted = {f: self.grads[f] for f in operation.reads if f in self.grads}
        shared, each = operation.adjoint(given, wanted)
        self.equations += shared
        for function, equations in each.items():
            self._term(function, 'whole', None, equations, ())

    def _add(self, access, value, statement, sizes):
        gradient = self.grads[access.function]
        if tuple(gradient.shape) != tuple(access.function.shape):
            raise AutodiffError(f"{self.where}: the gradient `{gradient.name}` has "
                                f"shape {gradient.shape}, `{access.function.name}` "
                                f"{access.function.shape}")
        if is_channels_last(gradient) != is_channels_last(access.function):
            raise AutodiffError(f"{self.where}: the gradient `{gradient.name}` and "
                                f"`{access.function.name}` are stored in different "
                                "layouts (one channels last): their indices differ")
        if any(sympy.sympify(i).has(sympy.Indexed) for i in access.indices):
            raise AutodiffError(f"{self.where}: the index of `{access}` in "
                                f"`{statement.equation}` depends on data: no adjoint "
                                "is derived through a lookup")
        targets = gradient.dimensions
        inverted = invert(access.indices, targets, gradient.shape, sizes)
        if inverted is None:
            warnings.warn(f"{self.where}: the adjoint of `{access}` in "
                          f"`{statement.equation}` is a scatter (its index is not an "
                          "invertible affine map): its loops run with atomics",
                          ScatterWarning, stacklevel=4)
            renamed = {d: self._loop(gradient, d, sizes[d]) for d in sizes}
            lhs = gradient.indexed[tuple(sympy.sympify(i).xreplace(renamed)
                                         for i in access.indices)]
            self._term(access.function, 'scatter', lhs, value.xreplace(renamed),
                       tuple(renamed.values()))
            return
        solution, conditions = inverted
        left = [d for d in sizes if d not in solution]
        renamed = {d: self._loop(gradient, d, sizes[d]) for d in left}
        solution = {d: v.xreplace(renamed) for d, v in solution.items()}
        mapping = {**solution, **renamed}
        value = guarded(value.xreplace(mapping), [c.xreplace(mapping)
                                                  for c in conditions])
        self._term(access.function, 'gather', gradient.indexed[targets], value,
                   tuple(renamed[d] for d in left))

    def _stem(self, gradient):
        """What the loops and registers summing into ``gradient`` are named after."""
        return self.names.get(gradient, gradient.name)

    def _loop(self, gradient, dimension, extent):
        """A Dimension of its own for ``dimension``, summed over in ``gradient``'s
        equations (named ``<gradient>_<role>``, or by ``names``): a
        :class:`~devito_ml.batch.BatchLoop` for the batch, named ``..._n``, and no
        other loop's name ends so (a reader takes ``_n`` for the batch)."""
        key = (gradient.name, dimension.name)
        if key not in self.loops:
            stem = self._stem(gradient)
            prefix = stem.rpartition('_')[0]
            role = dimension.name[len(prefix) + 1:] \
                if prefix and dimension.name.startswith(prefix + '_') else dimension.name
            if is_batch_dimension(dimension):
                self.loops[key] = batch_loop(f"{stem}_{BATCH}", extent)
                return self.loops[key]
            if role == BATCH or role.endswith('_' + BATCH):
                role += 'x'
            self.loops[key] = DefaultDimension(name=f"{stem}_{role}",
                                               default_value=int(extent))
        return self.loops[key]

    def _term(self, function, kind, lhs, value, loops):
        self.terms.setdefault(function, []).append((kind, lhs, value, loops))

    def flush(self, function):
        """Write the gradient of ``function`` from every term gathered for it.

        Terms summed over the same loops are summed together, in a register
        (a Scalar private to each point of the gradient: an ``Inc`` of the
        gradient in memory would store it at every term); a scattered term is an
        ``Inc`` after them."""
        gradient = self.grads[function]
        targets = tuple(gradient.dimensions)
        terms = self.terms.pop(function, [])
        whole = [value for kind, _, value, _ in terms if kind == 'whole']
        if whole:
            if len(terms) > 1:
                raise AutodiffError(
                    f"{self.where}: `{function.name}` is read by an operation and by "
                    "other equations: an operation writes its gradient whole")
            self.equations += whole[0]
            return
        total = sympy.Add(*[opaque_indices(value) for kind, _, value, loops in terms
                            if kind == 'gather' and not loops])
        sums = OrderedDict()
        for kind, _, value, loops in terms:
            if kind == 'gather' and loops:
                sums.setdefault(loops, []).append(opaque_indices(value))
        for index, (loops, values) in enumerate(sums.items()):
            register = Scalar(name=f"{self._stem(gradient)}_sum{index if index else ''}",
                              dtype=gradient.dtype)
            self.equations += [
                Eq(register, 0, implicit_dims=targets),
                Eq(register, register + sympy.Add(*values),
                   implicit_dims=IgnoreDimSort(targets + loops))]
            total += register
        # a channels-last gradient loops in its storage order whatever the order
        # the indices of its terms would suggest (Flat's feature index names the
        # channels first)
        order = IgnoreDimSort(targets) if is_channels_last(gradient) else targets
        self.equations.append(Eq(gradient.indexed[targets], total, implicit_dims=order))
        for kind, lhs, value, loops in terms:
            if kind == 'scatter':
                self.equations.append(Inc(opaque_indices(lhs), opaque_indices(value),
                                          implicit_dims=IgnoreDimSort(loops)))
