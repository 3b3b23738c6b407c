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

import tiled_convolutions

HERE = os.path.dirname(os.path.abspath(__file__))


def test_fuzzed_networks_agree_with_torch_and_stay_in_bounds(fuzz_options):
    try:
        environment = sanitizer_environment()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no gcc with AddressSanitizer here: {error}")
    environment.update(fuzz_options)
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p',
                          'no:cacheprovider',
                          '-p', 'no:logging', '--hypothesis-show-statistics',
                          os.path.join(HERE, 'fuzz_networks.py')],
                         capture_output=True, text=True, cwd=HERE, env=environment,
                         timeout=3600)
    report = run.stdout[-6000:] + run.stderr[-6000:]
    assert 'AddressSanitizer' not in run.stderr, report
    assert run.returncode == 0, report
    assert '1 passed' in run.stdout, report
    drawn = sum(int(n) for n in re.findall(r'(\d+) passing, ', run.stdout))
    wanted = int(environment.get('DEVITO_ML_FUZZ_EXAMPLES', '100'))
    assert drawn >= wanted, report


def test_tiled_convolutions_stay_in_bounds():
    """The register tiles read padded flat tensors through computed indices, which
    Devito does not check: AddressSanitizer does."""
    try:
        environment = sanitizer_environment()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no gcc with AddressSanitizer here: {error}")
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p',
                          'no:cacheprovider', '-p', 'no:logging',
                          os.path.join(HERE, 'tiled_convolutions.py')],
                         capture_output=True, text=True, cwd=HERE, env=environment,
                         timeout=1800)
    report = run.stdout[-6000:] + run.stderr[-6000:]
    assert 'AddressSanitizer' not in run.stderr, report
    assert run.returncode == 0, report
    assert f"{len(tiled_convolutions.SHAPES)} passed" in run.stdout, report
