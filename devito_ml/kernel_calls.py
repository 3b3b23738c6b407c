"""Calling a compiled kernel without its Devito Operator: call layouts.

A lowered Devito Operator is called through ``Operator.arguments()``, which derives
the argument list in Python (~80 ms for a ResNet block's kernel), and reaching the
compiled function of a stored operator means unpickling the whole lowered operator
(0.2-0.5 s a kernel, most of a warm start). A call needs less: the C function's
parameters in order and, for each, how it is bound. A :class:`CallLayout` lists
them, each entry one of

- ``('data', name)``: a Function's data (a ``struct dataobj``): the caller's
  Function of that name;
- ``('value', name, ctype)``: a Constant: the caller's value, or one set by name;
- ``('fixed', name, ctype, value)``: a loop bound fixed by the shapes the kernel was
  built for (they are part of its key);
- ``('batch', name, ctype)``: the last index of a batch loop, ``batch - 1``;
- ``('threads', name, kind, reserved)``: Devito's OpenMP thread count, read from the
  environment of the calling process as Devito reads it;
- ``('timers', name, sections)``: Devito's profiling struct.

:func:`layout_of` derives it from a lowered operator, asking Devito for the
arguments of two batch sizes (on unallocated arrays) and refusing a layout (None)
where a parameter is of another kind or a bound moves with the batch otherwise than
a batch loop's. :func:`store` writes it to the operator cache beside the operator,
with the shared object and the C; :func:`load` finds it there and returns a
:class:`KernelCall` that calls the C function through ``ctypes`` directly: a warm
process neither unpickles nor lowers anything. A layout, shared object or C that
cannot be read or does not match its digest is removed with a warning, never
trusted. ``tests/test_kernel_calls.py`` checks the arguments a layout binds against
Devito's own, field by field, for every kind of layer.
"""

import ctypes
import hashlib
import json
import warnings

import numpy as np
from devito import Constant
from devito.types import Timer
from devito.types.parallel import NThreads, NThreadsBase, NThreadsNonaffine

from devito_ml import operator_cache
from devito_ml.batch import is_batch_dimension

__all__ = ['CallLayout', 'KernelCall', 'layout_of',
           'store', 'load', 'dataobj']

LAYOUT_VERSION = 1
_THREADS = {cls.__name__: cls for cls in (NThreads, NThreadsNonaffine)}
_CTYPES = {name: getattr(ctypes, name) for name in
           ('c_int', 'c_long', 'c_longlong', 'c_short', 'c_float', 'c_double')}


def batch_bounds(dimensions, batch):
    """``{<dimension>_M: batch - 1}`` for the batch loops among ``dimensions``."""
    return {f"{d.name}_M": batch - 1 for d in dimensions if is_batch_dimension(d)}


def dataobj(function):
    """The ``struct dataobj`` the generated C takes for ``function`` (Devito's own,
    made from the Function's allocated data)."""
    return function._C_make_dataobj(**{function.name: function._data_buffer()})


class CallLayout:
    """The parameters of a compiled kernel's C function, in order, and how each is
    bound (the entries listed in :mod:`devito_ml.kernel_calls`).

    Parameters
    ----------
    function : str
        Name of the C function.
    entries : list of tuple
    """

    def __init__(self, function, entries):
        self.function = function
        self.entries = [tuple(entry) for entry in entries]

    @property
    def names(self):
        """The parameters' names, in order."""
        return [entry[1] for entry in self.entries]

    def ctypes(self):
        """The ``argtypes`` of the C function."""
        return [_argtype(entry) for entry in self.entries]

    def to_record(self):
        """The layout as a JSON-ready dict."""
        return dict(version=LAYOUT_VERSION, function=self.function,
                    entries=self.entries)

    @classmethod
    def from_record(cls, record):
        """The layout of a dict made by :meth:`to_record` (and read back)."""
        if record.get('version') != LAYOUT_VERSION:
            raise ValueError(f"layout version {record.get('version')!r}, expected "
                             f"{LAYOUT_VERSION}")
        return cls(record['function'], record['entries'])

    def __eq__(self, other):
        return isinstance(other, CallLayout) and \
            (self.function, self.entries) == (other.function, other.entries)

    def __repr__(self):
        return f"CallLayout({self.function}, {len(self.entries)} parameters)"


def _argtype(entry):
    """The ctypes type an entry is passed as (pointers to structs as ``void *``)."""
    if entry[0] in ('data', 'timers'):
        return ctypes.c_void_p
    return ctypes.c_int if entry[0] == 'threads' else _CTYPES[entry[2]]


def layout_of(operator):
    """The :class:`CallLayout` of a lowered operator, or None where a parameter is
    of a kind a layout does not bind (its calls then go through Devito)."""
    npthreads = operator.threads_info.get('npthreads', 0)
    if not isinstance(npthreads, (int, np.integer)):
        return None
    full = _reference_arguments(operator, None)
    batch = {name for name in batch_bounds(operator.dimensions, 1) if name in full}
    sizes = {full[name] + 1 for name in batch}
    smaller = _reference_arguments(operator, min(sizes) - 1) \
        if len(sizes) == 1 and min(sizes) > 1 else None
    entries = []
    for parameter in operator.parameters:
        entry = _entry(parameter, full, smaller, batch, npthreads)
        if entry is None:
            return None
        entries.append(entry)
    return CallLayout(operator.name, entries)


def _reference_arguments(operator, batch):
    """Devito's arguments for ``batch`` samples (None: the Functions' extent), on
    unallocated arrays of the Functions' shapes (mapped, never touched)."""
    arrays = {p.name: np.empty(p.shape_allocated, dtype=p.dtype)
              for p in operator.parameters if getattr(p, 'is_DiscreteFunction', False)}
    bounds = batch_bounds(operator.dimensions, batch) if batch else {}
    return operator.arguments(**bounds, **arrays)


