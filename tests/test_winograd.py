"""Winograd's F(m x m, 3 x 3) forward pass: its transforms are exact, it schedules
only the convolutions it can, and a convolution scheduled with it agrees with torch
(standalone and inside a trained net, every vector width, a partial batch)."""

import numpy as np
import pytest
import torch

from devito_ml import Conv, Flat, FullyConnected, LayerArgumentError, Net, ReLU
from devito_ml.layers.matmul_tiles import SHORTEST_CHUNK, sum_blocking
from devito_ml.layers.winograd import TRANSFORMS, winograd_block
from devito_ml.layers.winograd_weights import gradient_transforms
from reference import DTYPES, compare_layer
from twins import compare_net


def _matrix(rows):
    return np.array([[float(entry) for entry in row] for row in rows])


@pytest.mark.parametrize('block', sorted(TRANSFORMS))
def test_transforms_compute_the_correlation_of_a_block(block, rng):
    input_transform, kernel_transform, output_transform = map(_matrix,
                                                              TRANSFORMS[block])
    tile = rng.standard_normal((block + 2, block + 2))
    kernel = rng.standard_normal((3, 3))
    direct = np.array([[np.sum(tile[y:y + 3, x:x + 3] * kernel) for x in range(block)]
                       for y in range(block)])
    products = (kernel_transform @ kernel @ kernel_transform.T) * \
        (input_transform @ tile @ input_transform.T)
    np.testing.assert_allclose(output_transform @ products @ output_transform.T,
                               direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('block', sorted(TRANSFORMS))
def test_weight_gradient_transforms_share_the_input_transform(block, rng):
    """F(3x3, m x m) on the forward's points: the kernel's gradient of a block is
    the correlation of its input tile with its output gradient, through the
    forward's own input transform."""
    input_transform = _matrix(TRANSFORMS[block][0])
    gradient_transform, output_transform = map(_matrix, gradient_transforms(block))
    tile = rng.standard_normal((block + 2, block + 2))
    gradient = rng.standard_normal((block, block))
    direct = np.array([[np.sum(tile[i:i + block, j:j + block] * gradient)
                        for j in range(3)] for i in range(3)])
    products = (gradient_transform @ gradient @ gradient_transform.T) * \
        (input_transform @ tile @ input_transform.T)
    np.testing.assert_allclose(output_transform @ products @ output_transform.T,
                               direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('arguments, block', [
    (dict(out_size=(32, 32)), 4),
    (dict(out_size=(8, 12)), 4),
    (dict(out_size=(14, 14)), 2),       # not whole blocks of 4
    (dict(out_size=(4, 4)), 4),         # a block a map
    (dict(out_size=(6, 6)), 2),
    (dict(out_size=(2, 2)), None),      # smaller than MIN_SIZE
    (dict(out_size=(9, 9)), None),      # not whole blocks of 2
    (dict(stride=(2, 2)), None),
    (dict(dilation=(1, 2)), None),
    (dict(kernel=(5, 5)), None),
    (dict(groups=2), None),
    (dict(channels=16), None),
    (dict(outputs=8), None),
])
def test_only_3x3_stride_1_wide_convolutions_are_scheduled(arguments, block):
    shape = dict(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), groups=1,
                 out_size=(16, 16), channels=64, outputs=64)
    shape.update(arguments)
    assert winograd_block(**shape) == block


# (input NCHW, output channels, bias): F(4x4), F(2x2), channels past whole vectors
CASES = [((2, 32, 8, 12), 48, True), ((3, 40, 10, 10), 33, False)]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize('size, outputs, bias', CASES)
def test_winograd_convolution_matches_torch(size, outputs, bias, dtype, rng, width):
    layer = Conv((outputs, 3, 3), size, padding=1, bias=bias, dtype=dtype, seed=0)
    module = torch.nn.Conv2d(size[1], outputs, 3, padding=1, bias=bias)
    compare_layer(layer, module, rng)
    assert layer.forward_winograd is not None
    assert layer.weight_gradient_winograd is not None
    assert f"{layer.name}_wino_gemm" in layer.forward_operator.code


def test_a_product_past_l2_runs_its_column_blocks_outermost_and_matches_torch(rng):
    """512 input channels on 4x4 maps (F(4x4), a block a map): a forward
    product's b (1 MiB a position) is past L2, its a is not, at every width."""
    layer = Conv((512, 3, 3), (3, 512, 4, 4), padding=1, dtype=np.float64, seed=0)
    compare_layer(layer, torch.nn.Conv2d(512, 512, 3, padding=1), rng)
    assert not layer.forward_winograd.products.rows_outermost


def test_a_long_weight_gradient_sum_runs_in_chunks_and_matches_torch(rng, width):
    """1536 blocks (24 samples of 32x32 maps): the weight gradient's sum a chunk
    at a time, at every width."""
    layer = Conv((32, 3, 3), (24, 32, 32, 32), padding=1, dtype=np.float64, seed=0)
    compare_layer(layer, torch.nn.Conv2d(32, 32, 3, padding=1), rng)
    assert layer.weight_gradient_winograd.products.chunks > 1


def test_sum_blocking_keeps_an_operand_in_l2():
    # b of 512 x 512 floats (1 MiB), a of 128 rows (256 KiB): a stays in L2
    assert sum_blocking(128, 512, 512, 6, 16, 4) == (False, 512)
    # 2048 rows of 64 channels, b 16 KiB: row tiles outermost, one sweep
    assert sum_blocking(2048, 64, 64, 6, 16, 4) == (True, 64)
    # a sum over 2048 blocks: in chunks that divide it
    rows_outermost, chunk = sum_blocking(66, 2048, 64, 6, 16, 4)
    assert rows_outermost and 2048 % chunk == 0 and SHORTEST_CHUNK <= chunk < 2048
    # a long sum with no divisor worth a chunk runs whole
    assert sum_blocking(66, 2053, 64, 6, 16, 4) == (True, 2053)


def test_partial_batch_after_a_full_one_matches_torch(rng):
    """The last sample's transformed input is stale in the second run: the
    weight gradient's products must not see it."""
    layer = Conv((32, 3, 3), (4, 32, 8, 8), padding=1, dtype=np.float64, seed=0)
    compare_layer(layer, torch.nn.Conv2d(32, 32, 3, padding=1), rng)
    compare_layer(layer, torch.nn.Conv2d(32, 32, 3, padding=1), rng, batch=3)
    assert layer.weight_gradient_winograd is not None


def test_direct_sums_on_request(rng):
    layer = Conv((32, 3, 3), (2, 32, 8, 8), padding=1, dtype=np.float64, seed=0,
                 winograd=False)
    compare_layer(layer, torch.nn.Conv2d(32, 32, 3, padding=1), rng)
    assert layer.forward_winograd is None
    assert '_wino' not in layer.forward_operator.code


def test_bad_winograd_argument_is_named():
    with pytest.raises(LayerArgumentError, match='winograd'):
        Conv((32, 3, 3), (2, 32, 8, 8), winograd='yes')


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: d.__name__)
def test_training_a_net_through_winograd_matches_torch(dtype, rng):
    """Two Winograd convolutions between channels-last activations, forward and
    backward in a net: output, loss and every parameter gradient as torch's, on
    the allocated batch and a smaller one."""
    n, c = 3, 32
    net = Net([Conv((c, 3, 3), (n, c, 8, 8), padding=1, activation=ReLU()),
               Conv((c, 3, 3), padding=1, activation=ReLU()),
               Flat(), FullyConnected(5)], dtype=dtype)
    compare_net(net, rng)
    compare_net(net, rng, batch=2)
    assert all(layer.forward_winograd is not None for layer in net.layers[:2])


