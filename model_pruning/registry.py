"""Which weights of a layer can be pruned, and which are pruned by default.

A layer's *candidates* are the weights this library knows how to prune. Most
are pruned by default; a few (depthwise kernels, which the paper leaves alone
because they hold few weights) only when a selection names them. Biases and
normalization parameters are never candidates.

A layer is known when it has a `get_prunable_weights()` method (the
`PrunableLayer` protocol, matched by duck typing), is an instance (subclasses
included) of a supported Keras layer, or wraps supported layers
(`Bidirectional`, `TimeDistributed`, an `RNN` over supported cells).
"""

import abc
from typing import Any
from typing import NamedTuple

import keras


class Candidate(NamedTuple):
    """A weight of a layer that can be pruned.

    Attributes:
        path: Its path inside the layer, from the names of the sublayers
            that hold it: `"kernel"`, `"query/kernel"`,
            `"forward_lstm/lstm_cell/recurrent_kernel"`. Names come from
            layer configs, so paths survive a `.keras` round trip.
        variable: The layer's variable.
        default: Whether it is pruned when no selection names it.
    """

    path: str
    variable: Any
    default: bool


class PrunableLayer(abc.ABC):
    """Protocol for a custom layer that says which of its weights to prune.

    Any layer with a `get_prunable_weights()` method is accepted, whether or
    not it inherits from this class. Every weight it returns is pruned by
    default.

    Example:

    ```python
    class MyDense(keras.layers.Layer, model_pruning.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]
    ```
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list:
        """Returns the variables of this layer to prune."""


_DEPTHWISE = ("depthwise_kernel",)

# Layer class -> (attributes pruned by default, attributes pruned on request).
_KERNEL_LAYERS = (
    (keras.layers.Dense, ("kernel",), ()),
    (keras.layers.EinsumDense, ("kernel",), ()),
    (keras.layers.Conv1D, ("kernel",), ()),
    (keras.layers.Conv2D, ("kernel",), ()),
    (keras.layers.Conv3D, ("kernel",), ()),
    (keras.layers.Conv1DTranspose, ("kernel",), ()),
    (keras.layers.Conv2DTranspose, ("kernel",), ()),
    (keras.layers.Conv3DTranspose, ("kernel",), ()),
    (keras.layers.SeparableConv1D, ("pointwise_kernel",), _DEPTHWISE),
    (keras.layers.SeparableConv2D, ("pointwise_kernel",), _DEPTHWISE),
    (keras.layers.DepthwiseConv1D, (), ("kernel",)),
    (keras.layers.DepthwiseConv2D, (), ("kernel",)),
    (keras.layers.Embedding, ("embeddings",), ()),
)

_RNN_CELLS = (
    keras.layers.LSTMCell,
    keras.layers.GRUCell,
    keras.layers.SimpleRNNCell,
    keras.src.layers.rnn.conv_lstm.ConvLSTMCell,
)

# Layers whose weights are known and never pruned: normalization statistics
# and scales, and parametric activations.
_NEVER_PRUNED = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.RMSNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
    keras.layers.PReLU,
)


def supported_layer_names() -> str:
    """Returns the supported layer kinds, for error messages."""
    names = [cls.__name__ for cls, _, _ in _KERNEL_LAYERS]
    names += ["MultiHeadAttention", "LSTM", "GRU", "SimpleRNN", "ConvLSTM*"]
    names += ["RNN over their cells", "Bidirectional", "TimeDistributed"]
    return ", ".join(names) + " and layers with `get_prunable_weights()`"


def candidates(layer: keras.layers.Layer) -> list[Candidate] | None:
    """Returns the prunable weights of a built `layer`, or `None` if unknown.

    The order is stable (the layer's own order), so masks line up with
    weights across saves. A known layer may have no candidates (for example
    `BatchNormalization`).
    """
    custom = getattr(layer, "get_prunable_weights", None)
    if callable(custom):
        return _unique_paths([Candidate(w.name, w, True) for w in custom()])
    for cls, defaults, optional in _KERNEL_LAYERS:
        if isinstance(layer, cls):
            return [_attribute(layer, a, True) for a in defaults] + [
                _attribute(layer, a, False) for a in optional
            ]
    if isinstance(layer, keras.layers.MultiHeadAttention):
        projections = (
            layer.query_dense,
            layer.key_dense,
            layer.value_dense,
            layer.output_dense,
        )
        return _all_known(projections)
    if isinstance(layer, _RNN_CELLS):
        return [
            _attribute(layer, "kernel", True),
            _attribute(layer, "recurrent_kernel", True),
        ]
    if isinstance(layer, keras.layers.StackedRNNCells):
        return _all_known(layer.cells)
    if isinstance(layer, keras.layers.RNN):
        return _all_known([layer.cell])
    if isinstance(layer, keras.layers.Bidirectional):
        return _all_known([layer.forward_layer, layer.backward_layer])
    if isinstance(layer, keras.layers.TimeDistributed):
        return _all_known([layer.layer])
    if isinstance(layer, _NEVER_PRUNED) or not layer.trainable_weights:
        return []
    return None


def is_supported(layer: keras.layers.Layer) -> bool:
    """Returns whether `layer` has candidates this library can prune.

    Only built layers can be inspected fully; an unbuilt layer is judged by
    its class.
    """
    if not layer.built:
        return _known_class(layer)
    found = candidates(layer)
    return bool(found)


def _known_class(layer: keras.layers.Layer) -> bool:
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    kinds = tuple(cls for cls, _, _ in _KERNEL_LAYERS) + _RNN_CELLS
    kinds += (
        keras.layers.MultiHeadAttention,
        keras.layers.StackedRNNCells,
        keras.layers.RNN,
        keras.layers.Bidirectional,
        keras.layers.TimeDistributed,
    )
    return isinstance(layer, kinds)


def _attribute(layer: Any, attribute: str, default: bool) -> Candidate:
    variable = getattr(layer, attribute)
    return Candidate(variable.name, variable, default)


def _all_known(layers: Any) -> list[Candidate] | None:
    """Candidates of sublayers, their paths prefixed with sublayer names."""
    found = []
    for sublayer in layers:
        inner = candidates(sublayer)
        if inner is None:
            return None
        found += [c._replace(path=f"{sublayer.name}/{c.path}") for c in inner]
    return _unique_paths(found)


def _unique_paths(found: list[Candidate]) -> list[Candidate]:
    """Numbers repeated paths (`kernel`, `kernel_1`), keeping the order."""
    seen: set[str] = set()
    unique = []
    for candidate in found:
        path, number = candidate.path, 0
        while path in seen:
            number += 1
            path = f"{candidate.path}_{number}"
        seen.add(path)
        unique.append(candidate._replace(path=path))
    return unique
