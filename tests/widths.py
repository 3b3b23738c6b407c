"""The vector widths every width-dependent test runs for, whatever this CPU's."""

from devito_ml.vector_width import SUPPORTED_LANES

WIDTHS = SUPPORTED_LANES
"""float32 lanes of SSE, AVX2 and AVX-512 registers: each width's schedules are
generated and run here (plain C compiled for this CPU, see ``vector_width.py``)."""
