"""Loss and accuracy per epoch of a training history, as a matplotlib figure."""

__all__ = ['plot_history']


def plot_history(history, path=None):
    """Loss and accuracy curves (train and test) of ``history``.

    Built on a :class:`matplotlib.figure.Figure` of its own, outside pyplot: the
    backend of a notebook or a script is left as it was, and no figure stays open.

    Parameters
    ----------
    history : History
    path : str, optional
        Where to write the figure (PNG, or any format matplotlib infers from the
        name).

    Returns
    -------
    matplotlib.figure.Figure
        Shown by Jupyter when it ends a cell.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
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
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure
