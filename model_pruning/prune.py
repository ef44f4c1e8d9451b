"""`prune_low_magnitude` and `strip_pruning`: from a Keras model and back.

Both build a new model from copies (weights copied), so the model passed in
is never changed. Plain Sequential and Functional graphs are copied layer by
layer; anything else is copied whole from its own config and pruned in
place inside one wrapper (see `PrunedModel`).
"""

import re
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import keras

from model_pruning import _compat
from model_pruning import accessors
from model_pruning import containers
from model_pruning import prunable
from model_pruning._compat import node_making
from model_pruning.arguments import resolve_hparams
from model_pruning.backends import check_backend
from model_pruning.choice import LayerChoice
from model_pruning.choice import LayerSettings
from model_pruning.choice import check_pattern_pair
from model_pruning.choice import unsupported_message
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import unmatched_map_entries
from model_pruning.mask import zero_pruned
from model_pruning.policies import PruningPolicy
from model_pruning.pruned_model import PrunedModel
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PolynomialDecay
from model_pruning.schedule import PruningSchedule
from model_pruning.wrapper import PruneLowMagnitude


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    hparams: PruningHParams | None = None,
    *,
    sparsity_m_by_n: tuple[int, int] | None = None,
    pruning_scheme: str | None = None,
    mask_dtype: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    policy: Callable[[keras.layers.Layer], Any] | None = None,
    pruning_policy: PruningPolicy | None = None,
    layer_args: dict[str, dict[str, Any]] | None = None,
    unsupported: str = "raise",
    **kwargs: Any,
) -> Any:
    """Wraps a layer, a list of layers or a model for magnitude pruning.

    A plain `Sequential` or Functional model (nested ones too) is rebuilt
    from copies of its layers and weights, the selected layers wrapped in
    `PruneLowMagnitude`. Any other model or layer (a KerasHub backbone or
    task, a `keras.applications` block, a custom or subclassed one) is
    copied whole, as it serializes itself (`from_config(get_config())` and
    its weights), and wrapped whole: its sublayers are pruned in place, at
    any depth; such a model comes back as a `PrunedModel`. `to_prune` is
    left as it was, and a layer shared by several calls gets one mask per
    weight. Compile the result and train it with `UpdatePruningStep`.

    Pruned weights: each layer's default candidates (kernels of Dense,
    EinsumDense, convolutions and attention projections, token embeddings,
    recurrent kernels; see `prunable.inventory`), changed by `include` /
    `exclude` regexes on weight names `<layer>/<path>` (e.g.
    `"dense_1/kernel"`, `"mha/query/kernel"`), then by `policy` and
    `layer_args` per top-level layer. Biases, normalization scales,
    `LayerScale` gammas, class tokens and other vectors are never pruned;
    position embeddings only when `include` names them. A trainable weight
    that nothing knows how to prune raises, unless `unsupported="warn"`
    (skip it with a warning) or `include`, `exclude` or `policy` leave it
    out.

    The schedule is given tfmot's way (`pruning_schedule`, `block_size`,
    `block_pooling_type`, `sparsity_m_by_n`, `pruning_scheme`) or contrib's
    (`hparams`); both become one `PruningHParams`.

    Args:
        to_prune: A Keras layer, a list of layers, or a built model.
        pruning_schedule: A `PolynomialDecay` or `ConstantSparsity`.
            Defaults to `None`: `ConstantSparsity(0.5, begin_step=0)` unless
            `hparams` is given.
        block_size: `(height, width)` of pruning blocks of rank-2 weights
            (convolution kernels prune element-wise). Defaults to `(1, 1)`.
        block_pooling_type: `"AVG"` or `"MAX"`. Defaults to `"AVG"`.
        hparams: A `PruningHParams`, for instance from
            `get_pruning_hparams().parse(...)`. Defaults to `None`.
        sparsity_m_by_n: `(M, N)`: every `N` consecutive weights along the
            input dimension keep `N - M` (tfmot's argument; `(2, 4)` is 2:4
            sparsity). Defaults to `None`.
        pruning_scheme: `"uniform"`, `"layerwise"` or `"global"` (see
            `PruningHParams`). Defaults to `None`: `"uniform"`.
        mask_dtype: `"uint8"` keeps each mask in one byte per entry
            instead of the weight's dtype (see `PruningHParams`). Defaults
            to `None`: the weight's dtype.
        include: Weight-name regexes to prune (`re.search`); when given,
            only matching candidates are pruned, including ones not pruned by
            default (depthwise kernels). Defaults to `None`.
        exclude: Weight-name regexes never to prune. Defaults to `()`.
        policy: Called with each layer that has trainable weights; returns
            `False` or `None` to leave it unpruned, `True` to prune it as
            configured, or a dict of per-layer arguments (as `layer_args`).
            Defaults to `None`.
        pruning_policy: A `PruningPolicy` (tfmot's argument), such as
            `PruneForLatencyOnXNNPack()`: it checks the model first
            (`ensure_model_supports_pruning`), then only layers it allows
            (`allow_pruning`) are pruned. Models only. Defaults to `None`.
        layer_args: Per-layer arguments by exact layer name: dicts with any
            of `pruning_schedule`, `block_size`, `block_pooling_type`,
            `sparsity_m_by_n`, `hparams`, `include`, `exclude`. Defaults to
            `None`.
        unsupported: `"raise"` or `"warn"`: what to do with a layer whose
            weights nothing knows how to prune. Defaults to `"raise"`.
        **kwargs: Passed to `PruneLowMagnitude` when `to_prune` is a layer.

    Returns:
        The wrapped layer, list of wrapped layers, or a new model: a
        Sequential or Functional model for those, a `PrunedModel` for any
        other model with weights to prune.

    Raises:
        ValueError: If both `pruning_schedule` and `hparams` are given, an
            argument is invalid, a weight cannot be pruned (see
            `unsupported`), a layer cannot be copied from its config, or the
            model is not built.

    Example:

    ```python
    schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000)
    pruned = prune_low_magnitude(
        model, pruning_schedule=schedule, exclude=["^embedding/"]
    )
    ```
    """
    check_backend("prune_low_magnitude")
    settings = LayerSettings(
        hparams=resolve_hparams(
            pruning_schedule,
            block_size,
            block_pooling_type,
            hparams,
            sparsity_m_by_n,
            pruning_scheme,
            mask_dtype,
        ),
        include=include,
        exclude=exclude,
    )
    check_pattern_pair(include, exclude)
    if unsupported not in ("raise", "warn"):
        raise ValueError(
            "`unsupported` must be 'raise' or 'warn'. "
            f"Received: unsupported={unsupported!r}"
        )
    if policy is not None and not callable(policy):
        raise ValueError(
            f"`policy` must be callable. Received: policy={policy!r}"
        )
    if pruning_policy is not None and not isinstance(
        pruning_policy, PruningPolicy
    ):
        raise ValueError(
            "`pruning_policy` must be a PruningPolicy such as "
            "PruneForLatencyOnXNNPack(). "
            f"Received: pruning_policy={pruning_policy!r}"
        )
    choice = LayerChoice(settings, layer_args, policy, pruning_policy)
    if isinstance(to_prune, keras.Model):
        if kwargs:
            raise ValueError(
                "Extra keyword arguments apply to a single layer only. "
                f"Received: {sorted(kwargs)} with a model"
            )
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        return _prune_model(to_prune, _Chooser(choice, unsupported))
    if layer_args or policy is not None or pruning_policy is not None:
        raise ValueError(
            "`policy`, `pruning_policy` and `layer_args` choose layers of a "
            f"model. Received: to_prune={to_prune.__class__.__name__}"
        )
    if isinstance(to_prune, (list, tuple)):
        return [_wrap(settings, layer, **kwargs) for layer in to_prune]
    if isinstance(to_prune, keras.layers.Layer):
        return _wrap(settings, to_prune, **kwargs)
    raise ValueError(
        "`to_prune` must be a Keras layer, a list of layers or a model. "
        f"Received: to_prune={to_prune!r}"
    )


