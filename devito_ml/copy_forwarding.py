"""Copies forwarded: a tensor that a kernel writes once and reads only to copy it
elsewhere is written there directly.

A layer's gradient arrives in the tensor the layer after it writes, in the layout
all layers share; a register-tiled convolution copies it into the padded source
its tiles read (``conv.py``, ``_input_gradient_source_copy``). Where the writer
and the copy are equations of one kernel, and nothing else there reads the tensor,
the writer can store into the source itself: one pass over the gradient instead of
two, and a tensor less. A schedule step over a kernel's equations: what is
computed does not change, only where it is stored first.
"""

import sympy
from devito import DefaultDimension, Dimension, Eq

__all__ = ['forward_copies']


def forward_copies(equations):
    """``equations`` with every forwardable copy folded into its writer.

    A copy ``B[f(d)] = A[d]`` (``d`` distinct Dimensions, ``A`` read whole) is
    forwarded when ``A`` has exactly one writer in ``equations``, an ``Eq`` before
    the copy storing ``A[e]`` at distinct Dimensions ``e`` that span ``A`` (their
    extents, their defaults or those of the tensors the writer reads, are
    ``A``'s), and no
    other equation reads ``A``. The writer then stores ``B[f(e)]`` and the copy
    goes. Anything else in the list (markers, other equations) is left as it is.

    Parameters
    ----------
    equations : list
        A kernel's equations, in order.

    Returns
    -------
    list
    """
    equations = list(equations)
    while True:
        found = _forwardable(equations)
        if found is None:
            return equations
        writer, copy, replacement = found
        equations[writer] = replacement
        del equations[copy]


def _forwardable(equations):
    """``(writer index, copy index, new writer)`` of the first copy to forward."""
    writers, readers = {}, {}
    for position, eq in enumerate(equations):
        if not isinstance(eq, Eq):
            continue
        writers.setdefault(_function(eq.lhs), []).append(position)
        for access in _reads(eq):
            readers.setdefault(access.function, []).append(position)
    for position, eq in enumerate(equations):
        source = _copied(eq)
        if source is None:
            continue
        function = source.function
        written, read = writers.get(function, []), readers.get(function, [])
        if len(written) != 1 or read != [position] or written[0] > position:
            continue
        writer = equations[written[0]]
        if type(writer) is not Eq or not _plain(writer.lhs.indices) or \
                _function(writer.lhs) is not function or \
                not _spans(writer, function):
            continue
        mapping = dict(zip(source.indices, writer.lhs.indices))
        replacement = Eq(eq.lhs.xreplace(mapping), writer.rhs,
                         implicit_dims=writer.implicit_dims)
        return written[0], position, replacement
    return None


def _function(access):
    return getattr(access, 'function', None)


def _plain(indices):
    """Distinct Dimensions, nothing added to them."""
    return all(isinstance(i, Dimension) for i in indices) and \
        len(set(indices)) == len(indices)


def _copied(eq):
    """The tensor access a plain copy reads whole (``B[...] = A[d]``), or None."""
    if type(eq) is not Eq or not isinstance(eq.rhs, sympy.Indexed) or \
            not isinstance(eq.lhs, sympy.Indexed):
        return None
    source = eq.rhs
    if not _plain(source.indices) or not _spans_with(source.indices, source.function,
                                                     [eq.lhs, eq.rhs]):
        return None
    # the target indexed by the copy's loops alone (no loop the writer lacks)
    loops = {s for index in eq.lhs.indices for s in index.free_symbols
             if isinstance(s, Dimension)}
    return source if loops <= set(source.indices) else None


def _reads(eq):
    """Every tensor access ``eq`` reads: its right-hand side and the indices of
    its left-hand side."""
    found = [a for a in sympy.preorder_traversal(eq.rhs) if isinstance(a, sympy.Indexed)]
    for index in getattr(eq.lhs, 'indices', ()):
        found += [a for a in sympy.preorder_traversal(index)
                  if isinstance(a, sympy.Indexed)]
    return found


def _spans(writer, function):
    """Whether the writer's loops cover ``function`` whole, their extents known
    from a tensor it reads that owns them."""
    accesses = [a for a in sympy.preorder_traversal(writer.rhs)
                if isinstance(a, sympy.Indexed)]
    return _spans_with(writer.lhs.indices, function, accesses)


def _spans_with(indices, function, accesses):
    """Whether the Dimensions ``indices`` run over ``function``'s whole shape:
    each one's extent, its default or that of the tensors among ``accesses``
    that own it, is one and the same, and ``function``'s."""
    return all(_extent(index, accesses) == extent
               for index, extent in zip(indices, function.shape))


def _extent(index, accesses):
    """The extent of Dimension ``index``, if its default and the tensors among
    ``accesses`` that own it agree on one; else None."""
    extents = {a.function.shape[a.function.dimensions.index(index)] for a in accesses
               if index in getattr(a.function, 'dimensions', ())}
    if isinstance(index, DefaultDimension):
        extents.add(int(index.symbolic_size))
    return extents.pop() if len(extents) == 1 else None
