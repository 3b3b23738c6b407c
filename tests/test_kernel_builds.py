"""The distinct kernels of a deep net are lowered by worker processes, one a core,
and give what kernels lowered in the net's own process give."""

import tempfile

import numpy as np
import pytest

from devito_ml import Conv, Flat, FullyConnected, MaxPooling, Net, ReLU
from devito_ml import compiled, kernel_builds


def deep_chain():
    # kernels of 8x7 taps: Dimensions whose extents pickling loses (Devito 4.8)
    layers = [Conv((3, 8, 7), padding=(4, 3), activation=ReLU()),
              Conv((3, 3, 3), padding=1), MaxPooling(2), Conv((4, 3, 3), padding=1),
              Flat(), FullyConnected(5)]
    return Net(layers, input_shape=(2, 9, 8), batch_size=3, dtype=np.float64, seed=0,
               layers_per_operator=2)


def results(net, rng):
    x, labels = rng.standard_normal(net.input_size), rng.integers(0, 5, 3)
    output, loss = net.forward(x), net.backward(labels)
    return output, loss, net.gradients()


def test_workers_build_what_the_process_would(rng, tmp_path, monkeypatch):
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '0')
    compiled.forget_loaded()
    expected = results(deep_chain(), np.random.default_rng(0))
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '1')
    monkeypatch.setenv(kernel_builds.WORKERS_VARIABLE, '2')
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))     # every cache empty
    compiled.forget_loaded()

    def refused(*args):
        raise AssertionError('built in the net\'s process, not by a worker')

    monkeypatch.setattr(compiled, 'build', refused)
    net = deep_chain()
    assert len({part.kernel_name for part in net.forward_operator.parts}) >= \
        kernel_builds.PARALLEL_FROM
    output, loss, gradients = results(net, np.random.default_rng(0))
    assert np.array_equal(output, expected[0]) and loss == expected[1]
    for name, value in gradients.items():
        assert np.array_equal(value, expected[2][name]), name
    compiled.forget_loaded()


@pytest.mark.parametrize('value', ['0', 'many', '-2'])
def test_a_bad_number_of_workers_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(kernel_builds.WORKERS_VARIABLE, value)
    with pytest.raises(ValueError, match=f"DEVITO_ML_BUILD_WORKERS must be a positive "
                                         f"number of processes, got '{value}'"):
        kernel_builds.workers()
