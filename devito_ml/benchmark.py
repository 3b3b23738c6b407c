"""``devito-ml bench``: devito_ml against PyTorch, side by side in one process.

Every case is timed in interleaved rounds (devito_ml, PyTorch NCHW, PyTorch
channels_last, devito_ml, ...), each round the mean of ``repeat`` calls after a warm
one; min and median over rounds are reported. PyTorch is taken at its better memory
format (by median); the ratio is devito_ml's median over PyTorch's, above 1 when
devito_ml is slower. Training steps include the loss and an SGD momentum update on
both sides, and a third column, ``torch.compile`` (inductor, default mode, model and
input channels_last, the optimizer step eager, warmed by 4 steps: it recompiles as
gradients appear), with its own ratio. Both run on the same number of threads.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

__all__ = ['run_benchmarks', 'interleaved', 'Case']

LENET_BATCHES = (1, 16, 64, 256)


class Case:
    """One comparison: a devito_ml callable and torch callables by memory format.

    Parameters
    ----------
    name : str
    ours : callable
    theirs : dict of str to callable
        ``{'nchw': ..., 'channels_last': ...}``.
    flops : float, optional
        Floating-point operations of one call (for GFLOP/s).
    group : str, optional
        Which of ``GROUPS`` the case belongs to.
    compiled : callable, optional
        The same step through ``torch.compile``: a column of its own, never taken
        as PyTorch's better format.
    """

    def __init__(self, name, ours, theirs, flops=None, group=None, compiled=None):
        self.name, self.ours, self.theirs = name, ours, theirs
        self.flops, self.group, self.compiled = flops, group, compiled


def interleaved(functions, rounds, repeat):
    """Seconds per call of each function, one value per round, rounds interleaved."""
    times = {name: [] for name in functions}
    for function in functions.values():
        function()                                   # warm: compile, allocate
    for _ in range(rounds):
        for name, function in functions.items():
            function()
            began = time.perf_counter()
            for _ in range(repeat):
                function()
            times[name].append((time.perf_counter() - began) / repeat)
    return times


COMPILED = 'torch.compile'
"""The name of the ``torch.compile`` column in the timings."""


def _functions(case):
    """Every callable of ``case`` by column name."""
    functions = {'devito_ml': case.ours, **case.theirs}
    if case.compiled is not None:
        functions[COMPILED] = case.compiled
    return functions


def _summary(case, times):
    ours = times['devito_ml']
    formats = {name: np.median(values) for name, values in times.items()
               if name not in ('devito_ml', COMPILED)}
    best = min(formats, key=formats.get)
    entry = {'case': case.name, 'group': case.group,
             'devito_ml_min_ms': 1e3 * min(ours),
             'devito_ml_median_ms': 1e3 * float(np.median(ours)),
             'torch_format': best, 'torch_min_ms': 1e3 * min(times[best]),
             'torch_median_ms': 1e3 * float(formats[best]),
             'torch_by_format_median_ms': {k: 1e3 * float(v)
                                           for k, v in formats.items()},
             'ratio': float(np.median(ours) / formats[best])}
    if COMPILED in times:
        compiled = float(np.median(times[COMPILED]))
        entry.update(torch_compile_min_ms=1e3 * min(times[COMPILED]),
                     torch_compile_median_ms=1e3 * compiled,
                     ratio_to_compile=float(np.median(ours) / compiled))
    if case.flops:
        entry['devito_ml_gflops'] = case.flops / np.median(ours) / 1e9
        entry['torch_gflops'] = case.flops / formats[best] / 1e9
    return entry


# -- cases ----------------------------------------------------------------------------

def torch_train_step(torch, model, x, labels, memory_format, adam=False):
    """A callable running one PyTorch training step of ``model`` (cross entropy,
    SGD with momentum, or Adam) on ``x`` in ``memory_format``."""
    model = model.to(memory_format=memory_format)
    x = torch.from_numpy(x).contiguous(memory_format=memory_format) if x.ndim == 4 \
        else torch.from_numpy(x)
    labels = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3) if adam else \
        torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return step


COMPILE_WARMUP_STEPS = 4
"""Steps run when a ``torch.compile`` step is made: its first compiles, the next
recompile as gradients and optimizer buffers appear (not timed)."""


def torch_compiled_train_step(torch, model, x, labels):
    """:func:`torch_train_step` through ``torch.compile`` (default mode), model and
    input channels_last, the optimizer step eager; compiled and warmed here."""
    model = model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    x = torch.from_numpy(x)
    x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
    labels = torch.from_numpy(labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(compiled(x), labels).backward()
        optimizer.step()
    for _ in range(COMPILE_WARMUP_STEPS):
        step()
    return step


def _train_case(name, net, torch_model, rng, group=None, compiled=True):
    import torch
    from devito_ml.optim import SGD
    batch = net.input_size[0]
    x = rng.random(net.input_size, dtype=np.float32)
    labels = rng.integers(0, net.output_size[1], batch)
    optimizer = SGD(net, lr=1e-3, momentum=0.9)
    formats = {'nchw': torch.contiguous_format}
    if x.ndim == 4:
        formats['channels_last'] = torch.channels_last
    theirs = {key: torch_train_step(torch, _copy(torch_model), x, labels, fmt)
              for key, fmt in formats.items()}
    compiled = torch_compiled_train_step(torch, _copy(torch_model), x, labels) \
        if compiled else None
    return Case(name, lambda: net.train_step(x, labels, optimizer), theirs,
                group=group, compiled=compiled)


def _copy(module):
    import copy
    return copy.deepcopy(module)


def _tutorial_net():
    from sympy import Max
    from devito_ml import (Conv, Flat, FullyConnectedSoftmax, Net, ReLU, Subsampling)
    return Net([Subsampling((2, 2), (1, 2, 4, 4), function=lambda w: Max(*w)),
                Conv((2, 2, 2), (1, 2, 3, 3), activation=ReLU()), Flat((1, 2, 2, 2)),
                FullyConnectedSoftmax((3, 8), (1, 8))], seed=0)


def _layer_case(name, layer, module, shape, rng, flops, backward):
    """Forward (or forward and backward) of one layer, standalone."""
    import torch
    x = rng.standard_normal(shape).astype(np.float32)
    layer.forward(x)
    upstream = rng.standard_normal(layer.output_size).astype(np.float32)
    forward, adjoint = layer.forward_operator, layer.backward_operator
    batch = shape[0]
    if backward:
        layer.backward(upstream)

        def ours():
            forward.run(batch)
            adjoint.run(batch)
    else:
        def ours():
            forward.run(batch)
    theirs = {}
    for key, fmt in (('nchw', torch.contiguous_format),
                     ('channels_last', torch.channels_last)):
        model = _copy(module).to(memory_format=fmt)
        tx = torch.from_numpy(x).contiguous(memory_format=fmt) if x.ndim == 4 \
            else torch.from_numpy(x)
        tup = torch.from_numpy(upstream)
        tup = tup.contiguous(memory_format=fmt) if tup.ndim == 4 else tup
        if backward:
            tx.requires_grad_(True)

            def step(model=model, tx=tx, tup=tup):
                model.zero_grad(set_to_none=False)
                tx.grad = None
                model(tx).backward(tup)
        else:
            def step(model=model, tx=tx):
                with torch.no_grad():
                    model(tx)
        theirs[key] = step
        if x.ndim != 4:
            break
    flops = flops and flops * (3 if backward else 1)
    return Case(name, ours, theirs, flops=flops, group='layer')


CONV_CASES = [((32, 64), 1), ((32, 64), 2), ((16, 16), 1), ((128, 128), 1)]
"""(in, out) channels and stride of the convolutions timed pass by pass (3x3, pad 1)."""


def _conv_pass_cases(layer, rng):
    """Forward, input gradient and weight gradient (with bias) of one convolution,
    each alone, against ``aten.convolution_backward`` with the matching mask."""
    import torch
    from devito_ml.compiled import CompiledOperator
    from devito_ml.pruning import pruned
    n, c, h, w = layer.input_size
    k, r, q = layer.kernel_size
    _, _, oh, ow = layer.output_size
    x = rng.standard_normal(layer.input_size).astype(np.float32)
    upstream = rng.standard_normal(layer.output_size).astype(np.float32)
    layer.forward(x)
    layer.backward(upstream)
    backward = layer.backprop_equations()
    weights = [layer.kernel_gradients, layer.bias_gradients]
    passes = {'input gradient': pruned(backward, weights, [layer.input_gradients]),
              'weight gradient': pruned(backward, [layer.input_gradients], weights)}
    ours = {'forward': layer.forward_operator}
    ours.update((role, CompiledOperator(eqs, f"{layer.name}_{role.split()[0]}"))
                for role, eqs in passes.items())
    masks = {'input gradient': [True, False, False],
             'weight gradient': [False, True, True]}
    name = f"conv {c}->{k} 3x3 stride {layer.stride[0]} pad 1, {h}x{w}, batch {n}"
    flops = 2 * n * k * c * oh * ow * r * q
    for role, operator in ours.items():
        theirs = {}
        for key, fmt in (('nchw', torch.contiguous_format),
                         ('channels_last', torch.channels_last)):
            tx = torch.from_numpy(x).contiguous(memory_format=fmt)
            tw = torch.from_numpy(layer.kernel.data.copy()).contiguous(memory_format=fmt)
            tb = torch.from_numpy(layer.bias.data.copy())
            tup = torch.from_numpy(upstream).contiguous(memory_format=fmt)
            if role == 'forward':
                def step(tx=tx, tw=tw, tb=tb):
                    torch.nn.functional.conv2d(tx, tw, tb, stride=layer.stride,
                                               padding=layer.padding)
            else:
                def step(tx=tx, tw=tw, tup=tup, mask=masks[role]):
                    torch.ops.aten.convolution_backward(
                        tup, tx, tw, [k], list(layer.stride), list(layer.padding),
                        [1, 1], False, [0, 0], 1, mask)
            theirs[key] = step
        yield Case(f"{name}, {role}", lambda op=operator: op.run(n), theirs,
                   flops=flops, group='conv')


GROUPS = ('train', 'lenet', 'conv', 'layer', 'resnet', 'deep')
"""Case groups: the tutorial step, LeNet-5 steps, convolution passes, other layers,
the small ResNet's step, ResNet-18 and ResNet-50 steps."""

