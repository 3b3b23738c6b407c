"""The ``devito-ml`` command: train a model, or write its generated C."""

import argparse
import os
import sys
import time

import numpy as np

__all__ = ['main']

MODELS = ('lenet',)
DATASETS = ('digits', 'mnist')


class CommandError(Exception):
    """A problem the command reports in one line."""


def _data(args):
    from devito_ml.data import digits_split, load_mnist
    if args.dataset == 'digits':
        return digits_split(seed=args.seed, dtype=args.dtype)
    if not args.data_dir:
        raise CommandError("--dataset mnist needs --data-dir, the folder of the IDX "
                           "files")
    return (load_mnist(args.data_dir, 'train', args.dtype),
            load_mnist(args.data_dir, 'test', args.dtype))


def _model(args, image_size):
    from devito_ml.models import lenet5
    return lenet5(args.batch_size, image_size=image_size, dtype=args.dtype,
                  seed=args.seed)


def _optimizer(args, net):
    from devito_ml.optim import SGD, Adam, AdamW
    if args.optimizer == 'sgd':
        return SGD(net, lr=args.lr, momentum=args.momentum,
                   weight_decay=args.weight_decay)
    kind = {'adam': Adam, 'adamw': AdamW}[args.optimizer]
    return kind(net, lr=args.lr, weight_decay=args.weight_decay)


def _train(args):
    from devito_ml.plotting import plot_history
    from devito_ml.training import cosine_schedule, fit
    start = time.perf_counter()
    train, test = _data(args)
    net = _model(args, train[0].shape[2:])
    optimizer = _optimizer(args, net)
    os.makedirs(args.out, exist_ok=True)
    print(f"LeNet-5 on {args.dataset}: {len(train[1])} train / {len(test[1])} test "
          f"images, batch {args.batch_size}, {args.optimizer} lr {args.lr} (cosine), "
          f"{args.dtype.__name__}")
    history = fit(net, optimizer, train, test, epochs=args.epochs, seed=args.seed,
                  checkpoint=os.path.join(args.out, 'checkpoint.npz'),
                  resume=args.resume, progress=not args.no_progress,
                  lr_schedule=cosine_schedule(args.lr, args.epochs))
    with open(os.path.join(args.out, 'history.json'), 'w') as handle:
        handle.write(history.to_json())
    plot_history(history, os.path.join(args.out, 'history.png'))
    paths = net.write_code(os.path.join(args.out, 'code'))
    final = history.epochs[-1] if history.epochs else None
    if final:
        print(f"test accuracy {final['test_accuracy']:.4f} after {final['epoch']} "
              "epochs, "
              f"{time.perf_counter() - start:.1f} s in all (compilation included)")
    print(f"wrote {args.out}/checkpoint.npz, history.json, history.png and the C of "
          f"{len(paths)} operators in {args.out}/code/")
    return 0


def _codegen(args):
    from devito_ml.data import load_digits
    from devito_ml.optim import Adam
    images, labels = load_digits(args.dtype)
    net = _model(args, images.shape[2:])
    start = time.perf_counter()
    batch = slice(0, args.batch_size)
    logits = net.forward(images[batch])
    loss = net.backward(labels[batch])
    net.train_operator(Adam(net))
    net.evaluation_operator()
    built = time.perf_counter() - start
    accuracy = float(np.mean(logits.argmax(1) == labels[batch]))
    print(f"LeNet-5 on {args.batch_size} digits: loss {loss:.4f}, accuracy "
          f"{accuracy:.2f} (untrained), operators built in {built:.1f} s")
    for name, gradient in net.gradients().items():
        print(f"  d loss / d {name:8s} {str(gradient.shape):18s} "
              f"norm {np.linalg.norm(gradient):.4e}")
    for path in net.write_code(args.out):
        print(f"wrote {path}")
    return 0


def _parser():
    parser = argparse.ArgumentParser(prog='devito-ml', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    train = commands.add_parser('train', help='train a model; write its checkpoint, '
                                'history, plot and generated C')
    codegen = commands.add_parser('codegen', help='build a model, run forward and '
                                  'backward on a batch of digits, write the generated C')
    for command in (train, codegen):
        command.add_argument('--model', choices=MODELS, default='lenet')
        command.add_argument('--out', default='out', help='output folder (default out)')
        command.add_argument('--batch-size', type=int, default=32)
        command.add_argument('--seed', type=int, default=0)
        command.add_argument('--dtype', choices=('float32', 'float64'), default='float32')
    train.add_argument('--dataset', choices=DATASETS, default='digits')
    train.add_argument('--data-dir', help='folder of the MNIST IDX files')
    train.add_argument('--epochs', type=int, default=20)
    train.add_argument('--optimizer', choices=('adam', 'adamw', 'sgd'), default='adam')
    train.add_argument('--lr', type=float, default=3e-3)
    train.add_argument('--momentum', type=float, default=0.9, help='for sgd')
    train.add_argument('--weight-decay', type=float, default=0.0)
    train.add_argument('--resume', action='store_true',
                       help='continue from OUT/checkpoint.npz when it exists')
    train.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def main(argv=None):
    """Entry point of ``devito-ml``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    if getattr(args, 'epochs', 1) < 1:
        parser.error(f"--epochs must be positive, got {args.epochs}")
    if getattr(args, 'lr', 1) <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    args.dtype = np.dtype(args.dtype).type
    try:
        return {'train': _train, 'codegen': _codegen}[args.command](args)
    except (CommandError, ValueError, TypeError, FileNotFoundError, OSError) as error:
        print(f"devito-ml: error: {error}", file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
