"""A compiled operator called through prepared arguments.

``Operator.apply()`` spends ~170 us plus ~60 us per Function in Python before any C
runs. ``CompiledOperator.run(batch)`` derives the argument list once per active batch
size, through the kernel's call layout (:mod:`devito_ml.kernel_calls`), and then
calls the compiled function directly.
"""

import collections
import functools
import os

from devito_ml import compiler, kernel_calls, kernels, lanes, operator_cache
from devito_ml.allocation import batched_allocation
from devito_ml.copy_forwarding import forward_copies
from devito_ml.vector_width import float32_lanes

__all__ = ['KernelSource', 'CompiledOperator', 'lowered', 'build', 'forget_loaded',
           'OperatorChain', 'SyncPoint', 'split_at_sync_points']


class KernelSource:
    """What one call computes, ready to be lowered: the equations, the name of the
    C function, the cache key, and the call's own Functions to bind.

    Given ``owners``, the call is one of a kernel shared by every unit that
    computes the same thing (:mod:`devito_ml.kernels`): the equations are renamed
    after their roles, and the kernel is named by what it computes,
    ``<label>_<digest>``.

    A copy that only moves a tensor this call writes into another is folded into
    its writer (:func:`~devito_ml.copy_forwarding.forward_copies`).

    Parameters
    ----------
    equations : list of Eq
    name : str
        Name of the call (of the generated C function, when it is not shared).
    owners : dict, optional
        ``{owner name: canonical owner}`` (:func:`~devito_ml.kernels.unit_owners`).
    label : str, optional
        With ``owners``: what the kernel computes
        (:func:`~devito_ml.kernels.kernel_label`).
    """

    def __init__(self, equations, name, owners=None, label=None):
        self.name = name
        equations = forward_copies(equations)
        self.size = len(equations)
        names = kernels.role_names(equations, owners) if owners else None
        options = kernel_options()
        symbols = operator_cache.symbols_of(equations)
        self._equations, self._renamed = equations, None
        self._derive = self._derived = None       # (set for a recalled source)
        if names is None:
            self.symbols = symbols
            self.names, self.owners = {}, {}
            self.key = operator_cache.cache_key(equations, name, symbols, **options)
            self.kernel_name = name
        else:
            self.symbols = {names[n]: symbol for n, symbol in symbols.items()}
            self.names = names
            used = set(names.values())
            self.owners = {canon: own for own, canon in owners.items()
                           if any(n == canon or n.startswith(canon + '_') for n in used)}
            self.key = operator_cache.cache_key(equations, '', symbols, rename=names,
                                                **options)
            self.kernel_name = f"{label}_{self.key[:8]}"

    @classmethod
    def recalled(cls, record, name, names, symbols, derive):
        """The source a unit record stored (:mod:`devito_ml.unit_records`), for a
        unit whose equations are not derived: ``derive()`` makes the
        :class:`KernelSource` from them where they are needed after all (to lower
        the kernel again)."""
        source = cls.__new__(cls)
        source.name, source.size = name, record['size']
        source.key, source.kernel_name = record['key'], record['kernel_name']
        source.names, source.symbols = names, symbols
        source.owners = record['owners']
        source._derive, source._derived = derive, None
        return source

    def derived(self):
        """This source made from its equations (itself, unless recalled)."""
        if self._derive is None:
            return self
        if self._derived is None:
            self._derived = self._derive()
        return self._derived

    @property
    def equations(self):
        """The equations to lower: renamed after their roles for a shared kernel
        (made when first asked: a kernel found cached never needs them)."""
        if self.derived() is not self:
            return self.derived().equations
        if not self.names:
            return self._equations
        if self._renamed is None:
            self._renamed = kernels.renamed(self._equations, self.names)
        return self._renamed

    def at_hand(self):
        """Whether the kernel is lowered already: in this process or on disk."""
        return self.key in _CALLS or self.key in _LOADED or \
            operator_cache.stored(self.key)