RESNET = dict(depth=18, image_size=(32, 32), in_channels=3, classes=10, width=16,
              small_input=True, blocks=(2, 2, 2, 0))
"""The small ResNet of the speed targets: 3 stages of 2 basic blocks, 16/32/64
channels, BatchNorm, 3x32x32 images."""

DEEP_RESNETS = (18, 50)
"""Depths of the full ResNets timed (width 64, the small-input stem, 32x32)."""


def _resnet_case(rng, batch, depth=None):
    """The small ResNet's training step, or (``depth``) a full ResNet of width 64."""
    from devito_ml.interop import torch_models, torch_state_dict
    from devito_ml.models import resnet
    options = dict(RESNET) if depth is None else \
        dict(RESNET, depth=depth, width=64, blocks=None)
    net = resnet(batch_size=batch, seed=0, **options)
    twin = torch_models.resnet(options['depth'], options['classes'], options['width'],
                               options['in_channels'], options['small_input'],
                               blocks=options['blocks'])
    twin.load_state_dict(torch_state_dict(net))
    title = "ResNet (3 stages x 2 basic blocks, 16/32/64, BatchNorm)" if depth is None \
        else f"ResNet-{depth} width 64, small stem"
    return _train_case(f"{title}, 3x32x32, batch {batch}, train step", net, twin, rng,
                       group='resnet' if depth is None else 'deep')


