"""LeNet-5 with ReLU and max pooling, for any small grey image size."""

import numpy as np

from devito_ml.activations import ReLU
from devito_ml.layers.conv import Conv
from devito_ml.layers.dense import FullyConnected
from devito_ml.layers.pooling import MaxPooling
from devito_ml.layers.reshape import Flat
from devito_ml.net import Net

__all__ = ['lenet5', 'lenet5_layers']


def lenet5_layers(batch_size, image_size=(28, 28), channels=1, classes=10):
    """The layers of LeNet-5: conv 6@5x5 (pad 2), pool, conv 16@5x5, pool, 120, 84.

    For images smaller than 16 pixels (the 8x8 digits) the second convolution is
    padded by 2 as well, so that the feature maps do not vanish.
    """
    h, w = image_size
    conv2_padding = 2 if min(h, w) < 16 else 0
    layers = [Conv((6, 5, 5), (batch_size, channels, h, w), padding=2,
                   activation=ReLU())]
    layers.append(MaxPooling(2, layers[-1].output_size))
    layers.append(Conv((16, 5, 5), layers[-1].output_size, padding=conv2_padding,
                       activation=ReLU()))
    layers.append(MaxPooling(2, layers[-1].output_size))
    layers.append(Flat(layers[-1].output_size))
    features = layers[-1].output_size[1]
    layers.append(FullyConnected((120, features), (batch_size, features),
                                 activation=ReLU()))
    layers.append(FullyConnected((84, 120), (batch_size, 120), activation=ReLU()))
    layers.append(FullyConnected((classes, 84), (batch_size, 84)))
    return layers


def lenet5(batch_size, image_size=(28, 28), channels=1, classes=10,
           dtype=np.float32, seed=0, loss='cross_entropy'):
    """A LeNet-5 :class:`~devito_ml.Net`.

    Examples
    --------
    >>> net = lenet5(batch_size=4, image_size=(8, 8))
    >>> [layer.name for layer in net.layers]
    ['conv1', 'pool1', 'conv2', 'pool2', 'flat1', 'fc1', 'fc2', 'fc3']
    """
    return Net(lenet5_layers(batch_size, image_size, channels, classes), dtype=dtype,
               loss=loss, seed=seed, name='lenet5')
