"""Mask math: thresholds and masks as pure functions of tensors.

Nothing here touches a variable; `mask_update.py` assigns the results.

The rule (contrib's final one): keep `k = round_half_even(n * (1 - s))` of the
`n` candidate magnitudes; the threshold is the k-th largest magnitude,
smoothed by `threshold_decay`; the mask keeps every magnitude at or above the
threshold. Ties at the threshold are all kept, so a tensor with many equal
magnitudes can keep more than `k`. When `k` is 0 the threshold is the next
float above the largest magnitude and the mask is all zeros.
"""

import math
from typing import NamedTuple

import tensorflow as tf

from model_pruning import selection


class MaskUpdate(NamedTuple):
    """A new threshold and mask for one weight."""

    threshold: tf.Tensor
    mask: tf.Tensor


def zero_pruned(weight: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Returns `weight` where `mask` is 1 and `+0.0` where it is 0.

    The same values as `weight * mask`, except that a masked negative weight
    becomes `+0.0` rather than `-0.0`, so masked entries are plain zeros in
    every saved or encoded form.
    """
    return tf.where(tf.not_equal(mask, 0), weight, tf.zeros([], weight.dtype))


def num_kept(size: int, sparsity: tf.Tensor) -> tf.Tensor:
    """Returns `round_half_even(size * (1 - sparsity))` as an int32 tensor."""
    kept = tf.round(tf.cast(size, tf.float32) * (1.0 - sparsity))
    return tf.cast(kept, tf.int32)


def decayed_threshold(
    current: tf.Tensor, previous: tf.Tensor, threshold_decay: float
) -> tf.Tensor:
    """`(1 - decay) * current + decay * previous`; `current` when decay is 0."""
    if not threshold_decay:
        return current
    return (1.0 - threshold_decay) * current + threshold_decay * tf.cast(
        previous, current.dtype
    )


def is_elementwise(
    shape: tf.TensorShape,
    block_dims: tuple[int, int],
    input_axes: int | None = None,
) -> bool:
    """Whether `block_magnitude_mask` masks a weight of `shape` element by
    element: blocks of 1x1, or a weight it does not read as a matrix."""
    if tuple(block_dims) == (1, 1):
        return True
    if input_axes is not None and shape.rank > 2:
        return False
    return len([d for d in shape if d != 1]) != 2


def magnitude_mask(
    magnitudes: tf.Tensor,
    sparsity: tf.Tensor,
    previous_threshold: tf.Tensor,
    threshold_decay: float,
    xla: bool = False,
) -> MaskUpdate:
    """Element-wise magnitude mask.

    ```
    k         = round_half_even(size * (1 - sparsity))
    threshold = (1 - decay) * kth_largest(magnitudes, k) + decay * previous
    mask      = magnitudes >= threshold
    ```

    Args:
        magnitudes: Non-negative tensor of `|w|` (pruned entries already 0).
        sparsity: Float scalar in `[0, 1)`.
        previous_threshold: The stored threshold, used when `threshold_decay`
            is positive.
        threshold_decay: Python float in `[0, 1)`.
        xla: Whether this runs inside an XLA-compiled function, where the
            selection must use TF ops only (see `selection.kth_largest`).
            Defaults to `False`.

    Returns:
        A `MaskUpdate` with the threshold and a mask of `magnitudes`' dtype.
    """
    threshold, (mask,) = global_magnitude_masks(
        [magnitudes], sparsity, previous_threshold, threshold_decay, xla
    )
    return MaskUpdate(threshold, mask)


def block_magnitude_mask(
    magnitudes: tf.Tensor,
    sparsity: tf.Tensor,
    previous_threshold: tf.Tensor,
    threshold_decay: float,
    block_dims: tuple[int, int],
    pooling_function: str,
    xla: bool = False,
    input_axes: int | None = None,
) -> MaskUpdate:
    """Block mask of a weight that squeezes to rank 2 (contrib's rule), or
    of a higher-rank weight read as the matrix it multiplies with.

    `|w|` is pooled over blocks tiled from the top-left corner (AVG or MAX;
    edge blocks are partial and AVG averages their valid entries), the
    element-wise rule runs on the pooled matrix (the sparsity is the fraction
    of blocks, the threshold is in pooled units), and the block mask is
    expanded back. A weight of rank 3 or more with `input_axes` is read as
    the matrix `[prod(shape[:input_axes]), prod(shape[input_axes:])]` (an
    `EinsumDense` kernel as the fully-connected weight it computes with).
    Any other weight that does not squeeze to rank 2, or a block of `1x1`,
    uses `magnitude_mask`.

    Args:
        magnitudes: Non-negative tensor of `|w|`.
        sparsity: Float scalar in `[0, 1)`.
        previous_threshold: The stored threshold.
        threshold_decay: Python float in `[0, 1)`.
        block_dims: `(height, width)`; `-1` means the whole dimension.
        pooling_function: `"AVG"` or `"MAX"`.
        xla: As in `magnitude_mask`. Defaults to `False`.
        input_axes: For a weight of rank 3 or more, how many leading axes
            form the matrix's rows, or `None`. Defaults to `None`.

    Returns:
        A `MaskUpdate` whose mask has the shape of `magnitudes`.
    """
    shape = magnitudes.shape
    if is_elementwise(shape, block_dims, input_axes):
        return magnitude_mask(
            magnitudes, sparsity, previous_threshold, threshold_decay, xla
        )
    if input_axes is not None and shape.rank > 2:
        split = [math.prod(shape[:input_axes]), math.prod(shape[input_axes:])]
        squeezed = tf.reshape(magnitudes, split)
    else:
        squeezed = tf.squeeze(magnitudes)
    rows, cols = squeezed.shape
    block = (
        rows if block_dims[0] == -1 else block_dims[0],
        cols if block_dims[1] == -1 else block_dims[1],
    )
    pooled = _pool_blocks(squeezed, block, pooling_function)
    update = magnitude_mask(
        pooled, sparsity, previous_threshold, threshold_decay, xla
    )
    expanded = tf.repeat(
        tf.repeat(update.mask, block[0], axis=0), block[1], axis=1
    )
    mask = tf.reshape(expanded[:rows, :cols], tf.shape(magnitudes))
    return MaskUpdate(update.threshold, mask)


def _pool_blocks(
    values: tf.Tensor, block: tuple[int, int], pooling_function: str
) -> tf.Tensor:
    """Pools a rank-2 tensor over blocks tiled from its top-left corner.

    The input is padded at the bottom and right only, so block `(i, j)`
    covers rows `i*h:(i+1)*h` and columns `j*w:(j+1)*w`: exactly what the
    expanded mask covers. (TF's SAME padding also pads at the top and left
    when the padding is 2 or more, which would misalign the blocks.) AVG
    averages only the entries inside the tensor.
    """
    rows, cols = values.shape
    pad = [[0, -rows % block[0]], [0, -cols % block[1]]]

    def pool(x: tf.Tensor, kind: str) -> tf.Tensor:
        return tf.nn.pool(
            tf.pad(x, pad)[tf.newaxis, :, :, tf.newaxis],
            window_shape=block,
            pooling_type=kind,
            strides=block,
            padding="VALID",
        )[0, :, :, 0]

    if pooling_function == "MAX":
        # Magnitudes are non-negative, so zero padding never wins a max.
        return pool(values, "MAX")
    block_sums = pool(values, "AVG")
    valid_fraction = pool(tf.ones_like(values), "AVG")
    return block_sums / valid_fraction


def global_magnitude_masks(
    magnitudes: list[tf.Tensor],
    sparsity: tf.Tensor,
    previous_threshold: tf.Tensor,
    threshold_decay: float,
    xla: bool = False,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """One threshold across several tensors (global magnitude pruning).

    ```
    N         = sum of the tensors' sizes
    k         = round_half_even(N * (1 - sparsity))
    threshold = (1 - decay) * kth_largest(all magnitudes, k)
                + decay * previous
    mask_i    = magnitudes_i >= threshold
    ```

    Args:
        magnitudes: Non-negative tensors of `|w|` of one float dtype.
        sparsity: Float scalar in `[0, 1)`: the fraction of all entries to
            mask.
        previous_threshold: As in `magnitude_mask`.
        threshold_decay: Python float in `[0, 1)`.
        xla: As in `magnitude_mask`. Defaults to `False`.

    Returns:
        `(threshold, masks)`, one mask per tensor, of its dtype.
    """
    total = sum(m.shape.num_elements() for m in magnitudes)
    k = num_kept(total, sparsity)
    threshold = decayed_threshold(
        selection.kth_largest(magnitudes, k, xla=xla),
        previous_threshold,
        threshold_decay,
    )
    masks = [tf.cast(m >= threshold, m.dtype) for m in magnitudes]
    return threshold, masks


def m_by_n_mask(magnitudes: tf.Tensor, zeros: int, group: int) -> tf.Tensor:
    """Keeps the `group - zeros` largest of every `group` weights (N:M).

    Groups are `group` consecutive entries along axis -2 (the input dimension
    of a Dense or convolution kernel). Exactly `group - zeros` entries of each
    group are kept; among equal magnitudes the lower index wins. When axis
    -2 is not a multiple of `group`, it is padded with zeros to one (as
    tfmot does): the padding counts among the pruned entries of the last
    group, so the padded weight is exactly N:M.

    Args:
        magnitudes: Non-negative tensor of rank at least 2.
        zeros: `M`, the zeros per group.
        group: `N`, the group size.

    Returns:
        A mask of `magnitudes`' shape and dtype.

    Raises:
        ValueError: If the rank is below 2.
    """
    shape = magnitudes.shape
    if shape.rank < 2:
        raise ValueError(
            "N:M sparsity needs a weight of rank >= 2 (groups run along "
            f"axis -2). Received: shape={shape.as_list()}"
        )
    rank = shape.rank
    # Move axis -2 last, pad it to whole groups, split it, pick per group.
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    moved = tf.transpose(magnitudes, perm)
    padding = -shape[-2] % group
    padded = tf.pad(moved, [[0, 0]] * (rank - 1) + [[0, padding]])
    groups = (shape[-2] + padding) // group
    grouped = tf.reshape(padded, moved.shape[:-1] + [groups, group])
    kept = tf.math.top_k(grouped, k=group - zeros, sorted=False).indices
    mask = tf.reduce_sum(tf.one_hot(kept, group, dtype=magnitudes.dtype), -2)
    mask = tf.reshape(mask, padded.shape)[..., : shape[-2]]
    return tf.transpose(mask, perm)
