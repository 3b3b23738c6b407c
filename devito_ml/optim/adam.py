"""Adam and AdamW."""

import math

import sympy
from devito import Eq

from devito_ml.optim.base import Optimizer

__all__ = ['Adam', 'AdamW']


class Adam(Optimizer):
    r"""Adam as ``torch.optim.Adam``, step for step.

    Parameters
    ----------
    net : Net
    lr : float
    betas : pair of float
    eps : float
    weight_decay : float
        Added to the gradient (L2), as torch's Adam.

    Notes
    -----
    At step :math:`t`, with :math:`g = \nabla_p L + \lambda p`:

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g,\qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2\\
        p &\leftarrow p - \frac{\eta}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{v}/\sqrt{1 - \beta_2^t} + \epsilon}

    The bias corrections are run-time constants, updated every step.

    Examples
    --------
    >>> from devito_ml import Net, FullyConnected
    >>> net = Net([FullyConnected((2, 3), (4, 3))], seed=0)
    >>> sorted(Adam(net).state_buffers())[:2]
    ['fc1_W_exp_avg', 'fc1_W_exp_avg_sq']
    """

    name = 'adam'
    hyperparameters = {'lr': (0.0, None), 'beta1': (0.0, 1.0), 'beta2': (0.0, 1.0),
                       'eps': (0.0, None), 'weight_decay': (0.0, None)}
    decoupled = False

    def __init__(self, net, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        beta1, beta2 = _pair(type(self).__name__, betas)
        super().__init__(net, lr, beta1=beta1, beta2=beta2, eps=eps,
                         weight_decay=weight_decay)

    @property
    def betas(self):
        """``(beta1, beta2)``; settable as a pair."""
        return self.beta1, self.beta2

    @betas.setter
    def betas(self, value):
        self.beta1, self.beta2 = _pair(type(self).__name__, value)

    def _allocate_state(self):
        self.exp_avg = {p.name: self.state_buffer(p, 'exp_avg')
                        for p, _ in self.parameters}
        self.exp_avg_sq = {p.name: self.state_buffer(p, 'exp_avg_sq')
                           for p, _ in self.parameters}

    def state_buffers(self):
        return {f.name: f for f in (*self.exp_avg.values(), *self.exp_avg_sq.values())}

    def _per_step_values(self):
        t = self.step_count + 1
        return {'gain1': 1 - self.beta1, 'gain2': 1 - self.beta2,
                'step_size': self.lr / (1 - self.beta1 ** t),
                'correction2_sqrt': math.sqrt(1 - self.beta2 ** t),
                'decoupled_decay': 1 - self.lr * self.weight_decay}

    def equations(self, layers=None):
        beta1, beta2 = self.constant('beta1'), self.constant('beta2')
        eqs = []
        for parameter, gradient in self.selected(layers):
            p, g = parameter.indexify(), gradient[parameter.dimensions]
            # generated whatever the decay at construction: it may be set later
            if self.decoupled:
                eqs.append(Eq(p, p * self.constant('decoupled_decay')))
            else:
                g = g + self.constant('weight_decay') * p
            m = self.exp_avg[parameter.name].indexify()
            v = self.exp_avg_sq[parameter.name].indexify()
            # 1 - beta in double precision, as torch: 1 - 0.999f is 4.7e-5 off in float32
            eqs += [Eq(m, beta1 * m + self.constant('gain1') * g),
                    Eq(v, beta2 * v + self.constant('gain2') * g * g)]
            denominator = sympy.sqrt(v) / self.constant('correction2_sqrt') \
                + self.constant('eps')
            eqs.append(Eq(p, p - self.constant('step_size') * m / denominator))
        return eqs


def _pair(owner, betas):
    """``betas`` as two values, or an error naming the argument."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: `betas` must be a pair of numbers, got "
                        f"{betas!r}") from None
    return beta1, beta2


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW`` (default 0.01).

    The parameter first shrinks by ``1 - lr*weight_decay``, then takes the Adam step.
    """

    name = 'adamw'
    decoupled = True

    def __init__(self, net, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(net, lr, betas, eps, weight_decay)
