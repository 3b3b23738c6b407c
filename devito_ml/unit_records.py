"""Warm starts without equations: a unit's kernel recalled from what the unit is.

A kernel's key (:func:`devito_ml.operator_cache.cache_key`) is a digest of its
equations, so finding a cached kernel meant deriving every layer's equations first:
a warm ResNet-50 spent half its start doing that. A *unit record* keys the same
answer by a description of the unit instead: a digest of everything its equations
are made from, and stores what the unit's kernel source was (its kernel key and
name, and the role of each Function and Constant it binds). A net built again
describes each unit (cheap: attributes, shapes and names), finds its record, and
calls the kernel without deriving an equation.

The description (:func:`fingerprint`) is inclusive by construction: every attribute
of every layer of the unit, recursively through devito_ml's own objects (tiles,
activations, halos), with each Function's name, shape, halo, padding, dtype and
Dimensions, each Dimension's extent, each expression's text; the Functions linking
the unit to its neighbours; the loss, the optimizer's type and settings, the pass;
the source of the whole devito_ml package, Devito's version and configuration, the
compiler flags and the vector width. Names are written after their roles
(:func:`devito_ml.kernels.role_names`' renaming), so identical blocks describe
alike. Whatever it meets that it cannot describe (a user's Python function, an MPI
communicator) makes the unit undescribable: it is then derived as before. An
over-inclusive description costs a record, never a wrong kernel; a description
that missed something would, so ``DEVITO_ML_CHECK_RECORDS=1`` derives the
equations of every recalled unit as well and raises where they give another
kernel (the test suite runs with it).
"""

import functools
import hashlib
import json
import os
import pathlib
import types
import warnings

import devito
import numpy as np
import sympy
from devito import configuration

from devito_ml import operator_cache

__all__ = ['Undescribable', 'RecordMismatch', 'fingerprint', 'describe', 'recall',
           'remember', 'check', 'checking', 'CHECK_VARIABLE']

CHECK_VARIABLE = 'DEVITO_ML_CHECK_RECORDS'
RECORD_VERSION = 1
SKIPPED = frozenset({'owner', 'node'})
"""Attributes left out of a description: a layer's net and its node in the net's
graph (what the unit is linked to is described by the net)."""


class Undescribable(Exception):
    """Something a description cannot write down (its unit is derived)."""


def checking():
    """Whether recalled units are checked against their derived equations."""
    return os.environ.get(CHECK_VARIABLE, '0') not in ('', '0')


class _Roles:
    """A renaming by owner prefix (:func:`devito_ml.kernels.role_names`), with the
    ``get`` of a dict, for :func:`~devito_ml.operator_cache.canonical_text`."""

    def __init__(self, rename):
        self.rename = rename

    def get(self, name, default=None):
        return self.rename(name)


def fingerprint(obj, rename, found, seen=None):
    """A text describing ``obj``: what equations made from it depend on.

    Parameters
    ----------
    obj : object
    rename : callable
        Maps a name to its role (identity for a unit named after itself).
    found : dict
        Collects every Function and Constant met, by its own name.
    seen : dict, optional
        What the texts of one unit share: an object met again is written as a
        reference, a Function or Dimension met again as its text.

    Raises
    ------
    Undescribable
    """
    return _text(obj, rename, found, {} if seen is None else seen)


