"""The operators of a net: its passes cut into parts, each part's kernel derived
or recalled, compiled, and kept until the net's equations change."""

import functools
import re
import weakref

from devito_ml import unit_records
from devito_ml.compiled import CompiledOperator, KernelSource, OperatorChain, \
    kernel_options, split_at_sync_points
from devito_ml.graph import blocks
from devito_ml.kernel_builds import build_kernels
from devito_ml.kernels import kernel_label, role_of, unit_owners
from devito_ml.net_equations import backward_equations, forward_equations, \
    loss_only_equations
from devito_ml.vector_width import float32_lanes

__all__ = ['NetOperators']


class NetOperators:
    """The forward, backward, evaluation and train-step operators of a net, each
    built on first use and kept.

    Parameters
    ----------
    graph : NetGraph
    name : str
        The net's name, the prefix of its operators' (``<name>_forward``).
    loss : Loss
        The net's own loss: the others' operators carry their name.
    layers_per_operator : int
        A net of at most this many layers is one operator a pass (``<net>_forward``).
        A deeper one is compiled block by block (:func:`~devito_ml.graph.blocks`, no
        block longer than this), run in sequence: one operator over a whole ResNet
        would take minutes to lower and compile, and more C arguments than ctypes
        passes. Identical blocks call one kernel (:mod:`devito_ml.kernels`); the
        calls are named ``<net>_forward_1``...
    """

    def __init__(self, graph, name, loss, layers_per_operator):
        self.graph, self.name, self.loss = graph, name, loss
        self.layers_per_operator = layers_per_operator
        self.mode_dependent = any(layer.mode_dependent for layer in graph.layers)
        self.forget()

    def forget(self):
        """Drop the operators built so far: the next use builds them from the layers'
        equations as they are then."""
        self._forward = {}
        self._backward = {}
        self._evaluation = {}
        # by the optimizer itself, held weakly: an entry goes with its optimizer (an
        # id could be taken over by a new optimizer, which then ran on the old one's
        # moments and step count); the latest optimizer is held, so that its
        # operator stays among those built (`write_code` after
        # `train_operator(Adam(net))`)
        self._train = weakref.WeakKeyDictionary()
        self._latest_optimizer = None

    def built(self):
        """Every operator built so far."""
        return [*self._forward.values(), *self._backward.values(),
                *self._evaluation.values(),
                *(operator for operators in list(self._train.values())
                  for operator in operators.values())]

    def mode(self, training):
        """The mode operators are built for: nets without BatchNorm or Dropout
        share one set between training and evaluation."""
        return bool(training) if self.mode_dependent else True

    def _suffix(self, training):
        return '' if self.mode(training) else '_eval'

    # -- parts --------------------------------------------------------------------------

    def segments(self):
        """The nodes, cut into consecutive parts compiled as one operator each: the
        whole net when it has at most ``layers_per_operator`` layers, else its blocks
        (:func:`~devito_ml.graph.blocks`), whose kernels identical blocks share."""
        nodes = self.graph.nodes
        if len(nodes) <= self.layers_per_operator:
            return [nodes]
        return blocks(self.graph.input_node, nodes, self.layers_per_operator)

    def parts(self):
        """(layers, name suffix) of each part: ``''`` when there is one part."""
        segments = self.segments()
        return [([node.layer for node in segment],
                 f"_{index}" if len(segments) > 1 else '')
                for index, segment in enumerate(segments, start=1)]

    def _pieces(self, derive, *arguments, reverse=False):
        """``(suffix, derive(*arguments, segment), segment)`` of each part."""
        pieces = [(suffix, functools.partial(derive, *arguments, segment), segment)
                  for (_, suffix), segment in zip(self.parts(), self.segments())]
        return pieces[::-1] if reverse else pieces

    # -- the operators ------------------------------------------------------------------

    def forward(self, training=True):
        """The forward operator of a mode."""
        mode = self.mode(training)
        if mode not in self._forward:
            self._forward[mode] = self._chain(
                f"{self.name}_forward{self._suffix(mode)}",
                self._pieces(self._forward_equations, mode),
                'forward' + self._suffix(mode), context=[mode])
        return self._forward[mode]

    def backward(self, loss, training=True, input_gradient=False):
        """The backward operator of a bound ``loss`` (with ``input_gradient``,
        the one computing the gradient of the network's input)."""
        mode = self.mode(training)
        key = (loss.name, mode, input_gradient)
        if key not in self._backward:
            kind = 'input_gradient' if input_gradient else 'backward'
            self._backward[key] = self._chain(
                self._operator_name(kind, loss) + self._suffix(mode),
                self._pieces(self._backward_equations, loss, mode, input_gradient,
                             reverse=True),
                kind + self._suffix(mode), context=[loss, mode, input_gradient])
        return self._backward[key]

    def evaluation(self, loss):
        """Forward pass (evaluation behaviour) and loss value, no gradient."""
        if loss.name not in self._evaluation:
            pieces = self._pieces(self._forward_equations, False)
            suffix, forward, segment = pieces[-1]
            pieces[-1] = (suffix, lambda: forward() + loss_only_equations(self.graph,
                                                                          loss),
                          segment)
            self._evaluation[loss.name] = self._chain(
                self._operator_name('evaluate', loss), pieces, 'evaluate',
                context=[loss])
        return self._evaluation[loss.name]

    def train(self, optimizer, loss):
        """Forward, backward and ``optimizer``'s update: one operator for a net of
        one part, else the forward parts, then each part's adjoint and its update."""
        operators = self._train.setdefault(optimizer, {})
        self._latest_optimizer = optimizer
        if loss.name not in operators:
            if len(self.segments()) == 1:
                pieces = [('', lambda: self._forward_equations(True)
                           + self._backward_equations(loss, True, False)
                           + optimizer.equations(), self.graph.nodes)]
            else:
                pieces = [(f"_forward{suffix}", derive, segment) for suffix, derive,
                          segment in self._pieces(self._forward_equations, True)]
                pieces += [(f"_backward{suffix}", functools.partial(
                    self._train_backward, loss, optimizer, layers, segment), segment)
                    for (layers, suffix), segment in reversed(list(zip(
                        self.parts(), self.segments())))]
            operators[loss.name] = optimizer.attach(self._chain(
                self._operator_name(f"train_{optimizer.name}", loss), pieces,
                f"train_{optimizer.name}", context=[loss], optimizer=optimizer))
        return operators[loss.name]

    def _forward_equations(self, training, segment=None):
        return forward_equations(self.graph, training, segment)

    def _backward_equations(self, loss, training, input_gradient, segment=None):
        return backward_equations(self.graph, loss, training, segment, input_gradient)

    def _train_backward(self, loss, optimizer, layers, segment):
        return self._backward_equations(loss, True, False, segment) + \
            optimizer.equations(layers)

    def _operator_name(self, kind, loss):
        """``<net>_<kind>``, with the loss appended when it is not the net's own."""
        suffix = '' if loss is self.loss else f"_{loss.name}"
        return f"{self.name}_{kind}{suffix}"

    # -- kernels ------------------------------------------------------------------------

    def _unit(self, segment, kind):
        """``(owners, label)`` of a part's kernel (:mod:`devito_ml.kernels`), or
        ``(None, None)`` for the one part of a small net, named after the net."""
        graph = self.graph
        if len(segment) == len(graph.nodes):
            return None, None
        inside = {id(node) for node in segment}
        sources = [parent for node in segment for parent in node.inputs
                   if id(parent) not in inside]
        consumers = [consumer for node in segment
                     for consumer, _ in graph.consumers(node)
                     if id(consumer) not in inside]
        consumers += self._gradient_writers(segment, consumers)
        first = segment[0].inputs[0]
        size = graph.input_size if first.layer is None else graph.size_of(first)
        return (unit_owners(segment, sources, consumers, self.name),
                kernel_label([node.layer for node in segment], size, graph.dtype,
                             kind))

    def _gradient_writers(self, segment, consumers):
        """Nodes outside ``segment`` and ``consumers`` whose Functions are the
        gradients that consumers write for it: an Add shares the gradient of the
        layer before it with its other inputs (``Add._allocate``), and a residual
        block's input reads the next block's BatchNorm's. Named as consumers, they
        get a role (``dst3_dout``), so that identical blocks still share a kernel."""
        known = {id(node) for node in (*segment, *consumers)}
        owner_of = {id(node.layer.result_gradients): node for node in self.graph.nodes}
        writers = []
        for node in segment:
            for consumer, index in self.graph.consumers(node):
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
        graph = self.graph
        roles, found, seen = {}, {}, {}

        def rename(name):
            if name not in roles:
                roles[name] = role_of(name, owners) if owners else name
            return roles[name]

        def text(obj):
            return unit_records.fingerprint(obj, rename, found, seen)
        try:
            phase = re.sub(r'\d+', '', call[len(self.name):])    # _forward_, _backward_
            texts = ['' if owners else call, kind, phase, text(list(context)),
                     # batch sums lowered to sync points, or not
                     repr(graph.statistics is not None)]
            if optimizer is not None:
                texts.append(text(optimizer.description(
                    [node.layer for node in segment])))
            for node in segment:
                texts += [text(node.layer),
                          text([graph.result_of(parent) for parent in node.inputs]),
                          text([(type(consumer.layer), consumer.layer.name, index,
                                 consumer.layer.input_gradients_of(index))
                                for consumer, index in graph.consumers(node)]),
                          repr((node is graph.nodes[0], node is graph.nodes[-1]))]
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
