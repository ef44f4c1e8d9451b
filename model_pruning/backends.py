"""Which Keras backends model_pruning runs on, and what differs between them.

The core (`prune_low_magnitude`, `fit` with `UpdatePruningStep`,
`Pruning`, `strip_pruning`, `.keras` files, the report) runs on Keras'
TensorFlow, JAX and PyTorch backends. What is built on TensorFlow itself
(contrib's graph-mode layers, SavedModel and LiteRT export,
`strip_pruning_vars`) calls `check_backend` and raises
`UnsupportedBackendError` on the others, before anything is changed.

On TensorFlow a mask update may run inside a `tf.function` (graph-mode
`tf.cond`); on JAX and PyTorch it runs eagerly between training steps, so
its control flow is Python. `cond` and `wide_dtype` hide that difference.
"""

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")
TENSORFLOW_ONLY = ("tensorflow",)


class UnsupportedBackendError(NotImplementedError):
    """Raised by an entry point of model_pruning on a Keras backend it does
    not support (a `NotImplementedError`)."""


def check_backend(
    entry_point: str, supported: tuple[str, ...] = SUPPORTED_BACKENDS
) -> None:
    """Raises unless Keras runs on a backend `entry_point` supports.

    Args:
        entry_point: The name the message gives, such as
            `"export_tflite"`.
        supported: The backends it runs on. Defaults to
            `SUPPORTED_BACKENDS`.

    Raises:
        UnsupportedBackendError: If `keras.backend.backend()` is not one of
            `supported`.
    """
    backend = keras.backend.backend()
    if backend not in supported:
        raise UnsupportedBackendError(
            f"model_pruning's `{entry_point}` runs on the Keras "
            f"backend{'s' if len(supported) > 1 else ''} "
            f"{', '.join(supported)} only. Set KERAS_BACKEND={supported[0]} "
            "before Keras is imported. Received: "
            f"keras.backend.backend()={backend!r}"
        )


def is_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (mask updates may be in a graph)."""
    return keras.backend.backend() == "tensorflow"


def wide_dtype(kind: str) -> str:
    """`"int64"` or `"float64"` for `kind` `"int"` or `"float"`, except on
    JAX without `jax_enable_x64`, which has no 64-bit types (32 instead)."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return f"{kind}32"
    return f"{kind}64"


def cond(predicate: Any, update: Callable[[], None]) -> Any:
    """Runs `update()` when `predicate` holds; returns the predicate.

    On TensorFlow a `tf.cond` (so it also works inside a `tf.function`);
    on the other backends, which update eagerly, a Python `if`.
    """
    if is_tensorflow():
        import tensorflow as tf

        def run() -> Any:
            update()
            return tf.constant(True)

        return tf.cond(
            ops.convert_to_tensor(predicate), run, lambda: tf.constant(False)
        )
    taken = bool(ops.convert_to_numpy(predicate))
    if taken:
        update()
    return taken


def is_sharded(value: Any) -> bool:
    """Whether `value` is a JAX array split over several devices (Keras'
    distribution API: a `ModelParallel` layout), which the host fast paths
    must not gather. A replicated array (`DataParallel`'s weights) is not:
    its host copy is one device's copy, with no gather."""
    sharding = getattr(value, "sharding", None)
    return (
        sharding is not None
        and len(sharding.device_set) > 1
        and not sharding.is_fully_replicated
    )
