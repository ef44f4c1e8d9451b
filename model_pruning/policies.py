"""Pruning policies: which layers of a model to prune, checked up front.

A `PruningPolicy` is tfmot's `pruning_policy=` argument of
`prune_low_magnitude`: `ensure_model_supports_pruning(model)` runs before
anything is copied and raises when the model does not fit the policy, and
`allow_pruning(layer)` then chooses, layer by layer, which layers are
wrapped, and `layer_hparams(layer, hparams)` may set or check how each is
pruned. `PruneForLatencyOnXNNPack` keeps tfmot's rules for XNNPACK's sparse
inference of convolutional networks (Elsen et al. 2019, "Fast Sparse
ConvNets"); `PruneForLatencyOnLiteRT` prunes what LiteRT's sparse
fully-connected kernel runs, in the blocks it needs.
"""

import abc
import re
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import keras

from model_pruning import prunable
from model_pruning._compat import node_making
from model_pruning.hparams import PruningHParams
from model_pruning.litert import FLOAT32_BLOCK_HEIGHT
from model_pruning.litert import INT8_BLOCK_HEIGHT
from model_pruning.litert import fully_connected_rows


class PruningPolicy(abc.ABC):
    """Base class of the policies that choose which layers to prune.

    Subclass it and implement both methods; pass an instance as
    `prune_low_magnitude(model, pruning_policy=...)`. It combines with
    `policy=` and `layer_args`: a layer is pruned only when the policy
    allows it.
    """

    @abc.abstractmethod
    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """Returns whether `layer` may be wrapped for pruning."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Checks `model` as a whole before it is pruned.

        Raises:
            ValueError: If the model does not fit the policy.
        """

    def layer_hparams(
        self, layer: keras.layers.Layer, hparams: PruningHParams
    ) -> PruningHParams:
        """Returns the hparams an allowed `layer` is pruned with.

        `hparams` are those the arguments of `prune_low_magnitude` (and
        `layer_args` or `policy`) give the layer. The default keeps them;
        a policy may set fields (such as the block size) or raise when
        they do not fit it.

        Raises:
            ValueError: If `hparams` do not fit the policy for `layer`.
        """
        del layer
        return hparams

    def excluded_weights(self, layer: keras.layers.Layer) -> list[str]:
        """Returns regexes of weights of an allowed `layer` to leave dense.

        They are added to `exclude` for this layer. The default leaves
        none out; a policy that allows a layer for some of its weights (a
        KerasHub block wrapped whole) names the others here.
        """
        del layer
        return []


_LITERT_QUANTIZE = (None, "int8")


