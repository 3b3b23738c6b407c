"""One helper that compares a devito_ml layer or net with torch.

Same weights, same inputs, same upstream gradient; output, input gradient and every
parameter gradient are compared in relative error scaled by the magnitude of the
reference: float64 within 1e-10, float32 within 1e-4.
"""

import numpy as np
import torch


TOLERANCE = {np.float64: 1e-10, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]


def relative_error(value, reference):
    """max |value - reference| / max |reference| (shapes must agree exactly)."""
    value, reference = np.asarray(value), np.asarray(reference)
    assert value.shape == reference.shape, (value.shape, reference.shape)
    scale = max(np.abs(reference).max(), np.finfo(reference.dtype).tiny)
    return np.abs(value - reference).max() / scale


def assert_close(value, reference, dtype, what):
    error = relative_error(value, reference)
    assert error <= TOLERANCE[np.dtype(dtype).type], \
        f"{what}: relative error {error:.3e} above {TOLERANCE[np.dtype(dtype).type]}"


def torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def copy_parameters_to_torch(layer, module):
    """Give ``module`` (weight, bias) the parameters of ``layer``."""
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.kernel.data.copy()))
        if getattr(module, 'bias', None) is not None:
            module.bias.copy_(torch.from_numpy(layer.bias.data.copy()))


def compare_layer(layer, module, rng, batch=None):
    """Run ``layer`` standalone and ``module`` on the same data; compare everything.

    ``module`` is a torch callable; when it has ``weight``, ``layer``'s parameters
    are copied into it first. ``batch`` runs a smaller batch than allocated.
    """
    dtype = layer.dtype.type
    batch = batch or layer.input_size[0]
    if hasattr(module, 'weight'):
        module = module.to(torch_dtype(dtype))
        copy_parameters_to_torch(layer, module)
    x = (rng.standard_normal((batch,) + tuple(layer.input_size[1:]))).astype(dtype)
    y = layer.forward(x)
    upstream = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(upstream)

    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    y_torch = module(x_torch)
    y_torch.backward(torch.from_numpy(upstream))
    assert_close(y, y_torch.detach().numpy(), dtype, f"{layer.name} output")
    assert_close(dx, x_torch.grad.numpy(), dtype, f"{layer.name} input gradient")
    if hasattr(module, 'weight'):
        assert_close(layer.kernel_gradients.data, module.weight.grad.numpy(), dtype,
                     f"{layer.name} weight gradient")
        if getattr(module, 'bias', None) is not None:
            assert_close(layer.bias_gradients.data, module.bias.grad.numpy(), dtype,
                         f"{layer.name} bias gradient")
