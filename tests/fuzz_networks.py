"""Property-based fuzzing of generated code: hypothesis draws small networks
(convolutions with any kernel, stride, padding, dilation and groups, max and average
pooling, BatchNorm, Dropout, activations, custom layers of forward maths alone with
mirrored index maps and pointwise functions, whose adjoints are derived
(``drawn_layers.py``), non-square maps, batch sizes, dtypes),
builds the fused train-step operator (forward, loss, backward, SGD update) and
compares the output, loss, every gradient and the updated parameters with torch.

Not collected by default: ``tests/test_fuzz.py`` runs this file under
AddressSanitizer (every operator compiled with ``-fsanitize=address``, every array
red-zoned), where any read or write out of bounds aborts the run with a report.
``DEVITO_ML_FUZZ_EXAMPLES`` sets the number of networks (default 60);
``DEVITO_ML_FUZZ_SEED`` draws another set (default: the same set every run).
"""

import os

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from devito_ml import (AvgPooling, BatchNorm, Conv, Dropout, Flat, FullyConnected,
                       LeakyReLU, MaxPooling, Net, ReLU, Sigmoid, Tanh)
from devito_ml.optim import SGD
from drawn_layers import FUNCTIONS, Drawn, TorchDrawn
from reference import TOLERANCE, relative_error

EXAMPLES = int(os.environ.get('DEVITO_ML_FUZZ_EXAMPLES', '60'))
SEED = os.environ.get('DEVITO_ML_FUZZ_SEED')

ACTIVATIONS = {'identity': None, 'relu': ReLU, 'leaky': lambda: LeakyReLU(0.1),
               'tanh': Tanh, 'sigmoid': Sigmoid}


