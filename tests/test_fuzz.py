"""Generated code proven in bounds on networks nobody chose: the hypothesis fuzzer
of ``fuzz_networks.py`` runs under AddressSanitizer (compiled with
``-fsanitize=address``, arrays red-zoned); any out-of-bounds access aborts it with a
report, any disagreement with torch fails it. ``pytest --fuzz-examples 1000`` (or
``--fuzz-seed``) fuzzes more."""

import os
import re
import subprocess
import sys

import pytest

from devito_ml.compiler import sanitizer_environment
from devito_ml.vector_width import LANES_VARIABLE

import tiled_convolutions
from widths import WIDTHS

HERE = os.path.dirname(os.path.abspath(__file__))


def _run_sanitized(test_file, options=(), extra_environment=None):
    """Run ``test_file`` with pytest under AddressSanitizer; the run and its report.

    Skips when gcc has no AddressSanitizer; fails on any sanitizer report or failure.
    """
    try:
        environment = sanitizer_environment()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no gcc with AddressSanitizer here: {error}")
    environment.update(extra_environment or {})
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p',
                          'no:cacheprovider', '-p', 'no:logging', *options,
                          os.path.join(HERE, test_file)],
                         capture_output=True, text=True, cwd=HERE, env=environment,
                         timeout=3600)
    report = run.stdout[-6000:] + run.stderr[-6000:]
    assert 'AddressSanitizer' not in run.stderr, report
    assert run.returncode == 0, report
    return run, report, environment


def test_fuzzed_networks_agree_with_torch_and_stay_in_bounds(fuzz_options):
    run, report, environment = _run_sanitized(
        'fuzz_networks.py', ['--hypothesis-show-statistics'], fuzz_options)
    assert '1 passed' in run.stdout, report
    drawn = sum(int(n) for n in re.findall(r'(\d+) passing, ', run.stdout))
    wanted = int(environment.get('DEVITO_ML_FUZZ_EXAMPLES', '60'))
    assert drawn >= wanted, report


@pytest.mark.parametrize('lanes', WIDTHS, ids=lambda lanes: f'{lanes}lanes')
def test_tiled_convolutions_stay_in_bounds(lanes):
    """The register tiles read padded flat tensors through computed indices, which
    Devito does not check: AddressSanitizer does, for the tiles of every width."""
    run, report, _ = _run_sanitized('tiled_convolutions.py',
                                    extra_environment={LANES_VARIABLE: str(lanes)})
    cases = len(tiled_convolutions.SHAPES) + len(tiled_convolutions.COLUMN_SHAPES) + \
        len(tiled_convolutions.WINOGRAD_SHAPES)
    assert f"{cases} passed" in run.stdout, report
