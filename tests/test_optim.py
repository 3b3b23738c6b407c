"""Optimizers follow torch.optim step for step: 20 steps of LeNet-5 from the same
weights and batches, float64 within 1e-10 and float32 within 1e-4."""

import numpy as np
import pytest
import torch

from devito_ml.models import lenet5
from devito_ml.optim import SGD, Adam, AdamW
from devito_ml.interop import to_torch
from reference import TOLERANCE, assert_close, relative_error

STEPS, BATCH = 20, 8

CONFIGS = [
    (np.float64, SGD, dict(lr=0.05)),
    (np.float64, SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    (np.float64, SGD, dict(lr=0.05, momentum=0.8, dampening=0.3)),
    (np.float64, Adam, dict(lr=2e-3, weight_decay=1e-3)),
    (np.float64, AdamW, dict(lr=2e-3, betas=(0.8, 0.99), weight_decay=0.05)),
    (np.float32, SGD, dict(lr=0.05, momentum=0.9)),
    (np.float32, Adam, dict(lr=2e-3)),
]


@pytest.fixture(scope='module')
def nets():
    return {dtype: lenet5(BATCH, (8, 8), dtype=dtype, seed=3)
            for dtype in (np.float64, np.float32)}


def torch_optimizer(kind, parameters, settings):
    return {SGD: torch.optim.SGD, Adam: torch.optim.Adam,
            AdamW: torch.optim.AdamW}[kind](parameters, **settings)


def run_torch(net, dtype, kind, settings, batches):
    """The torch twin of ``net`` trained on ``batches``; its losses and parameters."""
    twin = to_torch(net).to(torch.float64 if dtype == np.float64 else torch.float32)
    optimizer = torch_optimizer(kind, twin.parameters(), settings)
    losses = []
    for x, labels in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x.astype(dtype))),
                                                 torch.from_numpy(labels))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach().numpy() for p in twin.parameters()]


def batches(dtype):
    rng = np.random.default_rng(7)
    sizes = [BATCH if step % 5 else 5 for step in range(STEPS)]  # smaller ones too
    return [(rng.random((size, 1, 8, 8)).astype(dtype), rng.integers(0, 10, size))
            for size in sizes]


@pytest.mark.parametrize('dtype, kind, settings', CONFIGS,
                         ids=[f"{d.__name__}-{k.__name__}-{i}"
                              for i, (d, k, _) in enumerate(CONFIGS)])
def test_trajectory_matches_torch_optim(nets, dtype, kind, settings):
    net = nets[dtype]
    net.load_state_dict(lenet5(BATCH, (8, 8), dtype=dtype, seed=3).state_dict())
    data = batches(dtype)
    expected_losses, expected = run_torch(net, dtype, kind, settings, data)
    exact_losses, exact = run_torch(net, np.float64, kind, settings, data)
    optimizer = kind(net, **settings)
    for step, (x, labels) in enumerate(data):
        loss, _ = net.train_step(x, labels, optimizer)
        assert_close(loss, expected_losses[step], dtype, f"loss at step {step}")
    ours = [f.data for layer in net.layers for f in layer.parameters().values()]
    for mine, theirs, truth in zip(ours, expected, exact, strict=True):
        error = relative_error(mine, theirs)
        if dtype == np.float32 and error > TOLERANCE[np.float32]:
            # Adam divides by sqrt(v) + eps: round-off in a gradient near eps becomes a
            # step of order lr, in torch's own float32 run too. Then we must be
            # within float32's tolerance of the float64 trajectory, or as close to it
            # as torch's float32 is (how far each lands depends on the CPU's vector
            # code: on an AMD Zen 4, 7.9e-5 against torch's 2.6e-5).
            assert relative_error(mine, truth) <= max(TOLERANCE[np.float32],
                                                      3 * relative_error(theirs, truth))
        else:
            assert error <= TOLERANCE[np.dtype(dtype).type]
    assert optimizer.step_count == STEPS


def test_step_after_backward_is_the_fused_step(nets):
    net = nets[np.float64]
    start = net.state_dict()
    x, labels = np.random.default_rng(0).random((BATCH, 1, 8, 8)), np.arange(BATCH)
    fused = SGD(net, lr=0.1, momentum=0.9)
    for _ in range(2):
        net.train_step(x, labels, fused)
    after_fused = net.state_dict()
    net.load_state_dict(start)
    separate = SGD(net, lr=0.1, momentum=0.9)
    for _ in range(2):
        net.forward(x)
        net.backward(labels)
        separate.step()
    for name, value in net.state_dict().items():
        assert np.array_equal(value, after_fused[name]), name


