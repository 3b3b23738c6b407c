"""The Optimizer base class: state in Devito Functions, hyperparameters in Constants."""

import math
import numbers

import numpy as np
from devito import Constant

from devito_ml.compiled import CompiledOperator, OperatorChain
from devito_ml.symbolics import tensor
from devito_ml.validation import non_finite

__all__ = ['Optimizer']


class Optimizer:
    """Updates every parameter of a :class:`~devito_ml.Net` from its gradient.

    The update is emitted as Devito equations (:meth:`equations`), which the net
    fuses into its train-step operator; :meth:`step` runs them alone after
    ``net.backward``. Hyperparameters are Devito Constants: changing ``lr`` (or
    any other) between steps recompiles nothing, and every term is generated
    whatever its value at construction (a momentum of 0 set to 0.9 later takes
    effect). Each value is checked whenever it is set, at construction, by a
    schedule or from a checkpoint: a non-number, NaN, Inf or a value out of range is
    refused, naming the optimizer and the hyperparameter. State (momentum buffers,
    moments) lives in Functions named after the parameter (``conv1_W_momentum``).
    """

    name = 'optimizer'
    #: hyperparameter -> (smallest value or None, bound it must stay below or None)
    hyperparameters = {'lr': (0.0, None)}

    def __init__(self, net, lr, **hyperparameters):
        self.net = net
        self.step_count = 0
        self._operators = []
        self._constants = {}
        self._values = {}
        for name, value in dict(hyperparameters, lr=lr).items():
            setattr(self, name, value)
        self._check_consistency()
        self.parameters = [(layer.parameters()[role], gradient)
                           for layer in net.layers
                           for role, gradient in layer.gradients().items()]
        self._allocate_state()
        self._update_operator = None

    def __setattr__(self, name, value):
        if name in type(self).hyperparameters:
            value = self._checked(name, value)
            self._values[name] = value
            if name in self._constants:
                self._constants[name].data = value
            object.__setattr__(self, name, value)
            if 'parameters' in self.__dict__:     # constructed: combinations too
                self._check_consistency()
            return
        object.__setattr__(self, name, value)

    def _checked(self, name, value):
        """``value`` as a float, or an error naming the optimizer and ``name``."""
        owner = type(self).__name__
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{owner}: `{name}` must be a real number, got {value!r} "
                            f"({type(value).__name__})")
        value = float(value)
        minimum, below = type(self).hyperparameters[name]
        if not math.isfinite(value):
            raise ValueError(f"{owner}: `{name}` must be finite, got {value}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{owner}: `{name}` must be >= {minimum:g}, got {value}")
        if below is not None and value >= below:
            raise ValueError(f"{owner}: `{name}` must be < {below:g}, got {value}")
        return value

    def _check_consistency(self):
        """Refuse combinations of hyperparameters that torch refuses."""

    def constant(self, name):
        """The Devito Constant holding hyperparameter or per-step value ``name``."""
        if name not in self._constants:
            self._constants[name] = Constant(name=f"{self.name}_{name}",
                                             dtype=self.net.dtype.type,
                                             value=self._values.get(name, 0.0))
        return self._constants[name]

    def constant_named(self, name):
        """The Constant called ``name`` (``<optimizer>_<hyperparameter>``, made if
        needed), or None for a name that is not one."""
        prefix = f"{self.name}_"
        return self.constant(name[len(prefix):]) if name.startswith(prefix) else None

    def description(self, layers):
        """What the update of ``layers`` is made from (its equations are not): the
        optimizer's type, name and settings, the parameters and gradients, and
        their state (:mod:`devito_ml.unit_records`)."""
        settings = {k: v for k, v in vars(self).items()
                    if isinstance(v, (bool, int, float, str)) and k != 'step_count'}
        selected = self.selected(layers)
        prefixes = tuple(f"{p.name}_" for p, _ in selected)
        state = {name: f for name, f in self.state_buffers().items()
                 if name.startswith(prefixes)} if prefixes else {}
        return type(self), self.name, settings, selected, state

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

    @property
    def update_operator(self):
        """The operator of the update alone (what :meth:`step` runs), built once."""
        if self._update_operator is None:
            self._update_operator = self.attach(OperatorChain(
                [CompiledOperator(self.equations(part),
                                  name=f"{self.net.name}_{self.name}_step{suffix}")
                 for part, suffix in self.net.parts() if self.selected(part)],
                name=f"{self.net.name}_{self.name}_step"))
        return self._update_operator

    @property
    def built_update_operator(self):
        """The update operator when :attr:`update_operator` built it, else None
        (asking builds nothing)."""
        return self._update_operator

    def step(self):
        """Apply the update to every parameter from its current gradient."""
        operator = self.update_operator
        self.prepare_step()
        operator.run(self.net.input_size[0])
        self.finish_step()

    # -- state ------------------------------------------------------------------------

    def state_dict(self):
        """Copies of the state buffers, the step count and the hyperparameters,
        with the optimizer's name (``kind``)."""
        state = {f"state/{name}": f.data.copy()
                 for name, f in self.state_buffers().items()}
        state['kind'] = np.array(self.name)
        state['step_count'] = np.array(self.step_count)
        state.update({f"hyper/{name}": np.array(getattr(self, name))
                      for name in type(self).hyperparameters})
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned.

        Everything is checked before anything is written: the optimizer kind, the
        keys, the shapes and that every value is finite; a mismatch is a
        ValueError naming it.
        """
        owner = type(self).__name__
        kind = str(state['kind']) if 'kind' in state else None
        if kind is not None and kind != self.name:
            raise ValueError(f"{owner}.load_state_dict: the state is of optimizer "
                             f"`{kind}`, this is `{self.name}`")
        expected = {f"state/{name}" for name in self.state_buffers()} | \
            {f"hyper/{name}" for name in type(self).hyperparameters} | {'step_count'}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected - {'kind'} - self._optional_state)
        if missing or unexpected:
            raise ValueError(f"{owner}.load_state_dict: missing {missing}, unexpected "
                             f"{unexpected} (the state of another optimizer or net?)")
        for name, f in self.state_buffers().items():
            value = np.asarray(state[f"state/{name}"])
            if value.shape != f.data.shape:
                raise ValueError(f"{owner}.load_state_dict: `{name}` must have shape "
                                 f"{f.data.shape}, got {value.shape}")
            if non_finite({name: value}):
                raise ValueError(f"{owner}.load_state_dict: `{name}` holds non-finite "
                                 "values")
        hyper = {name: state[f"hyper/{name}"] for name in type(self).hyperparameters}
        for name, value in hyper.items():
            self._checked(name, value)
        for name, f in self.state_buffers().items():
            f.data[:] = state[f"state/{name}"]
        self.step_count = int(state['step_count'])
        for name, value in hyper.items():
            setattr(self, name, value)
        self._load_extra_state(state)

    _optional_state = frozenset()

    def _load_extra_state(self, state):
        """Restore what a subclass adds to :meth:`state_dict`."""
