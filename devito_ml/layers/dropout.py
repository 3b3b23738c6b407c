"""Dropout with a seeded mask: the forward maths (the adjoint is derived)."""

import numbers

import numpy as np
from devito import Eq

from devito_ml.layer import Layer
from devito_ml.validation import LayerArgumentError

__all__ = ['Dropout']


class Dropout(Layer):
    r"""Zero each value with probability ``p`` in training, scaling the others by
    ``1/(1-p)``, as ``torch.nn.Dropout``; the identity in evaluation.

    Parameters
    ----------
    p : float
        Probability of zeroing, in [0, 1].
    input_size : tuple of int, optional
        ``(batch, features)`` or NCHW; inferred inside a net.
    seed : int, optional
        Seed of the masks. Inside a net built with a seed and none here, it is
        drawn from the net's seed. The mask of the ``t``-th training step depends
        only on ``(seed, t)``, and ``t`` is saved with the net's state: a resumed
        run draws the masks it would have drawn.
    name, dtype, generate_code
        As :class:`~devito_ml.Conv`.

    Notes
    -----
    :math:`y = x\, m` and :math:`\partial x = dy\, m` with the same mask
    :math:`m \in \{0, 1/(1-p)\}`, drawn on the host before each training step
    (``mask``); in evaluation :math:`y = x`, :math:`\partial x = dy` (derived:
    :mod:`devito_ml.autodiff`).

    Examples
    --------
    >>> import numpy as np
    >>> layer = Dropout(0.5, input_size=(2, 1000), dtype=np.float64, seed=0)
    >>> y = layer.forward(np.ones((2, 1000)))
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 2.0]
    """

    preserves_layout = True
    family = 'dropout'
    input_ndim = (2, 4)
    mode_dependent = True
    draws_per_step = True

    def __init__(self, p=0.5, input_size=None, seed=None, name=None, dtype=None,
                 generate_code=False):
        self.name = name or self.family
        if not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise LayerArgumentError(f"Dropout `{self.name}`: `p` must be a number in "
                                     f"[0, 1], got {p!r}")
        self.p = float(p)
        self.step = np.zeros((), np.int64)
        self.mask_seed = seed
        super().__init__(input_size, name, dtype, generate_code, seed)

    @property
    def output_size(self):
        return self.input_size

    def _create_functions(self):
        self.mask = self.output_tensor('mask')

    def reset_parameters(self, rng):
        """Draw the mask seed from ``rng`` unless one was given."""
        if self.seed is None:
            self.mask_seed = int(rng.integers(2 ** 63))

    def buffers(self):
        return {'step': self.step}

    def before_step(self, step):
        """Draw the mask of a training step: its rows of the whole batch's mask,
        so that a shard of a batch gets the masks the whole batch would."""
        if not step.training:
            return
        if step.samples:
            rng = np.random.default_rng([self.mask_seed, int(self.step)])
            rows = rng.random((step.total,) + tuple(self.output_size[1:]))
            keep = rows[step.first:step.first + step.samples] >= self.p
            scale = 0.0 if self.p == 1 else 1 / (1 - self.p)
            self.mask.data[:step.samples] = keep * scale
        self.step += 1

    def _forward_equations(self, training):
        dims = self.out_dims
        value = self.input[dims] * self.mask[dims] if training else self.input[dims]
        return [Eq(self.result[dims], value)]
