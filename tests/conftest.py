"""Test configuration: Devito warnings are errors, so a loop silently cut short
("Shrinking bounds", "might cause no iterations") fails the test."""

import logging

import numpy as np
import pytest


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


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
