"""Plain ``torch.nn`` twins of the models of :mod:`devito_ml.models`.

Same options, torchvision's module names, so that state dicts load both ways
(:func:`~devito_ml.interop.torch_state_dict`): the tests compare every model with
its twin, and ``devito-ml bench`` times them side by side. torchvision is not
needed (there is no build of it here). Imports torch: import this module on use.
"""

import torch
from torch import nn


def scaled(channels, width):
    """``channels`` of the full-width model at ``width`` (64 is full width)."""
    return max(1, channels * width // 64)


class MaskedDropout(nn.Module):
    """Dropout whose mask is set from outside (devito_ml's), for exact comparison."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x * self.mask if self.training else x


class BasicBlock(nn.Module):
    """torchvision's two 3x3 convolutions with BatchNorm and a shortcut."""

    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample, groups, base_width):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's 1x1, 3x3 (grouped for ResNeXt), 1x1 block with a shortcut."""

    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample, groups, base_width):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet, with the options of :func:`devito_ml.models.resnet`."""

    def __init__(self, block, layers, classes, width, in_channels, small_input,
                 groups=1, width_per_group=64):
        super().__init__()
        self.inplanes, self.groups, self.base_width = width, groups, width_per_group
        self.small_input = small_input
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(block, width, layers[0], 1)
        self.layer2 = self._stage(block, 2 * width, layers[1], 2)
        self.layer3 = self._stage(block, 4 * width, layers[2], 2)
        self.layer4 = self._stage(block, 8 * width, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # the last stage's channels (fewer than 8 width with empty stages)
        self.fc = nn.Linear(self.inplanes, classes)

    def _stage(self, block, planes, count, stride):
        blocks = []
        for index in range(count):
            s = stride if index == 0 else 1
            downsample = None
            if s != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, s, bias=False),
                    nn.BatchNorm2d(planes * block.expansion))
            blocks.append(block(self.inplanes, planes, s, downsample, self.groups,
                                self.base_width))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if not self.small_input:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


RESNETS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
           50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
           152: (Bottleneck, (3, 8, 36, 3))}


def resnet(depth, classes, width, in_channels, small_input, groups=1,
           width_per_group=64, blocks=None):
    """The twin of :func:`devito_ml.models.resnet` with the same options.

    Parameters
    ----------
    depth : int
        18, 34, 50, 101 or 152.
    classes, width, in_channels, small_input, groups, width_per_group
        As :func:`devito_ml.models.resnet`.
    blocks : tuple of 4 int, optional
        Blocks per stage instead of the depth's; a stage of 0 blocks is left out.

    Returns
    -------
    ResNet
    """
    block, layers = RESNETS[depth]
    layers = blocks or layers
    return ResNet(block, layers, classes, width, in_channels, small_input, groups,
                  width_per_group)


def classifier(features, classes, hidden, alexnet=False, dropout=MaskedDropout):
    """VGG's (or AlexNet's) three fully connected layers with dropout."""
    if alexnet:
        return nn.Sequential(dropout(), nn.Linear(features, hidden), nn.ReLU(),
                             dropout(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, classes))
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), dropout(),
                         nn.Linear(hidden, hidden), nn.ReLU(), dropout(),
                         nn.Linear(hidden, classes))


class FeaturesClassifier(nn.Module):
    """VGG and AlexNet: features, flatten, classifier."""

    def __init__(self, features, classifier):
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


VGG = {11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
       13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
       16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512,
            512, 512, 'M'],
       19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512,
            'M', 512, 512, 512, 512, 'M']}


def vgg(depth, batch_norm, image_size, in_channels, classes, width, hidden,
        dropout=MaskedDropout):
    """The twin of :func:`devito_ml.models.vgg` (11, 13, 16 or 19 layers)."""
    modules, channels, size = [], in_channels, list(image_size)
    for value in VGG[depth]:
        if value == 'M':
            modules.append(nn.MaxPool2d(2, 2))
            size = [s // 2 for s in size]
            continue
        out = scaled(value, width)
        modules.append(nn.Conv2d(channels, out, 3, padding=1))
        if batch_norm:
            modules.append(nn.BatchNorm2d(out))
        modules.append(nn.ReLU())
        channels = out
    return FeaturesClassifier(nn.Sequential(*modules),
                              classifier(channels * size[0] * size[1], classes, hidden,
                                         dropout=dropout))


def alexnet(image_size, in_channels, classes, width, hidden, dropout=MaskedDropout):
    """The twin of :func:`devito_ml.models.alexnet`."""
    c = [scaled(v, width) for v in (64, 192, 384, 256, 256)]
    features = nn.Sequential(
        nn.Conv2d(in_channels, c[0], 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    with torch.no_grad():
        features_out = features(torch.zeros((1, in_channels) + tuple(image_size)))
    return FeaturesClassifier(features, classifier(features_out[0].numel(), classes,
                                                   hidden, alexnet=True,
                                                   dropout=dropout))
