"""Data-parallel training against PyTorch's DistributedDataParallel, side by side in
one run: the same model, global batch, ranks and threads.

    OMP_NUM_THREADS=1 mpiexec -n 2 --bind-to none \\
        python benchmarks/bench_mpi.py --model lenet --batch 256

Under ``mpiexec -n R`` every rank builds the model twice, devito_ml's
(:class:`~devito_ml.distributed.DataParallel`: gradients summed in buckets while
the backward pass runs) and PyTorch's (``DistributedDataParallel`` over gloo, at
the better of NCHW and channels_last, chosen by rank 0 in a short trial), with the
same weights, random float32 images of the model's size and Adam. Their steps
(forward, backward, the gradients' sums, the update) run in interleaved rounds;
for each it prints images per second, milliseconds a step, and the share of a step
the ranks' communication costs: one minus the time of the same step without it
(devito_ml: the fused train operator alone; PyTorch: ``no_sync()``, the same step
with no allreduce) over the step's time. For devito_ml it also prints the time
spent waiting for the buckets' sums, and how many buckets there are.

Without ``mpiexec`` (one process), the same comparison of one process's steps:
devito_ml's fused train operator against PyTorch at its better format.
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import socket  # noqa: E402

import numpy as np  # noqa: E402

from devito_ml.benchmark import interleaved  # noqa: E402
from devito_ml.distributed import (DataParallel, launched_ranks, mpi,  # noqa: E402
                                   shard_bounds, shard_capacity)
from devito_ml.gradient_buckets import BUCKET_BYTES  # noqa: E402
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


def torch_step(torch, model, x, y, memory_format):
    """One Adam step of ``model`` (a module, or DDP around one) on ``(x, y)``."""
    x = torch.from_numpy(x).contiguous(memory_format=memory_format)
    y = torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def better_format(torch, twin, x, y, comm):
    """NCHW or channels_last, whichever runs a step of ``twin`` faster on rank 0."""
    choice = None
    if comm is None or comm.Get_rank() == 0:
        times = {}
        for fmt in (torch.contiguous_format, torch.channels_last):
            model = twin.to(memory_format=fmt)
            times[fmt] = min(interleaved({'t': torch_step(torch, model, x, y, fmt)},
                                         rounds=3, repeat=3)['t'])
        choice = min(times, key=times.get) is torch.channels_last
    if comm is not None:
        choice = comm.bcast(choice, root=0)
    return torch.channels_last if choice else torch.contiguous_format


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def report(name, seconds, batch, alone=None, extra=''):
    line = f"  {name:<30} {batch / seconds:9.1f} images/s {seconds * 1e3:8.2f} ms a step"
    if alone is not None:
        line += f", communication {100 * max(0.0, 1 - alone / seconds):4.1f}% of it"
    return line + extra


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--model', choices=('lenet', 'resnet18'), default='lenet')
    parser.add_argument('--batch', type=int, default=256, help='global batch')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--steps', type=int, default=6, help='steps a round')
    parser.add_argument('--bucket-kb', type=int, default=BUCKET_BYTES >> 10,
                        help='largest bucket of gradients summed at once, kB')
    args = parser.parse_args()
    import torch
    threads = int(os.environ.get('OMP_NUM_THREADS', os.cpu_count()))
    torch.set_num_threads(threads)
    ranks = launched_ranks()
    comm = mpi("bench_mpi under mpiexec").COMM_WORLD if ranks > 1 else None
    rank = 0 if comm is None else comm.Get_rank()
    net = build(args.model, shard_capacity(args.batch, ranks))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch,) + net.input_size[1:]).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    start, stop = shard_bounds(args.batch, ranks, rank)
    twin = torch_twin(args.model, net)
    fmt = better_format(torch, twin, x[start:stop], y[start:stop], comm)
    ours_alone = Adam(net, lr=1e-3)
    functions = {'devito_ml, no communication':
                 lambda: net.train_step(x[start:stop], y[start:stop], ours_alone)}
    twin = twin.to(memory_format=fmt)
    if comm is None:
        functions['PyTorch'] = torch_step(torch, twin, x, y, fmt)
    else:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        port = comm.bcast(free_port() if rank == 0 else None, root=0)
        dist.init_process_group('gloo', init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=ranks)
        ddp = DistributedDataParallel(twin)
        parallel = DataParallel(net, comm, args.batch,
                                bucket_bytes=args.bucket_kb << 10)
        optimizer = Adam(net, lr=1e-3)
        parallel.build(optimizer)
        functions['devito_ml DataParallel'] = \
            lambda: parallel.train_step(x, y, optimizer)
        functions['PyTorch DDP'] = torch_step(torch, ddp, x[start:stop],
                                              y[start:stop], fmt)
        ddp_step = torch_step(torch, ddp, x[start:stop], y[start:stop], fmt)

        def ddp_alone():
            with ddp.no_sync():
                ddp_step()
        functions['PyTorch DDP, no_sync'] = ddp_alone
        comm.Barrier()
    waited = parallel.wait_seconds if comm is not None else 0.0
    times = {name: float(np.median(values)) for name, values in
             interleaved(functions, args.rounds, args.steps).items()}
    if comm is not None:     # the slowest rank's time is the step's
        times = {name: comm.allreduce(value, op=mpi().MAX)
                 for name, value in times.items()}
    if rank != 0:
        return
    form = 'channels_last' if fmt is torch.channels_last else 'NCHW'
    print(f"{args.model}, global batch {args.batch}: {ranks} rank(s) x {threads} "
          f"thread(s); PyTorch {torch.__version__} {form}; medians of {args.rounds} "
          f"interleaved rounds of {args.steps} steps", flush=True)
    ours_single = times['devito_ml, no communication']
    if comm is None:
        print(report('devito_ml', ours_single, args.batch))
        print(report('PyTorch', times['PyTorch'], args.batch))
        print(f"  ratio devito_ml / PyTorch {ours_single / times['PyTorch']:.2f}")
        return
    ours, theirs = times['devito_ml DataParallel'], times['PyTorch DDP']
    calls = (args.rounds * (args.steps + 1) + 1)
    buckets = parallel.buckets()
    wait = (parallel.wait_seconds - waited) / calls
    print(report('devito_ml DataParallel', ours, args.batch, ours_single,
                 f"; waiting for the sums {wait * 1e3:.2f} ms a step "
                 f"({len(buckets.buckets)} bucket(s), "
                 f"{sum(b.nbytes for _, _, b in buckets.buckets) / 1e3:.0f} kB)"))
    print(report('PyTorch DDP', theirs, args.batch, times['PyTorch DDP, no_sync']))
    print(f"  ratio devito_ml / PyTorch DDP {ours / theirs:.2f}")


if __name__ == '__main__':
    main()
