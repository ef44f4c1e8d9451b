"""`PruneLowMagnitude`: the layer wrapper that owns the pruning variables.

For each pruned weight `<w>` of the wrapped layer (or of its sublayers, at
any depth) the wrapper adds the non-trainable `<w>_mask` (ones, the weight's
shape and dtype, or uint8 with `mask_dtype="uint8"`) and `<w>_threshold` (a
zero scalar), plus one int64 `last_mask_update_step` (int32 on JAX
without `jax_enable_x64`). Under Keras' distribution API on JAX each mask
has its weight's layout (sharded as the weight is) and the scalars are
replicated. It holds state and applies masks; `pruning.Pruning` decides
when and how masks change.
"""

import inspect
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import keras
import tensorflow as tf

# Not in Keras' public API; needed to read variables at full precision.
from model_pruning import _compat
from model_pruning import choice
from model_pruning import prunable
from model_pruning._compat import set_call_signature
from model_pruning.arguments import resolve_hparams
from model_pruning.backends import check_backend
from model_pruning.backends import wide_dtype
from model_pruning.hparams import PruningHParams
from model_pruning.schedule import PruningSchedule
from model_pruning.schedule import schedule_from_hparams


class PrunedWeight(NamedTuple):
    """One pruned weight and its pruning state.

    Attributes:
        name: `<layer name>/<path inside the layer>`, e.g.
            `"dense_1/kernel"` or `"lstm/lstm_cell/recurrent_kernel"`, the
            same wherever the layer was built; `weight_sparsity_map` and
            `block_dims_map` match against it.
        weight: The layer's variable.
        mask: Its mask variable (0 or 1).
        threshold: Its threshold variable.
        block_dims: `(height, width)` of a pruning block.
        sparsity_scale: Factor on the schedule's sparsity, from
            `weight_sparsity_map` (1.0 when no entry matches).
        input_axes: For an `EinsumDense` kernel of rank 3 or more, how many
            leading axes it sums over the input (the rows of the matrix
            that blocks tile); `None` otherwise.
    """

    name: str
    weight: Any
    mask: Any
    threshold: Any
    block_dims: tuple[int, int]
    sparsity_scale: float
    input_axes: int | None = None


class MaskConstraint:
    """A variable constraint that multiplies by the mask after each step.

    Keras optimizers apply `variable.constraint` right after updating a
    variable, so a pruned weight is masked once per step where the update
    already reads and writes it (XLA fuses the multiply into the update).
    A constraint the weight already had (`kernel_constraint`) runs first.

    On JAX the optimizer runs in a `keras.StatelessScope` that holds the
    trainable and optimizer variables only, not the mask (a non-trainable
    variable, whose own value `fit` empties mid-epoch). There the
    constraint uses the mask value the wrapper's `call` read in the same
    compiled step (`step_masks`), which is the step's state; an optimizer
    step traced without that forward pass raises instead of using a stale
    mask.

    On PyTorch, given the weight variable itself (as the optimizer gives
    it), it masks the variable's tensor in place and returns that tensor:
    the optimizer's `assign` of a tensor to itself copies nothing, so the
    step pays one read of the mask and no temporary of the weight's size.

    Args:
        mask: The mask variable.
        inner: The weight's previous constraint, or `None`.
        step_masks: The wrapper's `{id(mask): value}` of the current
            step's forward pass. Defaults to `None` (none recorded).
    """

    def __init__(self, mask: Any, inner: Any = None, step_masks: Any = None):
        self.mask = mask
        self.inner = inner
        self.step_masks = {} if step_masks is None else step_masks

    def __call__(self, weight: Any) -> Any:
        if self.inner is not None:
            weight = self.inner(weight)
        mask = self.mask
        in_scope, value = _compat.stateless_value(mask)
        if in_scope and value is None:
            mask = self.step_masks.get(id(self.mask))
            if mask is None:
                raise RuntimeError(
                    f"The mask {self.mask.path!r} is not in the optimizer's "
                    "stateless scope and no forward pass of its pruned layer "
                    "ran in this step, so the weight cannot be masked. Run "
                    "`stateless_call` and `stateless_apply` in one traced "
                    "step. Received: no mask value for this step"
                )
        if (
            not in_scope
            and self.inner is None
            and keras.backend.backend() == "torch"
            and isinstance(weight, keras.Variable)
        ):
            return _mask_in_place_torch(weight, mask)
        if keras.backend.standardize_dtype(mask.dtype) == weight.dtype:
            return weight * mask
        # A uint8 mask selects: casting it first would add a temporary of
        # the weight's size. The optimizer passes the variable itself, which
        # JAX's `where` does not take.
        return keras.ops.where(
            mask != 0, keras.ops.convert_to_tensor(weight), 0
        )


