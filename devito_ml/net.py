"""Net: a graph of layers; builds the forward, backward, evaluation and train-step
operators, and runs them."""

import functools
import os
import re
import weakref
from collections import Counter

import numpy as np
from devito import Dimension, Eq

from devito_ml.allocation import batched_allocation
from devito_ml.code_map import annotate
from devito_ml import unit_records
from devito_ml.compiled import (BATCH, CompiledOperator, KernelSource, OperatorChain,
                                kernel_options, split_at_sync_points)
from devito_ml.graph import (blocks, channels_last_nodes, covers, sequence, shared_halo,
                             topological_order)
from devito_ml.kernel_builds import build_kernels
from devito_ml.kernels import kernel_label, role_of, unit_owners
from devito_ml.layer import Layer, Node, fill_halo
from devito_ml.layers.dense import FullyConnectedSoftmax
from devito_ml.layout import logical_halo
from devito_ml.loss import CrossEntropy, get_loss
from devito_ml.pruning import pruned
from devito_ml.symbolics import plain_view, tensor
from devito_ml.vector_width import float32_lanes
from devito_ml.validation import (LayerArgumentError, ShapeError, check_array,
                                  check_float_dtype, check_name, check_positive_ints)

__all__ = ['Net', 'LAYERS_PER_OPERATOR']

LAYERS_PER_OPERATOR = 12


