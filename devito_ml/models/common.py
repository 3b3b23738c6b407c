"""What the model builders share: torch paths on layers, channel scaling and the
initialisation torchvision uses."""

import re

import numpy as np

from devito_ml.layers.conv import Conv

__all__ = ['at', 'scaled', 'kaiming_normal']


def at(layer, path):
    """Give ``layer`` the module path of its twin in the torchvision model, and a
    name derived from it (``layer1.0.conv1`` -> ``layer1_0_conv1``, ``0`` -> ``m0``)."""
    layer.path = path
    name = re.sub(r'\W', '_', path)
    layer.name = name if re.match(r'[A-Za-z_]', name) else f"m{name}"
    layer.named = True
    return layer


def scaled(channels, width):
    """``channels`` scaled by ``width / 64`` (torchvision's base width), at least 1."""
    return max(1, channels * width // 64)


def kaiming_normal(net, seed):
    """Convolution kernels drawn from N(0, 2/fan_out), as torchvision's ResNet and VGG
    (``kaiming_normal_(mode='fan_out', nonlinearity='relu')``); biases zero."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, Conv):
            k, _, r, q = layer.kernel.shape
            layer.kernel.data[:] = rng.normal(0, np.sqrt(2 / (k * r * q)),
                                              layer.kernel.shape)
            if layer.has_bias:
                layer.bias.data[:] = 0
    return net
