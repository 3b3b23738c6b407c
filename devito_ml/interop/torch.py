"""Net parameters as torch tensors that share memory with the Devito Functions."""

import numpy as np

__all__ = ['torch_parameters', 'to_torch']


def torch_parameters(net):
    """The net's parameters as ``torch.nn.Parameter`` s for a torch optimizer.

    Each parameter's storage *is* the Devito Function's data, and its ``.grad`` is
    the Devito gradient's data: after ``net.backward(...)``, a torch optimizer's
    ``step()`` updates the net in place. Do not call ``zero_grad(set_to_none=True)``
    (the default), which would detach ``.grad``; devito_ml overwrites gradients on
    every backward, so zeroing is not needed.

    Returns
    -------
    dict
        ``name -> torch.nn.Parameter``, in the net's order.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from devito_ml import Net, FullyConnected
    >>> net = Net([FullyConnected((2, 3), (4, 3))], dtype=np.float64, seed=0)
    >>> parameters = torch_parameters(net)
    >>> optimizer = torch.optim.SGD(parameters.values(), lr=0.1)
    >>> _ = net.forward(np.ones((4, 3)))
    >>> _ = net.backward(np.array([0, 1, 0, 1]))
    >>> before = net.parameters()['fc1_b'].copy()
    >>> optimizer.step()
    >>> after = before - 0.1 * net.gradients()['fc1_b']
    >>> bool(np.allclose(net.parameters()['fc1_b'], after))
    True
    """
    import torch

    gradients = net.gradients()
    shared = {}
    for name, data in net.parameters().items():
        parameter = torch.nn.Parameter(torch.from_numpy(np.asarray(data)))
        parameter.grad = torch.from_numpy(np.asarray(gradients[name]))
        shared[name] = parameter
    return shared


def to_torch(net):
    """A ``torch.nn.Sequential`` with the layers and a copy of the parameters of ``net``.

    A :class:`~devito_ml.FullyConnectedSoftmax` becomes a ``Linear`` giving logits
    (the softmax belongs to torch's cross entropy). Used to check devito_ml against
    PyTorch and to time both on the same network.

    Examples
    --------
    >>> import numpy as np
    >>> from devito_ml import Net, Conv, Flat, FullyConnected, ReLU
    >>> net = Net([Conv((2, 3, 3), (1, 1, 4, 4), padding=1, activation=ReLU()),
    ...            Flat((1, 2, 4, 4)), FullyConnected((3, 32), (1, 32))], seed=0)
    >>> to_torch(net)
    Sequential(
      (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
      (1): ReLU()
      (2): Flatten(start_dim=1, end_dim=-1)
      (3): Linear(in_features=32, out_features=3, bias=True)
    )
    """
    import torch

    from devito_ml import activations
    from devito_ml.layers import conv, dense, elementwise, pooling, reshape

    dtype = torch.float64 if net.dtype == np.float64 else torch.float32
    modules = []
    for layer in net.layers:
        if isinstance(layer, conv.Conv):
            module = torch.nn.Conv2d(layer.input_size[1], layer.kernel_size[0],
                                     layer.kernel_size[1:], stride=layer.stride,
                                     padding=layer.padding, dilation=layer.dilation,
                                     groups=layer.groups, bias=layer.has_bias)
        elif isinstance(layer, pooling.AdaptivePooling):
            kind = torch.nn.AdaptiveMaxPool2d if layer.reduction == 'max' else \
                torch.nn.AdaptiveAvgPool2d
            module = kind(layer.target_size)
        elif isinstance(layer, pooling.Pooling) and layer.reduction == 'max':
            module = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding,
                                        layer.dilation, ceil_mode=layer.ceil_mode)
        elif isinstance(layer, pooling.Pooling) and layer.reduction == 'avg':
            module = torch.nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                        ceil_mode=layer.ceil_mode,
                                        count_include_pad=layer.count_include_pad)
        elif isinstance(layer, reshape.Flat):
            module = torch.nn.Flatten()
        elif isinstance(layer, dense.FullyConnected):
            module = torch.nn.Linear(layer.weight_size[1], layer.weight_size[0],
                                     bias=layer.has_bias)
        elif isinstance(layer, elementwise.ActivationLayer):
            module = torch.nn.Identity()       # its activation follows
        else:
            raise TypeError(f"to_torch: no torch module for {layer!r}")
        module = module.to(dtype)
        if hasattr(module, 'weight'):
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(layer.kernel.data.copy()))
                if layer.has_bias:
                    module.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
        modules.append(module)
        activation = getattr(layer, 'activation', activations.Identity())
        if isinstance(layer, dense.FullyConnectedSoftmax) or activation.is_identity:
            continue
        if isinstance(activation, activations.LeakyReLU):
            modules.append(torch.nn.LeakyReLU(activation.negative_slope))
        else:
            table = {activations.ReLU: torch.nn.ReLU,
                     activations.Sigmoid: torch.nn.Sigmoid,
                     activations.Tanh: torch.nn.Tanh}
            if type(activation) not in table:
                raise TypeError(f"to_torch: no torch module for {activation!r}")
            modules.append(table[type(activation)]())
    return torch.nn.Sequential(*modules)
