"""Assigning new masks: the update of one weight, of a group of weights
under one threshold, and the due-check around them.

`Pruning` (over a Keras model) and contrib's `Pruning` (over registered
weights) both call `update_when_due`: the schedule says whether masks are
due at the step, the weights update, and the step is recorded.

Magnitudes of already-pruned weights count as zero and each new mask is
ANDed with the old one, so masks only shrink. A NaN or Inf in an unpruned
entry cannot be ranked: that weight keeps its mask and threshold, and the
update raises `tf.errors.InvalidArgumentError` naming it (under XLA, where
ops cannot raise, it only keeps them).
"""

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from model_pruning import fused_update
from model_pruning import mask as mask_lib
from model_pruning import schedule
from model_pruning.hparams import PruningHParams
from model_pruning.wrapper import PrunedWeight


def update_when_due(
    hparams: PruningHParams,
    entries: Sequence[PrunedWeight],
    step: tf.Tensor,
    last_update_steps: Sequence[Any],
    sparsity: Callable[[], tf.Tensor],
    force: Any = False,
    *,
    one_threshold: bool = False,
    xla: bool = False,
    mask_weight: bool = True,
) -> tf.Tensor:
    """Updates the masks of `entries` when `schedule.should_update_masks`
    says they are due at `step` (or `force`), and records the step.

    Args:
        hparams: The schedule and mask rule.
        entries: The weights to update.
        step: The (schedule) step, an integer tensor.
        last_update_steps: Variables holding the last update step: the
            first is read for the due-check, all are set to `step`.
        sparsity: Returns the target sparsity at `step` before per-weight
            scaling; called only when the update runs.
        force: Update whatever the schedule says. Defaults to `False`.
        one_threshold: One threshold across all `entries` (the `"global"`
            scheme) instead of one per weight. Defaults to `False`.
        xla: The update runs inside an XLA-compiled function, so the
            selection uses TF ops only. Defaults to `False`.
        mask_weight: Also set each weight to `weight * mask` (contrib's
            mirror masks in its forward pass instead). Defaults to `True`.

    Returns:
        A boolean scalar: whether the masks were updated.
    """
    due = tf.logical_or(
        force,
        schedule.should_update_masks(hparams, step, last_update_steps[0]),
    )

    def update() -> tf.Tensor:
        target = sparsity()
        if one_threshold:
            update_global(entries, hparams, target, xla)
        else:
            for entry in entries:
                update_weight(entry, hparams, target, xla, mask_weight)
        for last in last_update_steps:
            last.assign(tf.cast(step, last.dtype))
        return tf.constant(True)

    return tf.cond(due, update, lambda: tf.constant(False))


def update_weight(
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
        tf.abs(mask_lib.zero_pruned(entry.weight, entry.mask)),
        f"model_pruning: weight {entry.name!r} holds NaN or Inf, so its "
        "magnitudes cannot be ranked; its mask was not updated",
    )


def update_global(
    entries: list[PrunedWeight],
    hparams: PruningHParams,
    sparsity: tf.Tensor,
    xla: bool,
) -> None:
    """Assigns one threshold over all `entries` and their new masks.

    Keeps the `round_half_even((1 - s) * N)` largest unpruned magnitudes of
    all `N` weights (ties at the threshold kept). A NaN or Inf anywhere
    leaves every mask as it was (and raises, as in `update_weight`).
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
