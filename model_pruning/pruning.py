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
        updates_masks: Whether this object is what updates the layers'
            masks (keyword only). Training a pruned layer raises until some
            object with `updates_masks=True` manages it. `PruningSummaries`
            passes `False`: it only reads. Defaults to `True`.

    Raises:
        ValueError: If `model` has no pruned layers, or `spec` differs from
            the hparams a layer was wrapped with.

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
        if updates_masks:
            for layer in layers:
                layer.has_mask_updater = True
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

    def mask_update_op(self) -> tf.Tensor:
        """Updates every mask now, whatever the schedule; returns `True`."""
        return self._conditional_update(tf.constant(True))

    def conditional_mask_update_op(self) -> tf.Tensor:
        """Updates the masks that are due at the current step.

        Runs eagerly or inside a `tf.function` (one `tf.cond` per layer).

        Returns:
            A boolean scalar: whether any layer updated.
        """
        return self._conditional_update(tf.constant(False))

    def _update_all_layers(self, force: tf.Tensor) -> tf.Tensor:
        step = self.global_step()
        updated = [
            self._maybe_update_layer(layer, step, force)
            for layer in self._layers
        ]
        return tf.reduce_any(tf.stack(updated))

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
                _update_weight(entry, hparams, sparsity)
            layer.last_mask_update_step.assign(step)
            return tf.constant(True)

        return tf.cond(due, update, lambda: tf.constant(False))

    def target_sparsities(self) -> dict[str, tf.Tensor]:
        """Returns each pruned weight's target sparsity at the current step."""
        step = self.global_step()
        return {
            entry.name: self.sparsity(self._spec or layer.hparams, step)
            * entry.sparsity_scale
            for layer in self._layers
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
    entry: PrunedWeight, hparams: PruningHParams, sparsity: tf.Tensor
) -> None:
    """Computes and assigns one weight's new threshold and mask.

    Magnitudes of already-pruned weights count as zero and the new mask is
    ANDed with the old one, so masks only shrink. A weight with no elements
    has nothing to update. A NaN or Inf in an unpruned entry cannot be
    ranked: that weight keeps its mask and threshold, and the update raises
    `tf.errors.InvalidArgumentError` naming it (under XLA, where ops cannot
    raise, it only keeps them). Other weights update as usual.
    """
    if entry.mask.shape.num_elements() == 0:
        return
    old_mask = entry.mask
    magnitudes = tf.debugging.check_numerics(
        tf.abs(mask_lib.apply_mask(entry.weight, old_mask)),
        f"model_pruning: weight {entry.name!r} holds NaN or Inf, so its "
        "magnitudes cannot be ranked; its mask was not updated",
    )

    def assign_new_mask() -> tf.Tensor:
        update = mask_lib.block_magnitude_mask(
            magnitudes,
            tf.cast(sparsity * entry.sparsity_scale, tf.float32),
            entry.threshold,
            hparams.threshold_decay,
            entry.block_dims,
            hparams.block_pooling_function,
        )
        entry.threshold.assign(tf.cast(update.threshold, entry.threshold.dtype))
        entry.mask.assign(update.mask * old_mask)
        return tf.constant(True)

    finite = tf.reduce_all(tf.math.is_finite(magnitudes))
    tf.cond(finite, assign_new_mask, lambda: tf.constant(False))