def _text(obj, rename, found, seen):
    if obj is None or isinstance(obj, (bool, int, float, complex, np.generic)):
        return repr(obj)
    if isinstance(obj, str):
        return repr(rename(obj))
    if isinstance(obj, (np.dtype, type)):
        return f"T:{obj!r}"
    if isinstance(obj, np.ndarray):
        return f"A:{obj.shape}:{obj.dtype}:{hashlib.sha1(obj.tobytes()).hexdigest()}"
    if isinstance(obj, (tuple, list, frozenset, set)):
        items = [_text(item, rename, found, seen) for item in obj]
        if isinstance(obj, (set, frozenset)):
            items.sort()
        return f"{type(obj).__name__}({','.join(items)})"
    if isinstance(obj, dict):
        items = sorted(f"{_text(k, rename, found, seen)}:{_text(v, rename, found, seen)}"
                       for k, v in obj.items())
        return f"dict({','.join(items)})"
    if getattr(obj, 'is_Dimension', False):
        if ('D', obj) not in seen:
            seen['D', obj] = _dimension(obj, rename)
        return seen['D', obj]
    if isinstance(obj, devito.Constant):
        found[obj.name] = obj
        return f"C:{rename(obj.name)}:{np.dtype(obj.dtype)}"
    if getattr(obj, 'is_DiscreteFunction', False):
        found[obj.name] = obj
        if ('F', obj.name) not in seen:
            seen['F', obj.name] = _function_text(obj, rename, seen)
        return seen['F', obj.name]
    if isinstance(obj, sympy.Basic):
        return 'E:' + operator_cache.canonical_text(obj, _Roles(rename))
    if isinstance(obj, (types.FunctionType, types.MethodType, functools.partial)):
        return _function(obj, rename, found, seen)
    if _ours(type(obj)) and hasattr(obj, '__dict__'):
        if ('O', id(obj)) in seen:
            return f"ref:{type(obj).__qualname__}"
        seen['O', id(obj)] = obj        # (held: an id is not reused meanwhile)
        fields = {k: v for k, v in vars(obj).items() if k not in SKIPPED}
        return f"{type(obj).__qualname__}{_text(fields, rename, found, seen)}"
    raise Undescribable(f"{type(obj).__qualname__} {obj!r:.60}")


def _function_text(obj, rename, seen):
    return (f"F:{type(obj).__name__}:{rename(obj.name)}:{obj.shape}:"
            f"{tuple(obj.halo)}:{tuple(obj.padding)}:{np.dtype(obj.dtype)}:"
            f"{obj.space_order}:"
            f"{','.join(_text(d, rename, {}, seen) for d in obj.dimensions)}")


def _ours(thing):
    return (getattr(thing, '__module__', None) or '').split('.')[0] == 'devito_ml'


def _function(function, rename, found, seen):
    """A function of devito_ml's (its source is in the package digest): its code
    and what it closes over. A user's function is undescribable: its source may
    change from one process to the next."""
    if isinstance(function, types.MethodType):
        return 'method' + _text((function.__func__, function.__self__), rename, found,
                                seen)
    if isinstance(function, functools.partial):
        return 'partial' + _text((function.func, function.args, function.keywords),
                                 rename, found, seen)
    if not _ours(function):
        raise Undescribable(f"the function {function.__qualname__} of "
                            f"{function.__module__}")
    code = function.__code__
    constants = [c for c in code.co_consts if not hasattr(c, 'co_code')]
    cells = [cell.cell_contents for cell in function.__closure__ or ()]
    return (f"fn:{function.__qualname__}:"
            f"{hashlib.sha1(code.co_code).hexdigest()}:{code.co_names}:"
            f"{_text(constants, rename, found, seen)}:"
            f"{_text(cells, rename, found, seen)}")


def _dimension(dimension, rename):
    extent = getattr(dimension, '_default_value', None)
    bounds = (dimension.symbolic_min, dimension.symbolic_max) \
        if type(dimension).__name__ != 'Dimension' else ()
    bounds = ','.join(operator_cache.canonical_text(sympy.sympify(b), _Roles(rename))
                      for b in bounds)
    return f"D:{type(dimension).__name__}:{rename(dimension.name)}:{extent}:{bounds}"


@functools.lru_cache(maxsize=None)
def _package_digest():
    """A digest of devito_ml's source: any change to it may change equations."""
    root = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob('*.py')):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def describe(pieces, options):
    """The record key of a unit: a digest of its description ``pieces`` (texts
    from :func:`fingerprint`), devito_ml's source, Devito's version and
    configuration and the operator ``options`` (compiler, flags, vector width)."""
    header = [str(RECORD_VERSION), _package_digest(), devito.__version__,
              repr(sorted(options.items())),
              repr(sorted((k, str(v)) for k, v in configuration.items()
                          if k in ('platform', 'compiler', 'opt', 'language')))]
    return hashlib.sha256('\n'.join(header + list(pieces)).encode()).hexdigest()


