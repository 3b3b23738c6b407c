"""Data-parallel training over MPI: each rank a shard of every global batch, the
gradients summed over the ranks in buckets while the backward pass runs.

Every rank holds the whole net and runs the same generated operators on its shard
of each global batch (:func:`shard_bounds`). Its gradients are of its shard's mean
loss; scaled by ``shard / global batch`` they sum, over the ranks, to the gradients
of the global batch's mean loss, which a single rank would have computed. They are
packed into buckets in the order the backward pass finishes them, each summed in
place by a nonblocking ``MPI_Iallreduce`` started as soon as the part of the
backward operator that finishes it has run (:mod:`devito_ml.gradient_buckets`);
every rank waits for them, then applies the same update to the same parameters:
they stay equal without ever being sent. The loss and the count of correct answers
are summed after them.

BatchNorm normalises with the statistics of its rank's shard by default (as PyTorch's
DistributedDataParallel does without SyncBatchNorm); its running statistics are
averaged over the ranks at the end of every epoch, before evaluation and
checkpoints. With ``sync_batchnorm``, the statistics and the two sums of its
adjoint are of the global batch: the generated operators stop where a BatchNorm's
sums are complete (:class:`~devito_ml.compiled.SyncPoint`), the sums are added over
the ranks (three small allreduces a BatchNorm a step), and the next operator goes
on; the results are then those of one rank. Dropout draws the mask rows of its
shard from the global batch's mask (:meth:`~devito_ml.Net.shard`), so that results
do not depend on the number of ranks either.

``mpi4py`` is optional (``pip install -e '.[mpi]'``): it is imported only when MPI
is asked for, and its absence is then an error saying how to install it.

**Across nodes.** Nothing here assumes one machine: ``mpiexec -n 8 --hostfile hosts
--map-by ppr:1:node --bind-to none -x OMP_NUM_THREADS=32 devito-ml train ...`` runs
one rank a node, each with its node's cores for OpenMP; every rank reads the data
set and takes its shard by rank (the shuffled order depends only on the seed and
the epoch, so ranks agree without talking), and rank 0 writes to a file system the
ranks share (which ``--resume`` reads on every rank). What would change at 64 ranks:
the buckets' sums overlap the backward pass only as far as the MPI library
progresses them while the generated code runs (Open MPI's do so when polled, which
happens between the parts; an MPI with a progress thread, or a spare core, lets them
run beside it). A small net is one part: its buckets start when its backward pass
ends. The global batch also has to grow with the ranks (a shard of a few samples
leaves the cores of a node idle), with the learning rate scaled and warmed up
accordingly; and synchronized BatchNorm's three small allreduces a layer become
latency-bound (merging each layer's into one, as PyTorch's SyncBatchNorm does with
the sum and the sum of squares, halves them).
"""

import atexit
import contextlib
import os
import sys

import numpy as np

from devito_ml.gradient_buckets import BUCKET_BYTES, GradientBuckets
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


