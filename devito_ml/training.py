"""Training: the epoch loop, evaluation, history and atomic checkpoints."""

import dataclasses
import json
import os
import tempfile
import time

import numpy as np
from tqdm.auto import tqdm

from devito_ml.data.batches import Batches

__all__ = ['History', 'fit', 'evaluate', 'cosine_schedule', 'save_checkpoint',
           'load_checkpoint']


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
        lines += [_row(entry) for entry in self.epochs]
        return '\n'.join(lines)


def _row(entry):
    def number(value, width, digits):
        if value is None:
            return ' ' * (width - 1) + '-'
        return f"{value:{width}.{digits}f}"
    return (f"{entry['epoch']:5d} {number(entry['train_loss'], 11, 4)} "
            f"{number(entry['train_accuracy'], 10, 4)} "
            f"{number(entry['test_loss'], 10, 4)} {number(entry['test_accuracy'], 9, 4)} "
            f"{entry['seconds']:8.2f}")


def evaluate(net, images, labels, loss=None):
    """Mean loss and accuracy over a data set, in evaluation mode, no gradients."""
    net.eval()
    total_loss, correct = 0.0, 0
    for x, y in Batches(images, labels, net.input_size[0], shuffle=False).epoch(0):
        value, output = net.evaluate(x, y, loss)
        total_loss += value * len(y)
        correct += int(np.sum(output.argmax(axis=1) == y))
    net.train()
    return total_loss / len(labels), correct / len(labels)


def cosine_schedule(lr, epochs, final=0.0):
    """``epoch -> lr`` decaying from ``lr`` to ``final`` along half a cosine."""
    def schedule(epoch):
        return final + (lr - final) * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
    return schedule


def fit(net, optimizer, train, test=None, epochs=1, loss=None, seed=0,
        checkpoint=None, resume=False, progress=True, log=print, lr_schedule=None):
    """Train ``net`` with ``optimizer`` for ``epochs`` epochs.

    Every step (forward, backward, update) runs in the net's fused train-step
    operator; the last, smaller batch of an epoch runs on the same operator.

    Parameters
    ----------
    net : Net
        Its allocated batch size is the batch size.
    optimizer : Optimizer
    train, test : (images, labels)
        NCHW images and integer labels; ``test`` is evaluated after each epoch.
    epochs : int
        Total number of epochs (a resumed run continues up to this number).
    loss : Loss or str, optional
        Default: the net's loss.
    seed : int
        Seeds the batch order of every epoch.
    checkpoint : str, optional
        Path of a checkpoint written atomically after every epoch.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    progress : bool
        A progress bar per epoch.
    log : callable or None
        Receives one line per epoch.
    lr_schedule : callable, optional
        ``epoch -> learning rate``, set before each epoch (no recompilation).

    Returns
    -------
    History
    """
    history, start = History(), 0
    if resume and checkpoint and os.path.exists(checkpoint):
        start, history = load_checkpoint(checkpoint, net, optimizer)
    batches = Batches(*train, batch_size=net.input_size[0], seed=seed)
    if start < epochs:
        began = time.perf_counter()
        net.train_operator(optimizer, loss)          # built once, before the clock runs
        if test:
            net.evaluation_operator(loss)
        if log:
            log(f"operators built in {time.perf_counter() - began:.1f} s")
            log(History().table())
    for epoch in range(start, epochs):
        began = time.perf_counter()
        if lr_schedule is not None:
            optimizer.lr = float(lr_schedule(epoch))
        total_loss, correct = 0.0, 0
        bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}",
                   disable=not progress, leave=False)
        for x, y in bar:
            value, output = net.train_step(x, y, optimizer, loss)
            total_loss += value * len(y)
            correct += int(np.sum(output.argmax(axis=1) == y))
            bar.set_postfix(loss=f"{value:.4f}")
        test_loss, test_accuracy = evaluate(net, *test, loss) if test else (None, None)
        history.epochs.append({
            'epoch': epoch + 1, 'train_loss': total_loss / len(train[1]),
            'train_accuracy': correct / len(train[1]), 'test_loss': test_loss,
            'test_accuracy': test_accuracy, 'seconds': time.perf_counter() - began})
        if checkpoint:
            save_checkpoint(checkpoint, net, optimizer, epoch + 1, history)
        if log:
            log(_row(history.epochs[-1]))
    return history


def save_checkpoint(path, net, optimizer, epoch, history):
    """Parameters, optimizer state, epoch and history in one ``.npz``, atomically.

    The file is written under a temporary name in the same folder, flushed to disk,
    then renamed over ``path``: a crash leaves either the old checkpoint or the new
    one, never a broken file.
    """
    arrays = {f"param/{name}": value for name, value in net.state_dict().items()}
    arrays.update({f"optim/{name}": value
                   for name, value in optimizer.state_dict().items()})
    arrays['epoch'] = np.array(epoch)
    arrays['history'] = np.array(history.to_json())
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix='.checkpoint-', suffix='.npz')
    try:
        with os.fdopen(handle, 'wb') as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_checkpoint(path, net, optimizer=None):
    """Load a checkpoint into ``net`` (and ``optimizer``); return (epoch, history)."""
    with np.load(path) as archive:
        net.load_state_dict({key[len('param/'):]: archive[key] for key in archive.files
                             if key.startswith('param/')})
        if optimizer is not None:
            optimizer.load_state_dict({key[len('optim/'):]: archive[key]
                                       for key in archive.files
                                       if key.startswith('optim/')})
        return int(archive['epoch']), History.from_json(str(archive['history']))
