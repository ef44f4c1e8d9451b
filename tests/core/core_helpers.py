"""Models, data and NumPy oracles shared by the core tests.

Nothing here imports TensorFlow: the core tests run unchanged on Keras'
TensorFlow, JAX and PyTorch backends.
"""

import keras
import numpy as np

BACKEND = keras.backend.backend()


def to_numpy(value):
    """A tensor or variable as a NumPy array."""
    return keras.ops.convert_to_numpy(value)


def expected_kept(size, sparsity):
    """round_half_even(n * (1 - s)), in float32 as contrib computes it."""
    kept = np.float32(size) * (np.float32(1.0) - np.float32(sparsity))
    return int(np.round(kept))


def zhu_gupta_target(step, initial, final, begin, end, power=3):
    """Eq. (1) of Zhu & Gupta (2017), clipped, in float64."""
    progress = np.clip((step - begin) / (end - begin), 0.0, 1.0)
    return final + (initial - final) * (1.0 - progress) ** power


def due_steps(begin, end, frequency, last_step, stride=1):
    """Steps at which contrib's rule (plus the catch-up at `end`) updates,
    for a callback that runs at every `stride`-th step."""
    steps, last = [], 0
    for t in range(0, last_step + 1, stride):
        regular = last + frequency <= t and t <= end
        catch_up = last < end <= t
        if t >= begin and (regular or catch_up):
            steps.append(t)
            last = t
    return steps


def mlp(inputs=8, hidden=16, outputs=3):
    """Input -> Dense(hidden, relu) -> Dense(outputs) (logits)."""
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(outputs),
        ]
    )


def cnn(classes=3):
    """8x8x1 -> Conv2D(4, 3) -> MaxPooling2D -> Flatten -> Dense(classes)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(classes),
        ]
    )


def classification_data(shape=(8,), samples=64, classes=3, seed=0):
    """Deterministic float32 inputs and int32 labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, *shape)).astype("float32")
    y = rng.integers(0, classes, size=(samples,)).astype("int32")
    return x, y


def compile_for_classes(model, optimizer="adam", **kwargs):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def masks_and_weights(model):
    """`[(mask, weight)]` of every pruned weight, as NumPy arrays."""
    import model_pruning as mp

    return [
        (to_numpy(e.mask), to_numpy(e.weight)) for e in mp.pruned_weights(model)
    ]
