"""A disk cache of lowered Devito operators, so that a network built again in another
process skips Devito's Python lowering (seconds per layer on deep nets).

Devito caches the compiled C by its code, but redoes the lowering (``Operator(...)``)
in every process: ~0.2-0.4 s per layer and pass, minutes for a ResNet-50. Operators
pickle; a lowered operator is stored under a key that covers everything its code
depends on (the equations as written, every Function's name, shape, dtype, halo and
Dimensions, the implicit loop orders, Devito's version and configuration, and the
source of :mod:`devito_ml.lanes`, the passes devito_ml adds to Devito's). An
unpickled operator holds copies of the Functions: :class:`CompiledOperator` passes
the net's own Functions by name on every call.

Beside each operator the cache keeps what calls it without unpickling it (its call
layout, shared object and C: :mod:`devito_ml.kernel_calls`), and beside the units
that use it, their records (:mod:`devito_ml.unit_records`): a warm process reads
those and no pickle.

The cache lives in ``$TMPDIR/devito_ml-operators-<uid>``; ``DEVITO_ML_OPERATOR_CACHE=0``
turns it off; ``devito-ml cache`` reports it and ``devito-ml cache --clear`` empties it
(:func:`usage`, :func:`clear`). A file that cannot be read (truncated, corrupted, or
written by another version of Devito or Python) is removed with a warning and rebuilt,
never trusted.
"""

import contextlib
import fcntl
import functools
import hashlib
import os
import pickle
import re
import tempfile
import warnings

import devito
import numpy as np
import sympy
from devito import configuration
from devito.symbolics import retrieve_functions

from devito_ml import lanes
from devito_ml.files import atomic_write

__all__ = ['symbols_of', 'cache_key', 'stored', 'load', 'store', 'enabled', 'folder',
           'usage', 'clear', 'building', 'path', 'write', 'remove']


def enabled():
    return os.environ.get('DEVITO_ML_OPERATOR_CACHE', '1') != '0'


def folder():
    """Where lowered operators are stored."""
    return os.path.join(tempfile.gettempdir(), f"devito_ml-operators-{os.getuid()}")


STORED = ('.pkl', '.call', '.so', '.c', '.unit')
"""What the cache stores: lowered operators (``.pkl``), and beside each its call
layout (``.call``), shared object (``-<digest>.so``) and C (:mod:`kernel_calls`);
units' records (``.unit``, :mod:`unit_records`)."""


def _names():
    """Stored files' names, and leftovers of interrupted writes (``.op-*``)."""
    try:
        return [name for name in os.listdir(folder()) if name.endswith(STORED)]
    except FileNotFoundError:
        return []


def path(name):
    """Where the cache keeps the file ``name``."""
    return os.path.join(folder(), name)


def write(name, data):
    """Write the bytes ``data`` as the file ``name`` atomically (a temporary file,
    then a rename: a reader sees the whole file or none)."""
    atomic_write(path(name), lambda stream: stream.write(data), prefix='.op-')


def remove(name):
    """Remove the file ``name`` (nothing when it is gone already)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path(name))


def usage():
    """``(files, bytes)`` the cache holds (a kernel is a few files)."""
    sizes = []
    for name in _names():
        try:
            sizes.append(os.path.getsize(os.path.join(folder(), name)))
        except FileNotFoundError:     # removed meanwhile by another process
            continue
    return len(sizes), sum(sizes)


@contextlib.contextmanager
def building(key):
    """Hold the build of ``key`` for this process: a second process that asks for
    the same key waits here until the first has stored it, then loads it, instead
    of lowering and compiling it again (two notebooks, or ranks, building one net).

    An exclusive ``flock`` on ``<key>.lock``: the kernel releases it when its
    process ends, so a process killed while building leaves no lock to wait on.
    """
    target = folder()
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, f"{key}.lock"), 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear():
    """Remove every stored operator (and leftovers of interrupted writes); return
    how many files were removed."""
    try:
        for name in os.listdir(folder()):
            if name.endswith('.lock'):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder(), name))
    except FileNotFoundError:
        pass
    removed = 0
    for name in _names():
        try:
            os.remove(os.path.join(folder(), name))
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def symbols_of(equations):
    """Every Function, Constant and Scalar the equations use, by name."""
    found = {}
    for eq in equations:
        for expression in (eq.lhs, eq.rhs):
            for function in retrieve_functions(expression):
                found[function.function.name] = function.function
        for symbol in eq.free_symbols:
            if hasattr(symbol, 'function') and symbol.function is not None:
                found.setdefault(symbol.function.name, symbol.function)
            elif hasattr(symbol, 'dtype') and hasattr(symbol, 'name'):
                found.setdefault(symbol.name, symbol)
    return found


def _describe_dimension(dimension):
    """Kind, name and extent; a guard's condition too (``ConditionalDimension``)."""
    condition = getattr(dimension, 'condition', None)
    return (type(dimension).__name__, dimension.name,
            getattr(dimension, 'default_value', None),
            None if condition is None else str(condition))


def _describe(symbol):
    parts = [type(symbol).__name__, symbol.name, str(np.dtype(symbol.dtype))]
    if hasattr(symbol, 'dimensions'):
        parts.append(tuple(_describe_dimension(d) for d in symbol.dimensions))
    for attribute in ('shape', 'halo', 'padding', 'space_order'):
        parts.append(repr(getattr(symbol, attribute, None)))
    return tuple(parts)


