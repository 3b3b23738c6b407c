"""Weights in and out under PyTorch's names (``layer1.0.conv1.weight``)."""

import numpy as np

from devito_ml.validation import ShapeError

__all__ = ['torch_state_dict', 'load_torch_state_dict', 'torch_names']

_ROLES = {'W': 'weight', 'b': 'bias'}


def torch_names(net):
    """``torch name -> numpy view`` of every parameter and buffer of ``net``.

    A layer's module path is its ``path`` (set by the models and by
    :func:`from_torch`), else its name; parameters ``W``/``b`` are ``weight``/
    ``bias``; buffers keep their role (``running_mean``, ``num_batches_tracked``).
    Dropout's step counter has no torch twin and is left out.
    """
    names = {}
    for layer in net.layers:
        prefix = layer.path or layer.name
        for role, function in layer.parameters().items():
            names[f"{prefix}.{_ROLES[role]}"] = function.data
        for role, data in layer.buffers().items():
            if role != 'step':
                names[f"{prefix}.{role}"] = data
    return names


def torch_state_dict(net):
    """The net's parameters and buffers as a torch ``state_dict`` (copies).

    Examples
    --------
    >>> import numpy as np
    >>> from devito_ml.models import resnet18
    >>> net = resnet18(batch_size=2, image_size=(8, 8), width=4, small_input=True)
    >>> state = torch_state_dict(net)
    >>> state['layer1.0.conv1.weight'].shape, state['bn1.running_var'].shape
    (torch.Size([4, 4, 3, 3]), torch.Size([4]))
    """
    import torch
    return {name: torch.from_numpy(np.array(data, copy=True))
            for name, data in torch_names(net).items()}


def load_torch_state_dict(net, state_dict, strict=True):
    """Copy a torch ``state_dict`` (tensors or arrays) into ``net``.

    Parameters
    ----------
    strict : bool
        Every name of the net must be given and no other (as torch's
        ``load_state_dict``); otherwise only the names both have are copied.

    Raises
    ------
    KeyError
        Naming the missing and the unexpected keys.
    ShapeError
        Naming the first tensor whose shape differs.
    """
    own = torch_names(net)
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if strict and (missing or unexpected):
        raise KeyError(f"load_torch_state_dict: net `{net.name}` is missing "
                       f"{missing[:8]}{'...' if len(missing) > 8 else ''} and does not "
                       f"have {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for name, data in own.items():
        if name not in state_dict:
            continue
        value = state_dict[name]
        value = value.detach().cpu().numpy() if hasattr(value, 'detach') \
            else np.asarray(value)
        if value.shape != data.shape:
            raise ShapeError(f"load_torch_state_dict: `{name}` must have shape "
                             f"{data.shape}, got {value.shape}")
        data[...] = value
