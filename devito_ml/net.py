"""Net: the front users see. A graph of layers (:mod:`devito_ml.net_graph`), whose
passes' equations (:mod:`devito_ml.net_equations`) are compiled into operators
(:mod:`devito_ml.net_operators`) that it runs; its state; its C
(:mod:`devito_ml.code_export`)."""

import contextlib

import numpy as np

from devito_ml import net_state
from devito_ml.allocation import batched_allocation
from devito_ml.code_export import NetListing
from devito_ml.layer import Layer
from devito_ml.loss import get_loss
from devito_ml.net_batch import NetBatch
from devito_ml.net_equations import backward_equations, forward_equations
from devito_ml.net_graph import NetGraph
from devito_ml.net_operators import NetOperators
from devito_ml.validation import (LayerArgumentError, check_float_dtype, check_name,
                                  check_positive_ints)

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
        A net of at most this many layers is one operator a pass (``<net>_forward``);
        a deeper one is compiled block by block, identical blocks calling one kernel
        (:class:`~devito_ml.net_operators.NetOperators`, :meth:`call_map`).

    Attributes
    ----------
    graph : NetGraph
        The layers as a graph: their order, sizes, names and the Functions that
        link them (:class:`~devito_ml.net_graph.NetGraph`). A layer belongs to one
        net.
    layers, nodes : list
        The layers, and their nodes, each after those it reads.
    input_size : tuple of int
        ``(batch,) + one sample's shape``.

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
        self.layers_per_operator = check_positive_ints(
            None, 'Net: layers_per_operator', (layers_per_operator,), 1)[0]
        self.graph = NetGraph(layers, self.name, self.dtype, batch_size, input_shape)
        self.nodes, self.layers = self.graph.nodes, self.graph.layers
        self.batch_size, self.input_size = self.graph.batch_size, self.graph.input_size
        with batched_allocation():     # one sweep of Devito's caches, not one a Function
            self.graph.allocate(owner=self)
            if seed is not None:
                rng = np.random.default_rng(seed)
                for layer in self.layers:
                    layer.reset_parameters(rng)
            self.loss.bind(self.output_size, self.dtype)
        self.input = self.graph.input
        self._losses = {self.loss.name: self.loss}
        self._operators = NetOperators(self.graph, self.name, self.loss,
                                       self.layers_per_operator)
        self._listing = NetListing(self.name, self.layers,
                                   lambda: sorted(self._losses))
        self._batch = NetBatch(self.graph)

    def built_operators(self):
        """Every operator built so far (an :class:`~devito_ml.compiled.OperatorChain`
        each)."""
        return self._operators.built()

    def synchronize_statistics(self, sums):
        """Have the layers' batch statistics (BatchNorm's) taken over the batch
        that processes share, not this process's shard of it: ``sums``
        (:class:`~devito_ml.distributed.RankSums`) sums each where the layer marks
        it complete (:mod:`devito_ml.batch_sums`). The operators are built again."""
        self.graph.statistics = sums
        if any(layer.batch_statistics for layer in self.layers):
            self._operators.forget()

    @contextlib.contextmanager
    def shard(self, first, total):
        """Run the steps inside as samples ``first``... of a batch of ``total``
        that processes share (data-parallel training): a layer that draws per step
        (Dropout) draws the whole batch's and keeps its rows."""
        with self._batch.shard(first, total):
            yield self

    def idle_step(self, loss=None):
        """A training step of which this process holds no sample (a rank's empty
        shard): layers count it, and its operators take part in their sync points'
        collectives without running."""
        self._batch.begin_step(True, samples=0)
        self.forward_operator_for(True).idle()
        self.backward_operator_for(loss, True).idle()

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

    def parts(self):
        """(layers, name suffix) of each part compiled as one operator: ``''`` when
        there is one part (:class:`~devito_ml.net_operators.NetOperators`)."""
        return self._operators.parts()

    def forward_equations(self, training=True, nodes=None):
        """Equations of the forward pass (of ``nodes``), each layer after its
        inputs."""
        return forward_equations(self.graph, training, nodes)

    def backward_equations(self, loss=None, training=True, nodes=None,
                           input_gradient=False):
        """Loss value and gradient, then every layer's adjoint in reverse order
        (:func:`~devito_ml.net_equations.backward_equations`)."""
        return backward_equations(self.graph, self._bound_loss(loss), training, nodes,
                                  input_gradient)

    def forward_operator_for(self, training=True):
        """The forward operator of a mode, built once."""
        return self._operators.forward(training)

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
        return self._operators.backward(
            self._bound_loss(loss), self.training if training is None else training,
            input_gradient)

    def evaluation_operator(self, loss=None):
        """Forward pass (evaluation behaviour) and loss value, no gradient."""
        return self._operators.evaluation(self._bound_loss(loss))

    def train_operator(self, optimizer, loss=None):
        """Forward, backward and ``optimizer``'s update fused in one operator (one a
        part, run in sequence, for a net of several parts)."""
        if optimizer.net is not self:
            raise ValueError(f"Net `{self.name}`: the optimizer was built for "
                             f"another net, `{optimizer.net.name}`")
        return self._operators.train(optimizer, self._bound_loss(loss))

    # -- running -----------------------------------------------------------------------

    def forward(self, x):
        """Run the forward pass on a batch ``x`` (NCHW numpy); return the output.

        ``x`` may hold fewer samples than the allocated batch; the same operator
        runs on the first ``len(x)`` entries.
        """
        batch = self._batch.load(x)
        self._batch.begin_step(self.training)
        self.forward_operator.run(batch)
        return self._batch.output()

    __call__ = forward

    def backward(self, targets, loss=None, after_part=None):
        """The loss of the last forward batch, averaged over it, and every gradient.

        ``targets``: for cross entropy, class labels ``(b,)`` or probabilities; for
        mse, an array shaped like the output. ``loss``: another loss than the
        net's (a Loss or its name), whose backward operator is built on first use.
        ``after_part(parts run)`` is called after each part of the backward
        operator (data-parallel training starts summing the gradients each part
        finished while the next parts run).
        """
        batch = self._batch.size
        if batch is None:
            raise RuntimeError("Net.backward: run `forward` on a batch first")
        loss = self._bound_loss(loss)
        loss.set_targets(targets, batch)
        self.backward_operator_for(loss).run(batch, after_part)
        return loss.value(batch)

    def input_gradient(self, x, targets, loss=None):
        """The gradient of the batch's mean loss with respect to the input ``x``.

        For saliency maps and adversarial examples. Runs the forward pass in the
        current mode (:meth:`eval` for a trained net with BatchNorm or Dropout),
        then a backward pass that computes the input's gradient and no parameter
        gradient it does not need; ``gradients()`` are then stale. ``targets`` and
        ``loss`` as for :meth:`backward`; the gradient is shaped as ``x``.

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
        batch, loss = self._batch.size, self._bound_loss(loss)
        loss.set_targets(targets, batch)
        self.backward_operator_for(loss, input_gradient=True).run(batch)
        gradients = [np.asarray(g.data[:batch])
                     for g in self.graph.network_input_gradients()]
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
        if self._batch.size is None:
            raise RuntimeError(f"Net `{self.name}`.sample_losses: no batch has run yet")
        return self._bound_loss(loss).sample_values(self._batch.size)

    def evaluate(self, x, targets, loss=None):
        """``(loss, output)`` on a batch, in evaluation mode, computing no
        gradient."""
        loss = self._bound_loss(loss)
        batch = self._batch.load(x)
        loss.set_targets(targets, batch)
        self._batch.begin_step(False)
        self.evaluation_operator(loss).run(batch)
        return loss.value(batch), self._batch.output()

    def train_step(self, x, targets, optimizer, loss=None):
        """One training step in the train operator (forward, backward, update);
        returns the batch's loss and output, both from before the update."""
        loss = self._bound_loss(loss)
        operator = self.train_operator(optimizer, loss)
        batch = self._batch.load(x)
        loss.set_targets(targets, batch)
        optimizer.prepare_step()
        self._batch.begin_step(True)
        operator.run(batch)
        optimizer.finish_step()
        return loss.value(batch), self._batch.output()

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

    # -- state -------------------------------------------------------------------------

    def parameters(self):
        """Every parameter as a numpy view, by Function name (``conv1_W``)."""
        return net_state.parameters(self.layers)

    def gradients(self):
        """Every parameter gradient as a numpy view, by its parameter's name."""
        return net_state.gradients(self.layers)

    def buffers(self):
        """State that is saved but not learnt (running statistics), by name
        (``bn1_running_mean``), as numpy views."""
        return net_state.buffers(self.layers)

    def state_dict(self):
        """A copy of every parameter and buffer, by name."""
        return {name: np.array(data, copy=True)
                for name, data in {**self.parameters(), **self.buffers()}.items()}

    def load_state_dict(self, state):
        """Copy parameters and buffers in from ``state`` (from :meth:`state_dict`),
        all checked first (:func:`~devito_ml.net_state.load_state`)."""
        net_state.load_state(f"Net `{self.name}`.load_state_dict",
                             {**self.parameters(), **self.buffers()}, state)

    # -- generated code ---------------------------------------------------------------

    @property
    def forward_code(self):
        """The generated C of the forward operator: each kernel it calls once, with
        the map of its sections to the layers (:func:`~devito_ml.code_map.annotate`)
        and, for a kernel shared by blocks, the layers each call runs it on."""
        return self._listing.listing([self.forward_operator])

    @property
    def backward_code(self):
        """The generated C of the backward operator (loss included), annotated."""
        return self._listing.listing([self.backward_operator])

    def layer_code(self, layer, backward=False):
        """The generated C that computes ``layer`` (a name or a Layer) in the
        forward (or backward) pass of the current mode, annotated: the whole pass
        of a net of one part, else the kernel of the block holding it, its tensors
        named after their roles in the block (:meth:`call_map`)."""
        name = layer.name if isinstance(layer, Layer) else layer
        if name not in self.graph.names:
            raise LayerArgumentError(f"Net `{self.name}`.layer_code: no layer `{name}`; "
                                     f"the layers are {self.graph.names}")
        chain = self.backward_operator if backward else self.forward_operator
        return self._listing.layer_code(chain, name)

    def write_code(self, directory, optimizer=None):
        """Write the C of every operator built so far, or of the forward and backward
        operators when none is (nothing else is built), and, with ``optimizer``, of
        its update operator when it was built; each kernel once, to
        ``<directory>/<kernel>.c`` (:meth:`~devito_ml.code_export.NetListing.write`).
        Returns the paths."""
        chains = self.built_operators() or \
            [self.forward_operator, self.backward_operator]
        if optimizer is not None and optimizer.built_update_operator is not None:
            chains.append(optimizer.built_update_operator)
        return self._listing.write(directory, chains)

    def call_map(self, chains=None):
        """Which kernel each operator calls (of ``chains``, default every operator
        built so far), in the order they run, and the layers each call stands for
        (``conv1=layer1_0_conv1``: the kernel's ``conv1_W`` is
        ``layer1_0_conv1_W`` in that call)."""
        return self._listing.call_map(self.built_operators() if chains is None
                                      else chains)

    def __repr__(self):
        loss = type(self.loss).__name__
        lines = [f"Net({self.name!r}, dtype={self.dtype}, loss={loss})"]
        lines += [f"  {layer!r}" for layer in self.layers]
        return '\n'.join(lines)
