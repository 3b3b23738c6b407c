"""Kernels called through their call layouts bind exactly the arguments Devito's
``Operator.arguments()`` derives, and a net built again from the cache runs without
reading a single pickled operator."""

import ctypes
import json

import numpy as np
import pytest

from devito_ml import operator_cache
from devito_ml.compiled import forget_loaded
from devito_ml.kernel_calls import CallLayout, KernelCall, batch_bounds, layout_of
from devito_ml.optim import SGD
from test_loop_names import _every_layer_kind_net

BATCH = 2


def _trained(layers_per_operator):
    net = _every_layer_kind_net(layers_per_operator)
    optimizer = SGD(net, lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 2, 10, 10)).astype(np.float32)
    net.train_step(x, np.array([0, 2]), optimizer)
    return net, optimizer, x


def _parts(net, optimizer):
    return net.train_operator(optimizer).parts


def _fields(value, parameter):
    """What a bound argument holds, comparable: the fields of a struct (what its
    pointers point to, the data by address), or the value."""
    obj = getattr(value, '_obj', value)
    if not isinstance(obj, ctypes.Structure):
        return getattr(obj, 'value', obj)
    fields = {}
    for name, kind in obj._fields_:
        field = getattr(obj, name)
        if name == 'data':
            fields[name] = ctypes.cast(field, ctypes.c_void_p).value
        elif isinstance(field, ctypes._Pointer):
            count = parameter.ndim * (2 if name in ('hsize', 'hofs', 'oofs') else 1)
            fields[name] = [field[i] for i in range(count)]
        elif name != 'dmap':
            fields[name] = getattr(field, 'value', field)
    return fields


@pytest.mark.parametrize('unit', ['whole', 'blocks'])
def test_a_layout_binds_what_devito_binds_for_every_layer_kind(unit):
    net, optimizer, _ = _trained(100 if unit == 'whole' else 3)
    for part in _parts(net, optimizer):
        operator = part.operator
        layout = layout_of(operator)
        assert layout is not None, part.kernel_name
        kinds = {entry[0] for entry in layout.entries}
        assert {'data', 'fixed', 'batch', 'threads'} <= kinds, part.kernel_name
        for batch in (BATCH, 1):
            theirs = operator.arguments(**batch_bounds(operator.dimensions, batch),
                                        **part.bound())
            ours = part.kernel.arguments(batch, part.bound())
            for parameter, value in zip(operator.parameters, ours, strict=True):
                assert _fields(value, parameter) == \
                    _fields(theirs[parameter.name], parameter), \
                    (part.kernel_name, parameter.name, batch)


def test_a_layout_is_stored_as_json_and_read_back():
    net, optimizer, _ = _trained(100)
    layout = layout_of(_parts(net, optimizer)[0].operator)
    assert CallLayout.from_record(json.loads(json.dumps(layout.to_record()))) == layout
    with pytest.raises(ValueError, match='layout version'):
        CallLayout.from_record({'version': 0})


def test_a_net_built_again_runs_without_reading_an_operator(monkeypatch):
    """The second net finds every kernel's layout, shared object and C in the cache:
    no pickled operator is read, and it trains as the first did."""
    monkeypatch.setenv('DEVITO_ML_OPERATOR_CACHE', '1')
    first, first_optimizer, x = _trained(3)
    forget_loaded()

    def refused(key):
        raise AssertionError(f"operator {key} was unpickled")
    monkeypatch.setattr(operator_cache, 'load', refused)
    second, second_optimizer, _ = _trained(3)
    assert all(isinstance(part.kernel, KernelCall)
               for part in _parts(second, second_optimizer))
    assert second.call_map() == first.call_map()
    labels = np.array([1, 0])
    for net, optimizer in ((first, first_optimizer), (second, second_optimizer)):
        net.train_step(x, labels, optimizer)
    for name, value in first.parameters().items():
        assert np.array_equal(second.parameters()[name], value), name
    # the C is read from the cache too
    codes = [part.code for part in _parts(second, second_optimizer)]
    assert all('struct dataobj' in code for code in codes)
