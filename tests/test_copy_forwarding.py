"""A tensor a kernel writes once and only copies elsewhere is written there directly
(``copy_forwarding.py``): the BatchNorm gradient before a register-tiled
convolution goes straight into the tiles' padded source, and the step still agrees
with PyTorch."""

import numpy as np
import pytest
from devito import Eq, Inc

from devito_ml.copy_forwarding import forward_copies
from devito_ml.interop import torch_models
from devito_ml.models import resnet
from devito_ml.symbolics import tap_dimension, tensor
from twins import compare_model


@pytest.fixture
def tensors():
    """``x`` and ``a`` on loops ``n, h, w``; ``flat`` a padded 1-D copy of ``a``;
    the copy loops over Dimensions of its own (``gh, gw``)."""
    n, h, w = (tap_dimension(name, extent) for name, extent in
               (('n', 2), ('h', 3), ('w', 4)))
    gh, gw = tap_dimension('gh', 3), tap_dimension('gw', 4)
    x = tensor('x', (n, h, w), (2, 3, 4), np.float64)
    a = tensor('a', (n, h, w), (2, 3, 4), np.float64)
    flat = tensor('flat', (tap_dimension('i', 60),), (60,), np.float64)
    return n, h, w, gh, gw, x, a, flat


def copy_of(a, flat, n, gh, gw):
    return Eq(flat[n * 30 + (gh + 1) * 6 + gw + 1], a[n, gh, gw])


def test_a_tensor_only_copied_is_written_where_it_is_copied(tensors):
    n, h, w, gh, gw, x, a, flat = tensors
    writer = Eq(a[n, h, w], 2 * x[n, h, w])
    (forwarded,) = forward_copies([writer, copy_of(a, flat, n, gh, gw)])
    assert forwarded.lhs == flat[n * 30 + (h + 1) * 6 + w + 1]
    assert forwarded.rhs == 2 * x[n, h, w]


@pytest.mark.parametrize('case', ['read again', 'accumulated', 'written twice',
                                  'part of it', 'copied first'])
def test_copies_that_cannot_be_folded_stay(case, tensors):
    n, h, w, gh, gw, x, a, flat = tensors
    writer = Eq(a[n, h, w], 2 * x[n, h, w])
    copy = copy_of(a, flat, n, gh, gw)
    equations = {
        'read again': [writer, copy, Eq(x[n, h, w], a[n, h, w])],
        'accumulated': [Inc(a[n, h, w], 2 * x[n, h, w]), copy],
        'written twice': [writer, copy, Eq(a[n, h, w], a[n, h, w] + 1)],
        'part of it': [Eq(a[n, tap_dimension('top', 2), w], 2), copy],  # 2 rows of 3
        'copied first': [copy, writer],
    }[case]
    assert forward_copies(equations) == equations


@pytest.mark.parametrize('dtype', [np.float32, np.float64], ids=lambda d: d.__name__)
def test_batchnorm_gradient_goes_straight_into_the_tiles_source(dtype, rng, tmp_path):
    """A basic block of 16 channels: its second convolution's output gradient,
    which its BatchNorm writes, is written into the tiles' padded source."""
    net = resnet(18, batch_size=3, image_size=(7, 6), classes=5, width=16,
                 small_input=True, blocks=(1, 0, 0, 0), dtype=dtype, seed=2)
    compare_model(net, lambda: torch_models.resnet(18, 5, 16, 3, True,
                                                   blocks=(1, 0, 0, 0)),
                  rng, True)
    code = '\n'.join(open(path).read() for path in net.write_code(tmp_path)
                     if path.endswith('.c'))
    assert 'conv2_bwd_src[' in code and 'conv2_dout[' not in code
