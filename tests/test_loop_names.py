"""Every loop of the generated C speaks one vocabulary, ``<layer>_<tensor>_<axis>``
(``layer.py``, Loop names), and the map atop the C lists each layer's loops."""

import re

import numpy as np
import pytest

from devito_ml import (Add, AvgPooling, BatchNorm, Concat, Conv, Dropout, Flat,
                       FullyConnected, FullyConnectedSoftmax, GlobalAvgPooling, Input,
                       MaxPooling, Net, ReLU)
from devito_ml.code_map import owned_loops
from devito_ml.vector_width import LANES_VARIABLE
from widths import WIDTHS

AXES = r'(n|c|h|w|f|ky|kx|k)'
TILE_AXES = r'(lane|pos|row|column|sum)'   # a register tile's own (conv_tiles.py)
TENSORS = (r'(out|in|din\d*|in_cl|dz_cl|dz_stuffed|dout_stuffed|W|Wt|group|dW'
           r'|fwd|bwd\d*|tile|copy|mean|var|grad|max|sum|dot|total|phase'
           r'|d(sum|mean|var|shifted))')      # a derived gradient's own (autodiff)
LOOP = re.compile(rf'^({TENSORS}_)*({AXES}|{TILE_AXES})(\d+)?(_(tile|block))?$')


def _every_layer_kind_net(layers_per_operator):
    """Convolutions tiled and not, strided, grouped; normalization, dropout, both
    merges, the three poolings, dense layers and the softmax head. Whatever the
    vector width, 2 channels are too few to tile and 16 enough."""
    x = Input((2, 10, 10))
    a = Conv((16, 3, 3), padding=1, activation=ReLU())(x)
    a = BatchNorm()(a)
    b = Conv((8, 3, 3), stride=2, padding=1)(a)
    g = Conv((8, 3, 3), padding=1, groups=4)(a)
    s = Add(activation=ReLU())(MaxPooling(2)(g), b)
    c = Concat()(s, AvgPooling(2)(a))
    h = Dropout(0.25)(Flat()(GlobalAvgPooling()(c)))
    y = FullyConnectedSoftmax(3)(FullyConnected(6, activation=ReLU())(h))
    return Net(y, batch_size=2, dtype=np.float32, seed=0,
               layers_per_operator=layers_per_operator)


@pytest.fixture(scope='module', params=[(lanes, 'whole') for lanes in WIDTHS]
                + [(WIDTHS[0], 'blocks')], ids=lambda p: f'{p[0]}lanes-{p[1]}')
def net_code(request, tmp_path_factory):
    """The net and the C of every operator it built (the input gradient's too), with
    the schedules of each vector width: one operator a pass, or (``blocks``) one
    kernel a block, whose tensors and loops are named after the roles of the layers
    in the block (``conv1``: its first convolution)."""
    lanes, unit = request.param
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LANES_VARIABLE, str(lanes))
        net = _every_layer_kind_net(100 if unit == 'whole' else 12)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 2, 10, 10)).astype(np.float32)
        net.forward(x)
        net.input_gradient(x, np.array([0, 2]))
        paths = net.write_code(tmp_path_factory.mktemp('c'))
        return net, [open(path).read() for path in paths if path.endswith('.c')]


def _names(net):
    """Who may own a loop: the layers, the loss, and the roles in shared kernels."""
    roles = {role for chain in net.built_operators()
             for part in chain.parts for role in part.owners}
    return [layer.name for layer in net.layers] + ['cross_entropy'] + sorted(roles)


def test_every_loop_is_named_layer_tensor_axis(net_code):
    net, files = net_code
    code = '\n'.join(files)
    loops = set(re.findall(r'\bfor \(int (\w+) = ', code))
    owned = owned_loops(code, _names(net))
    assert loops == {'n'} | {loop for own in owned.values() for loop in own}
    for owner, own in owned.items():
        for loop in own:
            assert LOOP.match(loop[len(owner) + 1:]), loop
    if len(net.forward_operator.parts) > 1:     # kernels shared by blocks
        assert all(part.owners for part in net.forward_operator.parts)
        return
    # the first convolution's input gradient, the grouped kernel's channels, the
    # strided convolution's tiles over one stride phase
    assert {'conv1_din_c', 'conv1_din_h', 'conv1_din_w'} <= set(owned['conv1'])
    assert {'conv2_W_c', 'conv2_group_k'} <= set(owned['conv2'])
    assert {'conv3_bwd01_ky', 'conv3_din01_w'} <= set(owned['conv3'])
    for layer in ('conv1', 'bn1', 'conv2', 'conv3', 'pool1', 'add1', 'concat1',
                  'avgpool1', 'fc1', 'fc2'):
        assert any(loop.startswith(f'{layer}_out_') for loop in owned[layer]), layer


def test_the_map_atop_each_file_lists_its_layers_loops(net_code):
    net, files = net_code
    assert len(files) >= 2
    for code in files:
        end = code.index('*/', code.index('devito_ml '))
        header = ' '.join(code[:end].split())
        assert '<layer>_<tensor>_<axis>' in header
        for owner, own in owned_loops(code[end:], _names(net)).items():
            assert f'{owner} ' in header
            for loop in own:
                assert f' {loop} ' in f'{header} ', loop
