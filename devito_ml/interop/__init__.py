"""Interoperation with PyTorch (imported on use; torch is not a dependency)."""

from devito_ml.interop.convert import UnsupportedModuleError, from_torch
from devito_ml.interop.state import (load_torch_state_dict, torch_names,
                                     torch_state_dict)
from devito_ml.interop.torch import to_torch, torch_parameters

__all__ = ['torch_parameters', 'to_torch', 'torch_state_dict', 'load_torch_state_dict',
           'torch_names', 'from_torch', 'UnsupportedModuleError']
