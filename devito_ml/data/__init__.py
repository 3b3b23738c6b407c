"""Data: the embedded digits set (no download), MNIST IDX files, mini-batches."""

from devito_ml.data.batches import Batches
from devito_ml.data.digits import digits_split, load_digits
from devito_ml.data.idx import IDXFormatError, load_mnist, read_idx

__all__ = ['load_digits', 'digits_split', 'read_idx', 'load_mnist', 'IDXFormatError',
           'Batches']
