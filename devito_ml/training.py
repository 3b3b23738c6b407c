"""Training: the epoch loop, evaluation, history and atomic checkpoints."""

import dataclasses
import json
import math
import os
import re
import tempfile
import time
import zipfile

import numpy as np

from devito_ml.data.batches import Batches
from devito_ml.errors import CheckpointError, NonFiniteError
from devito_ml.progress import bar_class, watched

__all__ = ['History', 'fit', 'evaluate', 'evaluation_sums', 'correct_answers',
           'cosine_schedule', 'step_schedule', 'watched',
           'save_checkpoint', 'load_checkpoint', 'read_checkpoint', 'checked_data',
           'remove_stale_temporaries']


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


def checked_data(net, owner, role, data, check_finite=False):
    """``data = (images, labels)`` as arrays that ``net`` can run, or an error
    naming ``owner``, ``role`` and what is wrong.

    Images must be NCHW (or ``(N, features)``) in the net's dtype and sample
    shape, labels one per image; with ``check_finite``, a NaN or an infinity in the
    images is a :class:`NonFiniteError` naming the first sample that holds one.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{owner}: `{role}` must be a pair (images, labels), got "
                        f"{type(data).__name__}")
    images, labels = data
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{owner}: `{role}` images must be a numpy array, got "
                        f"{type(images).__name__}")
    try:
        labels = np.asarray(labels)
    except ValueError as error:     # ragged lists
        raise TypeError(f"{owner}: `{role}` labels must be an array: {error}") from None
    sample = tuple(net.input_size[1:])
    if images.ndim != len(sample) + 1 or images.shape[1:] != sample:
        raise ValueError(f"{owner}: `{role}` images must have shape (N,) + {sample}, "
                         f"got {images.shape}")
    if images.dtype != net.dtype:
        raise TypeError(f"{owner}: `{role}` images must be {net.dtype} like the net, "
                        f"got {images.dtype} (convert with .astype)")
    if len(images) == 0:
        raise ValueError(f"{owner}: `{role}` holds no samples")
    if labels.ndim == 0 or len(labels) != len(images):
        raise ValueError(f"{owner}: `{role}` has {len(images)} images but "
                         f"{labels.shape} labels")
    if labels.dtype.kind not in 'iuf':
        raise TypeError(f"{owner}: `{role}` labels must be integers or "
                        f"probabilities, got {labels.dtype}")
    if check_finite:
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            raise NonFiniteError(f"{owner}: `{role}` image {int(np.argmax(bad))} holds "
                                 f"NaN or infinite values ({int(bad.sum())} images "
                                 "in all)")
    return images, labels


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


def fit(net, optimizer, train, test=None, epochs=1, loss=None, seed=0,
        checkpoint=None, resume=False, progress=None, log=print, lr_schedule=None,
        check_finite=False, batch_size=None, comm=None, sync_batchnorm=False):
    """Train ``net`` with ``optimizer`` for ``epochs`` epochs.

    Every step (forward, backward, update) runs in the net's fused train-step
    operator; the last, smaller batch of an epoch runs on the same operator.
    The loss is checked at every step: the first NaN or infinity stops training
    with a :class:`~devito_ml.errors.NonFiniteError` naming the epoch and the step,
    and the last checkpoint, written at the end of an epoch whose parameters were
    all finite, is kept as it was.

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
    progress : bool, optional
        A progress bar per epoch, advancing every step (images, images per second,
        the last loss). By default only where someone watches: a terminal or a
        Jupyter notebook; written to a file or a pipe, ``log``'s line per epoch
        says it all. False switches bars off, True forces them.
    log : callable or None
        Receives a line when the operators are being built, one when they are,
        with the time it took, and one per epoch.
    lr_schedule : callable, optional
        ``epoch -> learning rate``, set before each epoch (no recompilation).
    check_finite : bool
        Check the images of ``train`` and ``test`` for NaN and infinities first.
    batch_size : int, optional
        The global batch: samples a step takes. Default: the net's allocated batch.
    comm : mpi4py communicator, optional
        Data-parallel training over its ranks (:mod:`devito_ml.distributed`):
        every rank calls ``fit`` with the same net, data and arguments, takes its
        shard of every global batch, and the gradients are summed by one
        allreduce a step before the update, so that the results do not depend on
        the number of ranks. Each rank's net must hold ``ceil(batch_size /
        ranks)`` samples. Only rank 0 logs, draws bars and writes the checkpoint
        (every rank reads it to resume: a file system they share). An exception
        on one rank ends every rank (``MPI_Abort``) instead of leaving them
        waiting. One rank runs exactly as without ``comm``.
    sync_batchnorm : bool
        With ``comm``: BatchNorm's statistics of the global batch (three small
        allreduces a BatchNorm a step) instead of each rank's shard.

    Returns
    -------
    History
    """
    train = checked_data(net, 'fit', 'train', train, check_finite)
    if test is not None:
        test = checked_data(net, 'fit', 'test', test, check_finite)
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: `epochs` must be an int >= 0, got {epochs!r}")
    batch_size = _checked_batch_size(net, batch_size, comm)
    parallel = None
    if comm is not None and comm.Get_size() > 1:
        from devito_ml.distributed import DataParallel
        parallel = DataParallel(net, comm, batch_size, sync_batchnorm)
        if not parallel.is_root:
            log, progress = None, False
    from devito_ml.distributed import abort_on_error   # imports no MPI
    with abort_on_error(comm, 'fit'):
        return _fit(net, optimizer, train, test, epochs, loss, seed, checkpoint, resume,
                    progress, log, lr_schedule, batch_size, parallel)


def _checked_batch_size(net, batch_size, comm):
    allocated = net.input_size[0]
    if batch_size is None:
        return allocated
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"fit: `batch_size` must be a positive int, got {batch_size!r}")
    if (comm is None or comm.Get_size() == 1) and batch_size > allocated:
        raise ValueError(f"fit: `batch_size` {batch_size} is larger than the batch of "
                         f"{allocated} that Net `{net.name}` holds")
    return int(batch_size)


def _fit(net, optimizer, train, test, epochs, loss, seed, checkpoint, resume, progress,
         log, lr_schedule, batch_size, parallel):
    history, start = History(), 0
    if resume and checkpoint and os.path.exists(checkpoint):
        start, history = load_checkpoint(checkpoint, net, optimizer)
    batches = Batches(*train, batch_size=batch_size, seed=seed)
    root = parallel is None or parallel.is_root
    if progress is None:
        progress = watched()
    if start < epochs:
        began = time.perf_counter()
        if log:
            log("building the operators (generating and compiling C; cached for the "
                "next run)...")
        if parallel is not None:     # rank 0 compiles, the others load its cache
            parallel.build(optimizer, loss, evaluation=bool(test))
        else:
            net.train_operator(optimizer, loss)      # built once, before the clock runs
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
        bar = bar_class()(total=len(train[1]), desc=f"epoch {epoch + 1}/{epochs}",
                          unit='img', disable=not progress, leave=False,
                          dynamic_ncols=True)
        for step, (x, y) in enumerate(batches.epoch(epoch)):
            if parallel is None:
                value, output = net.train_step(x, y, optimizer, loss)
                right = correct_answers(output, y)
            else:
                value, right = parallel.train_step(x, y, optimizer, loss)
            if not math.isfinite(value):
                bar.close()
                kept = (f"the checkpoint `{checkpoint}` of epoch {start} is kept as it "
                        "was" if checkpoint and os.path.exists(checkpoint)
                        else "no checkpoint was written")
                raise NonFiniteError(
                    f"fit: the training loss is {value} at epoch {epoch + 1}, step "
                    f"{step + 1} of {len(batches)} (learning rate {optimizer.lr:g}); "
                    f"training stopped and {kept}. Lower the learning rate, or look "
                    "for NaN in the data (fit(check_finite=True))")
            total_loss += value * len(y)
            correct += right
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            bar.update(len(y))
        bar.close()
        if parallel is not None:
            parallel.average_buffers()
            test_loss, test_accuracy = parallel.evaluate(*test, loss) if test else \
                (None, None)
        else:
            test_loss, test_accuracy = evaluate(net, *test, loss) if test else \
                (None, None)
        history.epochs.append({
            'epoch': epoch + 1, 'train_loss': total_loss / len(train[1]),
            'train_accuracy': correct / len(train[1]), 'test_loss': test_loss,
            'test_accuracy': test_accuracy, 'seconds': time.perf_counter() - began})
        if checkpoint:
            if root:     # the parameters are the same on every rank
                try:
                    save_checkpoint(checkpoint, net, optimizer, epoch + 1, history)
                except NonFiniteError as error:
                    raise NonFiniteError(f"fit: after epoch {epoch + 1}, with a finite "
                                         f"loss at every step: {error}") from None
            start = epoch + 1
        if log:
            log(_row(history.epochs[-1]))
    return history


def save_checkpoint(path, net, optimizer, epoch, history):
    """Parameters, optimizer state, epoch and history in one ``.npz``, atomically.

    The file is written under a temporary name in the same folder, flushed to disk,
    then renamed over ``path``: a crash leaves either the old checkpoint or the new
    one, never a broken file. Temporary files left by killed runs (their process is
    gone) are removed. A parameter, buffer or optimizer state holding NaN or an
    infinity is a :class:`NonFiniteError` naming it, and nothing is written.
    """
    arrays = {f"param/{name}": value for name, value in net.state_dict().items()}
    arrays.update({f"optim/{name}": value
                   for name, value in optimizer.state_dict().items()})
    bad = sorted(name for name, value in arrays.items()
                 if value.dtype.kind == 'f' and not np.all(np.isfinite(value)))
    if bad:
        raise NonFiniteError(f"save_checkpoint: {', '.join(bad[:5])}"
                             f"{' and others' if len(bad) > 5 else ''} hold NaN or "
                             f"infinite values; `{path}` was not written")
    arrays['format'] = np.array(CHECKPOINT_FORMAT)
    arrays['epoch'] = np.array(epoch)
    arrays['history'] = np.array(history.to_json())
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".checkpoint-{os.getpid()}-",
                                         suffix='.npz')
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


CHECKPOINT_FORMAT = 'devito_ml checkpoint 1'
_TEMPORARY = re.compile(r'\.checkpoint-(\d+)-.*\.npz$')


def remove_stale_temporaries(folder):
    """Remove the temporary checkpoint files in ``folder`` whose writer is dead."""
    for name in os.listdir(folder):
        match = _TEMPORARY.match(name)
        if match and not _alive(int(match.group(1))):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_checkpoint(path):
    """The arrays of checkpoint ``path`` by name, checked to be one of ours and
    finite, or a :class:`CheckpointError` saying what is wrong with the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as error:
        raise CheckpointError(f"checkpoint `{path}` cannot be read: it is truncated, "
                              f"corrupted or not a checkpoint ({type(error).__name__}: "
                              f"{error})") from None
    if not isinstance(arrays, dict) or 'epoch' not in arrays or \
            'history' not in arrays:
        raise CheckpointError(f"checkpoint `{path}` is not a devito_ml checkpoint (no "
                              "`epoch` and `history` in it)")
    bad = sorted(name for name, value in arrays.items()
                 if value.dtype.kind == 'f' and not np.all(np.isfinite(value)))
    if bad:
        raise CheckpointError(f"checkpoint `{path}`: {', '.join(bad[:5])} hold NaN or "
                              "infinite values")
    return arrays


