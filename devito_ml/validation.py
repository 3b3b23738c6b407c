"""Shared argument checks: every error names the layer, the argument, what was
expected and what came."""

import numbers
import re

import numpy as np

__all__ = ['ShapeError', 'LayerArgumentError', 'as_pair', 'check_positive_ints',
           'check_size', 'check_dtype', 'check_array', 'check_float_dtype', 'check_name',
           'check_flag', 'non_finite']

_C_KEYWORDS = frozenset('''auto break case char const continue default do double else
enum extern float for goto if inline int long register restrict return short signed
sizeof static struct switch typedef union unsigned void volatile while'''.split())


class LayerArgumentError(ValueError):
    """A layer or net was given an argument it cannot use."""


class ShapeError(LayerArgumentError):
    """A shape does not match what a layer or net expects."""


def _owner(layer):
    return f"{type(layer).__name__} `{layer}`" if layer is not None else "argument"


def as_pair(layer, argument, value, minimum=0):
    """Normalise an int or a pair of ints to a pair, checking the bound."""
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) for v in pair) \
            or any(v < minimum for v in pair):
        raise LayerArgumentError(
            f"{_owner(layer)}: `{argument}` must be an int or a pair of ints "
            f">= {minimum}, got {value!r}")
    return tuple(int(v) for v in pair)


def check_positive_ints(layer, argument, value, length):
    """Check that ``value`` is a tuple of ``length`` positive ints."""
    try:
        size = tuple(value)
    except TypeError:
        size = None
    if size is None or len(size) != length or \
            not all(isinstance(v, numbers.Integral) and v > 0 for v in size):
        raise ShapeError(
            f"{_owner(layer)}: `{argument}` must be {length} positive ints, "
            f"got {value!r}")
    return tuple(int(v) for v in size)


def check_size(layer, argument, expected, received):
    """Raise a ShapeError unless two shapes agree."""
    if tuple(expected) != tuple(received):
        raise ShapeError(
            f"{_owner(layer)}: `{argument}` must have shape {tuple(expected)}, "
            f"got {tuple(received)}")


def check_dtype(layer, argument, expected, received):
    """Raise a TypeError unless two dtypes agree."""
    if np.dtype(expected) != np.dtype(received):
        raise TypeError(
            f"{_owner(layer)}: `{argument}` must have dtype {np.dtype(expected)}, "
            f"got {np.dtype(received)}")


def check_array(layer, argument, array, shape, dtype):
    """Check a numpy array given by a user against a shape and a dtype.

    Only the leading (batch) extent may be smaller than ``shape[0]``.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{_owner(layer)}: `{argument}` must be a numpy array, "
                        f"got {type(array).__name__}")
    if array.ndim != len(shape) or tuple(array.shape[1:]) != tuple(shape[1:]) \
            or not 1 <= array.shape[0] <= shape[0]:
        raise ShapeError(
            f"{_owner(layer)}: `{argument}` must have shape (b,) + {tuple(shape[1:])} "
            f"with 1 <= b <= {shape[0]}, got {array.shape}")
    check_dtype(layer, argument, dtype, array.dtype)


def check_float_dtype(layer, argument, dtype):
    """float32 or float64 as a numpy dtype, else a TypeError naming the culprit."""
    try:
        value = np.dtype(dtype)
    except TypeError:
        value = None
    if value not in (np.float32, np.float64):
        raise TypeError(f"{_owner(layer)}: `{argument}` must be float32 or float64, "
                        f"got {dtype!r}")
    return value


def check_flag(layer, argument, value):
    """A bool (numpy's too), else a LayerArgumentError naming the culprit."""
    if not isinstance(value, (bool, np.bool_)):
        raise LayerArgumentError(f"{_owner(layer)}: `{argument}` must be True or False, "
                                 f"got {value!r}")
    return bool(value)


def check_name(layer, argument, name):
    """A name that can prefix C identifiers (letters, digits, ``_``; not a keyword)."""
    if not isinstance(name, str) or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', name) \
            or name in _C_KEYWORDS:
        owner = type(layer).__name__ if layer is not None else 'Net'
        raise LayerArgumentError(
            f"{owner}: `{argument}` must be a "
            f"C identifier (letters, digits and _, not starting with a digit, not a C "
            f"keyword), got {name!r}")
    return name


def non_finite(arrays):
    """The names, sorted, of the float arrays of ``{name: array}`` that hold NaN
    or an infinity (integer arrays are always finite).

    Examples
    --------
    >>> import numpy as np
    >>> non_finite({'W': np.array([1.0, np.nan]), 'b': np.zeros(2), 'n': np.array(3)})
    ['W']
    """
    return sorted(name for name, value in arrays.items()
                  if np.asarray(value).dtype.kind in 'fc'
                  and not np.all(np.isfinite(value)))
