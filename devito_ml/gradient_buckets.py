"""Gradients summed over the ranks of an MPI job in buckets, each started as soon as
the part of the backward pass that finishes its gradients has run, while the next
parts run (PyTorch's DistributedDataParallel does the same with its buckets).

A deep net's backward operator is a chain of parts, last layers first
(:class:`~devito_ml.net_operators.NetOperators`): after each part, the gradients of
its layers are final. They are packed (scaled by the rank's share of the global
batch) into buckets of at most ``bucket_bytes``, in the order they finish; a bucket
is handed to a nonblocking ``MPI_Iallreduce`` when its last gradient is final, and
every bucket is waited for before the update. The buckets run on a communicator of
their own, so that the collectives of synchronized BatchNorm between the parts
never meet them out of order.
"""

import time

import numpy as np

__all__ = ['BUCKET_BYTES', 'GradientBuckets', 'finishing_parts']

BUCKET_BYTES = 4 << 20
"""Largest bucket (a gradient larger than that is a bucket of its own)."""


def finishing_parts(net, chain):
    """``{parameter gradient name: parts of chain run when it is final}`` for the
    backward operator ``chain`` of ``net``: its parts are named after the net's
    parts (``<chain>_<index>``, ``..._sync<cut>`` where a sync point cuts one)."""
    names = [part.name for part in chain.parts]
    finished = {}
    for layers, suffix in net.parts():
        call = chain.name + suffix
        runs = [index for index, name in enumerate(names, start=1)
                if name == call or name.startswith(call + '_sync')]
        at = max(runs) if runs else len(names)
        for layer in layers:
            for role in layer.gradients():
                finished[layer.parameters()[role].name] = at
    return finished


class GradientBuckets:
    """The parameter gradients of ``net`` summed over ``comm``'s ranks, bucket by
    bucket, as the backward operator ``chain`` finishes them.

    Parameters
    ----------
    net : Net
    chain : OperatorChain
        The backward operator whose parts the buckets follow.
    comm : mpi4py communicator
        Duplicated: the buckets' collectives run on a communicator of their own.
    MPI : module
        ``mpi4py.MPI``.
    bucket_bytes : int

    Attributes
    ----------
    buckets : list of (int, list of str, ndarray)
        Each bucket: after how many parts it starts, the gradients it holds, its
        buffer.
    wait_seconds : float
        Time spent waiting for buckets so far (their sum not done when asked).
    """

    def __init__(self, net, chain, comm, MPI, bucket_bytes=BUCKET_BYTES):
        self.comm, self._MPI = comm.Dup(), MPI
        self.gradients = net.gradients()
        finished = finishing_parts(net, chain)
        order = sorted(self.gradients, key=lambda name: finished[name])
        self.buckets, current, size = [], [], 0
        for name in order:
            nbytes = self.gradients[name].nbytes
            if current and size + nbytes > bucket_bytes:
                self.buckets.append(current)
                current, size = [], 0
            current.append(name)
            size += nbytes
        if current:
            self.buckets.append(current)
        self.buckets = [(max(finished[name] for name in names), names,
                         np.zeros(sum(self.gradients[name].size for name in names),
                                  dtype=net.dtype))
                        for names in self.buckets]
        self.wait_seconds = 0.0
        self._requests, self._started, self._scale = [], 0, 1.0

    def begin(self, scale):
        """A new step: the gradients will be scaled by ``scale`` (the rank's share of
        the global batch) before they are summed."""
        self._requests, self._started, self._scale = [], 0, scale

    def after_part(self, parts_run):
        """Start the buckets whose gradients are final after ``parts_run`` parts
        (a hook for :meth:`~devito_ml.compiled.OperatorChain.run`), and let those
        started go on."""
        while self._started < len(self.buckets) and \
                self.buckets[self._started][0] <= parts_run:
            self._start(self.buckets[self._started], zero=False)
        if self._requests:
            self._MPI.Request.Testall(self._requests)

    def start_all(self, zero=False):
        """Start every bucket not started yet (``zero``: with nothing to add, a rank
        whose shard of the batch is empty)."""
        while self._started < len(self.buckets):
            self._start(self.buckets[self._started], zero)

    def _start(self, bucket, zero):
        _, names, buffer = bucket
        if zero:
            buffer[:] = 0
        else:
            at = 0
            for name in names:
                gradient = self.gradients[name].reshape(-1)
                np.multiply(gradient, self._scale, out=buffer[at:at + gradient.size])
                at += gradient.size
        self._requests.append(self.comm.Iallreduce(self._MPI.IN_PLACE, buffer,
                                                   op=self._MPI.SUM))
        self._started += 1

    def finish(self):
        """Wait for every bucket and copy the sums back into the gradients."""
        self.start_all()
        began = time.perf_counter()
        self._MPI.Request.Waitall(self._requests)
        self.wait_seconds += time.perf_counter() - began
        for _, names, buffer in self.buckets:
            at = 0
            for name in names:
                gradient = self.gradients[name]
                np.copyto(gradient, buffer[at:at + gradient.size].reshape(gradient.shape))
                at += gradient.size
        self._requests = []
