"""Mean squared error."""

import numpy as np
from devito import Eq, Inc

from devito_ml.loss.base import Loss
from devito_ml.validation import check_size

__all__ = ['MSE', 'mse']


class MSE(Loss):
    r"""Mean over all elements of ``(y - t)**2``, as ``torch.nn.MSELoss()``.

    Notes
    -----
    .. math:: L = \frac{1}{NK}\sum_{n,k}(y_{nk} - t_{nk})^2,\qquad
              \frac{\partial L}{\partial y_{nk}} = \frac{2}{NK}(y_{nk} - t_{nk})

    where ``k`` runs over every non-batch element (``K`` of them).
    """

    name = 'mse'

    def equations(self, output, gradient):
        dims, t = self.dims, self.targets
        count = self.batch_size() * int(np.prod(self.output_size[1:]))
        error = output[dims] - t[dims]
        value = self.value[0]
        return [Eq(gradient[dims], 2 * error / count),
                Eq(value, 0), Inc(value, error * error / count)]

    def set_targets(self, targets, batch):
        check_size(None, 'targets', (batch,) + self.output_size[1:], targets.shape)
        self.targets.data[:batch] = targets


def mse(output, targets, gradient, value):
    """Equations for the mean squared error of ``output`` (functional form)."""
    loss = MSE().bind(output.shape, output.dtype)
    loss.targets, loss.value = targets, value
    return loss.equations(output, gradient)
