"""Crop: drop rows and columns at the edges of NCHW feature maps."""

from devito import Eq

from devito_ml.layer import Layer
from devito_ml.validation import ShapeError, as_pair

__all__ = ['Crop']


class Crop(Layer):
    """Drop ``before`` rows and columns at the start and ``after`` at the end of each
    feature map.

    ``from_torch`` places one after a ``Conv2d(padding='same')`` whose padding torch
    splits unevenly (one more row or column after than before, with an even
    kernel): the convolution pads both sides by the larger amount, the crop drops
    the extra first row or column.

    Parameters
    ----------
    before, after : int or pair of int
        Rows and columns dropped at the start and at the end.
    input_size : tuple of int, optional
        ``(batch, channels, rows, cols)``; inferred inside a net.

    Shape
    -----
    ``(N, C, H, W) -> (N, C, H - before[0] - after[0], W - before[1] - after[1])``.

    Notes
    -----
    ``y[n, c, h, w] = x[n, c, h + t, w + l]``; the adjoint, derived, gathers
    ``dy`` back in place and zeros where rows and columns were dropped.

    Examples
    --------
    >>> Crop(before=(1, 0), input_size=(2, 3, 8, 8)).output_size
    (2, 3, 7, 8)
    """

    family = 'crop'

    def __init__(self, before=0, after=0, input_size=None, name=None, dtype=None,
                 generate_code=False):
        self.name = name or self.family
        self.before = as_pair(self, 'before', before, minimum=0)
        self.after = as_pair(self, 'after', after, minimum=0)
        super().__init__(input_size, name, dtype, generate_code)

    @property
    def output_size(self):
        n, c, h, w = self.input_size
        rows = h - self.before[0] - self.after[0]
        columns = w - self.before[1] - self.after[1]
        if rows < 1 or columns < 1:
            raise ShapeError(f"Crop `{self.name}`: dropping {self.before} before and "
                             f"{self.after} after leaves nothing of input {(h, w)}")
        return (n, c, rows, columns)

    def _forward_equations(self, training):
        n, c, y, x = self.out_dims
        top, left = self.before
        return [Eq(self.result[n, c, y, x], self.input[n, c, y + top, x + left])]
