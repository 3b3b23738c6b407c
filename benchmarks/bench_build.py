"""How long a deep network takes to generate and compile, cold and from the caches.

For each (model, image size): building the Net in Python, then lowering (Devito's
Python passes) and compiling (gcc) the forward, backward and Adam train-step
operators. Run it twice: the first run in a fresh temporary folder is cold (nothing
cached); the second finds the lowered operators in devito_ml's cache and the shared
objects in Devito's, which is what a second process pays.

    TMPDIR=$(mktemp -d) python benchmarks/bench_build.py      # cold
    python benchmarks/bench_build.py                          # warm (same TMPDIR)
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from devito_ml.models import resnet  # noqa: E402
from devito_ml.optim import Adam  # noqa: E402


def measure(depth, size, batch):
    began = time.perf_counter()
    net = resnet(depth, batch_size=batch, image_size=(size, size), classes=10,
                 small_input=size < 64)
    timings = {'net': time.perf_counter() - began}
    for kind, build in (('forward', lambda: net.forward_operator),
                        ('backward', lambda: net.backward_operator),
                        ('train', lambda: net.train_operator(Adam(net)))):
        began = time.perf_counter()
        chain = build()
        timings[kind] = time.perf_counter() - began
        timings[f"{kind} parts"] = len(chain.parts)
    x = np.random.default_rng(0).random(net.input_size).astype(np.float32)
    began = time.perf_counter()
    net.forward(x)
    net.backward(np.zeros(batch, np.int64))
    timings['one forward+backward'] = time.perf_counter() - began
    return len(net.layers), timings


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--cases', nargs='*', default=['18:32', '18:224', '50:32',
                                                       '50:224'])
    parser.add_argument('--batch-size', type=int, default=2)
    args = parser.parse_args()
    for case in args.cases:
        depth, size = map(int, case.split(':'))
        layers, timings = measure(depth, size, args.batch_size)
        line = ', '.join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}"
                         for k, v in timings.items())
        print(f"ResNet-{depth} {size}x{size} ({layers} layers, batch "
              f"{args.batch_size}): {line}", flush=True)


if __name__ == '__main__':
    main()
