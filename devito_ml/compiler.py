"""The C compiler and allocator of devito_ml's operators: Devito's GNU compiler,
with stale-lock recovery and an AddressSanitizer test mode.

Two extension points of Devito 4.8 are used, both pinned by tests
(``tests/test_compiler.py``): a compiler class registered in
``devito.arch.compiler.compiler_registry`` and chosen per operator
(``Operator(..., compiler=name)``), and a ``MemoryAllocator`` passed to each Function.

**Stale locks.** Devito compiles through codepy, which takes a lock file
(``<codepy cache>/<soname[:7]>/lock``) opened exclusively, holds it open while it
compiles and removes it after. A process killed in between leaves the file, and the
next compile of the same code waits for it forever, silently (Devito hides codepy's
warning). Before compiling, a lock that no live process holds open is removed, with
a warning naming it.

**Flags.** ``-fno-finite-math-only`` is added to Devito's ``-ffast-math`` (NaN and
infinities keep their meaning), Devito's ``-g`` is dropped (debug information is a
fifth of gcc's time on a fused train step, and changes no instruction; the
AddressSanitizer mode keeps it), and compiled code is cached in a folder per set of
flags: Devito's cache key ignores them.

**AddressSanitizer.** With ``DEVITO_ML_SANITIZE=address`` every operator is compiled
with ``-fsanitize=address`` (so into a JIT cache of its own), and every Function
is allocated through the process's ``posix_memalign``, ASan's when ``libasan`` is
preloaded, so arrays get red zones. The process must start with
``LD_PRELOAD=$(gcc -print-file-name=libasan.so)`` (:func:`sanitizer_environment`).
"""

import ctypes
import glob
import hashlib
import os
import platform
import tempfile
import subprocess
import time
import warnings

from devito import configuration
from devito.arch.compiler import GNUCompiler, compiler_registry
from devito.data.allocators import MemoryAllocator, PosixAllocator
from devito.tools import make_tempdir

from devito_ml.vector_width import float32_lanes

__all__ = ['GnuCompiler', 'AsanGnuCompiler', 'compiler_name', 'compiler_flags',
           'allocator', 'allocation', 'jit_folders',
           'sanitizer', 'sanitizer_environment', 'clear_stale_lock']

SANITIZE = 'DEVITO_ML_SANITIZE'


def sanitizer():
    """``'address'`` in the AddressSanitizer mode, else None."""
    value = os.environ.get(SANITIZE, '')
    if value not in ('', 'address'):
        raise ValueError(f"{SANITIZE} must be `address` or empty, got {value!r}")
    return value or None


def clear_stale_lock(lock, settle=0.2):
    """Remove codepy's ``lock`` file when no live process holds it open.

    Returns True when a stale lock was removed. A compiling process holds its lock
    open from creation to removal; the check is made twice, ``settle`` seconds
    apart, so that a lock being released in between is left to its owner.
    """
    if not os.path.exists(lock) or _held_open(lock):
        return False
    time.sleep(settle)
    if not os.path.exists(lock) or _held_open(lock):
        return False
    try:
        os.unlink(lock)
    except FileNotFoundError:
        return False
    warnings.warn(f"removed a stale compile lock `{lock}` (left by a process killed "
                  "while compiling)", RuntimeWarning, stacklevel=2)
    return True


def _held_open(path):
    """Whether any process of ours has ``path`` open (Linux: /proc/*/fd)."""
    target = os.path.realpath(path)
    try:
        pids = [p for p in os.listdir('/proc') if p.isdigit()]
    except FileNotFoundError:       # no /proc: assume held, never remove
        return True
    for pid in pids:
        folder = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(folder):
                try:
                    if os.readlink(os.path.join(folder, fd)) == target:
                        return True
                except OSError:
                    continue
        except OSError:
            continue
    return False


