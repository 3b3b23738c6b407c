"""Adjoints derived from forward equations.

A layer is its forward maths: :class:`~devito_ml.Layer` derives the backward pass
of a subclass that writes none with :func:`adjoint`, from its
``_forward_equations``. :mod:`~devito_ml.autodiff.rules` holds every rule of
differentiation (with PyTorch's conventions where a function is not smooth),
:mod:`~devito_ml.autodiff.statements` how forward equations are read,
:mod:`~devito_ml.autodiff.gather` how an access's index map is inverted so that a
gradient is gathered (parallel, no atomics), and :mod:`~devito_ml.autodiff.reverse`
the reverse walk that writes every gradient. :mod:`~devito_ml.autodiff.operations`
are coarser steps of forward maths (a convolution's correlation, a pooling's window
reduction) whose adjoint is a rule of their own, so that a layer's schedule
recognises the step and its adjoint whole.

A layer that is not built in, from its forward maths alone: its Functions (made
with ``self.tensor``, named ``<layer>_<role>``), its parameters and their gradients
by role, its output size and its forward equations; it then trains in a
:class:`~devito_ml.Net` like a built-in layer::

    class ChannelScale(Layer):
        family = 'scale'                       # named scale1, scale2, ... in a net

        @property
        def output_size(self):
            return self.input_size

        def _create_functions(self):
            channel, size = self.out_dims[1], self.input_size[1:2]
            self.scale, self.shift = (self.tensor(r, (channel,), size) for r in 'Wb')
            self.scale_gradients, self.shift_gradients = (
                self.tensor(r, (channel,), size) for r in ('dW', 'db'))

        def parameters(self):
            return {'W': self.scale, 'b': self.shift}

        def gradients(self):
            return {'W': self.scale_gradients, 'b': self.shift_gradients}

        def _forward_equations(self, training):
            n, c, h, w = self.out_dims
            return [Eq(self.result[n, c, h, w],
                       self.input[n, c, h, w] * self.scale[c] + self.shift[c])]

The forward maths may use ``Eq`` and ``Inc`` over Functions indexed by affine
expressions of Dimensions (strides, dilations, offsets), pointwise sympy functions,
``Max``/``Min``, :class:`~devito_ml.symbolics.Select` and
:func:`~devito_ml.symbolics.register_sum`; a reduction whose result a later
equation reads needs Dimensions of its own (Devito fuses loops over shared ones).
"""

from devito_ml.autodiff.operations import Operation, plain_equations
from devito_ml.autodiff.reverse import (ScatterWarning, adjoint, gradient_name,
                                        gradient_of, intermediates)
from devito_ml.autodiff.rules import RULES, AutodiffError, derivative

__all__ = ['adjoint', 'intermediates', 'derivative', 'gradient_name', 'gradient_of',
           'RULES', 'AutodiffError', 'ScatterWarning', 'Operation', 'plain_equations']