def cases(rng, quick=False, groups=GROUPS):
    """The benchmark cases of ``devito-ml bench`` in ``groups``."""
    import torch
    from devito_ml import AvgPooling, Conv, FullyConnected, MaxPooling, ReLU
    from devito_ml.interop import to_torch
    from devito_ml.models import lenet5
    tutorial = _tutorial_net()
    if 'train' in groups:
        yield _train_case('tutorial network (seed 003), batch 1, train step', tutorial,
                          to_torch(tutorial), rng, group='train')
    for batch in (LENET_BATCHES[:3] if quick else LENET_BATCHES) * ('lenet' in groups):
        net = lenet5(batch, (28, 28), seed=0)
        yield _train_case(f"LeNet-5 28x28, batch {batch}, train step", net,
                          to_torch(net), rng, group='lenet')
    n = 8 if quick else 32
    for (c, k), stride in CONV_CASES * ('conv' in groups):
        yield from _conv_pass_cases(Conv((k, 3, 3), (n, c, 28, 28), stride=stride,
                                         padding=1), rng)
    if 'resnet' in groups:
        yield _resnet_case(rng, 8 if quick else 32)
    for depth in DEEP_RESNETS * ('deep' in groups):
        yield _resnet_case(rng, 8 if quick else 32, depth)
    if 'layer' not in groups:
        return
    for backward in (False, True):
        yield _layer_case(f"fully connected 800->500 relu, batch 64, "
                          f"{'forward + backward' if backward else 'forward'}",
                          FullyConnected((500, 800), (64, 800), activation=ReLU()),
                          torch.nn.Sequential(torch.nn.Linear(800, 500),
                                              torch.nn.ReLU()),
                          (64, 800), rng, 2 * 64 * 800 * 500, backward)
    yield _layer_case('max pooling 2x2 on 64x32x28x28, forward + backward',
                      MaxPooling(2, (64, 32, 28, 28)), torch.nn.MaxPool2d(2),
                      (64, 32, 28, 28), rng, None, True)
    yield _layer_case('avg pooling 2x2 on 64x32x28x28, forward + backward',
                      AvgPooling(2, (64, 32, 28, 28)), torch.nn.AvgPool2d(2),
                      (64, 32, 28, 28), rng, None, True)


