"""Independent NumPy references the tests compare the library against."""

import keras
import numpy as np

F32 = np.float32


def as_numpy(variable):
    """Returns a variable's value as a NumPy array."""
    return keras.ops.convert_to_numpy(variable)


def zhu_gupta_target(step, initial, final, begin, end, power=3):
    """Eq. (1) of Zhu & Gupta (2017), clipped, in float32 arithmetic."""
    progress = F32(step - begin) / F32(end - begin)
    progress = np.clip(progress, F32(0.0), F32(1.0)).astype(F32)
    decay = (F32(1.0) - progress) ** F32(power)
    return F32(F32(final) + F32(initial - final) * decay)


def expected_kept(size, sparsity):
    """round_half_even(n * (1 - s)), computed in float32 like the library."""
    return int(np.round(F32(size) * (F32(1.0) - F32(sparsity))))
