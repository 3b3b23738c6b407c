"""What keeping NaN semantics costs: LeNet-5 (28x28) train steps compiled with
devito_ml's flags (``-ffast-math -fno-finite-math-only``, NaN-propagating max pooling
and ReLU) against the same equations under Devito's plain ``-ffast-math``.

Interleaved rounds in one process, min and median per step:

    python benchmarks/bench_nan_semantics.py [--batch 64] [--rounds 7] [--steps 20]
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import time  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402

from devito_ml import compiler  # noqa: E402
from devito_ml.models import lenet5  # noqa: E402
from devito_ml.optim import Adam  # noqa: E402


def build(batch, keep_nan):
    """A LeNet-5 train step; ``keep_nan=False`` builds with Devito's own compiler."""
    net = lenet5(batch, (28, 28), seed=0)
    optimizer = Adam(net)
    if keep_nan:
        net.train_operator(optimizer)
    else:
        with mock.patch.object(compiler, 'compiler_name', lambda: None):
            net.train_operator(optimizer)
    return net, optimizer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--steps', type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, args.batch)
    cases = {'NaN kept (devito_ml)': build(args.batch, True),
             'fast-math only (Devito)': build(args.batch, False)}
    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (net, optimizer) in cases.items():
            net.train_step(x, labels, optimizer)                 # warm
            began = time.perf_counter()
            for _ in range(args.steps):
                net.train_step(x, labels, optimizer)
            times[name].append((time.perf_counter() - began) / args.steps * 1e3)
    base = np.median(times['fast-math only (Devito)'])
    print(f"LeNet-5 28x28 train step (Adam), batch {args.batch}, {os.cpu_count()} cores")
    for name, values in times.items():
        median = np.median(values)
        print(f"  {name:26s} min {min(values):7.3f} ms  median {median:7.3f} ms"
              f"  ratio {median / base:5.2f}")


if __name__ == '__main__':
    main()