class Net:
    """A graph of layers compiled into forward, backward and train-step operators.

    Parameters
    ----------
    layers : sequence of Layer, or Node
        A chain of layers, or the output node of a graph built by calling layers on
        nodes (``Add()(conv(x), x)``, from :func:`~devito_ml.Input`). Inside a net,
        each layer infers its input size from what feeds it.
    dtype : numpy dtype
        float32 (default) or float64, for every Function of the net. A layer built
        with another dtype is refused.
    loss : Loss or str
        ``'cross_entropy'`` (default, on logits) or ``'mse'``.
    name : str
        Prefix of the generated C functions (``net_forward``, ``net_backward``).
    seed : int, optional
        When given, re-draws every parameter from this seed.
    batch_size : int, optional
        Samples per batch (smaller batches run on the same operators). Default:
        the batch of the first layer's ``input_size``.
    input_shape : tuple of int, optional
        One sample's shape for a chain, ``(channels, rows, cols)`` or
        ``(features,)``. Default: from the first layer's ``input_size``.
    layers_per_operator : int
        A net of at most this many layers is one operator a pass (``<net>_forward``).
        A deeper one is compiled block by block (:func:`~devito_ml.graph.blocks`, no
        block longer than this), run in sequence: one operator over a whole ResNet
        would take minutes to lower and compile, and more C arguments than ctypes
        passes. Identical blocks call one kernel (:mod:`devito_ml.kernels`); the
        calls are named ``<net>_forward_1``... (:meth:`call_map`).

    Notes
    -----
    Each link is one pair of Functions: a layer's ``result`` is read in place by
    the layers it feeds, allocated with the halo (padding) they read, and the
    gradient with respect to it is written by its consumer, or summed from each
    consumer's own gradient buffer when it feeds several. Layers without a name are
    numbered per family (``conv1``, ``conv2``, ``pool1``...), and their Functions
    and loops carry these names in the generated C. A layer belongs to one net.

    Examples
    --------
    >>> import numpy as np
    >>> from devito_ml import Net, Conv, Flat, FullyConnected, ReLU
    >>> net = Net([Conv((4, 3, 3), padding=1, activation=ReLU()), Flat(),
    ...            FullyConnected(3)], batch_size=2, input_shape=(1, 6, 6))
    >>> net.forward(np.ones((2, 1, 6, 6), np.float32)).shape
    (2, 3)
    >>> loss = net.backward(np.array([0, 2]))
    >>> sorted(net.gradients())[:2]
    ['conv1_W', 'conv1_b']
    """

    def __init__(self, layers, dtype=np.float32, loss='cross_entropy', name='net',
                 seed=None, batch_size=None, input_shape=None,
                 layers_per_operator=LAYERS_PER_OPERATOR):
        self.dtype = check_float_dtype(None, 'Net: dtype', dtype)
        self.name = check_name(None, 'name', name)
        self.loss = get_loss(loss)
        self.training = True
        output = self._describe(layers, batch_size, input_shape)
        self._input_node, self.nodes = topological_order(output)
        self.layers = [node.layer for node in self.nodes]
        self.layers_per_operator = check_positive_ints(
            None, 'Net: layers_per_operator', (layers_per_operator,), 1)[0]
        self._check_owners()
        self._infer_sizes()
        self._name_layers()
        with batched_allocation():     # one sweep of Devito's caches, not one a Function
            self._allocate()
            if seed is not None:
                rng = np.random.default_rng(seed)
                for layer in self.layers:
                    layer.reset_parameters(rng)
            self.loss.bind(self.output_size, self.dtype)
        self._losses = {self.loss.name: self.loss}
        self._stepped = [layer for layer in self.layers if layer.draws_per_step]
        self._mode_dependent = any(layer.mode_dependent for layer in self.layers)
        self._forget_operators()
        self._batch = None
        self._input_view = plain_view(self.input)
        self._output_view = plain_view(self.output_layer.result)

    def _forget_operators(self):
        """Drop the operators built so far: the next use builds them from the layers'
        equations as they are now (BatchNorm synchronized by ``distributed.py``)."""
        self._forward_operators = {}
        self._backward_operators = {}
        self._evaluation_operators = {}
        self._train_operators = weakref.WeakKeyDictionary()
        self._latest_optimizer = None

    # -- construction ------------------------------------------------------------------

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
                raise LayerArgumentError(f"Net `{self.name}`: " + layer._owned_message())
            if layer.dtype is not None and layer.dtype != self.dtype:
                raise TypeError(f"Net `{self.name}` is {self.dtype}, but "
                                f"{type(layer).__name__} `{layer.name}` was built "
                                f"with dtype {layer.dtype}: leave the layer's dtype "
                                "out, or make them agree")

    def _infer_sizes(self):
        self.input_size = (self.batch_size,) + tuple(self._input_node.shape)
        self._sizes = {id(self._input_node): self.input_size}
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

    def _name_layers(self):
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
        self._names = names

    def _consumers(self):
        """Per node, the (consumer node, input index) pairs that read its output."""
        edges = {id(self._input_node): []}
        for node in self.nodes:
            edges[id(node)] = []
            for index, parent in enumerate(node.inputs):
                edges[id(parent)].append((node, index))
        return edges

    def _allocate(self):
        """Create every Function once, in dependency order, wired in place."""
        self._edges = edges = self._consumers()
        roles = ('c', 'h', 'w') if len(self.input_size) == 4 else ('f',)
        dims = (Dimension(BATCH),) + tuple(Dimension(f"{self.name}_input_{r}")
                                           for r in roles)
        halo, fill = self._halo_of(self._input_node)
        self.input = tensor(f"{self.name}_input", dims, self.input_size, self.dtype,
                            halo)
        fill_halo(self.input, fill)
        self._fills = {id(self._input_node): fill}
        channels_last = channels_last_nodes(self._input_node, self.nodes, edges,
                                            self._sizes)
        for node, name in zip(self.nodes, self._names):
            inputs, targets = [], []
            for index, parent in enumerate(node.inputs):
                source = self._result_of(parent)
                need = (node.layer.input_halos[index], node.layer.input_fills[index])
                in_place = covers(logical_halo(source), need[0]) and (
                    not any(map(any, need[0])) or need[1] == self._fills[id(parent)])
                inputs.append(source if in_place else None)
                alone = parent.layer is not None and len(edges[id(parent)]) == 1
                targets.append(parent.layer.result_gradients if alone else None)
            halo, fill = self._halo_of(node)
            layouts = (tuple(id(parent) in channels_last for parent in node.inputs),
                       id(node) in channels_last)
            node.layer.allocate(self.dtype, name, inputs, targets, halo, fill,
                                owner=self, channels_last=layouts)
            self._fills[id(node)] = fill

    def _halo_of(self, node):
        size = self._sizes[id(node)]
        needs = [(consumer.layer.input_halos[index], consumer.layer.input_fills[index])
                 for consumer, index in self._edges[id(node)]]
        return shared_halo(len(size), needs)

    def _result_of(self, node):
        return self.input if node.layer is None else node.layer.result

    @property
    def output_layer(self):
        return self.nodes[-1].layer

    @property
    def output_size(self):
        return self.output_layer.output_size

    def _bound_loss(self, loss=None):
        """The net's loss, or ``loss`` bound to this net's output (cached by name)."""
        if loss is None:
            return self.loss
        loss = get_loss(loss)
        if loss.name not in self._losses:
            self._losses[loss.name] = loss.bind(self.output_size, self.dtype)
        return self._losses[loss.name]

    # -- equations and operators -------------------------------------------------------

    def _segments(self):
        """The nodes, cut into consecutive parts compiled as one operator each: the
        whole net when it has at most ``layers_per_operator`` layers, else its blocks
        (:func:`~devito_ml.graph.blocks`), whose kernels identical blocks share."""
        if len(self.nodes) <= self.layers_per_operator:
            return [self.nodes]
        return blocks(self._input_node, self.nodes, self.layers_per_operator)

    def parts(self):
        """(layers, name suffix) of each part: ``''`` when there is one part."""
        segments = self._segments()
        return [([node.layer for node in segment],
                 f"_{index}" if len(segments) > 1 else '')
                for index, segment in enumerate(segments, start=1)]

    def _unit(self, segment, kind):
        """``(owners, label)`` of a part's kernel (:mod:`devito_ml.kernels`), or
        ``(None, None)`` for the one part of a small net, named after the net."""
        if len(segment) == len(self.nodes):
            return None, None
        inside = {id(node) for node in segment}
        sources = [parent for node in segment for parent in node.inputs
                   if id(parent) not in inside]
        consumers = [consumer for node in segment
                     for consumer, _ in self._edges[id(node)]
                     if id(consumer) not in inside]
        consumers += self._gradient_writers(segment, consumers)
        first = segment[0].inputs[0]
        size = self.input_size if first.layer is None else self._sizes[id(first)]
        return (unit_owners(segment, sources, consumers, self.name),
                kernel_label([node.layer for node in segment], size, self.dtype,
                             kind))

    def _gradient_writers(self, segment, consumers):
        """Nodes outside ``segment`` and ``consumers`` whose Functions are the
        gradients that consumers write for it: an Add shares the gradient of the
        layer before it with its other inputs (``Add._allocate``), and a residual
        block's input reads the next block's BatchNorm's. Named as consumers, they
        get a role (``dst3_dout``), so that identical blocks still share a kernel."""
        known = {id(node) for node in (*segment, *consumers)}
        owner_of = {id(node.layer.result_gradients): node for node in self.nodes}
        writers = []
        for node in segment:
            for consumer, index in self._edges[id(node)]:
                writer = owner_of.get(id(consumer.layer.input_gradients_of(index)))
                if writer is not None and id(writer) not in known:
                    known.add(id(writer))
                    writers.append(writer)
        return writers

    def _chain(self, name, pieces, kind, context=(), optimizer=None):
        """An OperatorChain from (suffix, derive, segment) pieces, ``derive()``
        making a piece's equations; empty ones are left out, and a piece holding
        sync points (synchronized BatchNorm) is cut there. ``kind`` names the pass
        in the kernels' names; ``context`` (the loss, the mode) and ``optimizer``
        are what else the equations are made from.

        A piece whose unit record is found (:mod:`devito_ml.unit_records`) with its
        kernel at hand is not derived."""
        sources, sync_points = [], {}
        for suffix, derive, segment in pieces:
            owners, label = self._unit(segment, kind)
            call = f"{name}{suffix}"
            description = self._unit_description(call, kind, segment, owners, context,
                                                 optimizer)
            recalled = self._recalled(description, call, owners, label, derive,
                                      optimizer)
            if recalled is not None:
                sources.append(recalled)
                continue
            groups = split_at_sync_points(derive())
            for cut, (group, point) in enumerate(groups):
                if group:
                    sources.append(KernelSource(
                        group, call + (f"_sync{cut}" if cut else ''), owners, label))
                if point is not None:
                    sync_points.setdefault(len(sources), []).append(point)
            if description is not None and len(groups) == 1 and groups[0][0]:
                unit_records.remember(description[0], sources[-1], owners)
        build_kernels(sources)         # the distinct ones, on every core
        parts = [CompiledOperator(source=source) for source in sources]
        return OperatorChain(parts, name=name, sync_points=sync_points)

    def _unit_description(self, call, kind, segment, owners, context, optimizer):
        """``(record key, {name: Function or Constant met})`` of a unit, or None
        where it cannot be described (:func:`~devito_ml.unit_records.fingerprint`)."""
        roles, found, seen = {}, {}, {}

        def rename(name):
            if name not in roles:
                roles[name] = role_of(name, owners) if owners else name
            return roles[name]

        def text(obj):
            return unit_records.fingerprint(obj, rename, found, seen)
        try:
            phase = re.sub(r'\d+', '', call[len(self.name):])    # _forward_, _backward_
            texts = ['' if owners else call, kind, phase, text(list(context))]
            if optimizer is not None:
                texts.append(text(optimizer.description(
                    [node.layer for node in segment])))
            for node in segment:
                texts += [text(node.layer),
                          text([self._result_of(parent) for parent in node.inputs]),
                          text([(type(consumer.layer), consumer.layer.name, index,
                                 consumer.layer.input_gradients_of(index))
                                for consumer, index in self._edges[id(node)]]),
                          repr((node is self.nodes[0], node is self.nodes[-1]))]
        except unit_records.Undescribable:
            return None
        return unit_records.describe(texts, dict(kernel_options(),
                                                 lanes=float32_lanes())), found

    def _recalled(self, description, call, owners, label, derive, optimizer):
        """The recalled :class:`KernelSource` of a described unit whose kernel is
        at hand, or None. Checked against the derived one when
        ``DEVITO_ML_CHECK_RECORDS`` is set."""
        if description is None:
            return None
        key, found = description

        def resolve(name):      # an optimizer's Constants are made when first asked
            return optimizer.constant_named(name) if optimizer is not None else None
        recalled = unit_records.recall(key, owners, found, resolve)
        if recalled is None:
            return None
        record, names, symbols = recalled

        def derived():
            groups = split_at_sync_points(derive())
            if len(groups) != 1:
                raise RuntimeError(f"`{call}`: a recorded unit has sync points")
            return KernelSource(groups[0][0], call, owners, label)
        source = KernelSource.recalled(record, call, names, symbols, derived)
        if not source.at_hand():
            return None
        if unit_records.checking():
            unit_records.check(source, source.derived())
        return source

    def forward_equations(self, training=True, nodes=None):
        """Equations of the forward pass (of ``nodes``), each layer after its
        inputs."""
        eqs = []
        for node in self.nodes if nodes is None else nodes:
            sources = [self._result_of(parent) for parent in node.inputs]
            eqs += node.layer.net_equations(sources, training)
        return eqs

    def backward_equations(self, loss=None, training=True, nodes=None,
                           input_gradient=False):
        """Loss value and gradient, then every layer's adjoint in reverse order.

        Where an output feeds several layers, its gradient is the sum of what each
        consumer wrote into its own buffer. Cross entropy after a
        :class:`FullyConnectedSoftmax` reads its logits and writes their gradient
        directly (exact even where a probability underflows).

        With ``input_gradient``, the gradient of the network's input is computed
        and the parameters' gradients only where it needs them (BatchNorm's).
        """
        loss = self._bound_loss(loss)
        last = self.output_layer
        nodes = self.nodes if nodes is None else nodes
        eqs = self._loss_equations(loss) if nodes[-1] is self.nodes[-1] else []
        for node in reversed(nodes):
            layer = node.layer
            edges = self._edges[id(node)]
            if len(edges) > 1:
                dims = layer.out_storage
                total = sum(consumer.layer.input_gradients_of(index)[dims]
                            for consumer, index in edges)
                eqs.append(Eq(layer.result_gradients[dims], total))
            if layer is last and isinstance(last, FullyConnectedSoftmax):
                eqs += last.backprop_equations(
                    from_logits=isinstance(loss, CrossEntropy), training=training)
            else:
                eqs += layer.net_backprop_equations(training)
        if input_gradient:
            return pruned(eqs, [], self._read_elsewhere(loss, parameter_gradients=False))
        return pruned(eqs, self._unread_input_gradients(), self._read_elsewhere(loss))

    def _network_input_gradients(self):
        """Where the layers fed by the network's input write its gradient: computed
        by no pass unless asked for (:func:`~devito_ml.pruning.pruned`)."""
        return [consumer.layer.input_gradients_of(index)
                for consumer, index in self._edges[id(self._input_node)]]

    def _unread_input_gradients(self):
        """The network input's gradients that no other edge reads: an Add shares
        one gradient buffer among its inputs (``Add._allocate``), and where the
        network's input is one of them, the others need it."""
        read = {id(consumer.layer.input_gradients_of(index)) for node in self.nodes
                for consumer, index in self._edges[id(node)]}
        return [gradient for gradient in self._network_input_gradients()
                if id(gradient) not in read]

    def _read_elsewhere(self, loss, parameter_gradients=True):
        """Functions a pass writes that other passes, parts or the user read."""
        kept = [loss.per_sample]
        for node in self.nodes:
            layer = node.layer
            kept += [*layer.parameters().values(), layer.result, layer.result_gradients]
            if parameter_gradients:
                kept += layer.gradients().values()
            kept += [layer.input_gradients_of(i) for i in range(len(node.inputs))]
        return kept

    def _mode(self, training):
        """The mode operators are built for: nets without BatchNorm or Dropout
        share one set between training and evaluation."""
        return bool(training) if self._mode_dependent else True

    def _suffix(self, training):
        return '' if self._mode(training) else '_eval'

    def forward_operator_for(self, training=True):
        """The forward operator of a mode, built once."""
        mode = self._mode(training)
        if mode not in self._forward_operators:
            suffixes = [suffix for _, suffix in self.parts()]
            self._forward_operators[mode] = self._chain(
                f"{self.name}_forward{self._suffix(mode)}",
                [(suffix, functools.partial(self.forward_equations, mode, segment),
                  segment) for suffix, segment in zip(suffixes, self._segments())],
                'forward' + self._suffix(mode), context=[mode])
        return self._forward_operators[mode]

    @property
    def forward_operator(self):
        """The forward operator of the current mode (see :meth:`train`)."""
        return self.forward_operator_for(self.training)

    @property
    def backward_operator(self):
        """The backward operator of the net's own loss, in the current mode."""
        return self.backward_operator_for()

    def backward_operator_for(self, loss=None, training=None, input_gradient=False):
        """The backward operator of ``loss`` (default: the net's), built once.

        With ``input_gradient``, the one that computes the gradient of the network's
        input (and the parameter gradients only where that needs them): the
        operator of :meth:`input_gradient`.
        """
        loss = self._bound_loss(loss)
        mode = self._mode(self.training if training is None else training)
        key = (loss.name, mode, input_gradient)
        if key not in self._backward_operators:
            kind = 'input_gradient' if input_gradient else 'backward'
            suffixes = [suffix for _, suffix in self.parts()]
            self._backward_operators[key] = self._chain(
                self._operator_name(kind, loss) + self._suffix(mode),
                [(suffix, functools.partial(self.backward_equations, loss, mode, segment,
                                            input_gradient), segment)
                 for suffix, segment in reversed(list(zip(suffixes,
                                                          self._segments())))],
                kind + self._suffix(mode), context=[loss, mode, input_gradient])
        return self._backward_operators[key]

    def evaluation_operator(self, loss=None):
        """Forward pass (evaluation behaviour) and loss value, no gradient."""
        loss = self._bound_loss(loss)
        if loss.name not in self._evaluation_operators:
            pieces = [(suffix, functools.partial(self.forward_equations, False, segment),
                       segment)
                      for (_, suffix), segment in zip(self.parts(), self._segments())]
            suffix, forward, segment = pieces[-1]
            pieces[-1] = (suffix, lambda: forward() + self._loss_only(loss), segment)
            self._evaluation_operators[loss.name] = self._chain(
                self._operator_name('evaluate', loss), pieces, 'evaluate',
                context=[loss])
        return self._evaluation_operators[loss.name]

    def _loss_only(self, loss):
        """The loss value without its gradient (evaluating)."""
        last = self.output_layer
        gradient = last.logits_gradients if isinstance(last, FullyConnectedSoftmax) \
            and isinstance(loss, CrossEntropy) else last.result_gradients
        return pruned(self._loss_equations(loss), [gradient], self._read_elsewhere(loss))

    def train_operator(self, optimizer, loss=None):
        """Forward, backward and ``optimizer``'s update fused in one operator."""
        loss = self._bound_loss(loss)
        if optimizer.net is not self:
            raise ValueError(f"Net `{self.name}`: the optimizer was built for "
                             f"another net, `{optimizer.net.name}`")
        # by the optimizer itself, held weakly: an entry goes with its optimizer (an
        # id could be taken over by a new optimizer, which then ran on the old one's
        # moments and step count); the latest optimizer is held, so that its
        # operator stays among those built (`write_code` after
        # `train_operator(Adam(net))`)
        operators = self._train_operators.setdefault(optimizer, {})
        self._latest_optimizer = optimizer
        if loss.name not in operators:
            parts = list(zip(self.parts(), self._segments()))
            if len(parts) == 1:
                pieces = [('', lambda: self.forward_equations(True)
                           + self.backward_equations(loss, True)
                           + optimizer.equations(), self.nodes)]
            else:   # forward parts, then each part's adjoint and its update
                pieces = [(f"_forward{suffix}",
                           functools.partial(self.forward_equations, True, segment),
                           segment) for (_, suffix), segment in parts]
                pieces += [(f"_backward{suffix}",
                            functools.partial(self._train_backward, loss, optimizer,
                                              segment, layers), segment)
                           for (layers, suffix), segment in reversed(parts)]
            operator = optimizer.attach(self._chain(
                self._operator_name(f"train_{optimizer.name}", loss), pieces,
                f"train_{optimizer.name}", context=[loss], optimizer=optimizer))
            operators[loss.name] = operator
        return operators[loss.name]

    def _train_backward(self, loss, optimizer, segment, layers):
        return self.backward_equations(loss, True, segment) + optimizer.equations(layers)

    def _operator_name(self, kind, loss):
        """``<net>_<kind>``, with the loss appended when it is not the net's own."""
        suffix = '' if loss is self.loss else f"_{loss.name}"
        return f"{self.name}_{kind}{suffix}"

    def _loss_equations(self, loss):
        last = self.output_layer
        if isinstance(last, FullyConnectedSoftmax) and isinstance(loss, CrossEntropy):
            return loss.equations(last.logits, last.logits_gradients)
        return loss.equations(last.result, last.result_gradients)

    # -- running -----------------------------------------------------------------------

    def forward(self, x):
        """Run the forward pass on a batch ``x`` (NCHW numpy); return the output.

        ``x`` may hold fewer samples than the allocated batch; the same operator
        runs on the first ``len(x)`` entries.
        """
        batch = self._load_batch(x)
        self._before_step(batch, self.training)
        self.forward_operator.run(batch)
        return np.array(self._output_view[:batch])

    __call__ = forward

    def backward(self, targets, loss=None):
        """Compute the loss of the last forward batch and every gradient.

        Parameters
        ----------
        targets : numpy array
            For cross entropy, class labels ``(b,)`` or probabilities; for mse,
            an array shaped like the output.
        loss : Loss or str, optional
            Another loss than the net's; its backward operator is built on first
            use and kept.

        Returns
        -------
        float
            The loss, averaged over the batch.
        """
        if self._batch is None:
            raise RuntimeError("Net.backward: run `forward` on a batch first")
        loss = self._bound_loss(loss)
        loss.set_targets(targets, self._batch)
        self.backward_operator_for(loss).run(self._batch)
        return loss.value(self._batch)

    def input_gradient(self, x, targets, loss=None):
        """The gradient of the batch's mean loss with respect to the input ``x``.

        For saliency maps and adversarial examples. Runs the forward pass in the
        current mode (:meth:`eval` for a trained net with BatchNorm or Dropout),
        then a backward pass that computes the input's gradient and no parameter
        gradient it does not need; ``gradients()`` are then stale.

        Parameters
        ----------
        x : numpy array
            A batch of inputs, shaped as :attr:`input_size` but for the batch.
        targets : numpy array
            As for :meth:`backward`.
        loss : Loss or str, optional

        Returns
        -------
        numpy array
            Shaped as ``x``.

        Examples
        --------
        >>> import numpy as np
        >>> from devito_ml import Net, Conv, Flat, FullyConnected
        >>> net = Net([Conv((2, 3, 3)), Flat(), FullyConnected(3)], batch_size=4,
        ...           input_shape=(1, 5, 5), seed=0, dtype=np.float64)
        >>> x = np.random.default_rng(0).random((4, 1, 5, 5))
        >>> net.input_gradient(x, np.array([0, 1, 2, 0])).shape
        (4, 1, 5, 5)
        """
        self.forward(x)
        loss = self._bound_loss(loss)
        loss.set_targets(targets, self._batch)
        self.backward_operator_for(loss, input_gradient=True).run(self._batch)
        gradients = [np.asarray(g.data[:self._batch])
                     for g in self._network_input_gradients()]
        return np.array(sum(gradients[1:], gradients[0]))

    def sample_losses(self, loss=None):
        """The loss of each sample of the last batch that :meth:`backward`,
        :meth:`evaluate`, :meth:`train_step` or :meth:`input_gradient` ran
        (their mean is the loss they returned).

        Examples
        --------
        >>> import numpy as np
        >>> from devito_ml import Net, Flat, FullyConnected
        >>> net = Net([Flat(), FullyConnected(3)], batch_size=2, input_shape=(1, 2, 2))
        >>> mean, _ = net.evaluate(np.ones((2, 1, 2, 2), np.float32), np.array([0, 1]))
        >>> bool(np.isclose(net.sample_losses().mean(), mean))
        True
        """
        if self._batch is None:
            raise RuntimeError(f"Net `{self.name}`.sample_losses: no batch has run yet")
        return np.array(self._bound_loss(loss)._per_sample[:self._batch])

    def _load_batch(self, x):
        check_array(None, 'Net: x', x, self.input_size, self.dtype)
        batch = x.shape[0]
        self._input_view[:batch] = x
        self._batch = batch
        return batch

    def _before_step(self, batch, training):
        for layer in self._stepped:
            layer.before_step(batch, training)

    def evaluate(self, x, targets, loss=None):
        """Loss and output on a batch, computing no gradient.

        Returns
        -------
        (float, ndarray)
        """
        loss = self._bound_loss(loss)
        batch = self._load_batch(x)
        loss.set_targets(targets, batch)
        self._before_step(batch, False)
        self.evaluation_operator(loss).run(batch)
        return loss.value(batch), np.array(self._output_view[:batch])

    def train_step(self, x, targets, optimizer, loss=None):
        """One training step in one operator: forward, backward, update.

        Returns
        -------
        (float, ndarray)
            The batch's loss and output, both from before the update.
        """
        loss = self._bound_loss(loss)
        operator = self.train_operator(optimizer, loss)
        batch = self._load_batch(x)
        loss.set_targets(targets, batch)
        optimizer.prepare_step()
        self._before_step(batch, True)
        operator.run(batch)
        optimizer.finish_step()
        return loss.value(batch), np.array(self._output_view[:batch])

    def train(self, mode=True):
        """Set training mode: batch statistics in BatchNorm, Dropout active.

        :meth:`forward` and :meth:`backward` run the operators of the current
        mode; :meth:`evaluate` always runs evaluation behaviour and
        :meth:`train_step` training behaviour.
        """
        self.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode."""
        return self.train(False)

    # -- parameters ---------------------------------------------------------------------

    def parameters(self):
        """Every parameter as a numpy view, by Function name (``conv1_W``)."""
        return {f.name: f.data for layer in self.layers
                for f in layer.parameters().values()}

    def gradients(self):
        """Every parameter gradient as a numpy view, by its parameter's name."""
        return {layer.parameters()[role].name: f.data for layer in self.layers
                for role, f in layer.gradients().items()}

    def buffers(self):
        """State that is saved but not learnt (running statistics), by name
        (``bn1_running_mean``), as numpy views."""
        return {f"{layer.name}_{role}": data for layer in self.layers
                for role, data in layer.buffers().items()}

    def state_dict(self):
        """A copy of every parameter and buffer, by name."""
        return {name: np.array(data, copy=True)
                for name, data in {**self.parameters(), **self.buffers()}.items()}

    def load_state_dict(self, state):
        """Copy parameters and buffers in from ``state`` (from :meth:`state_dict`).

        Everything is checked before anything is written: the names (missing and
        unexpected ones are listed), the shapes, and that the values are finite.
        """
        own = {**self.parameters(), **self.buffers()}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"Net `{self.name}`.load_state_dict: missing {missing}, "
                           f"unexpected {unexpected} (the state of another model?)")
        for name, data in own.items():
            if np.shape(state[name]) != data.shape:
                raise ShapeError(f"Net `{self.name}`.load_state_dict: `{name}` must "
                                 f"have shape {data.shape}, got {np.shape(state[name])}")
            if not np.all(np.isfinite(state[name])):
                raise ValueError(f"Net `{self.name}`.load_state_dict: `{name}` holds "
                                 "NaN or infinite values")
        for name, data in own.items():
            data[...] = state[name]

    # -- generated code ---------------------------------------------------------------

    @property
    def forward_code(self):
        """The generated C of the forward operator: each kernel it calls once, with
        the map of its sections to the layers (:func:`~devito_ml.code_map.annotate`)
        and, for a kernel shared by blocks, the layers each call runs it on."""
        return self._listing([self.forward_operator])

    @property
    def backward_code(self):
        """The generated C of the backward operator (loss included), annotated."""
        return self._listing([self.backward_operator])

    def layer_code(self, layer, backward=False):
        """The generated C that computes ``layer`` in the forward (or backward)
        pass of the current mode, annotated.

        For a net of at most ``layers_per_operator`` layers, the whole pass. For a
        deeper one, the kernel of the block holding ``layer``: its tensors are named
        after their roles in the block (``conv1_W``, the block's first convolution's
        weights; ``src1_out``, the output of the layer feeding the block), and its
        opening comment maps them to the layers of each call.

        Parameters
        ----------
        layer : str or Layer
        backward : bool

        Returns
        -------
        str
        """
        name = layer.name if isinstance(layer, Layer) else layer
        if name not in self._names:
            raise LayerArgumentError(f"Net `{self.name}`.layer_code: no layer `{name}`; "
                                     f"the layers are {self._names}")
        chain = self.backward_operator if backward else self.forward_operator
        calls = [part for part in chain.parts
                 if not part.owners or name in part.owners.values()]
        same = [part for part in chain.parts if part.kernel_name == calls[0].kernel_name]
        return self._annotated(same)

    def _listing(self, chains):
        return '\n'.join(self._annotated(calls) for calls in _kernel_calls(chains))

    def _annotated(self, calls):
        """The C of one kernel, opening with which layer each section computes and,
        for a shared kernel, which layers each of its ``calls`` stands for."""
        part = calls[0]
        if not part.owners:
            owners = [layer.name for layer in self.layers] + sorted(self._losses)
            return annotate(part.code, owners,
                            f"devito_ml net `{self.name}`, operator `{part.name}`")
        title = [f"devito_ml kernel `{part.kernel_name}`, shared by blocks of the same "
                 f"work; net `{self.name}` calls it {len(calls)} time(s):"]
        title += [f"  {call.name}: {_roles(call)}" for call in calls]
        return annotate(part.code, list(part.owners) + sorted(self._losses),
                        '\n * '.join(title))

    def write_code(self, directory, optimizer=None):
        """Write the C of every operator built so far, or of the forward and backward
        operators when none is; nothing else is built.

        Each kernel is written once, to ``<kernel>.c``: for a net of at most
        ``layers_per_operator`` layers, one a pass, named after it
        (``<name>_forward.c``, ``<name>_backward.c``, ``<name>_train_sgd.c``...);
        for a deeper net, one a distinct block, named by what it computes, and
        ``<name>_calls.txt``, the kernels each operator calls in the order they
        run and the layers each call stands for. Each file opens with a comment
        mapping its sections to the layers and marks every section with the layers
        it computes. Returns their paths.

        Parameters
        ----------
        directory : str
        optimizer : Optimizer, optional
            Also write its update operator (``<name>_<optimizer>_step.c``), when it
            was built: data-parallel training runs it apart from the backward pass.
        """
        os.makedirs(directory, exist_ok=True)
        chains = self._built() or [self.forward_operator, self.backward_operator]
        if optimizer is not None and optimizer._update_operator is not None:
            chains.append(optimizer._update_operator)
        paths = []
        for calls in _kernel_calls(chains):
            paths.append(os.path.join(directory, f"{calls[0].kernel_name}.c"))
            with open(paths[-1], 'w') as handle:
                handle.write(self._annotated(calls))
        if any(part.owners for chain in chains for part in chain.parts):
            paths.append(os.path.join(directory, f"{self.name}_calls.txt"))
            with open(paths[-1], 'w') as handle:
                handle.write(self.call_map(chains))
        return paths

    def _built(self):
        """Every operator built so far."""
        return [*self._forward_operators.values(), *self._backward_operators.values(),
                *self._evaluation_operators.values(),
                *(operator for operators in list(self._train_operators.values())
                  for operator in operators.values())]

    def call_map(self, chains=None):
        """Which kernel each operator calls, in the order they run, and the layers
        each call stands for (``conv1=layer1_0_conv1``: the kernel's ``conv1_W`` is
        ``layer1_0_conv1_W`` in that call).

        Parameters
        ----------
        chains : list of OperatorChain, optional
            Default: every operator built so far.

        Returns
        -------
        str
        """
        if chains is None:
            chains = self._built()
        lines = [f"# devito_ml net `{self.name}`: the kernels each operator calls, in "
                 "the order they run, and the layers each call stands for"]
        for chain in chains:
            distinct = len({part.kernel_name for part in chain.parts})
            lines += ['', f"{chain.name}: {len(chain.parts)} calls, {distinct} kernels"]
            lines += [f"  {part.name:<28} {part.kernel_name}" +
                      (f"\n  {'':<28}   {_roles(part)}" if part.owners else '')
                      for part in chain.parts]
        return '\n'.join(lines) + '\n'

    def __repr__(self):
        loss = type(self.loss).__name__
        lines = [f"Net({self.name!r}, dtype={self.dtype}, loss={loss})"]
        lines += [f"  {layer!r}" for layer in self.layers]
        return '\n'.join(lines)


def _kernel_calls(chains):
    """The parts of ``chains`` grouped by the kernel they call, in the order of
    their first call: ``[[part, ...], ...]``."""
    calls = {}
    for chain in chains:
        for part in chain.parts:
            calls.setdefault(part.kernel_name, []).append(part)
    return list(calls.values())


def _roles(part):
    """``conv1=layer1_0_conv1 bn1=layer1_0_bn1 ...``: the layers of one call."""
    return ' '.join(f"{canonical}={own}" for canonical, own in part.owners.items())
