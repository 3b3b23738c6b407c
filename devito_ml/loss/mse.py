"""Mean squared error."""

import numpy as np
from devito import Eq, Inc

from devito_ml.loss.base import Loss
from devito_ml.validation import ShapeError

__all__ = ['MSE', 'mse']


class MSE(Loss):
    r"""Mean over all elements of ``(y - t)**2``, as ``torch.nn.MSELoss()``.

    Notes
    -----
    .. math:: L = \frac{1}{NK}\sum_{n,k}(y_{nk} - t_{nk})^2,\qquad
              \frac{\partial L}{\partial y_{nk}} = \frac{2}{NK}(y_{nk} - t_{nk})

    where ``k`` runs over every non-batch element (``K`` of them); the gradient is
    derived from the per-sample losses.
    """

    name = 'mse'

    def forward_equations(self, output):
        dims, t = self.dims, self.targets
        elements = int(np.prod(self.output_size[1:]))
        error = output[dims] - t[dims]
        loss = self.per_sample[self.n]
        return [Eq(loss, 0), Inc(loss, error * error / elements)]

    def set_targets(self, targets, batch):
        """Targets of the batch's outputs' shape (a numpy array or nested lists)."""
        targets = np.asarray(targets)
        expected = (batch,) + self.output_size[1:]
        if targets.shape != expected or not np.issubdtype(targets.dtype, np.number):
            raise ShapeError(f"mse: `targets` must be of shape {expected}, got "
                             f"{targets.dtype} {targets.shape}")
        if not np.all(np.isfinite(targets)):
            raise ValueError("mse: `targets` must be finite, got NaN or infinity")
        self._targets[:batch] = targets


def mse(output, targets, gradient, per_sample):
    """Equations for the squared error of ``output`` (functional form).

    ``per_sample`` receives each sample's mean squared error.
    """
    loss = MSE().bind(output.shape, output.dtype)
    loss.targets, loss.per_sample = targets, per_sample
    return loss.equations(output, gradient)
