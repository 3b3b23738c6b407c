"""Layers that take several inputs: element-wise sum (residual connections) and
concatenation along channels; their adjoints are derived."""

import numpy as np
from devito import Eq

from devito_ml.activations import as_activation
from devito_ml.layer import Layer
from devito_ml.layout import logical_dimensions
from devito_ml.symbolics import Halo
from devito_ml.validation import LayerArgumentError, ShapeError, check_array

__all__ = ['Add', 'Concat']


class Merge(Layer):
    """Base of layers with two inputs or more, of rank 2 or 4.

    Parameters
    ----------
    input_sizes : list of tuple of int, optional
        For use alone; inside a net they are inferred.
    name, dtype, generate_code
        As :class:`~devito_ml.Conv`.
    """

    input_ndim = (4, 2)

    def __init__(self, input_sizes=None, name=None, dtype=None, generate_code=False):
        self.name = name or self.family
        sizes = None
        if input_sizes is not None:
            self._check_arity(len(input_sizes))
            sizes = tuple(self._check_input_size(size) for size in input_sizes)
            self._check_sizes(sizes)
        self._input_sizes = sizes
        super().__init__(sizes and sizes[0], name, dtype, generate_code)

    def _check_arity(self, count):
        if count < 2:
            raise LayerArgumentError(f"{type(self).__name__} `{self.name}` takes two "
                                     f"inputs or more, got {count}")

    def _check_sizes(self, sizes):
        raise NotImplementedError

    @property
    def input_sizes(self):
        return self._input_sizes

    @property
    def input_halos(self):
        return tuple(Halo.none(len(size)) for size in self._input_sizes)

    @property
    def input_fills(self):
        return (0.0,) * len(self._input_sizes)

    def infer(self, sizes):
        self._check_arity(len(sizes))
        sizes = tuple(self._check_input_size(size) for size in sizes)
        self._check_sizes(sizes)
        if self._input_sizes is not None and self._input_sizes != sizes:
            raise ShapeError(f"{type(self).__name__} `{self.name}` takes input_sizes "
                             f"{self._input_sizes}, but is fed {sizes}")
        self._input_sizes, self.input_size = sizes, sizes[0]
        return self.output_size

    def _allocate(self, inputs, input_gradients):
        self.out_dims = self._io_dims('out', self.output_size, plain=True)
        self.inputs, self.input_gradients_list = [], []
        for index, size in enumerate(self._input_sizes):
            storage = self._storage_dims(f"din{index}", size)
            own = inputs[index] is None
            layout = self.inputs_channels_last[index]
            self.inputs.append(self.tensor(f"in{index}", storage, size,
                                           channels_last=layout) if own
                               else inputs[index])
            target = input_gradients[index]
            self.input_gradients_list.append(
                self.tensor(f"din{index}", storage, size, channels_last=layout)
                if target is None else target)
        self.input, self.input_gradients = self.inputs[0], self.input_gradients_list[0]
        self._create_result()
        self._create_functions()

    def input_gradients_of(self, index):
        return self.input_gradients_list[index]

    def net_equations(self, sources, training):
        eqs = []
        for own, source in zip(self.inputs, sources):
            if own is not source:     # a padded producer: copy the domain
                dims = own.dimensions        # (one layout: the net's)
                eqs.append(Eq(own.indexed[dims], source.indexed[dims]))
        return eqs + self.schedule(self._forward_equations(training))

    def equations(self, input=None, training=True):
        """Forward equations, reading ``inputs`` (see :meth:`net_equations`)."""
        if input is not None:
            raise LayerArgumentError(f"{type(self).__name__} `{self.name}` reads "
                                     "several inputs: use it in a Net")
        return self.schedule(self._forward_equations(training))

    def forward(self, *xs):
        """Run alone on arrays ``xs``, one per input; return the result."""
        if self.forward_operator is None:
            self.compile()
        self._check_arity(len(xs))
        batch = xs[0].shape[0]
        for index, (x, size) in enumerate(zip(xs, self._input_sizes)):
            check_array(self, f'xs[{index}]', x, size, self.dtype)
            self.inputs[index].data[:batch] = x
        self.forward_operator.run(batch)
        return np.array(self.result.data[:batch])

    def backward(self, result_gradients):
        """Run alone; return dL/dinput for every input."""
        check_array(self, 'result_gradients', result_gradients, self.output_size,
                    self.dtype)
        batch = result_gradients.shape[0]
        self.result_gradients.data[:batch] = result_gradients
        self.backward_operator.run(batch)
        return [np.array(g.data[:batch]) for g in self.input_gradients_list]


