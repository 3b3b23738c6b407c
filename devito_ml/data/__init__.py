"""Data sets: the embedded digits set (no download)."""

from devito_ml.data.digits import load_digits

__all__ = ['load_digits']