def _mask_in_place_torch(weight: Any, mask: Any) -> Any:
    """`weight * mask` (or the uint8 mask's select) written into the
    PyTorch variable's own tensor; returns that tensor. The same values
    bit for bit: `mul_` is the product, `masked_fill_` the select."""
    import torch

    value = weight.value
    with torch.no_grad():
        if value.dtype == mask.value.dtype:
            value.mul_(mask.value)
        else:
            value.masked_fill_(mask.value == 0, 0)
    return value


class NoMaskUpdaterError(ValueError, tf.errors.InvalidArgumentError):
    """Raised when a pruned layer trains with nothing updating its masks.

    A `ValueError`, and a `tf.errors.InvalidArgumentError` as tfmot raised
    in that case, so code written for either catches it.
    """

    def __init__(self, *args: Any):
        # `NoMaskUpdaterError(message)`, or as Keras re-raises an `OpError`
        # with the call's arguments: `cls(node_def, op, message, code)`.
        message = args[0] if len(args) == 1 else args[2]
        tf.errors.InvalidArgumentError.__init__(self, None, None, message)
        self.args = (message,)


class _Untracked:
    """Holds Python objects out of sight of Keras' attribute tracker."""

    def __init__(self, value: Any):
        self.value = value


@keras.saving.register_keras_serializable(package="model_pruning")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Wraps a layer so that its prunable weights are masked.

    The forward pass only sees unpruned weights: each pruned weight gets a
    `MaskConstraint`, so the optimizer masks it right after every step; a
    mask update masks it at once; `UpdatePruningStep` masks every weight
    when `fit` begins. `call` assigns no weight (on JAX such a write would
    be lost): weights set by hand after that (`set_weights`) are seen
    unmasked by `predict` until `apply_masks()` or the next `fit`.
    `strip_pruning` folds the mask in, so the final model is exactly zero
    there. Masks change only when a `Pruning` object (run by the
    `UpdatePruningStep` callback in `fit`) updates them.

    The wrapped layer may be a supported layer or anything built from them,
    at any depth (a KerasHub block or backbone, a custom layer, a model),
    pruned in place: the masks are the wrapper's variables, attached by the
    inner variables' constraints, so nothing inside is rebuilt and the
    wrapper's config (the inner layer's) recreates everything on load. A
    layer with nothing to prune (`Dropout`, `MaxPooling2D`,
    `BatchNormalization`) may be wrapped too, as tfmot allows: the wrapper
    then adds no masks and passes calls through.

    Training the layer (`training=True`) before a `Pruning` object or
    `UpdatePruningStep` callback manages it raises `NoMaskUpdaterError` (a
    `ValueError`, and tfmot's `tf.errors.InvalidArgumentError`), so a
    forgotten callback cannot silently leave a model unpruned.

    The schedule is given tfmot's way (`pruning_schedule`, `block_size`,
    `block_pooling_type`, `sparsity_m_by_n`) or contrib's way (`hparams`);
    either becomes `self.hparams`, which tfmot's attributes of those names
    and `pruning_vars` read.

    Args:
        layer: The Keras layer to prune: a supported layer (see
            `prunable.supported_layer_names()`), one with
            `get_prunable_weights()`, or a layer or model holding such
            layers (see `prunable.inventory`).
        pruning_schedule: A `PolynomialDecay` or `ConstantSparsity`.
            Defaults to `None`: `ConstantSparsity(0.5, begin_step=0)`
            unless `hparams` is given.
        block_size: `(height, width)` of pruning blocks. Defaults to
            `(1, 1)`.
        block_pooling_type: `"AVG"` or `"MAX"`. Defaults to `"AVG"`.
        sparsity_m_by_n: `(M, N)`: every `N` consecutive weights along the
            input dimension keep `N - M`. Defaults to `None`.
        hparams: A `PruningHParams` or its config dict, instead of the four
            arguments above. Defaults to `None`.
        include: Regular expressions choosing which candidate weights to
            prune, matched (`re.search`) against `<layer>/<path>` names such
            as `"dense/kernel"`. Defaults to `None`: the layer's default
            candidates (all but depthwise kernels and position
            embeddings).
        exclude: Regular expressions of weights not to prune. Defaults to
            `()`.
        mask_dtype: `"uint8"` for masks of one byte per entry (see
            `PruningHParams`). Defaults to `None`: the weight's dtype, or
            the `hparams`' `mask_dtype`.
        **kwargs: Base layer arguments such as `name`. Defaults the name to
            `"prune_low_magnitude_<layer name>"`.

    Raises:
        ValueError: If `layer` is already wrapped or cannot be pruned, the
            schedule arguments are invalid or mixed with `hparams`, or a
            pattern is invalid. At build: if the layer has candidates but
            none is selected.
        TypeError: If `hparams` has the wrong type.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        pruning_schedule: PruningSchedule | None = None,
        block_size: tuple[int, int] = (1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n: tuple[int, int] | None = None,
        *,
        hparams: Any = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        mask_dtype: str | None = None,
        **kwargs,
    ):
        check_backend("PruneLowMagnitude")
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(
                f"Layer {layer.name!r} is already wrapped for pruning. "
                f"Received: layer={layer.__class__.__name__}"
            )
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"`layer` must be a Keras layer. Received: layer={layer!r}"
            )
        if not prunable.is_supported(layer) and not prunable.may_pass_through(
            layer
        ):
            raise ValueError(
                f"Layer {layer.name!r} of class {layer.__class__.__name__} "
                f"cannot be pruned. Supported: "
                f"{prunable.supported_layer_names()}. "
                f"Received: layer={layer.__class__.__name__}"
            )
        if isinstance(hparams, dict):
            hparams = PruningHParams.from_config(hparams)
        elif not isinstance(hparams, PruningHParams | None):
            raise TypeError(
                "`hparams` must be a PruningHParams (from "
                "`get_pruning_hparams()`) or its config dict. "
                f"Received: hparams={hparams!r}"
            )
        hparams = resolve_hparams(
            pruning_schedule,
            block_size,
            block_pooling_type,
            hparams,
            sparsity_m_by_n,
            mask_dtype=mask_dtype,
        )
        include = choice.check_patterns("include", include)
        exclude = choice.check_patterns("exclude", exclude)
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.hparams = hparams
        self.include = include
        self.exclude = exclude
        self.supports_masking = layer.supports_masking
        self._pruned = _Untracked(())
        self._step_masks = _Untracked({})
        self.has_mask_updater = False
        self._step_source = _Untracked(None)
        _forward_call_signature(self, layer)

    @property
    def pruning_schedule(self) -> PruningSchedule | None:
        """The tfmot schedule of `hparams` (`None` for contrib-style ones)."""
        return schedule_from_hparams(self.hparams)

    @property
    def block_size(self) -> tuple[int, int]:
        """`(block_height, block_width)` of `hparams`."""
        return (self.hparams.block_height, self.hparams.block_width)

    @property
    def block_pooling_type(self) -> str:
        """`block_pooling_function` of `hparams`: `"AVG"` or `"MAX"`."""
        return self.hparams.block_pooling_function

    @property
    def sparsity_m_by_n(self) -> tuple[int, int] | None:
        """`(M, N)` of `hparams`, or `None`."""
        return self.hparams.m_by_n

    @property
    def step_source(self) -> Any:
        """The callable giving the global step the masks follow, or `None`.

        Set by the `Pruning` object that updates this layer's masks.
        """
        return self._step_source.value

    @step_source.setter
    def step_source(self, source: Any) -> None:
        self._step_source = _Untracked(source)

    @property
    def pruning_step(self) -> Any:
        """tfmot's step: the global step the masks follow, as an int64.

        The optimizer's `iterations` (or `Pruning`'s `global_step`), read
        now; -1 (tfmot's first step) before a `Pruning` manages this layer.
        """
        source = self.step_source
        if source is None:
            return keras.ops.convert_to_tensor(-1, wide_dtype("int"))
        return source()

    @property
    def pruning_vars(self) -> list[tuple[Any, Any, Any]]:
        """tfmot's `(weight, mask, threshold)` triples, in order."""
        return [(e.weight, e.mask, e.threshold) for e in self.pruned_weights]

    @property
    def pruned_weights(self) -> tuple[PrunedWeight, ...]:
        """The pruned weights with their masks and thresholds, in order."""
        return self._pruned.value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.built and not self.layer.built:
            shapes = _named_build_shapes(self.layer, args, kwargs)
            if shapes:
                # Keras would pass only the first input's shape to `build`.
                self.build(**shapes)
        return super().__call__(*args, **kwargs)

    def build(self, input_shape: Any = None, *shapes: Any, **named) -> None:
        # Extra shapes (MultiHeadAttention's query and value) go to the layer.
        if self.built:
            return  # A container may build its built sublayers again.
        if not self.layer.built:
            if input_shape is None and named:
                self.layer.build(**named)
            elif shapes or named:
                self.layer.build(input_shape, *shapes, **named)
            elif isinstance(self.layer, keras.layers.MultiHeadAttention):
                raise ValueError(
                    f"MultiHeadAttention {self.layer.name!r} needs both the "
                    "query and value shapes to build: call "
                    "`layer.build(query_shape, value_shape)` (or the layer "
                    "on data) before wrapping it. Received: built=False"
                )
            else:
                super().build(input_shape)
        found = prunable.inventory(self.layer)
        candidates = found.candidates
        if self.include is None and not any(c.default for c in candidates):
            # Wrapped on its own, a layer whose candidates are all optional
            # (a DepthwiseConv2D) is pruned: wrapping it asks for that.
            candidates = [c._replace(default=True) for c in candidates]
        chosen = choice.selected_weights(
            self.layer, self.include, self.exclude, candidates
        )
        # With nothing to prune (Dropout, pooling) the wrapper passes through.
        if not chosen and (found.candidates or found.unknown):
            raise ValueError(
                f"No weight of layer {self.layer.name!r} is selected for "
                "pruning. Received: "
                f"include={self.include!r}, exclude={self.exclude!r}"
            )
        entries, seen = [], set()
        owners = prunable.owners(self.layer)
        scalar_layout = _replicated_layout()
        for name, weight in chosen:
            choice.check_m_by_n(self.hparams, name, weight)
            base = weight.name
            while base in seen:
                base = f"{base}_{len(seen)}"
            seen.add(base)
            mask = _compat.add_weight_with_layout(
                self,
                None if scalar_layout is None else _layout_of(weight),
                name=f"{base}_mask",
                shape=weight.shape,
                dtype=self.hparams.mask_dtype or weight.dtype,
                initializer="ones",
                trainable=False,
            )
            threshold = _compat.add_weight_with_layout(
                self,
                scalar_layout,
                name=f"{base}_threshold",
                shape=(),
                dtype=weight.dtype,
                initializer="zeros",
                trainable=False,
            )
            if not isinstance(weight.constraint, MaskConstraint):
                weight.constraint = MaskConstraint(
                    mask, weight.constraint, self._step_masks.value
                )
            entries.append(
                PrunedWeight(
                    name=name,
                    weight=weight,
                    mask=mask,
                    threshold=threshold,
                    block_dims=self.hparams.block_dims(name),
                    sparsity_scale=self.hparams.sparsity_scale(name),
                    input_axes=prunable.input_axes(
                        owners.get(id(weight)), weight
                    ),
                )
            )
        self.last_mask_update_step = _compat.add_weight_with_layout(
            self,
            scalar_layout,
            name="last_mask_update_step",
            shape=(),
            dtype=wide_dtype("int"),
            initializer="zeros",
            trainable=False,
        )
        self._pruned = _Untracked(tuple(entries))
        if keras.backend.backend() != "tensorflow":
            return
        # `tf.train.Checkpoint` and SavedModel follow attributes, not
        # `add_weight`: the masks and thresholds are attributes of a
        # tracked child, by their variable names ("kernel_mask").
        state = tf.Module(name="pruning_state")
        for entry in entries:
            setattr(state, entry.mask.name, entry.mask)
            setattr(state, entry.threshold.name, entry.threshold)
        self.pruning_state = state

    def apply_masks(self) -> None:
        """Sets every pruned weight to `weight * mask`, in its own dtype.

        A masked negative weight becomes `-0.0` in the variable, which no
        computation can tell from `+0.0`; `strip_pruning` and the getters
        write `+0.0`. Autocasting is off, so under a mixed-precision policy
        the float32 weights keep their precision.
        """
        with _compat.autocast_off():
            for entry in self.pruned_weights:
                mask = keras.ops.cast(entry.mask, entry.weight.dtype)
                entry.weight.assign(entry.weight * mask)

    def call(self, *args, training=None, **kwargs):
        if training and not self.has_mask_updater:
            raise NoMaskUpdaterError(
                f"Layer {self.name!r} is being trained but nothing updates "
                "its masks, so it would not be pruned. Pass "
                "`callbacks=[model_pruning.UpdatePruningStep()]` to `fit`, "
                "or create `model_pruning.Pruning(model=...)` before a custom "
                "training step and call its `conditional_mask_update_op()`. "
                f"Received: training={training}"
            )
        if training:
            # In a stateless step (JAX), the masks of this step's state, for
            # `MaskConstraint` in the optimizer's scope. Nothing is assigned
            # here: the weights are masked already (see `apply_masks`).
            if _compat.in_stateless_scope():
                # In the stored dtype: under a mixed policy `mask.value`
                # would be autocast to float16 here.
                with _compat.autocast_off():
                    self._step_masks.value.update(
                        (id(e.mask), e.mask.value) for e in self.pruned_weights
                    )
        # `training` and the inputs' Keras mask reach the wrapped layer
        # through Keras' call context; other arguments pass as given.
        return self.layer(*args, **kwargs)

    @property
    def metrics(self) -> list:
        # Keras' own rule for a model inside a model: the inner model's
        # metrics belong to its own `compile` (a KerasHub task compiles
        # itself in `__init__`), not to the model that trains it.
        if isinstance(self.layer, keras.Model):
            return list(self._metrics)
        return super().metrics

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_build_config(self) -> dict[str, Any] | None:
        # The wrapped layer's own build config rebuilds any layer, including
        # ones that `build(input_shape)` cannot (MultiHeadAttention).
        inner = self.layer.get_build_config()
        if inner is None:
            return super().get_build_config()
        return {"layer": inner}

    def build_from_config(self, config: dict[str, Any]) -> None:
        if "layer" not in config:
            super().build_from_config(config)
            return
        if not self.layer.built:
            self.layer.build_from_config(config["layer"])
            self.layer.built = True  # As `.keras` loading marks it.
        self.build()

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> "PruneLowMagnitude":
        # `Wrapper.from_config` pops "layer": leave the caller's dict whole.
        return super().from_config(dict(config), custom_objects)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hparams": self.hparams.get_config(),
            "include": None if self.include is None else list(self.include),
            "exclude": list(self.exclude),
        }


