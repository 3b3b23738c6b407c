"""Dead-equation elimination: leave out what computes only values nobody reads.

A layer emits its whole adjoint, the gradient of its input included; inside a net
the gradient of the network's input is read by no one (unless asked for), and an
evaluation pass needs the loss but not its gradient. Starting from such unwanted
Functions, every equation writing one is dropped, then every scratch Function (a
stuffed gradient, a transposed kernel) whose readers were all dropped, until nothing
changes. Functions in ``keep`` (parameters, their gradients, results, links between
layers) are never dropped.
"""

from devito.symbolics import retrieve_functions

__all__ = ['pruned']


def _written(eq):
    lhs = eq.lhs
    return lhs.function.name if hasattr(lhs, 'function') and lhs.function is not None \
        else lhs.name


def _read(eq):
    """Names of everything ``eq`` reads: right-hand side, indices, implicit reads."""
    names = set()
    for expression in (eq.rhs, *getattr(eq.lhs, 'indices', ())):
        for function in retrieve_functions(expression):
            names.add(function.function.name)
        for symbol in expression.free_symbols:
            # (not getattr's default: printing every symbol costs seconds a net)
            names.add(symbol.name if hasattr(symbol, 'name') else str(symbol))
    return names - {_written(eq)}    # a value read only by its own updates is unread


def pruned(equations, unwanted, keep):
    """``equations`` minus those that only compute ``unwanted`` Functions.

    Parameters
    ----------
    equations : list of Eq
    unwanted : iterable of Function
        Values nobody reads.
    keep : iterable of Function
        Values that are read outside these equations: never dropped.
    """
    dead = {f.name for f in unwanted}
    keep = {f.name for f in keep} - dead
    # sync points (``compiled.SyncPoint``) write and read nothing the C sees: kept
    written = [_written(eq) if hasattr(eq, 'lhs') else None for eq in equations]
    reads = [_read(eq) if hasattr(eq, 'lhs') else set() for eq in equations]
    while True:
        live_reads = set().union(*(r for r, w in zip(reads, written) if w not in dead))
        newly = {w for w in written if w is not None
                 and w not in dead and w not in keep and w not in live_reads}
        if not newly:
            break
        dead |= newly
    return [eq for eq, w in zip(equations, written) if w not in dead]
