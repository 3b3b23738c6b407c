"""Activations stored channels last, indexed as NCHW.

The register tiles of a convolution (``layers/conv_tiles.py``) run with the
channels innermost. Between two such convolutions, BatchNorm, activations and
residual Adds used to run on NCHW tensors, and every tiled convolution transposed
its input to channels last and its output back (about a quarter of a small ResNet's
forward pass). A :class:`ChannelsLastFunction` is stored ``(n, h, w, c)``, the
order the tiles want, and is indexed like every other activation,
``f[n, c, h, w]``: a layer's maths does not change with the layout, and Devito
loops over what the Indexed it makes is stored on, channels innermost, vectorised
over them. The net decides which activations are stored so
(:func:`~devito_ml.graph.channels_last_nodes`); what users see stays NCHW:
``data`` is an NCHW view of the storage, and the net's input and output are NCHW
Functions.

``f[f.dimensions]`` is an NCHW access only for NCHW Functions: code that walks a
Function's own storage (the derived adjoints, copies between Functions of one
layout) uses ``f.indexify()`` or ``f.indexed[...]``, which index the storage.
"""

import numpy as np
from devito import Function

__all__ = ['ChannelsLastFunction', 'is_channels_last', 'logical_dimensions',
           'logical_halo', 'storage_order', 'logical_order', 'stored_order']


def storage_order(items):
    """``(n, c, h, w)`` items in channels-last storage order ``(n, h, w, c)``."""
    n, c, h, w = items
    return (n, h, w, c)


def logical_order(items):
    """Channels-last storage items ``(n, h, w, c)`` in NCHW order."""
    n, h, w, c = items
    return (n, c, h, w)


class ChannelsLastFunction(Function):
    """A 4D Devito Function stored ``(n, h, w, c)``, indexed ``[n, c, h, w]``.

    Build it like a Function, with ``dimensions``, ``shape`` and ``halo`` given in
    storage order (:func:`devito_ml.symbolics.tensor` does the reordering).
    ``data`` is an NCHW view (a plain numpy view of the same memory);
    ``data_with_halo``, ``shape``, ``halo`` and ``dimensions`` are the storage's.

    Examples
    --------
    >>> import numpy as np
    >>> from devito import Dimension
    >>> n, h, w, c = (Dimension(name) for name in ('n', 'h', 'w', 'c'))
    >>> f = ChannelsLastFunction(name='f', dimensions=(n, h, w, c),
    ...                          shape=(2, 4, 5, 16), space_order=0)
    >>> f.data.shape, f[n, c, h, w]
    ((2, 16, 4, 5), f[n, h, w, c])
    """

    def __getitem__(self, index):
        if not isinstance(index, tuple) or len(index) != 4:
            raise IndexError(f"`{self.name}` is a channels-last activation: index it "
                             f"with four indices (n, c, h, w), got {index!r}")
        return self.indexed[storage_order(index)]

    @property
    def data(self):
        """The domain as an NCHW numpy view of the channels-last storage."""
        return np.asarray(Function.data.fget(self)).transpose(0, 3, 1, 2)


def stored_order(function, items):
    """NCHW ``items`` (loops of an access to ``function``) in the order
    ``function`` is stored: a copy that loops in it reads or writes contiguously."""
    return storage_order(items) if is_channels_last(function) else tuple(items)


def is_channels_last(function):
    """Whether ``function`` is stored channels last."""
    return isinstance(function, ChannelsLastFunction)


def logical_dimensions(function):
    """``function``'s Dimensions in the order it is indexed (NCHW)."""
    dims = tuple(function.dimensions)
    return logical_order(dims) if is_channels_last(function) else dims


def logical_halo(function):
    """``function``'s halo widths in the order it is indexed (NCHW)."""
    halo = tuple(tuple(side) for side in function.halo)
    return logical_order(halo) if is_channels_last(function) else halo