def trainer_for(net, comm, batch_size=None, sync_batchnorm=False,
                bucket_bytes=BUCKET_BYTES):
    """The :class:`~devito_ml.trainer.Trainer` of ``net`` in a job on ``comm``:
    :class:`DataParallel` over its ranks, or, with one rank (or no ``comm``), this
    process's :class:`~devito_ml.trainer.LocalTrainer`, which uses no MPI at all.

    Parameters are those of :class:`DataParallel`.
    """
    if comm is None or comm.Get_size() == 1:
        return LocalTrainer(net, batch_size)
    return DataParallel(net, comm, batch_size, sync_batchnorm, bucket_bytes)


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
    bucket_bytes : int
        The largest bucket of gradients summed at once
        (:mod:`devito_ml.gradient_buckets`).

    Attributes
    ----------
    steps : int
        Steps taken.
    """

    def __init__(self, net, comm, batch_size=None, sync_batchnorm=False,
                 bucket_bytes=BUCKET_BYTES):
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
        self.bucket_bytes = int(bucket_bytes)
        # the shard's loss times its size, and its correct answers
        self._metrics = np.zeros(2, dtype=np.float64)
        self.steps = 0
        self._MPI = mpi()
        self.statistics = None
        if sync_batchnorm:
            self.statistics = RankSums(comm, self._MPI)
            net.synchronize_statistics(self.statistics)
        self._buckets = {}

    @property
    def wait_seconds(self):
        """Time spent waiting for the gradients' sums so far (for slower ranks too)."""
        return sum(buckets.wait_seconds for buckets in self._buckets.values())

    def buckets(self, loss=None):
        """The :class:`~devito_ml.gradient_buckets.GradientBuckets` of the steps of
        ``loss`` (made with the backward operator, once)."""
        chain = self.net.backward_operator_for(loss, True)
        if chain.name not in self._buckets:
            self._buckets[chain.name] = GradientBuckets(self.net, chain, self.comm,
                                                        self._MPI, self.bucket_bytes)
        return self._buckets[chain.name]

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
        self.buckets(loss)
        self.comm.Barrier()     # every rank ready before the first step's clock

    # -- one step -----------------------------------------------------------------------

    def train_step(self, x, y, optimizer, loss=None):
        """Forward and backward on this rank's shard of the global batch
        ``(x, y)``, the gradients summed over the ranks bucket by bucket while the
        backward pass runs, then ``optimizer``'s update.

        Returns
        -------
        (float, int)
            The global batch's mean loss and its number of correct answers
            (argmax of the output equal to the label), both from before the update.
        """
        total = len(y)
        start, stop = shard_bounds(total, self.ranks, self.rank)
        net, metrics = self.net, self._metrics
        buckets = self.buckets(loss)
        buckets.begin(scale=(stop - start) / total)
        net.train()
        if self.statistics is not None:
            self.statistics.shard, self.statistics.total = stop - start, total
        with net.shard(start, total):
            if stop > start:
                output = net.forward(x[start:stop])
                value = net.backward(y[start:stop], loss, buckets.after_part)
                metrics[:] = value * (stop - start), \
                    correct_answers(output, y[start:stop])
            else:
                metrics[:] = 0
                # synchronized BatchNorm: the other ranks wait for this one's sums
                net.idle_step(loss)
                buckets.start_all(zero=True)
        buckets.finish()
        self.comm.Allreduce(self._MPI.IN_PLACE, metrics, op=self._MPI.SUM)
        optimizer.step()
        self.steps += 1
        return float(metrics[0]) / total, int(round(float(metrics[1])))

    @contextlib.contextmanager
    def guard(self, what):
        """An exception on this rank ends every rank (:func:`abort_on_error`)."""
        with abort_on_error(self.comm, what):
            yield

    # -- between epochs -----------------------------------------------------------------

    def end_epoch(self):
        """The running statistics made the same on every rank: averaged over the
        ranks (:meth:`average_buffers`), or, synchronized, rank 0's."""
        self.average_buffers(root_only=self.statistics is not None)

    def average_buffers(self, root_only=False):
        """Average the running statistics (float buffers) over the ranks, in place.

        With ``root_only``, rank 0's instead: synchronized statistics are the same
        on every rank that ran a step, and rank 0 runs them all (it holds the
        largest shard), while a rank whose shard was empty did not update its own.
        """
        arrays = [data for data in self.net.buffers().values()
                  if isinstance(data, np.ndarray) and data.dtype.kind == 'f']
        if not arrays:
            return
        packed = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float64)
        if root_only:
            self.comm.Bcast(packed, root=0)
        else:
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
    """Sums over the ranks of the batch statistics of a net
    (:meth:`~devito_ml.Net.synchronize_statistics`), and the step's batch sizes.

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

    def sum(self, values, gradients=False):
        """The sum of ``values`` over the ranks, in double precision.

        Sums of ``gradients`` are of each rank's shard's mean loss: scaled by
        ``shard / total`` they add up to the global batch's, which comes back in
        this rank's terms (times ``total / shard``), as its own gradients are.
        """
        summed = np.array(values, dtype=np.float64)
        if gradients:
            summed *= self.shard / self.total
        self.comm.Allreduce(self._MPI.IN_PLACE, summed, op=self._MPI.SUM)
        if gradients and self.shard:
            summed *= self.total / self.shard
        return summed
