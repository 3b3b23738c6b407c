"""Convert a ``torch.nn.Module`` built from supported modules into a devito_ml Net with
the same weights and the same outputs."""

import numpy as np

from devito_ml import activations
from devito_ml.graph import Input
from devito_ml.interop.state import load_torch_state_dict
from devito_ml.layers.conv import Conv
from devito_ml.layers.crop import Crop
from devito_ml.layers.dense import FullyConnected
from devito_ml.layers.dropout import Dropout
from devito_ml.layers.elementwise import ActivationLayer
from devito_ml.layers.merge import Add
from devito_ml.layers.normalization import BatchNorm
from devito_ml.layers.pooling import (AdaptiveAvgPooling, AdaptiveMaxPooling,
                                      AvgPooling, GlobalAvgPooling, MaxPooling)
from devito_ml.layers.reshape import Flat
from devito_ml.models.common import at
from devito_ml.net import Net

__all__ = ['from_torch', 'UnsupportedModuleError']


IDENTITY = object()
"""What a module that changes nothing converts to: no layer."""


class UnsupportedModuleError(TypeError):
    """A torch module (or one of its options) that devito_ml cannot convert."""


def from_torch(module, input_shape, batch_size, dtype=np.float32, name='net',
               loss='cross_entropy'):
    """A :class:`~devito_ml.Net` computing what ``module`` computes, with its weights.

    Supported: ``Sequential``, ``Conv2d`` (zero padding, ``'same'`` included: where
    torch pads one side more, a :class:`~devito_ml.Crop` follows), ``BatchNorm2d``,
    ``MaxPool2d`` and ``AvgPool2d`` (every option but ``return_indices`` and
    ``divisor_override``), ``AdaptiveAvgPool2d`` and ``AdaptiveMaxPool2d`` to any
    size, ``Dropout``, ``ReLU``,
    ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``Identity``, ``Flatten``, ``Linear``;
    torchvision-style ``BasicBlock``/``Bottleneck`` (``conv1``, ``bn1``, ...,
    ``downsample``), ResNets (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1``-``layer4``, ``avgpool``, ``fc``) and VGG/AlexNet-style modules
    (``features``, ``avgpool``, ``classifier``). An activation module right after
    a layer with an activation slot is fused into it.

    Parameters
    ----------
    module : torch.nn.Module
    input_shape : tuple of int
        One sample's shape, ``(channels, rows, cols)``.
    batch_size : int
    dtype, name, loss
        As :class:`~devito_ml.Net`.

    Raises
    ------
    UnsupportedModuleError
        Naming the module's type and its path in the module tree.

    Examples
    --------
    >>> import torch
    >>> module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                              torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> net = from_torch(module, (1, 4, 4), batch_size=2)
    >>> [layer.name for layer in net.layers]
    ['m0', 'm2', 'm3']
    """
    import torch
    shapes = _shapes(module, input_shape, torch)
    converter = _Converter(torch, shapes)
    output = converter.convert(module, Input(tuple(input_shape)), '')
    net = Net(output, batch_size=batch_size, dtype=dtype, name=name, loss=loss)
    load_torch_state_dict(net, module.state_dict())
    return net


def _shape(value):
    """A tensor's sample shape; None for what is not a tensor (an LSTM's tuple)."""
    shape = getattr(value, 'shape', None)
    return tuple(shape[1:]) if shape is not None else None


def _shapes(module, input_shape, torch):
    """Input and output shapes of every submodule on one zero sample, by path."""
    shapes, hooks = {}, []
    for path, child in module.named_modules():
        hooks.append(child.register_forward_hook(
            lambda m, i, o, path=path: shapes.__setitem__(
                path, (_shape(i[0]), _shape(o)))))
    try:
        with torch.no_grad():
            training = module.training
            module.eval()
            parameter = next(module.parameters(), None)
            kind = parameter.dtype if parameter is not None else torch.float32
            module(torch.zeros((1,) + tuple(input_shape), dtype=kind))
            module.train(training)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _reach(conv):
    """Rows and columns a torch ``Conv2d``'s dilated kernel spans, less one."""
    return [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]


