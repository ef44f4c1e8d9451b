"""`prune_low_magnitude` and `strip_pruning`: from a Keras model and back.

Both build a new model from copies of the layers (weights copied), so the
model passed in is never changed.
"""

import re
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import keras

from model_pruning import accessors
from model_pruning import containers
from model_pruning import registry
from model_pruning.hparams import PruningHParams
from model_pruning.hparams import unmatched_map_entries
from model_pruning.mask import apply_mask
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PruningSchedule
from model_pruning.wrapper import PruneLowMagnitude
from model_pruning.wrapper import check_patterns
from model_pruning.wrapper import selected_weights
from model_pruning.wrapper import weight_name


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    hparams: PruningHParams | None = None,
    *,
    sparsity_m_by_n: tuple[int, int] | None = None,
    pruning_scheme: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    policy: Callable[[keras.layers.Layer], Any] | None = None,
    layer_args: dict[str, dict[str, Any]] | None = None,
    unsupported: str = "raise",
    **kwargs: Any,
) -> Any:
    """Wraps a layer, a list of layers or a model for magnitude pruning.

    A model (Sequential, Functional, subclassed, nested in any way) is rebuilt
    from copies of its layers: every selected layer is wrapped in
    `PruneLowMagnitude`, every other layer is copied unchanged, and all
    weights are copied, so `to_prune` itself is left as it was. A layer
    shared by several calls is wrapped once (one mask per weight). Compile
    the result and train it with the `UpdatePruningStep` callback.

    Which weights are pruned: each layer's default candidates (kernels,
    embeddings, recurrent kernels; see `registry.candidates`), narrowed or
    widened by `include` / `exclude` regular expressions matched against
    weight names `<layer>/<path>` (e.g. `"dense_1/kernel"`,
    `"mha/query/kernel"`), then by `policy` and `layer_args` per layer.
    Layers without trainable weights, and normalization layers, pass
    through. A layer with trainable
    weights that nothing knows how to prune raises, unless `unsupported` is
    `"warn"` (skip it with a warning) or the selection leaves it out.

    Subclassed models and custom layers built from sublayers are rebuilt
    from their config with their sublayer attributes (and lists of them)
    replaced; their `get_config` must recreate those attributes.

    Give the schedule either tfmot's way (`pruning_schedule`, `block_size`,
    `block_pooling_type`, `sparsity_m_by_n`, `pruning_scheme`) or contrib's
    way (`hparams`); both become one `PruningHParams`.

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
        include: Weight-name regexes to prune (`re.search`); when given,
            only matching candidates are pruned, including ones not pruned by
            default (depthwise kernels). Defaults to `None`.
        exclude: Weight-name regexes never to prune. Defaults to `()`.
        policy: Called with each layer that has trainable weights; returns
            `False` or `None` to leave it unpruned, `True` to prune it as
            configured, or a dict of per-layer arguments (as `layer_args`).
            Defaults to `None`.
        layer_args: Per-layer arguments by exact layer name: dicts with any
            of `pruning_schedule`, `block_size`, `block_pooling_type`,
            `sparsity_m_by_n`, `hparams`, `include`, `exclude`. Defaults to
            `None`.
        unsupported: `"raise"` or `"warn"`: what to do with a layer whose
            weights nothing knows how to prune. Defaults to `"raise"`.
        **kwargs: Passed to `PruneLowMagnitude` when `to_prune` is a layer.

    Returns:
        The wrapped layer, list of wrapped layers, or a new model.

    Raises:
        ValueError: If both `pruning_schedule` and `hparams` are given, an
            argument is invalid, a layer cannot be pruned (see
            `unsupported`), or the model is not built.

    Example:

    ```python
    schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000)
    pruned = prune_low_magnitude(
        model, pruning_schedule=schedule, exclude=["^embedding/"]
    )
    ```
    """
    settings = _Settings(
        spec=_resolve_hparams(
            pruning_schedule,
            block_size,
            block_pooling_type,
            hparams,
            sparsity_m_by_n,
            pruning_scheme,
        ),
        include=include,
        exclude=exclude,
    )
    _check_patterns(include, exclude)
    if unsupported not in ("raise", "warn"):
        raise ValueError(
            "`unsupported` must be 'raise' or 'warn'. "
            f"Received: unsupported={unsupported!r}"
        )
    if policy is not None and not callable(policy):
        raise ValueError(
            f"`policy` must be callable. Received: policy={policy!r}"
        )
    layer_settings = _layer_settings(layer_args or {}, settings)
    if isinstance(to_prune, keras.Model):
        if kwargs:
            raise ValueError(
                "Extra keyword arguments apply to a single layer only. "
                f"Received: {sorted(kwargs)} with a model"
            )
        chooser = _Chooser(settings, policy, layer_settings, unsupported)
        return _prune_model(to_prune, chooser)
    if layer_args or policy is not None:
        raise ValueError(
            "`policy` and `layer_args` choose layers of a model. Received: "
            f"to_prune={to_prune.__class__.__name__}"
        )
    if isinstance(to_prune, (list, tuple)):
        return [settings.wrap(layer, **kwargs) for layer in to_prune]
    if isinstance(to_prune, keras.layers.Layer):
        return settings.wrap(to_prune, **kwargs)
    raise ValueError(
        "`to_prune` must be a Keras layer, a list of layers or a model. "
        f"Received: to_prune={to_prune!r}"
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
        model: A pruned model (any kind `prune_low_magnitude` accepts, or a
            subclassed model whose `__init__` wraps its layers), or a single
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
    return _transform_model(model, _strip_layer)


class _Settings(NamedTuple):
    """How one layer is pruned: its hparams and weight selection."""

    spec: PruningHParams
    include: Sequence[str] | None
    exclude: Sequence[str]

    def wrap(self, layer: keras.layers.Layer, **kwargs: Any):
        return PruneLowMagnitude(
            layer, self.spec, self.include, self.exclude, **kwargs
        )

    def selects(self, layer: keras.layers.Layer) -> bool:
        return bool(selected_weights(layer, self.include, self.exclude))


_LAYER_ARGUMENTS = (
    "pruning_schedule",
    "block_size",
    "block_pooling_type",
    "sparsity_m_by_n",
    "hparams",
    "include",
    "exclude",
)


def _override(settings: _Settings, args: Any, where: str) -> _Settings:
    """Returns `settings` with per-layer arguments applied."""
    if not isinstance(args, dict):
        raise ValueError(
            f"Per-layer arguments must be a dict. Received: {where}={args!r}"
        )
    unknown = sorted(set(args) - set(_LAYER_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"Unknown per-layer argument {unknown[0]!r}; known: "
            f"{', '.join(_LAYER_ARGUMENTS)}. Received: {where}={args!r}"
        )
    spec = settings.spec
    schedule_args = set(args) - {"include", "exclude"}
    if schedule_args:
        spec = _resolve_hparams(
            args.get("pruning_schedule"),
            args.get("block_size", (1, 1)),
            args.get("block_pooling_type", "AVG"),
            args.get("hparams"),
            args.get("sparsity_m_by_n"),
            None,
        )
        if not args.get("hparams"):
            # A per-layer schedule keeps the model's scheme.
            spec = spec.override(pruning_scheme=settings.spec.pruning_scheme)
    include = args.get("include", settings.include)
    exclude = args.get("exclude", settings.exclude)
    _check_patterns(include, exclude)
    return _Settings(spec, include, exclude)


def _layer_settings(
    layer_args: Any, settings: _Settings
) -> dict[str, _Settings]:
    if not isinstance(layer_args, dict):
        raise ValueError(
            "`layer_args` must map layer names to dicts. "
            f"Received: layer_args={layer_args!r}"
        )
    return {
        name: _override(settings, args, f"layer_args[{name!r}]")
        for name, args in layer_args.items()
    }


def _check_patterns(include: Any, exclude: Any) -> None:
    check_patterns("include", include)
    check_patterns("exclude", exclude)


class _Chooser:
    """Decides, layer by layer, what `prune_low_magnitude` does."""

    def __init__(
        self,
        settings: _Settings,
        policy: Callable | None,
        layer_settings: dict[str, _Settings],
        unsupported: str,
    ):
        self.settings = settings
        self.policy = policy
        self.layer_settings = layer_settings
        self.unsupported = unsupported
        self.seen_names: set[str] = set()

    def __call__(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        """Returns the pruned (or plain) copy of one source layer."""
        if not isinstance(layer, keras.layers.Layer) or isinstance(
            layer, PruneLowMagnitude
        ):
            return _copy_layer(layer)
        self.seen_names.add(layer.name)
        if not layer.trainable_weights:
            return _copy_layer(layer)
        known = registry.candidates(layer) is not None
        if not known and _is_nested(layer):
            return _transform_nested(layer, self)
        settings = self.layer_settings.get(layer.name, self.settings)
        if self.policy is not None:
            decision = self.policy(layer)
            if decision is None or decision is False:
                return _copy_layer(layer)
            if decision is not True:
                settings = _override(
                    settings, decision, f"policy({layer.name!r})"
                )
        if not known:
            if not _excluded_entirely(layer, settings):
                self._unsupported(layer)
            return _copy_layer(layer)
        if not settings.selects(layer):
            return _copy_layer(layer)
        return settings.wrap(_copy_layer(layer))

    def _unsupported(self, layer: keras.layers.Layer) -> None:
        message = (
            f"Layer {layer.name!r} of class {layer.__class__.__name__} has "
            "trainable weights that nothing knows how to prune. Give it a "
            "`get_prunable_weights()` method (see `PrunableLayer`), leave "
            "it out with `policy` or `exclude`, or pass "
            "`unsupported='warn'` to skip such layers. Supported: "
            f"{registry.supported_layer_names()}. "
            f"Received: layer={layer.__class__.__name__}"
        )
        if self.unsupported == "raise":
            raise ValueError(message)
        warnings.warn(f"Not pruned: {message}", stacklevel=4)


def _excluded_entirely(layer: keras.layers.Layer, settings: _Settings) -> bool:
    """Whether `exclude` names every trainable weight of an unknown layer."""
    names = [weight_name(w, layer.name) for w in layer.trainable_weights]
    return all(
        any(re.search(p, name) for p in settings.exclude) for name in names
    )


def _is_nested(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.Model) or containers.is_container(layer)


def _transform_nested(
    layer: keras.layers.Layer, transform: Callable
) -> keras.layers.Layer:
    """Applies `transform` to the layers inside a model or container."""
    if isinstance(layer, (keras.Sequential, keras.src.models.Functional)):
        return _clone(layer, transform)
    if containers.is_container(layer):
        return containers.rebuild(layer, transform)
    return transform(layer)


def _transform_model(model: keras.Model, transform: Callable) -> keras.Model:
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: build it (or call it on data) "
            "before pruning. Received: built=False"
        )
    if not isinstance(
        model, (keras.Sequential, keras.src.models.Functional)
    ) and not containers.is_container(model):
        raise ValueError(
            f"Model {model.name!r} of class {model.__class__.__name__} owns "
            "variables outside its sublayers, so it cannot be rebuilt with "
            "pruned layers. Wrap its layers with `prune_low_magnitude(layer)` "
            f"in its `__init__` instead. Received: model={model.name!r}"
        )
    return _transform_nested(model, transform)


def _resolve_hparams(
    pruning_schedule: Any,
    block_size: Any,
    block_pooling_type: str,
    hparams: Any,
    sparsity_m_by_n: Any = None,
    pruning_scheme: str | None = None,
) -> PruningHParams:
    if hparams is not None:
        if pruning_schedule is not None:
            raise ValueError(
                "Pass either `pruning_schedule` or `hparams`, not both. "
                f"Received: pruning_schedule={pruning_schedule!r}"
            )
        if (
            tuple(block_size) != (1, 1)
            or block_pooling_type != "AVG"
            or sparsity_m_by_n is not None
            or pruning_scheme is not None
        ):
            raise ValueError(
                "With `hparams`, set block_height, block_width, "
                "block_pooling_function, sparsity_m_by_n and pruning_scheme "
                f"in the hparams. Received: block_size={block_size!r}, "
                f"block_pooling_type={block_pooling_type!r}, "
                f"sparsity_m_by_n={sparsity_m_by_n!r}, "
                f"pruning_scheme={pruning_scheme!r}"
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
    m_by_n = ""
    if sparsity_m_by_n is not None:
        if (
            not isinstance(sparsity_m_by_n, (list, tuple))
            or len(sparsity_m_by_n) != 2
            or not all(isinstance(d, int) for d in sparsity_m_by_n)
        ):
            raise ValueError(
                "`sparsity_m_by_n` must be a pair of integers (M, N). "
                f"Received: sparsity_m_by_n={sparsity_m_by_n!r}"
            )
        m_by_n = f"{sparsity_m_by_n[0]}:{sparsity_m_by_n[1]}"
    return pruning_schedule.to_hparams().override(
        block_height=block_size[0],
        block_width=block_size[1],
        block_pooling_function=block_pooling_type,
        sparsity_m_by_n=m_by_n,
        pruning_scheme=pruning_scheme or "uniform",
    )


def _prune_model(model: keras.Model, chooser: _Chooser) -> keras.Model:
    pruned = _transform_model(model, chooser)
    missing = sorted(set(chooser.layer_settings) - chooser.seen_names)
    if missing:
        raise ValueError(
            f"`layer_args` names layers that model {model.name!r} does not "
            f"have: {missing}. Received: layer_args keys "
            f"{sorted(chooser.layer_settings)}"
        )
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
    """Returns a built copy of `layer` holding the same weight values.

    An operation of a Functional graph that is not a layer (`x + y`) holds
    no state and is returned as it is.
    """
    if not isinstance(layer, keras.layers.Layer):
        return layer
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
    if accessors.pruned_layers(layer) and _is_nested(layer):
        return _transform_nested(layer, _strip_layer)
    return _copy_layer(layer)