def remember(key, source, owners):
    """Store what the unit of record ``key`` compiled to: ``source``, a
    :class:`~devito_ml.compiled.KernelSource`, with ``owners`` (``{owner:
    canonical}``, None for a unit under its own names)."""
    if not operator_cache.enabled():
        return
    canonical = {v: k for k, v in (owners or {}).items()}
    roles = []
    for role, symbol in source.symbols.items():
        if not hasattr(type(symbol), 'data'):
            continue
        actual = symbol.name
        owner = _owner_of(role, canonical) if source.names else None
        rest = role[len(owner):] if owner else role
        if (canonical[owner] + rest if owner else rest) != actual:
            return         # a name not made of its owner: left to derivation
        roles.append([role, owner, rest])
    record = dict(version=RECORD_VERSION, key=source.key,
                  kernel_name=source.kernel_name, size=source.size, roles=roles,
                  owners=list(source.owners), names=bool(source.names))
    operator_cache.write(f"{key}.unit", json.dumps(record).encode())


def _owner_of(role, canonical):
    """The canonical owner a role name starts with (the longest), or None."""
    best = None
    for owner in canonical:
        if (role == owner or role.startswith(owner + '_')) and \
                (best is None or len(owner) > len(best)):
            best = owner
    return best


def recall(key, owners, found, resolve):
    """The record of ``key`` for a unit of ``owners`` (``{owner: canonical}``):
    ``(record, {actual name: role}, {role: Function or Constant})``, or None
    (none stored, unreadable, or naming something the unit does not have).

    ``found`` holds the Functions and Constants the description met; ``resolve``
    is asked for any other (an optimizer's Constants are made on demand)."""
    if not operator_cache.enabled():
        return None
    try:
        with open(operator_cache.path(f"{key}.unit"), 'rb') as handle:
            record = json.loads(handle.read())
        if record.get('version') != RECORD_VERSION:
            return None
        actual_of = {v: k for k, v in (owners or {}).items()}
        names, symbols = {}, {}
        for role, owner, rest in record['roles']:
            actual = actual_of[owner] + rest if owner else rest
            symbol = found.get(actual) or resolve(actual)
            if symbol is None:
                return None
            symbols[role] = symbol
            if record['names']:
                names[actual] = role
        record['owners'] = {c: actual_of[c] for c in record['owners']}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        operator_cache.remove(f"{key}.unit")
        warnings.warn(f"devito_ml operator cache: the unit record `{key}.unit` could "
                      f"not be read ({type(error).__name__}: {error}); removed",
                      RuntimeWarning, stacklevel=2)
        return None
    return record, names, symbols


class RecordMismatch(RuntimeError):
    """A recalled unit whose derived equations give another kernel."""


def check(recalled, derived):
    """Raise :class:`RecordMismatch` unless the ``recalled`` source is the one
    ``derived`` from the unit's equations: same kernel, same layers standing for
    its roles, same Functions bound to the same parameters."""
    bound = {role: symbol for role, symbol in derived.symbols.items()
             if hasattr(type(symbol), 'data')}
    if recalled.key != derived.key or recalled.kernel_name != derived.kernel_name or \
            list(recalled.owners.items()) != list(derived.owners.items()) or \
            {r: s.name for r, s in recalled.symbols.items()} != \
            {r: s.name for r, s in bound.items()} or \
            any(recalled.symbols[r] is not bound[r] for r in bound):
        raise RecordMismatch(f"`{recalled.name}`: its unit record recalls kernel "
                             f"{recalled.kernel_name}, its equations give "
                             f"{derived.kernel_name}: the description misses what "
                             "tells them apart")
