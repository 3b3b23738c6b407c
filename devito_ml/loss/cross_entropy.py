"""Cross entropy on logits, with the softmax fused (and stable)."""

import numpy as np
import sympy
from devito import Eq, Inc

from devito_ml.layers.dense import row_sum_equations
from devito_ml.loss.base import Loss
from devito_ml.symbolics import tap_dimension, tensor
from devito_ml.validation import ShapeError

__all__ = ['CrossEntropy', 'cross_entropy']


class CrossEntropy(Loss):
    r"""Mean cross entropy of softmax(logits) against class labels or probabilities.

    Notes
    -----
    With :math:`m_n = \max_k z_{nk}`, :math:`s_n = \sum_k e^{z_{nk} - m_n}` and
    :math:`T_n = \sum_k t_{nk}`,

    .. math::

        L = \frac{1}{N}\sum_n \sum_k t_{nk}\big(\log s_n - (z_{nk} - m_n)\big),\qquad
        \frac{\partial L}{\partial z_{nk}} = \frac{1}{N}\Big(T_n\frac{e^{z_{nk}-m_n}}{s_n}
            - t_{nk}\Big)

    as torch's ``cross_entropy``, also for target rows that do not sum to one.
    Each term is formed from ``z - m`` (exact near the maximum) and ``log s`` (at
    most the log of the number of classes): nothing of the logits' magnitude
    cancels, so logits of 1e4 keep float32's relative precision in the loss. The
    shifted logits ``z - m`` are stored before the loss reads them: written in one
    expression, sympy flattens ``log s - (z - m)`` into ``log s - z + m`` and a
    common offset of 1e4 then costs the loss four digits in float32. The gradient
    is derived from the per-sample losses (:mod:`devito_ml.autodiff`), the row
    maximum held constant (:meth:`constants`).
    """

    name = 'cross_entropy'
    reads = ('logits', 'output')
    """The logits of a :class:`~devito_ml.FullyConnectedSoftmax` where it ends the
    net (its probabilities are not read: where one underflows, its log is not), else
    the output, taken as logits."""

    def _allocate(self):
        if len(self.output_size) != 2:
            raise ShapeError(f"cross_entropy: the network output must be (batch, "
                             f"classes), got {self.output_size}; end the net with a "
                             "FullyConnected layer or use mse")
        batch = self.output_size[:1]
        self.row_max = tensor(f"{self.name}_max", (self.n,), batch, self.dtype)
        self.row_sum = tensor(f"{self.name}_sum", (self.n,), batch, self.dtype)
        self.shifted = tensor(f"{self.name}_shifted", (self.n, self.k), self.output_size,
                              self.dtype)

    def constants(self):
        """The row maximum only shifts the logits, and the loss does not depend on
        it: a constant of the derivative (the rule of cross entropy from logits),
        whose gradient is then ``(T_n softmax(z)_nk - t_nk) / N``."""
        return (self.row_max,)

    def forward_equations(self, output):
        n, k, t = self.n, self.k, self.targets
        classes = self.output_size[1]
        passes = [tap_dimension(f"{self.name}_{role}", classes)
                  for role in ('max_f', 'sum_f')]
        k_dot = tap_dimension(f"{self.name}_dot_f", classes)
        loss, log_sum = self.per_sample[n], sympy.log(self.row_sum[n])
        return row_sum_equations(output, self.row_max, self.row_sum, n, passes) + [
            Eq(self.shifted[n, k], output[n, k] - self.row_max[n]),
            Eq(loss, 0),
            Inc(loss, t[n, k_dot] * (log_sum - self.shifted[n, k_dot]))]

    def set_targets(self, targets, batch):
        """Class labels ``(b,)`` (ints) or target probabilities ``(b, classes)``."""
        targets = np.asarray(targets)
        classes = self.output_size[1]
        if targets.shape == (batch,) and np.issubdtype(targets.dtype, np.integer):
            if targets.min() < 0 or targets.max() >= classes:
                raise ShapeError(f"cross_entropy: `targets` must be {batch} labels in "
                                 f"[0, {classes}), got range [{targets.min()}, "
                                 f"{targets.max()}]")
            self._targets[:batch] = 0
            self._targets[np.arange(batch), targets] = 1
        elif targets.shape == (batch, classes) and \
                np.issubdtype(targets.dtype, np.number):
            if not np.all(np.isfinite(targets)):
                raise ValueError("cross_entropy: `targets` must be finite "
                                 "probabilities, got NaN or infinity")
            self._targets[:batch] = targets
        else:
            raise ShapeError(f"cross_entropy: `targets` must be {batch} integer labels "
                             f"in [0, {classes}) or shape {(batch, classes)}, got "
                             f"{targets.dtype} {targets.shape}")


def cross_entropy(output, targets, gradient, per_sample):
    """Equations for the cross entropy of ``output`` logits (functional form).

    Parameters
    ----------
    output, targets, gradient : Function
        ``(batch, classes)``: logits, target probabilities, dL/dlogits of the mean.
    per_sample : Function
        ``(batch,)``, receives each sample's loss.
    """
    loss = CrossEntropy().bind(output.shape, output.dtype)
    loss.targets, loss.per_sample = targets, per_sample
    return loss.equations(output, gradient)
