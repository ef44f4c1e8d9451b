"""Which weights of a layer can be pruned, and which are pruned by default.

A layer's *candidates* are the weights this library knows how to prune. Most
are pruned by default; a few (depthwise kernels, which the paper leaves alone
because they hold few weights) only when a selection names them. Biases and
normalization parameters are never candidates.

A layer is known when it has a `get_prunable_weights()` method (the
`PrunableLayer` protocol, matched by duck typing), is an instance (subclasses
included) of a supported Keras layer, or wraps supported layers
(`Bidirectional`, `TimeDistributed`, an `RNN` over supported cells).

Any other layer (a KerasHub transformer block, a whole backbone, a custom
layer or model) is *walked*: `inventory` collects the candidates of its
sublayers, at any depth, in place, and sorts the weights it owns itself into
parameters that are never pruned (vectors such as biases, scales, `LayerScale`
gammas and class tokens), position embeddings (pruned only on request) and
unknown weights, which `prune_low_magnitude` reports.
"""

import abc
import re
from typing import Any
from typing import NamedTuple

import keras

from model_pruning import _compat


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
)

_RNN_CELLS = (
    keras.layers.LSTMCell,
    keras.layers.GRUCell,
    keras.layers.SimpleRNNCell,
    _compat.conv_lstm_cell_class(),
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
    names = [cls.__name__ for cls, _, _ in _KERNEL_LAYERS] + ["Embedding"]
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
    if isinstance(layer, keras.layers.Embedding):
        return _embedding_candidates(layer)
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
    """Returns whether `layer` has weights this library can prune.

    A built layer is walked (see `inventory`). An unbuilt layer is judged by
    its class: a supported Keras layer, or any class Keras does not define
    itself (a custom or KerasHub layer may create its weights in `build`;
    the wrapper checks again when it is built).
    """
    if not layer.built:
        return _known_class(layer) or not _defined_by_keras(layer)
    return bool(inventory(layer).candidates)


def prunes_by_default(layer: keras.layers.Layer) -> bool:
    """Whether an unbuilt `layer`'s class has weights pruned by default.

    For layers of an unbuilt model, chosen before they have weights: a
    supported kernel layer with default candidates (not a depthwise
    convolution), any other supported kind, or a class Keras does not
    define (the wrapper checks it when built).
    """
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    for cls, defaults, _ in _KERNEL_LAYERS:
        if isinstance(layer, cls):
            return bool(defaults)
    return is_supported(layer)


def may_pass_through(layer: keras.layers.Layer) -> bool:
    """Whether `layer` may be wrapped although it has nothing to prune.

    tfmot wraps layers such as `Dropout`, `MaxPooling2D` and
    `BatchNormalization` as pass-throughs. A built layer qualifies when a
    walk finds neither candidates nor unknown trainable weights; an unbuilt
    one when Keras defines its class (the wrapper checks again at build).
    """
    if not layer.built:
        return _defined_by_keras(layer)
    found = inventory(layer)
    return not found.candidates and not found.unknown


class UnknownWeight(NamedTuple):
    """A trainable weight nothing knows how to prune.

    Attributes:
        path: Its path inside the walked layer, e.g. `"block/w"`.
        variable: The variable.
        owner: The layer that owns it.
    """

    path: str
    variable: Any
    owner: Any


class Inventory(NamedTuple):
    """What a walk of a layer found.

    Attributes:
        candidates: Prunable weights, paths relative to the walked layer
            (`"transformer_layer_0/self_attention_layer/query/kernel"`).
        unknown: Trainable weights that are neither candidates nor
            parameters that are never pruned.
    """

    candidates: list[Candidate]
    unknown: list[UnknownWeight]


def inventory(layer: keras.layers.Layer) -> Inventory:
    """Walks a built layer and its sublayers, at any depth, in place.

    A known layer (see `candidates`) gives its candidates. Any other layer
    gives, for each trainable weight it owns itself: nothing when the weight
    is a vector (at most one dimension longer than 1: biases, scales,
    `LayerScale` gammas, class tokens); an optional candidate (pruned only
    when an `include` pattern names it) when it is a position embedding (its
    layer's class or its name says "position"); an `UnknownWeight`
    otherwise. Then it walks its sublayers, prefixing their names. Frozen
    layers are skipped; a variable reached twice (a shared sublayer, a tied
    embedding) is listed once.

    Args:
        layer: A built Keras layer or model.

    Returns:
        An `Inventory`.
    """
    found: list[Candidate] = []
    unknown: list[UnknownWeight] = []
    _walk(layer, "", found, unknown, set())
    seen: set[int] = set()
    unique = []
    for candidate in found:
        if id(candidate.variable) not in seen:
            seen.add(id(candidate.variable))
            unique.append(candidate)
    return Inventory(_unique_paths(unique), unknown)


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Returns the layers `layer` tracks directly, in tracking order.

    Keras has no public accessor for a layer's own sublayers (`Model.layers`
    exists only on models); this is the one place that reads its tracker.
    """
    return list(layer._flatten_layers(include_self=False, recursive=False))


def owners(layer: keras.layers.Layer) -> dict[int, keras.layers.Layer]:
    """Maps the id of each variable of `layer` to the innermost layer (of
    `layer` and its sublayers, at any depth) that holds it."""
    found: dict[int, keras.layers.Layer] = {}
    seen: set[int] = set()

    def visit(current: keras.layers.Layer) -> None:
        if id(current) in seen:
            return
        seen.add(id(current))
        for variable in current.weights:
            found[id(variable)] = current
        for sub in sublayers(current):
            visit(sub)

    visit(layer)
    return found


def input_axes(owner: Any, variable: Any) -> int | None:
    """How many leading axes of an `EinsumDense` kernel of rank 3 or more
    its equation sums over the input (the kernel is then the matrix
    `[prod(those axes), prod(the rest)]`, as LiteRT's `FULLY_CONNECTED`
    computes with it); `None` for any other weight, or when the summed axes
    do not lead."""
    if not isinstance(owner, keras.layers.EinsumDense) or (
        len(variable.shape) < 3 or variable.name != "kernel"
    ):
        return None
    operands, output = owner.equation.replace(".", "").split("->")
    inputs, kernel = operands.split(",")
    summed = [axis for axis in kernel if axis in inputs and axis not in output]
    if not summed or set(kernel[: len(summed)]) != set(summed):
        return None
    return len(summed)


_POSITION = re.compile("position", re.IGNORECASE)


def _walk(
    layer: keras.layers.Layer,
    prefix: str,
    found: list[Candidate],
    unknown: list[UnknownWeight],
    visited: set[int],
) -> None:
    if id(layer) in visited or not layer.trainable_weights:
        return
    visited.add(id(layer))
    known = candidates(layer)
    if known is not None:
        found.extend(c._replace(path=prefix + c.path) for c in known)
        return
    inner = sublayers(layer)
    held = {id(v) for sub in inner for v in sub.weights}
    for variable in layer.trainable_weights:
        if id(variable) in held or _is_vector(variable):
            continue
        path = prefix + variable.name
        if _POSITION.search(type(layer).__name__) or _POSITION.search(
            variable.name
        ):
            found.append(Candidate(path, variable, False))
        else:
            unknown.append(UnknownWeight(path, variable, layer))
    names = _sublayer_names(layer, inner)
    for sub in inner:
        _walk(sub, f"{prefix}{names[id(sub)]}/", found, unknown, visited)


def _sublayer_names(
    layer: keras.layers.Layer, inner: list[keras.layers.Layer]
) -> dict[int, str]:
    """Names each sublayer of `layer` for weight paths, stably.

    A sublayer is named by its layer name, unless Keras generated that name
    (`dense_3`: the snake-cased class name and a counter, different each
    time the class is constructed, so a copy or a reloaded model would not
    match). Then it is named by the attribute that holds it (`first`, or
    `blocks/0` for a list), as Keras' own weight files are.
    """
    attributes: dict[int, str] = {}
    # A graph model's layer names are in its config, so they are stable.
    if not isinstance(layer, (keras.Sequential, _compat.functional_class())):
        for attribute, value in vars(layer).items():
            if attribute in bookkeeping_attributes():
                continue
            if isinstance(value, keras.layers.Layer):
                attributes.setdefault(id(value), attribute)
            elif isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    if isinstance(item, keras.layers.Layer):
                        attributes.setdefault(id(item), f"{attribute}/{index}")
    names = {}
    for sub in inner:
        generated = re.fullmatch(
            re.escape(_snake_case(type(sub).__name__)) + r"(_\d+)?", sub.name
        )
        names[id(sub)] = (
            attributes.get(id(sub), sub.name) if generated else sub.name
        )
    return names


def _snake_case(name: str) -> str:
    """Keras' default layer name for a class name (`EinsumDense` ->
    `einsum_dense`)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_BOOKKEEPING: list[frozenset[str]] = []