def load_checkpoint(path, net, optimizer=None):
    """Load a checkpoint into ``net`` (and ``optimizer``); return (epoch, history).

    All or nothing: a file that cannot be read, or whose parameters, buffers or
    optimizer state do not fit ``net`` and ``optimizer`` (another model, another
    optimizer), is a :class:`CheckpointError` naming the difference, and ``net``
    and ``optimizer`` are left as they were.
    """
    arrays = read_checkpoint(path)
    try:
        epoch = int(arrays['epoch'])
        history = History.from_json(str(arrays['history']))
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint `{path}`: unreadable epoch or history "
                              f"({error})") from None
    before = (net.state_dict(), optimizer.state_dict() if optimizer else None)
    try:
        if optimizer is not None:     # first: another optimizer is named as such
            optimizer.load_state_dict({key[len('optim/'):]: value
                                       for key, value in arrays.items()
                                       if key.startswith('optim/')})
        net.load_state_dict({key[len('param/'):]: value
                             for key, value in arrays.items()
                             if key.startswith('param/')})
    except (KeyError, ValueError, TypeError) as error:
        net.load_state_dict(before[0])
        if optimizer is not None:
            optimizer.load_state_dict(before[1])
        message = error.args[0] if error.args else error
        raise CheckpointError(f"checkpoint `{path}` does not fit: {message}") from None
    return epoch, history
