"""contrib's `python/pruning.py`: `apply_mask`, the getters and `Pruning`.

Code written for `tf.contrib.model_pruning.python.pruning` runs with its
import changed:

```python
from model_pruning.contrib.python import pruning

masked = pruning.apply_mask(weights, scope)
hparams = pruning.get_pruning_hparams().parse(FLAGS.pruning_hparams)
p = pruning.Pruning(hparams, global_step=global_step)
mask_update_op = p.conditional_mask_update_op()
```

The weights `apply_mask` and the masked layers register are recorded in
`tf.compat.v1` graph collections while a v1 graph is being built, and in a
`registry.PruningRegistry` in TF2 (eager and `tf.function`); see
`model_pruning.contrib.python.registry`.

The math is the core's (`schedule.target_sparsity`, eq. (1), and
`mask_update.update_when_due`), the path `model_pruning.Pruning` runs too.
Where it differs from contrib: masks never regrow (contrib recomputed them
from the raw weights), and one extra update happens at the first step at or
after `end_pruning_step` when the regular updates stepped over it.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import numbers
from typing import Any

import keras
import tensorflow as tf

from model_pruning import mask_update
from model_pruning import schedule
from model_pruning.backends import TENSORFLOW_ONLY
from model_pruning.backends import check_backend
from model_pruning.contrib.python import registry
from model_pruning.contrib.python.registry import MASK_COLLECTION
from model_pruning.contrib.python.registry import MASKED_WEIGHT_COLLECTION
from model_pruning.contrib.python.registry import MASKED_WEIGHT_NAME
from model_pruning.contrib.python.registry import THRESHOLD_COLLECTION
from model_pruning.contrib.python.registry import WEIGHT_COLLECTION
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import get_pruning_hparams as _library_hparams
from model_pruning.wrapper import PrunedWeight

_MASK_COLLECTION = MASK_COLLECTION
_THRESHOLD_COLLECTION = THRESHOLD_COLLECTION
_MASKED_WEIGHT_COLLECTION = MASKED_WEIGHT_COLLECTION
_WEIGHT_COLLECTION = WEIGHT_COLLECTION
_MASKED_WEIGHT_NAME = MASKED_WEIGHT_NAME


class HParams:
    """contrib's mutable hparams object, over the library's `PruningHParams`.

    `tf.contrib.training.HParams` was mutable: `parse()` changed it in place
    (and returned it), and fields could be assigned
    (`p._spec.threshold_decay = 0.0`). This wrapper keeps those semantics;
    every change is validated by `PruningHParams` (contrib's checks, raised
    at once) and the current values are the frozen `hparams`.

    Args:
        hparams: The initial `PruningHParams`. Defaults to `None`: contrib's
            defaults.

    Raises:
        TypeError: If `hparams` is not a `PruningHParams`.

    Example:

    >>> spec = get_pruning_hparams()
    >>> _ = spec.parse("target_sparsity=0.9")
    >>> spec.target_sparsity
    0.9
    """

    def __init__(self, hparams: PruningHParams | None = None):
        if hparams is None:
            hparams = _library_hparams()
        if not isinstance(hparams, PruningHParams):
            raise TypeError(
                "`hparams` must be a PruningHParams. "
                f"Received: hparams={hparams!r}"
            )
        object.__setattr__(self, "_hparams", hparams)

    @property
    def hparams(self) -> PruningHParams:
        """The current values, as a frozen `PruningHParams`."""
        return self._hparams

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_hparams":
            raise AttributeError(name)
        return getattr(self._hparams, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.set_hparam(name, value)

    def set_hparam(self, name: str, value: Any) -> None:
        """Sets one field, validated.

        Raises:
            ValueError: If `name` is unknown or the result is invalid.
        """
        object.__setattr__(
            self, "_hparams", self._hparams.override(**{name: value})
        )

    def parse(self, values: str) -> "HParams":
        """Sets the fields in `values` (`"name=value,list=[a,b]"`) in place.

        Returns:
            This object, as contrib's `HParams.parse`.

        Raises:
            ValueError: If a name is unknown, a value is malformed or the
                result fails validation; then nothing is changed.
        """
        object.__setattr__(self, "_hparams", self._hparams.parse(values))
        return self

    def override_from_dict(self, values_dict: dict[str, Any]) -> "HParams":
        """Sets the fields in `values_dict` in place; returns this object."""
        if not isinstance(values_dict, dict):
            raise TypeError(
                "`values_dict` must be a dict. "
                f"Received: values_dict={values_dict!r}"
            )
        object.__setattr__(
            self, "_hparams", self._hparams.override(**values_dict)
        )
        return self

    def values(self) -> dict[str, Any]:
        """Returns the fields as a dict."""
        return self._hparams.values()

    def to_json(self, indent: int | None = None, **_: Any) -> str:
        """Returns the fields as JSON, keys sorted."""
        return json.dumps(self.values(), indent=indent, sort_keys=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HParams):
            return self._hparams == other._hparams
        return self._hparams == other

    __hash__ = None

    def __repr__(self) -> str:
        return f"HParams({self._hparams.to_json()})"


def get_pruning_hparams() -> HParams:
    """Returns contrib's default pruning hyperparameters, mutable.

    The fields, defaults and validation are `model_pruning.PruningHParams`'
    (contrib's names and defaults); see its docstring for each one.

    Returns:
        An `HParams` holding `model_pruning.get_pruning_hparams()`.

    Example:

    >>> hparams = get_pruning_hparams().parse(
    ...     "name=cifar10_pruning,target_sparsity=0.9")
    >>> hparams.name
    'cifar10_pruning'
    """
    return HParams(_library_hparams())


def _scope_name(scope: Any) -> str:
    if isinstance(scope, str):
        return scope
    if isinstance(scope, tf.compat.v1.VariableScope):
        return scope.name
    raise TypeError(
        "`scope` must be a string or a tf.compat.v1.VariableScope. "
        f"Received: scope={scope!r}"
    )


def _is_weight(x: Any) -> bool:
    return (
        isinstance(x, (tf.Variable, keras.Variable, tf.Tensor))
        or type(x).__name__ == "PartitionedVariable"
    )


def apply_mask(x: Any, scope: Any = "") -> tf.Tensor:
    """Masks a weight: creates its mask and threshold and registers them.

    ```
    mask      = ones(x.shape)      (variable `<scope>/mask`, not trainable)
    threshold = 0                  (variable `<scope>/threshold`)
    returns     mask * x           (pruned entries are +0.0)
    ```

    The weight, mask, threshold and masked weight are registered as one
    entry (contrib's `'kernel'`, `'masks'`, `'thresholds'` and
    `'masked_weights'` collections in graph mode, the default
    `PruningRegistry` in TF2 mode). A weight registered before is not
    registered again, and its mask is reused: an RNN cell can call this once
    per time step.

    In graph mode the variables are made with `tf.compat.v1.get_variable`
    inside `variable_scope(scope)`, as contrib. In TF2 mode they are
    `tf.Variable`s created once per weight (outside any `tf.function`), so
    call `apply_mask` in a layer's `call` and it returns the current
    `mask * x` at every call. Save them with
    `tf.train.Checkpoint(masks=get_masks(), thresholds=get_thresholds())`
    or use the masked layers, whose masks are Keras weights.

    Args:
        x: The weight: a variable (`tf.Variable`, Keras variable,
            `PartitionedVariable`) or a tensor with a fully defined shape.
            In TF2 mode a tensor must be eager (a symbolic tensor of a
            `tf.function` cannot be updated from outside it).
        scope: A variable scope or its name, where the mask and threshold
            are created. Defaults to `""`.

    Returns:
        The masked weight, a tensor of `x`'s shape and dtype.

    Raises:
        TypeError: If `x` is not a variable or tensor, or `scope` is not a
            string or `VariableScope`, or `x` is symbolic in TF2 mode.
        ValueError: If `x`'s shape is not fully defined.

    Example:

    ```python
    with tf.compat.v1.variable_scope("conv1") as scope:
        kernel = tf.compat.v1.get_variable("weights", [5, 5, 3, 64])
        conv = tf.nn.conv2d(images, apply_mask(kernel, scope), 1, "SAME")
    ```
    """
    scope_name = _scope_name(scope)
    if not _is_weight(x):
        raise TypeError(
            "`x` must be a variable or a tensor. "
            f"Received: x={type(x).__name__} {x!r}"
        )
    shape = tf.TensorShape(x.shape)
    if not shape.is_fully_defined():
        raise ValueError(
            "`x` must have a fully defined shape to create its mask. "
            f"Received: x.shape={shape}"
        )
    if registry.in_graph_mode():
        return _apply_mask_in_graph(x, scope)
    return _apply_mask_tf2(x, scope_name, shape)


def _apply_mask_in_graph(x: Any, scope: Any) -> tf.Tensor:
    weight = registry.tf_variable(x)
    for entry in registry.graph_entries():
        if entry.weight is weight:
            return registry.masked_weight(entry.mask, weight)
    dtype = tf.as_dtype(x.dtype).base_dtype
    with tf.compat.v1.variable_scope(scope):
        mask = tf.compat.v1.get_variable(
            "mask",
            x.shape,
            initializer=tf.compat.v1.ones_initializer(),
            trainable=False,
            dtype=dtype,
        )
        threshold = tf.compat.v1.get_variable(
            "threshold",
            [],
            initializer=tf.compat.v1.zeros_initializer(),
            trainable=False,
            dtype=dtype,
        )
    masked = registry.masked_weight(mask, weight)
    registry.register_in_graph(
        registry.RegisteredWeight(
            registry.weight_name(weight), weight, mask, threshold, masked
        )
    )
    return masked


def _apply_mask_tf2(x: Any, scope_name: str, shape: tf.TensorShape) -> Any:
    entry = registry.get_default_registry().lookup(x)
    if entry is None:
        is_variable = isinstance(x, (tf.Variable, keras.Variable))
        if not is_variable and tf.is_symbolic_tensor(x):
            raise TypeError(
                "In TF2 mode `apply_mask` needs a variable or an eager "
                "tensor: a symbolic tensor of a tf.function cannot be "
                "pruned from outside it. Pass the variable itself. "
                f"Received: x={x!r}"
            )
        prefix = f"{scope_name}/" if scope_name else ""
        dtype = tf.as_dtype(x.dtype).base_dtype
        with tf.init_scope():
            mask = tf.Variable(
                tf.ones(shape, dtype), trainable=False, name=f"{prefix}mask"
            )
            threshold = tf.Variable(
                tf.zeros([], dtype), trainable=False, name=f"{prefix}threshold"
            )
        name = registry.weight_name(x) if is_variable else f"{prefix}weights"
        entry = registry.register(x, mask, threshold, name)
    return registry.masked_weight(entry.mask, x)


def get_masked_weights() -> list:
    """Returns the masked weights (`mask * weight`), in registration order.

    Graph mode: the tensors in the `'masked_weights'` collection. TF2 mode:
    each product computed now.
    """
    if registry.in_graph_mode():
        return tf.compat.v1.get_collection(MASKED_WEIGHT_COLLECTION)
    return [
        registry.masked_weight(e.mask, e.weight)
        for e in registry.current_entries()
    ]


def get_masks() -> list:
    """Returns the mask variables, in registration order."""
    if registry.in_graph_mode():
        return tf.compat.v1.get_collection(MASK_COLLECTION)
    return [e.mask for e in registry.current_entries()]


def get_thresholds() -> list:
    """Returns the threshold variables, in registration order."""
    if registry.in_graph_mode():
        return tf.compat.v1.get_collection(THRESHOLD_COLLECTION)
    return [e.threshold for e in registry.current_entries()]


def get_weights() -> list:
    """Returns the raw (unmasked) weights, in registration order."""
    if registry.in_graph_mode():
        return tf.compat.v1.get_collection(WEIGHT_COLLECTION)
    return [e.weight for e in registry.current_entries()]


def get_weight_sparsity() -> list:
    """Returns the fraction of zeros in each mask, as float32 tensors.

    ```
    sparsity_i = zero_fraction(mask_i)
    ```
    """
    return [tf.math.zero_fraction(mask) for mask in get_masks()]


def _check_step(global_step: Any) -> None:
    ok = global_step is None or isinstance(
        global_step, (tf.Variable, keras.Variable, tf.Tensor, numbers.Integral)
    )
    if isinstance(global_step, bool) or not (ok or callable(global_step)):
        raise TypeError(
            "`global_step` must be an integer variable, tensor, int or a "
            f"callable returning one. Received: global_step={global_step!r}"
        )
    if isinstance(global_step, numbers.Integral) and global_step < 0:
        raise ValueError(
            f"`global_step` must be >= 0. Received: global_step={global_step}"
        )


def _check_sparsity(sparsity: Any) -> None:
    if sparsity is None or callable(sparsity):
        return
    if isinstance(sparsity, (tf.Variable, keras.Variable, tf.Tensor)):
        return
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(
            f"`sparsity` must be a number in [0, 1), a scalar variable or "
            f"tensor. Received: sparsity={sparsity!r}"
        )
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"`sparsity` must be in [0, 1). Received: sparsity={sparsity!r}"
        )


def _as_spec(spec: Any) -> HParams:
    if isinstance(spec, HParams):
        return spec
    if spec is None or isinstance(spec, PruningHParams):
        return HParams(spec)
    raise TypeError(
        "`spec` must be the result of get_pruning_hparams() (an HParams) or "
        f"a PruningHParams. Received: spec={spec!r}"
    )


CONTRIB_HPARAMS = (
    "name",
    "begin_pruning_step",
    "end_pruning_step",
    "weight_sparsity_map",
    "block_dims_map",
    "threshold_decay",
    "pruning_frequency",
    "nbins",
    "block_height",
    "block_width",
    "block_pooling_function",
    "initial_sparsity",
    "target_sparsity",
    "sparsity_function_begin_step",
    "sparsity_function_end_step",
    "sparsity_function_exponent",
    "use_tpu",
)
"""The fields of contrib's `get_pruning_hparams()` (FINAL)."""


def _check_contrib_fields(hparams: PruningHParams) -> None:
    defaults = PruningHParams()
    for field in dataclasses.fields(hparams):
        if field.name in CONTRIB_HPARAMS:
            continue
        value = getattr(hparams, field.name)
        if value != getattr(defaults, field.name):
            raise ValueError(
                f"The contrib `Pruning` supports contrib's hparams only; "
                f"use model_pruning.Pruning for `{field.name}`. "
                f"Received: {field.name}={value!r}"
            )


def _evaluate(value: Any) -> Any:
    if isinstance(value, (tf.Variable, keras.Variable, tf.Tensor)):
        return value
    return value() if callable(value) else value


class Pruning:
    """contrib's mask updater over the registered weights.

    The target sparsity at global step `t` (unless `sparsity` is given) is
    eq. (1), `model_pruning.schedule.target_sparsity(hparams, t)`, scaled
    per weight by `weight_sparsity_map` (`s * map / target_sparsity`).
    Masks keep the largest magnitudes, by blocks where `block_dims_map` /
    `block_height` x `block_width` say so, and update when due (the rule is
    in `conditional_mask_update_op`); every update sets
    `last_mask_update_step = t`.

    The weights are those registered in the mode current at construction:
    the default graph's collections (graph mode) or the default
    `PruningRegistry` (TF2 mode), read when an update op is first built or
    called. Graph mode: the methods return ops to `session.run` after the
    train op. TF2 mode: they run at once (eagerly, or inside the caller's
    `tf.function`) and return a boolean tensor, whether masks changed.

    Args:
        spec: The hparams, from `get_pruning_hparams()` (an `HParams`, kept
            and read lazily so later assignments count) or a
            `PruningHParams`. Defaults to `None`: the defaults.
        global_step: An integer variable, tensor or callable returning one.
            Defaults to `None`: `tf.compat.v1.train.get_global_step()`
            (graph mode); in TF2 mode pass e.g. `optimizer.iterations`.
        sparsity: A scalar in `[0, 1)` (number, variable, tensor or callable)
            that replaces the schedule, read at each update. Defaults to
            `None`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If `sparsity` is out of range, no global step is found,
            or `spec` sets a library hparam that contrib did not have (use
            `model_pruning.Pruning` for those).

    Example:

    ```python
    hparams = get_pruning_hparams().parse("target_sparsity=0.9")
    p = Pruning(hparams, global_step=global_step)
    mask_update_op = p.conditional_mask_update_op()
    p.add_pruning_summaries()
    ...
    sess.run(train_op)
    sess.run(mask_update_op)
    ```
    """

    def __init__(
        self,
        spec: Any = None,
        global_step: Any = None,
        sparsity: Any = None,
    ):
        check_backend("contrib Pruning", TENSORFLOW_ONLY)
        spec = _as_spec(spec)
        _check_step(global_step)
        _check_sparsity(sparsity)
        graph_mode = registry.in_graph_mode()
        if global_step is None:
            global_step = tf.compat.v1.train.get_global_step()
        if global_step is None:
            raise ValueError(
                "Pruning needs a global step: create one first "
                "(tf.compat.v1.train.get_or_create_global_step() in graph "
                "mode) or pass `global_step=` (e.g. optimizer.iterations). "
                "Received: global_step=None"
            )
        self._spec = spec
        self._graph_mode = graph_mode
        self._graph = tf.compat.v1.get_default_graph() if graph_mode else None
        self._registry = None if graph_mode else registry.get_default_registry()
        self._step_source = global_step
        self._sparsity_source = sparsity
        _check_contrib_fields(spec.hparams)
        if graph_mode:
            step = tf.cast(_evaluate(global_step), tf.int32)
            self._graph_global_step = step
            if sparsity is None:
                with tf.name_scope(spec.name):
                    self._graph_sparsity = tf.identity(
                        schedule.target_sparsity(spec.hparams, step),
                        name="sparsity",
                    )
            elif isinstance(sparsity, (tf.Variable, tf.Tensor)):
                self._graph_sparsity = sparsity
            else:
                self._graph_sparsity = tf.cast(_evaluate(sparsity), tf.float32)
        self._last_update_step = self._setup_last_update_step()
        # One traced function per object (a partial: TF counts retraces per
        # function code object, see model_pruning.pruning).
        self._entries_to_trace: list[registry.RegisteredWeight] = []
        self._update_fn = tf.function(
            functools.partial(self._update), autograph=False
        )

    @property
    def spec(self) -> HParams:
        """The hparams (contrib's `_spec`)."""
        return self._spec

    @property
    def sparsity(self) -> Any:
        """The target sparsity before per-weight scaling (contrib's
        `_sparsity`): the external `sparsity`, else the schedule's. Graph
        mode: a tensor to `session.run`; TF2 mode: its current value."""
        if self._graph_mode:
            return self._graph_sparsity
        return self._current_sparsity(self._spec.hparams, self._read_step())

    @property
    def last_update_step(self) -> Any:
        """The int32 variable holding the step of the last mask update
        (contrib's `_last_update_step`), shared by every `Pruning` of the
        same name in a graph (or registry)."""
        return self._last_update_step

    @property
    def _global_step(self) -> tf.Tensor:
        """The global step as an int32 tensor (contrib's attribute)."""
        if self._graph_mode:
            return self._graph_global_step
        return tf.cast(self._read_step(), tf.int32)

    @property
    def _sparsity(self) -> Any:
        """contrib's attribute name for `sparsity`."""
        return self.sparsity

    def _setup_last_update_step(self) -> Any:
        if not self._graph_mode:
            return self._registry.last_update_step(self._spec.name)
        with tf.compat.v1.variable_scope(self._spec.name) as scope:
            try:
                return tf.compat.v1.get_variable(
                    "last_mask_update_step",
                    [],
                    initializer=tf.compat.v1.zeros_initializer(),
                    trainable=False,
                    dtype=tf.int32,
                )
            except ValueError:
                scope.reuse_variables()
                return tf.compat.v1.get_variable(
                    "last_mask_update_step", dtype=tf.int32
                )

    def _entries(self) -> list[registry.RegisteredWeight]:
        if self._graph_mode:
            return registry.graph_entries()
        return list(self._registry.entries)

    def _read_step(self) -> tf.Tensor:
        return tf.cast(_evaluate(self._step_source), tf.int64)

    def _current_sparsity(self, hparams: PruningHParams, step: Any) -> Any:
        if self._sparsity_source is not None:
            return tf.cast(_evaluate(self._sparsity_source), tf.float32)
        return schedule.target_sparsity(hparams, step)

    def _update(self, force: bool, version: int) -> tf.Tensor:
        del version  # Only keys the trace: new registrations retrace.
        hparams = self._spec.hparams
        _check_contrib_fields(hparams)
        step = self._read_step()
        weights = [
            PrunedWeight(
                name=entry.name,
                weight=registry.VariableView(entry.weight),
                mask=registry.VariableView(entry.mask),
                threshold=entry.threshold,
                block_dims=hparams.block_dims(entry.name),
                sparsity_scale=hparams.sparsity_scale(entry.name),
            )
            for entry in self._entries_to_trace
        ]
        return mask_update.update_when_due(
            hparams,
            weights,
            step,
            [self._last_update_step],
            lambda: self._current_sparsity(hparams, step),
            force,
            mask_weight=False,
        )

    def _check_context(self, method: str) -> None:
        if self._graph_mode != registry.in_graph_mode() or (
            self._graph_mode
            and tf.compat.v1.get_default_graph() is not self._graph
        ):
            where = "its graph" if self._graph_mode else "TF2 (eager) mode"
            raise ValueError(
                f"This Pruning object was created in {where}; call "
                f"`{method}()` there. Received: a call from "
                f"{'graph' if registry.in_graph_mode() else 'TF2'} mode"
            )

    def _run_update(self, force: bool, name: str) -> Any:
        self._check_context(name)
        # Read outside the function: a FuncGraph has no collections.
        self._entries_to_trace = self._entries()
        if not self._graph_mode:
            return self._update_fn(force, self._registry.version)
        with tf.name_scope(self._spec.name):
            done = self._update_fn(force, len(self._entries_to_trace))
            with tf.control_dependencies([done]):
                return tf.no_op(name=name)

    def mask_update_op(self) -> Any:
        """Updates every mask and threshold now, whatever the step.

        Also sets `last_mask_update_step` to the global step.

        Returns:
            Graph mode: an op (`mask_update`) to `session.run`. TF2 mode:
            `True`, after the update ran.

        Raises:
            ValueError: If called in another graph or mode than the
                constructor, or the collections are not aligned.
        """
        return self._run_update(True, "mask_update")

    def conditional_mask_update_op(self) -> Any:
        """Updates the masks when the schedule says they are due.

        Due at step `t` when `begin_pruning_step <= t`,
        `last_mask_update_step + pruning_frequency <= t` and `t <=
        end_pruning_step` (no end when it is -1), plus one catch-up at the
        first `t >= end_pruning_step` if the regular updates missed it.

        Returns:
            Graph mode: an op (`conditional_mask_update`) to `session.run`
            after the train op. TF2 mode: a boolean tensor, whether the
            masks were updated.

        Raises:
            ValueError: If called in another graph or mode than the
                constructor, or the collections are not aligned.
        """
        return self._run_update(False, "conditional_mask_update")

    def add_pruning_summaries(self) -> list | None:
        """Adds contrib's scalar summaries.

        Under `<name>_summaries/`: `sparsity` (the target before per-weight
        scaling) and `last_mask_update_step`; per weight,
        `<mask name>/sparsity` (the zero fraction of the mask) and
        `<threshold name>/threshold`.

        Returns:
            Graph mode: the `tf.compat.v1.summary.scalar` tensors (also in
            the `summaries` collection, for `merge_all`). TF2 mode: `None`;
            the scalars go to the default `tf.summary` writer at the
            current step.
        """
        self._check_context("add_pruning_summaries")
        prefix = f"{self._spec.name}_summaries"
        graph_scope = tf.name_scope(prefix) if self._graph_mode else None
        with graph_scope or contextlib.nullcontext():
            scalars = [
                ("sparsity", self.sparsity),
                ("last_mask_update_step", self._last_update_step),
            ]
            for entry in self._entries():
                mask = registry.weight_name(entry.mask)
                threshold = registry.weight_name(entry.threshold)
                scalars += [
                    (f"{mask}/sparsity", tf.math.zero_fraction(entry.mask)),
                    (f"{threshold}/threshold", entry.threshold),
                ]
            if self._graph_mode:
                scalar = tf.compat.v1.summary.scalar
                return [scalar(name, value) for name, value in scalars]
        step = self._read_step()
        for name, value in scalars:
            tf.summary.scalar(f"{prefix}/{name}", value, step=step)
        return None

    def print_hparams(self) -> None:
        """Logs the hparams as JSON (`logging.info`)."""
        logging.info(self._spec.to_json())
