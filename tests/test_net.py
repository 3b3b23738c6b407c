"""Whole networks against torch: the tutorial's net, LeNet-5 with padding and two
padded convolutions in a row; smaller last batch, prepared arguments, errors and the
names in the generated C."""

import numpy as np
import pytest
from sympy import Max

from devito_ml import (Conv, Flat, FullyConnected, FullyConnectedSoftmax, MaxPooling,
                       Net, ReLU, ShapeError, Subsampling)
from devito_ml.models import lenet5
from reference import DTYPES
from twins import compare_net


def tutorial_layers(batch=1):
    """The network of the tutorial (seed 003), batch-first."""
    return [Subsampling((2, 2), (batch, 2, 4, 4), function=lambda window: Max(*window)),
            Conv((2, 2, 2), (batch, 2, 3, 3), activation=ReLU()),
            Flat((batch, 2, 2, 2)),
            FullyConnectedSoftmax((3, 8), (batch, 8))]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('batch', [1, 3])
def test_tutorial_net_matches_torch(batch, dtype, rng):
    compare_net(Net(tutorial_layers(batch), dtype=dtype, seed=0), rng)


@pytest.fixture(scope='module')
def lenet_nets():
    """LeNet-5 on 8x8 digits (conv2 padded) in both dtypes, compiled once."""
    return {dtype: lenet5(batch_size=6, image_size=(8, 8), dtype=dtype)
            for dtype in DTYPES}


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('batch', [6, 1, 4])
def test_lenet5_with_padding_matches_torch(lenet_nets, batch, dtype, rng):
    compare_net(lenet_nets[dtype], rng, batch=batch)


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_two_padded_convolutions_in_a_row(dtype, rng):
    layers = [Conv((4, 3, 3), (2, 2, 7, 6), padding=1, activation=ReLU()),
              Conv((5, 5, 3), (2, 4, 7, 6), padding=(2, 1), stride=(2, 1),
                   activation=ReLU()),
              Conv((3, 3, 3), (2, 5, 4, 6), padding=2, dilation=2),
              Flat((2, 3, 4, 6)), FullyConnected((4, 72), (2, 72))]
    net = Net(layers, dtype=dtype, seed=1)
    assert net.forward_code.count('conv2_out') > 0
    compare_net(net, rng)


def test_prepared_arguments_follow_batch_and_parameter_changes(lenet_nets, rng):
    net = lenet_nets[np.float64]
    x = rng.random((6, 1, 8, 8))
    first = net.forward(x)
    net.forward_operator.apply(6)
    assert np.array_equal(net.layers[-1].result.data, first)
    assert np.array_equal(net.forward(x[:2]), first[:2])
    state = net.state_dict()
    changed = {name: value * 0.5 for name, value in state.items()}
    net.load_state_dict(changed)
    halved = net.forward(x)
    net.forward_operator.apply(6)
    assert np.array_equal(net.layers[-1].result.data, halved)
    assert not np.allclose(halved, first)
    net.load_state_dict(state)
    assert np.array_equal(net.forward(x), first)


def test_generated_code_carries_network_names(lenet_nets, tmp_path):
    net = lenet_nets[np.float32]
    code = net.forward_code
    for name in ('conv1_W', 'conv2_out', 'pool1_out', 'fc3_b', 'int lenet5_forward'):
        assert name in code
    assert 'fc1_dW' in net.backward_code and 'conv1_dW' in net.backward_code
    assert 'float (*restrict conv1_W)' in code and 'double (*restrict' not in code
    paths = {p.split('/')[-1]: p for p in net.write_code(tmp_path)}
    assert {'lenet5_forward.c', 'lenet5_backward.c'} <= set(paths)
    assert open(paths['lenet5_backward.c']).read() == net.backward_code


