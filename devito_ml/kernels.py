"""Kernels keyed by what they compute, not by which layers asked for them.

A deep net is compiled unit by unit (a residual block, or one layer of a chain:
:func:`devito_ml.graph.blocks`). Two units that do the same work on tensors of the
same shapes differ only in the names of their Functions (``layer3_1_conv1_W`` and
``layer3_2_conv1_W``). :func:`role_names` names every Function, Dimension and
Scalar of a unit after its role in the unit (``conv1_W``: the unit's first
convolution's weights; ``src1_out``: the output of the first layer feeding the unit
from outside); the cache key is the unit's equations printed under those names
(:func:`devito_ml.operator_cache.cache_key`), so identical units have one key, one
lowered and compiled kernel (built from the equations :func:`renamed`), called
with each unit's own Functions. The key holds no layer name, so the same kernel is
found again by the next block, the next net and the next process.

The equations are printed as sympy orders them, which follows the original names:
two identical blocks whose names sort differently against their neighbours' (a
``layer3_10`` after a ``layer3_9``) may print their terms in another order and get
two kernels. That costs a build, never a wrong result: one key is one text."""

from collections import Counter

from devito_ml.operator_cache import symbols_of

__all__ = ['unit_owners', 'role_of', 'role_names', 'renamed', 'kernel_label']

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


def role_of(name, owners):
    """``name`` with the longest owner it starts with replaced by its canonical
    owner (unchanged when it has none)."""
    best = None
    for owner in owners:
        if (name == owner or name.startswith(owner + '_')) and \
                (best is None or len(owner) > len(best)):
            best = owner
    return name if best is None else owners[best] + name[len(best):]


def role_names(equations, owners):
    """``{original name: name after its role}`` of every Function, Constant,
    Scalar and Dimension of ``equations``, or None when two would end up with one
    name (the unit is then compiled under its own names, unshared).

    Parameters
    ----------
    equations : list of Eq
    owners : dict
        ``{owner name: canonical owner}`` (:func:`unit_owners`).

    Returns
    -------
    dict or None
    """
    found = {}
    for symbol in symbols_of(equations).values():
        found[symbol.name] = symbol
        for dimension in getattr(symbol, 'dimensions', ()):
            found[dimension.name] = dimension
    for eq in equations:
        for symbol in (*eq.free_symbols, *(getattr(eq, 'implicit_dims', None) or ())):
            if getattr(symbol, 'is_Dimension', False):
                found[symbol.name] = symbol
    names = {name: role_of(name, owners) for name in found}
    return names if len(set(names.values())) == len(names) else None


def renamed(equations, names):
    """``equations`` over new Functions, Dimensions and Scalars named by ``names``
    (Functions whose memory is never allocated: a kernel is called with the
    unit's own).

    Parameters
    ----------
    equations : list of Eq
    names : dict
        From :func:`role_names`.

    Returns
    -------
    list of Eq
    """
    dimensions, bounds = {}, {}

    def dimension(d):
        if d not in dimensions:
            name = names[d.name]
            if d.is_Conditional:
                # its condition reads other loops' bounds: renamed with them
                parent = dimension(d.parent)
                new = d._rebuild(name=name, parent=parent,
                                 condition=d.condition.xreplace({**dimensions,
                                                                 **bounds}))
            elif d.is_Default:
                # Devito 4.8 rebuilds a DefaultDimension without its extent (its
                # kind kept: a batch loop stays one)
                new = type(d)(name=name, default_value=d._default_value)
            else:
                new = d._rebuild(name=name)
            dimensions[d] = new
            bounds.update({d.symbolic_min: new.symbolic_min,
                           d.symbolic_max: new.symbolic_max})
        return dimensions[d]

    loops = {s: None for eq in equations
             for s in (*eq.free_symbols, *(getattr(eq, 'implicit_dims', None) or ()))
             if getattr(s, 'is_Dimension', False)}
    # conditions last: the loops whose bounds they read renamed first
    mapper = {d: dimension(d) for d in sorted(loops, key=lambda d: d.is_Conditional)}
    for symbol in symbols_of(equations).values():
        name = names[symbol.name]
        if getattr(symbol, 'is_Dimension', False):
            mapper[symbol] = dimension(symbol)
        elif hasattr(symbol, 'indexed'):      # a Function
            function = symbol._rebuild(
                name=name, dimensions=tuple(dimension(d) for d in symbol.dimensions),
                halo=tuple(tuple(side) for side in symbol.halo),
                padding=tuple(tuple(side) for side in symbol.padding))
            mapper[symbol.indexed] = function.indexed
            mapper[symbol] = function
        else:                                 # a Constant or a Scalar
            mapper[symbol] = symbol._rebuild(name=name)
    mapper.update(bounds)      # a loop's bounds read in an expression
    return [_rebuilt(eq, mapper) for eq in equations]


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
