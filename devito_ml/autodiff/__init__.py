"""Adjoints derived from forward equations: see :mod:`devito_ml.autodiff.rules` for
the rules of differentiation, :mod:`devito_ml.autodiff.reverse` for how a set of
forward equations becomes the equations of its gradients."""

from devito_ml.autodiff.reverse import ScatterWarning, adjoint, gradient_name
from devito_ml.autodiff.rules import RULES, AutodiffError, derivative

__all__ = ['adjoint', 'derivative', 'gradient_name', 'RULES', 'AutodiffError',
           'ScatterWarning']
