"""Network graphs: the input node, traversal in dependency order, and how each output
is shared among the layers it feeds (halo, padding value, gradient buffers)."""

from devito_ml.layer import Layer, Node
from devito_ml.symbolics import Halo
from devito_ml.validation import LayerArgumentError, ShapeError, check_positive_ints
from devito_ml.vector_width import float32_lanes

__all__ = ['Input', 'sequence', 'topological_order', 'blocks', 'shared_halo', 'covers',
           'channels_last_nodes']


def Input(shape):
    """The input of a network graph: one sample's shape, without the batch.

    Parameters
    ----------
    shape : tuple of int
        ``(channels, rows, cols)`` for images, ``(features,)`` for vectors.

    Examples
    --------
    >>> from devito_ml import Net, Conv, Add, Flat, FullyConnected, ReLU
    >>> x = Input((4, 6, 6))
    >>> h = Conv((4, 3, 3), padding=1, activation=ReLU())(x)
    >>> y = FullyConnected(3)(Flat()(Add()(h, x)))
    >>> net = Net(y, batch_size=2)
    >>> [layer.name for layer in net.layers]
    ['conv1', 'add1', 'flat1', 'fc1']
    """
    shape = check_positive_ints(None, 'Input: shape', shape, len(tuple(shape)))
    if len(shape) not in (1, 3):
        raise ShapeError(f"Input: `shape` must be (channels, rows, cols) or "
                         f"(features,), got {shape}")
    return Node(None, (), shape)


def sequence(layers, input_shape):
    """Chain ``layers`` on a new input of ``input_shape``; return the output node."""
    node = Input(input_shape)
    for layer in layers:
        node = layer(node)
    return node


def topological_order(output):
    """The nodes feeding ``output`` (itself included), each after its inputs.

    Inputs are visited in the order a layer takes them, so a chain keeps its order.
    Returns ``(input_node, layer_nodes)``.
    """
    if not isinstance(output, Node):
        raise TypeError(f"Net: the output must be a node (a layer called on its "
                        f"inputs), got {output!r}")
    order, seen, inputs = [], set(), []
    stack = [(output, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in seen:
            continue
        if expanded or not node.inputs:
            seen.add(id(node))
            (order if node.layer is not None else inputs).append(node)
            continue
        stack.append((node, True))
        stack.extend((parent, False) for parent in reversed(node.inputs)
                     if id(parent) not in seen)
    if len(inputs) != 1:
        raise LayerArgumentError(f"Net: a network takes exactly one `Input`, this one "
                                 f"has {len(inputs)}")
    for node in order:
        if not isinstance(node.layer, Layer):
            raise TypeError(f"Net: {node.layer!r} is not a Layer")
    return inputs[0], order


def blocks(input_node, nodes, largest):
    """``nodes`` (in dependency order) cut where one tensor alone links what ran
    before to what runs after: the blocks of a residual net, each layer of a chain.

    A cut after ``nodes[i]`` is where no output of an earlier node is read later
    than ``nodes[i]``. A block of more than ``largest`` layers is cut into runs of
    at most that many (the same way for identical blocks).

    Returns
    -------
    list of list of Node
    """
    last_read = {}
    for index, node in enumerate(nodes):
        for parent in node.inputs:
            last_read[id(parent)] = max(last_read.get(id(parent), -1), index)
    result, current, reach = [], [], last_read.get(id(input_node), -1)
    for index, node in enumerate(nodes):
        current.append(node)
        if reach <= index:
            result += [current[i:i + largest] for i in range(0, len(current), largest)]
            current = []
        reach = max(reach, last_read.get(id(node), -1))
    return result + ([current] if current else [])


def covers(halo, need):
    """Whether ``halo`` is at least ``need`` on every side."""
    return all(a >= c and b >= d for (a, b), (c, d) in zip(halo, need))


def shared_halo(ndim, needs):
    """Halo and padding value of an output read by several consumers.

    ``needs`` are the ``(halo, fill)`` each consumer reads. The padding value is
    the first consumer's that needs one; the halo is the widest of those with that
    value. Consumers needing another value copy the output into a padded input of
    their own.
    """
    fill = next((fill for halo, fill in needs if any(map(any, halo))), 0.0)
    widths = [halo for halo, value in needs if value == fill] or [Halo.none(ndim)]
    return Halo(*[(max(h[axis][0] for h in widths), max(h[axis][1] for h in widths))
                  for axis in range(ndim)]), fill


def channels_last_nodes(input_node, nodes, consumers, sizes):
    """The nodes whose outputs are stored channels last (:mod:`devito_ml.layout`).

    Outputs linked by layers that :attr:`~devito_ml.layer.Layer.preserves_layout`
    (activations, BatchNorm, Add, Dropout, pooling) share one layout: a group. A
    group is stored channels last where every layer writing it can write it so (a
    register-tiled convolution; the layers inside the group), every layer reading
    it can read it so, its channels are whole vectors (:func:`whole_vectors`), and
    it holds neither the network's input nor its output (what users write and read
    stays NCHW). Between two tiled convolutions, BatchNorm, activations, Adds and
    pooling then run channels last, and the convolutions' copies into and out of
    their tiles keep the order of memory.

    Parameters
    ----------
    input_node : Node
    nodes : list of Node
        In dependency order, the output last.
    consumers : dict
        ``{id(node): [(consumer node, input index), ...]}``.
    sizes : dict
        ``{id(node): output size}``; channels must fill whole vectors
        (:func:`whole_vectors`).

    Returns
    -------
    set of int
        ``id`` of each node whose output is channels last.
    """
    parent = {id(node): id(node) for node in [input_node, *nodes]}

    def root(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for node in nodes:
        if node.layer.preserves_layout:
            for source in node.inputs:
                parent[root(id(source))] = root(id(node))
    groups = {}
    for node in [input_node, *nodes]:
        groups.setdefault(root(id(node)), []).append(node)
    chosen = set()
    for members in groups.values():
        if all(_may_be_channels_last(member, input_node, nodes[-1], consumers, sizes)
               for member in members):
            chosen.update(id(member) for member in members)
    return chosen


def whole_vectors(channels):
    """Whether ``channels`` float32 values are a whole number of vectors of the
    schedules' width, at most AVX2's 8 lanes: the loops of point-wise layers and
    pooling over channels-last activations, channels innermost, then vectorise
    without a remainder. (LeNet-5's 6 channels are register-tiled at 8 lanes, but
    its pooling over them ran 4 times slower channels last than over NCHW rows of
    14: batch 64 train step 2.6 -> 3.5 ms, AMD EPYC Zen 4.)"""
    return channels % min(8, float32_lanes()) == 0


def _may_be_channels_last(node, input_node, output_node, consumers, sizes):
    if node is input_node or node is output_node or not node.layer.writes_channels_last():
        return False
    size = sizes[id(node)]
    if len(size) != 4 or not whole_vectors(size[1]):
        return False
    return all(consumer.layer.reads_channels_last(index)
               for consumer, index in consumers[id(node)])