class GnuCompiler(GNUCompiler):
    """Devito's GNU compiler, with NaN and infinities kept, a JIT cache per set of
    flags, and a stale compile lock removed instead of waited on.

    Devito compiles with ``-ffast-math``, under which gcc may assume that no NaN
    exists (``x != x`` folds to false, ``fmaxf`` drops one): a diverging input
    could hide behind a finite output. ``-fno-finite-math-only`` keeps the other
    fast-math licences (reassociation for vector reductions) and IEEE NaN/Inf.

    gcc vectorises at the width the schedules are made for on x86
    (``-mprefer-vector-width``, from :func:`~devito_ml.vector_width.float32_lanes`):
    on an AMD EPYC Zen 4, scheduled at 8 lanes, ``-march=native`` otherwise picks
    16, and a loop of 14 (a 28-wide map pooled) then never fills a vector (2x2 max
    pooling backward of 64x32x28x28: 1.2 -> 0.7 ms in C).
    """

    DROPPED = ('-g',)
    """Devito's flags left out (debug information: compile time, no speed)."""

    def __init_finalize__(self, **kwargs):
        super().__init_finalize__(**kwargs)
        # as Devito's default (custom) compiler: the environment's flags too
        extra_c, extra_ld = (os.environ.get(k, '').split() for k in ('CFLAGS', 'LDFLAGS'))
        self.cflags = [f for f in self.cflags if f not in self.DROPPED] + \
            ['-fno-finite-math-only'] + vector_width_flags() + extra_c   # a user's last
        self.ldflags = self.ldflags + extra_ld

    def _cache_name(self, kind):
        """Devito's cache key ignores flags: one cache folder per set of flags."""
        flags = ' '.join(self.cflags + self.ldflags)
        return f"{kind}-{hashlib.sha1(flags.encode()).hexdigest()[:10]}"

    def get_jit_dir(self):
        return make_tempdir(self._cache_name('jitcache'))

    def get_codepy_dir(self):
        return make_tempdir(self._cache_name('codepy'))

    def jit_compile(self, soname, code):
        clear_stale_lock(os.path.join(self.get_codepy_dir(), soname[:7], 'lock'))
        return super().jit_compile(soname, code)


X86 = ('x86_64', 'amd64', 'i386', 'i686')


def vector_width_flags(machine=None):
    """``-mprefer-vector-width`` at the schedules' width on x86 (``machine``:
    ``platform.machine()`` by default); nothing elsewhere, where gcc has no such
    flag."""
    machine = (machine or platform.machine()).lower()
    return [f"-mprefer-vector-width={32 * float32_lanes()}"] if machine in X86 else []


def jit_folders():
    """The folders of compiled C that devito_ml's compilers have written here (one
    per set of flags, under the temporary directory)."""
    root, uid = tempfile.gettempdir(), os.getuid()
    return sorted(path for kind in ('jitcache', 'codepy')
                  for path in glob.glob(os.path.join(root, f"devito-{kind}-*-uid{uid}"))
                  if os.path.isdir(path))


class AsanGnuCompiler(GnuCompiler):
    """:class:`GnuCompiler` with AddressSanitizer, in JIT caches of its own."""

    FLAGS = ['-fsanitize=address', '-fno-omit-frame-pointer', '-g']   # -g: line numbers

    def __init_finalize__(self, **kwargs):
        super().__init_finalize__(**kwargs)
        # -O1: ASan's documented level; -O3 vectorises reads that ASan then checks
        # per vector, and takes longer to compile
        self.cflags = [f for f in self.cflags if f != '-O3'] + ['-O0'] + self.FLAGS
        self.ldflags = self.ldflags + self.FLAGS


compiler_registry.setdefault('devito_ml-gnu', GnuCompiler)
compiler_registry.setdefault('devito_ml-gnu-asan', AsanGnuCompiler)


def compiler_name():
    """The registered compiler operators are built with, or None for Devito's own
    (when Devito is configured with another compiler than GNU's)."""
    if sanitizer():
        return 'devito_ml-gnu-asan'
    configured = configuration['compiler']
    gnu = isinstance(configured, GNUCompiler) or \
        getattr(configured, '_base', None) is GNUCompiler    # Devito's default: custom
    if gnu and os.path.basename(os.environ.get('CC', 'gcc')).startswith('gcc'):
        return 'devito_ml-gnu'
    return None