class PruneForLatencyOnLiteRT(PruningPolicy):
    """Prunes the layers LiteRT runs with its sparse fully-connected kernel.

    LiteRT (TFLite) runs a fully-connected weight with its sparse kernel
    only when the zeros come in blocks of consecutive inputs of one output:
    4 for float32 weights, 16 for int8 (`export_tflite(...,
    quantize="int8")`). Any other pruned weight is rebuilt dense when the
    model loads and runs at dense speed. The policy prunes the layers whose
    prunable weights convert to `FULLY_CONNECTED` weights: `Dense`,
    `EinsumDense` (a kernel of rank 3 or more is blocked as the matrix its
    equation multiplies with), `MultiHeadAttention` (its query, key,
    value and output projections) and the kernels of `LSTM`, `GRU` and
    `SimpleRNN` cells, and only those whose input sizes the block height
    divides. It gives them `block_size=(4, 1)` (`(16, 1)` with
    `quantize="int8"`) when the arguments leave the block size at its
    default `(1, 1)`. A block height that is a multiple of that (and any
    block width) runs sparse too and is kept. Layers it does not prune
    (convolutions, embeddings) stay dense; in a layer
    pruned whole (a KerasHub backbone), it prunes only the weights LiteRT
    can run sparse and leaves the rest out (`excluded_weights`).

    Args:
        quantize: `None` for a float32 export, `"int8"` for an int8 one.
            Defaults to `None`.

    Raises:
        ValueError: If `quantize` is not `None` or `"int8"`.

    Example:

    ```python
    pruned = prune_low_magnitude(
        model, pruning_schedule=schedule,
        pruning_policy=PruneForLatencyOnLiteRT(),
    )
    ...  # fit with UpdatePruningStep
    export_tflite(pruned, "model.tflite")  # Dense layers run sparse
    ```
    """

    def __init__(self, quantize: str | None = None):
        if quantize not in _LITERT_QUANTIZE:
            raise ValueError(
                f"`quantize` must be one of {_LITERT_QUANTIZE}. "
                f"Received: quantize={quantize!r}"
            )
        self.quantize = quantize

    @property
    def block_height(self) -> int:
        """Inputs per block: 4 for float32, 16 for int8."""
        return INT8_BLOCK_HEIGHT if self.quantize else FLOAT32_BLOCK_HEIGHT

    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """Allows a layer with a prunable weight that converts to a
        `FULLY_CONNECTED` weight whose input size the block height divides
        (judged by class when the layer is not built)."""
        layer = _unwrapped(layer)
        if not layer.built:
            return _converts_to_fully_connected(layer)
        return bool(self._sparse_weights(layer)[0])

    def excluded_weights(self, layer: keras.layers.Layer) -> list[str]:
        """Leaves out the weights LiteRT would not run sparse (embeddings,
        convolutions, input sizes the block height does not divide)."""
        layer = _unwrapped(layer)
        if not layer.built:
            return []
        return [
            f"^{re.escape(name)}$" for name in self._sparse_weights(layer)[1]
        ]

    def _sparse_weights(
        self, layer: keras.layers.Layer
    ) -> tuple[list[str], list[str]]:
        """Names of the default-pruned weights of a built `layer` LiteRT
        can run sparse, and of the others."""
        owners = prunable.owners(layer)
        runs, others = [], []
        for candidate in prunable.inventory(layer).candidates:
            if not candidate.default:
                continue
            rows = fully_connected_rows(
                owners.get(id(candidate.variable)), candidate.variable
            )
            name = f"{layer.name}/{candidate.path}"
            fits = rows is not None and rows % self.block_height == 0
            (runs if fits else others).append(name)
        return runs, others

    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Checks that `model` has a layer LiteRT can run sparse.

        Raises:
            ValueError: If no layer of `model` (nested Sequential and
                Functional models included) is one `allow_pruning` allows.
        """
        layers = _graph_layers(model)
        if not any(self.allow_pruning(layer) for layer in layers):
            classes = sorted({type(layer).__name__ for layer in layers})
            raise ValueError(
                f"Model {model.name!r} has no layer LiteRT runs with its "
                "sparse fully-connected kernel: the "
                f"{type(self).__name__} pruning policy prunes `Dense`, "
                "`EinsumDense` and `MultiHeadAttention` layers whose input "
                f"sizes are multiples of {self.block_height}, and would prune "
                "nothing. Received: "
                f"layers of classes {classes}"
            )

    def layer_hparams(
        self, layer: keras.layers.Layer, hparams: PruningHParams
    ) -> PruningHParams:
        """Sets blocks of `block_height` inputs, or checks those given.

        Raises:
            ValueError: If the hparams ask for N:M sparsity or a block
                size LiteRT cannot run sparse for this layer's kernel.
        """
        height = self.block_height
        if hparams.sparsity_m_by_n:
            raise ValueError(
                f"Layer {layer.name!r} ({type(_unwrapped(layer)).__name__}) "
                f"asks for N:M sparsity, which LiteRT's sparse kernel cannot "
                f"run; the {type(self).__name__} policy prunes in blocks of "
                f"{height} inputs. Received: "
                f"sparsity_m_by_n={hparams.sparsity_m_by_n!r}"
            )
        source = _unwrapped(layer)
        names = (
            self._sparse_weights(source)[0]
            if source.built
            else [f"{layer.name}/kernel"]
        )
        for name in names:
            hparams = self._blocked(layer, hparams, name)
        return hparams

    def _blocked(
        self, layer: keras.layers.Layer, hparams: PruningHParams, name: str
    ) -> PruningHParams:
        """`hparams` with weight `name` in blocks LiteRT runs, or raises."""
        height = self.block_height
        kind = "int8" if self.quantize else "float32"
        block = tuple(hparams.block_dims(name))
        if block[0] > 0 and block[0] % height == 0:
            return hparams
        if block == (1, 1):
            # The default block, unless a `block_dims_map` entry names it.
            blocked = hparams.override(block_height=height, block_width=1)
            if blocked.block_dims(name) == (height, 1):
                return blocked
        raise ValueError(
            f"Layer {layer.name!r} ({type(_unwrapped(layer)).__name__}) asks "
            f"for blocks LiteRT cannot run sparse for {name!r}: its {kind} "
            f"sparse fully-connected kernel needs blocks of {height} "
            f"consecutive inputs (block_size=({height}, 1), or a height "
            f"that is a multiple of {height}). Received: block_size={block}"
        )


def _converts_to_fully_connected(layer: keras.layers.Layer) -> bool:
    """An unbuilt layer LiteRT computes with `FULLY_CONNECTED` only:
    `Dense`, `MultiHeadAttention`, a recurrent layer (`LSTM`, `GRU`,
    `SimpleRNN`), or `EinsumDense` whose kernel has rank 2 or sums over its
    leading axes."""
    if isinstance(
        layer,
        (
            keras.layers.Dense,
            keras.layers.MultiHeadAttention,
            keras.layers.LSTM,
            keras.layers.GRU,
            keras.layers.SimpleRNN,
        ),
    ):
        return True
    if not isinstance(layer, keras.layers.EinsumDense):
        return False
    operands, output = layer.equation.replace(".", "").split("->")
    inputs, kernel = operands.split(",")
    summed = [axis for axis in kernel if axis in inputs and axis not in output]
    return len(kernel) == 2 or (
        bool(summed) and set(kernel[: len(summed)]) == set(summed)
    )


def _graph_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a graph model, nested graph models opened."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model) and (
            isinstance(layer, keras.Sequential) or _is_functional(layer)
        ):
            found.extend(_graph_layers(layer))
        else:
            found.append(layer)
    return found


_SPARSE_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
# Functional-graph operations that are not layers (`x + y`, `ops.copy`).
_SPARSE_OPERATIONS = ("Add", "Subtract", "Multiply", "Copy")


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 `Conv2D` layers of a network XNNPACK runs sparse.

    XNNPACK's sparse inference covers a subgraph that starts at a 3x3,
    stride-2, `valid` `Conv2D` over 3 input channels behind a
    `ZeroPadding2D` of 1, and ends at a `GlobalAveragePooling2D`; between
    them every layer must be one XNNPACK runs in that mode (1x1 stride-1
    convolutions, 3x3 and 5x5 depthwise convolutions with their padding,
    batch normalization over channels, ReLU-like activations, `Add`,
    `Multiply`, `Dropout`, bilinear upsampling). The policy checks that in
    every input and output branch, then prunes the 1x1 convolutions.

    Example:

    ```python
    pruned = prune_low_magnitude(
        mobilenet, pruning_policy=PruneForLatencyOnXNNPack()
    )
    ```
    """

    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """Allows only `Conv2D` layers with a 1x1 kernel."""
        layer = _unwrapped(layer)
        return isinstance(layer, keras.layers.Conv2D) and tuple(
            layer.kernel_size
        ) == (1, 1)

    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Checks that `model` has XNNPACK's sparse subgraph in every branch.

        Raises:
            ValueError: If `model` is subclassed or unbuilt, has a branch
                without the starting convolution or the final pooling, or
                holds a layer XNNPACK cannot run sparse between them.
        """
        # The messages are tfmot's, word for word: ported code may match
        # on them.
        if not isinstance(model, keras.Sequential) and not _is_functional(
            model
        ):
            raise ValueError("Subclassed models are not supported currently.")
        if not model.built:
            raise ValueError("Unbuilt models are not supported currently.")
        graph = _Graph(model)
        starts = graph.search(
            graph.input_consumers(),
            lambda op: _starts_subgraph(op, graph),
            graph.consumers,
        )
        if not starts:
            raise ValueError(
                "Could not find `Conv2D 3x3` layer with stride 2x2, "
                "`input filters == 3` and `VALID` padding and preceding "
                "`ZeroPadding2D` with `padding == 1` in all input branches of "
                "the model"
            )
        ends = graph.search(
            graph.output_producers(),
            lambda op: isinstance(op, keras.layers.GlobalAveragePooling2D),
            graph.producers,
        )
        if not ends:
            raise ValueError(
                "Could not find a `GlobalAveragePooling2D` layer in all output "
                "branches"
            )

        def check(op: Any) -> bool:
            if op not in ends and not self._runs_sparse(op, graph):
                name = _unwrapped(op).__class__.__name__
                raise ValueError(
                    f"Layer {name} is not supported for the "
                    f"{type(self).__name__} pruning policy"
                )
            return op in ends

        following = [c for start in starts for c in graph.consumers(start)]
        graph.search(following, check, graph.consumers)

    def _runs_sparse(self, op: Any, graph: "_Graph") -> bool:
        """Mirrors XNNPACK's check of the operators it runs sparse."""
        if not isinstance(op, keras.layers.Layer):
            return type(op).__name__ in _SPARSE_OPERATIONS
        layer = _unwrapped(op)
        if isinstance(
            layer,
            (
                keras.layers.Add,
                keras.layers.Multiply,
                keras.layers.ZeroPadding2D,
                keras.layers.ReLU,
                keras.layers.LeakyReLU,
                keras.layers.ELU,
                keras.layers.Dropout,
            ),
        ):
            return True
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return _depthwise_runs_sparse(layer, graph.producers(op))
        if isinstance(layer, keras.layers.Conv2D):
            return (
                layer.groups == 1
                and tuple(layer.dilation_rate) == (1, 1)
                and tuple(layer.kernel_size) == (1, 1)
                and tuple(layer.strides) == (1, 1)
            )
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return bool(layer.keepdims)
        if isinstance(layer, keras.layers.BatchNormalization):
            return layer.axis in (3, -1)
        if isinstance(layer, keras.layers.UpSampling2D):
            return layer.interpolation == "bilinear"
        if isinstance(layer, keras.layers.Activation):
            name = getattr(layer.activation, "__name__", "")
            return name in _SPARSE_ACTIVATIONS
        return False


