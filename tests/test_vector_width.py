"""The vector width schedules are made for: forced by ``DEVITO_ML_LANES`` or detected,
reported by ``devito-ml info``, and never changing results beyond float rounding."""

import numpy as np
import pytest

from devito_ml import (BatchNorm, Conv, Flat, FullyConnected, FullyConnectedSoftmax,
                       MaxPooling, Net, ReLU)
from devito_ml.cli import main
from devito_ml.layers.conv import fills_lanes, tile_width
from devito_ml.vector_width import (LANES_VARIABLE, SUPPORTED_LANES, VectorWidthError,
                                    detected_lanes, float32_lanes, tile_widths,
                                    vector_lanes, vector_registers)
from widths import WIDTHS


def test_the_detected_width_is_a_supported_one(monkeypatch):
    monkeypatch.delenv(LANES_VARIABLE, raising=False)
    assert detected_lanes() in SUPPORTED_LANES
    assert float32_lanes() == detected_lanes()


@pytest.mark.parametrize('lanes', SUPPORTED_LANES)
def test_the_variable_forces_the_width(monkeypatch, lanes):
    monkeypatch.setenv(LANES_VARIABLE, str(lanes))
    assert float32_lanes() == vector_lanes(np.float32) == lanes
    assert vector_lanes(np.float64) == lanes // 2
    assert vector_registers() == (32 if lanes == 16 else 16)


@pytest.mark.parametrize('value', ['12', 'avx2', '0', '-8', '8.0'])
def test_an_unsupported_width_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(LANES_VARIABLE, value)
    with pytest.raises(VectorWidthError, match=rf"DEVITO_ML_LANES must be one of 4, 8, "
                       rf"16 .*got '{value}'"):
        float32_lanes()


def test_the_width_decides_which_channel_counts_are_tiled_and_how_wide(monkeypatch):
    """Channels too few for the full width are tiled at a narrower one, down to 8
    lanes: on AVX-512, LeNet-5's 6 channels in 8-lane tiles, not NCHW nests."""
    counts = (3, 6, 8, 12, 20, 32)
    monkeypatch.setenv(LANES_VARIABLE, '4')
    assert tile_widths() == [4]
    assert [tile_width(c) for c in counts] == [4, 4, 4, 4, 4, 4]
    monkeypatch.setenv(LANES_VARIABLE, '8')
    assert tile_widths() == [8]
    assert [tile_width(c) for c in counts] == [None, 8, 8, 8, 8, 8]
    monkeypatch.setenv(LANES_VARIABLE, '16')
    assert tile_widths() == [16, 8]
    assert [tile_width(c) for c in counts] == [None, 8, 8, 16, 8, 16]
    assert [fills_lanes(c) for c in counts] == [False, True, True, True, True, True]


def test_a_narrower_tile_is_laid_out_for_its_own_width(monkeypatch):
    monkeypatch.setenv(LANES_VARIABLE, '16')
    conv = Conv((6, 3, 3), (2, 16, 8, 8), padding=1)
    assert conv.channels_last and conv.input_gradient_channels_last
    assert (conv.forward_tiles.lanes, conv.forward_tiles.registers) == (8, 16)
    assert conv.weight_gradient_tiles.lanes == 8
    assert all(p.tiles.lanes == 16 for p in conv.input_gradient_tiles.phases)
    conv64 = Conv((6, 3, 3), (2, 16, 8, 8), padding=1, dtype=np.float64)
    assert conv64.forward_tiles.lanes == 4


def test_info_reports_the_width_and_its_schedules(monkeypatch, capsys):
    monkeypatch.setenv(LANES_VARIABLE, '16')
    assert main(['info']) == 0
    report = capsys.readouterr().out
    assert 'Devito 4.8.23' in report and 'gcc' in report and '-march=native' in report
    assert f'16 float32 lanes, 8 float64, 32 registers; forced by {LANES_VARIABLE}=16' \
        in report
    assert 'of 16 or 8-lane blocks' in report and '6-8, 12-16, 18-64' in report
    monkeypatch.delenv(LANES_VARIABLE)
    assert main(['info']) == 0
    assert f'{detected_lanes()} float32 lanes' in capsys.readouterr().out


def test_info_refuses_an_unsupported_width_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv(LANES_VARIABLE, '32')
    assert main(['info']) == 2
    assert capsys.readouterr().err.strip() == (
        "devito-ml: error: DEVITO_ML_LANES must be one of 4, 8, 16 (float32 lanes of "
        "the vector registers to schedule for), got '32'")


def _mixed_width_net():
    """Channel counts that tile at some widths and not at others (6, 12, 20), a
    strided convolution, BatchNorm, and a batch that tiles the dense layers."""
    return Net([Conv((6, 3, 3), (16, 3, 9, 10), padding=1, activation=ReLU()),
                Conv((12, 3, 3), stride=2, padding=1, bias=False),
                BatchNorm(activation=ReLU()),
                Conv((20, 3, 2), padding=(1, 0)),
                MaxPooling(2),
                Flat(),
                FullyConnected(24, activation=ReLU()),
                FullyConnectedSoftmax(5)], dtype=np.float64, seed=3)


def _run(rng_seed=0):
    net = _mixed_width_net()
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal(net.input_size)
    labels = rng.integers(0, 5, net.input_size[0])
    output = net.forward(x)
    loss = net.backward(labels)
    tiled = [(layer.channels_last, layer.input_gradient_channels_last)
             for layer in net.layers if isinstance(layer, Conv)]
    return output, loss, net.gradients(), tiled


def test_results_do_not_depend_on_the_width(monkeypatch):
    """Every width's schedules, run here (they are plain C compiled for this CPU),
    agree in float64 to rounding: outputs, loss and every gradient."""
    runs = {}
    for lanes in WIDTHS:
        monkeypatch.setenv(LANES_VARIABLE, str(lanes))
        runs[lanes] = _run()
    schedules = {lanes: run[3] for lanes, run in runs.items()}
    assert len(set(map(tuple, schedules.values()))) > 1, schedules
    reference = runs[WIDTHS[0]]
    for lanes, (output, loss, gradients, _) in runs.items():
        scale = np.abs(reference[0]).max()
        assert np.abs(output - reference[0]).max() <= 1e-13 * scale, lanes
        assert abs(loss - reference[1]) <= 1e-13 * abs(reference[1]), lanes
        for name, gradient in gradients.items():
            want = reference[2][name]
            assert np.abs(gradient - want).max() <= 1e-13 * np.abs(want).max(), \
                (lanes, name)
