"""A catalogue of bad input, as an adversarial user would try it: through the Python
API, the command line and files on disk. Each case asserts the exception type, that
its message names the culprit, and that nothing on disk was changed by the failure.
No case may end in a segfault, a hang, a raw traceback from a dependency or
silently wrong numbers."""

import gzip
import os
import re
import zipfile

import numpy as np
import pytest
import torch

from devito_ml import (Add, BatchNorm, Conv, Dropout, Flat, FullyConnected,
                       FullyConnectedSoftmax, Input, LayerArgumentError, MaxPooling, Net,
                       ReLU, ShapeError)
from devito_ml.cli import main
from devito_ml.data import load_mnist
from devito_ml.data.idx import IDXFormatError, read_idx
from devito_ml.errors import CheckpointError, NonFiniteError
from devito_ml.interop import from_torch, load_torch_state_dict
from devito_ml.interop.convert import UnsupportedModuleError
from devito_ml.optim import SGD, Adam
from devito_ml.training import fit, load_checkpoint, save_checkpoint, History

BATCH, SAMPLE = 4, (1, 6, 6)


def small_net(**options):
    layers = [Conv((2, 3, 3), padding=1, activation=ReLU()), MaxPooling(2), Flat(),
              FullyConnected(3)]
    return Net(layers, dtype=np.float64, batch_size=BATCH, input_shape=SAMPLE, seed=0,
               **options)


@pytest.fixture(scope='module')
def net():
    return small_net()


@pytest.fixture(scope='module')
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((10,) + SAMPLE), rng.integers(0, 3, 10)


@pytest.fixture
def checkpoint(tmp_path, net):
    """A good checkpoint of ``net`` with SGD, as written by ``fit``."""
    path = tmp_path / 'checkpoint.npz'
    save_checkpoint(str(path), net, SGD(net, lr=0.1, momentum=0.9), 1, History())
    return path


def x_batch(dtype=np.float64, batch=BATCH):
    return np.zeros((batch,) + SAMPLE, dtype)


def residual_of_two_shapes():
    x = Input((1, 6, 6))
    return Net(Add()(Conv((2, 3, 3), padding=1)(x), x), batch_size=2)


# -- the Python API: layers, nets, optimizers --------------------------------------------

API = {
    'conv kernel not three ints': (lambda: Conv((2, 3)), ShapeError, 'kernel_size'),
    'conv zero stride': (lambda: Conv((2, 3, 3), stride=0), LayerArgumentError, 'stride'),
    'conv negative padding': (lambda: Conv((2, 3, 3), padding=-1), LayerArgumentError,
                              'padding'),
    'conv zero dilation': (lambda: Conv((2, 3, 3), dilation=0), LayerArgumentError,
                           'dilation'),
    'conv groups not dividing': (lambda: Conv((3, 3, 3), groups=2), LayerArgumentError,
                                 'groups'),
    'conv kernel larger than padded input': (
        lambda: Conv((2, 9, 9), input_size=(1, 1, 6, 6), padding=1), ShapeError,
        r'kernel \(9, 9\).*does not fit input \(6, 6\)'),
    'conv float kernel size': (lambda: Conv((2, 3.5, 3)), ShapeError, 'kernel_size'),
    'conv activation not callable': (lambda: Conv((2, 3, 3), activation='relu'),
                                     TypeError, 'activation'),
    'pooling window larger than input': (
        lambda: MaxPooling(8, input_size=(1, 1, 6, 6)), ShapeError, 'does not fit'),
    'pooling padding above half the window': (
        lambda: MaxPooling(2, input_size=(1, 1, 6, 6), padding=2), LayerArgumentError,
        'padding'),
    'dense weights not matching input': (
        lambda: FullyConnected((3, 5), (2, 4)), ShapeError, 'weight_size|input_size'),
    'softmax layer given an activation': (
        lambda: FullyConnectedSoftmax((3, 4), (2, 4), activation=ReLU()),
        LayerArgumentError, 'activation'),
    'dropout probability above one': (lambda: Dropout(1.5), LayerArgumentError, '`p`'),
    'dropout probability nan': (lambda: Dropout(float('nan')), LayerArgumentError, '`p`'),
    'batchnorm negative eps': (lambda: BatchNorm(eps=-1.0), LayerArgumentError, 'eps'),
    'batchnorm momentum above one': (lambda: BatchNorm(momentum=2.0), LayerArgumentError,
                                     'momentum'),
    'layer name not a C identifier': (
        lambda: Net([Conv((2, 3, 3), name='conv-1'), Flat(), FullyConnected(3)],
                    batch_size=2, input_shape=SAMPLE), LayerArgumentError, 'conv-1'),
    'net name a C keyword': (lambda: small_net(name='int'), LayerArgumentError, "'int'"),
    'same layer twice in one net': (
        lambda: Net([FullyConnected((4, 4), (2, 4))] * 2), ValueError, 'fc|twice|more'),
    'net dtype an integer': (lambda: small_net(dtype=np.int32) if False else
                             Net([FullyConnected((3, 4), (2, 4))], dtype=np.int32),
                             TypeError, 'dtype'),
    'net batch size zero': (
        lambda: Net([FullyConnected(3)], batch_size=0, input_shape=(4,)), ShapeError,
        'batch'),
    'net input shape of the wrong rank': (
        lambda: Net([Conv((2, 3, 3)), Flat(), FullyConnected(3)], batch_size=2,
                    input_shape=(6, 6)), ShapeError, 'shape.*got \\(6, 6\\)'),
    'net loss unknown': (lambda: Net([FullyConnected((3, 4), (2, 4))], loss='hinge'),
                         ValueError, 'hinge'),
    'layers per operator zero': (
        lambda: small_net(layers_per_operator=0), ShapeError, 'layers_per_operator'),
    'residual sum of two shapes': (lambda: residual_of_two_shapes(), ShapeError,
                                   'Add'),
    'graph of two inputs': (
        lambda: Net(Add()(Input((1, 6, 6)), Input((1, 6, 6))), batch_size=2),
        LayerArgumentError, 'one `Input`'),
}


