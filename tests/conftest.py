"""Test configuration: Devito warnings are errors, so a loop silently cut short
("Shrinking bounds", "might cause no iterations") fails the test.

Under pytest-xdist the test processes already use every core: kernels are built
in-process (``DEVITO_ML_BUILD_WORKERS=1``) rather than by worker processes of their
own, each paying its imports, on cores that are busy, and OpenMP threads wait
passively (``OMP_WAIT_POLICY=PASSIVE``) rather than spin on a core the other
process needs. ``test_kernel_builds.py``
asks for workers itself.

Every unit recalled from its record is checked against its derived equations
(``DEVITO_ML_CHECK_RECORDS=1``, :mod:`devito_ml.unit_records`): a description that
missed what tells two units apart fails whichever test meets it."""

import logging
import os

import numpy as np
import pytest

from devito_ml.kernel_builds import WORKERS_VARIABLE
from devito_ml.unit_records import CHECK_VARIABLE
from devito_ml.vector_width import LANES_VARIABLE
from widths import WIDTHS

if 'PYTEST_XDIST_WORKER' in os.environ:
    os.environ.setdefault(WORKERS_VARIABLE, '1')
    # two test processes share the cores, each kernel running its OpenMP threads:
    # threads spinning at a barrier while the other process holds their core made
    # the training notebook (900 steps of tiny parallel loops) take 94-204 s in
    # the suite, 27 s alone; waiting passively, they yield the core
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault(CHECK_VARIABLE, '1')


LONGEST_FILES = ('test_models.py', 'test_fuzz.py', 'test_notebooks.py',
                 'test_layout.py', 'test_convert.py', 'test_vector_width.py',
                 'test_distributed.py', 'test_winograd.py', 'test_kernels.py')
"""The test files that take longest, longest first (minutes each on two cores). The
two xdist workers take whole files in the order collected (``--dist loadfile
--no-loadscope-reorder``): the longest first, so that none of them is left running
alone at the end while the other worker has nothing to do."""


def pytest_collection_modifyitems(config, items):
    """The longest files' tests first (:data:`LONGEST_FILES`), the others after in
    their order; the tests of one file stay in theirs."""
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else \
            len(LONGEST_FILES)
    items.sort(key=rank)


class _RaiseOnDevitoWarning(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        if record.levelno >= logging.WARNING or 'no iterations' in message:
            raise AssertionError(f"Devito reported: {message}")


@pytest.fixture(autouse=True)
def devito_warnings_are_errors():
    logger = logging.getLogger('Devito')
    handler = _RaiseOnDevitoWarning(level=logging.DEBUG)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture(params=WIDTHS, ids=lambda lanes: f'{lanes}lanes')
def width(request, monkeypatch):
    """float32 lanes: schedules made for each vector width in turn
    (``DEVITO_ML_LANES``), whatever this CPU's own width."""
    monkeypatch.setenv(LANES_VARIABLE, str(request.param))
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_addoption(parser):
    group = parser.getgroup('devito_ml')
    group.addoption('--fuzz-examples', type=int, default=None,
                    help='networks the sanitized fuzzer draws (default 60, or '
                    '$DEVITO_ML_FUZZ_EXAMPLES)')
    group.addoption('--fuzz-seed', type=int, default=None,
                    help='draw another set of networks (default: the same set every '
                    'run)')


@pytest.fixture
def fuzz_options(request):
    """The fuzzer's settings as environment variables for its subprocess."""
    options = {}
    examples = request.config.getoption('--fuzz-examples')
    if examples is not None:
        options['DEVITO_ML_FUZZ_EXAMPLES'] = str(examples)
    fuzz_seed = request.config.getoption('--fuzz-seed')
    if fuzz_seed is not None:
        options['DEVITO_ML_FUZZ_SEED'] = str(fuzz_seed)
    return options
