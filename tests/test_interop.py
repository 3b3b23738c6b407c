"""Parameters shared with a torch optimizer: same memory, same trajectory."""

import numpy as np
import torch

from devito_ml.interop import torch_parameters
from devito_ml.models import lenet5
from devito_ml.optim import SGD


def test_torch_optimizer_on_shared_parameters_matches_devito_sgd():
    rng = np.random.default_rng(0)
    batches = [(rng.random((4, 1, 8, 8)), rng.integers(0, 10, 4)) for _ in range(3)]
    ours = lenet5(4, (8, 8), dtype=np.float64, seed=1)
    theirs = lenet5(4, (8, 8), dtype=np.float64, seed=1)
    optimizer = SGD(ours, lr=0.05, momentum=0.9)
    shared = torch_parameters(theirs)
    torch_optimizer = torch.optim.SGD(shared.values(), lr=0.05, momentum=0.9)
    for x, labels in batches:
        ours.train_step(x, labels, optimizer)
        theirs.forward(x)
        theirs.backward(labels)
        torch_optimizer.step()
    for name, value in ours.parameters().items():
        assert np.allclose(theirs.parameters()[name], value, rtol=1e-12, atol=1e-15)
    data = theirs.parameters()['conv1_W']
    assert shared['conv1_W'].data_ptr() == data.ctypes.data


def test_to_torch_copies_every_layer_kind_and_activation():
    from devito_ml import (AvgPooling, Conv, Flat, FullyConnected, LeakyReLU,
                           MaxPooling, Net, Sigmoid, Tanh)
    from devito_ml.interop import to_torch
    net = Net([Conv((3, 3, 3), (2, 1, 6, 6), padding=1, bias=False, activation=Tanh()),
               AvgPooling(2, (2, 3, 6, 6)), MaxPooling(3, (2, 3, 3, 3), 1, 1),
               Flat((2, 3, 3, 3)),
               FullyConnected((5, 27), (2, 27), activation=LeakyReLU(0.2)),
               FullyConnected((4, 5), (2, 5), activation=Sigmoid())],
              dtype=np.float64, loss='mse', seed=0)
    x = np.random.default_rng(0).random((2, 1, 6, 6))
    expected = to_torch(net)(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(net.forward(x), expected, rtol=1e-12, atol=1e-14)


def test_to_torch_keeps_groups_and_pooling_options():
    from devito_ml import (AdaptiveAvgPooling, AdaptiveMaxPooling, AvgPooling, Conv,
                           Flat, FullyConnected, MaxPooling, Net)
    from devito_ml.interop import to_torch
    net = Net([Conv((4, 3, 3), padding='same', groups=2),
               MaxPooling(3, stride=2, dilation=1, ceil_mode=True),
               AvgPooling(3, stride=2, padding=1, ceil_mode=True,
                          count_include_pad=False),
               AdaptiveMaxPooling((3, 2)), AdaptiveAvgPooling(4), Flat(),
               FullyConnected(3)],
              batch_size=2, input_shape=(2, 11, 10), dtype=np.float64, loss='mse',
              seed=0)
    x = np.random.default_rng(0).random((2, 2, 11, 10))
    expected = to_torch(net)(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(net.forward(x), expected, rtol=1e-12, atol=1e-14)