def strip_pruning(model: Any) -> Any:
    """Returns a plain Keras model with the masks folded into the weights.

    Pruning is baked in, not undone: each pruned weight becomes
    `weight * mask` (exactly 0.0 where masked), with no mask, threshold or
    step variables left. Inference output is bit-identical to the pruned
    model's; `.keras`, `.weights.h5` and `tf.train.Checkpoint` saves are the
    final sparse checkpoint. The copy is not compiled (a save holds no
    optimizer state): compile it to evaluate or train.

    Args:
        model: A pruned model (any kind `prune_low_magnitude` accepts, or a
            subclassed model whose `__init__` wraps its layers), or a single
            `PruneLowMagnitude` layer.

    Returns:
        A new model (or layer). A `PrunedModel` gives an instance of the
        class it wraps (a `BertBackbone` stays a `BertBackbone`). A model
        with no pruned layers is returned as it is, with a warning.

    Raises:
        ValueError: If `model` is not a Keras model or layer, or its pruned
            layers cannot be replaced.
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
    _check_built(model)
    stripped = _strip_nested(model)
    if stripped is None:
        raise ValueError(
            f"Model {model.name!r} of class {model.__class__.__name__} owns "
            "variables outside its sublayers, so its pruned layers cannot be "
            "replaced by stripped copies. Received: "
            f"model={model.__class__.__name__}"
        )
    return stripped


def prune_scope() -> keras.saving.CustomObjectScope:
    """Returns tfmot's scope for loading models that hold pruning wrappers.

    The library's classes are registered Keras serializables, which
    `keras.models.load_model` finds without any scope: this scope only lets
    tfmot code that uses it run unchanged.

    Returns:
        A `keras.saving.CustomObjectScope` naming the library's classes.

    Example:

    ```python
    with prune_scope():
        model = keras.models.load_model("pruned.keras")
    ```
    """
    return keras.saving.CustomObjectScope(
        {
            "PruneLowMagnitude": PruneLowMagnitude,
            "PrunedModel": PrunedModel,
            "PolynomialDecay": PolynomialDecay,
            "ConstantSparsity": ConstantSparsity,
        }
    )


def _wrap(
    settings: LayerSettings, layer: keras.layers.Layer, **kwargs: Any
) -> PruneLowMagnitude:
    return PruneLowMagnitude(
        layer,
        hparams=settings.hparams,
        include=settings.include,
        exclude=settings.exclude,
        **kwargs,
    )


class _Chooser:
    """Decides, layer by layer, what `prune_low_magnitude` does."""

    def __init__(self, choice: LayerChoice, unsupported: str):
        self.choice = choice
        self.unsupported = unsupported
        self.seen_names: set[str] = set()

    def __call__(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        """Returns the pruned (or plain) copy of one source layer."""
        if isinstance(layer, PruneLowMagnitude):
            self._check_pruned_alike(layer)
            return _copy_layer(layer)
        if not isinstance(layer, keras.layers.Layer):
            return _copy_layer(layer)
        self.seen_names.add(layer.name)
        if _is_graph(layer) and (layer.trainable_weights or not layer.built):
            return _clone(layer, self)
        # An unbuilt layer (in an unbuilt Sequential) is chosen by class; the
        # wrapper checks its weight choice when the model is built.
        if layer.built:
            has_candidates = bool(layer.trainable_weights)
        else:
            has_candidates = prunable.prunes_by_default(layer)
        settings = self.choice.settings_for(layer) if has_candidates else None
        if settings is None:
            return _copy_layer(layer)
        if layer.built:
            found = prunable.inventory(layer)
            unknown = [
                weight
                for weight in found.unknown
                if not any(
                    re.search(p, f"{layer.name}/{weight.path}")
                    for p in settings.exclude
                )
            ]
            if unknown:
                message = unsupported_message(layer, unknown)
                if self.unsupported == "raise":
                    raise ValueError(message)
                warnings.warn(f"Not pruned: {message}", stacklevel=3)
            if not settings.chooses(layer, found.candidates):
                return _copy_layer(layer)
        return _wrap(settings, _copy_layer(layer))

    def _check_pruned_alike(self, wrapper: PruneLowMagnitude) -> None:
        """A layer that is already pruned is kept as it is, if these
        arguments would prune it the same way; raises if they differ."""
        self.seen_names.add(wrapper.layer.name)
        settings = self.choice.settings_for(wrapper.layer)
        if settings is None:
            return  # These arguments leave it alone: it stays pruned.
        differences = settings.differences(
            wrapper.hparams, wrapper.include, wrapper.exclude
        )
        if differences:
            raise ValueError(
                f"Layer {wrapper.layer.name!r} is already pruned, with other "
                "arguments than this call gives it, and a pruned layer is "
                "not pruned again: strip it first (`strip_pruning`) to prune "
                "it anew, or pass the arguments it was pruned with. "
                f"Received: {'; '.join(differences)}"
            )


def _is_graph(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a plain Sequential or Functional model, which is
    rebuilt layer by layer (a subclass, such as a KerasHub backbone, is not:
    its own config recreates it, so it is copied whole)."""
    return type(layer) in (keras.Sequential, _compat.functional_class())


