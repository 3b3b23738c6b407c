"""The compiler devito_ml builds with: Devito's extension points it relies on (these
tests fail loudly when the pinned Devito changes them), NaN semantics, stale compile
locks, and the AddressSanitizer mode proven to catch an out-of-bounds read."""

import inspect
import os
import platform
import subprocess
import sys
import textwrap

import codepy.jit
import devito
import pytest
from devito.arch.compiler import GNUCompiler, compiler_registry
from devito.data.allocators import PosixAllocator

from devito_ml import compiler
from devito_ml.vector_width import LANES_VARIABLE, SUPPORTED_LANES
from devito_ml.compiler import (AsanGnuCompiler, GnuCompiler, clear_stale_lock,
                                sanitizer_environment)

PINNED_DEVITO = '4.8.23'


def test_devito_is_the_pinned_version():
    """Everything below was measured against this version; setup.cfg pins it."""
    assert devito.__version__ == PINNED_DEVITO
    with open(os.path.join(os.path.dirname(__file__), '..', 'setup.cfg')) as handle:
        assert f"devito=={PINNED_DEVITO}" in handle.read()


def test_devito_extension_points_are_as_relied_on():
    assert compiler_registry['devito_ml-gnu'] is GnuCompiler
    assert compiler_registry['devito_ml-gnu-asan'] is AsanGnuCompiler
    assert list(inspect.signature(GNUCompiler.jit_compile).parameters) == \
        ['self', 'soname', 'code']
    for method in ('get_jit_dir', 'get_codepy_dir', '__init_finalize__'):
        assert callable(getattr(GNUCompiler, method))
    assert '_alloc_C_libcall' in vars(PosixAllocator)
    # codepy's lock: an exclusively created file named `lock`, held open until done
    source = inspect.getsource(codepy.jit.CacheLockManager)
    assert '"lock"' in source and 'O_EXCL' in source
    # the lock folder Devito passes to codepy: soname[:7] under get_codepy_dir()
    assert 'get_codepy_dir().joinpath(soname[:7])' in \
        inspect.getsource(GNUCompiler.jit_compile)


def test_operators_are_compiled_with_nan_semantics():
    from devito_ml import MaxPooling
    import numpy as np
    pool = MaxPooling(2, input_size=(1, 1, 4, 4), dtype=np.float64)
    pool.forward(np.zeros((1, 1, 4, 4)))
    built = pool.forward_operator.operator._compiler
    assert isinstance(built, GnuCompiler)
    assert '-fno-finite-math-only' in built.cflags
    assert '-g' not in built.cflags and '-O3' in built.cflags     # no debug information
    assert built.get_jit_dir() != GNUCompiler().get_jit_dir()   # a cache per flags


@pytest.mark.parametrize('lanes', SUPPORTED_LANES)
def test_gcc_vectorises_at_the_width_the_schedules_are_made_for(lanes, monkeypatch):
    monkeypatch.setenv(LANES_VARIABLE, str(lanes))
    monkeypatch.delenv('CFLAGS', raising=False)
    flags = GnuCompiler().cflags
    assert f"-mprefer-vector-width={32 * lanes}" in flags
    assert flags.index('-mprefer-vector-width=%d' % (32 * lanes)) > flags.index('-O3')
    monkeypatch.setenv('CFLAGS', '-mprefer-vector-width=128')      # a user's flag wins
    assert GnuCompiler().cflags[-1] == '-mprefer-vector-width=128'


@pytest.mark.skipif(platform.machine().lower() not in compiler.X86,
                    reason='the vector-width flag is for x86 only')
def test_kernel_keys_hold_the_flags_of_the_lanes_in_use(monkeypatch):
    """The lanes may change within a process (a test, a notebook): the flags in a
    kernel's key follow them, as the compiler's do."""
    from devito_ml.compiled import kernel_options
    keys = {}
    for lanes in (8, 16, 8):
        monkeypatch.setenv(LANES_VARIABLE, str(lanes))
        keys.setdefault(lanes, []).append(kernel_options()['flags'])
    assert keys[8][0] == keys[8][1] != keys[16][0]
    assert f"-mprefer-vector-width={32 * 16}" in keys[16][0]


def test_no_x86_vector_flag_where_gcc_has_none():
    assert compiler.vector_width_flags('aarch64') == []
    assert compiler.vector_width_flags('ppc64le') == []
    assert compiler.vector_width_flags('x86_64') != []