@pytest.mark.parametrize('case', sorted(API))
def test_api_refuses_bad_arguments(case):
    action, error, message = API[case]
    with pytest.raises(error, match=message):
        action()


RUN = {
    'forward of a list': (lambda net, opt: net.forward([[0.0]]), TypeError, 'x'),
    'forward of the wrong shape': (lambda net, opt: net.forward(np.zeros((4, 1, 5, 6))),
                                   ShapeError, 'x'),
    'forward of the wrong dtype': (lambda net, opt: net.forward(x_batch(np.float32)),
                                   TypeError, 'dtype'),
    'forward of a batch above the allocated one': (
        lambda net, opt: net.forward(x_batch(batch=BATCH + 1)), ShapeError, 'b <= 4'),
    'labels out of range': (
        lambda net, opt: net.train_step(x_batch(), np.array([0, 1, 2, 3]), opt),
        ShapeError, r'\[0, 3\)'),
    'labels as strings': (
        lambda net, opt: net.train_step(x_batch(), ['a', 'b', 'c', 'd'], opt),
        ShapeError, 'targets'),
    'labels of the wrong count': (
        lambda net, opt: net.train_step(x_batch(), np.array([0, 1]), opt), ShapeError,
        'targets'),
    'optimizer of another net': (
        lambda net, opt: net.train_step(x_batch(), np.zeros(BATCH, int),
                                        SGD(small_net(), lr=0.1)), ValueError,
        'another net'),
    'nan learning rate set after construction': (
        lambda net, opt: setattr(opt, 'lr', float('nan')), ValueError, '`lr`'),
    'string momentum': (lambda net, opt: setattr(opt, 'momentum', '0.9'), TypeError,
                        '`momentum`'),
    'adam betas not a pair': (lambda net, opt: Adam(net, betas=0.9), TypeError, 'betas'),
    'state dict missing a parameter': (
        lambda net, opt: net.load_state_dict({'conv1_W': net.parameters()['conv1_W']}),
        KeyError, 'missing'),
    'state dict of the wrong shape': (
        lambda net, opt: net.load_state_dict({**net.state_dict(),
                                              'fc1_W': np.zeros((2, 2))}),
        ShapeError, 'fc1_W'),
    'state dict holding nan': (
        lambda net, opt: net.load_state_dict({**net.state_dict(),
                                              'fc1_b': np.full(3, np.nan)}),
        ValueError, 'fc1_b'),
    'torch module that cannot be converted': (
        lambda net, opt: from_torch(torch.nn.Sequential(torch.nn.LSTM(4, 4)), (4,), 2),
        UnsupportedModuleError, 'LSTM'),
    'torch state dict of another model': (
        lambda net, opt: load_torch_state_dict(net, {'weight': torch.zeros(3)}),
        KeyError, 'weight'),
}


