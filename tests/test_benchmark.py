"""The benchmark harness measures what it says: interleaved rounds, PyTorch at its
better memory format, ratios of medians. (No timing is asserted.)"""

import numpy as np

from devito_ml.benchmark import COMPILED, Case, _functions, _summary, interleaved
from devito_ml.machine_info import machine_summary
from devito_ml.vector_width import LANES_VARIABLE, detected_lanes


def test_rounds_interleave_every_function():
    calls = []
    times = interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                        rounds=3, repeat=2)
    assert {name: len(values) for name, values in times.items()} == {'a': 3, 'b': 3}
    rounds = calls[2:]                   # after one warm call each
    assert rounds == ['a'] * 3 + ['b'] * 3 + ['a'] * 3 + ['b'] * 3 + ['a'] * 3 + \
        ['b'] * 3


def test_pytorch_is_taken_at_its_better_format():
    case = Case('conv', None, {}, flops=2e9)
    times = {'devito_ml': [0.2, 0.3, 0.25], 'nchw': [0.4, 0.5, 0.45],
             'channels_last': [0.1, 0.12, 0.11]}
    entry = _summary(case, times)
    assert entry['torch_format'] == 'channels_last'
    assert np.isclose(entry['ratio'], 0.25 / 0.11)
    assert np.isclose(entry['devito_ml_gflops'], 2e9 / 0.25 / 1e9)
    assert np.isclose(entry['torch_median_ms'], 110)


def test_torch_compile_is_a_column_of_its_own_never_the_better_format():
    compiled = object()
    case = Case('step', 'ours', {'nchw': 'eager'}, compiled=compiled)
    assert _functions(case) == {'devito_ml': 'ours', 'nchw': 'eager', COMPILED: compiled}
    times = {'devito_ml': [0.2, 0.3, 0.25], 'nchw': [0.4, 0.5, 0.45],
             COMPILED: [0.1, 0.12, 0.11]}
    entry = _summary(case, times)
    assert entry['torch_format'] == 'nchw'
    assert np.isclose(entry['ratio'], 0.25 / 0.45)
    assert np.isclose(entry['torch_compile_median_ms'], 110)
    assert np.isclose(entry['ratio_to_compile'], 0.25 / 0.11)
    assert 'ratio_to_compile' not in _summary(Case('conv', None, {}),
                                              {'devito_ml': [1.0], 'nchw': [2.0]})


def test_figures_name_the_machine_and_the_width_they_were_made_for(monkeypatch):
    """bench.json (and the table's first line) carries the CPU and the vector width
    the schedules were made for: figures from two machines are never confused."""
    monkeypatch.setenv(LANES_VARIABLE, '16')
    forced = machine_summary()
    assert (forced['float32_lanes'], forced['vector_registers'],
            forced['lanes_forced']) == (16, 32, '16')
    assert forced['cpu'] and forced['cores'] and 'gcc' in forced['compiler']
    monkeypatch.delenv(LANES_VARIABLE)
    detected = machine_summary()
    assert (detected['float32_lanes'], detected['lanes_forced']) == \
        (detected_lanes(), None)


def test_the_build_benchmark_worker_counts_the_kernels_of_the_step_it_built():
    """``benchmarks/bench_build.py``'s devito_ml worker, run in this process on
    LeNet-5: the built step's kernels and calls are read through the Net's API."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[1] / 'benchmarks' / 'bench_build.py'
    spec = importlib.util.spec_from_file_location('bench_build', path)
    bench_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_build)
    figures = bench_build.worker_devito('lenet')
    assert figures['kernels'] >= 1 and figures['calls'] >= figures['kernels']
    assert figures['layers'] == 8 and figures['build_s'] > 0 and figures['step_ms'] > 0