def _replicated_layout() -> Any:
    """A scalar's layout under Keras' distribution API on JAX: replicated
    over the active distribution's device mesh. `None` (the variable's own
    layout) with no distribution, or on another backend.

    A threshold or step must not take a layout from the user's `LayoutMap`
    by its path: a key such as `".*kernel.*"` would shard a scalar.
    """
    if keras.backend.backend() != "jax":
        return None
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    return keras.distribution.TensorLayout((), distribution.device_mesh)


def _layout_of(weight: Any) -> Any:
    """The sharding of `weight`'s value, for its mask: a mask lives where
    its weight does, whatever a `LayoutMap` says of the mask's own path
    (`prune_low_magnitude_dense/kernel_mask` rarely matches the key of
    `dense/kernel`). `None` (the distribution's layout) for a weight that
    no mesh lays out, such as one built before the distribution was set.
    """
    import jax

    sharding = getattr(weight.value, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        return sharding
    return None


def _forward_call_signature(
    wrapper: PruneLowMagnitude, layer: keras.layers.Layer
) -> None:
    """Gives `wrapper` the call signature of `layer`, plus `training`.

    Keras binds call arguments to `call`'s signature to find the inputs it
    builds from and the masks it propagates; `call(*args, **kwargs)` would
    hide the wrapped layer's argument names (`query`, `value`).
    """
    signature = inspect.signature(layer.call)
    parameters = list(signature.parameters.values())
    names = [p.name for p in parameters]
    if "training" not in names:
        training = inspect.Parameter(
            "training", inspect.Parameter.KEYWORD_ONLY, default=None
        )
        where = next(
            (i for i, p in enumerate(parameters) if p.kind is p.VAR_KEYWORD),
            len(parameters),
        )
        parameters.insert(where, training)
    set_call_signature(wrapper, signature.replace(parameters=parameters))


def _named_build_shapes(
    layer: keras.layers.Layer, args: tuple, kwargs: dict
) -> dict[str, Any]:
    """Returns `{"<arg>_shape": shape}` for `layer.build`, when it takes
    several shapes named after its call arguments (`MultiHeadAttention`'s
    `query_shape`, `value_shape`), or `{}` for a one-shape `build`."""
    wanted = [
        name
        for name, p in inspect.signature(layer.build).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if len(wanted) < 2:
        return {}
    try:
        bound = inspect.signature(layer.call).bind_partial(*args, **kwargs)
    except TypeError:
        return {}
    return {
        f"{name}_shape": value.shape
        for name, value in bound.arguments.items()
        if f"{name}_shape" in wanted and hasattr(value, "shape")
    }
