"""Checkpoints: a net's parameters and buffers, its optimizer's state, the epoch and
the history in one ``.npz``, written atomically and read back all or nothing."""

import os
import re
import zipfile

import numpy as np

from devito_ml.errors import CheckpointError, NonFiniteError
from devito_ml.files import atomic_write
from devito_ml.metrics import History
from devito_ml.validation import non_finite

__all__ = ['CHECKPOINT_FORMAT', 'save_checkpoint', 'read_checkpoint', 'load_checkpoint',
           'remove_stale_temporaries']

CHECKPOINT_FORMAT = 'devito_ml checkpoint 1'
_TEMPORARY = re.compile(r'\.checkpoint-(\d+)-.*\.npz$')


def save_checkpoint(path, net, optimizer, epoch, history):
    """Parameters, optimizer state, epoch and history in one ``.npz``, atomically.

    The file is written under a temporary name in the same folder, flushed to disk,
    then renamed over ``path``: a crash leaves either the old checkpoint or the new
    one, never a broken file. Temporary files left by killed runs (their process is
    gone) are removed. A parameter, buffer or optimizer state holding NaN or an
    infinity is a :class:`NonFiniteError` naming it, and nothing is written.
    """
    arrays = {f"param/{name}": value for name, value in net.state_dict().items()}
    arrays.update({f"optim/{name}": value
                   for name, value in optimizer.state_dict().items()})
    bad = non_finite(arrays)
    if bad:
        raise NonFiniteError(f"save_checkpoint: {', '.join(bad[:5])}"
                             f"{' and others' if len(bad) > 5 else ''} hold NaN or "
                             f"infinite values; `{path}` was not written")
    arrays['format'] = np.array(CHECKPOINT_FORMAT)
    arrays['epoch'] = np.array(epoch)
    arrays['history'] = np.array(history.to_json())
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    atomic_write(path, lambda stream: np.savez(stream, **arrays),
                 prefix=f".checkpoint-{os.getpid()}-", durable=True)


def remove_stale_temporaries(folder):
    """Remove the temporary checkpoint files in ``folder`` whose writer is dead."""
    for name in os.listdir(folder):
        match = _TEMPORARY.match(name)
        if match and not _alive(int(match.group(1))):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_checkpoint(path):
    """The arrays of checkpoint ``path`` by name, checked to be one of ours and
    finite, or a :class:`CheckpointError` saying what is wrong with the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as error:
        raise CheckpointError(f"checkpoint `{path}` cannot be read: it is truncated, "
                              f"corrupted or not a checkpoint ({type(error).__name__}: "
                              f"{error})") from None
    if not isinstance(arrays, dict) or 'epoch' not in arrays or \
            'history' not in arrays:
        raise CheckpointError(f"checkpoint `{path}` is not a devito_ml checkpoint (no "
                              "`epoch` and `history` in it)")
    bad = non_finite(arrays)
    if bad:
        raise CheckpointError(f"checkpoint `{path}`: {', '.join(bad[:5])} hold NaN or "
                              "infinite values")
    return arrays


def load_checkpoint(path, net, optimizer=None):
    """Load a checkpoint into ``net`` (and ``optimizer``); return (epoch, history).

    All or nothing: a file that cannot be read, or whose parameters, buffers or
    optimizer state do not fit ``net`` and ``optimizer`` (another model, another
    optimizer), is a :class:`CheckpointError` naming the difference, and ``net``
    and ``optimizer`` are left as they were.
    """
    arrays = read_checkpoint(path)
    try:
        epoch = int(arrays['epoch'])
        history = History.from_json(str(arrays['history']))
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint `{path}`: unreadable epoch or history "
                              f"({error})") from None
    before = (net.state_dict(), optimizer.state_dict() if optimizer else None)
    try:
        if optimizer is not None:     # first: another optimizer is named as such
            optimizer.load_state_dict({key[len('optim/'):]: value
                                       for key, value in arrays.items()
                                       if key.startswith('optim/')})
        net.load_state_dict({key[len('param/'):]: value
                             for key, value in arrays.items()
                             if key.startswith('param/')})
    except (KeyError, ValueError, TypeError) as error:
        net.load_state_dict(before[0])
        if optimizer is not None:
            optimizer.load_state_dict(before[1])
        message = error.args[0] if error.args else error
        raise CheckpointError(f"checkpoint `{path}` does not fit: {message}") from None
    return epoch, history
