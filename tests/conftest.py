"""Shared pytest setup: quiet TensorFlow, seeded randomness."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Seeds Python, NumPy and TensorFlow before every test."""
    keras.utils.set_random_seed(1234)
    # free_memory=False skips a gc.collect() that costs ~0.1 s per test.
    keras.backend.clear_session(free_memory=False)
    yield
