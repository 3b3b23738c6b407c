"""Forward equations read as statements: ``target (+)= factor * value`` over loops.

What the adjoint is derived from. Each forward equation is one of:

- ``Eq(Y[...], expr)``: ``Y`` is ``expr`` at every point of its loops;
- ``Inc(Y[...], expr)`` or ``Eq(Y[...], Y[...] + expr)``: ``expr`` summed into
  ``Y`` over the loops its terms run over that ``Y`` is not indexed by;
- a Scalar, defined once (``Eq(s, expr)``, inlined where it is read) or summed in
  a register (``Eq(s, 0)``, ``Eq(s, s + term)``:
  :func:`~devito_ml.symbolics.register_sum`), read by an equation that stores
  ``finish(s)``, as long as ``finish`` is affine in ``s`` (a mean, a sum).

The loops of a statement are every Dimension it mentions (its target's, its
terms', its implicit ones); how far each runs is the extent of an axis it indexes
plainly, or a DefaultDimension's own.
"""

from collections import namedtuple

import sympy
from devito import Dimension, Inc
from devito.types import DefaultDimension

from devito_ml.autodiff.operations import Operation
from devito_ml.autodiff.rules import AutodiffError, derivative

__all__ = ['Statement', 'statements', 'accesses', 'dimensions_of', 'extents']

Statement = namedtuple('Statement', 'target value factor dims equation')
"""``target (+)= factor * value``: ``target`` an Indexed, ``dims`` every loop,
``factor`` what a register sum's finish multiplies it by (1 otherwise). Whether it
sets or adds makes no difference to the adjoint: the target's gradient reaches
every term alike."""


def statements(equations, where):
    """The :class:`Statement` s of ``equations``, in order, and each
    :class:`~devito_ml.autodiff.operations.Operation` among them as it is;
    ``where`` names the layer in messages."""
    scalars, found = {}, []
    for equation in equations:
        if isinstance(equation, Operation):
            found.append(equation)
            continue
        lhs, rhs = equation.lhs, _inline(equation.rhs, scalars, 'value')
        implicit = tuple(getattr(equation, 'implicit_dims', None) or ())
        if not isinstance(lhs, sympy.Indexed):
            _scalar(lhs, rhs, equation, implicit, scalars, where)
            continue
        accumulate = isinstance(equation, Inc)
        if not accumulate and rhs.has(lhs):
            rest = sympy.expand(rhs - lhs)
            if rest.has(lhs):
                raise AutodiffError(f"{where}: `{equation}` reads what it writes "
                                    "other than to add to it")
            rhs, accumulate = rest, True
        if _reads(rhs, lhs.function):
            raise AutodiffError(f"{where}: `{equation}` reads `{lhs.function.name}` "
                                "where it writes it (a recurrence)")
        sums = [s for s in _symbols(rhs) if scalars.get(s, (None,))[0] == 'sum']
        if sums:
            found.extend(_finished(lhs, rhs, sums, scalars, equation, where))
            continue
        dims = dimensions_of(lhs, rhs, implicit)
        if not accumulate:
            loose = [d for d in dims if d not in dimensions_of(lhs)]
            if loose:
                raise AutodiffError(
                    f"{where}: `{equation}` overwrites `{lhs}` in a loop over "
                    f"{', '.join(d.name for d in loose)}: a sum is an Inc")
        found.append(Statement(lhs, rhs, sympy.Integer(1), dims, equation))
    return found


def _scalar(lhs, rhs, equation, implicit, scalars, where):
    """Record a Scalar's definition: a value to inline, or a register sum."""
    known = scalars.get(lhs)
    if isinstance(equation, Inc) or rhs.has(lhs):
        term = rhs if isinstance(equation, Inc) else sympy.expand(rhs - lhs)
        if known is None or known[0] != 'sum' or term.has(lhs):
            raise AutodiffError(f"{where}: `{equation}` adds to `{lhs}` before it is "
                                "set to 0 (a register sum starts at 0)")
        known[1].append((term, implicit, equation))
    elif rhs == 0:
        scalars[lhs] = ('sum', [])
    else:
        scalars[lhs] = ('value', rhs)


def _inline(expression, scalars, kind):
    values = {s: v[1] for s, v in scalars.items() if v[0] == kind}
    return expression.xreplace(values) if values else expression


def _finished(lhs, rhs, sums, scalars, equation, where):
    """Statements of ``lhs = finish(s1, s2, ...)`` with each ``s`` a register sum:
    one a term of each sum, the finish's slope as the factor."""
    found = []
    for total in sums:
        slope = sympy.diff(rhs, total)
        if any(slope.has(s) for s in sums):
            raise AutodiffError(
                f"{where}: `{equation}` is not affine in the register sum `{total}`: "
                "its adjoint would need the sum itself (store it in a Function)")
        for term, implicit, added in scalars[total][1]:
            dims = dimensions_of(lhs, term, implicit)
            found.append(Statement(lhs, term, slope, dims, added))
    rest = rhs.xreplace({s: 0 for s in sums})
    for access in accesses(rest):
        if derivative(rest, access) != 0 and any(
                derivative(rhs, access).has(s) for s in sums):
            raise AutodiffError(
                f"{where}: in `{equation}` the slope of `{access}` depends on a "
                "register sum: store the sum in a Function")
    if accesses(rest):
        dims = dimensions_of(lhs, rest, ())
        found.append(Statement(lhs, rest, sympy.Integer(1), dims, equation))
    return found


def _symbols(expression):
    return sorted(expression.free_symbols, key=str)


def _reads(expression, function):
    return any(access.function is function for access in accesses(expression))


def accesses(expression):
    """The distinct ``Indexed`` of ``expression``, in the order met."""
    found = []
    for node in sympy.preorder_traversal(expression):
        if isinstance(node, sympy.Indexed) and node not in found:
            found.append(node)
    return found


def dimensions_of(*expressions):
    """Every Dimension in ``expressions`` (indices included), in the order met;
    a tuple of Dimensions (implicit ones) counts too."""
    found = []
    for expression in expressions:
        items = expression if isinstance(expression, tuple) else (expression,)
        for item in items:
            nodes = [item] if isinstance(item, Dimension) else \
                sympy.preorder_traversal(item)
            for node in nodes:
                if isinstance(node, Dimension) and node not in found:
                    found.append(node)
    return tuple(found)


def extents(statement, where):
    """``{Dimension: how many points it runs over}`` for a statement's loops."""
    sizes = {}
    for access in [statement.target, *accesses(statement.value),
                   *accesses(statement.factor)]:
        for index, extent in zip(access.indices, access.function.shape):
            if isinstance(index, Dimension):
                sizes[index] = min(sizes.get(index, extent), extent)
    for dimension in statement.dims:
        if dimension in sizes:
            continue
        if isinstance(dimension, DefaultDimension):
            sizes[dimension] = int(dimension._default_value)
        else:
            raise AutodiffError(
                f"{where}: cannot tell how far `{dimension}` runs in "
                f"`{statement.equation}`: index an axis with it plainly, or make it a "
                "DefaultDimension")
    return sizes
