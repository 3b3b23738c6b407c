"""Data: the embedded digits, IDX files written here (raw and gzip, and broken ones),
and the batcher's seeded order and partial last batch."""

import gzip
import struct

import numpy as np
import pytest

from devito_ml.data import (Batches, IDXFormatError, digits_split, load_digits,
                            load_mnist, read_idx)


def write_idx(path, array, compress=False):
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b''.join(struct.pack('>i', n)
                                                        for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
    with open(path, 'wb') as handle:
        handle.write(gzip.compress(payload) if compress else payload)
    return path


@pytest.mark.parametrize('compress', [False, True])
@pytest.mark.parametrize('dtype', [np.uint8, np.int32, np.float32])
def test_read_idx_round_trips(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 4) * 7 % 251).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / 'a.idx', array, compress)
    read = read_idx(str(path))
    assert read.dtype == dtype and np.array_equal(read, array)


def test_load_mnist_reads_the_standard_file_names(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    write_idx(tmp_path / 't10k-images-idx3-ubyte.gz', images, compress=True)
    write_idx(tmp_path / 't10k-labels-idx1-ubyte', labels)
    x, y = load_mnist(str(tmp_path), 'test')
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and x.max() <= 1
    assert np.allclose(x[:, 0] * 255, images) and y.tolist() == [3, 1, 4, 1, 5]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.idx'):
        read_idx(str(tmp_path / 'nope.idx'))
    with pytest.raises(FileNotFoundError, match='train-images-idx3-ubyte'):
        load_mnist(str(tmp_path))


def test_bad_magic_number(tmp_path):
    path = tmp_path / 'bad.idx'
    path.write_bytes(b'\x01\x02\x08\x01' + b'\x00' * 8)
    with pytest.raises(IDXFormatError, match='not an IDX file.*01020801'):
        read_idx(str(path))


@pytest.mark.parametrize('compress', [False, True])
def test_truncated_file(tmp_path, compress):
    path = write_idx(tmp_path / 'full.idx', np.zeros((4, 5), np.uint8))
    data = path.read_bytes()[:-3]
    cut = tmp_path / 'cut.idx'
    cut.write_bytes(gzip.compress(data)[:-4] if compress else data)
    with pytest.raises(IDXFormatError, match='truncated|announces'):
        read_idx(str(cut))


def test_digits_are_embedded_and_split_by_seed():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert set(labels.tolist()) == set(range(10))
    (a, la), (b, lb) = digits_split(seed=0)
    (c, _), _ = digits_split(seed=0)
    assert len(a) + len(b) == 1797 and np.array_equal(a, c)
    assert not np.array_equal(a, digits_split(seed=1)[0][0])


def test_batches_keep_the_last_partial_batch_and_repeat_by_seed():
    images, labels = np.arange(10)[:, None], np.arange(10)
    data = Batches(images, labels, batch_size=4, seed=3)
    first = [y.tolist() for _, y in data.epoch(0)]
    assert [len(y) for y in first] == [4, 4, 2] and len(data) == 3
    assert sorted(sum(first, [])) == list(range(10))
    assert first == [y.tolist() for _, y in data.epoch(0)]
    assert first != [y.tolist() for _, y in data.epoch(1)]
    in_order = Batches(images, labels, batch_size=4, shuffle=False)
    assert [y.tolist() for _, y in in_order.epoch(5)][0] == [0, 1, 2, 3]
