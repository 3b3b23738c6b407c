"""Kernels keyed by what they compute: identical layers and identical blocks of a deep
net share one lowered and compiled kernel, and each still computes its own outputs
and gradients (against torch); the next net finds the same kernels."""

import re

import numpy as np
import pytest

from devito_ml import Add, Conv, Flat, FullyConnected, Input, Net, ReLU
from devito_ml.graph import blocks
from devito_ml.interop import torch_models
from devito_ml.models import resnet
from twins import compare_model, compare_net

STAGE = (4, 0, 0, 0)     # one stage of four basic blocks


def chain(dtype, name='chain'):
    """Fourteen layers, twelve of them the same convolution."""
    layers = [Conv((4, 3, 3), padding=1, activation=ReLU()) for _ in range(12)]
    return Net(layers + [Flat(), FullyConnected(3)], input_shape=(4, 6, 5),
               batch_size=2, dtype=dtype, seed=2, name=name)


def residual(dtype, name=None):
    return resnet(18, batch_size=2, image_size=(7, 6), classes=3, width=4,
                  small_input=True, blocks=STAGE, dtype=dtype, seed=1, name=name)


def kernels_of(chain_):
    return [part.kernel_name for part in chain_.parts]


@pytest.mark.parametrize('dtype', [np.float32, np.float64], ids=['float32', 'float64'])
def test_identical_layers_share_a_kernel_and_compute_their_own(dtype, rng):
    net = chain(dtype)
    forward = kernels_of(net.forward_operator)
    backward = kernels_of(net.backward_operator)
    assert len(forward) == len(net.layers)        # one call a layer of a chain
    # the first reads the net's input, the last writes into Flat's: the ten between
    # are one kernel, in both passes
    assert len(set(forward[1:11])) == 1 and len(set(backward[3:12])) == 1
    assert len(set(forward)) < len(forward) - 8
    compare_net(net, rng)


@pytest.mark.parametrize('dtype', [np.float32, np.float64], ids=['float32', 'float64'])
def test_identical_blocks_share_a_kernel_and_compute_their_own(dtype, rng):
    net = residual(dtype)
    forward = kernels_of(net.forward_operator)
    backward = kernels_of(net.backward_operator)
    blocks_run = [i for i, part in enumerate(net.forward_operator.parts)
                  if part.kernel_name.startswith('block')]
    assert len(blocks_run) == 4
    # the first three read an output of the same shape and feed a block alike; the
    # last feeds the average pooling
    first_three = blocks_run[:3]
    assert len({forward[i] for i in first_three}) == 1
    assert len({backward[-1 - i] for i in first_three}) == 1     # run in reverse
    assert forward[blocks_run[3]] != forward[blocks_run[0]]
    for training in (True, False):
        compare_model(net, lambda: torch_models.resnet(18, 3, 4, 3, True, blocks=STAGE),
                      rng, training)


def test_the_next_net_finds_the_same_kernels():
    """Another net of the same structure, under other names, calls the very same
    operators: nothing is lowered or loaded again."""
    first, second = residual(np.float64, 'first'), residual(np.float64, 'second')
    ours, theirs = first.forward_operator.parts, second.forward_operator.parts
    shared = [a for a, b in zip(ours, theirs) if a.owners]
    assert shared and all(a.operator is b.operator for a, b in zip(ours, theirs)
                          if a.owners)
    assert all(a.kernel_name == b.kernel_name for a, b in zip(ours, theirs))


def test_a_small_net_is_one_operator_named_after_it():
    net = Net([Conv((4, 3, 3), padding=1), Flat(), FullyConnected(3)],
              input_shape=(2, 5, 5), batch_size=2, name='small')
    assert kernels_of(net.forward_operator) == ['small_forward']
    assert not net.forward_operator.parts[0].owners


def test_write_code_writes_each_kernel_once_and_the_calls(tmp_path):
    net = residual(np.float32, 'written')
    net.forward(np.zeros(net.input_size, np.float32))
    paths = net.write_code(tmp_path)
    names = [path.split('/')[-1] for path in paths]
    kernels = set(kernels_of(net.forward_operator))
    assert sorted(names[:-1]) == sorted(f"{k}.c" for k in kernels)
    assert names[-1] == 'written_calls.txt'
    calls = open(paths[-1]).read()
    for layer in net.layers:                    # every layer, in some call
        assert re.search(rf"={layer.name}\b", calls), layer.name
    for part in net.forward_operator.parts:     # in the order they run
        assert part.kernel_name in calls
    shared = next(path for path in paths if '/block' in path and
                  open(path).read().count('written_forward_') >= 2)
    header = open(shared).read()
    assert 'conv1=layer1_1_conv1' in header and 'conv1=layer1_2_conv1' in header


def test_blocks_cut_where_one_tensor_links_before_and_after():
    x = Input((2, 4, 4))
    a = Conv((2, 3, 3), padding=1, name='a')(x)
    b = Conv((2, 3, 3), padding=1, name='b')(a)
    c = Add(name='c')(b, a)                   # a skip over b
    d = Conv((2, 3, 3), padding=1, name='d')(c)
    y = FullyConnected(3, name='y')(Flat(name='f')(d))
    net = Net(y, batch_size=1)
    start = net.graph.input_node
    assert [[node.layer.name for node in block] for block in
            blocks(start, net.nodes, 8)] == [['a'], ['b', 'c'], ['d'], ['f'], ['y']]
    assert [[node.layer.name for node in block] for block in
            blocks(start, net.nodes, 1)] == [['a'], ['b'], ['c'], ['d'], ['f'], ['y']]


def test_the_key_text_follows_the_maths_not_the_names():
    """Renamed, two identical expressions have one text whatever order sympy put
    their terms in (it orders them by name: ``conv10`` before ``conv9``); any other
    difference shows."""
    import sympy
    from devito.symbolics import DefFunction
    from devito_ml.operator_cache import canonical_text

    def text(expression, *names):
        return canonical_text(expression, dict(zip(names, ('x', 'y'))))

    a, b = sympy.symbols('conv9_out conv10_W')
    c, d = sympy.symbols('conv10_out conv11_W')
    assert str(a + 2 * b) != str(c + 2 * d).replace('conv10', 'conv9').replace(
        'conv11', 'conv10')                       # sympy's own order differs
    assert text(a + 2 * b, 'conv9_out', 'conv10_W') == \
        text(c + 2 * d, 'conv10_out', 'conv11_W')
    names = ('conv9_out', 'conv10_W')
    assert text(a + 2 * b, *names) != text(a + 3 * b, *names)
    assert text(a + 2 * b, *names) != text(2 * a + b, *names)
    assert text(sympy.Max(a, b), *names) != text(sympy.Min(a, b), *names)
    assert text(a + sympy.Float('0.1', 30), *names) != \
        text(a + sympy.Float('0.10000000000000000001', 30), *names)
    assert text(DefFunction('fma', (a, b, a)), *names) != \
        text(DefFunction('fmaf', (a, b, a)), *names)
