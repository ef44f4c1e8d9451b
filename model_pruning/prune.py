"""`prune_low_magnitude` and `strip_pruning`: from a Keras model and back.

Both build a new model from copies of the layers (weights copied), so the
model passed in is never changed.
"""

import warnings
from typing import Any

import keras

from model_pruning import accessors
from model_pruning import registry
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import unmatched_map_entries
from model_pruning.mask import apply_mask
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PruningSchedule
from model_pruning.wrapper import PruneLowMagnitude


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    hparams: PruningHParams | None = None,
    **kwargs: Any,
) -> Any:
    """Wraps a layer, a list of layers or a model for magnitude pruning.

    A Sequential or Functional model (nested ones included) is rebuilt from
    copies of its layers: every supported layer is wrapped in
    `PruneLowMagnitude`, every other layer is copied unchanged, and all
    weights are copied, so `to_prune` itself is left as it was. Compile the
    result, and train it with the `UpdatePruningStep` callback.

    Give the schedule either tfmot's way (`pruning_schedule`, `block_size`,
    `block_pooling_type`) or contrib's way (`hparams`); both become one
    `PruningHParams`.

    Args:
        to_prune: A Keras layer, a list of layers, or a built Sequential or
            Functional model.
        pruning_schedule: A `PolynomialDecay` or `ConstantSparsity`.
            Defaults to `None`: `ConstantSparsity(0.5, begin_step=0)` unless
            `hparams` is given.
        block_size: `(height, width)` of pruning blocks of rank-2 weights.
            Defaults to `(1, 1)`.
        block_pooling_type: `"AVG"` or `"MAX"`. Defaults to `"AVG"`.
        hparams: A `PruningHParams`, for instance from
            `get_pruning_hparams().parse(...)`. Defaults to `None`.
        **kwargs: Passed to `PruneLowMagnitude` when `to_prune` is a layer.

    Returns:
        The wrapped layer, list of wrapped layers, or a new model.

    Raises:
        ValueError: If both `pruning_schedule` and `hparams` are given, an
            argument is invalid, a layer given directly cannot be pruned, or
            the model is not built or is subclassed.

    Example:

    ```python
    schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000)
    pruned = prune_low_magnitude(model, pruning_schedule=schedule)
    ```
    """
    spec = _resolve_hparams(
        pruning_schedule, block_size, block_pooling_type, hparams
    )
    if isinstance(to_prune, keras.Model):
        if kwargs:
            raise ValueError(
                "Extra keyword arguments apply to a single layer only. "
                f"Received: {sorted(kwargs)} with a model"
            )
        return _prune_model(to_prune, spec)
    if isinstance(to_prune, (list, tuple)):
        return [PruneLowMagnitude(layer, spec, **kwargs) for layer in to_prune]
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(to_prune, spec, **kwargs)
    raise ValueError(
        "`to_prune` must be a Keras layer, a list of layers or a Sequential "
        f"or Functional model. Received: to_prune={to_prune!r}"
    )


