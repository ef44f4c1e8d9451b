"""Which weights of a layer are pruned.

A layer is prunable when it has a `get_prunable_weights()` method (the
`PrunableLayer` protocol, matched by duck typing) or is an instance (subclasses
included) of a supported Keras layer class. Biases are never pruned.
"""

import abc

import keras

_RNN_LAYERS = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)

# Layer class -> attribute names of its prunable weights.
_SUPPORTED = (
    (keras.layers.Dense, ("kernel",)),
    (keras.layers.Conv1D, ("kernel",)),
    (keras.layers.Conv2D, ("kernel",)),
    (keras.layers.Conv3D, ("kernel",)),
    (keras.layers.Embedding, ("embeddings",)),
)


class PrunableLayer(abc.ABC):
    """Protocol for a custom layer that says which of its weights to prune.

    Any layer with a `get_prunable_weights()` method is accepted, whether or
    not it inherits from this class.
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list:
        """Returns the variables of this layer to prune."""


def supported_layer_names() -> str:
    """Returns the supported layer classes, for error messages."""
    names = [cls.__name__ for cls, _ in _SUPPORTED]
    names += [cls.__name__ for cls in _RNN_LAYERS]
    return ", ".join(names) + " and layers with `get_prunable_weights()`"


def is_supported(layer: keras.layers.Layer) -> bool:
    """Returns whether `layer` has prunable weights that this library knows."""
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    return isinstance(layer, _RNN_LAYERS) or any(
        isinstance(layer, cls) for cls, _ in _SUPPORTED
    )


def prunable_weights(layer: keras.layers.Layer) -> list:
    """Returns the variables of a built `layer` to prune, in a stable order.

    Raises:
        ValueError: If the layer is not supported.
    """
    custom = getattr(layer, "get_prunable_weights", None)
    if callable(custom):
        return list(custom())
    if isinstance(layer, _RNN_LAYERS):
        return [layer.cell.kernel, layer.cell.recurrent_kernel]
    for cls, attributes in _SUPPORTED:
        if isinstance(layer, cls):
            return [getattr(layer, name) for name in attributes]
    raise ValueError(
        f"Layer {layer.name!r} of class {layer.__class__.__name__} cannot be "
        f"pruned. Supported: {supported_layer_names()}. "
        f"Received: layer={layer.__class__.__name__}"
    )
