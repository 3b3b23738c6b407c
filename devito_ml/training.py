"""Training: the epoch loop. What it is made of lives in modules of its own, and is
re-exported here: metrics (:mod:`devito_ml.metrics`), checkpoints
(:mod:`devito_ml.checkpoints`), learning-rate schedules (:mod:`devito_ml.schedules`),
trainers (:mod:`devito_ml.trainer`; data-parallel MPI in
:mod:`devito_ml.distributed`, which this module never imports) and progress bars
(:mod:`devito_ml.progress`)."""

import math
import os
import time

import numpy as np

from devito_ml.checkpoints import (load_checkpoint, read_checkpoint,
                                   remove_stale_temporaries, save_checkpoint)
from devito_ml.data.batches import Batches
from devito_ml.data.checks import checked_data
from devito_ml.errors import NonFiniteError
from devito_ml.metrics import History, correct_answers, evaluate, evaluation_sums
from devito_ml.progress import bar_class, watched
from devito_ml.schedules import cosine_schedule, step_schedule
from devito_ml.trainer import LocalTrainer, Trainer

__all__ = ['History', 'fit', 'evaluate', 'evaluation_sums', 'correct_answers',
           'cosine_schedule', 'step_schedule', 'watched',
           'save_checkpoint', 'load_checkpoint', 'read_checkpoint', 'checked_data',
           'remove_stale_temporaries']


def fit(net, optimizer, train, test=None, epochs=1, loss=None, seed=0,
        checkpoint=None, resume=False, progress=None, log=print, lr_schedule=None,
        check_finite=False, batch_size=None, trainer=None):
    """Train ``net`` with ``optimizer`` for ``epochs`` epochs.

    Every step (forward, backward, update) runs in the net's generated operators,
    as ``trainer`` runs them; the last, smaller batch of an epoch runs on the same
    operators. The loss is checked at every step: the first NaN or infinity stops
    training with a :class:`~devito_ml.errors.NonFiniteError` naming the epoch and
    the step, and the last checkpoint, written at the end of an epoch whose
    parameters were all finite, is kept as it was.

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
        Samples a step takes, at most the net's allocated batch (the default).
        With a ``trainer``, leave it out: the trainer's is the batch.
    trainer : Trainer, optional
        How the steps run: :class:`~devito_ml.trainer.LocalTrainer` (the default:
        this process, the fused train-step operator), or
        :class:`~devito_ml.distributed.DataParallel` over the ranks of an MPI job
        (made by :func:`~devito_ml.distributed.trainer_for`: every rank calls
        ``fit`` with the same net, data and arguments, takes its shard of every
        global batch, and the results do not depend on the number of ranks). Only
        the root logs, draws bars and writes the checkpoint (every rank reads it to
        resume: a file system they share); the trainer decides what a failure
        ends (on one rank of several, every rank).

    Returns
    -------
    History
    """
    train = checked_data(net, 'fit', 'train', train, check_finite)
    if test is not None:
        test = checked_data(net, 'fit', 'test', test, check_finite)
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: `epochs` must be an int >= 0, got {epochs!r}")
    trainer = _trainer(net, trainer, batch_size)
    if not trainer.is_root:
        log, progress = None, False
    with trainer.guard('fit'):
        return _fit(trainer, optimizer, train, test, epochs, loss, seed, checkpoint,
                    resume, progress, log, lr_schedule)


def _trainer(net, trainer, batch_size):
    """``trainer``, checked to train ``net``, or this process's."""
    if trainer is None:
        return LocalTrainer(net, batch_size)
    if not isinstance(trainer, Trainer):
        raise TypeError(f"fit: `trainer` must be a Trainer (LocalTrainer, "
                        f"DataParallel), got {type(trainer).__name__}")
    if trainer.net is not net:
        raise ValueError(f"fit: the trainer trains Net `{trainer.net.name}`, not "
                         f"Net `{net.name}`")
    if batch_size is not None and batch_size != trainer.batch_size:
        raise ValueError(f"fit: `batch_size` is {batch_size!r}, but the trainer's "
                         f"batch is {trainer.batch_size}: leave `batch_size` out")
    return trainer


def _fit(trainer, optimizer, train, test, epochs, loss, seed, checkpoint, resume,
         progress, log, lr_schedule):
    net = trainer.net
    history, start = History(), 0
    if resume and checkpoint and os.path.exists(checkpoint):
        start, history = load_checkpoint(checkpoint, net, optimizer)
    batches = Batches(*train, batch_size=trainer.batch_size, seed=seed)
    if progress is None:
        progress = watched()
    if start < epochs:
        began = time.perf_counter()
        if log:
            log("building the operators (generating and compiling C; cached for the "
                "next run)...")
        trainer.build(optimizer, loss, evaluation=bool(test))
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
            value, right = trainer.train_step(x, y, optimizer, loss)
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
        trainer.end_epoch()
        test_loss, test_accuracy = trainer.evaluate(*test, loss) if test else \
            (None, None)
        history.epochs.append({
            'epoch': epoch + 1, 'train_loss': total_loss / len(train[1]),
            'train_accuracy': correct / len(train[1]), 'test_loss': test_loss,
            'test_accuracy': test_accuracy, 'seconds': time.perf_counter() - began})
        if checkpoint:
            if trainer.is_root:     # the parameters are the same on every rank
                try:
                    save_checkpoint(checkpoint, net, optimizer, epoch + 1, history)
                except NonFiniteError as error:
                    raise NonFiniteError(f"fit: after epoch {epoch + 1}, with a finite "
                                         f"loss at every step: {error}") from None
            start = epoch + 1
        if log:
            log(History.row(history.epochs[-1]))
    return history
