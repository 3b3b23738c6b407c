"""devito_ml: convolutional networks whose forward and backward passes are generated
C/OpenMP code, built by Devito from the equations each layer emits."""

from devito_ml.errors import CheckpointError, NonFiniteError
from devito_ml.activations import Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from devito_ml.graph import Input
from devito_ml.layer import Layer
from devito_ml.layers.conv import Conv
from devito_ml.layers.crop import Crop
from devito_ml.layers.dropout import Dropout
from devito_ml.layers.elementwise import ActivationLayer
from devito_ml.layers.dense import FullyConnected, FullyConnectedSoftmax
from devito_ml.layers.pooling import (AdaptiveAvgPooling, AdaptiveMaxPooling,
                                      AvgPooling, GlobalAvgPooling, MaxPooling,
                                      Subsampling)
from devito_ml.layers.merge import Add, Concat
from devito_ml.layers.normalization import BatchNorm
from devito_ml.layers.reshape import Flat
from devito_ml.net import Net
from devito_ml.validation import LayerArgumentError, ShapeError

__all__ = ['Layer', 'Input', 'Conv', 'MaxPooling', 'AvgPooling', 'GlobalAvgPooling',
           'AdaptiveAvgPooling', 'AdaptiveMaxPooling', 'Crop',
           'Subsampling', 'Flat', 'BatchNorm', 'Dropout', 'Add', 'Concat',
           'ActivationLayer',
           'FullyConnected', 'FullyConnectedSoftmax', 'Net',
           'Identity', 'ReLU', 'LeakyReLU', 'Sigmoid', 'Tanh',
           'LayerArgumentError', 'ShapeError', 'NonFiniteError', 'CheckpointError']
