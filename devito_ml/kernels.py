"""Kernels keyed by what they compute, not by which layers asked for them.

A deep net is compiled unit by unit (a residual block, or one layer of a chain:
:func:`devito_ml.graph.blocks`). Two units that do the same work on tensors of the
same shapes differ only in the names of their Functions (``layer3_1_conv1_W`` and
``layer3_2_conv1_W``). :func:`canonical` renames every Function, Dimension and
Scalar of a unit after its role in the unit (``conv1_W``: the unit's first
convolution's weights; ``src1_out``: the output of the first layer feeding the unit
from outside), so identical units print identical equations: one key, one lowered
and compiled kernel, called with each unit's own Functions. The key holds no layer
name, so the same kernel is found again by the next block, the next net and the
next process (:mod:`devito_ml.operator_cache`).
"""

from collections import Counter

from devito import DefaultDimension

from devito_ml.operator_cache import symbols_of

__all__ = ['unit_owners', 'canonical', 'kernel_label', 'Canonical']

NET_OWNER = 'net'
"""The canonical owner of the network's input (``<net>_input`` becomes
``net_input``)."""


def unit_owners(nodes, sources, consumers, net_name):
    """``{owner name: canonical owner}`` for a unit of a network graph.

    Parameters
    ----------
    nodes : list of Node
        The unit's layers, in the order they run.
    sources, consumers : list of Node
        The nodes outside the unit that it reads (the network's input node has no
        layer), and those that read it (it reads the gradients they write), in an
        order that follows the graph, not the names.
    net_name : str

    Returns
    -------
    dict
        A unit's layer becomes ``<family><k>`` (its k-th of that family), a source
        ``src<k>``, a consumer ``dst<k>``, the network's input ``net``.
    """
    owners, counts = {}, Counter()
    for node in nodes:
        counts[node.layer.family] += 1
        owners[node.layer.name] = f"{node.layer.family}{counts[node.layer.family]}"
    for role, outside in (('src', sources), ('dst', consumers)):
        count = 0
        for node in outside:
            name = net_name if node.layer is None else node.layer.name
            if name not in owners:
                count += node.layer is not None
                owners[name] = NET_OWNER if node.layer is None else f"{role}{count}"
    return owners


def _renamed(name, owners):
    """``name`` with the longest owner it starts with replaced by its canonical
    owner (unchanged when it has none)."""
    best = None
    for owner in owners:
        if (name == owner or name.startswith(owner + '_')) and \
                (best is None or len(owner) > len(best)):
            best = owner
    return name if best is None else owners[best] + name[len(best):]


class Canonical:
    """Equations with every symbol renamed after its role in a unit.

    Attributes
    ----------
    equations : list of Eq
        The renamed equations, over new Functions, Dimensions and Scalars (Functions
        whose memory is never allocated: a kernel is called with the unit's own).
    names : dict
        ``{original name: canonical name}`` of every symbol renamed.
    originals : dict
        ``{canonical name: original symbol}``, the unit's own Functions and
        Constants, to call the kernel with.
    """

    def __init__(self, equations, names, originals):
        self.equations, self.names, self.originals = equations, names, originals


def canonical(equations, owners):
    """The equations with every symbol renamed by :func:`unit_owners`'s map, or
    None when two symbols would end up with one name (the unit is then compiled
    under its own names, unshared).

    Parameters
    ----------
    equations : list of Eq
    owners : dict
        ``{owner name: canonical owner}``.

    Returns
    -------
    Canonical or None
    """
    symbols = symbols_of(equations)
    dimensions = {}

    def dimension(d):
        if d not in dimensions:
            name = _renamed(d.name, owners)
            # Devito 4.8 rebuilds a DefaultDimension without its extent
            dimensions[d] = DefaultDimension(name=name, default_value=d._default_value) \
                if d.is_Default else d._rebuild(name=name)
        return dimensions[d]

    mapper, names, originals = {}, {}, {}
    for eq in equations:
        implicit = getattr(eq, 'implicit_dims', None) or ()
        for symbol in (*eq.free_symbols, *implicit):
            if getattr(symbol, 'is_Dimension', False):
                mapper[symbol] = dimension(symbol)
    for symbol in symbols.values():
        name = _renamed(symbol.name, owners)
        names[symbol.name] = name
        if getattr(symbol, 'is_Dimension', False):
            mapper[symbol] = dimension(symbol)
        elif hasattr(symbol, 'indexed'):      # a Function
            renamed = symbol._rebuild(
                name=name, dimensions=tuple(dimension(d) for d in symbol.dimensions),
                halo=tuple(tuple(side) for side in symbol.halo),
                padding=tuple(tuple(side) for side in symbol.padding))
            mapper[symbol.indexed] = renamed.indexed
            mapper[symbol] = renamed
            originals[name] = symbol
        else:                                 # a Constant or a Scalar
            mapper[symbol] = symbol._rebuild(name=name)
            if hasattr(symbol, 'data'):
                originals[name] = symbol
    names.update((d.name, new.name) for d, new in dimensions.items())
    if len(set(names.values())) != len(names):
        return None
    return Canonical([_rebuilt(eq, mapper) for eq in equations], names, originals)


def _rebuilt(eq, mapper):
    """``eq`` with ``mapper`` applied to both sides and to its implicit Dimensions
    (Devito 4.8's ``Eq.xreplace`` drops them: the register tiles need them)."""
    implicit = getattr(eq, 'implicit_dims', None)
    if implicit:     # of its own type: IgnoreDimSort, a tuple, means no loop order
        implicit = type(implicit)(mapper.get(d, d) for d in implicit)
    return eq._rebuild(lhs=eq.lhs.xreplace(mapper), rhs=eq.rhs.xreplace(mapper),
                       implicit_dims=implicit or None)


def kernel_label(layers, input_size, dtype, kind):
    """A readable prefix for a kernel's name: what it computes, on what.

    ``conv_16x8x8_f32_forward`` for one layer, ``block7_conv_16x8x8_f32_backward``
    for a block of seven layers opening with a convolution (the name ends with a
    digest of the equations, added by the cache).
    """
    head = layers[0].family if len(layers) == 1 else \
        f"block{len(layers)}_{layers[0].family}"
    shape = 'x'.join(str(extent) for extent in input_size[1:])
    bits = f"f{8 * dtype.itemsize}"
    return f"{head}_{shape}_{bits}_{kind}"
