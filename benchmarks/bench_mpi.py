"""Data-parallel training throughput: one rank with T threads against R ranks with
T / R threads each, on the same global batch.

Run it twice, with the same arguments, on the same machine:

    OMP_NUM_THREADS=2 python benchmarks/bench_mpi.py --model lenet --batch 256
    OMP_NUM_THREADS=1 mpiexec -n 2 --bind-to none \\
        python benchmarks/bench_mpi.py --model lenet --batch 256

Each run times ``--steps`` training steps (forward, backward, allreduce where there
are ranks, Adam's update) after ``--warmup`` steps, on random float32 images of the
model's size, and prints images per second, milliseconds a step, and the time in
the gradient allreduce a step (waiting for the slower rank included), with the size
of the buffer it sums and the median time of the allreduce alone (both ranks
ready). One rank runs the fused train-step operator, as ``fit`` does without MPI;
with ``--torch`` it is also timed against the same model in PyTorch (Adam, the same
threads, the better of NCHW and channels_last) in interleaved rounds.
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from devito_ml.distributed import (DataParallel, launched_ranks, mpi,  # noqa: E402
                                   shard_capacity)
from devito_ml.models import lenet5, resnet  # noqa: E402
from devito_ml.optim import Adam  # noqa: E402


def build(model, batch):
    if model == 'lenet':
        return lenet5(batch, image_size=(28, 28), seed=0)
    return resnet(18, batch_size=batch, image_size=(32, 32), in_channels=3,
                  classes=10, width=16, small_input=True, seed=0)


def torch_twin(model, net):
    """The same model in torch.nn, with the net's weights."""
    from devito_ml.interop import to_torch, torch_models, torch_state_dict
    if model == 'lenet':
        return to_torch(net)
    twin = torch_models.resnet(18, 10, 16, 3, True)
    twin.load_state_dict(torch_state_dict(net))
    return twin


def against_torch(args, net, step, x, y):
    """Milliseconds a step of ours and of PyTorch (Adam, the same threads) at its
    better memory format, in interleaved rounds of one run."""
    import torch
    from devito_ml.benchmark import interleaved, torch_train_step
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', os.cpu_count())))
    functions = {'devito_ml': step}
    for name, fmt in (('nchw', torch.contiguous_format),
                      ('channels_last', torch.channels_last)):
        functions[name] = torch_train_step(torch, torch_twin(args.model, net), x, y,
                                           fmt, adam=True)
    times = {k: 1e3 * float(np.median(v)) for k, v in
             interleaved(functions, rounds=5, repeat=max(1, args.steps // 5)).items()}
    best = min(('nchw', 'channels_last'), key=times.get)
    return (f"  same run, interleaved: devito_ml {times['devito_ml']:.2f} ms, PyTorch "
            f"{times[best]:.2f} ms ({best}; nchw {times['nchw']:.2f}, channels_last "
            f"{times['channels_last']:.2f}), "
            f"ratio {times['devito_ml'] / times[best]:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--model', choices=('lenet', 'resnet18'), default='lenet')
    parser.add_argument('--batch', type=int, default=256, help='global batch')
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--torch', action='store_true',
                        help='one rank: also PyTorch (Adam) at its better format')
    args = parser.parse_args()
    ranks = launched_ranks()
    comm = mpi("bench_mpi under mpiexec").COMM_WORLD if ranks > 1 else None
    rank = 0 if comm is None else comm.Get_rank()
    net = build(args.model, shard_capacity(args.batch, ranks))
    optimizer = Adam(net, lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch,) + net.input_size[1:]).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    if comm is None:
        net.train_operator(optimizer)

        def step():
            net.train_step(x, y, optimizer)
    else:
        parallel = DataParallel(net, comm, args.batch)
        parallel.build(optimizer)

        def step():
            parallel.train_step(x, y, optimizer)
    for _ in range(args.warmup):
        step()
    if comm is not None:
        parallel.allreduce_seconds = 0.0
        comm.Barrier()
    began = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - began) / args.steps
    bare = []
    if comm is not None:     # the allreduce alone, both ranks ready: no waiting
        MPI = mpi()
        copy = parallel.buffer.copy()
        for _ in range(50):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, copy, op=MPI.SUM)
            bare.append(time.perf_counter() - start)
    if rank == 0:
        threads = os.environ.get('OMP_NUM_THREADS', '?')
        line = (f"{args.model} global batch {args.batch}: {ranks} rank(s) x {threads} "
                f"thread(s): {args.batch / seconds:8.1f} images/s, "
                f"{seconds * 1e3:7.2f} ms a step")
        if comm is not None:
            reduce = parallel.allreduce_seconds / args.steps
            size = parallel.buffer.nbytes
            line += (f", allreduce {reduce * 1e3:.3f} ms a step "
                     f"({size / 1e3:.0f} kB, {100 * reduce / seconds:.1f}% of it; "
                     f"{np.median(bare) * 1e3:.3f} ms alone)")
        print(line, flush=True)
    if comm is None and args.torch:
        print(against_torch(args, net, step, x, y), flush=True)


if __name__ == '__main__':
    main()