def test_generated_code_maps_its_sections_to_the_layers(lenet_nets):
    """The C opens with which layer each timed section computes, and marks every
    section with its layers; comments only, the code itself is Devito's."""
    import re
    net = lenet_nets[np.float32]
    code = net.backward_code
    header = code[:code.index('*/', code.index('devito_ml net'))]
    assert 'devito_ml net `lenet5`, operator `lenet5_backward`' in header
    for layer in net.layers:
        assert re.search(rf'^ \*   {layer.name} +section\d', header, re.M), layer.name
    sections = re.findall(r'START\((section\d+)\)', code)
    marks = re.findall(r'/\* ([^*]*) \*/\n\s*START\(section\d+\)', code)
    assert len(marks) == len(sections) > 5
    assert any(mark.startswith('conv1: ') and 'conv1_dW' in mark for mark in marks)
    plain = net.backward_operator.parts[0].code
    without = re.sub(r'[ \t]*/\* (?!Devito|Flush)[^*]*(\*(?!/)[^*]*)*\*/\n', '', code)
    assert without == plain


def test_layers_are_numbered_per_family():
    net = Net(tutorial_layers())
    assert [layer.name for layer in net.layers] == ['pool1', 'conv1', 'flat1', 'fc1']


def test_layers_that_do_not_chain_are_named_with_both_shapes():
    with pytest.raises(ShapeError, match=r"Conv `conv`.*\(2, 3, 8, 8\).*"
                                         r"MaxPooling `pool`.*\(2, 3, 4, 4\)"):
        Net([MaxPooling(2, (2, 3, 8, 8)), Conv((3, 3, 3), (2, 3, 8, 8))])


@pytest.mark.parametrize('x, error, message', [
    (np.zeros((2, 1, 8, 7), np.float32), ShapeError, r'\(b,\) \+ \(1, 8, 8\)'),
    (np.zeros((7, 1, 8, 8), np.float32), ShapeError, r'1 <= b <= 6'),
    (np.zeros((2, 1, 8, 8), np.float64), TypeError, 'dtype float32, got float64'),
])
def test_bad_inputs_are_refused_before_any_c_runs(lenet_nets, x, error, message):
    with pytest.raises(error, match=message):
        lenet_nets[np.float32].forward(x)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match='unique'):
        Net([Flat((1, 1, 2, 2), name='a'), FullyConnected((2, 4), (1, 4), name='a')])


def test_backward_takes_another_loss(rng):
    net = Net([Flat((3, 1, 2, 2)), FullyConnected((4, 4), (3, 4))], dtype=np.float64,
              seed=0)
    x, targets = rng.standard_normal((3, 1, 2, 2)), rng.standard_normal((3, 4))
    output = net.forward(x)
    loss = net.backward(targets, loss='mse')
    assert abs(loss - np.mean((output - targets) ** 2)) < 1e-12
    assert net.backward(np.array([0, 1, 3])) > 0    # the net's own cross entropy


def test_no_pass_computes_what_nobody_reads(lenet_nets):
    """The gradient of the network's input (and the stuffed buffers only it
    reads) is not computed; evaluation computes the loss but not its gradient."""
    net = lenet_nets[np.float32]
    backward = net.backward_code
    assert 'conv1_dW' in backward and 'conv1_din' not in backward
    assert 'conv1_dz_stuffed' not in backward
    assert 'conv1_dout' in backward                # inner gradients still flow
    evaluation = net.evaluation_operator().code
    assert 'cross_entropy_per_sample' in evaluation
    assert 'cross_entropy_probabilities' not in evaluation and 'fc3_dout' not in \
        evaluation


def test_an_input_feeding_two_layers_gets_no_gradient(rng):
    from devito_ml import Add, Input
    x = Input((2, 5, 5))
    out = Flat()(Add()(Conv((2, 3, 3), padding=1, name='branch')(x), x))
    net = Net(FullyConnected(3)(out), dtype=np.float64, batch_size=2, seed=0)
    net.forward(rng.standard_normal((2, 2, 5, 5)))
    net.backward(np.array([0, 2]))
    code = net.backward_code
    assert 'branch_dW' in code and 'branch_din' not in code and 'add1_din1' not in code