def compiler_flags(name, language='openmp'):
    """The flags compiler ``name`` (None: Devito's configured one) compiles with: a
    lowered operator holds its compiler, so caches of them must be keyed by these."""
    if name is None:
        built = configuration['compiler'].__new_with__()
    else:
        built = compiler_registry[name](platform=configuration['platform'],
                                        language=language, mpi=configuration['mpi'],
                                        name=name)
    return tuple(built.cflags) + tuple(built.ldflags)


class _ProcessAllocator(PosixAllocator):
    """``posix_memalign`` as the process resolves it: ASan's when preloaded
    (Devito's allocator binds libc's own, which ASan does not see)."""

    @classmethod
    def initialize(cls):
        cls.lib = ctypes.CDLL(None)


_PROCESS_ALLOCATOR = _ProcessAllocator()


def allocator():
    """The MemoryAllocator for new Functions: None (Devito's) unless sanitizing."""
    return _PROCESS_ALLOCATOR if sanitizer() else None


class _ZeroPageAllocator(MemoryAllocator):
    """Anonymous ``mmap``: page-aligned memory that the kernel hands out zeroed,
    a page when it is first touched, so it needs no fill of its own."""

    PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS = 0x1, 0x2, 0x02, 0x20

    @classmethod
    def initialize(cls):
        lib = ctypes.CDLL(None)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                             ctypes.c_int, ctypes.c_int, ctypes.c_long]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        cls.lib = lib

    def _alloc_C_libcall(self, size, ctype):
        if not self.available():
            raise RuntimeError("no `mmap` in the C library to allocate memory with")
        nbytes = max(size * ctypes.sizeof(ctype), 1)
        pointer = self.lib.mmap(None, nbytes, self.PROT_READ | self.PROT_WRITE,
                                self.MAP_PRIVATE | self.MAP_ANONYMOUS, -1, 0)
        if pointer is None or pointer == ctypes.c_void_p(-1).value:   # MAP_FAILED
            return None, None
        return ctypes.c_void_p(pointer), (pointer, nbytes)

    def free(self, pointer, nbytes):
        self.lib.munmap(pointer, nbytes)


_ZERO_PAGES = _ZeroPageAllocator()
ZERO_PAGES_FROM = 1 << 20
"""Functions of at least this many bytes are mapped from zero pages."""


def zeroed(data):
    """The initializer of a Function on zero pages: nothing to write."""


def allocation(nbytes):
    """How to allocate a new Function of ``nbytes``: the keywords ``allocator`` and
    ``initializer`` of Devito's Function.

    Devito zeroes every Function it allocates, through ``Data.__setitem__`` on one
    core: on a ResNet-50 of width 64 (6.6 GB), 12 of the 17 s of a warm first step,
    every page faulted in and then written. From ``ZERO_PAGES_FROM`` bytes up a
    Function is mapped from zero pages instead (anonymous ``mmap``), which the kernel
    zeroes as the first pass touches them, on every core that runs it. Smaller
    Functions, and every Function under AddressSanitizer, keep Devito's way.
    """
    if sanitizer() or nbytes < ZERO_PAGES_FROM:
        return dict(allocator=allocator())
    return dict(allocator=_ZERO_PAGES, initializer=zeroed)


def sanitizer_environment(environment=None):
    """A copy of ``environment`` (default ``os.environ``) that runs Python under
    AddressSanitizer: libasan preloaded, the mode on, leaks not reported (Python's
    own allocations would be)."""
    environment = dict(os.environ if environment is None else environment)
    library = subprocess.run(['gcc', '-print-file-name=libasan.so'], check=True,
                             capture_output=True, text=True).stdout.strip()
    if not os.path.isfile(library):     # gcc answers the bare name when it has none
        raise FileNotFoundError(f"gcc has no AddressSanitizer runtime (libasan.so: "
                                f"{library!r})")
    environment.update(LD_PRELOAD=library, ASAN_OPTIONS='detect_leaks=0',
                       **{SANITIZE: 'address'})
    return environment
