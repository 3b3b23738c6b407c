"""An activation applied on its own, as a layer (``torch.nn.ReLU()`` after a layer
that has no activation of its own, such as pooling)."""

from devito import Eq

from devito_ml.activations import as_activation
from devito_ml.layer import Layer

__all__ = ['ActivationLayer']


class ActivationLayer(Layer):
    r"""``y = f(x)`` element-wise; its adjoint ``dx = dy f'(x)`` is derived
    (:mod:`devito_ml.autodiff`).

    Layers with weights, BatchNorm and Add take an ``activation`` themselves (fused,
    no extra pass); this layer is for the other places.

    Parameters
    ----------
    activation : Activation
    input_size : tuple of int, optional
        Any rank 2 or 4 size; inferred inside a net.

    Examples
    --------
    >>> import numpy as np
    >>> from devito_ml import ReLU
    >>> ActivationLayer(ReLU(), input_size=(1, 3), dtype=np.float64).forward(
    ...     np.array([[-1.0, 0.0, 2.0]]))
    array([[0., 0., 2.]])
    """

    preserves_layout = True
    family = 'act'
    input_ndim = (4, 2)

    def __init__(self, activation, input_size=None, name=None, dtype=None,
                 generate_code=False):
        self.activation = as_activation(activation)
        super().__init__(input_size, name, dtype, generate_code)

    @property
    def output_size(self):
        return self.input_size

    def _forward_equations(self, training):
        dims = self.out_dims
        return [Eq(self.result[dims], self.activation.forward(self.input[dims]))]