def _check_built(model: keras.Model) -> None:
    # An unbuilt Sequential is cloned unbuilt, and built on first call.
    if type(model) is not keras.Sequential and not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: build it (or call it on data) "
            "before pruning. Received: built=False"
        )


def _prune_model(model: keras.Model, chooser: _Chooser) -> keras.Model:
    if isinstance(model, PrunedModel):
        # Pruned whole already: kept as it is when pruned alike.
        chooser._check_pruned_alike(model.pruned)
        return model
    _check_built(model)
    pruned = _clone(model, chooser) if _is_graph(model) else chooser(model)
    if isinstance(pruned, PruneLowMagnitude):  # The model is wrapped whole.
        pruned.build()  # Its inner model is built: add the masks.
        pruned = PrunedModel(pruned, name=model.name)
    missing = sorted(set(chooser.choice.by_name) - chooser.seen_names)
    if missing:
        raise ValueError(
            f"`layer_args` names layers that model {model.name!r} does not "
            f"have: {missing}. Received: layer_args keys "
            f"{sorted(chooser.choice.by_name)}"
        )
    if not pruned.built:
        return pruned  # Maps are checked against names once it is built.
    names = [entry.name for entry in accessors.pruned_weights(pruned)]
    specs = {layer.hparams for layer in accessors.pruned_layers(pruned)}
    for spec in specs:
        for unmatched in unmatched_map_entries(spec, names):
            warnings.warn(
                f"The {unmatched} matches no pruned weight of model "
                f"{model.name!r}. Pruned weights: {names}",
                stacklevel=3,
            )
    return pruned


