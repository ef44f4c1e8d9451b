"""Assigning new masks: the update of one weight, of a group of weights
under one threshold, and the due-check around them.

`Pruning` (over a Keras model) and contrib's `Pruning` (over registered
weights) both call `update_when_due`: the schedule says whether masks are
due at the step, the weights update, and the step is recorded.

Magnitudes of already-pruned weights count as zero and each new mask is
ANDed with the old one, so masks only shrink. A NaN or Inf in an unpruned
entry cannot be ranked: that weight keeps its mask and threshold, and the
update raises naming it: `tf.errors.InvalidArgumentError` on TensorFlow
(under XLA, where ops cannot raise, it only keeps them), `ValueError` on
JAX and PyTorch.
"""

import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from model_pruning import backends
from model_pruning import fused_update
from model_pruning import mask as mask_lib
from model_pruning import schedule
from model_pruning.hparams import PruningHParams
from model_pruning.wrapper import PrunedWeight


def update_when_due(
    hparams: PruningHParams,
    entries: Sequence[PrunedWeight],
    step: Any,
    last_update_steps: Sequence[Any],
    sparsity: Callable[[], Any],
    force: Any = False,
    *,
    one_threshold: bool = False,
    xla: bool = False,
    mask_weight: bool = True,
) -> Any:
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
        Whether the masks were updated: a boolean scalar tensor on
        TensorFlow (see `backends.cond`), a Python bool elsewhere.
    """
    due = ops.logical_or(
        force,
        schedule.should_update_masks(hparams, step, last_update_steps[0]),
    )

    def update() -> None:
        target = sparsity()
        if one_threshold:
            update_global(entries, hparams, target, xla)
        else:
            for entry in entries:
                update_weight(entry, hparams, target, xla, mask_weight)
        for last in last_update_steps:
            last.assign(ops.cast(step, last.dtype))

    return backends.cond(due, update)


def update_weight(
    entry: PrunedWeight,
    hparams: PruningHParams,
    sparsity: Any,
    xla: bool = False,
    mask_weight: bool = True,
) -> None:
    """Computes and assigns one weight's new threshold and mask.

    With `mask_weight` the weight is also set to `weight * mask`, so the
    next forward pass sees the new mask (the contrib mirror masks in its
    forward pass instead, and passes `False`). A weight with no elements
    has nothing to update. Under `sparsity_m_by_n` the mask keeps the
    largest `N - M` of each group and the threshold is left as it is. A
    weight holding NaN or Inf keeps its mask and threshold and raises (see
    the module docstring); other weights update as usual.
    """
    sparsity = ops.cast(sparsity * entry.sparsity_scale, "float32")

    def new_masks(magnitudes: list, previous: Any) -> tuple[Any, list]:
        if hparams.m_by_n is not None:
            return None, [mask_lib.m_by_n_mask(magnitudes[0], *hparams.m_by_n)]
        update = mask_lib.block_magnitude_mask(
            magnitudes[0],
            sparsity,
            previous,
            hparams.threshold_decay,
            entry.block_dims,
            hparams.block_pooling_function,
            xla,
            entry.input_axes,
        )
        return update.threshold, [update.mask]

    _update([entry], hparams, sparsity, xla, mask_weight, new_masks)


def update_global(
    entries: list[PrunedWeight],
    hparams: PruningHParams,
    sparsity: Any,
    xla: bool,
) -> None:
    """Assigns one threshold over all `entries` and their new masks.

    Keeps the `round_half_even((1 - s) * N)` largest unpruned magnitudes of
    all `N` weights (ties at the threshold kept). A NaN or Inf anywhere
    leaves every mask as it was (and raises, as in `update_weight`).
    """
    sparsity = ops.cast(sparsity, "float32")

    def new_masks(magnitudes: list, previous: Any) -> tuple[Any, list]:
        return mask_lib.global_magnitude_masks(
            magnitudes, sparsity, previous, hparams.threshold_decay, xla
        )

    _update(entries, hparams, sparsity, xla, True, new_masks)


def _update(
    entries: list[PrunedWeight],
    hparams: PruningHParams,
    sparsity: Any,
    xla: bool,
    mask_weight: bool,
    new_masks: Callable[[list, Any], tuple[Any, list]],
) -> None:
    """Assigns `new_masks(magnitudes, previous threshold)`'s threshold
    (unless `None`) and masks ANDed with the old ones, when every magnitude
    is finite; the non-empty `entries` share the first one's threshold."""
    entries = [e for e in entries if math.prod(e.mask.shape)]
    if not entries:
        return
    if _fusable(entries, hparams, xla):
        _update_fused(entries, sparsity, hparams.threshold_decay, mask_weight)
        return
    magnitudes = [
        ops.abs(mask_lib.zero_pruned(e.weight, e.mask)) for e in entries
    ]
    if backends.is_tensorflow():
        import tensorflow as tf

        magnitudes = [
            tf.debugging.check_numerics(m, _not_finite_message([e]))
            for m, e in zip(magnitudes, entries, strict=True)
        ]

    def assign_new_masks() -> None:
        threshold, masks = new_masks(magnitudes, entries[0].threshold)
        for entry, mask in zip(entries, masks, strict=True):
            if threshold is not None:
                entry.threshold.assign(
                    ops.cast(threshold, entry.threshold.dtype)
                )
            combined = ops.cast(mask, entry.mask.dtype) * entry.mask
            entry.mask.assign(combined)
            if mask_weight:
                entry.weight.assign(
                    entry.weight * ops.cast(combined, entry.weight.dtype)
                )

    finite = ops.all(ops.stack([ops.all(ops.isfinite(m)) for m in magnitudes]))
    updated = backends.cond(finite, assign_new_masks)
    if not backends.is_tensorflow():  # check_numerics raised there
        _check_finite(updated, entries)


