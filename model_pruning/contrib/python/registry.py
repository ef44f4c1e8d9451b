"""Where contrib's pruned weights are recorded: graph collections or a registry.

`tf.contrib.model_pruning` recorded every masked weight in four index-aligned
graph collections: `'kernel'` (the weight), `'masks'`, `'thresholds'` and
`'masked_weights'` (the `mask * weight` tensor). The i-th entry of each
belongs to the same weight.

Two modes, chosen when a weight is registered and when it is read:

- **Graph mode** (inside `tf.compat.v1.Graph().as_default()`, where
  `tf.compat.v1.executing_eagerly_outside_functions()` is `False`): the real
  `tf.compat.v1` collections of the default graph, exactly as contrib. The
  collections hold `tf.Variable`s and the masked-weight tensor built when the
  weight was registered; `strip_pruning_vars_fn` finds that tensor's node by
  name.
- **TF2 mode** (eager execution and `tf.function`): a `FuncGraph` forgets its
  collections, so a `PruningRegistry` plays their role. It holds the same
  aligned lists (weight, mask, threshold) but no masked-weight tensor: a
  tensor computed once would be stale in eager mode, so `get_masked_weights()`
  computes `mask * weight` when it is called. Registries nest like graphs:
  `with PruningRegistry().as_default(): ...` isolates a model (tests, several
  models in one process); the process-wide default registry is used
  otherwise. A registry keeps its variables alive until `clear()`.
"""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any
from typing import NamedTuple

import keras
import tensorflow as tf

from model_pruning import mask as mask_lib

MASK_COLLECTION = "masks"
"""Collection of the mask variables (ones, not trainable)."""

THRESHOLD_COLLECTION = "thresholds"
"""Collection of the scalar threshold variables (zeros, not trainable)."""

MASKED_WEIGHT_COLLECTION = "masked_weights"
"""Collection of the `mask * weight` tensors (graph mode)."""

WEIGHT_COLLECTION = "kernel"
"""Collection of the raw, unmasked weights."""

MASKED_WEIGHT_NAME = "weights/masked_weight"
"""Op name of the masked weight; `strip_pruning_vars_fn` looks for it."""


class RegisteredWeight(NamedTuple):
    """One registered weight and its pruning state.

    Attributes:
        name: The weight's name, matched by `weight_sparsity_map` and
            `block_dims_map` (`re.search`): its op name in graph mode
            (`"conv1/weights"`), a Keras variable's `path`
            (`"masked_conv2d/kernel"`) or a `tf.Variable`'s name without
            `":0"` in TF2 mode.
        weight: The weight (a variable or tensor).
        mask: Its mask variable.
        threshold: Its threshold variable.
        masked_weight: The `mask * weight` tensor in graph mode; `None` in
            TF2 mode, where it is computed when read.
    """

    name: str
    weight: Any
    mask: Any
    threshold: Any
    masked_weight: Any


def in_graph_mode() -> bool:
    """Returns whether contrib's graph collections are in use.

    `True` while building a `tf.compat.v1` graph (also inside a
    `tf.function` traced from one); `False` in eager execution and in a
    `tf.function` called eagerly.
    """
    return not tf.compat.v1.executing_eagerly_outside_functions()


