"""The devito-ml command: train a model, write its generated C, or time it against
PyTorch."""

import argparse
import os
import sys
import time

import numpy as np

from devito_ml.benchmark import GROUPS

__all__ = ['main']

FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
DATASETS = ('digits', 'mnist', 'fashion-mnist')
RESNETS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
           'resnext50_32x4d', 'resnext101_32x8d', 'wide_resnet50_2', 'wide_resnet101_2')
MODELS = ('lenet',) + RESNETS + ('resnext50', 'vgg11', 'vgg13', 'vgg16', 'vgg19',
                                 'vgg11_bn', 'vgg13_bn', 'vgg16_bn', 'vgg19_bn',
                                 'alexnet')
MODELS_HELP = ("lenet: LeNet-5. resnet*, resnext*, wide_resnet* (torchvision's names; "
               "resnext50 is resnext50_32x4d): torchvision's blocks with the "
               "small-input stem (3x3 stride 1, no max pooling), WIDTH channels in "
               "the first stage. vgg*: images zero-padded to at least 32x32 (five "
               "poolings), WIDTH channels first, HIDDEN classifier units. alexnet: "
               "images zero-padded to at least 63x63, WIDTH and HIDDEN likewise")


class CommandError(Exception):
    """A problem the command reports in one line."""


def _data(args):
    from devito_ml.data import digits_split, load_mnist
    if args.dataset == 'digits':
        return digits_split(seed=args.seed, dtype=args.dtype)
    folder = args.data_dir or (FASHION_MNIST if args.dataset == 'fashion-mnist'
                               else None)
    if not folder:
        raise CommandError("--dataset mnist needs --data-dir, the folder of the IDX "
                           "files")
    try:
        return (load_mnist(folder, 'train', args.dtype),
                load_mnist(folder, 'test', args.dtype))
    except FileNotFoundError as error:
        if args.dataset == 'fashion-mnist':
            raise CommandError(f"Fashion-MNIST not found in `{folder}` ({error}); "
                               "install it with `apt-get install "
                               "dataset-fashion-mnist`, or give --data-dir") from None
        raise


def minimum_image(model):
    """The smallest image side a model takes (images are zero-padded up to it)."""
    return 32 if model.startswith('vgg') else 63 if model == 'alexnet' else 1


