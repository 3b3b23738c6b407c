"""ResNet and ResNeXt with torchvision's layer structure (BasicBlock, Bottleneck,
downsampling shortcuts, BatchNorm, global average pooling), as one graph."""

import numpy as np

from devito_ml.activations import ReLU
from devito_ml.graph import Input
from devito_ml.layers.conv import Conv
from devito_ml.layers.dense import FullyConnected
from devito_ml.layers.merge import Add
from devito_ml.layers.normalization import BatchNorm
from devito_ml.layers.pooling import GlobalAvgPooling, MaxPooling
from devito_ml.layers.reshape import Flat
from devito_ml.models.common import at, kaiming_normal
from devito_ml.net import Net

__all__ = ['resnet', 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
           'resnext50_32x4d', 'resnext101_32x8d', 'wide_resnet50_2', 'wide_resnet101_2',
           'DEPTHS']

DEPTHS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
          50: ('bottleneck', (3, 4, 6, 3)), 101: ('bottleneck', (3, 4, 23, 3)),
          152: ('bottleneck', (3, 8, 36, 3))}
EXPANSION = {'basic': 1, 'bottleneck': 4}


def _conv_bn(x, path, bn_path, channels, kernel, stride=1, groups=1, relu=True):
    padding = kernel // 2
    x = at(Conv((channels, kernel, kernel), stride=stride, padding=padding, bias=False,
                groups=groups), path)(x)
    return at(BatchNorm(activation=ReLU() if relu else None), bn_path)(x)


def _block(x, kind, prefix, in_channels, planes, stride, groups, base_width):
    """One BasicBlock or Bottleneck; returns (output node, output channels)."""
    out_channels = planes * EXPANSION[kind]
    if kind == 'basic':
        h = _conv_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", planes, 3, stride)
        h = _conv_bn(h, f"{prefix}.conv2", f"{prefix}.bn2", planes, 3, relu=False)
    else:
        width = int(planes * (base_width / 64.0)) * groups
        h = _conv_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", width, 1)
        h = _conv_bn(h, f"{prefix}.conv2", f"{prefix}.bn2", width, 3, stride, groups)
        h = _conv_bn(h, f"{prefix}.conv3", f"{prefix}.bn3", out_channels, 1,
                     relu=False)
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv_bn(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1",
                            out_channels, 1, stride, relu=False)
    return at(Add(activation=ReLU()), f"{prefix}.add")(h, shortcut), out_channels


def resnet(depth=18, batch_size=8, image_size=(224, 224), in_channels=3, classes=1000,
           width=64, small_input=False, groups=1, width_per_group=64, blocks=None,
           dtype=np.float32, seed=0, name=None, loss='cross_entropy'):
    """A ResNet (or ResNeXt) :class:`~devito_ml.Net`, as torchvision builds it.

    Parameters
    ----------
    depth : int
        18, 34 (BasicBlock), 50, 101, 152 (Bottleneck).
    batch_size, image_size, in_channels, classes
        Input batches ``(batch_size, in_channels) + image_size``; ``classes``
        outputs (logits).
    width : int
        Channels of the stem and the first stage (torchvision: 64); the stages
        have ``width``, ``2 width``, ``4 width``, ``8 width`` planes.
    small_input : bool
        For small images (28x28, 32x32): a 3x3 stride-1 stem without max pooling,
        instead of the 7x7 stride-2 stem and 3x3 stride-2 max pooling.
    groups, width_per_group : int
        ResNeXt's cardinality and group width (Bottleneck only); ResNet is 1, 64.
    blocks : tuple of 4 int, optional
        Blocks per stage instead of the depth's (a shallow net of the same kind,
        for tests and quick experiments).
    dtype, seed, name, loss
        As :class:`~devito_ml.Net`; convolution kernels are drawn as torchvision
        does (Kaiming normal, fan out).

    Examples
    --------
    >>> net = resnet(18, batch_size=2, image_size=(16, 16), classes=10, width=4,
    ...              small_input=True)
    >>> [layer.name for layer in net.layers][:6]
    ['conv1', 'bn1', 'layer1_0_conv1', 'layer1_0_bn1', 'layer1_0_conv2', 'layer1_0_bn2']
    >>> net.layers[-1].path
    'fc'
    """
    if depth not in DEPTHS:
        raise ValueError(f"resnet: `depth` must be one of {sorted(DEPTHS)}, got "
                         f"{depth!r}")
    kind, counts = DEPTHS[depth]
    blocks = counts if blocks is None else tuple(blocks)
    x = Input((in_channels,) + tuple(image_size))
    if small_input:
        h = _conv_bn(x, 'conv1', 'bn1', width, 3)
    else:
        h = _conv_bn(x, 'conv1', 'bn1', width, 7, stride=2)
        h = at(MaxPooling(3, stride=2, padding=1), 'maxpool')(h)
    channels = width
    for stage, (count, planes) in enumerate(zip(blocks, (width, 2 * width, 4 * width,
                                                         8 * width)), start=1):
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            h, channels = _block(h, kind, f"layer{stage}.{index}", channels, planes,
                                 stride, groups, width_per_group)
    h = Flat()(at(GlobalAvgPooling(), 'avgpool')(h))
    h = at(FullyConnected(classes), 'fc')(h)
    label = name or (f"resnext{depth}" if groups > 1 else f"resnet{depth}"
                     if width_per_group == 64 else f"wide_resnet{depth}")
    net = Net(h, batch_size=batch_size, dtype=dtype, seed=seed, name=label, loss=loss)
    return kaiming_normal(net, seed)


def resnet18(**options):
    """ResNet-18 (BasicBlock, 2-2-2-2); options as :func:`resnet`."""
    return resnet(18, **options)


def resnet34(**options):
    """ResNet-34 (BasicBlock, 3-4-6-3); options as :func:`resnet`."""
    return resnet(34, **options)


def resnet50(**options):
    """ResNet-50 (Bottleneck, 3-4-6-3); options as :func:`resnet`."""
    return resnet(50, **options)


def resnet101(**options):
    """ResNet-101 (Bottleneck, 3-4-23-3); options as :func:`resnet`."""
    return resnet(101, **options)


def resnet152(**options):
    """ResNet-152 (Bottleneck, 3-8-36-3); options as :func:`resnet`."""
    return resnet(152, **options)


def resnext50_32x4d(**options):
    """ResNeXt-50 32x4d: ResNet-50 whose 3x3 convolutions have 32 groups of width 4;
    options as :func:`resnet` (at a reduced ``width``, raise ``width_per_group``
    or lower ``groups`` so that each group keeps a channel)."""
    options.setdefault('groups', 32)
    options.setdefault('width_per_group', 4)
    return resnet(50, **options)


def resnext101_32x8d(**options):
    """ResNeXt-101 32x8d: ResNet-101 whose 3x3 convolutions have 32 groups of width
    8; options as :func:`resnet` (see :func:`resnext50_32x4d` on reduced widths)."""
    options.setdefault('groups', 32)
    options.setdefault('width_per_group', 8)
    options.setdefault('name', 'resnext101_32x8d')
    return resnet(101, **options)


def wide_resnet50_2(**options):
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (width per group
    128); options as :func:`resnet`."""
    options.setdefault('width_per_group', 128)
    options.setdefault('name', 'wide_resnet50_2')
    return resnet(50, **options)


def wide_resnet101_2(**options):
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide (width per group
    128); options as :func:`resnet`."""
    options.setdefault('width_per_group', 128)
    options.setdefault('name', 'wide_resnet101_2')
    return resnet(101, **options)
