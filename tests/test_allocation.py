"""A net's Functions are allocated with one sweep of Devito's symbol cache, not one
a Function (``devito_ml/allocation.py``); the piece of Devito this swaps is pinned."""

import inspect

import numpy as np
from devito.types import dense
from devito.types.caching import CacheManager

from devito_ml.allocation import batched_allocation
from devito_ml.models import resnet
from devito_ml.symbolics import tensor


def test_pinned_devito_sweeps_its_cache_before_each_allocation():
    """If this fails, Devito changed how it allocates: re-check allocation.py."""
    source = inspect.getsource(dense.DiscreteFunction._allocate_memory)
    assert 'CacheManager.clear(force=False)' in source
    assert dense.CacheManager is CacheManager


def test_a_batch_of_allocations_sweeps_once(monkeypatch):
    sweeps = []
    monkeypatch.setattr(CacheManager, 'clear',
                        classmethod(lambda cls, force=True: sweeps.append(force)))
    import devito
    functions = [tensor(f"batched{i}", (devito.Dimension(f"batched_d{i}"),), (4,),
                        np.float64) for i in range(3)]
    with batched_allocation():
        for function in functions:
            function.data[:] = 1.0
    assert sweeps == [False]
    assert dense.CacheManager is CacheManager
    assert all(np.all(function.data == 1.0) for function in functions)


def test_a_deep_net_is_constructed_with_every_parameter_drawn():
    net = resnet(50, batch_size=1, image_size=(16, 16), width=4, small_input=True,
                 classes=3, seed=0)
    assert all(np.any(value != 0) for name, value in net.parameters().items()
               if name.endswith('_W'))


def test_pinned_devito_zeroes_new_data_unless_given_an_initializer():
    """Large Functions come from zero pages and skip Devito's fill by giving it an
    initializer that writes nothing; if this fails, Devito changed how it fills."""
    source = inspect.getsource(dense.DiscreteFunction._allocate_memory)
    assert 'self._initializer(self.data_with_halo)' in source
    assert 'self.data_with_halo[:] = 0' in source


def test_large_functions_come_zeroed_from_zero_pages_small_ones_as_devito_makes_them():
    import devito
    from devito_ml import compiler
    large = tensor('large_zeroed', (devito.Dimension('large_i'),
                                    devito.Dimension('large_j')), (700, 400),
                   np.float32, halo=((1, 1), (2, 2)))
    small = tensor('small_zeroed', (devito.Dimension('small_i'),), (10,), np.float64)
    assert isinstance(large._allocator, type(compiler.allocation(1 << 30)['allocator']))
    assert not isinstance(small._allocator, type(large._allocator))
    assert not np.any(large.data_with_halo) and not np.any(small.data_with_halo)
    large.data[:] = 2.0
    assert np.all(large.data == 2.0) and not np.any(large.data_with_halo[0])
    assert large.data_with_halo.shape == (702, 404)


def test_under_the_sanitizer_every_function_is_filled_as_devito_does(monkeypatch):
    from devito_ml import compiler
    monkeypatch.setenv(compiler.SANITIZE, 'address')
    assert compiler.allocation(1 << 30) == {'allocator': compiler.allocator()}
