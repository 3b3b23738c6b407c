"""Optimizers whose parameter updates are Devito equations, compiled once."""

from devito_ml.optim.adam import Adam, AdamW
from devito_ml.optim.base import Optimizer
from devito_ml.optim.sgd import SGD

__all__ = ['Optimizer', 'SGD', 'Adam', 'AdamW']