class CompiledOperator:
    """A compiled kernel called with one unit's Functions, its argument lists
    prepared once per batch size.

    Given ``owners`` (or a :class:`KernelSource` that has them), it is one call of
    a kernel shared by every unit that computes the same thing, called with this
    unit's own Functions. The kernel is called through its call layout
    (:mod:`devito_ml.kernel_calls`): a kernel found in the cache is called without
    its Devito Operator, which is loaded only when asked for (:attr:`operator`).

    Parameters
    ----------
    equations : list of Eq
    name : str
        Name of this call (of the generated C function, when it is not shared).
    owners, label : optional
        As :class:`KernelSource`.
    source : KernelSource, optional
        Instead of the equations: what :func:`build_kernels` prepared.
    """

    def __init__(self, equations=None, name=None, owners=None, label=None,
                 source=None):
        source = source or KernelSource(equations, name, owners, label)
        self._source = source
        self.name, self.names, self.owners = source.name, source.names, source.owners
        self.kernel = kernel_call(source)
        self._positions = {name: i for i, name in enumerate(self.kernel.names)}
        # the Functions to run on, by name: a cached or shared kernel holds others
        symbols = source.symbols
        # (of a class with data: asking a Function for it would allocate it now)
        self._functions = {name: symbols[name] for name in self._positions
                           if name in symbols and hasattr(type(symbols[name]), 'data')}
        self._arguments = {}
        self._scalars = {}

    @property
    def operator(self):
        """The lowered Devito Operator (loaded, or lowered, when first asked)."""
        return lowered(self._source)

    @property
    def kernel_name(self):
        """Name of the generated C function (shared by the calls of one kernel)."""
        return self.kernel.function_name

    @property
    def code(self):
        """The generated C, as a string."""
        return self.kernel.code or str(self.operator)

    def bound(self):
        """``{parameter name: Function, Constant or value}``: what this call binds
        to the kernel's parameters."""
        return {**self._functions, **self._scalars}

    def prepare(self, batch):
        """Derive (or reuse) the argument list for ``batch`` active samples."""
        if batch not in self._arguments:
            self._arguments[batch] = self.kernel.arguments(batch, self.bound())
        return self._arguments[batch]

    def set_scalars(self, values):
        """Set run-time scalars (Devito Constants) by name in every prepared list.

        Names this operator does not take are ignored, so one optimizer can push its
        hyperparameters to every operator it is part of.
        """
        values = {self.names.get(k, k): v for k, v in values.items()}
        self._scalars.update((k, v) for k, v in values.items() if k in self._positions)
        for prepared in self._arguments.values():
            for name, value in self._scalars.items():
                prepared[self._positions[name]] = value

    def run(self, batch):
        """Run the operator on the first ``batch`` entries of the batch dimension."""
        status = self.kernel(self.prepare(batch))
        if status:
            raise RuntimeError(f"operator `{self.name}` returned {status}")

    def apply(self, batch):
        """Run through ``Operator.apply`` (slow path; for comparison and tests)."""
        operator = self.operator
        operator.apply(**kernel_calls.batch_bounds(operator.dimensions, batch),
                       **self._functions)


def kernel_call(source):
    """The :class:`~devito_ml.kernel_calls.KernelCall` of a :class:`KernelSource`:
    from this process's kernels, the cache's call layouts, or from its operator
    (:func:`lowered`), whose layout is then stored."""
    key = source.key
    found = _recent(_CALLS, key)
    if found is not None:
        return found
    found = kernel_calls.load(key) if operator_cache.enabled() else None
    if found is None:
        operator = lowered(source)
        found = _CALLS.get(key) or _call_of(operator, key)     # built: made by build()
    return _keep(_CALLS, key, found)


def _recent(kept, key):
    """What is kept under ``key`` (now the most recently used), or None."""
    found = kept.get(key)
    if found is not None:
        kept.move_to_end(key)
    return found


def _keep(kept, key, value):
    """Keep ``value`` at hand under ``key``, dropping the least recently used."""
    kept[key] = value
    while len(kept) > KERNELS_KEPT:
        kept.popitem(last=False)
    return value


def _call_of(operator, key):
    """A call of ``operator``: through its layout (stored, when the cache is on),
    or through Devito where it has none."""
    layout = kernel_calls.layout_of(operator)
    if layout is None:
        return DevitoCall(operator)
    if operator_cache.enabled():
        kernel_calls.store(key, operator, layout)
    return kernel_calls.KernelCall(layout, operator.cfunction, code=str(operator))


class DevitoCall:
    """A kernel called through ``Operator.arguments()`` (one whose parameters a
    call layout does not bind); the interface of
    :class:`~devito_ml.kernel_calls.KernelCall`."""

    def __init__(self, operator):
        self.operator = operator
        self.cfunction = operator.cfunction
        self.names = [p.name for p in operator.parameters]
        self.function_name = operator.name

    @property
    def code(self):
        return str(self.operator)

    def arguments(self, batch, bound):
        arguments = self.operator.arguments(
            **kernel_calls.batch_bounds(self.operator.dimensions, batch), **bound)
        return [arguments[name] for name in self.names]

    def __call__(self, values):
        return self.cfunction(*values)


def lowered(source):
    """The operator of a :class:`KernelSource`: from this process's kernels, the
    disk cache of lowered operators, or lowered now.

    Built with :func:`devito_ml.compiler.compiler_name` (stale compile locks are
    recovered; AddressSanitizer in that mode), lowered by
    :func:`devito_ml.lanes.build_operator` (lane loops of register tiles vectorised).
    """
    key = source.key
    found = _recent(_LOADED, key)
    if found is not None:
        return found
    operator = operator_cache.load(key) if operator_cache.enabled() else None
    if operator is None:
        with operator_cache.building(key):     # another process may be building it
            operator = operator_cache.load(key) if operator_cache.enabled() else None
            if operator is None:
                operator = build(source.equations, source.kernel_name, key)
    return _keep(_LOADED, key, operator)


