"""Interoperation with PyTorch (imported on use; torch is not a dependency)."""

from devito_ml.interop.torch import to_torch, torch_parameters

__all__ = ['torch_parameters', 'to_torch']
