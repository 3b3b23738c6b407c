"""Geometry of sliding windows, shared by convolution and pooling."""

from devito_ml.symbolics import Halo
from devito_ml.validation import ShapeError

__all__ = ['output_extent', 'window_output_size', 'padding_halo']


def output_extent(size, kernel, stride, padding, dilation):
    """``floor((size + 2*padding - dilation*(kernel - 1) - 1)/stride) + 1``."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def window_output_size(layer, channels, kernel, dilation=(1, 1)):
    """``(batch, channels, OH, OW)`` of ``layer``'s windows over its NCHW input.

    Raises a ShapeError naming the layer when the window does not fit.
    """
    n, _, h, w = layer.input_size
    extents = [output_extent(size, k, s, p, d) for size, k, s, p, d in
               zip((h, w), kernel, layer.stride, layer.padding, dilation)]
    if min(extents) < 1:
        raise ShapeError(f"{type(layer).__name__} `{layer.name}`: kernel {tuple(kernel)} "
                         f"with dilation {tuple(dilation)} does not fit input {(h, w)} "
                         f"padded by {layer.padding}")
    return (n, channels) + tuple(extents)


def padding_halo(padding):
    """The halo of an NCHW input zero-padded by ``(rows, cols)``."""
    ph, pw = padding
    return Halo((0, 0), (0, 0), (ph, ph), (pw, pw))
