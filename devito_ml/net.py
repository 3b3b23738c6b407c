"""Net: wires layers, builds the forward and backward operators, runs them."""

import os
from collections import Counter

import numpy as np

from devito_ml.compiled import CompiledOperator
from devito_ml.layer import Layer
from devito_ml.layers.dense import FullyConnectedSoftmax
from devito_ml.loss import CrossEntropy, get_loss
from devito_ml.validation import LayerArgumentError, ShapeError, check_array

__all__ = ['Net']


class Net:
    """A sequence of layers compiled into one forward and one backward operator.

    Parameters
    ----------
    layers : sequence of Layer
        Each layer's ``input_size`` must equal the previous ``output_size``.
    dtype : numpy dtype
        float32 (default) or float64, for every Function of the net.
    loss : Loss or str
        ``'cross_entropy'`` (default, on logits) or ``'mse'``.
    name : str
        Prefix of the generated C functions (``net_forward``, ``net_backward``).
    seed : int, optional
        When given, re-draws every parameter from this seed.

    Notes
    -----
    Each link is one pair of Functions: a layer's ``result`` is the next layer's
    input, allocated with the halo (padding) the next layer reads, and the next
    layer writes its input gradient into the layer's ``result_gradients``. No copy
    is made between layers. Layers without a name are numbered per family
    (``conv1``, ``conv2``, ``pool1``...), and their Functions and loops carry these
    names in the generated C.

    Examples
    --------
    >>> import numpy as np
    >>> from devito_ml import Net, Conv, Flat, FullyConnected, ReLU
    >>> net = Net([Conv((4, 3, 3), (2, 1, 6, 6), padding=1, activation=ReLU()),
    ...            Flat((2, 4, 6, 6)), FullyConnected((3, 144), (2, 144))])
    >>> net.forward(np.ones((2, 1, 6, 6), np.float32)).shape
    (2, 3)
    >>> loss = net.backward(np.array([0, 2]))
    >>> sorted(net.gradients())[:2]
    ['conv1_W', 'conv1_b']
    """

    def __init__(self, layers, dtype=np.float32, loss='cross_entropy', name='net',
                 seed=None):
        self.layers = list(layers)
        if not self.layers or not all(isinstance(i, Layer) for i in self.layers):
            raise TypeError(f"Net: `layers` must be a non-empty sequence of Layers, got "
                            f"{layers!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"Net: `dtype` must be float32 or float64, got {self.dtype}")
        self.name = name
        self.loss = get_loss(loss)
        self.training = True
        self._check_chain()
        self._configure_layers()
        if seed is not None:
            rng = np.random.default_rng(seed)
            for layer in self.layers:
                layer.reset_parameters(rng)
        self.loss.bind(self.output_size, self.dtype)
        self._losses = {self.loss.name: self.loss}
        self._forward_operator = None
        self._backward_operators = {}
        self._evaluation_operators = {}
        self._train_operators = {}
        self._batch = None

    # -- construction ------------------------------------------------------------------

    def _check_chain(self):
        for before, after in zip(self.layers, self.layers[1:]):
            if tuple(after.input_size) != tuple(before.output_size):
                raise ShapeError(
                    f"Net: {type(after).__name__} `{after.name}` takes input_size "
                    f"{after.input_size}, but {type(before).__name__} `{before.name}` "
                    f"before it gives output_size {before.output_size}")

    def _configure_layers(self):
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
        for i, (layer, name) in enumerate(zip(self.layers, names)):
            consumer = self.layers[i + 1] if i + 1 < len(self.layers) else None
            layer.configure(name=name, dtype=self.dtype,
                            result_halo=consumer and consumer.input_halo,
                            result_fill=consumer and consumer.input_fill)

    @property
    def input_size(self):
        return self.layers[0].input_size

    @property
    def output_size(self):
        return self.layers[-1].output_size

    def _bound_loss(self, loss=None):
        """The net's loss, or ``loss`` bound to this net's output (cached by name)."""
        if loss is None:
            return self.loss
        loss = get_loss(loss)
        if loss.name not in self._losses:
            self._losses[loss.name] = loss.bind(self.output_size, self.dtype)
        return self._losses[loss.name]

    def forward_equations(self):
        """Equations of the whole forward pass, in layer order."""
        eqs = self.layers[0].equations()
        for before, layer in zip(self.layers, self.layers[1:]):
            eqs += layer.equations(before.result)
        return eqs

    def backward_equations(self, loss=None):
        """Loss value and gradient, then every layer's adjoint in reverse order.

        Cross entropy after a :class:`FullyConnectedSoftmax` reads its logits and
        writes their gradient directly (exact even where a probability underflows).
        """
        loss = self._bound_loss(loss)
        last = self.layers[-1]
        eqs = self._loss_equations(loss)
        if isinstance(last, FullyConnectedSoftmax):
            eqs += last.backprop_equations(self._input_gradients_of(-1),
                                           from_logits=isinstance(loss, CrossEntropy))
        else:
            eqs += last.backprop_equations(self._input_gradients_of(-1))
        for index in range(len(self.layers) - 2, -1, -1):
            eqs += self.layers[index].backprop_equations(self._input_gradients_of(index))
        return eqs

    def _input_gradients_of(self, index):
        index %= len(self.layers)
        return self.layers[index - 1].result_gradients if index else None

    @property
    def forward_operator(self):
        if self._forward_operator is None:
            self._forward_operator = CompiledOperator(self.forward_equations(),
                                                      name=f"{self.name}_forward")
        return self._forward_operator

    @property
    def backward_operator(self):
        """The backward operator of the net's own loss."""
        return self.backward_operator_for()

    def backward_operator_for(self, loss=None):
        """The backward operator of ``loss`` (default: the net's), built once."""
        loss = self._bound_loss(loss)
        if loss.name not in self._backward_operators:
            self._backward_operators[loss.name] = CompiledOperator(
                self.backward_equations(loss), name=self._operator_name('backward', loss))
        return self._backward_operators[loss.name]

    def evaluation_operator(self, loss=None):
        """Forward pass and loss value, without any parameter gradient."""
        loss = self._bound_loss(loss)
        if loss.name not in self._evaluation_operators:
            self._evaluation_operators[loss.name] = CompiledOperator(
                self.forward_equations() + self._loss_equations(loss),
                name=self._operator_name('evaluate', loss))
        return self._evaluation_operators[loss.name]

    def train_operator(self, optimizer, loss=None):
        """Forward, backward and ``optimizer``'s update fused in one operator."""
        loss = self._bound_loss(loss)
        key = (id(optimizer), loss.name)
        if key not in self._train_operators:
            if optimizer.net is not self:
                raise ValueError(f"Net `{self.name}`: the optimizer was built for "
                                 f"another net, `{optimizer.net.name}`")
            self._train_operators[key] = optimizer.attach(CompiledOperator(
                self.forward_equations() + self.backward_equations(loss)
                + optimizer.equations(),
                name=self._operator_name(f"train_{optimizer.name}", loss)))
        return self._train_operators[key]

    def _operator_name(self, kind, loss):
        """``<net>_<kind>``, with the loss appended when it is not the net's own."""
        suffix = '' if loss is self.loss else f"_{loss.name}"
        return f"{self.name}_{kind}{suffix}"

    def _loss_equations(self, loss):
        last = self.layers[-1]
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
        self.forward_operator.run(batch)
        return self.layers[-1].result.data[:batch].copy()

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

    def _load_batch(self, x):
        check_array(None, 'Net: x', x, self.input_size, self.dtype)
        batch = x.shape[0]
        self.layers[0].input.data[:batch] = x
        self._batch = batch
        return batch

    def evaluate(self, x, targets, loss=None):
        """Loss and output on a batch, computing no gradient.

        Returns
        -------
        (float, ndarray)
        """
        loss = self._bound_loss(loss)
        batch = self._load_batch(x)
        loss.set_targets(targets, batch)
        self.evaluation_operator(loss).run(batch)
        return loss.value(batch), self.layers[-1].result.data[:batch].copy()

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
        operator.run(batch)
        optimizer.finish_step()
        return loss.value(batch), self.layers[-1].result.data[:batch].copy()

    def train(self, mode=True):
        """Set training mode (used by layers that differ between modes)."""
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

    def state_dict(self):
        """A copy of every parameter, by name."""
        return {name: data.copy() for name, data in self.parameters().items()}

    def load_state_dict(self, state):
        """Copy parameters in from ``state`` (as given by :meth:`state_dict`)."""
        own = self.parameters()
        if set(state) != set(own):
            raise KeyError(f"Net.load_state_dict: expected keys {sorted(own)}, got "
                           f"{sorted(state)}")
        for name, data in own.items():
            if np.shape(state[name]) != data.shape:
                raise ShapeError(f"Net.load_state_dict: `{name}` must have shape "
                                 f"{data.shape}, got {np.shape(state[name])}")
            data[:] = state[name]

    # -- generated code ---------------------------------------------------------------

    @property
    def forward_code(self):
        """The generated C of the forward operator."""
        return self.forward_operator.code

    @property
    def backward_code(self):
        """The generated C of the backward operator (loss included)."""
        return self.backward_operator.code

    def write_code(self, directory):
        """Write the C of every operator built so far (at least forward and backward).

        Files are named after the operators: ``<name>_forward.c``,
        ``<name>_backward.c``, ``<name>_train_sgd.c``... Returns their paths.
        """
        os.makedirs(directory, exist_ok=True)
        paths = []
        operators = [self.forward_operator, self.backward_operator,
                     *self._evaluation_operators.values(),
                     *self._train_operators.values()]
        for operator in operators:
            code = operator.code
            path = os.path.join(directory, f"{operator.name}.c")
            with open(path, 'w') as handle:
                handle.write(code)
            paths.append(path)
        return paths

    def __repr__(self):
        loss = type(self.loss).__name__
        lines = [f"Net({self.name!r}, dtype={self.dtype}, loss={loss})"]
        lines += [f"  {layer!r}" for layer in self.layers]
        return '\n'.join(lines)
