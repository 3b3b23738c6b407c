"""Learning-rate schedules: ``epoch -> learning rate``, set before each epoch (no
recompilation: the rate is a run-time argument of the generated code)."""

import numpy as np

__all__ = ['cosine_schedule', 'step_schedule']


def cosine_schedule(lr, epochs, final=0.0):
    """``epoch -> lr`` decaying from ``lr`` to ``final`` along half a cosine."""
    def schedule(epoch):
        return final + (lr - final) * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
    return schedule


def step_schedule(lr, every, gamma=0.1):
    """``epoch -> lr * gamma ** (epoch // every)``: ``lr`` multiplied by ``gamma``
    every ``every`` epochs (PyTorch's ``StepLR``)."""
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"step_schedule: `every` must be an int >= 1, got {every!r}")

    def schedule(epoch):
        return lr * gamma ** (epoch // every)
    return schedule
