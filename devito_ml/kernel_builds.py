"""Lowering the distinct kernels of a net on every core.

Devito lowers in Python, one operator at a time: a deep net's kernels are lowered
and compiled by worker processes, one a core, started with ``python -m
devito_ml.kernel_builds`` (processes, not threads: lowering holds the GIL; not
``multiprocessing``, which would import the user's script again in each worker).
Each worker reads the kernels it is given from files, lowers and compiles them, and
stores them in the disk cache of lowered operators
(:mod:`devito_ml.operator_cache`), where the net then finds them. A kernel a
worker could not build is built again in the net's own process, where its error, if
any, is raised.

``DEVITO_ML_BUILD_WORKERS`` sets how many workers (default: the cores this process
may use; ``1`` builds everything in-process). Worker processes take a second or two
to start, so fewer than :data:`PARALLEL_FROM` kernels are built in-process.
"""

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading

from devito_ml import compiled, operator_cache
from devito_ml.progress import bar_class, watched

__all__ = ['build_kernels', 'workers', 'PARALLEL_FROM', 'WORKERS_VARIABLE']

WORKERS_VARIABLE = 'DEVITO_ML_BUILD_WORKERS'
PARALLEL_FROM = 3
"""The fewest kernels to build that are given to worker processes."""


def workers():
    """How many processes lower kernels at once."""
    value = os.environ.get(WORKERS_VARIABLE)
    if value is None:
        return len(os.sched_getaffinity(0))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{WORKERS_VARIABLE} must be a positive number of processes, "
                         f"got {value!r}")
    return count


def build_kernels(sources, progress=None):
    """Lower and compile every kernel of ``sources`` not yet at hand.

    Parameters
    ----------
    sources : list of KernelSource
    progress : bool, optional
        A progress bar ("building 14 kernels, 6 cached"); default: where someone
        watches (a terminal, a notebook).
    """
    distinct = {source.key: source for source in sources}
    todo = [source for source in distinct.values() if not source.at_hand()]
    if not todo:
        return
    if progress is None:
        progress = watched()
    cached = len(distinct) - len(todo)
    bar = bar_class()(total=len(todo), disable=not progress, leave=False,
                      desc=f"building {len(todo)} kernel{'s' * (len(todo) > 1)}, "
                           f"{cached} cached",
                      unit='kernel')
    try:
        count = min(workers(), len(todo))
        if count > 1 and len(todo) >= PARALLEL_FROM and operator_cache.enabled():
            _in_workers(todo, count, bar)
        for source in todo:           # what no worker built (none, normally)
            if not source.at_hand():
                compiled.lowered(source)
                bar.update(1)
    finally:
        bar.close()


def _in_workers(todo, count, bar):
    """Build ``todo`` in ``count`` worker processes, advancing ``bar`` as each
    kernel is stored."""
    folder = tempfile.mkdtemp(prefix='devito_ml-build-')
    shares = [[] for _ in range(count)]
    # the largest first, each to the least loaded worker
    loads = [0] * count
    for source in sorted(todo, key=lambda s: -s.size):
        least = loads.index(min(loads))
        shares[least].append(_payload(source, folder))
        loads[least] += source.size
    environment = dict(os.environ, TMPDIR=tempfile.gettempdir())
    processes = [subprocess.Popen([sys.executable, '-m', 'devito_ml.kernel_builds',
                                   *share], env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
                 for share in shares if share]
    lock = threading.Lock()

    def follow(process):
        for _ in process.stdout:      # one line a kernel stored
            with lock:
                bar.update(1)

    readers = [threading.Thread(target=follow, args=(p,)) for p in processes]
    for reader in readers:
        reader.start()
    for process, reader in zip(processes, readers):
        process.wait()
        reader.join()
    shutil.rmtree(folder, ignore_errors=True)


def _payload(source, folder):
    """A file holding what a worker needs to build ``source``."""
    dimensions = {d.name: d._default_value
                  for d in _default_dimensions(source.equations)}
    path = os.path.join(folder, f"{source.key}.pkl")
    with open(path, 'wb') as handle:
        # a DefaultDimension's extent is not pickled (Devito 4.8): sent beside
        pickle.dump((source.equations, source.kernel_name, source.key, dimensions),
                    handle)
    return path


def _default_dimensions(equations):
    """Every DefaultDimension of ``equations``: of their symbols, their Functions
    and their implicit loops."""
    found = set()
    for eq in equations:
        symbols = [*operator_cache.symbols_of([eq]).values(),
                   *(getattr(eq, 'implicit_dims', None) or ())]
        for symbol in symbols:
            for dimension in (symbol, *getattr(symbol, 'dimensions', ())):
                if getattr(dimension, 'is_Default', False):
                    found.add(dimension)
    return found


def _restore_extents(equations, extents):
    for dimension in _default_dimensions(equations):
        dimension._default_value = extents[dimension.name]
        dimension.__dict__.pop('symbolic_size', None)


def _work(paths):
    """A worker: build the kernel of each file, print its key when stored."""
    for path in paths:
        with open(path, 'rb') as handle:
            equations, name, key, extents = pickle.load(handle)
        _restore_extents(equations, extents)
        with operator_cache.building(key):
            if not operator_cache.stored(key):
                compiled.build(equations, name, key)
        print(key, flush=True)


if __name__ == '__main__':
    _work(sys.argv[1:])
