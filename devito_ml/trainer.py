"""Trainers: how :func:`~devito_ml.training.fit` runs the steps of an epoch, in one
process (:class:`LocalTrainer`) or over the ranks of an MPI job
(:class:`~devito_ml.distributed.DataParallel`), behind one interface."""

import contextlib
import numbers

from devito_ml.metrics import correct_answers, evaluate

__all__ = ['Trainer', 'LocalTrainer']


class Trainer:
    """What :func:`~devito_ml.training.fit` asks of a way to train a net.

    Attributes
    ----------
    net : Net
    batch_size : int
        The global batch: the samples a step takes.
    is_root : bool
        Whether this process logs, draws progress bars and writes checkpoints.
    """

    net = None
    batch_size = None
    is_root = True

    def build(self, optimizer, loss=None, evaluation=False):
        """Build the operators of a step (and of evaluation) before the clock runs."""
        raise NotImplementedError

    def train_step(self, x, y, optimizer, loss=None):
        """One step on the global batch ``(x, y)``: forward, backward, update.

        Returns
        -------
        (float, int)
            The batch's mean loss and its number of correct answers, both from
            before the update.
        """
        raise NotImplementedError

    def end_epoch(self):
        """What an epoch's end needs before evaluation and checkpoints."""

    def evaluate(self, images, labels, loss=None):
        """Mean loss and accuracy over a data set, in evaluation mode."""
        raise NotImplementedError

    @contextlib.contextmanager
    def guard(self, what):
        """A context in which an exception ends the training (``what``: its name
        in messages) the way this trainer needs."""
        yield


class LocalTrainer(Trainer):
    """Training in this process: every step in the net's fused train operator.

    Parameters
    ----------
    net : Net
    batch_size : int, optional
        Samples a step takes, at most the batch the net holds (the default).
    """

    def __init__(self, net, batch_size=None):
        self.net = net
        self.batch_size = checked_batch_size(type(self).__name__, net, batch_size,
                                             net.input_size[0])

    def build(self, optimizer, loss=None, evaluation=False):
        self.net.train_operator(optimizer, loss)
        if evaluation:
            self.net.evaluation_operator(loss)

    def train_step(self, x, y, optimizer, loss=None):
        value, output = self.net.train_step(x, y, optimizer, loss)
        return value, correct_answers(output, y)

    def evaluate(self, images, labels, loss=None):
        return evaluate(self.net, images, labels, loss)


def checked_batch_size(owner, net, batch_size, most):
    """``batch_size`` (default: the net's), a positive int of at most ``most``
    samples, or a ValueError naming ``owner``."""
    if batch_size is None:
        return net.input_size[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"{owner}: `batch_size` must be a positive int, got "
                         f"{batch_size!r}")
    if most is not None and batch_size > most:
        raise ValueError(f"{owner}: `batch_size` {batch_size} is larger than the batch "
                         f"of {net.input_size[0]} that Net `{net.name}` holds")
    return int(batch_size)
