"""Time devito_ml against PyTorch on this machine, in one run, and print ratios.

For each case: forward, and forward + backward (every gradient), in float32, with the
same thread count for both. Single layers run their own operators against torch's
backward from the same upstream gradient; whole nets include the cross entropy. A
ratio above 1 means devito_ml is slower.

    python benchmarks/bench_layers.py [--threads 2] [--repeats 10] [--quick]
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import time

import numpy as np
import torch

from devito_ml import AvgPooling, Conv, FullyConnected, MaxPooling, Net, ReLU
from devito_ml.interop import to_torch
from devito_ml.models import lenet5


def best_time(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def operator_timings(forward, backward, batch, repeats):
    """Forward, and forward + backward, through already-prepared operators."""
    return (best_time(lambda: forward.run(batch), repeats),
            best_time(lambda: (forward.run(batch), backward.run(batch)), repeats))


def torch_timings(module, x, repeats, upstream=None, labels=None):
    """Forward, and forward + backward: from ``upstream`` or a cross entropy."""
    x = torch.from_numpy(x)

    def forward():
        with torch.no_grad():
            module(x)

    def forward_backward():
        module.zero_grad(set_to_none=False)
        x.requires_grad_(True)
        y = module(x)
        if upstream is None:
            torch.nn.functional.cross_entropy(y, torch.from_numpy(labels)).backward()
        else:
            y.backward(torch.from_numpy(upstream))
    return best_time(forward, repeats), best_time(forward_backward, repeats)


def cases(quick):
    """(name, devito_ml Layer or Net, torch module or None, input shape)."""
    n = 8 if quick else 32
    yield ('conv 32->64 3x3 pad1 28x28', Conv((64, 3, 3), (n, 32, 28, 28), padding=1),
           torch.nn.Conv2d(32, 64, 3, padding=1), (n, 32, 28, 28))
    yield ('conv 6->16 5x5 14x14 (LeNet conv2)', Conv((16, 5, 5), (64, 6, 14, 14)),
           torch.nn.Conv2d(6, 16, 5), (64, 6, 14, 14))
    yield ('conv 16->32 3x3 stride 2 pad 1',
           Conv((32, 3, 3), (n, 16, 28, 28), stride=2, padding=1),
           torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), (n, 16, 28, 28))
    yield ('maxpool 2x2 on 64x32x28x28', MaxPooling(2, (64, 32, 28, 28)),
           torch.nn.MaxPool2d(2), (64, 32, 28, 28))
    yield ('maxpool 3x3 s2 pad1 on 64x32x28x28',
           MaxPooling(3, (64, 32, 28, 28), stride=2, padding=1),
           torch.nn.MaxPool2d(3, 2, 1), (64, 32, 28, 28))
    yield ('avgpool 2x2 on 64x32x28x28', AvgPooling(2, (64, 32, 28, 28)),
           torch.nn.AvgPool2d(2), (64, 32, 28, 28))
    yield ('fully connected 800->500 relu',
           FullyConnected((500, 800), (64, 800), activation=ReLU()),
           torch.nn.Sequential(torch.nn.Linear(800, 500), torch.nn.ReLU()), (64, 800))
    yield ('LeNet-5 28x28 batch 64 (with loss)', lenet5(64, (28, 28)), None,
           (64, 1, 28, 28))
    yield ('LeNet-5 8x8 digits batch 64 (with loss)', lenet5(64, (8, 8)), None,
           (64, 1, 8, 8))


def hot_path(repeats):
    """Prepared arguments against Operator.apply on a small LeNet-5 batch."""
    net = lenet5(8, (8, 8))
    net.forward(np.zeros((8, 1, 8, 8), np.float32))
    operator = net.forward_operator
    prepared = best_time(lambda: operator.run(8), repeats * 10)
    applied = best_time(lambda: operator.apply(8), repeats * 10)
    print(f"\nLeNet-5 8x8 batch 8 forward: prepared arguments {prepared * 1e6:.0f} us, "
          f"Operator.apply {applied * 1e6:.0f} us ({applied / prepared:.1f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--quick', action='store_true', help='smaller batches')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ['OMP_NUM_THREADS'] = str(args.threads)
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, float32, best of {args.repeats}; "
          f"ratio = devito_ml time / torch {torch.__version__} time")
    print(f"{'case':40s} {'fwd ms':>9s} {'torch':>8s} {'ratio':>6s}   "
          f"{'fwd+bwd ms':>10s} {'torch':>8s} {'ratio':>6s}")
    for name, model, module, shape in cases(args.quick):
        x = rng.random(shape, dtype=np.float32)
        if isinstance(model, Net):      # a whole net, its cross entropy included
            labels = rng.integers(0, model.output_size[1], shape[0])
            model.forward(x)
            model.backward(labels)
            theirs = torch_timings(to_torch(model), x, args.repeats, labels=labels)
        else:                           # a layer's own operators, no loss
            upstream = rng.standard_normal(model.output_size, dtype=np.float32)
            model.forward(x)
            model.backward(upstream)
            theirs = torch_timings(module, x, args.repeats, upstream=upstream)
        ours = operator_timings(model.forward_operator, model.backward_operator,
                                shape[0], args.repeats)
        print(f"{name:40s} {ours[0] * 1e3:9.3f} {theirs[0] * 1e3:8.3f} "
              f"{ours[0] / theirs[0]:6.2f}   {ours[1] * 1e3:10.3f} "
              f"{theirs[1] * 1e3:8.3f} {ours[1] / theirs[1]:6.2f}")
    hot_path(args.repeats)


if __name__ == '__main__':
    main()
