"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

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

    The first step is the same equations with run-time constants ``mu_b = 0`` and
    ``1 - tau = 1``, so one compiled operator serves every step.

    Examples
    --------
    >>> from devito_ml import Net, FullyConnected
    >>> net = Net([FullyConnected((2, 3), (4, 3))], seed=0)
    >>> SGD(net, lr=0.1, momentum=0.9).state_buffers().keys()
    dict_keys(['fc1_W_momentum', 'fc1_b_momentum'])
    """

    name = 'sgd'
    hyperparameters = ('lr', 'momentum', 'dampening', 'weight_decay')

    def __init__(self, net, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: `lr`, `momentum` and `weight_decay` must be >= 0, "
                             f"got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero "
                             "dampening")
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, bool(nesterov)
        super().__init__(net, lr)

    def _allocate_state(self):
        self.buffers = {p.name: self.state_buffer(p, 'momentum')
                        for p, _ in self.parameters} if self.momentum else {}

    def state_buffers(self):
        return {f.name: f for f in self.buffers.values()}

    def _per_step_values(self):
        first = self.step_count == 0
        return {'buffer_decay': 0.0 if first else self.momentum,
                'buffer_gain': 1.0 if first else 1.0 - self.dampening}

    def equations(self, layers=None):
        lr, decay = self.constant('lr'), self.constant('weight_decay')
        eqs = []
        for parameter, gradient in self.selected(layers):
            p, g = parameter.indexify(), gradient[parameter.dimensions]
            if self.weight_decay:
                g = g + decay * p
            if self.momentum:
                buffer = self.buffers[parameter.name].indexify()
                eqs.append(Eq(buffer, self.constant('buffer_decay') * buffer
                              + self.constant('buffer_gain') * g))
                g = g + self.constant('momentum') * buffer if self.nesterov else buffer
            eqs.append(Eq(p, p - lr * g))
        return eqs
