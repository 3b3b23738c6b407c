"""VGG-11/13/16/19, with and without BatchNorm, with torchvision's layer structure."""

import numpy as np

from devito_ml.activations import ReLU
from devito_ml.graph import Input
from devito_ml.layers.conv import Conv
from devito_ml.layers.dense import FullyConnected
from devito_ml.layers.dropout import Dropout
from devito_ml.layers.normalization import BatchNorm
from devito_ml.layers.pooling import MaxPooling
from devito_ml.layers.reshape import Flat
from devito_ml.models.common import at, kaiming_normal, scaled
from devito_ml.net import Net

__all__ = ['vgg', 'vgg11', 'vgg13', 'vgg16', 'vgg19', 'CONFIGURATIONS']

CONFIGURATIONS = {
    11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
    16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512,
         512, 'M'],
    19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512, 'M'],
}


def classifier(h, classes, hidden, dropout, first=0):
    """torchvision's classifier: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    (AlexNet's puts each Dropout first: ``first=1`` shifts the indices)."""
    i = first
    h = at(FullyConnected(hidden, activation=ReLU()), f"classifier.{i}")(h)
    h = at(Dropout(dropout), f"classifier.{i + 2}")(h)
    h = at(FullyConnected(hidden, activation=ReLU()), f"classifier.{i + 3}")(h)
    if not first:
        h = at(Dropout(dropout), f"classifier.{i + 5}")(h)
    return at(FullyConnected(classes), f"classifier.{i + 6 - first}")(h)


def vgg(depth=16, batch_norm=False, batch_size=8, image_size=(224, 224), in_channels=3,
        classes=1000, width=64, hidden=4096, dropout=0.5, dtype=np.float32, seed=0,
        name=None, loss='cross_entropy'):
    """A VGG :class:`~devito_ml.Net` as torchvision builds it.

    Parameters
    ----------
    depth : int
        11, 13, 16 or 19 (configurations A, B, D, E).
    batch_norm : bool
        A BatchNorm after every convolution (``vgg16_bn``).
    width : int
        Channels of the first convolutions (torchvision: 64); every convolution
        is scaled by ``width / 64``.
    hidden : int
        Width of the two hidden classifier layers (torchvision: 4096).
    dropout : float
        Dropout probability in the classifier.
    batch_size, image_size, in_channels, classes, dtype, seed, name, loss
        As :func:`~devito_ml.models.resnet`.

    Notes
    -----
    torchvision's ``AdaptiveAvgPool2d((7, 7))`` is the identity on the 7x7 maps of
    224x224 images and is left out; on smaller images the classifier reads the
    final maps as they are (``channels * rows * cols`` features).

    Examples
    --------
    >>> net = vgg(11, batch_size=2, image_size=(32, 32), width=4, hidden=16)
    >>> [layer.path for layer in net.layers][:3]
    ['features.0', 'features.2', 'features.3']
    """
    if depth not in CONFIGURATIONS:
        raise ValueError(f"vgg: `depth` must be one of {sorted(CONFIGURATIONS)}, got "
                         f"{depth!r}")
    h = Input((in_channels,) + tuple(image_size))
    index = 0
    for value in CONFIGURATIONS[depth]:
        if value == 'M':
            h = at(MaxPooling(2, stride=2), f"features.{index}")(h)
            index += 1
            continue
        activation = None if batch_norm else ReLU()
        h = at(Conv((scaled(value, width), 3, 3), padding=1, activation=activation),
               f"features.{index}")(h)
        if batch_norm:
            h = at(BatchNorm(activation=ReLU()), f"features.{index + 1}")(h)
        index += 3 if batch_norm else 2
    h = classifier(Flat()(h), classes, hidden, dropout)
    label = name or f"vgg{depth}{'_bn' if batch_norm else ''}"
    net = Net(h, batch_size=batch_size, dtype=dtype, seed=seed, name=label, loss=loss)
    return kaiming_normal(net, seed)


def vgg11(**options):
    """VGG-11 (configuration A); options as :func:`vgg`."""
    return vgg(11, **options)


def vgg13(**options):
    """VGG-13 (configuration B); options as :func:`vgg`."""
    return vgg(13, **options)


def vgg16(**options):
    """VGG-16 (configuration D); options as :func:`vgg`."""
    return vgg(16, **options)


def vgg19(**options):
    """VGG-19 (configuration E); options as :func:`vgg`."""
    return vgg(19, **options)
