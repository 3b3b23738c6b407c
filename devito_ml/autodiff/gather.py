"""Turning a scatter into a gather: inverting an access's affine index map.

The adjoint of ``Y[o] += f(A[e(d)])`` over loops ``d`` adds ``dY[o] f'`` into
``dA[e(d)]``: a scatter, whose loops Devito could run in parallel only with an
``omp atomic`` per update. :func:`invert` rewrites it to write at ``dA``'s own
Dimensions ``g``: each axis ``g_j = e_j(d)`` is solved for the loop of
``e_j`` that runs longest (an output row, not a kernel tap), so the taps stay
the loops summed over; a stride ``s`` leaves ``(g_j - rest) / s``, read where it
divides (a predicate) and within the loop's extent. Axes indexed by a constant,
or by loops already solved, become predicates too (``A[i, i]``). A window that does
not overlap the next (a tap of at most ``s`` values beside a stride ``s``) is split
at once into quotient and remainder: no loop over its taps. What it cannot
invert (an index that is not affine, a coefficient that is not an integer) it
says so, and the caller scatters.

The solved indices reach Devito wrapped in ``INT(...)``: Devito shrinks a loop
whose access ``f[g - 1]`` would leave ``f`` (silently, dropping ``g = 0``), while
here the predicates keep every read in bounds.
"""

import sympy
from devito import Dimension
from devito.symbolics import INT, IntDiv

from devito_ml.symbolics import CondEq, Select

__all__ = ['invert', 'opaque_indices', 'guarded']


def invert(indices, targets, target_extents, extents):
    """Solve ``indices[j] = targets[j]`` for loops of ``extents``.

    Parameters
    ----------
    indices : tuple of expressions
        The access's index, affine in the loops.
    targets : tuple of Dimension
        The gradient's own Dimensions, one an axis.
    target_extents : tuple of int
        The gradient's shape.
    extents : dict
        ``{loop: extent}`` of the statement.

    Returns
    -------
    (solution, conditions) or None
        ``solution`` maps each solved loop to its value in ``targets`` and the
        loops left; ``conditions`` are the relations that must hold for the point
        to be one the forward loops visit. None where the map is not invertible.
    """
    loops = list(extents)
    exact, solution, conditions = {}, {}, []
    for index, target, size in zip(indices, targets, target_extents):
        index = sympy.expand(sympy.sympify(index).xreplace(exact))
        if not _affine(index, loops):
            return None
        free = [d for d in loops if d not in solution and index.has(d)]
        if not free:
            if sympy.expand(index - target) != 0:
                conditions.append(CondEq(target - index, 0))
            continue
        split = _window_split(index, target, free, extents)
        if split is not None:
            found, guards = split
            solution.update(found)
            conditions += guards
            continue
        # the longest loop; of equals, one of unit step (no divisibility test)
        pivot = max(free, key=lambda d: (extents[d], abs(index.coeff(d)) == 1,
                                         -loops.index(d)))
        coefficient = index.coeff(pivot)
        if not (coefficient.is_Integer and coefficient != 0):
            return None
        numerator = target - (index - coefficient * pivot)
        if coefficient < 0:
            numerator, coefficient = -numerator, -coefficient
        exact[pivot] = numerator / coefficient
        if coefficient == 1:
            value = sympy.expand(numerator)
        else:
            conditions.append(CondEq(sympy.Mod(numerator, coefficient), 0))
            value = IntDiv(numerator, coefficient)
        solution[pivot] = value
        if not (value == target and extents[pivot] == size):
            conditions += [value >= 0, value <= extents[pivot] - 1]
    return solution, conditions


def _window_split(index, target, free, extents):
    """``target = s o + t + rest`` with a tap ``t`` of at most ``s`` values: both
    solved at once, ``o = q / s`` and ``t = q % s`` for ``q = target - rest``, so a
    window that does not overlap the next (pooling 2x2 stride 2, a patch) is read
    with no loop over its taps and no divisibility test. None for other maps."""
    if len(free) != 2:
        return None
    (outer, step), (tap, unit) = sorted(((d, index.coeff(d)) for d in free),
                                        key=lambda pair: -abs(pair[1]))
    if not (step.is_Integer and step > 1 and unit == 1 and extents[tap] <= step):
        return None
    quotient = sympy.expand(target - (index - step * outer - tap))
    conditions = [quotient >= 0, IntDiv(quotient, step) <= extents[outer] - 1]
    if extents[tap] < step:
        conditions.append(sympy.Mod(quotient, step) <= extents[tap] - 1)
    return {outer: IntDiv(quotient, step), tap: sympy.Mod(quotient, step)}, conditions


def _affine(index, loops):
    """Whether ``index`` is affine in ``loops`` with integer constants only."""
    try:
        polynomial = sympy.Poly(index, *loops) if loops else None
    except sympy.PolynomialError:
        return False
    if polynomial is not None and polynomial.total_degree() > 1:
        return False
    if not all(term.as_coeff_Mul()[0].is_Integer for term in sympy.Add.make_args(index)):
        return False
    rest = sympy.sympify(index.xreplace({d: 0 for d in loops}))
    return not rest.has(sympy.Indexed) and not any(
        isinstance(node, (IntDiv, sympy.Mod, sympy.floor))
        for node in sympy.preorder_traversal(index))


def opaque_indices(expression):
    """``expression`` with every index that is not a plain Dimension or a number
    wrapped in ``INT(...)``, out of Devito's bound inference."""
    def wrap(access):
        indices = [i if isinstance(i, Dimension) or i.is_Integer else INT(i)
                   for i in access.indices]
        return access.function.indexed[tuple(indices)]
    replacements = {a: wrap(a) for a in sympy.preorder_traversal(expression)
                    if isinstance(a, sympy.Indexed)}
    return expression.xreplace(replacements)


def guarded(value, conditions):
    """``value`` where every condition holds, else 0 (nested C ternaries: nothing
    is read at a point that fails one)."""
    for condition in reversed(conditions):
        value = Select(condition, value, 0)
    return value
