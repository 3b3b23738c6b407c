"""A net's state: its parameters, their gradients and its buffers by name, and the
checked copy of a saved state into them."""

import numpy as np

from devito_ml.validation import ShapeError, non_finite

__all__ = ['parameters', 'gradients', 'buffers', 'load_state']


def parameters(layers):
    """Every parameter of ``layers`` as a numpy view, by Function name
    (``conv1_W``)."""
    return {f.name: f.data for layer in layers for f in layer.parameters().values()}


def gradients(layers):
    """Every parameter gradient as a numpy view, by its parameter's name."""
    return {layer.parameters()[role].name: f.data for layer in layers
            for role, f in layer.gradients().items()}


def buffers(layers):
    """State that is saved but not learnt (running statistics), by name
    (``bn1_running_mean``), as numpy views."""
    return {f"{layer.name}_{role}": data for layer in layers
            for role, data in layer.buffers().items()}


def load_state(owner, own, state):
    """Copy ``state`` into the arrays ``own`` (both by name), all or nothing.

    Everything is checked before anything is written: the names (missing and
    unexpected ones are listed), the shapes, and that the values are finite; an
    error names ``owner`` (``Net `net`.load_state_dict``).
    """
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise KeyError(f"{owner}: missing {missing}, unexpected {unexpected} (the "
                       "state of another model?)")
    for name, data in own.items():
        if np.shape(state[name]) != data.shape:
            raise ShapeError(f"{owner}: `{name}` must have shape {data.shape}, got "
                             f"{np.shape(state[name])}")
    bad = non_finite({name: state[name] for name in own})
    if bad:
        raise ValueError(f"{owner}: `{bad[0]}` holds NaN or infinite values")
    for name, data in own.items():
        data[...] = state[name]