def _entry(parameter, full, smaller, batch, npthreads):
    name = parameter.name
    if getattr(parameter, 'is_DiscreteFunction', False):
        return ('data', name)
    if isinstance(parameter, Timer):
        return ('timers', name, list(parameter.sections))
    if isinstance(parameter, NThreadsBase):
        kind = type(parameter).__name__
        if kind not in _THREADS or _threads(kind, npthreads) != full[name]:
            return None
        return ('threads', name, kind, int(npthreads))
    ctype = getattr(getattr(parameter, '_C_ctype', None), '__name__', None)
    if ctype not in _CTYPES:
        return None
    if isinstance(parameter, Constant):
        return ('value', name, ctype)
    value = full[name]
    if not isinstance(value, (int, np.integer)):
        return None
    if name in batch:
        if smaller is not None and smaller[name] != value - 1:
            return None
        return ('batch', name, ctype)
    if smaller is not None and smaller[name] != value:
        return None         # moves with the batch, not as a batch loop
    return ('fixed', name, ctype, int(value))


def _threads(kind, npthreads):
    return _THREADS[kind]()._arg_defaults(metadata={'npthreads': npthreads})[
        _THREADS[kind].name]


class KernelCall:
    """A compiled kernel's C function and its :class:`CallLayout`.

    Parameters
    ----------
    layout : CallLayout
    cfunction : ctypes function
        The C function (its ``argtypes`` are set from the layout).
    code : str or callable, optional
        The C, or what returns it when asked.
    """

    def __init__(self, layout, cfunction, code=None):
        self.layout = layout
        self.cfunction = cfunction
        self.cfunction.argtypes = layout.ctypes()
        self._code = code
        self._timers = {entry[1]: Timer(entry[1], entry[2])
                        for entry in layout.entries if entry[0] == 'timers'}

    @property
    def function_name(self):
        return self.layout.function

    @property
    def names(self):
        return self.layout.names

    @property
    def code(self):
        """The generated C."""
        return self._code() if callable(self._code) else self._code

    def arguments(self, batch, bound):
        """The argument list of a call on ``batch`` samples; ``bound`` maps
        parameter names to the caller's Functions and Constants (or values)."""
        values = []
        for entry in self.layout.entries:
            kind, name = entry[:2]
            if kind == 'data':
                values.append(dataobj(_bound(bound, name, self)))
            elif kind == 'value':
                value = _bound(bound, name, self)
                values.append(value.data if isinstance(value, Constant) else value)
            elif kind == 'fixed':
                values.append(entry[3])
            elif kind == 'batch':
                values.append(batch - 1)
            elif kind == 'threads':
                values.append(_threads(entry[2], entry[3]))
            else:
                values.append(self._timers[name]._arg_values()[name])
        return values

    def __call__(self, values):
        return self.cfunction(*values)


def _bound(bound, name, call):
    try:
        return bound[name]
    except KeyError:
        raise RuntimeError(f"kernel `{call.function_name}`: no Function or value "
                           f"bound to its parameter `{name}`") from None


def store(key, operator, layout):
    """Write ``layout``, the operator's shared object and its C under ``key``."""
    with open(operator._lib._name, 'rb') as handle:
        library = handle.read()
    digest = hashlib.sha256(library).hexdigest()
    operator_cache.write(f"{key}-{digest[:16]}.so", library)
    code = str(operator).encode()
    operator_cache.write(f"{key}.c", code)
    record = dict(layout.to_record(), library=digest,
                  code=hashlib.sha256(code).hexdigest())
    operator_cache.write(f"{key}.call", json.dumps(record).encode())


def load(key):
    """The :class:`KernelCall` stored under ``key``, or None (nothing stored, or
    something unreadable: removed with a warning)."""
    path = operator_cache.path(f"{key}.call")
    try:
        with open(path, 'rb') as handle:
            record = json.loads(handle.read())
        layout = CallLayout.from_record(record)
        library = f"{key}-{record['library'][:16]}.so"
    except FileNotFoundError:
        return None
    except Exception as error:
        return _unreadable(key, path, error)
    try:
        with open(operator_cache.path(library), 'rb') as handle:
            if hashlib.sha256(handle.read()).hexdigest() != record['library']:
                raise ValueError("it does not match its digest")
        cfunction = getattr(ctypes.CDLL(operator_cache.path(library)), layout.function)
    except Exception as error:
        operator_cache.remove(library)
        return _unreadable(key, operator_cache.path(library), error)
    return KernelCall(layout, cfunction,
                      code=lambda: _stored_code(key, record['code']))


def _stored_code(key, digest):
    """The stored C of ``key``, or None where it is missing or changed."""
    path = operator_cache.path(f"{key}.c")
    try:
        with open(path, 'rb') as handle:
            code = handle.read()
        if hashlib.sha256(code).hexdigest() != digest:
            raise ValueError("it does not match its digest")
        return code.decode()
    except Exception as error:
        warnings.warn(f"devito_ml operator cache: `{path}` could not be read "
                      f"({type(error).__name__}: {error}); the C is printed from "
                      "the operator again", RuntimeWarning, stacklevel=3)
        return None


def _unreadable(key, path, error):
    warnings.warn(f"devito_ml operator cache: `{path}` could not be read "
                  f"({type(error).__name__}: {error}); removed, the kernel is loaded "
                  "from its operator again", RuntimeWarning, stacklevel=3)
    operator_cache.remove(f"{key}.call")
    return None
