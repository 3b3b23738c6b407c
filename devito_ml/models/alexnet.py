"""AlexNet with torchvision's layer structure."""

import numpy as np

from devito_ml.activations import ReLU
from devito_ml.graph import Input
from devito_ml.layers.conv import Conv
from devito_ml.layers.dropout import Dropout
from devito_ml.layers.pooling import MaxPooling
from devito_ml.layers.reshape import Flat
from devito_ml.models.common import at, scaled
from devito_ml.models.vgg import classifier
from devito_ml.net import Net

__all__ = ['alexnet']

# (torchvision index, out channels, kernel, stride, padding, max pooling after)
FEATURES = [(0, 64, 11, 4, 2, True), (3, 192, 5, 1, 2, True), (6, 384, 3, 1, 1, False),
            (8, 256, 3, 1, 1, False), (10, 256, 3, 1, 1, True)]


def alexnet(batch_size=8, image_size=(224, 224), in_channels=3, classes=1000,
            width=64, hidden=4096, dropout=0.5, dtype=np.float32, seed=0, name=None,
            loss='cross_entropy'):
    """AlexNet as torchvision builds it: 11x11 stride-4 convolution, 3x3 stride-2
    max pooling, Dropout before each hidden classifier layer.

    Parameters are those of :func:`~devito_ml.models.vgg` (``width`` scales the
    channels by ``width / 64``). torchvision's ``AdaptiveAvgPool2d((6, 6))`` is the
    identity at 224x224 and is left out; smaller images (at least 63x63) give
    smaller final maps, read as they are.

    Examples
    --------
    >>> net = alexnet(batch_size=2, image_size=(64, 64), width=8, hidden=16)
    >>> net.layers[0].kernel.shape
    (8, 3, 11, 11)
    """
    h = Input((in_channels,) + tuple(image_size))
    for index, channels, kernel, stride, padding, pool in FEATURES:
        h = at(Conv((scaled(channels, width), kernel, kernel), stride=stride,
                    padding=padding, activation=ReLU()), f"features.{index}")(h)
        if pool:
            h = at(MaxPooling(3, stride=2), f"features.{index + 2}")(h)
    h = at(Dropout(dropout), 'classifier.0')(Flat()(h))
    h = classifier(h, classes, hidden, dropout, first=1)
    return Net(h, batch_size=batch_size, dtype=dtype, seed=seed, name=name or 'alexnet',
               loss=loss)
