"""scikit-learn's handwritten digits (1,797 8x8 images), shipped in the package."""

import os

import numpy as np

__all__ = ['load_digits', 'digits_split']

_PATH = os.path.join(os.path.dirname(__file__), 'digits.npz')


def load_digits(dtype=np.float32):
    """Load the digits as NCHW images scaled to [0, 1] and integer labels.

    Returns
    -------
    images : ndarray, shape (1797, 1, 8, 8)
    labels : ndarray of int64, shape (1797,)

    Examples
    --------
    >>> images, labels = load_digits()
    >>> images.shape, labels[:5].tolist()
    ((1797, 1, 8, 8), [0, 1, 2, 3, 4])
    """
    with np.load(_PATH) as archive:
        images = archive['images'].astype(dtype)[:, None] / 16
        labels = archive['labels'].astype(np.int64)
    return images, labels


def digits_split(test_fraction=0.2, seed=0, dtype=np.float32):
    """The digits split into train and test sets by a seeded permutation.

    Returns
    -------
    (train_images, train_labels), (test_images, test_labels)

    Examples
    --------
    >>> (train, _), (test, _) = digits_split()
    >>> len(train), len(test)
    (1438, 359)
    """
    images, labels = load_digits(dtype)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = len(labels) - int(round(test_fraction * len(labels)))
    train, test = order[:cut], order[cut:]
    return (images[train], labels[train]), (images[test], labels[test])
