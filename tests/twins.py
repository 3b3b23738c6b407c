"""A net against its plain torch.nn twin: same weights, inputs, labels and dropout
masks; outputs, loss, every parameter gradient and the running statistics."""

import numpy as np
import torch

from devito_ml import Dropout, FullyConnectedSoftmax
from devito_ml.interop import (load_torch_state_dict, to_torch, torch_names,
                               torch_state_dict)
from reference import TOLERANCE, assert_close, torch_dtype


def run_twin(twin, net, x, labels, dtype, training):
    """``twin`` in ``dtype`` with the net's weights and masks: output, loss, module."""
    twin = twin.to(torch_dtype(dtype))
    twin.load_state_dict({name: value.to(torch_dtype(dtype))
                          for name, value in torch_state_dict(net).items()})
    twin.train(training)
    modules = dict(twin.named_modules())
    for layer in net.layers:
        if isinstance(layer, Dropout):
            modules[layer.path].mask = torch.from_numpy(layer.mask.data.copy()).to(
                torch_dtype(dtype))
    output = twin(torch.from_numpy(x).to(torch_dtype(dtype)))
    loss = torch.nn.functional.cross_entropy(output, torch.from_numpy(labels))
    loss.backward()
    return output.detach().numpy(), loss.item(), twin


def gradient_error(value, reference, largest):
    """Relative error; a gradient that vanishes in torch (a convolution's bias before
    a BatchNorm in training) is measured against the largest gradient of the net."""
    scale = np.abs(reference).max()
    if scale < 1e-6 * largest:
        scale = largest
    return np.abs(value - reference).max() / scale


def compare_model(net, make_twin, rng, training):
    """Same weights, inputs, labels and dropout masks; compare everything.

    float64 within 1e-10. float32 within 1e-4, or, where rounding through dozens of
    layers exceeds that, within 3 times torch's own float32 distance to the float64
    computation (both compared with the twin run in float64).
    """
    dtype = net.dtype.type
    net.train(training)
    batch = net.input_size[0]
    x = rng.standard_normal(net.input_size).astype(dtype)
    labels = rng.integers(0, net.output_size[1], batch)
    before = torch_state_dict(net)           # running statistics before this step
    output = net.forward(x)
    loss = net.backward(labels)
    after = torch_state_dict(net)            # copies
    load_torch_state_dict(net, before)
    output_ref, loss_ref, twin = run_twin(make_twin(), net, x, labels, dtype, training)
    truth = None
    if dtype == np.float32:
        truth = run_twin(make_twin(), net, x, labels, np.float64, training)[2]
    load_torch_state_dict(net, after)
    assert_close(output, output_ref, dtype, 'output')
    assert_close(loss, loss_ref, dtype, 'loss')
    parameters = dict(twin.named_parameters())
    exact = dict(truth.named_parameters()) if truth is not None else None
    largest = max(np.abs(p.grad.numpy()).max() for p in parameters.values())
    roles = {'W': 'weight', 'b': 'bias'}
    for layer in net.layers:
        for role, gradient in layer.gradients().items():
            name = f"{layer.path}.{roles[role]}"
            reference = parameters[name].grad.numpy()
            error = gradient_error(gradient.data, reference, largest)
            bound = TOLERANCE[dtype]
            if exact is not None and error > bound:
                true = exact[name].grad.numpy()
                bound = max(bound, 3 * gradient_error(reference, true, largest))
                error = gradient_error(gradient.data, true, largest)
            assert error <= bound, f"{name}: relative error {error:.3e} above {bound}"
    buffers = dict(twin.named_buffers())
    for name, data in torch_names(net).items():
        if name in buffers and 'running' in name:
            assert_close(data, buffers[name].numpy(), dtype, name)


def compare_net(net, rng, batch=None):
    """Forward, loss and every parameter gradient of ``net`` against its twin."""
    dtype = net.dtype.type
    batch = batch or net.input_size[0]
    x = rng.random((batch,) + net.input_size[1:]).astype(dtype)
    labels = rng.integers(0, net.output_size[1], batch)
    output = net.forward(x)
    loss = net.backward(labels)
    twin = to_torch(net)
    reference = twin(torch.from_numpy(x))
    if isinstance(net.layers[-1], FullyConnectedSoftmax):
        reference_loss = torch.nn.functional.cross_entropy(reference,
                                                           torch.from_numpy(labels))
        reference = torch.softmax(reference, 1)
    else:
        reference_loss = torch.nn.functional.cross_entropy(reference,
                                                           torch.from_numpy(labels))
    reference_loss.backward()
    assert_close(output, reference.detach().numpy(), dtype, 'output')
    assert_close(loss, reference_loss.item(), dtype, 'loss')
    gradients = net.gradients()
    parametrised = [m for m in twin if hasattr(m, 'weight')]
    layers = [layer for layer in net.layers if layer.parameters()]
    for layer, module in zip(layers, parametrised, strict=True):
        assert_close(gradients[layer.kernel.name], module.weight.grad.numpy(), dtype,
                     layer.kernel.name)
        assert_close(gradients[layer.bias.name], module.bias.grad.numpy(), dtype,
                     layer.bias.name)
