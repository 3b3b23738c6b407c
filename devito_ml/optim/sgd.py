"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

import numpy as np
from devito import Eq

from devito_ml.optim.base import Optimizer

__all__ = ['SGD']


class SGD(Optimizer):
    r"""SGD as ``torch.optim.SGD``, step for step.

    Parameters
    ----------
    net : Net
    lr : float
    momentum, dampening, weight_decay : float
    nesterov : bool

    Notes
    -----
    With :math:`g = \nabla_p L + \lambda p`:

    .. math::

        b &\leftarrow \mu b + (1 - \tau) g \quad (b = g \text{ at the first step})\\
        p &\leftarrow p - \eta\,(g + \mu b \text{ if Nesterov else } b)

    Every term is generated with run-time constants: the first step (``b = g``),
    no momentum (``b = g``, the update uses ``g``), Nesterov or not, and a weight
    decay of 0 are values of these constants, so one compiled operator serves every
    step and any later change of a hyperparameter, as in torch.

    Examples
    --------
    >>> from devito_ml import Net, FullyConnected
    >>> net = Net([FullyConnected((2, 3), (4, 3))], seed=0)
    >>> SGD(net, lr=0.1, momentum=0.9).state_buffers().keys()
    dict_keys(['fc1_W_momentum', 'fc1_b_momentum'])
    """

    name = 'sgd'
    hyperparameters = {'lr': (0.0, None), 'momentum': (0.0, None),
                       'dampening': (None, None), 'weight_decay': (0.0, None)}

    def __init__(self, net, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        self.nesterov = nesterov
        self.momentum_started = False
        super().__init__(net, lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay)

    def __setattr__(self, name, value):
        if name == 'nesterov':
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"SGD: `nesterov` must be a bool, got {value!r}")
            value = bool(value)
        super().__setattr__(name, value)
        if name == 'nesterov' and 'parameters' in self.__dict__:
            self._check_consistency()

    def _check_consistency(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum and zero "
                             f"dampening, got momentum={self.momentum}, "
                             f"dampening={self.dampening}")

    def _allocate_state(self):
        # allocated whatever the momentum: it may be set later
        self.buffers = {p.name: self.state_buffer(p, 'momentum')
                        for p, _ in self.parameters}

    def state_buffers(self):
        return {f.name: f for f in self.buffers.values()}

    def _per_step_values(self):
        momentum = self.momentum > 0
        # torch starts a momentum buffer as the gradient, at the first step that
        # uses momentum; without momentum the buffer is the gradient itself
        fresh = not (momentum and self.momentum_started)
        return {'buffer_decay': 0.0 if fresh else self.momentum,
                'buffer_gain': 1.0 if fresh else 1.0 - self.dampening,
                'gradient_gain': 1.0 if momentum and self.nesterov else 0.0,
                'buffer_step': self.momentum if momentum and self.nesterov else 1.0}

    def finish_step(self):
        super().finish_step()
        self.momentum_started = self.momentum_started or self.momentum > 0

    def state_dict(self):
        state = super().state_dict()
        state['nesterov'] = np.array(self.nesterov)
        state['momentum_started'] = np.array(self.momentum_started)
        return state

    _optional_state = frozenset({'nesterov', 'momentum_started'})

    def _load_extra_state(self, state):
        if 'nesterov' in state:
            self.nesterov = bool(state['nesterov'])
        self.momentum_started = bool(state['momentum_started']) \
            if 'momentum_started' in state else self.step_count > 0 and self.momentum > 0

    def equations(self, layers=None):
        lr, decay = self.constant('lr'), self.constant('weight_decay')
        eqs = []
        for parameter, gradient in self.selected(layers):
            p, g = parameter.indexify(), gradient[parameter.dimensions] + decay * \
                parameter.indexify()
            buffer = self.buffers[parameter.name].indexify()
            eqs += [Eq(buffer, self.constant('buffer_decay') * buffer
                       + self.constant('buffer_gain') * g),
                    Eq(p, p - lr * (self.constant('gradient_gain') * g
                                    + self.constant('buffer_step') * buffer))]
        return eqs