def pad_images(images, side):
    """Zero-pad NCHW images symmetrically so that both sides are at least ``side``."""
    _, _, h, w = images.shape
    rows, cols = max(0, side - h), max(0, side - w)
    if not rows and not cols:
        return images
    return np.pad(images, ((0, 0), (0, 0), (rows // 2, rows - rows // 2),
                           (cols // 2, cols - cols // 2)))


def _model(args, image_size, channels=1, classes=10):
    from devito_ml import models
    common = dict(batch_size=args.batch_size, dtype=args.dtype, seed=args.seed)
    if args.model == 'lenet':
        return models.lenet5(args.batch_size, image_size=image_size, channels=channels,
                             classes=classes, dtype=args.dtype, seed=args.seed)
    common.update(image_size=tuple(image_size), in_channels=channels, classes=classes,
                  width=args.width)
    if args.model in RESNETS or args.model == 'resnext50':
        name = 'resnext50_32x4d' if args.model == 'resnext50' else args.model
        return getattr(models, name)(small_input=True, **common)
    if args.model.startswith('vgg'):
        depth = int(args.model[3:5])
        return models.vgg(depth, batch_norm=args.model.endswith('_bn'),
                          hidden=args.hidden, **common)
    return models.alexnet(hidden=args.hidden, **common)


def _optimizer(args, net):
    from devito_ml.optim import SGD, Adam, AdamW
    if args.optimizer == 'sgd':
        return SGD(net, lr=args.lr, momentum=args.momentum,
                   weight_decay=args.weight_decay)
    kind = {'adam': Adam, 'adamw': AdamW}[args.optimizer]
    return kind(net, lr=args.lr, weight_decay=args.weight_decay)


def _communicator():
    """MPI's world when ``mpiexec`` started this process among several ranks, else
    None (mpi4py is then never imported)."""
    from devito_ml.distributed import launched_ranks, mpi
    ranks = launched_ranks()
    if ranks == 1:
        return None
    return mpi(f"devito-ml was started by mpiexec on {ranks} ranks").COMM_WORLD


def _train(args):
    from devito_ml.distributed import shard_capacity, trainer_for
    from devito_ml.plotting import plot_history
    from devito_ml.training import fit
    start = time.perf_counter()
    comm = _communicator()
    ranks = 1 if comm is None else comm.Get_size()
    root = comm is None or comm.Get_rank() == 0
    train, test = _data(args)
    side = minimum_image(args.model)
    train, test = (pad_images(train[0], side), train[1]), \
        (pad_images(test[0], side), test[1])
    # each rank holds its shard of a global batch of --batch-size
    local = argparse.Namespace(**vars(args))
    local.batch_size = shard_capacity(args.batch_size, ranks)
    net = _model(local, train[0].shape[2:], train[0].shape[1])
    optimizer = _optimizer(args, net)
    if root:
        os.makedirs(args.out, exist_ok=True)
        over = f" over {ranks} MPI ranks ({local.batch_size} a rank)" if ranks > 1 \
            else ""
        print(f"{args.model} on {args.dataset}: {len(train[1])} train / "
              f"{len(test[1])} test images, batch {args.batch_size}{over}, "
              f"{args.optimizer} lr {args.lr} ({args.schedule} schedule), "
              f"{args.dtype.__name__}")
    if comm is not None:
        comm.Barrier()     # the output folder exists before any rank resumes from it
    history = fit(net, optimizer, train, test, epochs=args.epochs, seed=args.seed,
                  checkpoint=os.path.join(args.out, 'checkpoint.npz'),
                  resume=args.resume, progress=False if args.no_progress else None,
                  lr_schedule=schedule(args), check_finite=True,
                  trainer=trainer_for(net, comm, args.batch_size,
                                      args.sync_batchnorm))
    if not root:
        return 0
    with open(os.path.join(args.out, 'history.json'), 'w') as handle:
        handle.write(history.to_json())
    plot_history(history, os.path.join(args.out, 'history.png'))
    paths = net.write_code(os.path.join(args.out, 'code'), optimizer)
    final = history.epochs[-1] if history.epochs else None
    if final:
        print(f"test accuracy {final['test_accuracy']:.4f} after {final['epoch']} "
              "epochs, "
              f"{time.perf_counter() - start:.1f} s in all (compilation included)")
    print(f"wrote {args.out}/checkpoint.npz, history.json, history.png and the C of "
          f"{len(paths)} operators in {args.out}/code/")
    return 0


def schedule(args):
    """The learning rate per epoch that ``--schedule`` names."""
    from devito_ml.training import cosine_schedule, step_schedule
    if args.schedule == 'cosine':
        return cosine_schedule(args.lr, args.epochs)
    if args.schedule == 'step':
        return step_schedule(args.lr, args.step_epochs, args.step_gamma)
    return lambda epoch: args.lr


def _codegen(args):
    from devito_ml.data import load_digits
    from devito_ml.optim import Adam
    images, labels = load_digits(args.dtype)
    images = pad_images(images, minimum_image(args.model))
    net = _model(args, images.shape[2:])
    start = time.perf_counter()
    batch = slice(0, args.batch_size)
    logits = net.forward(images[batch])
    loss = net.backward(labels[batch])
    net.train_operator(Adam(net))
    net.evaluation_operator()
    built = time.perf_counter() - start
    accuracy = float(np.mean(logits.argmax(1) == labels[batch]))
    print(f"{args.model} on {args.batch_size} digits: loss {loss:.4f}, accuracy "
          f"{accuracy:.2f} (untrained), operators built in {built:.1f} s")
    for name, gradient in net.gradients().items():
        print(f"  d loss / d {name:8s} {str(gradient.shape):18s} "
              f"norm {np.linalg.norm(gradient):.4e}")
    for path in net.write_code(args.out):
        print(f"wrote {path}")
    return 0


def _bench(args):
    os.environ['OMP_NUM_THREADS'] = str(args.threads)   # before any operator runs
    import torch
    from devito_ml.benchmark import run_benchmarks
    torch.set_num_threads(args.threads)
    print(f"devito_ml against PyTorch {torch.__version__}, float32, {args.threads} "
          f"threads each; medians of {args.rounds} interleaved rounds")
    run_benchmarks(args.out, rounds=args.rounds, quick=args.quick,
                   groups=args.only or GROUPS, build=not args.only)
    print(f"wrote {args.out}/bench.json and {args.out}/lenet_batch.png")
    return 0


def _folder_size(path):
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue
    return total


def _cache(args):
    import shutil
    from devito_ml import compiler, operator_cache
    folders = compiler.jit_folders()
    if args.clear:
        removed = operator_cache.clear()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {removed} files of lowered operators and kernels from "
              f"{operator_cache.folder()} and {len(folders)} folders of compiled C")
        return 0
    count, size = operator_cache.usage()
    state = '' if operator_cache.enabled() else ' (off: DEVITO_ML_OPERATOR_CACHE=0)'
    print(f"lowered operators and kernels: {operator_cache.folder()}, {count} files, "
          f"{size / 2**20:.1f} MiB{state}")
    for folder in folders:
        print(f"compiled C: {folder}, {_folder_size(folder) / 2**20:.1f} MiB")
    if not folders:
        print("compiled C: none yet")
    return 0


def _info(args):
    from devito_ml.machine_info import machine_report
    print('\n'.join(machine_report()))
    return 0


def _version():
    from importlib import metadata
    try:
        return metadata.version('devito_ml')
    except metadata.PackageNotFoundError:
        return 'unknown (not installed)'


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; an option that has none shows no
    ``(default: None)``."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _parser():
    parser = argparse.ArgumentParser(prog='devito-ml', description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument('--version', action='version',
                        version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest='command', required=True)
    train = commands.add_parser(
        'train', formatter_class=_HelpFormatter,
        help='train a model; write its checkpoint, history, plot and generated C',
        description='Train a model and write, under OUT: checkpoint.npz (after every '
        'epoch), history.json, history.png and code/, the C of the operators that '
        'trained and evaluated it. The learning rate follows --schedule. Under '
        '`mpiexec -n R` (pip install -e \'.[mpi]\'), data-parallel over R ranks: each '
        'takes its shard of every global batch of --batch-size, the gradients summed '
        'in buckets while the backward pass runs; rank 0 writes the files.')
    codegen = commands.add_parser(
        'codegen', formatter_class=_HelpFormatter,
        help='build a model, run forward and backward on a batch of digits, write '
        'the generated C',
        description='Build a model, run its forward and backward pass on one batch of '
        "scikit-learn's digits (untrained), print the loss and every gradient's "
        'norm, and write the C of its operators (forward, backward, evaluation and '
        'the Adam train step) as OUT/<net>_<operator>.c, one file an operator part.')
    bench = commands.add_parser(
        'bench', formatter_class=_HelpFormatter,
        help='time devito_ml against PyTorch in one run; write OUT/bench.json and '
        'OUT/lenet_batch.png',
        description='Time devito_ml against PyTorch (at its better memory format) in '
        'interleaved rounds; print a table of ratios and write OUT/bench.json and '
        'OUT/lenet_batch.png.')
    commands.add_parser(
        'info', formatter_class=_HelpFormatter,
        help='print the versions, compiler, CPU and vector width operators are built '
        'for here, and the schedules that width selects',
        description='Print devito_ml\'s, Devito\'s and Python\'s versions, the C '
        'compiler and its flags, the CPU and its vector extensions, the vector width '
        'the schedules are made for (detected, or forced with DEVITO_ML_LANES=4|8|16) '
        'and which register tiles that width selects.')
    cache = commands.add_parser(
        'cache', formatter_class=_HelpFormatter,
        help='report (or with --clear empty) the caches of lowered operators and '
        'compiled C',
        description='Print where devito_ml keeps lowered operators (a file each, '
        'reused by later processes) and the compiled C of its compilers, with their '
        'sizes; --clear removes them (the next build starts cold).')
    cache.add_argument('--clear', action='store_true', help='empty both caches')
    bench.add_argument('--out', default='bench', help='output folder')
    bench.add_argument('--rounds', type=int, default=7,
                       help='interleaved rounds per case')
    bench.add_argument('--threads', type=int, default=os.cpu_count(),
                       help='threads for both (this machine\'s cores by default)')
    bench.add_argument('--only', action='append', choices=GROUPS,
                       help='run only this group of cases (repeatable; default: all, '
                       'with build times)')
    bench.add_argument('--quick', action='store_true',
                       help='smaller cases, for a quick look')
    for command in (train, codegen):
        command.add_argument('--model', choices=MODELS, default='lenet',
                             metavar='MODEL', help=f"one of {', '.join(MODELS)}. "
                             + MODELS_HELP)
        command.add_argument('--width', type=int, default=16,
                             help='channels of the first convolutions (not lenet)')
        command.add_argument('--hidden', type=int, default=128,
                             help='hidden classifier units of vgg and alexnet')
        command.add_argument('--out', default='out', help='output folder')
        command.add_argument('--batch-size', type=int, default=32,
                             help='images a step, over all ranks under mpiexec (the '
                             'last batch of an epoch may be smaller)')
        command.add_argument('--seed', type=int, default=0,
                             help='seeds the initial parameters, the data split and '
                             'the batch order')
        command.add_argument('--dtype', choices=('float32', 'float64'), default='float32',
                             help='precision of parameters and arithmetic')
    train.add_argument('--dataset', choices=DATASETS, default='digits',
                       help="digits: scikit-learn's 8x8 digits (shipped, 1438 train / "
                       "359 test); mnist and fashion-mnist: 28x28 IDX files")
    train.add_argument('--data-dir', help='folder of the IDX files (fashion-mnist: '
                       f'{FASHION_MNIST} by default)')
    train.add_argument('--epochs', type=int, default=20, help='epochs to train')
    train.add_argument('--optimizer', choices=('adam', 'adamw', 'sgd'), default='adam',
                       help='the generated update rule')
    train.add_argument('--lr', type=float, default=3e-3,
                       help='initial learning rate (see --schedule)')
    train.add_argument('--schedule', choices=('cosine', 'constant', 'step'),
                       default='cosine',
                       help='learning rate per epoch: cosine decays from --lr to 0 '
                       'over --epochs along half a cosine; step multiplies it by '
                       '--step-gamma every --step-epochs; constant keeps --lr')
    train.add_argument('--step-epochs', type=int, default=10,
                       help='epochs between two decays of --schedule step')
    train.add_argument('--step-gamma', type=float, default=0.1,
                       help='factor of each decay of --schedule step')
    train.add_argument('--momentum', type=float, default=0.9,
                       help='momentum of sgd (ignored by adam and adamw)')
    train.add_argument('--weight-decay', type=float, default=0.0,
                       help='L2 penalty (sgd, adam) or decoupled decay (adamw)')
    train.add_argument('--resume', action='store_true',
                       help='continue from OUT/checkpoint.npz when it exists')
    train.add_argument('--no-progress', action='store_true',
                       help='no progress bars (they are shown only on a terminal or '
                       'in a notebook anyway; elsewhere one line an epoch)')
    train.add_argument('--sync-batchnorm', action='store_true',
                       help='under mpiexec: BatchNorm statistics of the global batch, '
                       'summed over the ranks, instead of each rank\'s shard')
    return parser


def main(argv=None):
    """Entry point of ``devito-ml``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ('info', 'cache'):
        return _reporting_errors({'info': _info, 'cache': _cache}[args.command], args)
    if args.command == 'bench':
        if args.rounds < 1 or args.threads < 1:
            parser.error("--rounds and --threads must be positive")
        return _bench(args)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    for option in ('width', 'hidden'):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be positive, got {getattr(args, option)}")
    if getattr(args, 'epochs', 1) < 1:
        parser.error(f"--epochs must be positive, got {args.epochs}")
    if getattr(args, 'lr', 1) <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if getattr(args, 'step_epochs', 1) < 1:
        parser.error(f"--step-epochs must be positive, got {args.step_epochs}")
    if not getattr(args, 'step_gamma', 1) > 0:
        parser.error(f"--step-gamma must be positive, got {args.step_gamma}")
    args.dtype = np.dtype(args.dtype).type
    return _reporting_errors({'train': _train, 'codegen': _codegen}[args.command], args)


def _reporting_errors(command, args):
    """``command(args)``, with the errors a user can cause reported in one line."""
    from devito_ml.errors import NonFiniteError
    try:
        return command(args)
    except NonFiniteError as error:    # a run that diverged: exit 1, nothing saved
        print(f"devito-ml: error: {error}", file=sys.stderr)
        return 1
    except (CommandError, ValueError, TypeError, FileNotFoundError, OSError,
            KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"devito-ml: error: {message}", file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
