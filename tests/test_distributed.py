"""Data-parallel training over MPI: two ranks give what one gives, a failing rank
ends the job, and without mpi4py nothing changes until MPI is asked for."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import mpi_training
from devito_ml.distributed import launched_ranks, mpi, shard_bounds, shard_capacity

HERE = os.path.dirname(os.path.abspath(__file__))


def _mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which('mpiexec') is not None


needs_mpi = pytest.mark.skipif(not _mpi_available(),
                               reason="MPI is not installed (pip install -e '.[mpi]')")


def test_shards_cover_the_batch_once_and_differ_by_at_most_one():
    for total in range(0, 23):
        for ranks in range(1, 5):
            bounds = [shard_bounds(total, ranks, r) for r in range(ranks)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1
            assert max(sizes) <= shard_capacity(max(total, 1), ranks)


def test_ranks_are_read_from_the_launchers_environment():
    assert launched_ranks({}) == 1
    assert launched_ranks({'OMPI_COMM_WORLD_SIZE': '2'}) == 2
    assert launched_ranks({'PMI_SIZE': '4'}) == 4


def test_without_mpi4py_asking_for_mpi_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mpi4py', None)
    with pytest.raises(ImportError, match=r"mpi4py is not installed.*\.\[mpi\]"):
        mpi("--ranks was given")


class _OneRank:
    """A communicator of one rank: fit must not use it at all."""

    def Get_size(self):
        return 1

    def __getattr__(self, name):
        raise AssertionError(f"fit used comm.{name} with one rank")


def test_one_rank_is_exactly_training_without_mpi():
    alone, history = mpi_training.train(None)
    with_comm, comm_history = mpi_training.train(_OneRank())
    assert history.epochs[-1]['train_loss'] == comm_history.epochs[-1]['train_loss']
    for name, value in alone.items():
        assert np.array_equal(value, with_comm[name]), name


class _SumsOfOneRank:
    """``RankSums`` of a job of one rank: the sums are this rank's own."""

    shard = total = 0

    def sum(self, values, gradients=False):
        return np.array(values, dtype=np.float64)