class _Converter:
    def __init__(self, torch, shapes):
        self.nn, self.shapes = torch.nn, shapes
        self.activations = {torch.nn.ReLU: lambda m: activations.ReLU(),
                            torch.nn.Sigmoid: lambda m: activations.Sigmoid(),
                            torch.nn.Tanh: lambda m: activations.Tanh(),
                            torch.nn.LeakyReLU: lambda m: activations.LeakyReLU(
                                m.negative_slope)}

    @staticmethod
    def join(path, name):
        return f"{path}.{name}" if path else name

    def refuse(self, module, path, why=''):
        raise UnsupportedModuleError(
            f"from_torch: cannot convert `{type(module).__name__}` at "
            f"`{path or '<root>'}`{': ' + why if why else ''}")

    def convert(self, module, node, path):
        nn = self.nn
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                node = self.convert(child, node, self.join(path, child_name))
            return node
        if type(module) in self.activations:
            return self.activate(node, self.activations[type(module)](module))
        if isinstance(module, nn.Identity):
            return node
        if isinstance(module, nn.Conv2d) and module.padding == 'same' and \
                module.padding_mode == 'zeros':
            return self.same_padded(module, node, path)
        leaf = self.leaf(module, path)
        if leaf is IDENTITY:
            return node
        if leaf is not None:
            return at(leaf, path)(node)
        if all(hasattr(module, n) for n in ('conv1', 'bn1', 'conv2', 'bn2')) and \
                not hasattr(module, 'layer1'):
            return self.block(module, node, path)
        if all(hasattr(module, f"layer{i}") for i in range(1, 5)):
            return self.resnet(module, node, path)
        if hasattr(module, 'features') and hasattr(module, 'classifier'):
            node = self.convert(module.features, node, self.join(path, 'features'))
            if hasattr(module, 'avgpool'):
                node = self.convert(module.avgpool, node, self.join(path, 'avgpool'))
            node = Flat()(node)
            return self.convert(module.classifier, node, self.join(path, 'classifier'))
        self.refuse(module, path, 'not a supported module or structure')

    def activate(self, node, activation):
        """Fuse into the layer before when it has an identity activation slot."""
        layer = node.layer
        if layer is not None and isinstance(getattr(layer, 'activation', None),
                                            activations.Identity) \
                and not isinstance(layer, ActivationLayer):
            layer.activation = activation
            if hasattr(layer, 'check_activation'):
                layer.check_activation()
            return node
        return ActivationLayer(activation)(node)

    def leaf(self, module, path):
        nn = self.nn
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != 'zeros':
                self.refuse(module, path, 'only zero padding')
            padding = module.padding
            if padding == 'same':   # both sides by torch's larger side: see same_padded
                padding = tuple(-(-r // 2) for r in _reach(module))
            return Conv((module.out_channels,) + tuple(module.kernel_size),
                        stride=module.stride, padding=padding,
                        dilation=module.dilation, groups=module.groups,
                        bias=module.bias is not None)
        if isinstance(module, nn.BatchNorm2d):
            if module.momentum is None or not module.track_running_stats:
                self.refuse(module, path, 'needs a momentum and running statistics')
            return BatchNorm(eps=module.eps, momentum=module.momentum,
                             affine=module.affine)
        if isinstance(module, nn.MaxPool2d):
            if module.return_indices:
                self.refuse(module, path, 'no return_indices')
            return MaxPooling(module.kernel_size, stride=module.stride,
                              padding=module.padding, dilation=module.dilation,
                              ceil_mode=module.ceil_mode)
        if isinstance(module, nn.AvgPool2d):
            if module.divisor_override is not None:
                self.refuse(module, path, 'no divisor_override')
            return AvgPooling(module.kernel_size, stride=module.stride,
                              padding=module.padding, ceil_mode=module.ceil_mode,
                              count_include_pad=module.count_include_pad)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            given, produced = self.shapes.get(path, (None, None))
            if produced is not None and produced[1:] == (1, 1):
                return GlobalAvgPooling()
            if produced is not None and produced == given:
                return IDENTITY
            return AdaptiveAvgPooling(module.output_size)
        if isinstance(module, nn.AdaptiveMaxPool2d):
            if module.return_indices:
                self.refuse(module, path, 'no return_indices')
            return AdaptiveMaxPooling(module.output_size)
        if isinstance(module, nn.Dropout):
            return Dropout(module.p)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                self.refuse(module, path, 'only start_dim=1, end_dim=-1')
            return Flat()
        if isinstance(module, nn.Linear):
            return FullyConnected((module.out_features, module.in_features),
                                  bias=module.bias is not None)
        return None

    def same_padded(self, module, node, path):
        """``Conv2d(padding='same')``: where torch pads one more row or column after
        than before (an even reach ``dilation * (kernel - 1)``), both sides are
        padded by the larger amount and a :class:`Crop` drops the extra first row
        or column."""
        node = at(self.leaf(module, path), path)(node)
        extra = tuple(r % 2 for r in _reach(module))
        return at(Crop(before=extra), self.join(path, 'crop'))(node) if any(extra) \
            else node

    def block(self, module, node, path):
        """A torchvision BasicBlock or Bottleneck."""
        names = ['conv1', 'bn1', 'conv2', 'bn2'] + \
            (['conv3', 'bn3'] if hasattr(module, 'conv3') else [])
        h = node
        for index in range(0, len(names), 2):
            h = self.convert(getattr(module, names[index]), h,
                             self.join(path, names[index]))
            h = self.convert(getattr(module, names[index + 1]), h,
                             self.join(path, names[index + 1]))
            if index + 2 < len(names):
                h = self.activate(h, activations.ReLU())
        shortcut = node
        if getattr(module, 'downsample', None) is not None:
            shortcut = self.convert(module.downsample, node,
                                    self.join(path, 'downsample'))
        return at(Add(activation=activations.ReLU()), self.join(path, 'add'))(
            h, shortcut)

    def resnet(self, module, node, path):
        """A torchvision ResNet: stem, four stages, global pooling, classifier."""
        node = self.convert(module.conv1, node, self.join(path, 'conv1'))
        node = self.convert(module.bn1, node, self.join(path, 'bn1'))
        node = self.activate(node, activations.ReLU())
        if isinstance(getattr(module, 'maxpool', None), self.nn.Module):
            node = self.convert(module.maxpool, node, self.join(path, 'maxpool'))
        for stage in range(1, 5):
            node = self.convert(getattr(module, f"layer{stage}"), node,
                                self.join(path, f"layer{stage}"))
        node = self.convert(module.avgpool, node, self.join(path, 'avgpool'))
        return self.convert(module.fc, Flat()(node), self.join(path, 'fc'))
