"""`Pruning`: contrib's hparams-driven mask updater, over a Keras model.

It reads the global step (the optimizer's `iterations` unless given), decides
per pruned layer whether masks are due (`schedule.should_update_masks`),
computes new thresholds and masks (`mask.py`) and assigns them. The
`UpdatePruningStep` callback runs it in `model.fit`; custom loops call
`conditional_mask_update_op()` after applying gradients.
"""

import functools
import logging
from typing import Any

import tensorflow as tf

from model_pruning import accessors
from model_pruning import fused_update
from model_pruning import mask as mask_lib
from model_pruning import schedule
from model_pruning.hparams import PruningHParams
from model_pruning.wrapper import PrunedWeight
from model_pruning.wrapper import PruneLowMagnitude


class Pruning:
    """Updates the masks of a pruned model on the global step.

    Masks of a layer update at step `t` when `schedule.should_update_masks`
    says so (contrib's rule plus a catch-up at the end step). An update keeps
    the largest-magnitude unpruned weights: pruned weights never come back.

    The layers' `pruning_scheme` (all layers must agree) decides how they
    share the schedule: `"uniform"` updates each layer on the schedule;
    `"layerwise"` delays the schedule of the `j`-th of `L` layers by
    `j * pruning_frequency // L` steps (its `last_mask_update_step` counts
    in that delayed time); `"global"` updates all layers together with one
    threshold over all their weights.

    Args:
        spec: A `PruningHParams`. Defaults to `None`: each pruned layer uses
            the hparams it was wrapped with. When given it must equal them.
        global_step: An integer variable, tensor or callable returning one.
            Defaults to `None`: `model.optimizer.iterations`, read at each
            update.
        sparsity: A float scalar (variable, tensor or number) that replaces
            the schedule's target sparsity (still scaled by
            `weight_sparsity_map`). Defaults to `None`.
        model: The pruned model, layer or list of layers (keyword only).
        xla: Whether the updates run inside an XLA-compiled function (for
            instance a custom train step with `jit_compile=True` that calls
            `conditional_mask_update_op()`), so the threshold selection must
            use TF ops only (keyword only). Defaults to `False`.
        updates_masks: Whether this object is what updates the layers'
            masks (keyword only). Training a pruned layer raises until some
            object with `updates_masks=True` manages it. `PruningSummaries`
            passes `False`: it only reads. Defaults to `True`.

    Raises:
        ValueError: If `model` has no pruned layers, `spec` differs from the
            hparams a layer was wrapped with, or the layers' hparams differ
            under a `"layerwise"` or `"global"` scheme.

    Example:

    ```python
    pruning = Pruning(model=pruned, global_step=optimizer.iterations)

    @tf.function
    def train_step(x, y):
        ...  # compute and apply gradients
        pruning.conditional_mask_update_op()
    ```
    """

    def __init__(
        self,
        spec: PruningHParams | None = None,
        global_step: Any = None,
        sparsity: Any = None,
        *,
        model: Any,
        xla: bool = False,
        updates_masks: bool = True,
    ):
        layers = accessors.pruned_layers(model)
        if not layers:
            raise ValueError(
                "`model` has no layers wrapped by `prune_low_magnitude`. "
                f"Received: model={getattr(model, 'name', model)!r}"
            )
        if spec is not None:
            if not isinstance(spec, PruningHParams):
                raise TypeError(
                    f"`spec` must be a PruningHParams. Received: spec={spec!r}"
                )
            for layer in layers:
                if layer.hparams != spec:
                    raise ValueError(
                        f"Layer {layer.name!r} was wrapped with other hparams "
                        f"than `spec`. Layer: {layer.hparams.to_json()}. "
                        f"Received: spec={spec.to_json()}"
                    )
        scheme = _common_scheme(layers, spec)
        if updates_masks:
            for layer in layers:
                layer.has_mask_updater = True
                layer.step_source = self.global_step
        self._scheme = scheme
        self._xla = bool(xla)
        self._delays = [
            (j * layer.hparams.pruning_frequency) // len(layers)
            if scheme == "layerwise"
            else 0
            for j, layer in enumerate(layers)
        ]
        self._last_steps: list[int] | None = None
        self._spec = spec
        self._model = model
        self._layers = layers
        self._global_step = global_step
        self._sparsity = sparsity
        # Each Pruning traces its own graph. TF counts traces per function
        # code object and warns of "excessive retracing" after a few pruned
        # models in one process; a partial is counted per object instead.
        self._conditional_update = tf.function(
            functools.partial(self._update_all_layers), autograph=False
        )

    @property
    def model(self) -> Any:
        """The model (or layers) this object updates."""
        return self._model

    @property
    def layers(self) -> list[PruneLowMagnitude]:
        """The pruned layers this object updates."""
        return list(self._layers)

    def global_step(self) -> tf.Tensor:
        """Returns the current global step as an int64 tensor.

        Raises:
            ValueError: If no `global_step` was given and the model has no
                optimizer.
        """
        step = self._global_step
        if step is None:
            optimizer = getattr(self._model, "optimizer", None)
            if optimizer is None:
                raise ValueError(
                    "Pruning needs a step: pass `global_step=` (for example "
                    "`optimizer.iterations`) or compile the model first. "
                    f"Received: global_step=None, model.optimizer={optimizer}"
                )
            step = optimizer.iterations
        elif callable(step):
            step = step()
        return tf.cast(step, tf.int64)

    def sparsity(self, hparams: PruningHParams, step: Any) -> tf.Tensor:
        """Returns the target sparsity at `step` before per-weight scaling."""
        if self._sparsity is not None:
            return tf.cast(self._sparsity, tf.float32)
        return schedule.target_sparsity(hparams, step)

    def any_update_due(self) -> bool:
        """Whether some layer's masks are due at the current step (eager).

        Evaluates the update rule in Python (`schedule.update_is_due`) on the
        step and the layers' last update steps, which are read again after
        each update this object runs. `UpdatePruningStep` calls the compiled
        update only when this is true, so steps without an update cost one
        variable read.
        """
        step = int(self.global_step())
        if self._last_steps is None:
            self._last_steps = [
                int(layer.last_mask_update_step.numpy())
                for layer in self._layers
            ]
        if self._scheme == "global":
            hparams = self._spec or self._layers[0].hparams
            return schedule.update_is_due(hparams, step, self._last_steps[0])
        return any(
            schedule.update_is_due(
                self._spec or layer.hparams, step - delay, last
            )
            for layer, delay, last in zip(
                self._layers, self._delays, self._last_steps, strict=True
            )
        )

    def refresh(self) -> None:
        """Forgets the cached last update steps (after a model reload or an
        update made by another object)."""
        self._last_steps = None

    def mask_update_op(self) -> tf.Tensor:
        """Updates every mask now, whatever the schedule; returns `True`."""
        self._last_steps = None  # Read again after any update.
        return self._conditional_update(tf.constant(True))

    def conditional_mask_update_op(self) -> tf.Tensor:
        """Updates the masks that are due at the current step.

        Runs eagerly or inside a `tf.function` (one `tf.cond` per layer).

        Returns:
            A boolean scalar: whether any layer updated.
        """
        self._last_steps = None
        return self._conditional_update(tf.constant(False))

    @property
    def scheme(self) -> str:
        """The layers' `pruning_scheme`."""
        return self._scheme

    def layer_steps(self, step: Any) -> list[tf.Tensor]:
        """Returns each layer's schedule step at global `step`: the step
        itself, minus the layer's delay under the `"layerwise"` scheme."""
        step = tf.cast(step, tf.int64)
        return [step - delay for delay in self._delays]

    def _update_all_layers(self, force: tf.Tensor) -> tf.Tensor:
        step = self.global_step()
        if self._scheme == "global":
            return self._maybe_update_global(step, force)
        updated = [
            self._maybe_update_layer(layer, layer_step, force)
            for layer, layer_step in zip(
                self._layers, self.layer_steps(step), strict=True
            )
        ]
        return tf.reduce_any(tf.stack(updated))

    def _maybe_update_global(
        self, step: tf.Tensor, force: tf.Tensor
    ) -> tf.Tensor:
        hparams = self._spec or self._layers[0].hparams
        due = tf.logical_or(
            force,
            schedule.should_update_masks(
                hparams, step, self._layers[0].last_mask_update_step
            ),
        )

        def update() -> tf.Tensor:
            entries = accessors.pruned_weights(self._layers)
            _update_global(
                entries, hparams, self.sparsity(hparams, step), self._xla
            )
            for layer in self._layers:
                layer.last_mask_update_step.assign(step)
            return tf.constant(True)

        return tf.cond(due, update, lambda: tf.constant(False))

    def _maybe_update_layer(
        self, layer: PruneLowMagnitude, step: tf.Tensor, force: tf.Tensor
    ) -> tf.Tensor:
        hparams = self._spec or layer.hparams
        due = tf.logical_or(
            force,
            schedule.should_update_masks(
                hparams, step, layer.last_mask_update_step
            ),
        )

        def update() -> tf.Tensor:
            sparsity = self.sparsity(hparams, step)
            for entry in layer.pruned_weights:
                _update_weight(entry, hparams, sparsity, self._xla)
            layer.last_mask_update_step.assign(step)
            return tf.constant(True)

        return tf.cond(due, update, lambda: tf.constant(False))

    def target_sparsities(self) -> dict[str, tf.Tensor]:
        """Returns each pruned weight's target sparsity at the current step.

        Under the `"global"` scheme this is the model's target: single
        weights end wherever the shared threshold leaves them.
        """
        steps = self.layer_steps(self.global_step())
        return {
            entry.name: self.sparsity(self._spec or layer.hparams, layer_step)
            * entry.sparsity_scale
            for layer, layer_step in zip(self._layers, steps, strict=True)
            for entry in layer.pruned_weights
        }

    def add_pruning_summaries(self, step: Any = None) -> None:
        """Writes contrib's scalars to the default `tf.summary` writer.

        `<name>/sparsity` (the schedule's target) and
        `<name>/last_mask_update_step` once per hparams name (from the first
        layer with that name), and
        `<weight>/sparsity`, `<weight>/target_sparsity` and
        `<weight>/threshold` per pruned weight.
        """
        step = self.global_step() if step is None else step
        first_layer_by_name = {}
        for layer in self._layers:
            hparams = self._spec or layer.hparams
            first_layer_by_name.setdefault(hparams.name, layer)
        for name, layer in first_layer_by_name.items():
            tf.summary.scalar(
                f"{name}/sparsity",
                self.sparsity(self._spec or layer.hparams, step),
                step=step,
            )
            tf.summary.scalar(
                f"{name}/last_mask_update_step",
                layer.last_mask_update_step,
                step=step,
            )
        for name, target in self.target_sparsities().items():
            tf.summary.scalar(f"{name}/target_sparsity", target, step=step)
        for entry in accessors.pruned_weights(self._layers):
            tf.summary.scalar(
                f"{entry.name}/sparsity",
                1.0 - tf.reduce_mean(tf.cast(entry.mask, tf.float32)),
                step=step,
            )
            tf.summary.scalar(
                f"{entry.name}/threshold", entry.threshold, step=step
            )

    def print_hparams(self) -> None:
        """Logs the hparams of each pruned layer as JSON."""
        for layer in self._layers:
            hparams = self._spec or layer.hparams
            logging.info("%s: %s", layer.name, hparams.to_json())


