"""The graph of a net: its layers in the order they run, their sizes and names, and
the Functions that link them, allocated once and wired in place."""

from collections import Counter

from devito import Dimension

from devito_ml.batch import batch_dimension
from devito_ml.graph import channels_last_nodes, covers, sequence, shared_halo, \
    topological_order
from devito_ml.layer import Layer, Node, fill_halo
from devito_ml.layout import logical_halo
from devito_ml.symbolics import tensor
from devito_ml.validation import LayerArgumentError, ShapeError, check_positive_ints

__all__ = ['NetGraph']


class NetGraph:
    """The layers of a net as a graph, checked, sized, named and wired.

    Parameters
    ----------
    layers : sequence of Layer, or Node
        A chain, or the output node of a graph.
    name : str
        The net's name: the prefix of its input's Function.
    dtype : numpy dtype
    batch_size, input_shape : optional
        As :class:`~devito_ml.Net`.

    Attributes
    ----------
    input_node : Node
        The graph's input.
    nodes : list of Node
        Every layer's node, each after those it reads.
    layers : list of Layer
    batch_size : int
    input_size : tuple of int
        ``(batch,) + one sample's shape``.
    names : list of str
        The layers' names, in the order of ``nodes``.
    input : Function
        The network's input (after :meth:`allocate`).
    statistics : object or None
        What sums the layers' batch statistics over the processes that share a
        batch (:meth:`~devito_ml.Net.synchronize_statistics`); None: each
        process's own.

    Notes
    -----
    Each link is one pair of Functions: a layer's ``result`` is read in place by
    the layers it feeds, allocated with the halo (padding) they read, and the
    gradient with respect to it is written by its consumer, or summed from each
    consumer's own gradient buffer when it feeds several. Layers without a name are
    numbered per family (``conv1``, ``conv2``, ``pool1``...), and their Functions
    and loops carry these names in the generated C.
    """

    def __init__(self, layers, name, dtype, batch_size=None, input_shape=None):
        self.name, self.dtype = name, dtype
        self.statistics = None
        output = self._describe(layers, batch_size, input_shape)
        self.input_node, self.nodes = topological_order(output)
        self.layers = [node.layer for node in self.nodes]
        self._check_owners()
        self._infer_sizes()
        self.names = self._layer_names()
        self._edges = self._consumers()

    def _describe(self, layers, batch_size, input_shape):
        """The output node: the graph given, or the chain of ``layers``."""
        if isinstance(layers, Node):
            if batch_size is None:
                raise LayerArgumentError("Net: give `batch_size` with a graph")
            self.batch_size = check_positive_ints(None, 'Net: batch_size',
                                                  (batch_size,), 1)[0]
            return layers
        layers = list(layers) if isinstance(layers, (list, tuple)) else None
        if not layers or not all(isinstance(i, Layer) for i in layers):
            raise TypeError("Net: `layers` must be a non-empty sequence of Layers or "
                            "the output node of a graph")
        first = layers[0].input_size
        if input_shape is None and first is None:
            raise LayerArgumentError(
                f"Net: give `input_shape` (one sample's shape), or an `input_size` "
                f"to the first layer, {type(layers[0]).__name__} `{layers[0].name}`")
        batch = batch_size if batch_size is not None else first and first[0]
        if batch is None:
            raise LayerArgumentError("Net: give `batch_size`")
        self.batch_size = check_positive_ints(None, 'Net: batch_size', (batch,), 1)[0]
        if first is not None and first[0] != self.batch_size:
            raise ShapeError(f"Net: `batch_size` is {self.batch_size}, but the first "
                             f"layer's input_size {first} has batch {first[0]}")
        shape = tuple(input_shape) if input_shape is not None else first[1:]
        used = [layer for layer in layers if layer.node is not None]
        if used:
            raise LayerArgumentError(f"Net: {type(used[0]).__name__} `{used[0].name}` "
                                     "is already used in a graph or another net")
        return sequence(layers, shape)

    def _check_owners(self):
        for layer in self.layers:
            if layer.allocated or layer.owner is not None:
                raise LayerArgumentError(f"Net `{self.name}`: " + layer.owned_message())
            if layer.dtype is not None and layer.dtype != self.dtype:
                raise TypeError(f"Net `{self.name}` is {self.dtype}, but "
                                f"{type(layer).__name__} `{layer.name}` was built "
                                f"with dtype {layer.dtype}: leave the layer's dtype "
                                "out, or make them agree")

    def _infer_sizes(self):
        self.input_size = (self.batch_size,) + tuple(self.input_node.shape)
        self._sizes = {id(self.input_node): self.input_size}
        for node in self.nodes:
            layer = node.layer
            fed = [self._sizes[id(parent)] for parent in node.inputs]
            if len(fed) == 1 and layer.input_size is not None \
                    and tuple(layer.input_size) != tuple(fed[0]):
                parent = node.inputs[0].layer
                before = f"{type(parent).__name__} `{parent.name}` before it gives " \
                    f"output_size" if parent is not None else "the net's input is"
                raise ShapeError(f"Net: {type(layer).__name__} `{layer.name}` takes "
                                 f"input_size {layer.input_size}, but {before} "
                                 f"{fed[0]}")
            self._sizes[id(node)] = tuple(layer.infer(fed))

    def _layer_names(self):
        counters = Counter()
        names = []
        for layer in self.layers:
            if layer.named:
                names.append(layer.name)
            else:
                counters[layer.family] += 1
                names.append(f"{layer.family}{counters[layer.family]}")
        repeated = [n for n, count in Counter(names).items() if count > 1]
        if repeated:
            raise LayerArgumentError(f"Net: layer names must be unique, {repeated} "
                                     "appear more than once")
        return names

    def _consumers(self):
        """Per node, the (consumer node, input index) pairs that read its output."""
        edges = {id(self.input_node): []}
        for node in self.nodes:
            edges[id(node)] = []
            for index, parent in enumerate(node.inputs):
                edges[id(parent)].append((node, index))
        return edges

    def consumers(self, node):
        """The ``(consumer node, input index)`` pairs that read ``node``'s output."""
        return self._edges[id(node)]

    def size_of(self, node):
        """The output size of ``node`` (the input size for the input node)."""
        return self._sizes[id(node)]

    def result_of(self, node):
        """The Function holding ``node``'s output (the net's input for its node)."""
        return self.input if node.layer is None else node.layer.result

    @property
    def output_layer(self):
        return self.nodes[-1].layer

    def allocate(self, owner):
        """Create every Function once, in dependency order, wired in place: a
        layer's result read in place by its consumers where its halo serves them,
        the gradient of an output read by one consumer written by it directly."""
        edges = self._edges
        roles = ('c', 'h', 'w') if len(self.input_size) == 4 else ('f',)
        dims = (batch_dimension(),) + tuple(
            Dimension(f"{self.name}_input_{r}") for r in roles)
        halo, fill = self._halo_of(self.input_node)
        self.input = tensor(f"{self.name}_input", dims, self.input_size, self.dtype,
                            halo)
        fill_halo(self.input, fill)
        fills = {id(self.input_node): fill}
        channels_last = channels_last_nodes(self.input_node, self.nodes, edges,
                                            self._sizes)
        for node, name in zip(self.nodes, self.names):
            inputs, targets = [], []
            for index, parent in enumerate(node.inputs):
                source = self.result_of(parent)
                need = (node.layer.input_halos[index], node.layer.input_fills[index])
                in_place = covers(logical_halo(source), need[0]) and (
                    not any(map(any, need[0])) or need[1] == fills[id(parent)])
                inputs.append(source if in_place else None)
                alone = parent.layer is not None and len(edges[id(parent)]) == 1
                targets.append(parent.layer.result_gradients if alone else None)
            halo, fill = self._halo_of(node)
            layouts = (tuple(id(parent) in channels_last for parent in node.inputs),
                       id(node) in channels_last)
            node.layer.allocate(self.dtype, name, inputs, targets, halo, fill,
                                owner=owner, channels_last=layouts)
            fills[id(node)] = fill

    def _halo_of(self, node):
        needs = [(consumer.layer.input_halos[index], consumer.layer.input_fills[index])
                 for consumer, index in self._edges[id(node)]]
        return shared_halo(len(self._sizes[id(node)]), needs)

    def network_input_gradients(self):
        """Where the layers fed by the network's input write its gradient: computed
        by no pass unless asked for (:func:`~devito_ml.pruning.pruned`)."""
        return [consumer.layer.input_gradients_of(index)
                for consumer, index in self._edges[id(self.input_node)]]

    def unread_input_gradients(self):
        """The network input's gradients that no other edge reads: an Add shares
        one gradient buffer among its inputs (``Add._allocate``), and where the
        network's input is one of them, the others need it."""
        read = {id(consumer.layer.input_gradients_of(index)) for node in self.nodes
                for consumer, index in self._edges[id(node)]}
        return [gradient for gradient in self.network_input_gradients()
                if id(gradient) not in read]
