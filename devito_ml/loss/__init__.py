"""Losses: each emits equations for the loss value and its gradient with respect to
the network output."""

from devito_ml.loss.base import Loss
from devito_ml.loss.cross_entropy import CrossEntropy, cross_entropy
from devito_ml.loss.mse import MSE, mse

__all__ = ['Loss', 'CrossEntropy', 'MSE', 'cross_entropy', 'mse', 'get_loss']


def get_loss(loss):
    """A Loss from an instance or a name (``'cross_entropy'``, ``'mse'``)."""
    if isinstance(loss, Loss):
        return loss
    names = {'cross_entropy': CrossEntropy, 'mse': MSE}
    if loss in names:
        return names[loss]()
    raise ValueError(f"`loss` must be a Loss or one of {sorted(names)}, got {loss!r}")
