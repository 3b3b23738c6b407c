"""The Optimizer base class: state in Devito Functions, hyperparameters in Constants."""

import numpy as np
from devito import Constant

from devito_ml.compiled import CompiledOperator, OperatorChain
from devito_ml.symbolics import tensor

__all__ = ['Optimizer']


class Optimizer:
    """Updates every parameter of a :class:`~devito_ml.Net` from its gradient.

    The update is emitted as Devito equations (:meth:`equations`), which the net
    fuses into its train-step operator; :meth:`step` runs them alone after
    ``net.backward``. Hyperparameters are Devito Constants: changing ``lr`` between
    steps recompiles nothing. State (momentum buffers, moments) lives in Functions
    named after the parameter (``conv1_W_momentum``).
    """

    name = 'optimizer'
    hyperparameters = ('lr',)

    def __init__(self, net, lr):
        self.net = net
        self.step_count = 0
        self._operators = []
        self._constants = {}
        self._values = {name: float(getattr(self, name))
                        for name in type(self).hyperparameters if hasattr(self, name)}
        self.parameters = [(layer.parameters()[role], gradient)
                           for layer in net.layers
                           for role, gradient in layer.gradients().items()]
        self.lr = lr
        self._allocate_state()
        self._update_operator = None

    def __setattr__(self, name, value):
        if name in type(self).hyperparameters and '_values' in self.__dict__:
            self._values[name] = float(value)
            if name in self._constants:
                self._constants[name].data = float(value)
        object.__setattr__(self, name, value)

    def constant(self, name):
        """The Devito Constant holding hyperparameter or per-step value ``name``."""
        if name not in self._constants:
            self._constants[name] = Constant(name=f"{self.name}_{name}",
                                             dtype=self.net.dtype.type,
                                             value=self._values.get(name, 0.0))
        return self._constants[name]

    def state_buffer(self, parameter, role):
        """A zero Function shaped like ``parameter``: ``<parameter>_<role>``."""
        return tensor(f"{parameter.name}_{role}", parameter.dimensions, parameter.shape,
                      self.net.dtype)

    # -- what subclasses define ---------------------------------------------------------

    def _allocate_state(self):
        """Allocate state Functions."""

    def _per_step_values(self):
        """Values of per-step Constants for the coming step (``step_count`` + 1)."""
        return {}

    def equations(self, layers=None):
        """The update of every parameter (of ``layers`` only, when given), as
        Devito equations."""
        raise NotImplementedError

    def selected(self, layers=None):
        """(parameter, gradient) pairs of ``layers`` (default: every layer)."""
        if layers is None:
            return self.parameters
        names = {f.name for layer in layers for f in layer.parameters().values()}
        return [(p, g) for p, g in self.parameters if p.name in names]

    def state_buffers(self):
        """State Functions by name."""
        return {}

    # -- running ----------------------------------------------------------------------

    def attach(self, operator):
        """Keep ``operator`` (which holds these equations) in sync with the Constants."""
        self._operators.append(operator)
        return operator

    def prepare_step(self):
        """Push this step's Constants into every operator that holds the update."""
        self._values.update(self._per_step_values())
        for name, value in self._values.items():
            if name in self._constants:
                self._constants[name].data = value
        names = {self._constants[k].name: v for k, v in self._values.items()
                 if k in self._constants}
        for operator in self._operators:
            operator.set_scalars(names)

    def finish_step(self):
        self.step_count += 1

    def step(self):
        """Apply the update to every parameter from its current gradient."""
        if self._update_operator is None:
            self._update_operator = self.attach(OperatorChain(
                [CompiledOperator(self.equations(part),
                                  name=f"{self.net.name}_{self.name}_step{suffix}")
                 for part, suffix in self.net.parts() if self.selected(part)],
                name=f"{self.net.name}_{self.name}_step"))
        self.prepare_step()
        self._update_operator.run(self.net.input_size[0])
        self.finish_step()

    # -- state ------------------------------------------------------------------------

    def state_dict(self):
        """Copies of the state buffers, the step count and the hyperparameters."""
        state = {f"state/{name}": f.data.copy()
                 for name, f in self.state_buffers().items()}
        state['step_count'] = np.array(self.step_count)
        state.update({f"hyper/{name}": np.array(getattr(self, name))
                      for name in type(self).hyperparameters})
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        for name, f in self.state_buffers().items():
            f.data[:] = state[f"state/{name}"]
        self.step_count = int(state['step_count'])
        for name in type(self).hyperparameters:
            setattr(self, name, state[f"hyper/{name}"].item())