def _starts_subgraph(op: Any, graph: "_Graph") -> bool:
    """A 3x3, stride-2, `valid` `Conv2D` over 3 channels behind a
    `ZeroPadding2D` of 1: where XNNPACK's sparse subgraph starts."""
    layer = _unwrapped(op)
    if type(layer) is not keras.layers.Conv2D or not layer.built:
        return False
    producers = graph.producers(op)
    return (
        tuple(layer.kernel.shape[:3]) == (3, 3, 3)
        and tuple(layer.strides) == (2, 2)
        and layer.padding == "valid"
        and len(producers) == 1
        and _is_zero_padding(producers[0], 1)
    )


def _depthwise_runs_sparse(
    layer: keras.layers.DepthwiseConv2D, producers: list[Any]
) -> bool:
    """3x3 or 5x5, stride 1 `same`, or stride 1 or 2 `valid` behind a
    `ZeroPadding2D` of 1 (3x3) or 2 (5x5)."""
    if layer.depth_multiplier != 1 or tuple(layer.dilation_rate) != (1, 1):
        return False
    kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
    if kernel not in ((3, 3), (5, 5)):
        return False
    if layer.padding == "same":
        return strides == (1, 1)
    padded = len(producers) == 1 and _is_zero_padding(
        producers[0], kernel[0] // 2
    )
    return layer.padding == "valid" and strides in ((1, 1), (2, 2)) and padded


