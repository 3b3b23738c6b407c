"""torch.nn modules converted into nets: same weights, same outputs (evaluation mode,
float64), and unsupported modules named with their path."""

import numpy as np
import pytest
import torch
from torch import nn

from devito_ml.interop import torch_models
from devito_ml import ActivationLayer
from devito_ml.interop import UnsupportedModuleError, from_torch, torch_state_dict
from reference import assert_close


def check(module, input_shape, batch, rng):
    module = module.double().eval()
    with torch.no_grad():       # non-trivial running statistics
        for child in module.modules():
            if isinstance(child, nn.BatchNorm2d):
                child.running_mean.uniform_(-0.5, 0.5)
                child.running_var.uniform_(0.5, 1.5)
    net = from_torch(module, input_shape, batch, dtype=np.float64).eval()
    x = rng.standard_normal((batch,) + tuple(input_shape))
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    assert_close(net.forward(x), reference, np.float64, 'output')
    state = torch_state_dict(net)
    for name, value in module.state_dict().items():
        assert torch.equal(state[name], value), name
    return net


def test_sequential_with_every_leaf(rng):
    module = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2),
        nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2, bias=False),
        nn.Tanh(), nn.AvgPool2d(2, padding=1), nn.Dropout(0.3), nn.Identity(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6), nn.Sigmoid(),
        nn.Linear(6, 3))
    net = check(module, (2, 9, 8), 3, rng)
    assert sum(isinstance(layer, ActivationLayer) for layer in net.layers) == 1


def test_torchvision_style_resnet(rng):
    check(torch_models.resnet(50, 4, 2, 3, False, blocks=(1, 1, 1, 1)), (3, 17, 18),
          2, rng)


def test_vgg_and_alexnet_style(rng):
    check(torch_models.vgg(11, True, (32, 32), 3, 4, 4, 8, dropout=nn.Dropout),
          (3, 32, 32), 2, rng)


def test_pooling_options_same_padding_and_adaptive_pools(rng):
    """ceil_mode, dilation, uncounted padding, padding='same', adaptive pools to
    sizes that neither divide nor equal their input (and a larger one)."""
    module = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding='same'), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(4, 4, (3, 5), padding='same', dilation=(2, 1)),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.MaxPool2d(2, stride=1, padding=1, dilation=2),
        nn.AdaptiveMaxPool2d((3, 2)), nn.Conv2d(4, 3, 1, padding='valid'),
        nn.AdaptiveAvgPool2d(5), nn.Flatten(), nn.Linear(75, 4))
    check(module, (2, 13, 12), 2, rng)


def test_same_padding_with_even_kernels_pads_and_crops(rng):
    """torch pads one more row or column after than before: the converted net pads
    both sides by that much and crops the first, in the forward pass and in
    every gradient."""
    module = nn.Sequential(nn.Conv2d(2, 3, (4, 3), padding='same'), nn.ReLU(),
                           nn.Conv2d(3, 2, (2, 2), padding='same', dilation=(1, 3)),
                           nn.Flatten(), nn.Linear(2 * 7 * 6, 3)).double()
    net = check(module, (2, 7, 6), 2, rng)
    assert [type(layer).__name__ for layer in net.layers][:4] == \
        ['Conv', 'Crop', 'ActivationLayer', 'Conv']
    x = rng.standard_normal((2, 2, 7, 6))
    labels = np.array([0, 2])
    net.forward(x)
    loss = net.backward(labels)
    tx = torch.from_numpy(x).requires_grad_(True)
    reference = nn.functional.cross_entropy(module(tx), torch.from_numpy(labels))
    reference.backward()
    assert_close(loss, reference.item(), np.float64, 'loss')
    gradients = net.gradients()
    for layer, index in (('m0', 0), ('m2', 2), ('m4', 4)):
        assert_close(gradients[f"{layer}_W"], module[index].weight.grad.numpy(),
                     np.float64, layer)
    labels_gradient = net.input_gradient(x, labels)
    assert_close(labels_gradient, tx.grad.numpy(), np.float64, 'input gradient')


@pytest.mark.parametrize('module, path, culprit', [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.GELU())), '1.1',
     'GELU'),
    (nn.Sequential(nn.MaxPool2d(2, return_indices=True)), '0', 'MaxPool2d'),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode='reflect')), '0',
     'Conv2d'),
    (nn.Sequential(nn.AvgPool2d(2, divisor_override=3)), '0', 'AvgPool2d'),
])
def test_unsupported_modules_are_named_with_their_path(module, path, culprit):
    with pytest.raises(UnsupportedModuleError, match=f"`{culprit}` at `{path}`"):
        from_torch(module, (1, 6, 6), 1)


class TorchvisionClassifier(nn.Module):
    """torchvision's VGG and AlexNet: features, an adaptive average pool kept
    whatever the input size, flatten, classifier."""

    def __init__(self, features, pool, classifier):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, pool, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torchvision_classifier(kind, side, width=4, hidden=8, classes=5):
    """VGG (``vgg11``, ``vgg13_bn``, ...) or AlexNet at ``width / 64`` of their
    channels, with torchvision's pools (7x7; AlexNet 6x6) on ``side`` x ``side``
    images."""
    if kind == 'alexnet':
        features = torch_models.alexnet((side, side), 3, classes, width, hidden).features
        channels, pooled = torch_models.scaled(256, width), 6
    else:
        depth, batch_norm = int(kind[3:5]), kind.endswith('_bn')
        features = torch_models.vgg(depth, batch_norm, (side, side), 3, classes, width,
                                    hidden).features
        channels, pooled = torch_models.scaled(512, width), 7
    head = torch_models.classifier(channels * pooled * pooled, classes, hidden,
                                   alexnet=kind == 'alexnet', dropout=nn.Identity)
    return TorchvisionClassifier(features, nn.AdaptiveAvgPool2d((pooled, pooled)), head)


@pytest.mark.parametrize('kind, side', [('vgg11_bn', 32), ('alexnet', 63),
                                        ('alexnet', 96)])
def test_torchvision_vgg_and_alexnet_at_small_inputs(kind, side, rng):
    """Their adaptive pools replicate or average small maps into 7x7 (6x6): the
    converted net agrees in evaluation, and in training every gradient does.
    (VGG's features end on 1x1 maps at 32x32 and 48x48 alike; with BatchNorm, a
    VGG holds every layer a plain one does.)"""
    module = torchvision_classifier(kind, side)
    net = check(module, (3, side, side), 2, rng)
    net.train()
    module.train()
    x = rng.standard_normal((2, 3, side, side))
    labels = rng.integers(0, 5, 2)
    net.forward(x)
    loss = net.backward(labels)
    reference = nn.functional.cross_entropy(module(torch.from_numpy(x)),
                                            torch.from_numpy(labels))
    reference.backward()
    assert_close(loss, reference.item(), np.float64, 'loss')
    parameters = dict(module.named_parameters())
    largest = max(p.grad.abs().max().item() for p in parameters.values())
    roles = {'W': 'weight', 'b': 'bias'}
    for layer in net.layers:
        for role, gradient in layer.gradients().items():
            name = f"{layer.path}.{roles[role]}"
            want = parameters[name].grad.numpy()
            # a convolution's bias before a BatchNorm has a vanishing gradient: it
            # is measured against the largest gradient of the net
            scale = np.abs(want).max()
            scale = largest if scale < 1e-6 * largest else scale
            assert np.abs(gradient.data - want).max() <= 1e-10 * scale, name
