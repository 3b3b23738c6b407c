"""Net parameters as torch tensors that share memory with the Devito Functions."""

__all__ = ['torch_parameters']


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
    import numpy as np
    import torch

    gradients = net.gradients()
    shared = {}
    for name, data in net.parameters().items():
        parameter = torch.nn.Parameter(torch.from_numpy(np.asarray(data)))
        parameter.grad = torch.from_numpy(np.asarray(gradients[name]))
        shared[name] = parameter
    return shared
