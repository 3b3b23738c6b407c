"""Train a small ResNet on Fashion-MNIST with devito_ml and with PyTorch, side by side.

Same model (torchvision's ResNet-18 blocks with the small-input stem, reduced width),
same initial weights, same batches in the same order, Adam with the same cosine
schedule, same threads. PyTorch runs in NCHW and in channels_last; the better one is
the reference. Prints time per epoch and test accuracy of each.

Needs `apt-get install dataset-fashion-mnist` (or --data-dir).

    python benchmarks/bench_fashion_resnet.py [--epochs 2] [--width 8] [--train 60000]
"""

import os

os.environ.setdefault("DEVITO_LOGGING", "WARNING")  # before Devito is imported

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from devito_ml.data import Batches, load_mnist  # noqa: E402
from devito_ml.interop import torch_models, torch_state_dict  # noqa: E402
from devito_ml.models import resnet  # noqa: E402
from devito_ml.optim import Adam  # noqa: E402
from devito_ml.training import cosine_schedule, evaluate, fit  # noqa: E402


def train_torch(model, train, test, epochs, batch_size, lr, channels_last):
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = cosine_schedule(lr, epochs)
    batches = Batches(*train, batch_size=batch_size, seed=0)
    seconds = []
    for epoch in range(epochs):
        began = time.perf_counter()
        model.train()
        for group in optimizer.param_groups:
            group['lr'] = float(schedule(epoch))
        for x, y in batches.epoch(epoch):
            optimizer.zero_grad()
            images = torch.from_numpy(x).contiguous(memory_format=memory)
            loss = torch.nn.functional.cross_entropy(model(images), torch.from_numpy(y))
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - began)
    model.eval()
    with torch.no_grad():
        predictions = np.concatenate([
            model(torch.from_numpy(x).contiguous(memory_format=memory)).argmax(1).numpy()
            for x, _ in Batches(*test, batch_size=500, shuffle=False).epoch(0)])
    return seconds, float(np.mean(predictions == test[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--width', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--train', type=int, default=60000, help='training images used')
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--data-dir', default='/usr/share/datasets/fashion-mnist')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_mnist(args.data_dir, 'train')
    train = (train[0][:args.train], train[1][:args.train])
    test = load_mnist(args.data_dir, 'test')

    start = time.perf_counter()
    net = resnet(18, batch_size=args.batch_size, image_size=(28, 28), in_channels=1,
                 classes=10, width=args.width, small_input=True, seed=0)
    state = torch_state_dict(net)
    optimizer = Adam(net, lr=args.lr)
    net.train_operator(optimizer)
    net.evaluation_operator()
    built = time.perf_counter() - start
    history = fit(net, optimizer, train, test, epochs=args.epochs, seed=0,
                  progress=False, log=None,
                  lr_schedule=cosine_schedule(args.lr, args.epochs))
    ours = [entry['seconds'] for entry in history.epochs]
    _, accuracy = evaluate(net, *test)

    results = {}
    for channels_last in (False, True):
        model = torch_models.resnet(18, 10, args.width, 1, True)
        model.load_state_dict(state)
        results[channels_last] = train_torch(
            model, train, test, args.epochs, args.batch_size, args.lr, channels_last)
    best = min(results, key=lambda k: sum(results[k][0]))

    print(f"ResNet-18 (width {args.width}, small-input stem), Fashion-MNIST "
          f"{len(train[1])} train / {len(test[1])} test, batch {args.batch_size}, Adam "
          f"{args.lr} cosine, {args.epochs} epochs, {args.threads} threads")
    print(f"devito_ml : epochs {', '.join(f'{s:.1f}' for s in ours)} s "
          f"(+ {built:.0f} s building operators), test accuracy {accuracy:.4f}")
    for channels_last, (seconds, acc) in results.items():
        print(f"PyTorch {'channels_last' if channels_last else 'NCHW         '}: epochs "
              f"{', '.join(f'{s:.1f}' for s in seconds)} s, test accuracy {acc:.4f}")
    ratio = sum(ours) / sum(results[best][0])
    print(f"ratio devito_ml / PyTorch at its best "
          f"({'channels_last' if best else 'NCHW'}), training time = {ratio:.2f}")


if __name__ == '__main__':
    main()
