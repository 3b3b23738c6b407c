"""Checks of a data set given to a net: shapes, dtype, labels, finiteness."""

import numpy as np

from devito_ml.errors import NonFiniteError

__all__ = ['checked_data']


def checked_data(net, owner, role, data, check_finite=False):
    """``data = (images, labels)`` as arrays that ``net`` can run, or an error
    naming ``owner``, ``role`` and what is wrong.

    Images must be NCHW (or ``(N, features)``) in the net's dtype and sample
    shape, labels one per image; with ``check_finite``, a NaN or an infinity in the
    images is a :class:`NonFiniteError` naming the first sample that holds one.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{owner}: `{role}` must be a pair (images, labels), got "
                        f"{type(data).__name__}")
    images, labels = data
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{owner}: `{role}` images must be a numpy array, got "
                        f"{type(images).__name__}")
    try:
        labels = np.asarray(labels)
    except ValueError as error:     # ragged lists
        raise TypeError(f"{owner}: `{role}` labels must be an array: {error}") from None
    sample = tuple(net.input_size[1:])
    if images.ndim != len(sample) + 1 or images.shape[1:] != sample:
        raise ValueError(f"{owner}: `{role}` images must have shape (N,) + {sample}, "
                         f"got {images.shape}")
    if images.dtype != net.dtype:
        raise TypeError(f"{owner}: `{role}` images must be {net.dtype} like the net, "
                        f"got {images.dtype} (convert with .astype)")
    if len(images) == 0:
        raise ValueError(f"{owner}: `{role}` holds no samples")
    if labels.ndim == 0 or len(labels) != len(images):
        raise ValueError(f"{owner}: `{role}` has {len(images)} images but "
                         f"{labels.shape} labels")
    if labels.dtype.kind not in 'iuf':
        raise TypeError(f"{owner}: `{role}` labels must be integers or "
                        f"probabilities, got {labels.dtype}")
    if check_finite:
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            raise NonFiniteError(f"{owner}: `{role}` image {int(np.argmax(bad))} holds "
                                 f"NaN or infinite values ({int(bad.sum())} images "
                                 "in all)")
    return images, labels
