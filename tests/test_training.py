"""Training end to end: determinism, resuming bit for bit, atomic checkpoints."""

import builtins
import os

import numpy as np
import pytest

import devito_ml.net
import devito_ml.checkpoints as checkpoints
import devito_ml.progress as progress
from devito_ml.data import digits_split
from devito_ml.models import lenet5
from devito_ml.optim import SGD, Adam, Optimizer
from devito_ml.training import History, evaluate, fit, load_checkpoint


@pytest.fixture(scope='module')
def data():
    (x, y), (tx, ty) = digits_split(dtype=np.float64)
    return (x[:200], y[:200]), (tx[:90], ty[:90])


@pytest.fixture(scope='module')
def net():
    """One float64 LeNet-5 (batch 32; 200 samples end on a batch of 8), reused."""
    return lenet5(32, (8, 8), dtype=np.float64, seed=0)


def fresh(net, seed=0):
    net.load_state_dict(lenet5(32, (8, 8), dtype=np.float64, seed=seed).state_dict())
    return net


def test_same_seed_same_losses(net, data):
    runs = [fit(fresh(net), SGD(net, lr=0.05, momentum=0.9), *data, epochs=2, seed=4,
                progress=False, log=None) for _ in range(2)]
    assert runs[0].epochs[-1]['train_loss'] == runs[1].epochs[-1]['train_loss']
    assert runs[0]['test_loss'] == runs[1]['test_loss']


def test_resuming_continues_bit_for_bit(net, data, tmp_path):
    straight = fit(fresh(net), Adam(net, lr=2e-3), *data, epochs=3, seed=1,
                   progress=False, log=None)
    final = net.state_dict()
    path = str(tmp_path / 'run.npz')
    fit(fresh(net), Adam(net, lr=2e-3), *data, epochs=2, seed=1, checkpoint=path,
        progress=False, log=None)
    fresh(net, seed=99)                       # whatever the net held before
    resumed = fit(net, Adam(net, lr=2e-3), *data, epochs=3, seed=1, checkpoint=path,
                  resume=True, progress=False, log=None)
    for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy'):
        assert resumed[key] == straight[key], key
    for name, value in net.state_dict().items():
        assert np.array_equal(value, final[name]), name


def test_each_new_optimizer_starts_from_its_own_state(net, data, monkeypatch):
    """A new optimizer runs on its own zero moments and step count, even where it
    has the id of an earlier one (CPython gives a freed object's address to the next
    of its size; here every optimizer has one id, so that it happens every time)."""
    def same_id_for_optimizers(obj):
        return 0 if isinstance(obj, Optimizer) else builtins.id(obj)
    monkeypatch.setattr(devito_ml.net, 'id', same_id_for_optimizers, raising=False)
    (x, y), _ = data
    after_one_step = []
    for _ in range(2):
        optimizer = Adam(fresh(net), lr=2e-3)
        net.train_step(x[:32], y[:32], optimizer)
        after_one_step.append(net.state_dict())
    for name, value in after_one_step[1].items():
        assert np.array_equal(value, after_one_step[0][name]), name


def test_a_crash_while_saving_leaves_the_old_checkpoint(net, data, tmp_path,
                                                        monkeypatch):
    path = str(tmp_path / 'run.npz')
    optimizer = SGD(fresh(net), lr=0.05)
    fit(net, optimizer, *data, epochs=1, checkpoint=path, progress=False, log=None)
    before = open(path, 'rb').read()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt('power cut')
    monkeypatch.setattr(checkpoints.np, 'savez', crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(path, net, optimizer, 2, History())
    assert open(path, 'rb').read() == before
    assert os.listdir(tmp_path) == ['run.npz']
    epoch, history = load_checkpoint(path, net, optimizer)
    assert epoch == 1 and len(history.epochs) == 1


def test_evaluation_computes_no_gradient(net, data):
    fresh(net)
    gradients = {name: value.copy() for name, value in net.gradients().items()}
    loss, accuracy = evaluate(net, *data[1])
    assert loss > 0 and 0 <= accuracy <= 1
    for name, value in net.gradients().items():
        assert np.array_equal(value, gradients[name]), name


def test_progress_bar_advances_every_step_and_counts_images(net, data, monkeypatch):
    """The bar's count moves with each step (it stood at 0 while the loss changed).
    (Where the net's operators are not built yet, building them draws a bar of
    kernels first: only the epochs' bars, counting images, are looked at.)"""
    bars = []

    class Recorder:
        def __init__(self, total=None, disable=False, **options):
            self.total, self.disable, self.options = total, disable, options
            self.counts = []
            if options.get('unit') == 'img':
                bars.append(self)

        def update(self, images):
            self.counts.append(images)

        def set_postfix(self, refresh=True, **values):
            assert not refresh        # drawn by update, with its count
            self.loss = values['loss']

        def close(self):
            self.closed = True

    monkeypatch.setattr(progress, 'tqdm', Recorder)
    fit(fresh(net), SGD(net, lr=0.05), *data, epochs=2, progress=True, log=None)
    assert len(bars) == 2 and not bars[0].disable
    for bar in bars:
        assert bar.total == 200 and sum(bar.counts) == 200 and bar.closed
        assert bar.counts == [32] * 6 + [8]
    fit(fresh(net), SGD(net, lr=0.05), *data, epochs=1, progress=False, log=None)
    assert bars[-1].disable


def test_progress_is_shown_only_where_someone_watches(monkeypatch):
    import io
    monkeypatch.setattr('sys.stderr', io.StringIO())    # a pipe or a file
    assert not progress.watched()


def test_a_run_says_when_it_builds_operators(net, data):
    lines = []
    fit(fresh(net), SGD(net, lr=0.05), *data, epochs=1, progress=False, log=lines.append)
    assert lines[0].startswith('building the operators')
    assert lines[1].startswith('operators built in')


def test_fit_runs_the_trainer_it_is_given(net, data):
    """A trainer of this net, with the batch it takes; one of another net, an object
    that is not a trainer, or a batch size the trainer does not take are refused
    before anything runs."""
    from devito_ml.trainer import LocalTrainer
    trainer = LocalTrainer(fresh(net), batch_size=16)
    history = fit(net, SGD(net, lr=0.05), *data, epochs=1, trainer=trainer,
                  progress=False, log=None)
    assert trainer.batch_size == 16 and len(history.epochs) == 1
    other = lenet5(32, (8, 8), dtype=np.float64, seed=0)
    with pytest.raises(ValueError, match='trains Net'):
        fit(net, SGD(net, lr=0.05), *data, trainer=LocalTrainer(other), log=None)
    with pytest.raises(TypeError, match='must be a Trainer'):
        fit(net, SGD(net, lr=0.05), *data, trainer=object(), log=None)
    with pytest.raises(ValueError, match='leave `batch_size` out'):
        fit(net, SGD(net, lr=0.05), *data, trainer=trainer, batch_size=8, log=None)
    with pytest.raises(ValueError, match='larger than the batch of 32'):
        LocalTrainer(net, batch_size=64)