@pytest.mark.parametrize('case', sorted(RUN))
def test_running_refuses_bad_input_and_changes_nothing(net, case):
    optimizer = SGD(net, lr=0.1)
    before = net.state_dict()
    action, error, message = RUN[case]
    with pytest.raises(error, match=message):
        action(net, optimizer)
    for name, value in net.state_dict().items():
        assert np.array_equal(value, before[name], equal_nan=True), name


# -- training ----------------------------------------------------------------------------

FIT = {
    'empty training set': (lambda d: dict(train=(d[0][:0], d[1][:0])), ValueError,
                           '`train` holds no samples'),
    'empty test set': (lambda d: dict(train=d, test=(d[0][:0], d[1][:0])), ValueError,
                       '`test` holds no samples'),
    'images and labels of different lengths': (
        lambda d: dict(train=(d[0], d[1][:5])), ValueError, '10 images'),
    'images not an array': (lambda d: dict(train=(d[0].tolist(), d[1])), TypeError,
                            'images must be a numpy array'),
    'images of another dtype': (lambda d: dict(train=(d[0].astype(np.float32), d[1])),
                                TypeError, 'float64'),
    'images of another sample shape': (lambda d: dict(train=(d[0][:, :, :5], d[1])),
                                       ValueError, r'\(N,\) \+ \(1, 6, 6\)'),
    'train not a pair': (lambda d: dict(train=d[0]), TypeError, 'pair'),
    'labels given as a list': (lambda d: dict(train=(d[0], list(d[1]) + [7])),
                               ValueError, 'labels'),
    'a nan pixel, checked': (
        lambda d: dict(train=(np.where(np.arange(10)[:, None, None, None] == 7, np.nan,
                                       d[0]), d[1]), check_finite=True),
        NonFiniteError, 'image 7'),
    'negative epochs': (lambda d: dict(train=d, epochs=-1), ValueError, 'epochs'),
    'epochs not an int': (lambda d: dict(train=d, epochs=2.5), ValueError, 'epochs'),
    'a schedule that returns nan': (
        lambda d: dict(train=d, lr_schedule=lambda epoch: float('nan')), ValueError,
        '`lr` must be finite'),
}


@pytest.mark.parametrize('case', sorted(FIT))
def test_fit_refuses_bad_data_before_training(net, data, checkpoint, case):
    written = checkpoint.read_bytes()
    arguments, error, message = FIT[case]
    arguments = dict(dict(epochs=2), **arguments(data))
    with pytest.raises(error, match=message):
        fit(net, SGD(net, lr=0.1), progress=False, log=None,
            checkpoint=str(checkpoint), resume=False, **arguments)
    assert checkpoint.read_bytes() == written


def test_a_nan_pixel_stops_training_at_its_step_and_keeps_the_checkpoint(data, tmp_path):
    net = small_net()
    images = data[0].copy()
    images[3, 0, 2, 2] = np.nan
    path = tmp_path / 'checkpoint.npz'
    clean = (np.delete(images, 3, axis=0), np.delete(data[1], 3))
    fit(net, SGD(net, lr=0.1), clean, epochs=1, progress=False, log=None,
        checkpoint=str(path))
    written = path.read_bytes()
    with pytest.raises(NonFiniteError, match=r'epoch 2, step \d of 3.*checkpoint'):
        fit(net, SGD(net, lr=0.1), (images, data[1]), epochs=2, progress=False,
            log=None, checkpoint=str(path), resume=True)
    assert path.read_bytes() == written


