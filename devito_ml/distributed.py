"""Data-parallel training over MPI: each rank a shard of every global batch, one
allreduce of the gradients a step.

Every rank holds the whole net and runs the same generated operators on its shard
of each global batch (:func:`shard_bounds`). Its gradients are of its shard's mean
loss; scaled by ``shard / global batch`` they sum, over the ranks, to the gradients
of the global batch's mean loss, which a single rank would have computed. They are
packed into one buffer with the loss and the count of correct answers, summed in
place by one ``MPI_Allreduce``, unpacked, and every rank applies the same update to
the same parameters: they stay equal without ever being sent.

BatchNorm normalises with the statistics of its rank's shard by default (as PyTorch's
DistributedDataParallel does without SyncBatchNorm); its running statistics are
averaged over the ranks at the end of every epoch, before evaluation and
checkpoints. With ``sync_batchnorm``, the statistics and the two sums of its
adjoint are of the global batch: the generated operators stop where a BatchNorm's
sums are complete (:class:`~devito_ml.compiled.SyncPoint`), the sums are added over
the ranks (three small allreduces a BatchNorm a step), and the next operator goes
on; the results are then those of one rank. Dropout draws the mask rows of its
shard from the global batch's mask, so that results do not depend on the number of
ranks either.

``mpi4py`` is optional (``pip install -e '.[mpi]'``): it is imported only when MPI
is asked for, and its absence is then an error saying how to install it.

**Across nodes.** Nothing here assumes one machine: ``mpiexec -n 8 --hostfile hosts
--map-by ppr:1:node --bind-to none -x OMP_NUM_THREADS=32 devito-ml train ...`` runs
one rank a node, each with its node's cores for OpenMP; every rank reads the data
set and takes its shard by rank (the shuffled order depends only on the seed and
the epoch, so ranks agree without talking), and rank 0 writes to a file system the
ranks share (which ``--resume`` reads on every rank). What would change at 64 ranks:
one allreduce of the whole gradient after the backward pass leaves the network idle
during it and the cores idle during the allreduce; PyTorch's DDP instead sums
gradients in buckets of ~25 MB as the backward pass produces them, overlapping the
communication with the rest of the backward pass. Here that means nonblocking
``Iallreduce`` of each operator part's gradients (a deep net is already compiled in
parts, run last layer first) as soon as its part has run, and waiting for all of
them before the update. The global batch also has to grow with the ranks (a shard
of a few samples leaves the cores of a node idle), with the learning rate scaled
and warmed up accordingly; and synchronized BatchNorm's three small allreduces a
layer become latency-bound (merging each layer's into one, as PyTorch's
SyncBatchNorm does with the sum and the sum of squares, halves them).
"""

import atexit
import contextlib
import os
import sys
import time

import numpy as np

from devito_ml.layers.normalization import BatchNorm
from devito_ml.metrics import correct_answers, evaluation_sums
from devito_ml.trainer import LocalTrainer, Trainer, checked_batch_size

__all__ = ['mpi', 'launched_ranks', 'shard_bounds', 'shard_capacity', 'DataParallel',
           'trainer_for', 'RankSums', 'abort_on_error']

# the world size, as Open MPI's launcher and MPICH's (Hydra, Intel MPI, Slurm PMI) set it
_SIZE_VARIABLES = ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE')


def mpi(purpose="MPI was asked for"):
    """The ``mpi4py.MPI`` module, MPI initialized, or an ImportError that says how
    to install it.

    Devito, imported first, tells mpi4py not to initialize MPI on import (Devito
    initializes it only for its own domain decomposition, unused here): it is then
    initialized here, and finalized at exit.
    """
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(f"devito_ml: {purpose}, but mpi4py is not installed; install "
                          "it with `pip install -e '.[mpi]'` (mpi4py and Open MPI "
                          "from the package registry)") from None
    if not MPI.Is_initialized():
        MPI.Init()
        atexit.register(lambda: MPI.Is_finalized() or MPI.Finalize())
    return MPI


def launched_ranks(environ=None):
    """How many ranks ``mpiexec`` started this process among (1 when it did not),
    read from the launcher's environment without importing MPI."""
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        if name in environ:
            try:
                return max(1, int(environ[name]))
            except ValueError:
                continue
    return 1