def build(equations, name, key):
    """Lower and compile ``equations`` into the C function ``name``; store it under
    ``key`` in the disk cache (when on)."""
    operator = lanes.build_operator(equations, name=name, **operator_options())
    # stored compiled: the pickle then carries the shared object, and a later
    # process loads it without printing the C again to find it in Devito's jit
    # cache (measured, LeNet-5: 11.8 s of a warm start, mostly printing)
    operator.cfunction
    if operator_cache.enabled():
        operator_cache.store(key, operator)
    _keep(_CALLS, key, _call_of(operator, key))     # its layout stored beside it
    return operator


KERNELS_KEPT = 256
"""How many kernels (and lowered operators) a process keeps at hand, most recently
used first."""

# Caches, as Devito's own: the operators this process lowered or loaded, and the
# calls of kernels, by key. A compiled kernel is not changed by running it; each
# caller binds its own Functions.
_LOADED = collections.OrderedDict()
_CALLS = collections.OrderedDict()


def forget_loaded():
    """Drop the kernels and operators this process keeps at hand: the next build
    of each reads the disk cache (or lowers) again."""
    _LOADED.clear()
    _CALLS.clear()


def _flags(compiler_name):
    """The flags of ``compiler_name``, as they are now: they follow the lanes of the
    schedules and ``CFLAGS``/``LDFLAGS``, which may change within a process."""
    return _flags_for(compiler_name, float32_lanes(), os.environ.get('CFLAGS', ''),
                      os.environ.get('LDFLAGS', ''))


@functools.lru_cache(maxsize=None)
def _flags_for(compiler_name, lanes, cflags, ldflags):
    """:func:`compiler.compiler_flags`, remembered for each state of what they
    depend on (the arguments after the name: the key, read by the compiler)."""
    return compiler.compiler_flags(compiler_name)


def operator_options():
    """The options every operator is built with (and cached under)."""
    return dict(language='openmp', compiler=compiler.compiler_name())


def kernel_options():
    """:func:`operator_options` and the compiler's flags: what a kernel's key
    holds beside its equations."""
    options = operator_options()
    options['flags'] = _flags(options['compiler'])
    return options


class SyncPoint:
    """A point in a list of equations where the generated code stops, Python runs
    ``action(batch)``, and the next equations go on from what it left.

    Synchronized BatchNorm sums its per-channel statistics over the ranks of an MPI
    job there (``distributed.py``): a collective call the C cannot make. The
    equations either side compile into two operators of an :class:`OperatorChain`.

    Parameters
    ----------
    name : str
    action : callable
        ``action(batch)``, run between the two operators.
    idle : callable
        Takes part in the same collective with nothing to add: a rank whose shard
        of the batch is empty runs ``idle()`` instead of the operators.
    """

    def __init__(self, name, action, idle):
        self.name, self.action, self.idle = name, action, idle

    def __repr__(self):
        return f"SyncPoint({self.name})"


def split_at_sync_points(equations):
    """``[(equations, SyncPoint or None)]``: the runs of equations between sync
    points, each with the point that ends it."""
    groups, current = [], []
    for item in equations:
        if isinstance(item, SyncPoint):
            groups.append((current, item))
            current = []
        else:
            current.append(item)
    return groups + [(current, None)]


class OperatorChain:
    """Several compiled operators run one after the other, as one.

    A deep network is compiled in parts (a block of layers each): one Devito
    operator over a whole ResNet takes minutes to lower and compile, and its C
    function would take more arguments than ctypes can pass (1024). Each part reads
    what the parts before it wrote; calling a part costs a few microseconds.

    Parameters
    ----------
    parts : list of CompiledOperator
    name : str
    sync_points : dict, optional
        ``{number of parts run: [SyncPoint, ...]}``: the points run after that many
        parts (0: before the first).
    """

    def __init__(self, parts, name, sync_points=None):
        self.parts, self.name = list(parts), name
        self.sync_points = dict(sync_points or {})
        self._prepared = set()

    def idle(self):
        """Take part in every sync point's collective without running anything."""
        for index in sorted(self.sync_points):
            for point in self.sync_points[index]:
                point.idle()

    def _sync(self, index, batch):
        for point in self.sync_points.get(index, ()):
            point.action(batch)

    @property
    def code(self):
        """The generated C of every part, in the order they run."""
        return '\n'.join(part.code for part in self.parts)

    @property
    def operator(self):
        """The Devito operator, when there is one part."""
        if len(self.parts) != 1:
            raise AttributeError(f"`{self.name}` is {len(self.parts)} operators: see "
                                 "`parts`")
        return self.parts[0].operator

    def set_scalars(self, values):
        for part in self.parts:
            part.set_scalars(values)

    def run(self, batch, after=None):
        """Run every part on ``batch`` samples, the sync points between them;
        ``after(parts run)`` is called after each part and its sync points."""
        self._each('run', batch, after)

    def apply(self, batch):
        self._each('apply', batch)

    def _each(self, call, batch, after=None):
        """``part.<call>(batch)`` for every part, the sync points between them."""
        if batch not in self._prepared:       # allocates what no pass touched yet
            with batched_allocation():
                for part in self.parts:
                    part.prepare(batch)
            self._prepared.add(batch)
        self._sync(0, batch)
        for index, part in enumerate(self.parts, start=1):
            getattr(part, call)(batch)
            self._sync(index, batch)
            if after is not None:
                after(index)
