"""Metrics of training: correct answers, evaluation over a data set, the per-epoch
history."""

import dataclasses
import json

import numpy as np

from devito_ml.data.batches import Batches
from devito_ml.data.checks import checked_data

__all__ = ['History', 'correct_answers', 'evaluation_sums', 'evaluate']


@dataclasses.dataclass
class History:
    """Per-epoch metrics of a training run.

    Attributes
    ----------
    epochs : list of dict
        One entry per epoch: ``epoch``, ``train_loss``, ``train_accuracy``,
        ``test_loss``, ``test_accuracy`` (None without test data) and ``seconds``.
    """

    epochs: list = dataclasses.field(default_factory=list)

    def __getitem__(self, metric):
        return [entry[metric] for entry in self.epochs]

    def to_json(self):
        return json.dumps({'epochs': self.epochs}, indent=2)

    @classmethod
    def from_json(cls, text):
        return cls(json.loads(text)['epochs'])

    def table(self):
        """The history as the text table the command prints."""
        lines = [f"{'epoch':>5} {'train loss':>11} {'train acc':>10} {'test loss':>10} "
                 f"{'test acc':>9} {'seconds':>8}"]
        lines += [self.row(entry) for entry in self.epochs]
        return '\n'.join(lines)

    @staticmethod
    def row(entry):
        """One epoch's line of :meth:`table`."""
        def number(value, width, digits):
            if value is None:
                return ' ' * (width - 1) + '-'
            return f"{value:{width}.{digits}f}"
        return (f"{entry['epoch']:5d} {number(entry['train_loss'], 11, 4)} "
                f"{number(entry['train_accuracy'], 10, 4)} "
                f"{number(entry['test_loss'], 10, 4)} "
                f"{number(entry['test_accuracy'], 9, 4)} {entry['seconds']:8.2f}")


def evaluate(net, images, labels, loss=None):
    """Mean loss and accuracy over a data set, in evaluation mode, no gradients."""
    images, labels = checked_data(net, 'evaluate', 'data', (images, labels))
    total_loss, correct = evaluation_sums(net, images, labels, loss)
    return total_loss / len(labels), correct / len(labels)


def evaluation_sums(net, images, labels, loss=None):
    """``(sum of the losses, number of correct answers)`` over ``images``, in
    evaluation mode; the net is left in training mode."""
    net.eval()
    total_loss, correct = 0.0, 0
    for x, y in Batches(images, labels, net.input_size[0], shuffle=False).epoch(0):
        value, output = net.evaluate(x, y, loss)
        total_loss += value * len(y)
        correct += correct_answers(output, y)
    net.train()
    return total_loss, correct


def correct_answers(output, labels):
    """How many rows of ``output`` have their largest entry at the label (at the
    most likely class, for labels given as probabilities)."""
    labels = np.asarray(labels)
    if labels.ndim > 1:
        labels = labels.argmax(axis=1)
    return int(np.sum(output.argmax(axis=1) == labels))
