"""Reference networks built from devito_ml layers."""

from devito_ml.models.lenet import lenet5

__all__ = ['lenet5']