def test_learning_rate_changes_without_recompiling(nets):
    net = nets[np.float64]
    optimizer = SGD(net, lr=0.1)
    x, labels = np.ones((BATCH, 1, 8, 8)), np.zeros(BATCH, dtype=int)
    net.train_step(x, labels, optimizer)
    operator = net.train_operator(optimizer)
    before = net.state_dict()
    optimizer.lr = 0.0
    net.train_step(x, labels, optimizer)
    assert net.train_operator(optimizer) is operator
    for name, value in net.state_dict().items():
        assert np.array_equal(value, before[name]), name


def test_bad_hyperparameters_are_refused(nets):
    with pytest.raises(ValueError, match='Nesterov'):
        SGD(nets[np.float64], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match='beta1'):
        Adam(nets[np.float64], betas=(1.0, 0.9))


@pytest.mark.parametrize('kernel', [(5, 10), (8, 7)])
def test_convolution_with_looped_taps_trains_in_one_operator(kernel):
    """Above 49 taps a kernel is a loop; forward and weight gradient (one fused
    train-step operator) once ordered rows and taps both ways: Devito refused the
    operator as cyclic."""
    from devito_ml import Conv, Flat, FullyConnected, Net
    net = Net([Conv((2,) + kernel, padding=3, stride=(1, 2)), Flat(), FullyConnected(3)],
              dtype=np.float64, batch_size=3, input_shape=(2, 9, 11), seed=1)
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((3, 2, 9, 11)), rng.integers(0, 3, 3)) for _ in range(3)]
    settings = dict(lr=0.1, momentum=0.9)
    expected_losses, expected = run_torch(net, np.float64, SGD, settings, data)
    optimizer = SGD(net, **settings)
    losses = [net.train_step(x, labels, optimizer)[0] for x, labels in data]
    assert_close(losses, expected_losses, np.float64, 'losses')
    ours = [f.data for layer in net.layers for f in layer.parameters().values()]
    for mine, theirs in zip(ours, expected, strict=True):
        assert_close(mine, theirs, np.float64, 'parameters after 3 steps')


@pytest.mark.parametrize('kind, changes', [
    (SGD, [dict(), dict(momentum=0.9, weight_decay=1e-3), dict(nesterov=True),
           dict(nesterov=False, momentum=0.0)]),
    (Adam, [dict(), dict(weight_decay=1e-2, betas=(0.8, 0.99))]),
    (AdamW, [dict(weight_decay=0.0), dict(weight_decay=0.1)]),
], ids=['SGD', 'Adam', 'AdamW'])
def test_hyperparameters_set_later_take_effect_as_in_torch(nets, kind, changes):
    """A term whose hyperparameter was 0 at construction is still generated."""
    net = nets[np.float64]
    net.load_state_dict(lenet5(BATCH, (8, 8), dtype=np.float64, seed=3).state_dict())
    twin = to_torch(net).to(torch.float64)
    ours, theirs = kind(net, lr=0.05), torch_optimizer(kind, twin.parameters(),
                                                       dict(lr=0.05))
    for step, (x, labels) in enumerate(batches(np.float64)[:2 * len(changes)]):
        if step % 2 == 0:
            for name, value in changes[step // 2].items():
                setattr(ours, name, value)
                theirs.param_groups[0][name] = value
        net.train_step(x, labels, ours)
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)),
                                          torch.from_numpy(labels)).backward()
        theirs.step()
    mine = [f.data for layer in net.layers for f in layer.parameters().values()]
    for value, reference in zip(mine, twin.parameters(), strict=True):
        assert_close(value, reference.detach().numpy(), np.float64, 'parameters')


@pytest.mark.parametrize('kind, name, value, error, message', [
    (SGD, 'lr', float('nan'), ValueError, '`lr` must be finite'),
    (SGD, 'momentum', float('inf'), ValueError, '`momentum` must be finite'),
    (SGD, 'weight_decay', -1.0, ValueError, '`weight_decay` must be >= 0'),
    (SGD, 'lr', '0.1', TypeError, '`lr` must be a real number'),
    (SGD, 'nesterov', 'yes', TypeError, '`nesterov` must be a bool'),
    (Adam, 'beta2', 1.0, ValueError, '`beta2` must be < 1'),
    (Adam, 'eps', None, TypeError, '`eps` must be a real number'),
    (AdamW, 'weight_decay', float('-inf'), ValueError, '`weight_decay` must be finite'),
])
def test_hyperparameters_are_checked_whenever_set(nets, kind, name, value, error,
                                                  message):
    optimizer = kind(nets[np.float64], lr=0.1)
    with pytest.raises(error, match=message):
        setattr(optimizer, name, value)
    if name != 'nesterov':
        with pytest.raises(error, match=message):
            kind(nets[np.float64], **{'lr': 0.1, name: value}
                 if name not in ('beta1', 'beta2') else
                 {'betas': (0.9, value) if name == 'beta2' else (value, 0.9)})


def test_nesterov_without_momentum_is_refused_when_set_later(nets):
    optimizer = SGD(nets[np.float64], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match='Nesterov'):
        optimizer.momentum = 0.0