def _fusable(
    entries: list[PrunedWeight], hparams: PruningHParams, xla: bool
) -> bool:
    """Whether `fused_update` can run these weights' element-wise update:
    not under XLA, no N:M, no blocks, one float32 or float64 dtype, no
    weight split over several devices (a replicated one is read from one
    device; see `backends.is_sharded`)."""
    dtypes = {keras.backend.standardize_dtype(e.weight.dtype) for e in entries}
    return (
        not xla
        and hparams.m_by_n is None
        and len(dtypes) == 1
        and dtypes <= set(fused_update.FUSED_DTYPES)
        and all(
            keras.backend.standardize_dtype(e.mask.dtype)
            in fused_update.FUSED_MASK_DTYPES
            and mask_lib.is_elementwise(
                e.mask.shape, e.block_dims, e.input_axes
            )
            and not backends.is_sharded(e.weight.value)
            for e in entries
        )
    )


def _update_fused(
    entries: list[PrunedWeight],
    sparsity: Any,
    threshold_decay: float,
    mask_weight: bool,
) -> None:
    """The element-wise update (one threshold over `entries`) in two host
    passes per weight (`fused_update`): the same masks and thresholds as
    the general path, which raises the same way on NaN or Inf."""
    total = sum(math.prod(e.weight.shape) for e in entries)
    kth, finite = fused_update.kth_largest_magnitude(
        [e.weight for e in entries],
        [e.mask for e in entries],
        mask_lib.num_kept(total, sparsity),
    )
    threshold = mask_lib.decayed_threshold(
        kth, entries[0].threshold, threshold_decay
    )

    def assign_new_masks() -> None:
        for entry in entries:
            entry.threshold.assign(ops.cast(threshold, entry.threshold.dtype))
        fused_update.assign_at_threshold(
            [e.weight for e in entries],
            [e.mask for e in entries],
            threshold,
            mask_weight,
        )

    _check_finite(backends.cond(finite, assign_new_masks), entries)


def _not_finite_message(entries: list[PrunedWeight]) -> str:
    names = ", ".join(repr(e.name) for e in entries)
    return (
        f"model_pruning: weight {names} holds NaN or Inf, so its "
        "magnitudes cannot be ranked; its mask was not updated"
    )


def _check_finite(finite: Any, entries: list[PrunedWeight]) -> None:
    """Raises when an update was skipped for NaN or Inf: a graph assertion
    on TensorFlow (`tf.errors.InvalidArgumentError`), `ValueError` on the
    backends that update eagerly."""
    if backends.is_tensorflow():
        import tensorflow as tf

        tf.debugging.Assert(finite, [_not_finite_message(entries)])
    elif not finite:
        raise ValueError(
            f"{_not_finite_message(entries)}. Received: a weight with "
            "non-finite entries"
        )