def test_batchnorm_cut_at_its_sync_points_computes_what_it_computes_whole():
    """The operators cut where a synchronized BatchNorm's sums meet, the sums
    handed to Python and back, give the fused pass's outputs, gradients and
    running statistics (float64, 1e-12)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 1, 8, 8))
    labels = np.array([0, 3, 1, 9, 4])
    results = []
    for synchronized in (False, True):
        net = mpi_training.small_net(5, batchnorm=True)
        if synchronized:
            sums = _SumsOfOneRank()
            sums.shard = sums.total = 5
            net.synchronize_statistics(sums)
        output = net.forward(x)
        net.backward(labels)
        chain = net.backward_operator_for(None, True)
        assert bool(chain.sync_points) == synchronized
        results.append((output, net.gradients(), net.buffers()))
    (output, gradients, buffers), (output2, gradients2, buffers2) = results
    np.testing.assert_allclose(output2, output, rtol=1e-12)
    for name in gradients:
        np.testing.assert_allclose(gradients2[name], gradients[name], rtol=1e-10,
                                   atol=1e-13, err_msg=name)
    for name in buffers:
        np.testing.assert_allclose(buffers2[name], buffers[name], rtol=1e-12,
                                   err_msg=name)


def test_synchronized_batchnorm_counts_every_ranks_values():
    """One sample of 1x1 maps on this rank is enough when another rank has one."""
    from devito_ml import BatchNorm
    from devito_ml.errors import ShapeError
    from devito_ml.steps import Step
    layer = BatchNorm(input_size=(1, 3, 1, 1))
    with pytest.raises(ShapeError, match='more than one value per channel'):
        layer.before_step(Step(1))
    layer.before_step(Step(1, first=0, total=2, statistics_samples=2))
    assert layer.num_batches_tracked == 1


def _mpiexec(tmp_path, *arguments, timeout=600, program=None):
    """``mpi_training.py`` (or ``program``, a list) on two ranks, one thread each."""
    environment = dict(os.environ, OMP_NUM_THREADS='1', OMPI_ALLOW_RUN_AS_ROOT='1',
                       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
                       PYTHONPATH=os.pathsep.join([HERE, os.environ.get('PYTHONPATH',
                                                                        '')]))
    program = program or [os.path.join(HERE, 'mpi_training.py'),
                          str(tmp_path / 'out.npz')]
    command = [shutil.which('mpiexec'), '-n', '2', '--bind-to', 'none', sys.executable,
               *program, *arguments]
    began = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)
    return done, time.perf_counter() - began


@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory):
    """The training runs of ``mpi_training.py`` on two ranks."""
    folder = tmp_path_factory.mktemp('mpi')
    done, _ = _mpiexec(folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(np.load(folder / 'out.npz')), folder


@needs_mpi
def test_two_ranks_train_as_one_with_the_same_global_batch(two_ranks):
    """22 steps of Adam with Dropout, the last batch of each epoch one sample (one
    rank's shard empty): the same losses and parameters, float64, within 1e-12."""
    result, _ = two_ranks
    parameters, history = mpi_training.train(None)
    assert int(result['ranks']) == 2
    np.testing.assert_allclose(result['losses'], history['train_loss'], rtol=1e-12)
    np.testing.assert_allclose(result['test_losses'], history['test_loss'], rtol=1e-12)
    assert list(result['accuracies']) == history['train_accuracy']
    for name, value in parameters.items():
        if name.endswith('_step'):      # Dropout's step counter: the same count
            assert int(result[f"whole/{name}"]) == int(value)
            continue
        np.testing.assert_allclose(result[f"whole/{name}"], value, rtol=1e-12,
                                   atol=1e-14, err_msg=name)


@needs_mpi
def test_every_rank_resumes_from_rank_0s_checkpoint(two_ranks):
    result, folder = two_ranks
    assert (folder / 'checkpoint.npz').exists()
    assert [p for p in os.listdir(folder) if p.startswith('.')] == []
    np.testing.assert_allclose(result['resumed_losses'], result['losses'], rtol=1e-12)
    for key in result:
        if key.startswith('whole/'):
            np.testing.assert_allclose(result[key.replace('whole/', 'resumed/')],
                                       result[key], rtol=1e-12, atol=1e-14,
                                       err_msg=key)


@needs_mpi
@pytest.mark.parametrize('how', ['raise', 'exit'])
def test_a_failing_rank_ends_the_job_instead_of_a_hang(two_ranks, tmp_path, how):
    """Rank 1 fails at its second epoch while rank 0 waits in the allreduce; the
    operators are cached by then, so seconds pass, not the 120 s limit."""
    done, seconds = _mpiexec(tmp_path, '--fail', f'1:1:{how}', timeout=120)
    assert done.returncode != 0
    assert seconds < 60
    if how == 'raise':
        assert 'rank 1 of 2 failed during fit: RuntimeError: a failure planted on ' \
            'rank 1' in done.stderr


def _two_ranks_of(tmp_path, mode):
    done, _ = _mpiexec(tmp_path, '--batchnorm', mode)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(np.load(tmp_path / 'out.npz'))


@needs_mpi
def test_synchronized_batchnorm_on_two_ranks_is_batchnorm_on_one(tmp_path):
    """Two BatchNorms, statistics and adjoint sums over both ranks' shards (one
    shard empty at the end of each epoch): the losses, parameters and running
    statistics of one rank, float64, within 1e-12."""
    result = _two_ranks_of(tmp_path, 'sync')
    state, history = mpi_training.train(None, batchnorm=True)
    np.testing.assert_allclose(result['losses'], history['train_loss'], rtol=1e-12)
    np.testing.assert_allclose(result['test_losses'], history['test_loss'], rtol=1e-12)
    for name, value in state.items():
        np.testing.assert_allclose(result[f"whole/{name}"], value, rtol=1e-12,
                                   atol=1e-14, err_msg=name)


@needs_mpi
def test_batchnorm_per_rank_normalises_each_shard_alone(tmp_path):
    """By default each rank's BatchNorm sees its own shard: training differs from one
    rank (not an accident of the sync machinery), and still learns."""
    result = _two_ranks_of(tmp_path, 'per-rank')
    _, history = mpi_training.train(None, batchnorm=True)
    assert not np.allclose(result['losses'], history['train_loss'], rtol=1e-6)
    assert np.all(np.isfinite(result['losses']))
    assert result['losses'][-1] < result['losses'][0]


@needs_mpi
def test_the_command_under_mpiexec_trains_once_and_rank_0_writes(tmp_path):
    """``mpiexec -n 2 devito-ml train``: one report, the files once, the global batch
    of --batch-size split in two; a second run resumes on both ranks."""
    import json
    train = ['-m', 'devito_ml.cli', 'train', '--model', 'lenet', '--dataset', 'digits',
             '--batch-size', '64', '--out', str(tmp_path), '--epochs']
    done, _ = _mpiexec(tmp_path, '2', program=train)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count('test accuracy') == 1
    assert done.stdout.count('building the operators') == 1
    assert 'batch 64 over 2 MPI ranks (32 a rank)' in done.stdout
    history = json.loads((tmp_path / 'history.json').read_text())['epochs']
    assert [entry['epoch'] for entry in history] == [1, 2]
    assert sorted(p.name for p in (tmp_path / 'code').iterdir()) == [
        'lenet5_adam_step.c', 'lenet5_backward.c', 'lenet5_evaluate.c',
        'lenet5_forward.c']
    done, _ = _mpiexec(tmp_path, '3', '--resume', program=train)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = json.loads((tmp_path / 'history.json').read_text())['epochs']
    assert resumed[:2] == history and resumed[2]['epoch'] == 3
