"""The Layer base class: shape checks, Function allocation, chaining, and the
standalone operators of ``generate_code=True``."""

import numpy as np
from devito import Dimension, Eq

from devito_ml.compiled import BATCH, CompiledOperator
from devito_ml.symbolics import Halo, tap_dimension, tensor
from devito_ml.validation import (check_array, check_dtype, check_positive_ints,
                                  check_size)

__all__ = ['Layer', 'WeightedLayer']



class Layer:
    """Base of every layer.

    A layer owns Devito Functions for its input, output, parameters and their
    gradients; their shapes are fixed at construction. Subclasses define
    ``_create_functions``, ``_forward_equations`` and ``_backward_equations``.

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

    def __init__(self, input_size, name=None, dtype=np.float32, generate_code=False):
        self.name = name or self.family
        self.named = name is not None
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"{type(self).__name__} `{self.name}`: `dtype` must be "
                            f"float32 or float64, got {self.dtype}")
        self.input_size = self._check_input_size(input_size)
        self.result_halo = Halo.none(len(self.output_size))
        self.result_fill = 0.0
        self._allocate()
        self.forward_operator = self.backward_operator = None
        if generate_code:
            self.compile()

    def __str__(self):
        return self.name

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, "
                f"input_size={self.input_size}, output_size={self.output_size})")

    # -- what subclasses describe ------------------------------------------------

    @property
    def output_size(self):
        raise NotImplementedError

    @property
    def input_halo(self):
        """Halo (zero padding) this layer reads around its input."""
        return Halo.none(self.input_ndim)

    input_fill = 0.0
    """Value of the padding: 0, or -inf for max pooling."""

    def _check_input_size(self, input_size):
        return check_positive_ints(self, 'input_size', input_size, self.input_ndim)

    def _create_functions(self):
        """Create parameters and internal buffers (beyond input/result)."""

    def _forward_equations(self):
        raise NotImplementedError

    def _backward_equations(self):
        raise NotImplementedError

    def parameters(self):
        """Parameters by role, e.g. ``{'W': kernel, 'b': bias}``."""
        return {}

    def gradients(self):
        """Parameter gradients by role, e.g. ``{'W': kernel_gradients}``."""
        return {}

    def reset_parameters(self, rng):
        """Draw parameters as PyTorch does: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    # -- allocation ---------------------------------------------------------------

    def dim(self, role, extent):
        """A loop Dimension of this layer: ``<name>_<role>`` with a known extent."""
        return tap_dimension(f"{self.name}_{role}", extent)

    @property
    def batch_dim(self):
        return Dimension(BATCH)

    @property
    def reduction_batch_dim(self):
        """The batch, as iterated by parameter-gradient reductions.

        Devito imposes one loop order per operator; parameter gradients loop over
        their own indices first (parallel, no atomics), which needs a batch
        Dimension of their own. Its name ends in ``_n``, so that
        :class:`CompiledOperator` bounds it by the active batch like ``n``.
        """
        return tap_dimension(f"{self.name}_{BATCH}", self.input_size[0])

    def tensor(self, role, dims, shape, halo=None):
        return tensor(f"{self.name}_{role}", dims, shape, self.dtype, halo)

    def _io_dims(self, prefix, size, plain=False):
        """Loop Dimensions over a tensor of ``size``: batch, then one per axis.

        Output Dimensions are plain and store the outputs: writes along a Function's
        own Dimensions are what lets Devito prove the loops parallel and vectorise
        them. Input Dimensions have default extents: the input may be another
        layer's Function, stored on that layer's Dimensions.
        """
        roles = ('c', 'h', 'w') if len(size) == 4 else ('f',)
        make = (lambda role, extent: Dimension(f"{self.name}_{role}")) if plain \
            else self.dim
        return (self.batch_dim,) + tuple(make(prefix + r, e)
                                         for r, e in zip(roles, size[1:]))

    def _storage_dims(self, role, size):
        """Dimensions an input tensor is stored on, never iterated by this layer.

        Devito unfolds an access ``f[d + 1]`` along a default-extent Dimension ``d``
        into its whole extent; storing inputs on Dimensions no loop iterates keeps
        such accesses out of every loop bound.
        """
        roles = ('c', 'h', 'w') if len(size) == 4 else ('f',)
        return (self.batch_dim,) + tuple(Dimension(f"{self.name}_{role}_{r}")
                                         for r in roles)

    @property
    def input_gradient_dims(self):
        """Loop Dimensions of the input gradient: those it is stored on."""
        return self.input_gradients.dimensions

    def _allocate(self):
        self.in_dims = self._io_dims('i', self.input_size)
        self.out_dims = self._io_dims('o', self.output_size, plain=True)
        in_storage = self._storage_dims('in', self.input_size)
        self.out_storage = self.out_dims
        self.input = self.tensor('in', in_storage, self.input_size, self.input_halo)
        fill_halo(self.input, self.input_fill)
        self.input_gradients = self.tensor('din', in_storage, self.input_size)
        self.result = self.tensor('out', self.out_storage, self.output_size,
                                  self.result_halo)
        fill_halo(self.result, self.result_fill)
        self.result_gradients = self.tensor('dout', self.out_storage, self.output_size)
        self._create_functions()

    def configure(self, name=None, dtype=None, result_halo=None, result_fill=None):
        """Re-allocate under a new name, dtype or result halo, keeping parameters.

        Used by :class:`Net`; operators built before are no longer valid.
        """
        saved = {role: f.data.copy() for role, f in self.parameters().items()}
        if name is not None:
            self.name = name
        if dtype is not None:
            self.dtype = np.dtype(dtype)
        if result_halo is not None:
            self.result_halo = Halo(*result_halo)
        if result_fill is not None:
            self.result_fill = float(result_fill)
        self._allocate()
        for role, f in self.parameters().items():
            f.data[:] = saved[role]
        self.forward_operator = self.backward_operator = None

    # -- equations -------------------------------------------------------------------

    def equations(self, input=None):
        """Forward equations.

        Parameters
        ----------
        input : Function, optional
            Read from this Function (e.g. the previous layer's ``result``) instead
            of this layer's own ``input``. When its halo is the padding this layer
            needs, it is read in place; otherwise it is first copied into
            ``input``, whose halo holds the padding.

        Returns
        -------
        list of Eq
        """
        eqs = []
        if input is not None and input is not self.input:
            self._check_function('input', input, self.input_size)
            if tuple(input.halo) == tuple(self.input_halo):
                fill_halo(input, self.input_fill)
                self.input = input
            else:
                eqs.append(Eq(self.input[self.in_dims],
                              input[self.in_dims]))
        return eqs + self._forward_equations()

    def backprop_equations(self, input_gradients=None):
        """Backward equations: parameter gradients and ``input_gradients``.

        They read ``result_gradients`` (dL/dresult) and the forward values, and
        overwrite every gradient (no accumulation across calls).

        Parameters
        ----------
        input_gradients : Function, optional
            Write dL/dinput there (e.g. the previous layer's ``result_gradients``).
        """
        if input_gradients is not None and input_gradients is not self.input_gradients:
            self._check_function('input_gradients', input_gradients, self.input_size)
            self.input_gradients = input_gradients
        return self._backward_equations()

    def _check_function(self, argument, function, size):
        check_size(self, argument, size, function.shape)
        check_dtype(self, argument, self.dtype, function.dtype)

    # -- standalone use (generate_code=True) ------------------------------------------

    def compile(self):
        """Build this layer's own forward and backward operators."""
        self.forward_operator = CompiledOperator(self.equations(),
                                                 name=f"{self.name}_forward")
        try:
            backward = self.backprop_equations()
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
        self.forward_operator.run(batch)
        return self.result.data[:batch].copy()

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
        return self.input_gradients.data[:batch].copy()


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
