"""Independent NumPy references the tests compare the library against."""

import keras
import numpy as np

F32 = np.float32


def as_numpy(variable):
    """Returns a variable's value as a NumPy array."""
    return keras.ops.convert_to_numpy(variable)


def zhu_gupta_target(step, initial, final, begin, end, power=3):
    """Eq. (1) of Zhu & Gupta (2017), clipped: float64 arithmetic rounded
    once to float32, as the library computes it."""
    progress = np.clip(np.float64(step - begin) / np.float64(end - begin), 0, 1)
    decay = (1.0 - progress) ** np.float64(power)
    return F32(np.float64(final) + np.float64(initial - final) * decay)


def expected_kept(size, sparsity):
    """round_half_even(n * (1 - s)), computed in float32 like the library."""
    return int(np.round(F32(size) * (F32(1.0) - F32(sparsity))))