def _clone(model: keras.Model, clone_function) -> keras.Model:
    """Clones `model` with `clone_function`, left uncompiled (`clone_model`
    would give it the source's optimizer, whose state a save would carry)."""
    inputs = None
    if type(model) is not keras.Sequential:
        # Keras names the clone's inputs after the input tensors
        # ("keras_tensor_3"), not their layers: keep the layers' names.
        inputs = keras.tree.map_structure(
            lambda x: keras.Input(
                batch_shape=x.shape,
                dtype=x.dtype,
                sparse=x.sparse,
                name=node_making(x)[0].name,
            ),
            model.input,
        )
    with _compat.uncompiled(model):
        return keras.models.clone_model(
            model, input_tensors=inputs, clone_function=clone_function
        )


def _copy_layer(
    layer: keras.layers.Layer, values: list[Any] | None = None
) -> keras.layers.Layer:
    """Returns a copy of `layer` recreated as `.keras` loading does, built
    from its build config and holding `values` (default: its weights).

    An operation of a Functional graph that is not a layer (`x + y`) holds
    no state and is returned as it is.
    """
    if not isinstance(layer, keras.layers.Layer):
        return layer
    try:
        copy = layer.__class__.from_config(layer.get_config())
    except (NotImplementedError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"Layer {layer.name!r} of class {layer.__class__.__name__} cannot "
            "be copied from its config, so it cannot be pruned as a whole "
            f"({e.__class__.__name__}: {e}). A model containing it cannot be "
            "saved as `.keras` either. Give the class a `get_config` that "
            "returns its constructor arguments, or wrap it in a model "
            "class whose config recreates it. "
            f"Received: layer={layer.__class__.__name__}"
        ) from e
    if layer.built:
        build_config = layer.get_build_config()
        if build_config:
            copy.build_from_config(build_config)
            # Marked built: a subclassed model built by a symbolic run of
            # its `call` is not marked otherwise.
            copy.built = True
        copy.set_weights(layer.get_weights() if values is None else values)
    return copy


def _stripped_copy(wrapper: PruneLowMagnitude) -> keras.layers.Layer:
    """Returns a copy of the wrapped layer with masks folded into weights."""
    if not wrapper.built:
        return _copy_layer(wrapper.layer)  # No weights: nothing to fold in.
    masks = {id(e.weight): e.mask for e in wrapper.pruned_weights}
    values = [
        keras.ops.convert_to_numpy(
            zero_pruned(w, masks[id(w)]) if id(w) in masks else w
        )
        for w in wrapper.layer.weights
    ]
    return _copy_layer(wrapper.layer, values)


def _strip_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    stripped = _strip_nested(layer) if accessors.pruned_layers(layer) else None
    return _copy_layer(layer) if stripped is None else stripped


def _strip_nested(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """Strips a layer that is or holds wrappers, or returns `None`."""
    if isinstance(layer, PruneLowMagnitude):
        return _stripped_copy(layer)
    if isinstance(layer, PrunedModel):
        return _stripped_copy(layer.pruned)
    if _is_graph(layer):
        return _clone(layer, _strip_layer)
    if containers.is_container(layer):
        # Wrappers a custom class creates in its `__init__`: its config
        # recreates them, so each is replaced by its stripped copy.
        return containers.rebuild(layer, _strip_layer)
    return None