@pytest.mark.parametrize('padding', [1, 0, 2])
def test_winograd_input_gradient_matches_torch(padding, rng):
    """The input gradient at stride 1 is a correlation of the padded gradient with
    the flipped kernel: Winograd's too, at every padding."""
    layer = Conv((40, 3, 3), (2, 32, 8, 12), padding=padding, dtype=np.float64,
                 seed=0)
    compare_layer(layer, torch.nn.Conv2d(32, 40, 3, padding=padding), rng)
    assert layer.input_gradient_winograd is not None
    assert f"{layer.name}_dwino_gemm" in layer.backward_operator.code


def test_identical_winograd_blocks_share_a_kernel_and_compute_their_own(rng):
    """Residual blocks of Winograd convolutions: one kernel for the blocks alike
    (the guard zeroing a partial batch's stale blocks renamed with its loops), and
    each block's outputs and gradients as torch's, in training."""
    from devito_ml.interop import torch_models
    from devito_ml.models import resnet
    from twins import compare_model
    stage = (3, 0, 0, 0)
    net = resnet(18, batch_size=2, image_size=(8, 8), classes=3, width=32,
                 small_input=True, blocks=stage, dtype=np.float64, seed=1)
    convolutions = [layer for layer in net.layers if isinstance(layer, Conv)]
    assert sum(layer.weight_gradient_winograd is not None
               for layer in convolutions) == 6
    backward = [part.kernel_name for part in net.backward_operator.parts
                if part.kernel_name.startswith('block')]
    assert len(backward) == 3 and len(set(backward[1:])) == 1
    compare_model(net, lambda: torch_models.resnet(18, 3, 32, 3, True, blocks=stage),
                  rng, training=True)
