"""The Layer base class: hyperparameters, shape inference, Function allocation (once,
for one owner), chaining, and the standalone operators of ``generate_code=True``.

**Loop names.** Every loop of a layer's generated C is named
``<layer>_<tensor>_<axis>``: the layer, the tensor the loop walks, and which of its
axes.

- axes: ``n`` sample, ``c`` channel, ``h`` row, ``w`` column (PyTorch's NCHW),
  ``f`` feature, ``ky`` ``kx`` kernel taps, ``k`` a kernel's output channel;
- tensors: ``out`` the output (and its gradients, stored alike), ``in`` the input as
  the forward pass reads it, ``din`` the input gradient as the backward pass writes
  it; a schedule's own buffers by their names (``in_cl``, ``dz_cl``: channels-last
  copies; ``fwd``, ``bwd00``, ``dW``: register tiles, with ``_tile`` / ``_block``
  loops over groups of columns, channels or lanes, and ``copy`` loops that copy a
  matrix product's operands into them);
- a register tile's own axes: ``lane`` (a vector lane), ``pos`` (an output
  position), ``row`` ``column`` ``sum`` (of a matrix product);
- a derived adjoint's sums (:mod:`devito_ml.autodiff`): the gradient they sum into,
  then the forward loop they run over: ``cross_entropy_dsum_dot_f`` runs the loss's
  ``dot_f`` loop into the gradient of ``cross_entropy_sum``.

So ``conv1_out_h`` is an output row of ``conv1``, ``fc1_in_f`` a feature of its
input, ``conv2_fwd_ky`` a kernel row in ``conv2``'s forward tiles, and ``conv1_n`` a
sample walked by a reduction over the batch (``n`` alone is the batch of the net).
"""

import numpy as np
from devito import Dimension, Eq

from devito_ml.autodiff import adjoint, gradient_of, intermediates, plain_equations
from devito_ml.batch_sums import lowered
from devito_ml.batch import BATCH, batch_dimension, batch_loop
from devito_ml.compiled import CompiledOperator
from devito_ml.layout import logical_dimensions, logical_halo
from devito_ml.steps import Step
from devito_ml.symbolics import Halo, tap_dimension, tensor
from devito_ml.validation import (LayerArgumentError, ShapeError, check_array,
                                  check_dtype, check_float_dtype, check_name,
                                  check_positive_ints, check_size)

__all__ = ['Layer', 'WeightedLayer', 'Node', 'UnboundLayerError', 'STANDALONE']

STANDALONE = 'standalone'
"""Owner of a layer whose Functions were created for its own use (tutorial style)."""


class UnboundLayerError(AttributeError):
    """A layer's Functions were asked for before its input size was known."""


class Node:
    """One use of a layer in a network graph: the layer and the nodes feeding it.

    Calling a layer on nodes (``Conv((16, 3, 3))(x)``) makes a Node; :class:`Net`
    builds from the output node. ``layer`` is None for the network's input.
    """

    def __init__(self, layer, inputs, shape=None):
        self.layer, self.inputs, self.shape = layer, tuple(inputs), shape

    def __repr__(self):
        return f"Node({self.layer if self.layer is not None else 'input'})"


