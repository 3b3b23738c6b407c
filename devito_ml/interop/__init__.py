"""Interoperation with PyTorch (imported on use; torch is not a dependency)."""

from devito_ml.interop.torch import torch_parameters

__all__ = ['torch_parameters']
