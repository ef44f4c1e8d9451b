"""Pruning policies: which layers of a model to prune, checked up front.

A `PruningPolicy` is tfmot's `pruning_policy=` argument of
`prune_low_magnitude`: `ensure_model_supports_pruning(model)` runs before
anything is copied and raises when the model does not fit the policy, and
`allow_pruning(layer)` then chooses, layer by layer, which layers are
wrapped. `PruneForLatencyOnXNNPack` keeps tfmot's rules for XNNPACK's sparse
inference of convolutional networks (Elsen et al. 2019, "Fast Sparse
ConvNets").
"""

import abc
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import keras

from model_pruning._compat import node_making


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
