"""devito_ml: convolutional networks whose forward pass, backward pass and update
are generated C/OpenMP code, built by Devito from equations each layer emits."""

from devito_ml.activations import Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from devito_ml.layers.conv import Conv
from devito_ml.validation import LayerArgumentError, ShapeError

__all__ = ['Conv', 'Identity', 'LeakyReLU', 'ReLU', 'Sigmoid', 'Tanh',
           'LayerArgumentError', 'ShapeError']