def _is_zero_padding(op: Any, amount: int) -> bool:
    layer = _unwrapped(op)
    return isinstance(layer, keras.layers.ZeroPadding2D) and tuple(
        map(tuple, layer.padding)
    ) == ((amount, amount), (amount, amount))


def _unwrapped(op: Any) -> Any:
    """The layer a pruning wrapper holds (judged by what it wraps)."""
    inner = getattr(op, "layer", None)
    if isinstance(inner, keras.layers.Layer) and isinstance(
        op, keras.layers.Wrapper
    ):
        return inner
    return op


def _is_functional(model: keras.Model) -> bool:
    """A Functional model or subclass (its layer graph is known)."""
    return isinstance(model, keras.Model) and hasattr(model, "operations")


class _Graph:
    """Producers and consumers of the layers and operations of a built
    graph model (Sequential or Functional).

    Walked back from the model's outputs through the nodes of this model
    only, so a layer shared with another model (`clone_model` with
    `clone_function=lambda layer: layer`) is read as this model calls it.
    A nested `Sequential` is read as the chain of its layers.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._producers: dict[Any, list[Any]] = {}
        self._consumers: dict[Any, list[Any]] = {}
        self._input_consumers: list[Any] = []
        self._output_producers: list[Any] = []
        exits: dict[tuple[int, int], Any] = {}
        pending = list(keras.tree.flatten(model.outputs))
        nodes = []
        while pending:
            operation, node = node_making(pending.pop())
            key = (id(operation), id(node))
            if isinstance(operation, keras.layers.InputLayer) or key in exits:
                continue
            chain = _chain(operation)
            exits[key] = chain[-1]
            for before, after in zip(chain, chain[1:], strict=False):
                self._link(before, after)
            nodes.append((chain[0], node))
            pending.extend(keras.tree.flatten(node.input_tensors))
        for entry, node in nodes:
            for tensor in keras.tree.flatten(node.input_tensors):
                operation, made_in = node_making(tensor)
                if isinstance(operation, keras.layers.InputLayer):
                    _append(self._input_consumers, entry)
                else:
                    self._link(exits[(id(operation), id(made_in))], entry)
        for tensor in keras.tree.flatten(model.outputs):
            operation, node = node_making(tensor)
            if not isinstance(operation, keras.layers.InputLayer):
                _append(
                    self._output_producers, exits[(id(operation), id(node))]
                )

    def _link(self, before: Any, after: Any) -> None:
        _append(self._consumers.setdefault(before, []), after)
        _append(self._producers.setdefault(after, []), before)

    def producers(self, op: Any) -> list[Any]:
        return list(self._producers.get(op, []))

    def consumers(self, op: Any) -> list[Any]:
        return list(self._consumers.get(op, []))

    def input_consumers(self) -> list[Any]:
        return list(self._input_consumers)

    def output_producers(self) -> list[Any]:
        return list(self._output_producers)

    @staticmethod
    def search(
        sources: Iterable[Any],
        stop: Callable[[Any], bool],
        next_of: Callable[[Any], list[Any]],
    ) -> set[Any]:
        """Walks from `sources` until `stop`; returns where it stopped, or
        an empty set when a branch ends before stopping."""
        to_visit, seen, found = list(sources), set(), set()
        seen.update(to_visit)
        while to_visit:
            op = to_visit.pop()
            if stop(op):
                found.add(op)
                continue
            following = next_of(op)
            if not following:
                return set()
            for nxt in following:
                if nxt not in seen:
                    seen.add(nxt)
                    to_visit.append(nxt)
        return found


def _chain(operation: Any) -> list[Any]:
    """A nested `Sequential` as the list of its layers; anything else as
    itself."""
    if isinstance(operation, keras.Sequential):
        return [
            inner
            for layer in operation.layers
            if not isinstance(layer, keras.layers.InputLayer)
            for inner in _chain(layer)
        ] or [operation]
    return [operation]


def _append(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)