def test_a_diverging_run_is_never_saved(data, tmp_path):
    """Huge learning rate: parameters overflow to inf, then the loss is NaN."""
    net = small_net()
    path = tmp_path / 'checkpoint.npz'
    with pytest.raises(NonFiniteError):
        fit(net, SGD(net, lr=1e300), data, epochs=3, progress=False, log=None,
            checkpoint=str(path))
    assert not path.exists() or all(np.all(np.isfinite(v)) for v in
                                    np.load(path).values() if v.dtype.kind == 'f')


def test_no_non_finite_checkpoint_is_written(net, checkpoint):
    written = checkpoint.read_bytes()
    optimizer = SGD(net, lr=0.1, momentum=0.9)
    optimizer.buffers['fc1_W'].data[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match='fc1_W_momentum'):
        save_checkpoint(str(checkpoint), net, optimizer, 2, History())
    optimizer.buffers['fc1_W'].data[0, 0] = 0
    assert checkpoint.read_bytes() == written


def test_temporary_files_of_killed_runs_are_removed(net, checkpoint):
    dead = checkpoint.parent / '.checkpoint-999999999-abc.npz'   # no such process
    live = checkpoint.parent / f'.checkpoint-{os.getpid()}-abc.npz'
    dead.write_bytes(b'partial')
    live.write_bytes(b'being written')
    save_checkpoint(str(checkpoint), net, SGD(net, lr=0.1), 1, History())
    assert not dead.exists() and live.exists()


# -- files on disk -----------------------------------------------------------------------

def truncated(path):
    path.write_bytes(path.read_bytes()[:200])


def foreign_npz(path):
    np.savez(path.open('wb'), weights=np.zeros(3))


def pickled_npz(path):
    np.savez(path.open('wb'), epoch=np.array([object()], dtype=object),
             history=np.array('{}'))


def zip_of_text(path):
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('epoch.npy', 'not an array')


def nan_parameter(path):
    arrays = dict(np.load(path))
    arrays['param/fc1_W'] = np.full_like(arrays['param/fc1_W'], np.nan)
    np.savez(path.open('wb'), **arrays)


def other_optimizer(path, net):
    save_checkpoint(str(path), net, Adam(net), 1, History())


def other_model(path):
    other = Net([Flat(), FullyConnected(3)], dtype=np.float64, batch_size=BATCH,
                input_shape=SAMPLE, seed=0)
    save_checkpoint(str(path), other, SGD(other, lr=0.1, momentum=0.9), 1, History())


def broken_history(path):
    arrays = dict(np.load(path))
    arrays['history'] = np.array('{not json')
    np.savez(path.open('wb'), **arrays)


CHECKPOINTS = {
    'empty file': (lambda path, net: path.write_bytes(b''), 'cannot be read'),
    'truncated file': (lambda path, net: truncated(path), 'cannot be read'),
    'random bytes': (lambda path, net: path.write_bytes(os.urandom(1000)),
                     'cannot be read'),
    'zip holding text': (lambda path, net: zip_of_text(path),
                         'cannot be read|not a devito_ml checkpoint'),
    'npz of something else': (lambda path, net: foreign_npz(path),
                              'not a devito_ml checkpoint'),
    'npz holding pickled objects': (lambda path, net: pickled_npz(path),
                                    'cannot be read'),
    'nan parameter': (lambda path, net: nan_parameter(path), 'param/fc1_W'),
    'another optimizer': (lambda path, net: other_optimizer(path, net),
                          'optimizer `adam`, this is `sgd`'),
    'another model': (lambda path, net: other_model(path), 'missing.*conv1_W'),
    'history not json': (lambda path, net: broken_history(path), 'history'),
}


@pytest.mark.parametrize('case', sorted(CHECKPOINTS))
def test_bad_checkpoints_are_named_and_load_nothing(net, checkpoint, case):
    spoil, message = CHECKPOINTS[case]
    spoil(checkpoint, net)
    written = checkpoint.read_bytes()
    optimizer = SGD(net, lr=0.1, momentum=0.9)
    before = net.state_dict(), optimizer.state_dict()
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(str(checkpoint), net, optimizer)
    assert str(checkpoint) in str(error.value)
    assert checkpoint.read_bytes() == written
    for mine, theirs in zip(before, (net.state_dict(), optimizer.state_dict())):
        for name, value in mine.items():
            assert np.array_equal(value, theirs[name]), name


