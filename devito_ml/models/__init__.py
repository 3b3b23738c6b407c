"""Reference networks built from devito_ml layers, with torchvision's structure."""

from devito_ml.models.alexnet import alexnet
from devito_ml.models.lenet import lenet5
from devito_ml.models.resnet import (resnet, resnet18, resnet34, resnet50, resnet101,
                                     resnet152, resnext50_32x4d, resnext101_32x8d,
                                     wide_resnet50_2, wide_resnet101_2)
from devito_ml.models.vgg import vgg, vgg11, vgg13, vgg16, vgg19

__all__ = ['lenet5', 'alexnet', 'vgg', 'vgg11', 'vgg13', 'vgg16', 'vgg19', 'resnet',
           'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
           'resnext50_32x4d', 'resnext101_32x8d', 'wide_resnet50_2', 'wide_resnet101_2']
