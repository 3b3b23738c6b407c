"""Reader for the IDX format of MNIST (raw or gzip-compressed files on disk)."""

import gzip
import math
import os

import numpy as np

__all__ = ['read_idx', 'load_mnist', 'IDXFormatError']

# Third byte of the magic number -> big-endian element type.
_TYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file."""


def read_idx(path):
    """Read an IDX file (``.gz`` or raw) into a numpy array.

    Parameters
    ----------
    path : str
        The file; gzip is recognised by its first two bytes, not by its name.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    IDXFormatError
        Bad magic number, unknown element type, or fewer bytes than the header
        announces.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_idx: no such file `{path}`")
    with open(path, 'rb') as handle:
        raw = handle.read()
    if raw[:2] == b'\x1f\x8b':
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise IDXFormatError(f"read_idx: `{path}` is a truncated or corrupt gzip "
                                 f"file ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise IDXFormatError(f"read_idx: `{path}` is not an IDX file (magic number "
                             f"{raw[:4].hex() or 'missing'}, expected 0000<type><ndim>)")
    dtype, ndim = np.dtype(_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"read_idx: `{path}` is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    expected = header + dtype.itemsize * math.prod(shape)    # exact: no overflow
    if len(raw) != expected:
        raise IDXFormatError(f"read_idx: `{path}` holds {len(raw)} bytes, its header "
                             f"{shape} announces {expected}")
    array = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder('='))


def load_mnist(directory, kind='train', dtype=np.float32):
    """MNIST images (NCHW, scaled to [0, 1]) and labels from IDX files in ``directory``.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, with or without
    ``.gz``.
    """
    prefix = {'train': 'train', 'test': 't10k'}[kind]

    def find(stem):
        for name in (stem, stem + '.gz'):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"load_mnist: neither `{stem}` nor `{stem}.gz` in "
                                f"`{directory}`")
    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if images.dtype != np.uint8 or labels.dtype.kind not in 'iu':
        raise IDXFormatError(f"load_mnist: images must be unsigned bytes and labels "
                             f"integers, got {images.dtype} and {labels.dtype}")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXFormatError(f"load_mnist: images {images.shape} and labels "
                             f"{labels.shape} do not pair up")
    return (images.astype(dtype) / 255)[:, None], labels.astype(np.int64)