def test_a_lock_held_open_is_kept_and_a_stale_one_removed(tmp_path):
    lock = tmp_path / 'lock'
    handle = os.open(lock, os.O_CREAT | os.O_WRONLY | os.O_EXCL)
    assert not clear_stale_lock(str(lock), settle=0)
    assert lock.exists()
    os.close(handle)                      # its owner died without removing it
    with pytest.warns(RuntimeWarning, match='stale compile lock'):
        assert clear_stale_lock(str(lock), settle=0)
    assert not lock.exists()


STALE_LOCK = textwrap.dedent('''
    import os, numpy as np, sys
    from devito import Dimension, Eq
    from devito_ml.compiled import operator_options
    from devito_ml.lanes import build_operator
    from devito_ml.symbolics import tensor
    i = Dimension('i')
    a = tensor('a', (i,), (8,), np.float64)
    operator = build_operator([Eq(a[i], a[i] + float(sys.argv[1]))], name='locked',
                              **operator_options())    # lowered, not compiled
    folder = os.path.join(operator._compiler.get_codepy_dir(), operator._soname[:7])
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, 'lock'), 'w').close()     # left by a killed compile
    operator.apply()
    print('compiled', a.data[0])
''')


def test_a_stale_compile_lock_does_not_hang_the_next_compile(tmp_path):
    script = tmp_path / 'stale.py'
    script.write_text(STALE_LOCK)
    unique = str(abs(hash(str(tmp_path))) % 10 ** 6)   # code never compiled before
    run = subprocess.run([sys.executable, str(script), unique], capture_output=True,
                         text=True, timeout=120,
                         env=dict(os.environ, DEVITO_ML_OPERATOR_CACHE='0'))
    assert run.returncode == 0, run.stderr
    assert f"compiled {float(unique)}" in run.stdout
    assert 'stale compile lock' in run.stderr


OUT_OF_BOUNDS = textwrap.dedent('''
    import sys
    import numpy as np
    from devito import Constant, Dimension, Eq
    from devito_ml.compiled import CompiledOperator
    from devito_ml.symbolics import tensor
    i, j = Dimension('i'), Dimension('j')
    shift = Constant(name='shift', dtype=np.int32, value=int(sys.argv[1]))
    a = tensor('a', (i,), (8,), np.float32)
    b = tensor('b', (j,), (5,), np.float32)
    a.data[:] = 1
    # Devito checks constant offsets, not run-time ones: b[j] = a[j + shift]
    CompiledOperator([Eq(b[j], a[j + shift])], 'shifted').operator.apply()
    print('read', b.data.sum())
''')


@pytest.fixture(scope='module')
def asan():
    try:
        return sanitizer_environment()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no gcc with AddressSanitizer here: {error}")


def run_sanitized(tmp_path, environment, shift):
    script = tmp_path / 'shifted.py'
    script.write_text(OUT_OF_BOUNDS)
    return subprocess.run([sys.executable, str(script), str(shift)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(environment, DEVITO_ML_OPERATOR_CACHE='0'))


def test_sanitizer_catches_a_deliberate_out_of_bounds_read(tmp_path, asan):
    """Reading a[4..8] of an 8-element array: ASan reports it, and the allocation
    it names is ours (ASan's posix_memalign: the allocator is routed)."""
    run = run_sanitized(tmp_path, asan, shift=4)
    assert run.returncode != 0
    assert 'AddressSanitizer: heap-buffer-overflow' in run.stderr, run.stderr[-3000:]
    assert 'READ of size 4' in run.stderr
    assert 'posix_memalign' in run.stderr


def test_sanitizer_is_silent_in_bounds(tmp_path, asan):
    run = run_sanitized(tmp_path, asan, shift=3)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'read 5.0' in run.stdout and 'AddressSanitizer' not in run.stderr


def test_sanitizer_mode_builds_with_its_own_flags_and_cache(monkeypatch):
    monkeypatch.setenv(compiler.SANITIZE, 'address')
    assert compiler.compiler_name() == 'devito_ml-gnu-asan'
    asan_compiler = AsanGnuCompiler()
    assert '-fsanitize=address' in asan_compiler.cflags
    assert asan_compiler.get_jit_dir() != GnuCompiler().get_jit_dir()
    monkeypatch.setenv(compiler.SANITIZE, 'memory')
    with pytest.raises(ValueError, match='DEVITO_ML_SANITIZE'):
        compiler.sanitizer()
