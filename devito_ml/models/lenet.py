"""LeNet-5 with ReLU and max pooling, for any small grey image size."""

import numpy as np

from devito_ml.activations import ReLU
from devito_ml.layers.conv import Conv
from devito_ml.layers.dense import FullyConnected
from devito_ml.layers.pooling import MaxPooling
from devito_ml.layers.reshape import Flat
from devito_ml.net import Net

__all__ = ['lenet5', 'lenet5_layers']


def lenet5_layers(image_size=(28, 28), classes=10):
    """The layers of LeNet-5: conv 6@5x5 (pad 2), pool, conv 16@5x5, pool, 120, 84.

    Sizes are inferred by the net. For images smaller than 16 pixels (the 8x8
    digits) the second convolution is padded by 2 as well, so that the feature maps
    do not vanish.
    """
    conv2_padding = 2 if min(image_size) < 16 else 0
    return [Conv((6, 5, 5), padding=2, activation=ReLU()), MaxPooling(2),
            Conv((16, 5, 5), padding=conv2_padding, activation=ReLU()), MaxPooling(2),
            Flat(), FullyConnected(120, activation=ReLU()),
            FullyConnected(84, activation=ReLU()), FullyConnected(classes)]


def lenet5(batch_size, image_size=(28, 28), channels=1, classes=10,
           dtype=np.float32, seed=0, loss='cross_entropy'):
    """A LeNet-5 :class:`~devito_ml.Net`.

    Examples
    --------
    >>> net = lenet5(batch_size=4, image_size=(8, 8))
    >>> [layer.name for layer in net.layers]
    ['conv1', 'pool1', 'conv2', 'pool2', 'flat1', 'fc1', 'fc2', 'fc3']
    """
    return Net(lenet5_layers(image_size, classes), dtype=dtype, loss=loss, seed=seed,
               name='lenet5', batch_size=batch_size,
               input_shape=(channels,) + tuple(image_size))
