"""Build time against torch.compile: cold and warm, then the training step, side by side.

The method of ``../shared/notes/measuring-builds.md``: each measurement is a fresh
Python process; *build* is the wall time from constructing the model to the end of
its first training step (forward, cross entropy, backward, SGD momentum update),
imports not counted. *Cold* runs with every cache empty (a fresh ``TMPDIR``, where
Devito's JIT cache and devito_ml's operator cache live, and a fresh
``TORCHINDUCTOR_CACHE_DIR``); *warm* is a second fresh process on the same
folders. ``torch.compile`` compiles the model (default mode, model and input
channels_last) with the optimizer step eager; 3 untimed steps follow the first (it
recompiles as gradients appear). *Step* is the median of 20 steps after that; both
systems on ``OMP_NUM_THREADS`` threads (default: every core).

    python benchmarks/bench_build.py                          # every case
    python benchmarks/bench_build.py --cases lenet resnet50   # some

Absolute times drift between runs of a shared machine: compare the systems within
one run, and say which CPU (``lscpu``) the figures came from.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def _resnet(depth, width, batch, blocks=None):
    """A ResNet case (small-input stem, 32x32)."""
    options = dict(depth=depth, width=width, **({'blocks': blocks} if blocks else {}))
    title = '3x2 basic blocks 16/32/64' if blocks else f"ResNet-{depth} width {width}"
    return f"{title}, 32x32, batch {batch}", 'resnet', options, batch, 32


CASES = {
    # name: (description, builder, options, batch, image size)
    'lenet': ('LeNet-5, 28x28, batch 64', 'lenet', {}, 64, 28),
    'small_resnet': _resnet(18, 16, 32, blocks=(2, 2, 2, 0)),
    'resnet18_w16': _resnet(18, 16, 32),
    'resnet18': _resnet(18, 64, 32),
    'resnet50_w8': _resnet(50, 8, 16),
    'resnet50_w16': _resnet(50, 16, 32),
    'resnet50': _resnet(50, 64, 32),
    'resnet101_w16': _resnet(101, 16, 32),
    'resnet152_w16': _resnet(152, 16, 32),
}
DEFAULT = ['lenet', 'small_resnet', 'resnet18_w16', 'resnet50_w16', 'resnet101_w16',
           'resnet152_w16']
STEPS, UNTIMED = 20, 3


def _devito_model(case):
    _, builder, options, batch, size = CASES[case]
    if builder == 'lenet':
        from devito_ml.models import lenet5
        return lenet5(batch, (size, size), seed=0)
    from devito_ml.models import resnet
    return resnet(batch_size=batch, image_size=(size, size), classes=10,
                  small_input=True, seed=0, **options)


def _torch_model(case):
    _, builder, options, batch, size = CASES[case]
    if builder == 'lenet':
        from devito_ml.interop import to_torch
        return to_torch(_devito_model(case))
    from devito_ml.interop.torch_models import resnet
    options = dict(options)
    return resnet(options.pop('depth'), classes=10, in_channels=3, small_input=True,
                  **options)


def _inputs(case):
    import numpy as np
    _, builder, _, batch, size = CASES[case]
    channels = 1 if builder == 'lenet' else 3
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, channels, size, size)).astype(np.float32),
            rng.integers(0, 10, batch))


def _timed(step):
    """Seconds of ``step()``'s first call, then the median of STEPS later calls."""
    began = time.perf_counter()
    step()
    first = time.perf_counter() - began
    for _ in range(UNTIMED):
        step()
    times = []
    for _ in range(STEPS):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return first, statistics.median(times)


def worker_devito(case):
    import devito_ml  # noqa: F401  (imports are not counted)
    from devito_ml.optim import SGD
    x, labels = _inputs(case)
    began = time.perf_counter()
    net = _devito_model(case)
    optimizer = SGD(net, lr=0.01, momentum=0.9)
    construct = time.perf_counter() - began
    first, step = _timed(lambda: net.train_step(x, labels, optimizer))
    parts = net.train_operator(optimizer).parts      # built by the first step
    kernels = {part.kernel_name for part in parts}
    calls = len(parts)
    return dict(build_s=construct + first, construct_s=construct, step_ms=1e3 * step,
                kernels=len(kernels), calls=calls, layers=len(net.layers))


def worker_torch(case):
    import torch
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', os.cpu_count())))
    x, labels = _inputs(case)
    x = torch.from_numpy(x).to(memory_format=torch.channels_last)
    labels = torch.from_numpy(labels)
    began = time.perf_counter()
    model = _torch_model(case).to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(compiled(x), labels)
        loss.backward()
        optimizer.step()

    construct = time.perf_counter() - began
    first, median = _timed(step)
    return dict(build_s=construct + first, step_ms=1e3 * median)


def _measure(system, case, folder):
    environment = dict(os.environ, TMPDIR=folder, DEVITO_LOGGING='WARNING',
                       TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, 'inductor'))
    run = subprocess.run([sys.executable, __file__, '--worker', system, case],
                         env=environment, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{system} {case} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(case):
    """Cold and warm build and step of both systems on ``case``."""
    results = {}
    for system in ('devito_ml', 'torch.compile'):
        with tempfile.TemporaryDirectory(prefix='bench-build-') as folder:
            cold = _measure(system, case, folder)
            warm = _measure(system, case, folder)
        results[system] = dict(cold=cold, warm=warm)
    return results


def _row(case, results):
    ours, theirs = results['devito_ml'], results['torch.compile']
    extra = f"{ours['cold']['kernels']} kernels / {ours['cold']['calls']} calls, " \
        f"{ours['cold']['layers']} layers"
    return (f"| {CASES[case][0]} | {ours['cold']['build_s']:.1f} s / "
            f"{ours['warm']['build_s']:.1f} s / {ours['warm']['step_ms']:.1f} ms | "
            f"{theirs['cold']['build_s']:.1f} s / {theirs['warm']['build_s']:.1f} s / "
            f"{theirs['warm']['step_ms']:.1f} ms | "
            f"{ours['cold']['build_s'] / theirs['cold']['build_s']:.2f} / "
            f"{ours['warm']['build_s'] / theirs['warm']['build_s']:.2f} / "
            f"{ours['warm']['step_ms'] / theirs['warm']['step_ms']:.2f} | {extra} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--cases', nargs='*', default=DEFAULT, choices=sorted(CASES))
    parser.add_argument('--worker', nargs=2, metavar=('SYSTEM', 'CASE'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--json', help='also write every figure to this file')
    args = parser.parse_args()
    if args.worker:
        system, case = args.worker
        work = worker_devito if system == 'devito_ml' else worker_torch
        print(json.dumps(work(case)))
        return
    print("| model, training step | devito_ml cold / warm / step | torch.compile cold / "
          "warm / step | ratio cold / warm / step | devito_ml kernels |")
    print("|---|---|---|---|---|")
    every = {}
    for case in args.cases:
        every[case] = measure(case)
        print(_row(case, every[case]), flush=True)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(every, handle, indent=1)


if __name__ == '__main__':
    main()