def output_extent(size, kernel, stride, padding, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@st.composite
def window(draw, rows, cols, largest, dilate):
    """(kernel, stride, padding, dilation) pairs whose output is at least 1x1."""
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilate else (1, 1)
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    kernel = []
    for size, p, d in zip((rows, cols), padding, dilation):
        fits = (size + 2 * p - 1) // d + 1
        kernel.append(draw(st.integers(1, max(1, min(largest, fits)))))
    if not dilate:    # pooling: torch wants padding at most half the window
        padding = tuple(min(p, k // 2) for p, k in zip(padding, kernel))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return tuple(kernel), stride, padding, dilation


@st.composite
def networks(draw):
    """A list of layer specifications and the data to run them on."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    batch = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 4)), draw(st.integers(3, 10)), draw(st.integers(3, 10)))
    first, specs = shape, []
    for _ in range(draw(st.integers(1, 3))):
        channels, rows, cols = shape
        kind = draw(st.sampled_from(['conv', 'conv', 'maxpool', 'avgpool', 'batchnorm',
                                     'dropout', 'drawn']))
        if kind == 'conv':
            largest = draw(st.sampled_from([3, 5, 9]))       # 9: looped taps too
            kernel, stride, padding, dilation = draw(window(rows, cols, largest, True))
            out = draw(st.integers(1, 5))
            common = np.gcd(channels, out)
            groups = draw(st.sampled_from([g for g in range(1, common + 1)
                                           if common % g == 0]))
            spec = dict(kind=kind, out=out, kernel=kernel, stride=stride,
                        padding=padding, dilation=dilation, groups=groups,
                        bias=draw(st.booleans()),
                        activation=draw(st.sampled_from(sorted(ACTIVATIONS))))
            shape = (out,) + tuple(output_extent(s, k, st_, p, d) for s, k, st_, p, d in
                                   zip((rows, cols), kernel, stride, padding, dilation))
        elif kind == 'drawn':
            kernel, stride, padding, dilation = draw(window(rows, cols, 3, True))
            spec = dict(kind=kind, out=draw(st.integers(1, 4)), kernel=kernel,
                        stride=stride, padding=padding, dilation=dilation,
                        mirror=(draw(st.booleans()), draw(st.booleans())),
                        function=draw(st.sampled_from(sorted(FUNCTIONS))))
            shape = (spec['out'],) + tuple(
                output_extent(s, k, st_, p, d) for s, k, st_, p, d in
                zip((rows, cols), kernel, stride, padding, dilation))
        elif kind in ('maxpool', 'avgpool'):
            kernel, stride, padding, _ = draw(window(rows, cols, 4, False))
            spec = dict(kind=kind, kernel=kernel, stride=stride, padding=padding)
            shape = (channels,) + tuple(output_extent(s, k, st_, p) for s, k, st_, p in
                                        zip((rows, cols), kernel, stride, padding))
        elif kind == 'batchnorm':
            if batch * rows * cols < 2:      # torch refuses one value per channel
                continue
            spec = dict(kind=kind, affine=draw(st.booleans()),
                        eps=draw(st.sampled_from([1e-5, 1e-3])),
                        momentum=draw(st.sampled_from([0.1, 0.5])))
        else:
            spec = dict(kind=kind, p=draw(st.sampled_from([0.25, 0.5])))
        specs.append(spec)
    classes = draw(st.integers(2, 4))
    return dict(dtype=dtype, batch=batch, input=first, specs=specs, classes=classes,
                seed=draw(st.integers(0, 2 ** 16)))


def build(config, input_shape):
    """The devito_ml net of ``config`` (its torch twin is :func:`twin`)."""
    layers = []
    for spec in config['specs']:
        kind = spec['kind']
        if kind == 'conv':
            activation = ACTIVATIONS[spec['activation']]
            layers.append(Conv((spec['out'],) + spec['kernel'], stride=spec['stride'],
                               padding=spec['padding'], dilation=spec['dilation'],
                               groups=spec['groups'], bias=spec['bias'],
                               activation=activation() if activation else None))
        elif kind in ('maxpool', 'avgpool'):
            pooling = MaxPooling if kind == 'maxpool' else AvgPooling
            layers.append(pooling(spec['kernel'], stride=spec['stride'],
                                  padding=spec['padding']))
        elif kind == 'drawn':
            layers.append(Drawn(**{k: v for k, v in spec.items() if k != 'kind'}))
        elif kind == 'batchnorm':
            layers.append(BatchNorm(eps=spec['eps'], momentum=spec['momentum'],
                                    affine=spec['affine']))
        else:
            layers.append(Dropout(spec['p']))
    layers += [Flat(), FullyConnected(config['classes'])]
    return Net(layers, dtype=config['dtype'], batch_size=config['batch'],
               input_shape=input_shape, seed=config['seed'])


class Masked(torch.nn.Module):
    """Dropout with devito_ml's mask of the step."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return x * torch.from_numpy(self.layer.mask.data[:x.shape[0]].copy()).to(x.dtype)


def twin(net, dtype):
    """A torch Sequential computing what ``net`` computes, with its parameters."""
    kind = torch.float64 if dtype == np.float64 else torch.float32
    modules = []
    for layer in net.layers:
        name = type(layer).__name__
        if name == 'Conv':
            module = torch.nn.Conv2d(layer.input_size[1], layer.kernel_size[0],
                                     layer.kernel_size[1:], stride=layer.stride,
                                     padding=layer.padding, dilation=layer.dilation,
                                     groups=layer.groups, bias=layer.has_bias)
        elif name == 'MaxPooling':
            module = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif name == 'AvgPooling':
            module = torch.nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
        elif name == 'BatchNorm':
            module = torch.nn.BatchNorm2d(layer.input_size[1], eps=layer.eps,
                                          momentum=layer.momentum, affine=layer.affine)
        elif name == 'Dropout':
            module = Masked(layer)
        elif name == 'Drawn':
            module = TorchDrawn(layer, kind)
        elif name == 'Flat':
            module = torch.nn.Flatten()
        else:
            module = torch.nn.Linear(layer.weight_size[1], layer.weight_size[0])
        module = module.to(kind)
        with torch.no_grad():
            for mine, theirs in zip(layer.parameters().values(), module.parameters(),
                                    strict=True):
                theirs.copy_(torch.from_numpy(np.asarray(mine.data).astype(dtype)))
        modules.append(module)
        activation = getattr(layer, 'activation', None)
        if activation is not None and not activation.is_identity:
            table = {'ReLU': torch.nn.ReLU(), 'Tanh': torch.nn.Tanh(),
                     'Sigmoid': torch.nn.Sigmoid(),
                     'LeakyReLU': torch.nn.LeakyReLU(getattr(activation,
                                                             'negative_slope', 0))}
            modules.append(table[type(activation).__name__])
    return torch.nn.Sequential(*modules).train()


def torch_step(model, dtype, x, labels):
    """Output, loss, gradients and parameters after one SGD step, in torch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                                weight_decay=0.01)
    output = model(torch.from_numpy(x.astype(dtype)))
    loss = torch.nn.functional.cross_entropy(output, torch.from_numpy(labels))
    loss.backward()
    gradients = [p.grad.numpy().copy() for p in model.parameters()]
    optimizer.step()
    return (output.detach().numpy(), loss.item(), gradients,
            [p.detach().numpy().copy() for p in model.parameters()])


def agree(mine, theirs, exact, dtype, what):
    """float64 within 1e-10; float32 within 1e-4, or no farther from the float64
    result than 3x torch's own float32 (round-off amplified by a BatchNorm over
    few values, or a tie at a max or a ReLU kink)."""
    error = relative_error(mine, theirs)
    if error <= TOLERANCE[dtype]:
        return
    assert dtype == np.float32, f"{what}: relative error {error:.2e}"
    ours, torch_own = relative_error(mine, exact), relative_error(theirs, exact)
    assert ours <= max(3 * torch_own, TOLERANCE[dtype]), \
        f"{what}: {ours:.2e} from float64, torch float32 {torch_own:.2e}"


def run_config(config):
    rng = np.random.default_rng(config['seed'])
    dtype, batch = config['dtype'], config['batch']
    net = build(config, config['input'])
    x = rng.standard_normal((batch,) + tuple(config['input'])).astype(dtype)
    labels = rng.integers(0, config['classes'], batch)
    twins = twin(net, dtype), twin(net, np.float64)      # the parameters before
    parameters = [f for layer in net.layers for f in layer.parameters().values()]
    loss, output = net.train_step(x, labels, SGD(net, lr=0.1, momentum=0.9,
                                                 weight_decay=0.01))
    expected = torch_step(twins[0], dtype, x, labels)    # dropout: the step's mask
    exact = torch_step(twins[1], np.float64, x, labels)
    agree(output, expected[0], exact[0], dtype, 'output')
    agree(loss, expected[1], exact[1], dtype, 'loss')
    for (name, mine), theirs, truth in zip(net.gradients().items(), expected[2],
                                           exact[2], strict=True):
        agree(mine, theirs, truth, dtype, f"gradient of {name}")
    for f, theirs, truth in zip(parameters, expected[3], exact[3], strict=True):
        agree(f.data, theirs, truth, dtype, f"{f.name} after the step")


def _settings(test):
    test = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None,
                    suppress_health_check=list(HealthCheck),
                    print_blob=True)(test)
    return seed(int(SEED))(test) if SEED is not None else test


@_settings
@given(networks())
def test_generated_train_step_agrees_with_torch(config):
    for kind in sorted({spec['kind'] for spec in config['specs']}):
        event(f"has {kind}")
    run_config(config)
