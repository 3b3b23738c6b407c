"""A net built again finds each unit's kernel from a description of the unit, without
deriving an equation, and trains as the first did; descriptions tell apart units
that differ in anything their equations are made from, and a record that recalls
the wrong kernel is caught by the check the suite runs with."""

import json
import os

import numpy as np
import pytest
from sympy import Max

from devito_ml import (Conv, Flat, FullyConnected, Net, ReLU, Subsampling,
                       operator_cache, unit_records)
from devito_ml.compiled import forget_loaded
from devito_ml.net import Net as NetClass
from devito_ml.optim import SGD
from test_loop_names import _every_layer_kind_net

LABELS = np.array([0, 2])


def _input():
    return np.random.default_rng(0).standard_normal((2, 2, 10, 10)).astype(np.float32)


def _trained(layers_per_operator=3):
    net = _every_layer_kind_net(layers_per_operator)
    optimizer = SGD(net, lr=0.1, momentum=0.9)
    net.train_step(_input(), LABELS, optimizer)
    return net, optimizer


def _records():
    return sorted(name for name in os.listdir(operator_cache.folder())
                  if name.endswith('.unit'))


@pytest.fixture
def cache_on(monkeypatch):
    """The disk cache on, every kernel built here read back from it."""
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '1')
    forget_loaded()
    yield
    forget_loaded()


@pytest.fixture
def own_cache(cache_on, monkeypatch, tmp_path):
    """A cache of this test's own (its records are the test's)."""
    monkeypatch.setattr('tempfile.tempdir', str(tmp_path))


def _refuse_derivation(monkeypatch):
    """From here on, a net that derives an equation fails (kernels loaded from
    disk again, records not checked against derivation)."""
    forget_loaded()
    monkeypatch.setenv(unit_records.CHECK_VARIABLE, '0')

    def refused(*args, **kwargs):
        raise AssertionError('equations derived')
    for method in ('forward_equations', 'backward_equations'):
        monkeypatch.setattr(NetClass, method, refused)


@pytest.mark.parametrize('unit', ['whole', 'blocks'])
def test_a_net_built_again_derives_no_equation(cache_on, monkeypatch, unit):
    layers_per_operator = 100 if unit == 'whole' else 3
    first, first_optimizer = _trained(layers_per_operator)
    _refuse_derivation(monkeypatch)
    second, second_optimizer = _trained(layers_per_operator)
    assert second.call_map() == first.call_map()
    x = _input()
    for net, optimizer in ((first, first_optimizer), (second, second_optimizer)):
        net.train_step(x, LABELS, optimizer)
    for name, value in first.parameters().items():
        assert np.array_equal(second.parameters()[name], value), name


def _chain(activation, name='described'):
    return Net([Conv((4, 3, 3), padding=1, activation=activation), Flat(),
                FullyConnected(3)], input_shape=(2, 6, 6), batch_size=2,
               dtype=np.float64, seed=0, name=name)


def _record_keys(net):
    """The record keys of the units of ``net``'s forward pass."""
    net.forward(np.ones((2, 2, 6, 6)))
    return {name for name in _records()}


def test_units_that_differ_in_an_option_are_described_apart(own_cache):
    relu = _record_keys(_chain(ReLU()))
    identity = _record_keys(_chain(None)) - relu
    assert identity, 'another activation, the same shapes: another record'


def test_a_unit_with_a_users_function_is_derived_every_time(own_cache):
    # a user's function: its source may change from one process to the next
    net = Net([Subsampling((2, 2), (2, 2, 6, 6), function=lambda w: Max(*w)), Flat(),
               FullyConnected(3)], input_shape=(2, 6, 6), batch_size=2,
              dtype=np.float64, seed=0)
    output = net.forward(np.ones((2, 2, 6, 6)))
    assert output.shape == (2, 3) and not _records()


def test_a_record_that_recalls_another_kernel_is_caught(own_cache):
    _record_keys(_chain(ReLU(), name='first'))
    wrong, = _records()
    other = _chain(None, name='first')
    other.forward(np.ones((2, 2, 6, 6)))      # its own record and kernel
    theirs, = set(_records()) - {wrong}
    with open(operator_cache.path(theirs)) as handle:
        kernel = json.load(handle)
    with open(operator_cache.path(wrong)) as handle:
        record = json.load(handle)
    record.update(key=kernel['key'], kernel_name=kernel['kernel_name'])
    operator_cache.write(wrong, json.dumps(record).encode())
    forget_loaded()
    with pytest.raises(unit_records.RecordMismatch, match='description misses'):
        _chain(ReLU(), name='first').forward(np.ones((2, 2, 6, 6)))


def test_an_unreadable_record_is_removed_with_a_warning(own_cache, rng):
    net = _chain(ReLU())
    x = rng.standard_normal((2, 2, 6, 6))
    expected = net.forward(x)
    record, = _records()
    operator_cache.write(record, b'{"version": 1, "roles": 3')
    forget_loaded()
    with pytest.warns(RuntimeWarning, match=r'unit record .* could not be read'):
        again = _chain(ReLU())
        assert np.array_equal(again.forward(x), expected)


def test_with_the_cache_off_nothing_is_recorded_or_recalled(own_cache, monkeypatch):
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '0')
    first = _chain(ReLU()).forward(np.ones((2, 2, 6, 6)))
    assert not os.path.isdir(operator_cache.folder()) or not _records()
    assert np.array_equal(_chain(ReLU()).forward(np.ones((2, 2, 6, 6))), first)


def test_a_winograd_net_built_again_derives_no_equation(cache_on, monkeypatch):
    """Every Function a Winograd convolution's equations read (its transforms'
    tables among them) is its layer's: a second build recalls its units."""
    def trained():
        net = Net([Conv((32, 3, 3), padding=1, activation=ReLU()),
                   Conv((32, 3, 3), padding=1), Flat(), FullyConnected(3)],
                  input_shape=(32, 8, 8), batch_size=2, seed=0)
        assert net.layers[0].weight_gradient_winograd is not None
        optimizer = SGD(net, lr=0.1)
        net.train_step(x, LABELS, optimizer)
        return net
    x = np.random.default_rng(0).standard_normal((2, 32, 8, 8)).astype(np.float32)
    first = trained()
    _refuse_derivation(monkeypatch)
    second = trained()
    assert second.call_map() == first.call_map()
