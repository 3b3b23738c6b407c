"""BatchNorm and Dropout against torch, in training and evaluation, both dtypes."""

import numpy as np
import pytest
import torch

from devito_ml import BatchNorm, Conv, Dropout, Flat, FullyConnected, Net, ReLU
from reference import DTYPES, assert_close, compare_layer, torch_dtype


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('size', [(3, 4, 5, 6), (1, 2, 3, 1), (5, 3, 1, 2)])
def test_batchnorm_training_matches_torch(size, dtype, rng):
    layer = BatchNorm(input_size=size, momentum=0.3, eps=1e-3, dtype=dtype)
    layer.kernel.data[:] = rng.standard_normal(size[1])
    layer.bias.data[:] = rng.standard_normal(size[1])
    module = torch.nn.BatchNorm2d(size[1], eps=1e-3, momentum=0.3).to(torch_dtype(dtype))
    compare_layer(layer, module, rng)
    assert_close(layer.running_mean.data, module.running_mean.numpy(), dtype, 'mean')
    assert_close(layer.running_var.data, module.running_var.numpy(), dtype, 'var')


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_batchnorm_evaluation_matches_torch(dtype, rng):
    layer = BatchNorm(input_size=(2, 3, 4, 5), activation=ReLU(), dtype=dtype)
    layer.allocate()
    layer.compile(training=False)
    layer.running_mean.data[:] = rng.standard_normal(3)
    layer.running_var.data[:] = rng.random(3) + 0.5
    layer.kernel.data[:] = rng.standard_normal(3)
    module = torch.nn.BatchNorm2d(3).to(torch_dtype(dtype)).eval()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.kernel.data.copy()))
        module.running_mean.copy_(torch.from_numpy(layer.running_mean.data.copy()))
        module.running_var.copy_(torch.from_numpy(layer.running_var.data.copy()))
    compare_layer(layer, torch.nn.Sequential(module, torch.nn.ReLU()), rng)


def test_dropout_masks_are_seeded_scaled_and_reused_backward():
    def run(seed):
        layer = Dropout(0.25, input_size=(4, 500), dtype=np.float64, seed=seed)
        y = layer.forward(np.ones((4, 500)))
        return y, layer.backward(np.full((4, 500), 2.0))
    y, dx = run(7)
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.03
    assert np.array_equal(dx, 2 * y)
    assert np.array_equal(run(7)[0], y) and not np.array_equal(run(8)[0], y)


def test_net_modes_switch_batchnorm_and_dropout(rng):
    net = Net([BatchNorm(), Flat(), Dropout(0.5), FullyConnected(3)],
              input_shape=(2, 3, 3), batch_size=4, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 2, 3, 3))
    net.eval()
    first = net.forward(x)
    assert np.array_equal(net.forward(x), first)           # no dropout, no update
    net.train()
    net.forward(x)
    assert net.buffers()['bn1_num_batches_tracked'] == 1
    assert not np.allclose(net.buffers()['bn1_running_mean'], 0)
    state = net.state_dict()
    assert {'bn1_running_mean', 'bn1_running_var', 'dropout1_step'} <= set(state)


def test_checkpoints_carry_running_statistics_and_dropout_steps(tmp_path, rng):
    from devito_ml.optim import SGD
    from devito_ml.training import History, load_checkpoint, save_checkpoint

    def build():
        return Net([BatchNorm(), Flat(), Dropout(0.5), FullyConnected(3)],
                   input_shape=(2, 3, 3), batch_size=4, dtype=np.float64, seed=0)
    net = build()
    optimizer = SGD(net, lr=0.1)
    net.train_step(rng.standard_normal((4, 2, 3, 3)), np.array([0, 1, 2, 0]), optimizer)
    save_checkpoint(tmp_path / 'run.npz', net, optimizer, 1, History())
    restored = build()
    load_checkpoint(tmp_path / 'run.npz', restored, SGD(restored, lr=0.1))
    for name, value in net.state_dict().items():
        assert np.array_equal(restored.state_dict()[name], value), name
    assert restored.buffers()['dropout1_step'] == 1


def test_per_channel_sums_stay_in_registers():
    """A sum stored into its channel's entry at every term made two threads fight
    over one cache line (a BatchNorm gradient took 10 ms instead of 0.4)."""
    import re
    layer = BatchNorm(input_size=(2, 3, 4, 5), generate_code=True)
    code = layer.forward_operator.code + layer.backward_operator.code
    assert not re.search(r'bn_(mean|var|dW|db)\[bn_out_c\] \+=', code)
    for total in ('bn_sum_x', 'bn_sum_dev2', 'bn_sum_dz', 'bn_sum_dz_xhat'):
        assert f'double {total} = 0;' in code


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_input_gradient_through_batchnorm_matches_torch(dtype, training, rng):
    """In training the input's gradient needs BatchNorm's own parameter gradients:
    they are computed although no parameter gradient is asked for."""
    net = Net([Conv((4, 3, 3), padding=1), BatchNorm(activation=ReLU()), Flat(),
               FullyConnected(3)], input_shape=(2, 6, 5), batch_size=4, dtype=dtype,
              seed=0)
    bn = net.layers[1]
    bn.running_mean.data[:] = rng.standard_normal(4)
    bn.running_var.data[:] = rng.random(4) + 0.5
    bn.kernel.data[:] = rng.random(4) + 0.5
    mean, var = (torch.from_numpy(np.array(bn.running_mean.data)),
                 torch.from_numpy(np.array(bn.running_var.data)))
    net.train(training)
    data = rng.standard_normal((4, 2, 6, 5)).astype(dtype)
    labels = np.array([0, 2, 1, 2])
    gradient = net.input_gradient(data, labels)
    p = {name: torch.from_numpy(np.array(value))
         for name, value in net.parameters().items()}
    xt = torch.from_numpy(data).requires_grad_(True)
    zt = torch.nn.functional.conv2d(xt, p['conv1_W'], p['conv1_b'], padding=1)
    zt = torch.relu(torch.nn.functional.batch_norm(zt, mean, var, p['bn1_W'], p['bn1_b'],
                                                   training=training))
    yt = zt.flatten(1) @ p['fc1_W'].T + p['fc1_b']
    torch.nn.functional.cross_entropy(yt, torch.from_numpy(labels)).backward()
    assert_close(gradient, xt.grad.numpy(), dtype, 'input gradient')