def _update_weight(
    entry: PrunedWeight,
    hparams: PruningHParams,
    sparsity: tf.Tensor,
    xla: bool = False,
    mask_weight: bool = True,
) -> None:
    """Computes and assigns one weight's new threshold and mask.

    With `mask_weight` the weight is also set to `weight * mask`, so the
    next forward pass sees the new mask (the contrib mirror masks in its
    forward pass instead, and passes `False`).

    Magnitudes of already-pruned weights count as zero and the new mask is
    ANDed with the old one, so masks only shrink. A weight with no elements
    has nothing to update. Under `sparsity_m_by_n` the mask keeps the
    largest `N - M` of each group and the threshold is left as it is. A NaN
    or Inf in an unpruned entry cannot be
    ranked: that weight keeps its mask and threshold, and the update raises
    `tf.errors.InvalidArgumentError` naming it (under XLA, where ops cannot
    raise, it only keeps them). Other weights update as usual.
    """
    if entry.mask.shape.num_elements() == 0:
        return
    if _fusable([entry], hparams, xla):
        _update_fused(
            [entry],
            tf.cast(sparsity * entry.sparsity_scale, tf.float32),
            hparams.threshold_decay,
            mask_weight,
        )
        return
    old_mask = entry.mask
    magnitudes = _checked_magnitudes(entry)

    def assign_new_mask() -> tf.Tensor:
        if hparams.m_by_n is not None:
            new_mask = mask_lib.m_by_n_mask(magnitudes, *hparams.m_by_n)
        else:
            update = mask_lib.block_magnitude_mask(
                magnitudes,
                tf.cast(sparsity * entry.sparsity_scale, tf.float32),
                entry.threshold,
                hparams.threshold_decay,
                entry.block_dims,
                hparams.block_pooling_function,
                xla,
                entry.input_axes,
            )
            entry.threshold.assign(
                tf.cast(update.threshold, entry.threshold.dtype)
            )
            new_mask = update.mask
        combined = tf.cast(new_mask, old_mask.dtype) * old_mask
        entry.mask.assign(combined)
        if mask_weight:
            entry.weight.assign(
                entry.weight * tf.cast(combined, entry.weight.dtype)
            )
        return tf.constant(True)

    finite = tf.reduce_all(tf.math.is_finite(magnitudes))
    tf.cond(finite, assign_new_mask, lambda: tf.constant(False))