def shard_bounds(total, ranks, rank):
    """``(start, stop)`` of rank ``rank``'s samples among ``total``: contiguous
    shards whose sizes differ by at most one, the larger first.

    Examples
    --------
    >>> [shard_bounds(7, 3, r) for r in range(3)]
    [(0, 3), (3, 5), (5, 7)]
    """
    base, extra = divmod(int(total), int(ranks))
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard_capacity(batch_size, ranks):
    """The most samples a rank receives of a global batch of ``batch_size``."""
    return -(-int(batch_size) // int(ranks))


@contextlib.contextmanager
def abort_on_error(comm, what='training'):
    """Turn an exception on one rank into the end of the whole job.

    The other ranks would otherwise wait forever in their next collective call.
    The failing rank writes which rank failed and why to stderr, then calls
    ``MPI_Abort``, which ends every rank with an error. With one rank, the
    exception propagates as usual.
    """
    try:
        yield
    except BaseException as error:
        if comm is None or comm.Get_size() == 1:
            raise       # nobody waits for this rank
        sys.stderr.write(f"devito_ml: rank {comm.Get_rank()} of {comm.Get_size()} "
                         f"failed during {what}: {type(error).__name__}: {error}\n"
                         "devito_ml: aborting every rank of the job (MPI_Abort)\n")
        sys.stderr.flush()
        comm.Abort(1)
        raise


def trainer_for(net, comm, batch_size=None, sync_batchnorm=False):
    """The :class:`~devito_ml.trainer.Trainer` of ``net`` in a job on ``comm``:
    :class:`DataParallel` over its ranks, or, with one rank (or no ``comm``), this
    process's :class:`~devito_ml.trainer.LocalTrainer`, which uses no MPI at all.

    Parameters are those of :class:`DataParallel`.
    """
    if comm is None or comm.Get_size() == 1:
        return LocalTrainer(net, batch_size)
    return DataParallel(net, comm, batch_size, sync_batchnorm)


class DataParallel(Trainer):
    """One rank's part of data-parallel training of ``net`` on communicator ``comm``.

    Parameters
    ----------
    net : Net
        The same net on every rank, allocated for at least
        ``shard_capacity(batch_size, ranks)`` samples.
    comm : mpi4py communicator
    batch_size : int, optional
        The global batch: every step takes this many samples, split among ranks.
        Default: the net's batch times the ranks.
    sync_batchnorm : bool
        Statistics of BatchNorm over the global batch instead of each shard.

    Attributes
    ----------
    allreduce_seconds : float
        Time spent in the gradient allreduce so far (waiting for slower ranks
        included).
    steps : int
        Steps taken.
    """

    def __init__(self, net, comm, batch_size, sync_batchnorm=False):
        self.net, self.comm = net, comm
        self.rank, self.ranks = comm.Get_rank(), comm.Get_size()
        self.batch_size = checked_batch_size(type(self).__name__, net, batch_size, None) \
            if batch_size is not None else net.input_size[0] * self.ranks
        capacity = shard_capacity(self.batch_size, self.ranks)
        if net.input_size[0] < capacity:
            raise ValueError(f"DataParallel: Net `{net.name}` holds batches of "
                             f"{net.input_size[0]}, but a global batch of "
                             f"{self.batch_size} over {self.ranks} ranks gives a rank "
                             f"up to {capacity} samples")
        self._gradients = list(net.gradients().values())
        sizes = [g.size for g in self._gradients]
        self._offsets = np.cumsum([0] + sizes)
        # the gradients, then the shard's loss times its size and its correct answers
        self.buffer = np.zeros(self._offsets[-1] + 2, dtype=net.dtype)
        self.allreduce_seconds, self.steps = 0.0, 0
        self._MPI = mpi()
        self.statistics = None
        if sync_batchnorm:
            self.statistics = RankSums(comm, self._MPI)
            normalizations = [layer for layer in net.layers
                              if isinstance(layer, BatchNorm)]
            for layer in normalizations:
                layer.sync = self.statistics
            if normalizations:
                net._forget_operators()    # built before, without the sync points

    def build(self, optimizer, loss=None, evaluation=False):
        """Build the operators of a step (and of evaluation): rank 0 first, then the
        others, from the operator cache it filled; no two ranks compile the same C
        at the same time."""
        def operators():
            self.net.forward_operator_for(True)
            self.net.backward_operator_for(loss, True)
            optimizer.update_operator
            if evaluation:
                self.net.evaluation_operator(loss)
        if self.is_root:
            operators()
        self.comm.Barrier()
        if not self.is_root:
            operators()
        self.comm.Barrier()     # every rank ready before the first step's clock

    # -- one step -----------------------------------------------------------------------

    def train_step(self, x, y, optimizer, loss=None):
        """Forward and backward on this rank's shard of the global batch
        ``(x, y)``, the allreduce, then ``optimizer``'s update.

        Returns
        -------
        (float, int)
            The global batch's mean loss and its number of correct answers
            (argmax of the output equal to the label), both from before the update.
        """
        total = len(y)
        start, stop = shard_bounds(total, self.ranks, self.rank)
        net, buffer = self.net, self.buffer
        net.train()
        self._window(start, total)
        if self.statistics is not None:
            self.statistics.shard, self.statistics.total = stop - start, total
        if stop > start:
            output = net.forward(x[start:stop])
            value = net.backward(y[start:stop], loss)
            scale = (stop - start) / total
            for gradient, at, end in zip(self._gradients, self._offsets,
                                         self._offsets[1:]):
                np.multiply(gradient.reshape(-1), scale, out=buffer[at:end])
            buffer[-2] = value * (stop - start)
            buffer[-1] = correct_answers(output, y[start:stop])
        else:
            buffer[:] = 0
            for layer in net._stepped:
                layer.skip_step()
            # synchronized BatchNorm: the other ranks wait for this one's sums
            net.forward_operator_for(True).idle()
            net.backward_operator_for(loss, True).idle()
        began = time.perf_counter()
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - began
        for gradient, at, end in zip(self._gradients, self._offsets, self._offsets[1:]):
            np.copyto(gradient, buffer[at:end].reshape(gradient.shape))
        optimizer.step()
        self.steps += 1
        return float(buffer[-2]) / total, int(round(float(buffer[-1])))

    @contextlib.contextmanager
    def guard(self, what):
        """An exception on this rank ends every rank (:func:`abort_on_error`)."""
        with abort_on_error(self.comm, what):
            yield

    def _window(self, start, total):
        for layer in self.net._stepped:
            layer.sample_window = (start, total)

    # -- between epochs -----------------------------------------------------------------

    def end_epoch(self):
        """The running statistics averaged over the ranks (:meth:`average_buffers`)."""
        self.average_buffers()

    def average_buffers(self):
        """Average the running statistics (float buffers) over the ranks, in place."""
        arrays = [data for data in self.net.buffers().values()
                  if isinstance(data, np.ndarray) and data.dtype.kind == 'f']
        if not arrays:
            return
        packed = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, packed, op=self._MPI.SUM)
        packed /= self.ranks
        at = 0
        for array in arrays:
            np.copyto(array, packed[at:at + array.size].reshape(array.shape))
            at += array.size

    def evaluate(self, images, labels, loss=None):
        """Mean loss and accuracy over a data set: each rank evaluates its shard,
        one allreduce sums them."""
        start, stop = shard_bounds(len(labels), self.ranks, self.rank)
        totals = np.array(evaluation_sums(self.net, images[start:stop],
                                          labels[start:stop], loss), dtype=np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, totals, op=self._MPI.SUM)
        return totals[0] / len(labels), totals[1] / len(labels)

    @property
    def is_root(self):
        """Whether this is rank 0, the one that writes files and logs."""
        return self.rank == 0


class RankSums:
    """Sums over the ranks for synchronized BatchNorm, and the step's batch sizes.

    Attributes
    ----------
    shard : int
        Samples of this rank in the current step.
    total : int
        Samples of the global batch.
    """

    def __init__(self, comm, MPI):
        self.comm, self._MPI = comm, MPI
        self.shard = self.total = 0

    def allreduce(self, values):
        """The sum of ``values`` over the ranks, in double precision."""
        summed = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, summed, op=self._MPI.SUM)
        return summed
