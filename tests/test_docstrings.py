"""The Examples in the docstrings run, as in Devito's own test suite."""

import doctest
import importlib

import pytest

MODULES = ['devito_ml.symbolics', 'devito_ml.layers.conv', 'devito_ml.layers.pooling',
           'devito_ml.layers.dense', 'devito_ml.layers.reshape', 'devito_ml.net',
           'devito_ml.models.lenet', 'devito_ml.data.digits', 'devito_ml.data.batches',
           'devito_ml.optim.sgd', 'devito_ml.optim.adam', 'devito_ml.interop.torch',
           'devito_ml.graph', 'devito_ml.layers.merge', 'devito_ml.layers.normalization',
           'devito_ml.layers.dropout', 'devito_ml.layers.elementwise',
           'devito_ml.models.resnet', 'devito_ml.models.vgg', 'devito_ml.models.alexnet',
           'devito_ml.interop.state', 'devito_ml.interop.convert']


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
