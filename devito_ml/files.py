"""Files written whole or not at all."""

import os
import tempfile

__all__ = ['atomic_write']


def atomic_write(path, write, prefix, durable=False):
    """Write the file ``path`` by ``write(stream)``, atomically.

    The bytes go to a temporary file named ``<prefix>...`` in the same folder,
    which is then renamed over ``path``: a reader sees the old file or the new
    one, never a part. With ``durable``, the data reach the disk before the
    rename (a crash of the machine leaves one of the two as well). On an error,
    the temporary file is removed and the error raised.

    Parameters
    ----------
    path : str
    write : callable
        ``write(stream)`` writes the contents to a binary stream.
    prefix : str
        Of the temporary file's name (how leftovers of killed writers are found).
    durable : bool
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=prefix,
                                         suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(handle, 'wb') as stream:
            write(stream)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
