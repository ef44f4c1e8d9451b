"""Which layers and weights are pruned, and how.

Weights: a layer's candidates (`prunable.inventory`) pass `include` and
`exclude` regexes. Layers: `LayerSettings` is how one layer is pruned (its
hparams and patterns); `layer_args`, `policy` and a `PruningPolicy` change
it per layer (`LayerChoice`). `prune_low_magnitude` asks a `LayerChoice`
about each layer it copies; the wrapper uses the weight functions.
"""

import dataclasses
import re
from collections.abc import Callable
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import NamedTuple

import keras

from model_pruning import prunable
from model_pruning.arguments import resolve_hparams
from model_pruning.hparams import PruningHParams

if TYPE_CHECKING:  # policies reads the wrapper through litert: no cycle.
    from model_pruning.policies import PruningPolicy


def selected_weights(
    layer: keras.layers.Layer,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    found: Sequence[prunable.Candidate] | None = None,
) -> list[tuple[str, Any]]:
    """Returns `(name, variable)` of each weight of `layer` that is pruned.

    A candidate weight (see `prunable.inventory`) is named
    `<layer name>/<path>`, e.g. `"lstm/lstm_cell/kernel"` or, inside a
    walked layer, `"bert_backbone/transformer_layer_0/self_attention/query/
    kernel"`. It is pruned when an `include` regex matches its name
    (`re.search`), or, with `include=None`, when it is pruned by default;
    and no `exclude` regex matches it.

    Args:
        layer: A built layer.
        include: Regexes of weights to prune, or `None` for the defaults.
        exclude: Regexes of weights never to prune.
        found: The layer's candidates, when already walked.
    """
    if found is None:
        found = prunable.inventory(layer).candidates
    chosen = []
    for candidate in found:
        name = f"{layer.name}/{candidate.path}"
        if include is None:
            wanted = candidate.default
        else:
            wanted = any(re.search(p, name) for p in include)
        if wanted and not any(re.search(p, name) for p in exclude):
            chosen.append((name, candidate.variable))
    return chosen


