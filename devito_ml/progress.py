"""Progress bars where someone watches: a terminal, or a Jupyter notebook."""

import sys

from tqdm import tqdm

__all__ = ['watched', 'bar_class']


def watched():
    """Whether progress bars have someone to watch them: standard error is a
    terminal, or this runs in a Jupyter kernel."""
    try:
        if sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):     # replaced or closed stream
        return False
    return _in_kernel()


def _in_kernel():
    shell = sys.modules.get('IPython')
    ipython = getattr(shell, 'get_ipython', lambda: None)()
    return ipython is not None and 'IPKernelApp' in getattr(ipython, 'config', {})


def bar_class():
    """tqdm's notebook widget in a Jupyter kernel that has ipywidgets, else its
    text bar (without ipywidgets the widget only warns). Decided when a bar is
    drawn, so that importing devito_ml never imports ipywidgets."""
    if _in_kernel():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as notebook_bar
            return notebook_bar
        except ImportError:
            pass
    return tqdm