class Add(Merge):
    r"""Element-wise sum of its inputs, then an optional activation.

    The residual connection of ResNet: ``Add(activation=ReLU())(body, shortcut)``.

    Parameters
    ----------
    activation : Activation, optional
        Applied to the sum (default identity).

    Notes
    -----
    :math:`y = f(\sum_i x_i)`; every input receives the same gradient,
    :math:`\partial x_i = dy \cdot f'(\sum_i x_i)` (derived: :mod:`devito_ml.autodiff`).

    Examples
    --------
    >>> Add(input_sizes=[(2, 3, 4, 4), (2, 3, 4, 4)]).output_size
    (2, 3, 4, 4)
    """

    preserves_layout = True
    family = 'add'

    def __init__(self, activation=None, input_sizes=None, name=None, dtype=None,
                 generate_code=False):
        self.activation = as_activation(activation)
        super().__init__(input_sizes, name, dtype, generate_code)

    def _check_sizes(self, sizes):
        if len(set(sizes)) != 1:
            raise ShapeError(f"Add `{self.name}`: inputs must have one shape, got "
                             f"{list(sizes)}")

    @property
    def output_size(self):
        return self._input_sizes[0]

    def _allocate(self, inputs, input_gradients):
        """As :class:`Merge`; every input whose gradient buffer is the Add's own
        shares the first input's gradient: the gradients are equal, written once.

        The net sums a buffer of its own into the gradient of an input that feeds
        several layers (a residual block's input: its shortcut and its first
        convolution), and it may read the first input's gradient for it (measured
        on ResNet-50 w64, AMD EPYC Zen 4: the Add's backward nest wrote three
        tensors of 33.5 MB for 256 channels on 32x32 maps, two of them equal).
        An input fed twice (``Add()(x, x)``) keeps a buffer of its own."""
        super()._allocate(inputs, input_gradients)
        first = self.input_gradients_list[0]
        for index in range(1, len(self.inputs)):
            own = input_gradients[index] is None
            if own and self.inputs[index] not in self.inputs[:index] and \
                    self.inputs_channels_last[index] == self.inputs_channels_last[0]:
                self.input_gradients_list[index] = first

    def gradient_map(self):
        """As :class:`~devito_ml.layer.Layer`, without the inputs whose gradient is
        the first input's (derived once)."""
        found, repeated = super().gradient_map()
        first = self.input_gradients_list[0]
        for function, gradient in zip(self.inputs[1:], self.input_gradients_list[1:]):
            if gradient is first and found.get(function) is first:
                del found[function]
        return found, repeated

    def _forward_equations(self, training):
        dims = self.out_dims
        total = sum(x[dims] for x in self.inputs)
        return [Eq(self.result[dims], self.activation.forward(total))]


class Concat(Merge):
    r"""Concatenation of its inputs along channels (features for rank 2).

    Notes
    -----
    Input ``i`` fills channels ``[o_i, o_i + C_i)`` with :math:`o_i = \sum_{j<i} C_j`;
    its gradient is that slice of the output gradient (derived:
    :mod:`devito_ml.autodiff`).

    Examples
    --------
    >>> Concat(input_sizes=[(2, 3, 4, 4), (2, 5, 4, 4)]).output_size
    (2, 8, 4, 4)
    """

    family = 'concat'

    def _check_sizes(self, sizes):
        rest = {(size[0],) + tuple(size[2:]) for size in sizes}
        if len(rest) != 1 or len({len(size) for size in sizes}) != 1:
            raise ShapeError(f"Concat `{self.name}`: inputs must agree but for their "
                             f"channels, got {list(sizes)}")

    @property
    def output_size(self):
        first = self._input_sizes[0]
        return (first[0], sum(size[1] for size in self._input_sizes)) + first[2:]

    def offsets(self):
        """Where each input starts along the channels of the output."""
        return np.cumsum([0] + [size[1] for size in self._input_sizes])[:-1].tolist()

    def _forward_equations(self, training):
        eqs = []
        for x, offset in zip(self.inputs, self.offsets()):
            n, c, *rest = logical_dimensions(x)
            eqs.append(Eq(self.result[(n, c + offset, *rest)], x[(n, c, *rest)]))
        return eqs
