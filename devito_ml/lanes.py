"""Vector lanes: loops Devito vectorises although they are not innermost.

A register-tiled kernel (``layers/conv_tiles.py``) keeps a tile of outputs in
Scalars while it runs a reduction loop: for each lane of a vector, the Scalars are
set to zero, the reduction loop accumulates into them, and they are stored. gcc
turns each Scalar into one vector register when the *lane* loop, the one outside
the reduction, carries ``#pragma omp simd``. Devito's SIMD pass (4.8,
``PragmaSimdTransformer._make_simd``) puts the pragma only on a perfect innermost
loop, so the lane loop never gets it.

This module carries the one change: loops over a :class:`LaneDimension` get the
pragma too when Devito found them parallel. It also marks loops over an
:class:`UnrolledDimension` ``#pragma GCC unroll``: a tile's taps are such loops, one
equation a tile entry instead of one a tap and entry (Devito's lowering time grows
with the equations), which gcc unrolls back into one statement a tap before it
vectorises the lane loop (it vectorises a lane loop over one inner loop, not over
a nest). It goes through Devito's own extension
points: a subclass of the OpenMP ``Parizer`` (the pass object every CPU operator
takes from its ``_Target``), a target and operator classes using it, and
:func:`build_operator`, which lowers equations with those classes following the
steps of ``Operator.__new__``. ``tests/test_lanes.py`` pins every piece of Devito
this relies on.
"""

from devito import CustomDimension
from devito.core.cpu import Cpu64AdvOmpOperator
from devito.core import Intel64AdvOmpOperator
from devito.ir.iet import (FindNodes, Iteration, Pragma, Transformer,
                           retrieve_iteration_tree)
from devito.ir.support.properties import VECTORIZED
from devito.operator.operator import parse_kwargs
from devito.operator.registry import operator_selector
from devito.passes.iet.languages.openmp import Ompizer
from devito.passes.iet.languages.targets import COmpTarget
from devito.tools import CacheInstances, memoized_func, timed_region

__all__ = ['LiteralDimension', 'LaneDimension', 'UnrolledDimension',
           'build_operator', 'lane_operator_class']


class LiteralDimension(CustomDimension):
    """A loop ``0 .. size - 1`` whose bounds are literals in the C."""

    @classmethod
    def of(cls, name, size):
        """``0 .. size - 1``."""
        return cls(name, symbolic_min=0, symbolic_max=size - 1, symbolic_size=size)


class LaneDimension(LiteralDimension):
    """The lanes of a vector register: a loop of literal extent, the machine's
    vector width in elements (:meth:`LiteralDimension.of`)."""


class UnrolledDimension(LiteralDimension):
    """A loop of literal extent that the C compiler unrolls completely
    (``#pragma GCC unroll size``)."""


class LaneOmpizer(Ompizer):
    """Devito's OpenMP pass, with ``omp simd`` on parallel lane loops as well, and
    ``GCC unroll`` on unrolled loops."""

    def _make_simd(self, iet):
        iet, metadata = super()._make_simd(iet)
        # an unrolled loop Devito vectorised (the innermost parallel one) gives
        # the pragma to the parallel loop around it: gcc unrolls it into the
        # body of that loop, which it then vectorises
        enclosing = {}
        for tree in retrieve_iteration_tree(iet):
            for outer, inner in zip(tree, tree[1:]):
                if isinstance(inner.dim, UnrolledDimension) and \
                        VECTORIZED in inner.properties and outer.is_Parallel:
                    enclosing[outer] = inner
        vectorised = set(enclosing.values())
        mapper = {}
        for loop in FindNodes(Iteration).visit(iet):
            if (isinstance(loop.dim, LaneDimension) and loop.is_Parallel and
                    VECTORIZED not in loop.properties) or loop in enclosing:
                mapper[loop] = loop._rebuild(
                    pragmas=loop.pragmas + self._make_simd_pragma(loop),
                    properties=tuple(loop.properties) + (VECTORIZED,))
            elif isinstance(loop.dim, UnrolledDimension):
                size = loop.dim.symbolic_size
                pragmas, properties = loop.pragmas, loop.properties
                if loop in vectorised:
                    pragmas = ()
                    properties = tuple(p for p in properties if p is not VECTORIZED)
                mapper[loop] = loop._rebuild(
                    pragmas=pragmas + (Pragma(f'GCC unroll {size}'),),
                    properties=properties)
        return Transformer(mapper, nested=True).visit(iet), metadata


class LaneOmpTarget(COmpTarget):
    """The C/OpenMP target with :class:`LaneOmpizer` as its parallelizer."""
    Parizer = LaneOmpizer


class LaneCpu64AdvOmpOperator(Cpu64AdvOmpOperator):
    """Devito's generic CPU OpenMP operator, vectorising lane loops."""
    _Target = LaneOmpTarget


class LaneIntel64AdvOmpOperator(Intel64AdvOmpOperator):
    """Devito's Intel CPU OpenMP operator, vectorising lane loops."""
    _Target = LaneOmpTarget


_LANE_OPERATORS = {Cpu64AdvOmpOperator: LaneCpu64AdvOmpOperator,
                   Intel64AdvOmpOperator: LaneIntel64AdvOmpOperator}


def lane_operator_class(base):
    """The lane-vectorising subclass of the operator class Devito selected.

    Other targets (a GPU, another language) keep Devito's class: lane loops then
    run as plain loops, correct and slower.
    """
    return _LANE_OPERATORS.get(base, base)


def build_operator(expressions, **kwargs):
    """``Operator(expressions, **kwargs)``, lowered with the lane-vectorising class.

    The steps of Devito 4.8's ``Operator.__new__``, with the class it selects
    replaced by :func:`lane_operator_class` of it.
    """
    kwargs = parse_kwargs(**kwargs)
    cls = lane_operator_class(operator_selector(**kwargs))
    kwargs = cls._normalize_kwargs(**kwargs)
    cls._check_kwargs(**kwargs)
    expressions = cls._sanitize_exprs(expressions, **kwargs)
    with timed_region('op-compile') as region:
        try:
            operator = cls._build(expressions, **kwargs)
        finally:
            CacheInstances.clear_caches()
            memoized_func.clear_build_caches()
    operator._profiler.py_timers.update(region.timings)
    operator._emit_build_profiling()
    return operator