def strip_pruning(model: Any) -> Any:
    """Returns a plain Keras model with the masks folded into the weights.

    Pruning is baked in, not undone: each pruned weight becomes
    `weight * mask` (exactly 0.0 where masked), and the copy has no mask,
    threshold or step variables. Its inference output is bit-identical to the
    pruned model's; its `.keras`, `.weights.h5` and `tf.train.Checkpoint`
    saves are the final sparse checkpoint. The copy is not compiled, so a
    saved file holds no optimizer state: compile it to evaluate or train.

    Args:
        model: A pruned Sequential or Functional model, or a single
            `PruneLowMagnitude` layer.

    Returns:
        A new model (or layer). A model with no pruned layers is returned as
        it is, with a warning.

    Raises:
        ValueError: If `model` is not a Keras model or layer.
    """
    if isinstance(model, PruneLowMagnitude):
        return _stripped_copy(model)
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` must be a Keras model or a PruneLowMagnitude layer. "
            f"Received: model={model!r}"
        )
    if not accessors.pruned_layers(model):
        warnings.warn(
            f"Model {model.name!r} has no pruned layers; "
            "returning it unchanged.",
            stacklevel=2,
        )
        return model
    return _clone(model, _strip_layer)


def _resolve_hparams(
    pruning_schedule: Any,
    block_size: Any,
    block_pooling_type: str,
    hparams: Any,
) -> PruningHParams:
    if hparams is not None:
        if pruning_schedule is not None:
            raise ValueError(
                "Pass either `pruning_schedule` or `hparams`, not both. "
                f"Received: pruning_schedule={pruning_schedule!r}"
            )
        if tuple(block_size) != (1, 1) or block_pooling_type != "AVG":
            raise ValueError(
                "With `hparams`, set block_height, block_width and "
                "block_pooling_function in the hparams. Received: "
                f"block_size={block_size!r}, "
                f"block_pooling_type={block_pooling_type!r}"
            )
        if not isinstance(hparams, PruningHParams):
            raise TypeError(
                "`hparams` must be a PruningHParams. "
                f"Received: hparams={hparams!r}"
            )
        return hparams
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    if not isinstance(pruning_schedule, PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a PruningSchedule such as "
            "PolynomialDecay or ConstantSparsity. "
            f"Received: pruning_schedule={pruning_schedule!r}"
        )
    if (
        not isinstance(block_size, (list, tuple))
        or len(block_size) != 2
        or not all(isinstance(d, int) for d in block_size)
    ):
        raise ValueError(
            "`block_size` must be a pair of integers. "
            f"Received: block_size={block_size!r}"
        )
    return pruning_schedule.to_hparams().override(
        block_height=block_size[0],
        block_width=block_size[1],
        block_pooling_function=block_pooling_type,
    )


def _prune_model(model: keras.Model, spec: PruningHParams) -> keras.Model:
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: build it (or call it on data) "
            "before pruning. Received: built=False"
        )
    if not isinstance(model, (keras.Sequential, keras.src.models.Functional)):
        raise ValueError(
            "prune_low_magnitude accepts Sequential and Functional models. "
            "For a subclassed model, wrap its layers with "
            "`prune_low_magnitude(layer)` where the model creates them. "
            f"Received: model={model.__class__.__name__}"
        )

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        copy = _copy_layer(layer)
        if isinstance(layer, PruneLowMagnitude) or not registry.is_supported(
            layer
        ):
            return copy
        return PruneLowMagnitude(copy, spec)

    pruned = _clone(model, wrap)
    names = [entry.name for entry in accessors.pruned_weights(pruned)]
    for unmatched in unmatched_map_entries(spec, names):
        warnings.warn(
            f"The {unmatched} matches no pruned weight of model "
            f"{model.name!r}. Pruned weights: {names}",
            stacklevel=3,
        )
    return pruned


def _clone(model: keras.Model, clone_function) -> keras.Model:
    """Clones `model` with `clone_function`, without its compile config.

    `clone_model` compiles the clone like a compiled source, which gives it
    an optimizer whose state a saved file would carry. The clone is left
    uncompiled: compile it to train or evaluate.
    """
    compiled = model.compiled
    model.compiled = False  # Restored below; read only by `clone_model`.
    try:
        return keras.models.clone_model(
            model, clone_function=clone_function, recursive=True
        )
    finally:
        model.compiled = compiled


def _copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Returns a built copy of `layer` holding the same weight values."""
    copy = layer.__class__.from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        if build_config:
            copy.build_from_config(build_config)
        copy.set_weights(layer.get_weights())
    return copy


def _stripped_copy(wrapper: PruneLowMagnitude) -> keras.layers.Layer:
    """Returns a copy of the wrapped layer with masks folded into weights."""
    inner = wrapper.layer
    masks = {id(e.weight): e.mask for e in wrapper.pruned_weights}
    values = [
        keras.ops.convert_to_numpy(
            apply_mask(w, masks[id(w)]) if id(w) in masks else w
        )
        for w in inner.weights
    ]
    copy = inner.__class__.from_config(inner.get_config())
    copy.build_from_config(inner.get_build_config())
    copy.set_weights(values)
    return copy


def _strip_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, PruneLowMagnitude):
        return _stripped_copy(layer)
    return _copy_layer(layer)