def _fusable(
    entries: list[PrunedWeight], hparams: PruningHParams, xla: bool
) -> bool:
    """Whether `fused_update` can run these weights' element-wise update:
    not under XLA, no N:M, no blocks, one float32 or float64 dtype."""
    dtypes = {tf.as_dtype(e.weight.dtype) for e in entries}
    return (
        not xla
        and hparams.m_by_n is None
        and len(dtypes) == 1
        and dtypes <= set(fused_update.FUSED_DTYPES)
        and all(
            tf.as_dtype(e.mask.dtype) in fused_update.FUSED_MASK_DTYPES
            and mask_lib.is_elementwise(
                e.mask.shape, e.block_dims, e.input_axes
            )
            for e in entries
        )
    )


def _update_fused(
    entries: list[PrunedWeight],
    sparsity: tf.Tensor,
    threshold_decay: float,
    mask_weight: bool,
) -> None:
    """The element-wise update (one threshold over `entries`) in two host
    passes per weight (`fused_update`): the same masks and thresholds as
    the general path, which raises the same way on NaN or Inf."""
    weights = [tf.convert_to_tensor(e.weight) for e in entries]
    masks = [tf.convert_to_tensor(e.mask) for e in entries]
    total = sum(w.shape.num_elements() for w in weights)
    kth, finite = fused_update.kth_largest_magnitude(
        weights, masks, mask_lib.num_kept(total, sparsity)
    )
    threshold = mask_lib.decayed_threshold(
        kth, entries[0].threshold, threshold_decay
    )

    def assign_new_masks() -> tf.Tensor:
        for entry in entries:
            entry.threshold.assign(tf.cast(threshold, entry.threshold.dtype))
        fused_update.assign_at_threshold(
            [e.weight for e in entries],
            [e.mask for e in entries],
            threshold,
            mask_weight,
        )
        return tf.constant(True)

    tf.cond(finite, assign_new_masks, lambda: tf.constant(False))
    names = ", ".join(repr(e.name) for e in entries)
    tf.debugging.Assert(
        finite,
        [
            f"model_pruning: weight {names} holds NaN or Inf, so its "
            "magnitudes cannot be ranked; its mask was not updated"
        ],
    )


