"""A PNG of a training history: loss and accuracy per epoch."""

__all__ = ['plot_history']


def plot_history(history, path):
    """Write loss and accuracy curves (train and test) of ``history`` to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    from matplotlib.ticker import MaxNLocator

    figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    epochs = history['epoch']
    for split in ('train', 'test'):
        if any(v is not None for v in history[f"{split}_loss"]):
            loss_axes.plot(epochs, history[f"{split}_loss"], marker='.', label=split)
            accuracy_axes.plot(epochs, history[f"{split}_accuracy"], marker='.',
                               label=split)
    loss_axes.set(xlabel='epoch', ylabel='cross entropy', title='loss')
    accuracy_axes.set(xlabel='epoch', ylabel='accuracy', title='accuracy')
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