def cache_key(equations, name, symbols=None, rename=None, **options):
    """A digest of everything the lowered operator depends on (``symbols``: those
    of :func:`symbols_of`, when already found), every name mapped by ``rename``
    (``{name: new name}``: the key of the equations renamed so, without renaming
    them)."""
    header = [devito.__version__, _lowering_digest(), name,
              repr(sorted(options.items())),
              repr(sorted((k, str(v)) for k, v in configuration.items()
                          if k in ('platform', 'compiler', 'opt', 'language')))]
    write = str if rename is None else functools.partial(canonical_text,
                                                         rename=rename)
    text = []
    for eq in equations:
        implicit = getattr(eq, 'implicit_dims', None) or ()
        loops = tuple(_describe_dimension(d) for d in implicit)
        if rename is not None:
            loops = tuple((kind, rename.get(name, name), extent,
                           condition and _TOKEN.sub(lambda m: _renamed_token(m, rename),
                                                    condition))
                          for kind, name, extent, condition in loops)
        text.append(repr((type(eq).__name__, write(eq.lhs), write(eq.rhs),
                          type(implicit).__name__, loops)))
    symbols = symbols or symbols_of(equations)
    described = [repr(_describe(symbol)) for symbol in symbols.values()]
    dimensions = {d for eq in equations for d in eq.free_symbols
                  if getattr(d, 'is_Dimension', False)}
    described += [repr(_describe_dimension(d)) for d in dimensions]
    if rename is not None:
        described = [_TOKEN.sub(lambda m: _renamed_token(m, rename), piece)
                     for piece in described]
    text = header + text + sorted(described)
    return hashlib.sha256('\n'.join(text).encode()).hexdigest()


_TOKEN = re.compile(r'[A-Za-z_]\w*')


def _renamed_token(match, rename):
    """A name mapped by ``rename``; a loop's bound (``<loop>_m``, ``<loop>_M``)
    after its loop's name."""
    token = match.group(0)
    if token in rename:
        return rename[token]
    stem, _, bound = token.rpartition('_')
    if bound in ('m', 'M') and stem in rename:
        return f"{rename[stem]}_{bound}"
    return token


_ORDERLESS = (sympy.Add, sympy.Mul, sympy.Max, sympy.Min)


def canonical_text(expression, rename):
    """``expression`` written with every name mapped by ``rename``, and the
    operands of sums, products, maxima and minima sorted by their own text.

    sympy orders those operands by the names in them: two identical blocks whose
    names sort differently against their neighbours' (``conv10`` after ``conv9``)
    would print differently, renamed or not. This text does not depend on the
    names it maps; two expressions with one text are one expression, renamed and
    reordered (so, float rounding aside, they compute the same).
    """
    if getattr(expression, 'is_Indexed', False):
        indices = ','.join(canonical_text(i, rename) for i in expression.indices)
        name = expression.function.name
        return f"{rename.get(name, name)}[{indices}]"
    if getattr(expression, 'is_Float', False):
        return f"F{expression._mpf_!r}"           # exact, not 15 digits
    if getattr(expression, 'is_Number', False):
        return str(expression)
    if not expression.args:
        name = getattr(expression, 'name', None)
        if name is not None:
            return f"{type(expression).__name__}:{rename.get(name, name)}"
        return f"{type(expression).__name__}:{expression}"
    operands = [canonical_text(a, rename) for a in expression.args]
    if isinstance(expression, _ORDERLESS):
        operands.sort()
    head = type(expression).__name__
    # what a Devito node holds beside its operands (DefFunction's C name)
    extra = [getattr(expression, attribute, None)
             for attribute in (*getattr(expression, '__rargs__', ()),
                               *getattr(expression, '__rkwargs__', ()))]
    extra = [repr(v) for v in extra if isinstance(v, (str, int, float, bool))]
    if extra:
        head += '{' + ','.join(extra) + '}'
    return f"{head}({','.join(operands)})"


@functools.lru_cache(maxsize=None)
def _lowering_digest():
    """A digest of devito_ml's own lowering passes: a change to them changes the C
    that the same equations lower to (read once a process)."""
    with open(lanes.__file__, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def stored(key):
    """Whether an operator is stored under ``key`` (readable or not)."""
    return os.path.exists(os.path.join(folder(), f"{key}.pkl"))


def load(key):
    """The operator stored under ``key``, or None."""
    path = os.path.join(folder(), f"{key}.pkl")
    try:
        with open(path, 'rb') as handle:
            operator, defaults = pickle.load(handle)
        for dimension in operator.dimensions:
            if dimension.is_Default:
                dimension._default_value = defaults[dimension.name]
                dimension.__dict__.pop('symbolic_size', None)
        return operator
    except FileNotFoundError:
        return None
    except Exception as error:     # truncated, corrupted, another version: rebuild
        warnings.warn(f"devito_ml operator cache: `{path}` could not be read "
                      f"({type(error).__name__}: {error}); removed, the operator is "
                      "built again", RuntimeWarning, stacklevel=2)
        try:
            os.remove(path)
        except OSError:
            pass
        return None


def store(key, operator):
    """Write ``operator`` under ``key`` atomically (temporary file, then rename)."""
    # a DefaultDimension's extent is not pickled (Devito 4.8): kept beside
    defaults = {d.name: d._default_value for d in operator.dimensions if d.is_Default}
    write(f"{key}.pkl", pickle.dumps((operator, defaults)))
