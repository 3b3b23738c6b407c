"""Activation functions, each with its derivative beside it.

A layer applies ``activation.forward(z)`` to its pre-activation ``z`` and stores only
the result ``y``; the backward pass needs ``dy/dz`` written in terms of ``y``, which
every activation here provides (``derivative_from_output``). A plain sympy lambda, as
in the tutorial, is accepted: when it is one of the activations below
(``lambda x: Max(0, x)`` is ReLU) it becomes that activation, otherwise it runs
forward only in a layer that fuses it (its backward pass is refused with a clear
error there), while an :class:`~devito_ml.ActivationLayer`, whose adjoint is derived
from its forward maths (:mod:`devito_ml.autodiff`), trains with it.
"""

import sympy
from devito import Eq
from sympy import Max

from devito_ml.symbolics import Select

__all__ = ['Activation', 'Identity', 'ReLU', 'LeakyReLU', 'Sigmoid', 'Tanh',
           'ForwardOnly', 'as_activation']


class Activation:
    """Base class: ``forward(z)`` and ``derivative_from_output(y)``."""

    is_identity = False

    def forward(self, z):
        raise NotImplementedError

    def derivative_from_output(self, y):
        raise NotImplementedError

    def gradient_equations(self, target, gradient, output, dims):
        """``[target = gradient * f'(output)]`` at ``dims`` (dz = dy f'(y): the
        gradient before the activation from the one after it), or nothing where
        ``target`` is ``gradient`` itself (the identity's)."""
        if target is gradient:
            return []
        return [Eq(target[dims], gradient[dims]
                   * self.derivative_from_output(output[dims]))]

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    """``y = z``; ``dy/dz = 1``."""

    is_identity = True

    def forward(self, z):
        return z

    def derivative_from_output(self, y):
        return sympy.Integer(1)


class ReLU(Activation):
    """``y = max(0, z)``; ``dy/dz = 0 if y <= 0 else 1`` (0 at z = 0, as PyTorch).

    Written as ``z < 0 ? 0 : z`` so that a NaN stays NaN, as in torch (``fmaxf``
    would turn it into 0 and hide a diverging input); its gradient passes a NaN's
    upstream gradient, as torch's ``threshold_backward``.
    """

    def forward(self, z):
        return Select(z < 0, 0, z)

    def derivative_from_output(self, y):
        return Select(y <= 0, 0, 1)


class LeakyReLU(Activation):
    """``y = z if z > 0 else slope*z``; ``dy/dz = 1 if y > 0 else slope``.

    Parameters
    ----------
    negative_slope : float, optional
        Slope for negative inputs, must be positive (default 0.01, as PyTorch).
    """

    def __init__(self, negative_slope=0.01):
        if not negative_slope > 0:
            raise ValueError(f"LeakyReLU: `negative_slope` must be > 0, got "
                             f"{negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, z):
        return Select(z > 0, z, self.negative_slope * z)

    def derivative_from_output(self, y):
        return Select(y > 0, 1, self.negative_slope)

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class Sigmoid(Activation):
    """``y = 1/(1 + exp(-z))``; ``dy/dz = y*(1 - y)``."""

    def forward(self, z):
        return 1 / (1 + sympy.exp(-z))

    def derivative_from_output(self, y):
        return y * (1 - y)


class Tanh(Activation):
    """``y = tanh(z)``; ``dy/dz = 1 - y**2``."""

    def forward(self, z):
        return sympy.tanh(z)

    def derivative_from_output(self, y):
        return 1 - y * y


class ForwardOnly(Activation):
    """A user's sympy callable, usable in the forward pass only."""

    def __init__(self, function):
        self.function = function

    def forward(self, z):
        return self.function(z)

    def derivative_from_output(self, y):
        raise NotImplementedError(
            f"the activation {self.function!r} is a plain callable, whose "
            "derivative cannot be written from the layer's output; use one of "
            "devito_ml.ReLU, LeakyReLU, Sigmoid, Tanh, Identity for backpropagation")

    def __repr__(self):
        return f"ForwardOnly({self.function!r})"


def as_activation(activation):
    """Turn ``None``, an Activation or a sympy callable into an Activation."""
    if activation is None:
        return Identity()
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, type) and issubclass(activation, Activation):
        return activation()
    if callable(activation):
        return _recognise(activation)
    raise TypeError(f"`activation` must be an Activation or a callable, got "
                    f"{activation!r}")


def _recognise(function):
    """The named activation a sympy callable computes, else ForwardOnly."""
    z = sympy.Symbol('z', real=True)
    try:
        value = sympy.sympify(function(z))
    except Exception:  # not symbolic: keep it as the user wrote it
        return ForwardOnly(function)
    if value == Max(0, z):
        return ReLU()
    for candidate in (Identity(), ReLU(), Sigmoid(), Tanh()):
        if value == candidate.forward(z):
            return candidate
    return ForwardOnly(function)
