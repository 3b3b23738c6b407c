"""The disk cache of lowered operators: a net built again runs the unpickled
operators on its own Functions, with the same results as freshly lowered ones."""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from devito_ml import Conv, Flat, FullyConnected, MaxPooling, Net, ReLU
from devito_ml import kernel_calls, operator_cache
from devito_ml.cli import main
from devito_ml.compiled import CompiledOperator, forget_loaded, operator_options
from devito_ml.compiler import compiler_flags


def build():
    # tap loops (8x7 > 49 taps) and default-extent Dimensions: what pickling loses
    return Net([Conv((3, 8, 7), padding=2, activation=ReLU()), MaxPooling(2), Flat(),
                FullyConnected(4)], input_shape=(2, 10, 9), batch_size=3,
               dtype=np.float64, seed=0, name='cache_check')


@pytest.fixture(autouse=True)
def from_disk():
    """Each net built here reads the disk cache, not the operators this process
    already holds."""
    forget_loaded()
    yield
    forget_loaded()


@pytest.fixture
def fresh_results(rng, monkeypatch):
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '0')
    net = build()
    x, labels = rng.standard_normal((3, 2, 10, 9)), np.array([0, 3, 1])
    output, loss = net.forward(x), net.backward(labels)
    return x, labels, output, loss, net.gradients()


def stored_forward(x):
    """A net built again after its forward operator was stored, and that key."""
    build().forward(x)                       # stores (or finds) the operators
    forget_loaded()
    net = build()
    part = net.forward_operator.parts[0]
    options = operator_options()
    key = operator_cache.cache_key(net.forward_equations(True), part.name, **options,
                                   flags=compiler_flags(options['compiler']))
    return net, key


def test_cached_operators_give_fresh_results(fresh_results, monkeypatch):
    x, labels, output, loss, gradients = fresh_results
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '1')
    net, key = stored_forward(x)
    assert operator_cache.load(key) is not None
    assert np.array_equal(net.forward(x), output)
    assert net.backward(labels) == loss
    for name, value in net.gradients().items():
        assert np.array_equal(value, gradients[name]), name


def test_pinned_devito_still_drops_default_extents_when_pickling():
    """Devito 4.8 pickles a DefaultDimension without its extent; the cache restores
    it from what it stored. If this fails, Devito changed: re-check the restore."""
    import pickle
    from devito import DefaultDimension
    dimension = DefaultDimension(name='probe', default_value=7)
    assert dimension._default_value == 7
    assert pickle.loads(pickle.dumps(dimension))._default_value != 7


def test_a_changed_shape_is_another_key():
    net = build()
    key = operator_cache.cache_key(net.forward_equations(True), 'x')
    other = Net([Conv((3, 8, 7), padding=2, activation=ReLU()), MaxPooling(2), Flat(),
                 FullyConnected(4)], input_shape=(2, 11, 9), batch_size=3,
                dtype=np.float64, seed=0, name='cache_check')
    assert operator_cache.cache_key(other.forward_equations(True), 'x') != key
    assert isinstance(net.forward_operator.parts[0], CompiledOperator)


def test_a_changed_lowering_pass_is_another_key(monkeypatch):
    """The same equations lower to other C when devito_ml's passes change."""
    equations = build().forward_equations(True)
    key = operator_cache.cache_key(equations, 'x')
    monkeypatch.setattr(operator_cache, '_lowering_digest', lambda: 'another pass')
    assert operator_cache.cache_key(equations, 'x') != key


def _damage(path, damage):
    with open(path, 'rb') as handle:
        stored = handle.read()
    with open(path, 'wb') as handle:
        handle.write(stored[:len(stored) // 2] if damage == 'truncated' else
                     b'not a pickle' * 100)


def _built_again_with_a_warning(fresh_results, message):
    """The net built again warns ``message`` and computes what a fresh one did."""
    x, labels, output, loss, _ = fresh_results
    with pytest.warns(RuntimeWarning, match=message):
        forget_loaded()
        rebuilt = build()
        assert np.array_equal(rebuilt.forward(x), output)
    assert rebuilt.backward(labels) == loss


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_an_unreadable_operator_is_removed_with_a_warning_and_rebuilt(
        fresh_results, monkeypatch, damage):
    x = fresh_results[0]
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '1')
    _, key = stored_forward(x)
    _damage(os.path.join(operator_cache.folder(), f"{key}.pkl"), damage)
    operator_cache.remove(f"{key}.call")        # so that the operator is read
    _built_again_with_a_warning(fresh_results, r"operator cache: `.*\.pkl` could not be "
                                r"read .*removed, the operator is built again")
    assert operator_cache.load(key) is not None      # stored again, readable


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
@pytest.mark.parametrize('stored', ['call layout', 'shared object'])
def test_an_unreadable_kernel_is_removed_with_a_warning_and_loaded_again(
        fresh_results, monkeypatch, damage, stored):
    x = fresh_results[0]
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '1')
    _, key = stored_forward(x)
    suffix = '.call' if stored == 'call layout' else '.so'
    path, = [os.path.join(operator_cache.folder(), name)
             for name in os.listdir(operator_cache.folder())
             if name.startswith(key) and name.endswith(suffix)]
    _damage(path, damage)
    _built_again_with_a_warning(fresh_results, r"operator cache: `.*` could not be read "
                                r".*the kernel is loaded from its operator again")
    forget_loaded()
    assert kernel_calls.load(key) is not None        # stored again, readable


def test_cache_command_reports_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    compiled = tmp_path / f"devito-jitcache-0123456789-uid{os.getuid()}"
    compiled.mkdir()
    (compiled / 'kernel.so').write_bytes(b'x' * 2048)
    os.makedirs(operator_cache.folder())
    for name in ('a.pkl', 'a.call', 'a-0123456789abcdef.so', 'a.c', 'b.pkl',
                 '.op-interrupted.pkl'):
        with open(os.path.join(operator_cache.folder(), name), 'wb') as handle:
            handle.write(b'y' * 1024)
    assert operator_cache.usage() == (6, 6144)
    assert main(['cache']) == 0
    report = capsys.readouterr().out
    assert f"lowered operators and kernels: {operator_cache.folder()}, 6 files" in report
    assert f"compiled C: {compiled}" in report
    assert main(['cache', '--clear']) == 0
    assert 'removed 6 files of lowered operators and kernels' in capsys.readouterr().out
    assert operator_cache.usage() == (0, 0) and not compiled.exists()


RACER = """
import numpy as np
from devito_ml import Conv, Flat, FullyConnected, Net, ReLU
net = Net([Conv((3, 3, 3), padding=1, activation=ReLU()), Flat(), FullyConnected(4)],
          input_shape=(2, 5, 4), batch_size=2, dtype=np.float64, seed=0, name='racer')
x = np.linspace(-1, 1, 80).reshape(2, 2, 5, 4)
print(repr(float(net.forward(x).sum())), repr(net.backward(np.array([1, 3]))))
"""


def test_two_processes_racing_for_one_operator_build_it_once(tmp_path):
    """Both start cold on one cache; each operator is lowered by one of them, and
    both compute the same."""
    environment = dict(os.environ, TMPDIR=str(tmp_path), DEVITO_LOGGING='PERF',
                       DEVITO_ML_OPERATOR_CACHE='1')
    racers = [subprocess.Popen([sys.executable, '-c', RACER], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    results = [racer.communicate(timeout=600) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), results
    assert results[0][0] == results[1][0]
    logs = results[0][1] + results[1][1]
    built = re.findall(r"Operator `(\w+)` generated in", logs)
    assert built and len(built) == len(set(built)), built
