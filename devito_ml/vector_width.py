"""The vector width the schedules are chosen and generated for.

Register tiles (``layers/conv_tiles.py``, ``layers/matmul_tiles.py``) hold one
vector register a lane block, and which convolutions are tiled at all depends on
how well their channels fill those lanes (``layers/conv.py``). Both follow the
width given here, in float32 lanes (float64 lanes are half as many):

- ``DEVITO_ML_LANES=4|8|16`` when set (SSE, AVX2, AVX-512 registers), so that the
  schedules of any width can be generated, read and run on any machine;
- else the width Devito detects for this CPU (``configuration['platform']``).
  Devito 4.8 knows AVX-512 on Intel CPUs only: an AMD CPU with AVX-512 (Zen 4) is
  given 8 lanes.

The width chooses the schedule, not the instructions: every operator is compiled
for the CPU it runs on (``-march=native``), and a lane loop of 16 compiles to two
AVX2 registers as well as to one AVX-512 register. A schedule of any width thus
runs, with the same results up to float rounding, on every x86-64 CPU; it is
fastest on the width it was chosen for.
"""

import os

import numpy as np
from devito import configuration

__all__ = ['LANES_VARIABLE', 'SUPPORTED_LANES', 'detected_lanes', 'float32_lanes',
           'tile_widths', 'vector_lanes', 'vector_registers', 'VectorWidthError']

LANES_VARIABLE = 'DEVITO_ML_LANES'
"""The environment variable that forces the float32 lanes of the schedules."""

SUPPORTED_LANES = (4, 8, 16)
"""float32 lanes of the registers schedules are made for: SSE, AVX2, AVX-512."""


class VectorWidthError(ValueError):
    """``DEVITO_ML_LANES`` holds something other than a supported width."""


def detected_lanes():
    """float32 lanes of this CPU's vector registers as Devito detects them, brought
    to the nearest supported width (a CPU Devito knows no SIMD of gets 4)."""
    nbytes = configuration['platform'].simd_reg_nbytes or 16
    lanes = nbytes // np.dtype(np.float32).itemsize
    return min(SUPPORTED_LANES, key=lambda s: (abs(s - lanes), s))


def float32_lanes():
    """float32 lanes the schedules are made for: ``DEVITO_ML_LANES`` when set,
    else :func:`detected_lanes`.

    Raises
    ------
    VectorWidthError
        When ``DEVITO_ML_LANES`` is set to anything but 4, 8 or 16.
    """
    value = os.environ.get(LANES_VARIABLE, '').strip()
    if not value:
        return detected_lanes()
    if value not in {str(s) for s in SUPPORTED_LANES}:
        raise VectorWidthError(
            f"{LANES_VARIABLE} must be one of {', '.join(map(str, SUPPORTED_LANES))} "
            f"(float32 lanes of the vector registers to schedule for), got {value!r}")
    return int(value)


def vector_lanes(dtype, width=None):
    """Elements of ``dtype`` in one vector register of ``width`` float32 lanes
    (default: the width scheduled for, :func:`float32_lanes`)."""
    return (width or float32_lanes()) * 4 // np.dtype(dtype).itemsize


def vector_registers(width=None):
    """Architectural vector registers of ``width`` float32 lanes (default: the width
    scheduled for): 32 with AVX-512, else 16."""
    return 32 if (width or float32_lanes()) >= 16 else 16


def tile_widths():
    """float32 widths a register tile may be scheduled at, widest first: the width
    scheduled for and, under it, down to AVX2's 8 lanes.

    A layer whose channels fill too little of the full width is tiled at a
    narrower one rather than not at all: on AVX-512, LeNet-5's 6 channels fill 6
    of 16 lanes but 6 of 8. The narrower tiles are plain C as well, compiled with
    the full width's instructions (on AVX-512, 8-lane tiles use 256-bit
    registers); they are laid out for the narrower width's 16 registers.
    Measured on AMD EPYC Zen 4 scheduled at 16 lanes, LeNet-5 batch 256 train
    step: 23.5 ms with its 6-channel convolutions as NCHW nests, 13.4 ms with them
    tiled at 8 lanes (11.4-13.5 ms scheduled at 8 lanes throughout).
    """
    lanes = float32_lanes()
    return [w for w in sorted(SUPPORTED_LANES, reverse=True)
            if min(8, lanes) <= w <= lanes]
