"""Train LeNet-5 on the digits with devito_ml and with PyTorch, side by side.

Same initial weights, same batches in the same order, Adam with the same cosine
schedule, same number of epochs and threads. Prints each framework's time (devito_ml
with and without compilation) and test accuracy.

    python benchmarks/bench_training.py [--epochs 20] [--threads 2]
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from devito_ml.data import Batches, digits_split  # noqa: E402
from devito_ml.interop import to_torch  # noqa: E402
from devito_ml.models import lenet5  # noqa: E402
from devito_ml.optim import Adam  # noqa: E402
from devito_ml.training import cosine_schedule, evaluate, fit  # noqa: E402


def train_torch(model, train, test, epochs, batch_size, lr, seed):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = cosine_schedule(lr, epochs)
    batches = Batches(*train, batch_size=batch_size, seed=seed)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group['lr'] = float(schedule(epoch))
        for x, y in batches.epoch(epoch):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                                     torch.from_numpy(y))
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predictions = model(torch.from_numpy(test[0])).argmax(1).numpy()
    return float(np.mean(predictions == test[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = digits_split(seed=0)

    start = time.perf_counter()
    net = lenet5(args.batch_size, (8, 8), seed=0)
    model = to_torch(net)
    optimizer = Adam(net, lr=args.lr)
    net.train_operator(optimizer)
    net.evaluation_operator()
    compiled = time.perf_counter()
    fit(net, optimizer, train, None, epochs=args.epochs, seed=0, progress=False,
        log=None, lr_schedule=cosine_schedule(args.lr, args.epochs))
    trained = time.perf_counter()
    _, ours = evaluate(net, *test)

    began = time.perf_counter()
    theirs = train_torch(model, train, test, args.epochs, args.batch_size, args.lr, 0)
    torch_time = time.perf_counter() - began

    print(f"LeNet-5, digits ({len(train[1])} train / {len(test[1])} test), "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam {args.lr} cosine, "
          f"{args.threads} threads")
    print(f"devito_ml: {trained - compiled:6.2f} s training + {compiled - start:5.1f} s "
          f"building operators, test accuracy {ours:.4f}")
    print(f"PyTorch  : {torch_time:6.2f} s training, test accuracy {theirs:.4f}")
    ratio = (trained - compiled) / torch_time
    print(f"ratio (training only) devito_ml / torch = {ratio:.2f}")


if __name__ == '__main__':
    main()