def _checked_magnitudes(entry: PrunedWeight) -> tf.Tensor:
    """`|w|` with pruned entries at 0; raises on NaN or Inf (see above)."""
    return tf.debugging.check_numerics(
        tf.abs(mask_lib.apply_mask(entry.weight, entry.mask)),
        f"model_pruning: weight {entry.name!r} holds NaN or Inf, so its "
        "magnitudes cannot be ranked; its mask was not updated",
    )


def _update_global(
    entries: list[PrunedWeight],
    hparams: PruningHParams,
    sparsity: tf.Tensor,
    xla: bool,
) -> None:
    """Assigns one threshold over all `entries` and their new masks.

    Keeps the `round_half_even((1 - s) * N)` largest unpruned magnitudes of
    all `N` weights (ties at the threshold kept). A NaN or Inf anywhere
    leaves every mask as it was (and raises, as in `_update_weight`).
    """
    entries = [e for e in entries if e.mask.shape.num_elements()]
    if not entries:
        return
    if _fusable(entries, hparams, xla):
        _update_fused(
            entries,
            tf.cast(sparsity, tf.float32),
            hparams.threshold_decay,
            True,
        )
        return
    old_masks = [tf.identity(e.mask) for e in entries]
    magnitudes = [_checked_magnitudes(e) for e in entries]

    def assign_new_masks() -> tf.Tensor:
        threshold, masks = mask_lib.global_magnitude_masks(
            magnitudes,
            tf.cast(sparsity, tf.float32),
            entries[0].threshold,
            hparams.threshold_decay,
            xla,
        )
        for entry, mask, old in zip(entries, masks, old_masks, strict=True):
            entry.threshold.assign(tf.cast(threshold, entry.threshold.dtype))
            combined = tf.cast(mask, old.dtype) * old
            entry.mask.assign(combined)
            entry.weight.assign(
                entry.weight * tf.cast(combined, entry.weight.dtype)
            )
        return tf.constant(True)

    finite = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(m)) for m in magnitudes]
    )
    tf.cond(finite, assign_new_masks, lambda: tf.constant(False))


def _common_scheme(
    layers: list[PruneLowMagnitude], spec: PruningHParams | None
) -> str:
    """Returns the layers' shared `pruning_scheme`, checking it is shared."""
    if spec is not None:
        return spec.pruning_scheme
    specs = {layer.hparams for layer in layers}
    schemes = sorted({s.pruning_scheme for s in specs})
    if len(schemes) > 1:
        raise ValueError(
            "All pruned layers of one model must use the same "
            f"pruning_scheme. Received: pruning_scheme values {schemes}"
        )
    if schemes[0] != "uniform" and len(specs) > 1:
        raise ValueError(
            f"pruning_scheme={schemes[0]!r} runs one schedule for the whole "
            "model, so every pruned layer needs the same hparams. Received: "
            f"{len(specs)} different hparams"
        )
    return schemes[0]