class PruningRegistry:
    """TF2 stand-in for contrib's four graph collections.

    Entries are kept in registration order and deduplicated on the weight
    object: registering the same variable again (an RNN cell called once per
    time step, a layer called twice) returns the existing entry.
    `last_mask_update_step` variables are shared here by spec name, as
    contrib shared them through `variable_scope` reuse.

    Example:

    ```python
    with PruningRegistry().as_default():
        masked = apply_mask(kernel, "dense1")
        pruning = Pruning(spec, global_step=optimizer.iterations)
    ```
    """

    def __init__(self) -> None:
        self._entries: list[RegisteredWeight] = []
        self._by_weight: dict[int, RegisteredWeight] = {}
        self._step_variables: dict[str, tf.Variable] = {}
        self._layers: dict[str, Any] = {}
        self._version = 0

    @property
    def entries(self) -> tuple[RegisteredWeight, ...]:
        """The registered weights, in registration order."""
        return tuple(self._entries)

    @property
    def version(self) -> int:
        """Changes whenever an entry is added or the registry is cleared."""
        return self._version

    def lookup(self, weight: Any) -> RegisteredWeight | None:
        """Returns the entry of `weight` (by identity), or `None`."""
        entry = self._by_weight.get(id(weight))
        if entry is not None and entry.weight is weight:
            return entry
        return None

    def register(self, entry: RegisteredWeight) -> RegisteredWeight:
        """Adds `entry` unless its weight is registered; returns the entry
        that is registered for that weight."""
        existing = self.lookup(entry.weight)
        if existing is not None:
            return existing
        self._entries.append(entry)
        self._by_weight[id(entry.weight)] = entry
        self._version += 1
        return entry

    def last_update_step(self, name: str) -> tf.Variable:
        """Returns the int32 `<name>/last_mask_update_step` variable, created
        (zero, not trainable) on first use and shared afterwards."""
        variable = self._step_variables.get(name)
        if variable is None:
            with tf.init_scope():
                variable = tf.Variable(
                    0,
                    dtype=tf.int32,
                    trainable=False,
                    name=f"{name}/last_mask_update_step",
                )
            self._step_variables[name] = variable
        return variable

    @property
    def named_layers(self) -> dict[str, Any]:
        """Layers made by `masked_conv2d` / `masked_fully_connected`, by
        scope, for `reuse=True`."""
        return self._layers

    def clear(self) -> None:
        """Forgets every entry, step variable and cached layer."""
        self._entries = []
        self._by_weight = {}
        self._step_variables = {}
        self._layers = {}
        self._version += 1

    @contextlib.contextmanager
    def as_default(self) -> Iterator["PruningRegistry"]:
        """Makes this registry the default one inside the `with` block."""
        _STACK.stack.append(self)
        try:
            yield self
        finally:
            _STACK.stack.pop()


class _RegistryStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[PruningRegistry] = []


_STACK = _RegistryStack()
_GLOBAL_REGISTRY = PruningRegistry()


def get_default_registry() -> PruningRegistry:
    """Returns the registry used in TF2 mode: the innermost one entered with
    `as_default()`, else the process-wide one."""
    return _STACK.stack[-1] if _STACK.stack else _GLOBAL_REGISTRY


def clear_registry() -> None:
    """Clears the default TF2 registry (graph collections are untouched)."""
    get_default_registry().clear()


class VariableView:
    """A variable (or `PartitionedVariable`) seen as one tensor by the
    library's mask math.

    While a `tf.compat.v1` graph is built, `tensor != 0` compares objects
    (`True`), not elements; this view makes `!=` and `==` element-wise in
    every mode, for any math that writes them. A `PartitionedVariable` reads
    as its concatenated shards and is assigned shard by shard (contrib's
    `partitioned_variable_assign`), so the threshold of a partitioned
    weight is global across its shards.
    """

    def __init__(self, variable: Any):
        self._variable = variable

    @property
    def shape(self) -> tf.TensorShape:
        return tf.TensorShape(self._variable.shape)

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self._variable.dtype)

    def value(self) -> tf.Tensor:
        if _is_partitioned(self._variable):
            return self._variable.as_tensor()
        return tf.convert_to_tensor(self._variable)

    def assign(self, value: Any) -> Any:
        return self._variable.assign(value)

    def __ne__(self, other: Any) -> tf.Tensor:
        return tf.not_equal(self.value(), other)

    def __eq__(self, other: Any) -> tf.Tensor:
        return tf.equal(self.value(), other)

    __hash__ = object.__hash__


def _convert_view(view, dtype=None, name=None, as_ref=False):
    del as_ref
    return tf.convert_to_tensor(view.value(), dtype=dtype, name=name)


tf.register_tensor_conversion_function(VariableView, _convert_view)


def masked_weight(mask: Any, weight: Any) -> tf.Tensor:
    """Returns `weight` where `mask` is 1 and `+0.0` where it is 0, as a
    tensor named `weights/masked_weight` in the current name scope.

    The product is `model_pruning.mask.zero_pruned`: the values of
    `mask * weight`, with pruned entries `+0.0` rather than `-0.0`.
    """
    mask_tensor = VariableView(tf.convert_to_tensor(mask))
    weight_tensor = tf.convert_to_tensor(weight)
    return tf.identity(
        mask_lib.zero_pruned(weight_tensor, mask_tensor),
        name=MASKED_WEIGHT_NAME,
    )