BUILD = {
    'devito_ml': '''
import time, numpy as np
from devito_ml.models import lenet5
from devito_ml.optim import SGD
rng = np.random.default_rng(0)
x, labels = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
began = time.perf_counter()
net = lenet5(64, (28, 28), seed=0)
net.train_step(x, labels, SGD(net, lr=0.01, momentum=0.9))
print(time.perf_counter() - began)
''',
    COMPILED: '''
import time, numpy as np, torch
from devito_ml.benchmark import torch_compiled_train_step
from devito_ml.interop import to_torch
from devito_ml.models import lenet5
rng = np.random.default_rng(0)
x, labels = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
model = to_torch(lenet5(64, (28, 28), seed=0))
began = time.perf_counter()
torch_compiled_train_step(torch, model, x, labels)
print(time.perf_counter() - began)
'''}
"""What ``build_times`` times in a new process: constructing LeNet-5 (batch 64) to
the end of its first training step; for ``torch.compile``, its first
``COMPILE_WARMUP_STEPS`` steps (it recompiles on the first few)."""


def build_times(folder):
    """Seconds to build LeNet-5's training step in a new process, devito_ml and
    ``torch.compile``: with every cache empty (a fresh TMPDIR, a fresh
    ``TORCHINDUCTOR_CACHE_DIR``), then again with them filled."""
    times = {}
    for system, script in BUILD.items():
        place = os.path.join(folder, system.replace('.', '_'))
        environment = dict(os.environ, TMPDIR=place,
                           TORCHINDUCTOR_CACHE_DIR=os.path.join(place, 'inductor'))
        os.makedirs(place)
        seconds = []
        for _ in range(2):
            run = subprocess.run([sys.executable, '-c', script], env=environment,
                                 capture_output=True, text=True, check=True)
            seconds.append(float(run.stdout.split()[-1]))
        times[system] = {'cold_s': seconds[0], 'warm_s': seconds[1]}
    return times


