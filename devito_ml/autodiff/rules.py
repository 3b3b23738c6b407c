"""Derivative rules: every rule of differentiation the adjoints use, in one table.

:func:`derivative` differentiates a forward expression with respect to one access
(an ``Indexed``, e.g. ``conv1_in[n, c, h + ky, w + kx]``); every other access is a
constant there. Sums, products and powers follow calculus; the functions sympy
knows (``exp``, ``log``, ``tanh``, ``erf``, ...) use sympy's own first derivative;
``RULES`` holds the rest: the non-smooth ones, each with the convention PyTorch
follows, and the selections Devito prints as C ternaries. An expression with no
rule is refused (:class:`AutodiffError`), never given a zero derivative.

The conventions, as in PyTorch:

- ReLU, ``Select(z < 0, 0, z)`` (as :class:`~devito_ml.ReLU` writes it) and
  ``Max(0, z)``: slope 0 at ``z = 0``; a NaN ``z`` passes its gradient
  (``threshold_backward``).
- ``Max(a, b, ...)`` and ``Min``: the gradient goes to the *first* argument that
  reaches the extreme (max pooling's first maximum), first in the order of their
  indices (a window's taps row-major, as PyTorch scans them; sympy keeps the
  arguments of ``Max`` in an order of its own).
- ``Abs(z)``: slope ``sign(z)``, 0 at 0; ``sign``, ``floor``, ``ceiling``: 0.
- A selection ``Select(c, a, b)``: the derivative of the branch taken; the
  condition is a constant of the derivative.
"""

import sympy
from devito.symbolics import InlineIf

from devito_ml.symbolics import Select

__all__ = ['AutodiffError', 'RULES', 'derivative']


class AutodiffError(ValueError):
    """A forward equation whose adjoint cannot be derived (named in the message)."""


def _is_relu(expression):
    condition, true, false = expression.args
    return (isinstance(condition, sympy.StrictLessThan) and condition.rhs == 0
            and true == 0 and false == condition.lhs)


def _selection(e, partials):
    if _is_relu(e):
        return Select(e.args[2] <= 0, 0, partials[2])
    return Select(e.args[0], partials[1], partials[2])


def _first_extreme(args, position, before, after):
    """1 where ``args[position]`` is the first argument to reach the extreme:
    beyond every earlier one (``before``), at least as far as every later one
    (``after``); else 0."""
    mine, value = args[position], sympy.Integer(1)
    for other in reversed(args[position + 1:]):
        value = Select(after(mine, other), value, 0)
    for other in reversed(args[:position]):
        value = Select(before(mine, other), value, 0)
    return value


def _scan_order(argument):
    """Where a window scan meets ``argument``: numbers first, then accesses by
    their index offsets, row-major."""
    if argument.is_Number:
        return (0, '', ())
    if isinstance(argument, sympy.Indexed):
        offsets = tuple(int(sympy.sympify(i).as_coeff_Add()[0]) for i in argument.indices)
        return (1, argument.function.name, offsets)
    return (2, str(argument), ())


def _extreme(before, after):
    def rule(e, partials):
        order = sorted(range(len(e.args)), key=lambda i: _scan_order(e.args[i]))
        args = [e.args[i] for i in order]
        return sympy.Add(*[_first_extreme(args, place, before, after) * partials[i]
                           for place, i in enumerate(order) if partials[i] != 0])
    return rule


def _abs(e, partials):
    z, = e.args
    return Select(z > 0, partials[0], Select(z < 0, -partials[0], 0))


def _flat(e, partials):
    return sympy.Integer(0)


RULES = {
    # head: rule(expression, derivatives of its arguments) -> its derivative
    InlineIf: _selection,
    sympy.Max: _extreme(lambda a, b: a > b, lambda a, b: a >= b),
    sympy.Min: _extreme(lambda a, b: a < b, lambda a, b: a <= b),
    sympy.Abs: _abs,
    sympy.sign: _flat,
    sympy.floor: _flat,
    sympy.ceiling: _flat,
}
"""The rules sympy does not give, or gives in a form C cannot print, by the head of
the expression; each is given the derivatives of the head's arguments (the chain
rule) and returns the head's."""


def derivative(expression, access, term=None):
    """``d expression / d access``, every other access held constant.

    Parameters
    ----------
    expression : sympy expression
    access : Indexed
        The variable (every occurrence of this exact access).
    term : callable, optional
        ``term(subexpression, why)`` makes the message of the
        :class:`AutodiffError` raised where no rule applies.

    Returns
    -------
    sympy expression, in terms of the forward values.

    Examples
    --------
    >>> import sympy
    >>> from devito import Dimension, Function
    >>> i = Dimension('i')
    >>> x = Function(name='x', dimensions=(i,), shape=(4,), space_order=0)
    >>> derivative(sympy.tanh(x[i]) + 2 * x[i], x[i])
    3 - tanh(x[i])**2
    """
    term = term or (lambda e, why: f"{why} `{e}`")
    return _d(expression, access, term)


def _d(e, v, term):
    if not e.has(v):
        return sympy.Integer(0)
    if e == v:
        return sympy.Integer(1)
    if isinstance(e, sympy.Indexed):
        raise AutodiffError(term(e, 'an index depends on data in'))
    if isinstance(e, sympy.Add):
        return sympy.Add(*[_d(a, v, term) for a in e.args])
    if isinstance(e, sympy.Mul):
        return sympy.Add(*[sympy.Mul(*e.args[:i], _d(f, v, term), *e.args[i + 1:])
                           for i, f in enumerate(e.args) if f.has(v)])
    if isinstance(e, sympy.Pow):
        base, exponent = e.args
        if not exponent.has(v):
            return exponent * base ** (exponent - 1) * _d(base, v, term)
        return e * (_d(exponent, v, term) * sympy.log(base)
                    + exponent * _d(base, v, term) / base)
    for head, rule in RULES.items():
        if isinstance(e, head):
            partials = [_d(a, v, term) if isinstance(a, sympy.Expr)
                        else sympy.Integer(0) for a in e.args]   # not conditions
            return rule(e, partials)
    if isinstance(e, sympy.Function):
        return sympy.Add(*[_outer(e, i, term) * _d(a, v, term)
                           for i, a in enumerate(e.args, start=1) if a.has(v)])
    raise AutodiffError(term(e, 'no derivative rule for'))


def _outer(e, position, term):
    """sympy's derivative of the function ``e`` in its argument ``position``."""
    try:
        value = e.fdiff(position)
    except Exception:
        raise AutodiffError(term(e, 'no derivative rule for')) from None
    if value.has(sympy.Derivative, sympy.Subs):
        raise AutodiffError(term(e, 'no derivative rule for'))
    return value
