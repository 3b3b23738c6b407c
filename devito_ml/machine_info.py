"""What devito_ml generates code with on this machine: versions, compiler, CPU,
the vector width the schedules are made for and what that width selects
(``devito-ml info``)."""

import os
import platform
import subprocess
from importlib import metadata

import devito
import numpy as np
from devito import configuration
from devito.arch.archinfo import get_cpu_info

from devito_ml import compiler
from devito_ml.layers.conv import LANE_FILL, fills_lanes
from devito_ml.layers.conv_tiles import gradient_tile_shape, tile_shape
from devito_ml.layers.dense import TILED_MIN_BATCH
from devito_ml.vector_width import (LANES_VARIABLE, detected_lanes, float32_lanes,
                                    tile_widths, vector_registers)

__all__ = ['machine_report', 'machine_summary', 'tiled_channel_counts']

ISA_FLAGS = ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f')
"""CPU flags the report lists as present or absent."""


def _package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'unknown (not installed)'


def _compiler_line():
    """The C compiler operators are built with: its name, version and flags."""
    name = compiler.compiler_name()
    command = os.environ.get('CC', 'gcc')
    try:
        version = subprocess.run([command, '--version'], capture_output=True,
                                 text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        version = f"`{command}` (version unknown)"
    flags = ' '.join(compiler.compiler_flags(name))
    return f"{version} as {name or 'Devito`s configured compiler'}; flags: {flags}"


def _ranges(values):
    """``[1, 2, 3, 6, 7]`` as ``'1-3, 6-7'``."""
    runs = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ', '.join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def tiled_channel_counts(limit=64):
    """Channel counts up to ``limit`` that fill the lanes enough for register tiles
    (a convolution's output channels for its forward pass and weight gradient, its
    input channels for its input gradient)."""
    return [c for c in range(1, limit + 1) if fills_lanes(c)]


def machine_summary():
    """What a benchmark's figures depend on, as a dict: the CPU, its cores and ISA
    flags, and the vector width and registers the schedules were made for.

    Returns
    -------
    dict
    """
    cpu = get_cpu_info()
    flags = set(cpu.get('flags') or ())
    return {'cpu': cpu.get('brand') or platform.processor() or platform.machine(),
            'cores': cpu.get('physical'),
            'isa': [f for f in ISA_FLAGS if f in flags],
            'float32_lanes': float32_lanes(),
            'vector_registers': vector_registers(),
            'lanes_forced': os.environ.get(LANES_VARIABLE, '').strip() or None,
            'compiler': _compiler_line()}


def machine_report():
    """Lines describing what devito_ml builds with here and what it selects.

    Returns
    -------
    list of str
    """
    cpu = get_cpu_info()
    flags = set(cpu.get('flags') or ())
    lanes = float32_lanes()
    forced = os.environ.get(LANES_VARIABLE, '').strip()
    source = (f"forced by {LANES_VARIABLE}={forced} (detected here: "
              f"{detected_lanes()})" if forced else
              f"detected (Devito's platform `{configuration['platform']}`, ISA "
              f"{configuration['platform'].isa}); {LANES_VARIABLE}=4|8|16 forces another")
    widths = ' or '.join(str(w) for w in tile_widths())
    blocks = -(-64 // lanes)
    columns, tile_blocks = tile_shape(blocks, 28)
    dw_channels, dw_blocks = gradient_tile_shape(64, blocks)
    present = ' '.join(f"{f}{'' if f in flags else ' (absent)'}" for f in ISA_FLAGS)
    return [
        f"devito_ml {_package_version('devito_ml')}, Devito {devito.__version__}, "
        f"NumPy {np.__version__}, Python {platform.python_version()}",
        f"CPU: {cpu.get('brand') or platform.processor() or platform.machine()}, "
        f"{cpu.get('physical')} cores; {present}",
        f"compiler: {_compiler_line()}",
        "threads: " + os.environ.get(
            'OMP_NUM_THREADS', 'all cores (OMP_NUM_THREADS unset)'),
        f"vector width: {lanes} float32 lanes, {lanes // 2} float64, "
        f"{vector_registers()} registers; {source}",
        "schedules this width selects:",
        f"  convolutions register-tiled, channels last, where the channels fill "
        f"{LANE_FILL:.0%} of {widths}-lane blocks (the widest they fill; output "
        f"channels: forward and weight gradient; input channels: input gradient), at "
        f"most 25 taps, one group; channel counts up to 64 that do: "
        f"{_ranges(tiled_channel_counts())}",
        f"  forward and input gradient tiles: up to {columns} columns x {tile_blocks} "
        f"blocks of {lanes} lanes (64 channels over 28 columns, float32)",
        f"  weight gradient tiles: {dw_channels} input channels x {dw_blocks} blocks of "
        f"{lanes} lanes (64 -> 64 channels, float32)",
        f"  fully connected layers: register-tiled matrix products from batch "
        f"{TILED_MIN_BATCH}, {lanes}-lane blocks of the batch or the features",
    ]
