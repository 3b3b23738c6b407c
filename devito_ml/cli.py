"""The ``devito-ml`` command."""

import argparse
import sys
import time

import numpy as np

__all__ = ['main']

MODELS = ('lenet',)


def _codegen(args):
    from devito_ml.data import load_digits
    from devito_ml.models import lenet5
    images, labels = load_digits()
    net = lenet5(args.batch_size, image_size=images.shape[2:], seed=args.seed)
    start = time.perf_counter()
    net.forward_operator, net.backward_operator
    built = time.perf_counter() - start
    batch = slice(0, args.batch_size)
    logits = net.forward(images[batch])
    loss = net.backward(labels[batch])
    accuracy = float(np.mean(logits.argmax(1) == labels[batch]))
    print(f"LeNet-5 on {args.batch_size} digits: loss {loss:.4f}, accuracy "
          f"{accuracy:.2f} (untrained), operators built in {built:.1f} s")
    for name, gradient in net.gradients().items():
        print(f"  d loss / d {name:8s} {str(gradient.shape):18s} "
              f"norm {np.linalg.norm(gradient):.4e}")
    for path in net.write_code(args.out):
        print(f"wrote {path}")
    return 0


def main(argv=None):
    """Entry point of ``devito-ml``."""
    parser = argparse.ArgumentParser(prog='devito-ml', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    codegen = commands.add_parser(
        'codegen', help='build a model, run forward and backward on a batch of the '
        'embedded digits, write the generated C')
    codegen.add_argument('--model', choices=MODELS, default='lenet')
    codegen.add_argument('--out', default='out', help='folder for the C files')
    codegen.add_argument('--batch-size', type=int, default=64)
    codegen.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    return {'codegen': _codegen}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