def bookkeeping_attributes() -> frozenset[str]:
    """Attributes Keras itself sets on every layer and model (`_layers`,
    `_tracked`, ...), some of which hold sublayers: never a user's
    sublayer attribute. Read once from a bare layer and a bare model."""
    if not _BOOKKEEPING:
        # Given names: no auto-name counter is used up, so users' default
        # layer names do not shift.
        layer = keras.layers.Layer(name="model_pruning_probe")
        model = keras.Model(name="model_pruning_probe_model")
        _BOOKKEEPING.append(frozenset(vars(layer)) | frozenset(vars(model)))
    return _BOOKKEEPING[0]


def _is_vector(variable: Any) -> bool:
    return sum(1 for d in variable.shape if d is None or d > 1) <= 1


def _embedding_candidates(layer: keras.layers.Embedding) -> list[Candidate]:
    """The table (and an untied `ReversibleEmbedding`'s output table).

    A position embedding (a layer named `*position*`, as ViT's) is pruned
    only on request: it holds one vector per position, not a vocabulary.
    """
    default = not _POSITION.search(layer.name)
    found = [_attribute(layer, "embeddings", default)]
    reverse = getattr(layer, "reverse_embeddings", None)
    if isinstance(reverse, keras.Variable):
        found.append(Candidate(reverse.name, reverse, default))
    return found


def _defined_by_keras(layer: keras.layers.Layer) -> bool:
    return type(layer).__module__.split(".")[0] == "keras"


def _known_class(layer: keras.layers.Layer) -> bool:
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    kinds = tuple(cls for cls, _, _ in _KERNEL_LAYERS) + _RNN_CELLS
    kinds += (
        keras.layers.Embedding,
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
