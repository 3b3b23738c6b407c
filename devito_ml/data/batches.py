"""Mini-batches: shuffled with a seed, the last partial batch kept."""

import numpy as np

__all__ = ['Batches']


class Batches:
    """Iterate ``(images, labels)`` mini-batches of a data set.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed at any
    epoch sees the same batches as one that never stopped.

    Parameters
    ----------
    images, labels : ndarray
    batch_size : int
    shuffle : bool
    seed : int

    Examples
    --------
    >>> import numpy as np
    >>> data = Batches(np.arange(10)[:, None], np.arange(10), batch_size=4, seed=0)
    >>> [len(y) for _, y in data.epoch(0)]
    [4, 4, 2]
    """

    def __init__(self, images, labels, batch_size, shuffle=True, seed=0):
        if len(images) != len(labels):
            raise ValueError(f"Batches: {len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"Batches: `batch_size` must be positive, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, seed

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def epoch(self, number):
        """The batches of epoch ``number``."""
        order = np.arange(len(self.labels))
        if self.shuffle:
            order = np.random.default_rng([self.seed, number]).permutation(order)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            yield self.images[chosen], self.labels[chosen]
