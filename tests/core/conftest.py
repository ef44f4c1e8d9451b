"""Setup of the backend-neutral core tests (`KERAS_BACKEND` = tensorflow,
jax or torch): a seed and a fresh Keras session before every test (the
parent conftest), and the dtype policy restored after every test."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _float32_policy_after():
    """Puts the global dtype policy back, whatever a test set."""
    yield
    keras.config.set_dtype_policy("float32")