class Layer:
    """Base of every layer.

    A layer holds its hyperparameters from construction. Its Devito Functions (input,
    output, parameters, gradients) are created once, when its input size is known:
    by the :class:`~devito_ml.Net` it is put in (which infers the size from what
    feeds the layer and gives it its name and dtype), or, for a layer built alone
    with an ``input_size`` (the tutorial style), the first time one of them is used.
    A layer's Functions belong to one owner: putting a layer whose Functions exist
    into a net, or one layer into two nets, is an error.

    Subclasses define ``output_size``, ``_create_functions`` and
    ``_forward_equations(training)``; the backward pass is derived from the forward
    equations (:mod:`devito_ml.autodiff`) unless a subclass writes
    ``_backward_equations(training)`` itself. Both are maths; :meth:`schedule`
    lowers them to the loops that run (register tiles, copies), and never changes
    what they compute.

    Attributes
    ----------
    input, result : Function
        Input and output, NCHW (or ``(batch, features)``).
    result_gradients : Function
        Gradient of the loss with respect to ``result``; written by the next layer.
    input_gradients : Function
        Gradient of the loss with respect to ``input``; written by this layer.
    """

    family = 'layer'
    input_ndim = 4
    """Rank of the input, batch included (an int, or a tuple of accepted ranks)."""

    def __init__(self, input_size=None, name=None, dtype=None, generate_code=False,
                 seed=None):
        self.named = name is not None
        self.name = check_name(self, 'name', name) if self.named else self.family
        self.dtype = None if dtype is None else check_float_dtype(self, 'dtype', dtype)
        self.input_size = None if input_size is None else \
            self._check_input_size(input_size)
        if self.input_size is not None:
            self.output_size     # a window that does not fit is refused here
        self.seed = seed
        self.owner = None
        self.allocated = False
        self.node = None
        self.path = None      # the matching module's path in a torch model, if any
        self.forward_operator = self.backward_operator = None
        if generate_code:
            self.compile()

    def __str__(self):
        return self.name

    def __repr__(self):
        sizes = f"input_size={self.input_size}, output_size={self.output_size}" \
            if self.input_size is not None else 'input_size=None'
        return f"{type(self).__name__}(name={self.name!r}, {sizes})"

    def __getattr__(self, attribute):
        """Create the Functions on first use, for a standalone layer with a size."""
        state = self.__dict__
        if attribute.startswith('_') or state.get('allocated', True):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute "
                                 f"{attribute!r}")
        if state.get('input_size') is None:
            raise UnboundLayerError(
                f"{type(self).__name__} `{state.get('name')}` has no `{attribute}` yet: "
                "its Functions are created when it is put in a Net (or give it an "
                "`input_size` to use it alone)")
        self.allocate()
        return getattr(self, attribute)

    def __call__(self, *nodes):
        """Use this layer on ``nodes`` of a network graph; return its output node."""
        if self.node is not None:
            raise LayerArgumentError(
                f"{type(self).__name__} `{self.name}` is already used in a graph; a "
                "layer is used once (build another layer for another use)")
        if not nodes or not all(isinstance(node, Node) for node in nodes):
            raise TypeError(f"{type(self).__name__} `{self.name}`: call it on the "
                            f"nodes feeding it (from `Input` or other layers), got "
                            f"{nodes!r}")
        self._check_arity(len(nodes))
        self.node = Node(self, nodes)
        return self.node

    def _check_arity(self, count):
        if count != 1:
            raise LayerArgumentError(f"{type(self).__name__} `{self.name}` takes one "
                                     f"input, got {count}")

    # -- what subclasses describe ------------------------------------------------

    @property
    def output_size(self):
        raise NotImplementedError

    @property
    def input_halo(self):
        """Halo (zero padding) this layer reads around its input."""
        return Halo.none(len(self.input_size))

    input_fill = 0.0
    """Value of the padding: 0, or -inf for max pooling."""

    def _check_input_size(self, input_size):
        ranks = (self.input_ndim,) if isinstance(self.input_ndim, int) \
            else self.input_ndim
        size = tuple(input_size) if np.iterable(input_size) else input_size
        length = len(size) if isinstance(size, tuple) and len(size) in ranks \
            else ranks[0]
        return check_positive_ints(self, 'input_size', input_size, length)

    def _create_functions(self):
        """Create parameters and internal buffers (beyond input/result)."""

    def _forward_equations(self, training):
        raise NotImplementedError

    def _backward_equations(self, training):
        """The adjoint, derived from :meth:`_forward_equations`
        (:func:`devito_ml.autodiff.adjoint`): a layer that states only its forward
        maths gets its backward pass from there."""
        found, repeated = self.gradient_map()
        return self.schedule(
            self._derived(self._forward_equations(training), found)
            + [Eq(gradient.indexify(), 0) for gradient in repeated])

    def _derived(self, forward, gradients, constants=()):
        """:func:`~devito_ml.autodiff.adjoint` of ``forward`` for this layer: its
        intermediates' gradients its own, its input gradients' sums named as its
        own (``fc1_din``)."""
        inputs = self._input_functions()
        names = {}
        for index in range(len(inputs)):      # an input gradient shared: its first
            names.setdefault(self.input_gradients_of(index), f"{self.name}_din"
                             + (str(index) if len(inputs) > 1 else ''))
        return adjoint(forward, gradients, where=self._where(),
                       make_gradient=self._intermediate_gradient, constants=constants,
                       names=names)

    def schedule(self, equations):
        """The loops that run ``equations`` (forward maths, or the adjoint derived
        from it): the maths itself by default, each
        :class:`~devito_ml.autodiff.Operation` as its plain loop nests. A layer
        whose passes run as register tiles (:class:`~devito_ml.FullyConnected`,
        :class:`~devito_ml.Conv`) lowers them here, chosen by shape; a schedule
        never changes what the equations compute.

        Parameters
        ----------
        equations : list of Eq and Inc

        Returns
        -------
        list of Eq and Inc
        """
        return plain_equations(equations)

    def gradient_map(self):
        """``({Function: its gradient}, [gradient, ...])``: the output's gradient
        (read by the backward pass), each input's and each parameter's (written by
        it); then the gradients of inputs fed the same Function as an earlier one
        (``Add()(x, x)``), set to 0: the first takes the whole gradient, and the net
        sums them."""
        inputs = self._input_functions()
        found, repeated = {self.result: self.result_gradients}, []
        parameters, gradients = self.parameters(), self.gradients()
        # parameters before inputs: the adjoint writes these gradients in this
        # order, the parameters' reductions before the input gradient's gather
        found.update((parameters[role], gradients[role]) for role in parameters)
        for index, function in enumerate(inputs):
            if function in found:
                repeated.append(self.input_gradients_of(index))
            else:
                found[function] = self.input_gradients_of(index)
        return found, repeated

    def _input_functions(self):
        """The Functions the layer reads its inputs from (a merge has several)."""
        return getattr(self, 'inputs', None) or [self.input]

    def _intermediate_gradient(self, function):
        """The gradient of a Function the forward equations compute and read again
        (made once, with the layer's Functions, so that a unit's description holds
        it: every pass that derives it uses the same)."""
        made = self.__dict__.setdefault('_intermediate_gradients', {})
        return gradient_of(function, made)

    def parameters(self):
        """Parameters by role, e.g. ``{'W': kernel, 'b': bias}``."""
        return {}

    def gradients(self):
        """Parameter gradients by role, e.g. ``{'W': kernel_gradients}``."""
        return {}

    def buffers(self):
        """State that is not learnt but saved (running statistics), by role."""
        return {}

    def reset_parameters(self, rng):
        """Draw parameters as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def before_step(self, step):
        """Called by the net before each run of a forward pass, with the
        :class:`~devito_ml.steps.Step` it runs (Dropout draws its mask, BatchNorm
        counts the step)."""

    batch_statistics = False
    """Whether the layer normalizes with statistics of the batch, which a net can
    have summed over more than its own samples
    (:meth:`~devito_ml.Net.synchronize_statistics`)."""

    draws_per_step = False
    """Whether :meth:`before_step` does anything (the net calls only those)."""

    mode_dependent = False
    """Whether training and evaluation differ (BatchNorm, Dropout)."""

    # -- shapes inside a graph ----------------------------------------------------

    @property
    def input_sizes(self):
        return (self.input_size,)

    @property
    def input_halos(self):
        return (self.input_halo,)

    @property
    def input_fills(self):
        return (self.input_fill,)

    def infer(self, sizes):
        """Set the input size from what feeds the layer; return the output size.

        A size given at construction must agree (ShapeError otherwise).
        """
        self._check_arity(len(sizes))
        size = self._check_input_size(sizes[0])
        if self.input_size is not None and self.input_size != size:
            raise ShapeError(f"{type(self).__name__} `{self.name}` takes input_size "
                             f"{self.input_size}, but is fed {size}")
        self.input_size = size
        return self.output_size

    # -- allocation ---------------------------------------------------------------

    def allocate(self, dtype=None, name=None, inputs=None, input_gradients=None,
                 result_halo=None, result_fill=0.0, owner=STANDALONE,
                 channels_last=None):
        """Create every Function of the layer, once.

        Parameters
        ----------
        dtype : numpy dtype, optional
            Must agree with a dtype given at construction.
        name : str, optional
            Prefix of every Function and loop.
        inputs : list of Function or None
            Per input, a Function to read in place (another layer's ``result``,
            with the halo this layer reads), or None for a Function of its own.
        input_gradients : list of Function or None
            Per input, where to write dL/dinput, or None for a Function of its own.
        result_halo, result_fill
            Halo of ``result`` and the value in it (what the consumers read).
        owner : Net or ``'standalone'``
        channels_last : tuple, optional
            ``(per input, result)``: which activations are stored channels last
            (:mod:`devito_ml.layout`; the net decides, and only for layers that
            :meth:`reads_channels_last` and :meth:`writes_channels_last`); default
            all NCHW. An input's own copy and gradient take the input's layout.
        """
        if self.allocated:
            raise LayerArgumentError(self.owned_message())
        if self.input_size is None:
            raise UnboundLayerError(f"{type(self).__name__} `{self.name}` cannot create "
                                    "its Functions before its input size is known")
        if dtype is not None:
            dtype = check_float_dtype(self, 'dtype', dtype)
            if self.dtype is not None and self.dtype != dtype:
                raise TypeError(f"{type(self).__name__} `{self.name}` was built with "
                                f"dtype {self.dtype}, the net it is put in is {dtype}: "
                                "leave the layer's dtype out, or make them agree")
            self.dtype = dtype
        self.dtype = self.dtype or np.dtype(np.float32)
        self.name = name or self.name
        self.result_halo = Halo(*result_halo) if result_halo is not None else \
            Halo.none(len(self.output_size))
        self.result_fill = float(result_fill)
        self.owner = owner
        self.allocated = True
        arity = len(self.input_sizes)
        self.inputs_channels_last, self.result_channels_last = \
            channels_last or ((False,) * arity, False)
        try:
            self._allocate(list(inputs or [None] * arity),
                           list(input_gradients or [None] * arity))
        except BaseException:
            self.allocated, self.owner = False, None
            raise
        self.reset_parameters(np.random.default_rng(self.seed))
        self._reset_buffers()
        if type(self)._backward_equations is Layer._backward_equations:
            for training in (True, False) if self.mode_dependent else (True,):
                forward = self._forward_equations(training)
                for function in intermediates(forward, self._where()) \
                        if len(forward) > 1 else ():
                    self._intermediate_gradient(function)

    def _where(self):
        return f"{type(self).__name__} `{self.name}`"

    def _reset_buffers(self):
        """Initial values of buffers (running statistics)."""

    def owned_message(self):
        """Why the layer cannot join a net: who owns its Functions already."""
        owner = self.owner
        where = "was used alone (its Functions exist: `forward`, `equations` or a " \
                "Function such as `kernel` was used)" if owner == STANDALONE else \
                f"belongs to Net `{getattr(owner, 'name', owner)}`"
        return (f"{type(self).__name__} `{self.name}` {where}; a layer's Functions "
                "belong to one owner: build a new layer for another net")

    def dim(self, role, extent):
        """A loop Dimension of this layer: ``<name>_<role>`` with a known extent."""
        return tap_dimension(f"{self.name}_{role}", extent)

    @property
    def batch_dim(self):
        return batch_dimension()

    @property
    def reduction_batch_dim(self):
        """The batch, as iterated by parameter-gradient reductions.

        Devito imposes one loop order per operator; parameter gradients loop over
        their own indices first (parallel, no atomics), which needs a batch
        Dimension of their own: a :class:`~devito_ml.batch.BatchLoop`, which every
        call bounds by the active batch like ``n``.
        """
        return batch_loop(f"{self.name}_{BATCH}", self.input_size[0])

    def tensor(self, role, dims, shape, halo=None, dtype=None, channels_last=False):
        """A Function of this layer, ``<name>_<role>``; ``dims``, ``shape`` and
        ``halo`` in NCHW order, stored channels last where asked."""
        return tensor(f"{self.name}_{role}", dims, shape, dtype or self.dtype, halo,
                      channels_last)

    def output_tensor(self, role, dtype=None):
        """A Function shaped and stored like ``result`` (no halo): the layer's own
        intermediates over its outputs."""
        return self.tensor(role, self.out_storage, self.output_size, dtype=dtype,
                           channels_last=self.result_channels_last)

    preserves_layout = False
    """Whether the layer's inputs and output share one layout, whichever it is
    (:mod:`devito_ml.layout`): point-wise layers, whose equations relate an input
    and the output at the same index (an equation relating NCHW and channels-last
    storage has no loop order Devito accepts)."""

    def reads_channels_last(self, index):
        """Whether input ``index`` may be stored channels last: a layer says so
        where its maths and schedule were checked with such an input. Default: a
        layer that :attr:`preserves_layout`."""
        return self.preserves_layout

    def writes_channels_last(self):
        """Whether ``result`` may be stored channels last. Default: a layer that
        :attr:`preserves_layout`."""
        return self.preserves_layout

    @staticmethod
    def _roles(size):
        return ('c', 'h', 'w') if len(size) == 4 else ('f',)

    def _io_dims(self, walked, size, plain=False):
        """Loop Dimensions over a tensor of ``size``: batch, then one per axis.

        Output Dimensions are plain and store the outputs: writes along a Function's
        own Dimensions are what lets Devito prove the loops parallel and vectorise
        them. Input Dimensions have default extents: the input may be another
        layer's Function, stored on that layer's Dimensions.
        """
        make = (lambda role, extent: Dimension(f"{self.name}_{role}")) if plain \
            else self.dim
        return (self.batch_dim,) + tuple(make(f"{walked}_{r}", e)
                                         for r, e in zip(self._roles(size), size[1:]))

    def _storage_dims(self, role, size):
        """Dimensions an input tensor and its gradient are stored on, iterated only
        by the input gradient's equations (hence named ``<layer>_din_<axis>``).

        Devito unfolds an access ``f[d + 1]`` along a default-extent Dimension ``d``
        into its whole extent; storing inputs on Dimensions the forward loops do not
        iterate keeps such accesses out of every loop bound.
        """
        return (self.batch_dim,) + tuple(Dimension(f"{self.name}_{role}_{r}")
                                         for r in self._roles(size))

    @property
    def input_gradient_dims(self):
        """Loop Dimensions of the input gradient: those it is stored on."""
        return logical_dimensions(self.input_gradients)

    def _allocate(self, inputs, input_gradients):
        self.in_dims = self._io_dims('in', self.input_size)
        self.out_dims = self._io_dims('out', self.output_size, plain=True)
        in_storage = self._storage_dims('din', self.input_size)
        layout = self.inputs_channels_last[0]
        self.input = inputs[0]
        if self.input is None:
            self.input = self.tensor('in', in_storage, self.input_size, self.input_halo,
                                     channels_last=layout)
            fill_halo(self.input, self.input_fill)
        self.input_gradients = input_gradients[0]
        if self.input_gradients is None:
            self.input_gradients = self.tensor('din', in_storage, self.input_size,
                                               channels_last=layout)
        self._create_result()
        self._create_functions()

    def _create_result(self):
        """``result`` (with the halo its consumers read, filled) and its gradient."""
        self.out_storage = self.out_dims
        self.result = self.tensor('out', self.out_storage, self.output_size,
                                  self.result_halo,
                                  channels_last=self.result_channels_last)
        fill_halo(self.result, self.result_fill)
        self.result_gradients = self.output_tensor('dout')

    # -- equations -------------------------------------------------------------------

    def equations(self, input=None, training=True):
        """Forward equations (of this layer alone: its batch sums are of its own
        batch, :mod:`devito_ml.batch_sums`).

        Parameters
        ----------
        input : Function, optional
            Read from this Function (e.g. the previous layer's ``result``) instead
            of this layer's own ``input``. A layer used alone whose input halo is
            the padding it needs reads it in place (the tutorial's chaining);
            otherwise it is first copied into ``input``, whose halo holds the
            padding.
        training : bool
            Training behaviour (batch statistics, dropout) or evaluation.

        Returns
        -------
        list of Eq
        """
        return lowered(self._equations_from(input, training))

    def _equations_from(self, input, training):
        """:meth:`equations`, their batch sums marked (:meth:`net_equations`)."""
        eqs = []
        if input is not None and input is not self.input:
            self._check_function('input', input, self.input_size)
            if self.owner == STANDALONE and \
                    logical_halo(input) == tuple(self.input_halo):
                fill_halo(input, self.input_fill)
                self.input = input
            else:
                eqs.append(Eq(self.input[self.in_dims], input[self.in_dims]))
        return eqs + self.schedule(self._forward_equations(training))

    def backprop_equations(self, input_gradients=None, training=True):
        """Backward equations: parameter gradients and ``input_gradients``.

        They read ``result_gradients`` (dL/dresult) and the forward values, and
        overwrite every gradient (no accumulation across calls).

        Parameters
        ----------
        input_gradients : Function, optional
            Write dL/dinput there (e.g. the previous layer's ``result_gradients``);
            for a layer used alone.
        training : bool
            As in :meth:`equations`.
        """
        self._wire_input_gradients(input_gradients)
        return lowered(self._backward_equations(training))

    def _wire_input_gradients(self, input_gradients):
        """A layer used alone writes dL/dinput into ``input_gradients`` (None: its
        own)."""
        if input_gradients is not None and input_gradients is not self.input_gradients:
            if self.owner != STANDALONE:
                raise LayerArgumentError(
                    f"{type(self).__name__} `{self.name}`: inside a net, the net "
                    "wires `input_gradients`")
            self._check_function('input_gradients', input_gradients, self.input_size)
            self.input_gradients = input_gradients

    def input_gradients_of(self, index):
        """The Function this layer writes dL/d(input ``index``) into."""
        return self.input_gradients

    def net_equations(self, sources, training):
        """Forward equations inside a net, reading each input from ``sources``; the
        sums over the batch marked, for the net to lower
        (:mod:`devito_ml.batch_sums`)."""
        return self._equations_from(sources[0], training)

    def net_backprop_equations(self, training, output=None):
        """Backward equations inside a net (targets were wired at allocation), the
        sums over the batch marked as in :meth:`net_equations`.

        ``output``: the Function whose gradient the loss wrote, one of
        :meth:`loss_outputs` (default: the result).
        """
        if output is not None and output is not self.result:
            raise ValueError(f"{type(self).__name__} `{self.name}`: a loss wrote the "
                             f"gradient of `{output.name}`, which it does not offer")
        return self._backward_equations(training)

    def loss_outputs(self):
        """What a loss may read of this layer when it ends a net:
        ``{kind: (Function, where dL/dFunction goes)}``. Every layer offers its
        ``'output'``; a loss picks the first of the kinds it reads
        (:meth:`~devito_ml.loss.base.Loss.reads_from`)."""
        return {'output': (self.result, self.result_gradients)}

    def _check_function(self, argument, function, size):
        check_size(self, argument, size, function.shape)
        check_dtype(self, argument, self.dtype, function.dtype)

    # -- standalone use (generate_code=True) ------------------------------------------

    def compile(self, training=True):
        """Build this layer's own forward and backward operators."""
        self.forward_operator = CompiledOperator(self.equations(training=training),
                                                 name=f"{self.name}_forward")
        try:
            backward = self.backprop_equations(training=training)
        except NotImplementedError:
            backward = None
        self.backward_operator = backward and CompiledOperator(
            backward, name=f"{self.name}_backward")

    def forward(self, x):
        """Run the standalone forward operator on ``x``; return the result."""
        if self.forward_operator is None:
            self.compile()
        check_array(self, 'x', x, self.input_size, self.dtype)
        batch = x.shape[0]
        self.input.data[:batch] = x
        self.before_step(Step(batch))
        self.forward_operator.run(batch)
        return np.array(self.result.data[:batch])

    def backward(self, result_gradients):
        """Run the standalone backward operator; return dL/dinput."""
        if self.backward_operator is None:
            raise RuntimeError(f"{type(self).__name__} `{self.name}` has no backward "
                               "operator (run `forward` first, with a differentiable "
                               "activation)")
        check_array(self, 'result_gradients', result_gradients, self.output_size,
                    self.dtype)
        batch = result_gradients.shape[0]
        self.result_gradients.data[:batch] = result_gradients
        self.backward_operator.run(batch)
        return np.array(self.input_gradients.data[:batch])


class WeightedLayer(Layer):
    """A layer with a weight ``kernel`` and an optional ``bias`` (``has_bias``).

    Subclasses allocate ``kernel``, ``bias`` and their gradients and say how many
    inputs feed one output (``fan_in``).
    """

    @property
    def fan_in(self):
        raise NotImplementedError

    def reset_parameters(self, rng):
        """Draw parameters as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        bound = 1 / np.sqrt(self.fan_in)
        self.kernel.data[:] = rng.uniform(-bound, bound, self.kernel.shape)
        self.bias.data[:] = rng.uniform(-bound, bound, self.bias.shape) \
            if self.has_bias else 0

    def parameters(self):
        return {'W': self.kernel, 'b': self.bias} if self.has_bias else \
            {'W': self.kernel}

    def gradients(self):
        return {'W': self.kernel_gradients, 'b': self.bias_gradients} \
            if self.has_bias else {'W': self.kernel_gradients}


def fill_halo(function, value):
    """Set the halo of ``function`` (never its domain) to ``value``."""
    data = function.data_with_halo
    for axis, (left, right) in enumerate(function.halo):
        index = [slice(None)] * data.ndim
        if left:
            index[axis] = slice(0, left)
            data[tuple(index)] = value
        if right:
            index[axis] = slice(data.shape[axis] - right, None)
            data[tuple(index)] = value