def check_patterns(argument: str, value: Any) -> tuple[str, ...] | None:
    """Returns `value` as a tuple of regexes (`None` stays for `include`).

    Raises:
        ValueError: If `value` is not a list of valid regular expressions.
    """
    if value is None and argument == "include":
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(
            f"`{argument}` must be a list of regular expressions. "
            f"Received: {argument}={value!r}"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(
                f"`{argument}` holds an invalid regular expression: {error}. "
                f"Received: {argument}={list(value)!r}"
            ) from None
    return tuple(value)


def check_m_by_n(hparams: PruningHParams, name: str, weight: Any) -> None:
    """Raises a `ValueError` when N:M sparsity cannot group this weight."""
    if hparams.m_by_n is None:
        return
    shape = tuple(weight.shape)
    if len(shape) < 2:
        raise ValueError(
            f"sparsity_m_by_n={hparams.sparsity_m_by_n!r} groups weights "
            f"along axis -2, which weight {name!r} (rank {len(shape)}) does "
            f"not have. Exclude it. Received: shape={list(shape)}"
        )


class LayerSettings(NamedTuple):
    """How one layer is pruned: its hparams and weight patterns."""

    hparams: PruningHParams
    include: Sequence[str] | None
    exclude: Sequence[str]

    def chooses(
        self, layer: keras.layers.Layer, found: list[prunable.Candidate]
    ) -> bool:
        """Whether any of `found` (the layer's candidates) is pruned."""
        return bool(selected_weights(layer, self.include, self.exclude, found))

    def differences(
        self,
        hparams: PruningHParams,
        include: Sequence[str] | None,
        exclude: Sequence[str],
    ) -> list[str]:
        """What differs between these settings and those a layer was
        pruned with, as `name=old (this call: new)` strings."""
        found = [
            f"{field.name}={getattr(hparams, field.name)!r} "
            f"(this call: {getattr(self.hparams, field.name)!r})"
            for field in dataclasses.fields(PruningHParams)
            if getattr(hparams, field.name) != getattr(self.hparams, field.name)
        ]
        for name, old, new in (
            ("include", include, self.include),
            ("exclude", exclude, self.exclude),
        ):
            if _as_tuple(old) != _as_tuple(new):
                found.append(f"{name}={old!r} (this call: {new!r})")
        return found


LAYER_ARGUMENTS = (
    "pruning_schedule",
    "block_size",
    "block_pooling_type",
    "sparsity_m_by_n",
    "hparams",
    "include",
    "exclude",
)
"""The keys of a per-layer argument dict (`layer_args`, `policy`)."""


def check_pattern_pair(include: Any, exclude: Any) -> None:
    """Raises a `ValueError` unless both are valid pattern lists."""
    check_patterns("include", include)
    check_patterns("exclude", exclude)


def override(settings: LayerSettings, args: Any, where: str) -> LayerSettings:
    """Returns `settings` with per-layer arguments applied.

    Raises:
        ValueError: If `args` is not a dict of `LAYER_ARGUMENTS` or a value
            is invalid; the message names `where`.
    """
    if not isinstance(args, dict):
        raise ValueError(
            f"Per-layer arguments must be a dict. Received: {where}={args!r}"
        )
    unknown = sorted(set(args) - set(LAYER_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"Unknown per-layer argument {unknown[0]!r}; known: "
            f"{', '.join(LAYER_ARGUMENTS)}. Received: {where}={args!r}"
        )
    hparams = settings.hparams
    if set(args) - {"include", "exclude"}:
        hparams = resolve_hparams(
            args.get("pruning_schedule"),
            args.get("block_size", (1, 1)),
            args.get("block_pooling_type", "AVG"),
            args.get("hparams"),
            args.get("sparsity_m_by_n"),
            None,
        )
        if not args.get("hparams"):
            # A per-layer schedule keeps the model's scheme and mask dtype.
            hparams = hparams.override(
                pruning_scheme=settings.hparams.pruning_scheme,
                mask_dtype=settings.hparams.mask_dtype,
            )
    include = args.get("include", settings.include)
    exclude = args.get("exclude", settings.exclude)
    check_pattern_pair(include, exclude)
    return LayerSettings(hparams, include, exclude)


class LayerChoice:
    """How each layer of a model is pruned, or whether it is left alone.

    Args:
        settings: The model-wide `LayerSettings`.
        layer_args: Per-layer argument dicts by exact layer name, or
            `None`.
        policy: Called with a layer: `False`/`None` (leave it), `True`
            (prune it as configured) or a per-layer argument dict; or
            `None`.
        pruning_policy: A `PruningPolicy` that allows layers and sets or
            checks their hparams, or `None`.

    Raises:
        ValueError: If `layer_args` is not a dict of valid per-layer
            argument dicts.
    """

    def __init__(
        self,
        settings: LayerSettings,
        layer_args: Any = None,
        policy: Callable[[keras.layers.Layer], Any] | None = None,
        pruning_policy: "PruningPolicy | None" = None,
    ):
        layer_args = {} if layer_args is None else layer_args
        if not isinstance(layer_args, dict):
            raise ValueError(
                "`layer_args` must map layer names to dicts. "
                f"Received: layer_args={layer_args!r}"
            )
        self.settings = settings
        self.by_name = {
            name: override(settings, args, f"layer_args[{name!r}]")
            for name, args in layer_args.items()
        }
        self.policy = policy
        self.pruning_policy = pruning_policy

    def settings_for(self, layer: keras.layers.Layer) -> LayerSettings | None:
        """Returns how `layer` is pruned (`layer_args`, then `policy`), or
        `None` when `pruning_policy` or `policy` leaves it unpruned."""
        if self.pruning_policy is not None and not (
            self.pruning_policy.allow_pruning(layer)
        ):
            return None
        settings = self.by_name.get(layer.name, self.settings)
        if self.policy is not None:
            decision = self.policy(layer)
            if decision is None or decision is False:
                return None
            if decision is not True:
                settings = override(
                    settings, decision, f"policy({layer.name!r})"
                )
        if self.pruning_policy is None:
            return settings
        return settings._replace(
            hparams=self.pruning_policy.layer_hparams(layer, settings.hparams),
            exclude=(
                *settings.exclude,
                *self.pruning_policy.excluded_weights(layer),
            ),
        )


def unsupported_message(
    layer: keras.layers.Layer, unknown: list[prunable.UnknownWeight]
) -> str:
    """Says which weights of `layer` nothing knows how to prune, and the
    ways out."""
    first = unknown[0]
    owner = first.owner
    where = (
        f"Layer {layer.name!r} of class {layer.__class__.__name__}"
        if owner is layer
        else (
            f"Sublayer {owner.name!r} of class {owner.__class__.__name__} "
            f"(inside layer {layer.name!r} of class "
            f"{layer.__class__.__name__})"
        )
    )
    names = [f"{layer.name}/{w.path}" for w in unknown]
    return (
        f"{where} has trainable weights that nothing knows how to "
        f"prune: {names}. Give {owner.__class__.__name__} a "
        "`get_prunable_weights()` method (see `PrunableLayer`), leave "
        "them out with `exclude` (e.g. "
        f"exclude=[{re.escape(names[0])!r}]) or `policy`, or pass "
        "`unsupported='warn'` to skip such weights. Supported: "
        f"{prunable.supported_layer_names()}. "
        f"Received: weight={names[0]!r} of shape "
        f"{list(first.variable.shape)}"
    )


def _as_tuple(patterns: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if patterns is None else tuple(patterns)
