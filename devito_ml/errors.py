"""The errors devito_ml raises beyond Python's own: each message names what was
wrong (the layer, the argument, the file, the epoch and step)."""

from devito_ml.validation import LayerArgumentError, ShapeError

__all__ = ['LayerArgumentError', 'ShapeError', 'NonFiniteError', 'CheckpointError']


class NonFiniteError(FloatingPointError):
    """A NaN or an infinity where training needs finite numbers: a loss, a
    parameter about to be saved, an input asked to be checked."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the net or the
    optimizer it is loaded into. Nothing was loaded."""
