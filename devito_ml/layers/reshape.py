"""Flat: NCHW feature maps (any rows x cols) to (batch, features)."""

from devito import Eq
from devito.types.utils import IgnoreDimSort

from devito_ml.layer import Layer
from devito_ml.layout import stored_order

__all__ = ['Flat']


class Flat(Layer):
    """Flatten ``(N, C, H, W)`` to ``(N, C*H*W)`` in C order, as ``torch.flatten``.

    Notes
    -----
    ``y[n, c*H*W + h*W + w] = x[n, c, h, w]``; the adjoint, derived, is the same
    map read backwards: ``dx[n, c, h, w] = dy[n, c*H*W + h*W + w]``.

    Examples
    --------
    >>> Flat(input_size=(2, 3, 4, 5)).output_size
    (2, 60)
    """

    family = 'flat'

    def __init__(self, input_size=None, name=None, dtype=None, generate_code=False):
        super().__init__(input_size, name, dtype, generate_code)

    def reads_channels_last(self, index):
        """Any layout: each feature is read at its (channel, row, column)."""
        return True

    @property
    def output_size(self):
        n, c, h, w = self.input_size
        return (n, c * h * w)

    def _feature(self):
        _, _, h, w = self.input_size
        _, c, y, x = self.in_dims
        return c * h * w + y * w + x

    def _forward_equations(self, training):
        n = self.batch_dim
        # looping in the order the input is stored (the feature index names its
        # Dimensions in another)
        return [Eq(self.result[n, self._feature()], self.input[self.in_dims],
                   implicit_dims=IgnoreDimSort(stored_order(self.input, self.in_dims)))]