def idx_file(path, header, payload=b'', compress=False):
    raw = header + payload
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return str(path)


IDX = {
    'header sizes that overflow': (
        lambda p: idx_file(p, b'\x00\x00\x08\x03' + b'\xff\xff\xff\xff' * 3),
        'announces'),
    'wrong magic number': (lambda p: idx_file(p, b'PK\x03\x04'), 'not an IDX file'),
    'unknown element type': (lambda p: idx_file(p, b'\x00\x00\x07\x01\x00\x00\x00\x01',
                                                b'\x00'), 'not an IDX file'),
    'truncated inside the header': (lambda p: idx_file(p, b'\x00\x00\x08\x03\x00\x00'),
                                    'truncated inside its header'),
    'fewer bytes than announced': (
        lambda p: idx_file(p, b'\x00\x00\x08\x01\x00\x00\x00\x09', b'\x00' * 4),
        'announces'),
    'corrupt gzip': (lambda p: (p.write_bytes(gzip.compress(b'\x00' * 100)[:12]),
                                str(p))[1], 'truncated or corrupt gzip'),
}


@pytest.mark.parametrize('case', sorted(IDX))
def test_bad_idx_files_are_named(tmp_path, case):
    make, message = IDX[case]
    path = make(tmp_path / 'train-images-idx3-ubyte')
    with pytest.raises(IDXFormatError, match=message) as error:
        read_idx(path)
    assert 'train-images-idx3-ubyte' in str(error.value)


def test_mnist_images_that_are_not_bytes_are_refused(tmp_path):
    idx_file(tmp_path / 'train-images-idx3-ubyte',
             b'\x00\x00\x0d\x03' + b'\x00\x00\x00\x01' * 3, b'\x00' * 4)
    idx_file(tmp_path / 'train-labels-idx1-ubyte', b'\x00\x00\x08\x01\x00\x00\x00\x01',
             b'\x00')
    with pytest.raises(IDXFormatError, match='unsigned bytes'):
        load_mnist(str(tmp_path))


# -- the command line --------------------------------------------------------------------

CLI = {
    'nan learning rate': (['--lr', 'nan'], '`lr` must be finite'),
    'infinite momentum': (['--optimizer', 'sgd', '--momentum', 'inf'],
                          '`momentum` must be finite'),
    'negative weight decay': (['--weight-decay', '-1'], '`weight_decay` must be >= 0'),
    'nan weight decay': (['--weight-decay', 'nan'], '`weight_decay` must be finite'),
    'zero batch size': (['--batch-size', '0'], '--batch-size'),
    'output folder that is a file': (['--out', '{file}'], 'out|exists|directory'),
    'resume from a corrupted checkpoint': (['--resume'], 'cannot be read'),
    'resume with another optimizer': (['--resume', '--optimizer', 'sgd'],
                                      'optimizer `adam`, this is `sgd`'),
}


@pytest.mark.parametrize('case', sorted(CLI))
def test_command_line_errors_are_one_line_and_change_nothing(tmp_path, capsys, case):
    arguments, message = CLI[case]
    out = tmp_path / 'out'
    out.mkdir()
    (tmp_path / 'file').write_text('a file')
    checkpoint = out / 'checkpoint.npz'
    if case == 'resume with another optimizer':
        net = Net([FullyConnected((10, 64), (32, 64))], seed=0)
        save_checkpoint(str(checkpoint), net, Adam(net), 1, History())
        arguments = arguments + ['--model', 'lenet']
    else:
        checkpoint.write_bytes(b'not a checkpoint')
    written = checkpoint.read_bytes()
    arguments = [a.format(file=tmp_path / 'file') for a in arguments]
    if '--out' not in arguments:
        arguments = ['--out', str(out)] + arguments
    try:
        status = main(['train', '--epochs', '1', '--no-progress', *arguments])
    except SystemExit as stop:          # argparse's own errors
        status = stop.code
    error = capsys.readouterr().err
    assert status != 0
    assert 'Traceback' not in error, error
    assert re.search(message, error.strip().splitlines()[-1]), error
    assert checkpoint.read_bytes() == written