def tf_variable(variable: Any) -> Any:
    """Returns the `tf.Variable` behind a Keras variable (else `variable`)."""
    if isinstance(variable, keras.Variable):
        value = variable.value
        if isinstance(value, tf.Variable):
            return value
    return variable


def register_in_graph(entry: RegisteredWeight) -> RegisteredWeight:
    """Appends `entry` to the default graph's four collections unless its
    mask is there already (contrib's rule); returns the registered entry."""
    masks = tf.compat.v1.get_collection_ref(MASK_COLLECTION)
    for index, mask in enumerate(masks):
        if mask is entry.mask:
            return graph_entries()[index]
    tf.compat.v1.add_to_collection(THRESHOLD_COLLECTION, entry.threshold)
    tf.compat.v1.add_to_collection(MASK_COLLECTION, entry.mask)
    tf.compat.v1.add_to_collection(
        MASKED_WEIGHT_COLLECTION, entry.masked_weight
    )
    tf.compat.v1.add_to_collection(WEIGHT_COLLECTION, entry.weight)
    return entry


def graph_entries() -> list[RegisteredWeight]:
    """Returns the default graph's collections as aligned entries.

    Raises:
        ValueError: If the four collections differ in length.
    """
    weights = tf.compat.v1.get_collection(WEIGHT_COLLECTION)
    masks = tf.compat.v1.get_collection(MASK_COLLECTION)
    thresholds = tf.compat.v1.get_collection(THRESHOLD_COLLECTION)
    masked = tf.compat.v1.get_collection(MASKED_WEIGHT_COLLECTION)
    if not len(weights) == len(masks) == len(thresholds) == len(masked):
        raise ValueError(
            "The pruning collections are not aligned: "
            f"{len(weights)} weights ('{WEIGHT_COLLECTION}'), {len(masks)} "
            f"masks, {len(thresholds)} thresholds and {len(masked)} masked "
            "weights. Register weights only through apply_mask or the "
            "masked layers."
        )
    return [
        RegisteredWeight(weight_name(w), w, m, t, mw)
        for w, m, t, mw in zip(weights, masks, thresholds, masked, strict=True)
    ]


def current_entries() -> list[RegisteredWeight]:
    """Returns the registered weights of the current mode, aligned."""
    if in_graph_mode():
        return graph_entries()
    return list(get_default_registry().entries)


def register(
    weight: Any, mask: Any, threshold: Any, name: str | None = None
) -> RegisteredWeight:
    """Registers a weight and its pruning variables in the current mode.

    In graph mode the masked weight is built here (one
    `weights/masked_weight` node) and added to the collections with the
    other three; in TF2 mode the entry goes to the default registry.

    Args:
        weight: The weight variable or tensor.
        mask: Its mask variable, the weight's shape and dtype.
        threshold: Its scalar threshold variable.
        name: The name matched by `weight_sparsity_map`. Defaults to
            `None`: derived from `weight`.

    Returns:
        The `RegisteredWeight` now registered for `weight` (an earlier one if
        the weight or mask was registered before).
    """
    if in_graph_mode():
        weight, mask, threshold = (
            tf_variable(weight),
            tf_variable(mask),
            tf_variable(threshold),
        )
        entry = RegisteredWeight(
            name or weight_name(weight),
            weight,
            mask,
            threshold,
            masked_weight(mask, weight),
        )
        return register_in_graph(entry)
    entry = RegisteredWeight(
        name or weight_name(weight), weight, mask, threshold, None
    )
    return get_default_registry().register(entry)


def weight_name(weight: Any) -> str:
    """Returns the name `weight_sparsity_map` matches for `weight`."""
    if isinstance(weight, keras.Variable):
        return weight.path
    if isinstance(weight, tf.Variable) or _is_partitioned(weight):
        name = weight.name
        return name[:-2] if name.endswith(":0") else name
    op = getattr(weight, "op", None)
    if op is not None and not tf.executing_eagerly():
        try:
            return op.name
        except AttributeError:
            pass
    return "weights"


def _is_partitioned(value: Any) -> bool:
    return type(value).__name__ == "PartitionedVariable"
