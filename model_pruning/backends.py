"""Which Keras backends model_pruning runs on, and the error for the others.

The masks, their update and the export run on Keras' TensorFlow backend
(`KERAS_BACKEND=tensorflow`, Keras' default). On JAX and PyTorch the
wrapper's mask constraint and the `tf.function` update cannot reach the
backend's weights (Keras' JAX trainer drops a variable's value during `fit`;
its PyTorch trainer holds weights as torch tensors), so the entry points
refuse other backends at once, before any layer is copied or any variable
created, instead of failing deep inside `fit`.
"""

import keras

SUPPORTED_BACKENDS = ("tensorflow",)


class UnsupportedBackendError(NotImplementedError):
    """Raised by an entry point of model_pruning on a Keras backend it does
    not support (a `NotImplementedError`)."""


def check_backend(entry_point: str) -> None:
    """Raises unless Keras runs on a backend `entry_point` supports.

    Args:
        entry_point: The name the message gives, such as
            `"prune_low_magnitude"`.

    Raises:
        UnsupportedBackendError: If `keras.backend.backend()` is not one of
            `SUPPORTED_BACKENDS`.
    """
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise UnsupportedBackendError(
            f"model_pruning's `{entry_point}` runs on Keras' TensorFlow "
            "backend only; JAX and PyTorch are not supported yet. Set "
            "KERAS_BACKEND=tensorflow before Keras is imported. Received: "
            f"keras.backend.backend()={backend!r}"
        )
