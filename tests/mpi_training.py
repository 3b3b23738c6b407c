"""Data-parallel training runs for ``test_distributed.py``.

``python tests/mpi_training.py OUT [--fail RANK:EPOCH:HOW] [--batchnorm MODE]``,
under ``mpiexec -n R`` or alone: trains a small float64 net (convolution, Dropout,
dense layers, Adam) on 101 digits with a global batch of 10 (the last batch of every
epoch holds one sample, so a rank gets an empty shard), for 2 epochs (22 steps),
then again as 1 epoch, a checkpoint, and a resumed second epoch. Rank 0 writes both
runs' parameters and histories to ``OUT``. With ``--fail``, rank RANK raises
(``HOW=raise``) or dies (``HOW=exit``) when its learning rate schedule is asked for
epoch EPOCH. With ``--batchnorm per-rank|sync``, only the whole run, of the net with
two BatchNorms.
"""

import argparse
import os
import sys

import numpy as np

GLOBAL_BATCH, SAMPLES, EPOCHS, SEED = 10, 101, 2, 3
BUCKET_BYTES = 2048     # the gradients (35 kB, float64) in several buckets


def small_net(batch_size, batchnorm=False):
    """Convolution, Dropout and dense layers; with ``batchnorm``, a BatchNorm after
    the convolution and another after a second one, compiled three layers an
    operator (sync points inside parts and between them)."""
    from devito_ml import (BatchNorm, Conv, Dropout, Flat, FullyConnected, Input, Net,
                           ReLU)
    x = Input((1, 8, 8))
    if batchnorm:   # no bias before a BatchNorm: its gradient is rounding noise,
        # which Adam would turn into steps of the learning rate; 8 channels fill
        # the lanes of a tile at every width: the BatchNorms read channels last
        h = BatchNorm(activation=ReLU())(Conv((8, 3, 3), padding=1, bias=False)(x))
        h = BatchNorm(activation=ReLU())(Conv((8, 3, 3), stride=2, padding=1,
                                              bias=False)(h))
    else:
        h = Conv((4, 3, 3), padding=1, activation=ReLU())(x)
    h = Dropout(0.25)(Flat()(h))
    y = FullyConnected(10)(FullyConnected(16, activation=ReLU())(h))
    parts = {'layers_per_operator': 3} if batchnorm else {}
    return Net(y, batch_size=batch_size, dtype=np.float64, seed=SEED, **parts)


def data():
    from devito_ml.data import load_digits
    images, labels = load_digits(np.float64)
    return (images[:SAMPLES], labels[:SAMPLES]), (images[-40:], labels[-40:])


def train(comm=None, checkpoint=None, epochs=EPOCHS, resume=False, schedule=None,
          batchnorm=False, sync=False):
    """Parameters and history after training; ``comm`` None: one process."""
    from devito_ml.distributed import shard_capacity, trainer_for
    from devito_ml.optim import Adam
    from devito_ml.training import fit
    ranks = 1 if comm is None else comm.Get_size()
    net = small_net(shard_capacity(GLOBAL_BATCH, ranks), batchnorm)
    optimizer = Adam(net, lr=0.01)
    train_data, test_data = data()
    history = fit(net, optimizer, train_data, test_data, epochs=epochs, seed=SEED,
                  trainer=trainer_for(net, comm, GLOBAL_BATCH, sync, BUCKET_BYTES),
                  checkpoint=checkpoint, resume=resume, log=None, progress=False,
                  lr_schedule=schedule or (lambda epoch: 0.01 * 0.5 ** epoch))
    return net.state_dict(), history


def _failing_schedule(rank, fail):
    where, epoch, how = fail.split(':')

    def schedule(number):
        if rank == int(where) and number == int(epoch):
            if how == 'exit':
                os._exit(3)
            raise RuntimeError(f"a failure planted on rank {rank}")
        return 0.01
    return schedule


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('out')
    parser.add_argument('--fail')
    parser.add_argument('--batchnorm', choices=('per-rank', 'sync'))
    args = parser.parse_args()
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if args.fail:
        train(comm, schedule=_failing_schedule(comm.Get_rank(), args.fail))
        return 0
    if args.batchnorm:
        state, history = train(comm, batchnorm=True, sync=args.batchnorm == 'sync')
        if comm.Get_rank() == 0:
            np.savez(args.out, ranks=comm.Get_size(), losses=history['train_loss'],
                     test_losses=history['test_loss'],
                     **{f"whole/{k}": v for k, v in state.items()})
        return 0
    whole, history = train(comm)
    checkpoint = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                              'checkpoint.npz')
    train(comm, checkpoint, epochs=1)
    resumed, resumed_history = train(comm, checkpoint, epochs=EPOCHS, resume=True)
    if comm.Get_rank() == 0:
        np.savez(args.out, ranks=comm.Get_size(),
                 losses=history['train_loss'], accuracies=history['train_accuracy'],
                 test_losses=history['test_loss'],
                 resumed_losses=resumed_history['train_loss'],
                 **{f"whole/{k}": v for k, v in whole.items()},
                 **{f"resumed/{k}": v for k, v in resumed.items()})
    return 0


if __name__ == '__main__':
    sys.exit(main())