def run_benchmarks(out, rounds=7, repeat=None, quick=False, log=print, groups=GROUPS,
                   build=True):
    """Run the cases of ``groups``; write ``bench.json`` and ``lenet_batch.png`` into
    ``out`` (``build``: also time building LeNet-5 in new processes)."""
    import tempfile
    from devito_ml.machine_info import machine_summary
    rng = np.random.default_rng(0)
    results = []
    machine = machine_summary()
    forced = f" (forced by {machine['lanes_forced']})" if machine['lanes_forced'] else ''
    log(f"CPU: {machine['cpu']}, {machine['cores']} cores, "
        f"{' '.join(machine['isa'])}; schedules for {machine['float32_lanes']} "
        f"float32 lanes{forced}, {machine['vector_registers']} vector registers")
    log(f"{'case':62s} {'devito_ml ms':>12s} {'PyTorch ms':>11s} {'format':>13s} "
        f"{'ratio':>6s} {'GFLOP/s':>15s} {'compile ms':>10s} {'ratio':>6s}")
    for case in cases(rng, quick, groups):
        functions = _functions(case)
        once = interleaved(functions, 1, 1)
        slowest = max(max(v) for v in once.values())
        count = repeat or max(1, min(200, int(0.05 / max(slowest, 1e-6))))
        entry = _summary(case, interleaved(functions, rounds, count))
        results.append(entry)
        flops = (f"{entry['devito_ml_gflops']:6.1f} / {entry['torch_gflops']:6.1f}"
                 if 'devito_ml_gflops' in entry else '')
        compiled = (f"{entry['torch_compile_median_ms']:10.3f} "
                    f"{entry['ratio_to_compile']:6.2f}" if COMPILED in functions else '')
        log(f"{case.name:62s} {entry['devito_ml_median_ms']:12.3f} "
            f"{entry['torch_median_ms']:11.3f} {entry['torch_format']:>13s} "
            f"{entry['ratio']:6.2f} {flops:>15s} {compiled}")
    if build:
        with tempfile.TemporaryDirectory() as folder:
            build = build_times(folder)
        for system, seconds in build.items():
            log(f"LeNet-5 batch 64 to the end of its first training step, {system}, in "
                f"a new process: {seconds['cold_s']:.1f} s with every cache empty, "
                f"{seconds['warm_s']:.1f} s again")
    report = {'machine': machine, 'threads': os.environ.get('OMP_NUM_THREADS'),
              'rounds': rounds, 'cases': results, 'build': build}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'bench.json'), 'w') as handle:
        json.dump(report, handle, indent=2)
    _plot([e for e in results if e['group'] == 'lenet'],
          os.path.join(out, 'lenet_batch.png'))
    return report


def _plot(entries, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    batches = [int(e['case'].split('batch ')[1].split(',')[0]) for e in entries]
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.loglog(batches, [e['devito_ml_median_ms'] for e in entries], 'o-',
                label='devito_ml')
    axes.loglog(batches, [e['torch_median_ms'] for e in entries], 's-',
                label='PyTorch (better format)')
    axes.set_xlabel('batch size')
    axes.set_ylabel('train step, ms (median)')
    axes.set_title('LeNet-5 28x28 train step')
    axes.legend()
    figure.savefig(path, dpi=100)
