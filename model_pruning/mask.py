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
from typing import Any
from typing import NamedTuple

from keras import ops

from model_pruning import backends
from model_pruning import selection


class MaskUpdate(NamedTuple):
    """A new threshold and mask for one weight."""

    threshold: Any
    mask: Any


def zero_pruned(weight: Any, mask: Any) -> Any:
    """Returns `weight` where `mask` is 1 and `+0.0` where it is 0.

    The same values as `weight * mask`, except that a masked negative weight
    becomes `+0.0` rather than `-0.0`, so masked entries are plain zeros in
    every saved or encoded form.
    """
    # JAX's `where` takes no Keras Variable.
    weight, mask = ops.convert_to_tensor(weight), ops.convert_to_tensor(mask)
    return ops.where(
        ops.not_equal(mask, 0), weight, ops.zeros((), weight.dtype)
    )


def num_kept(size: int, sparsity: Any) -> Any:
    """Returns `round_half_even(size * (1 - sparsity))` as an int32 tensor."""
    kept = ops.round(ops.cast(size, "float32") * (1.0 - sparsity))
    return ops.cast(kept, "int32")


def decayed_threshold(
    current: Any, previous: Any, threshold_decay: float
) -> Any:
    """`(1 - decay) * current + decay * previous`; `current` when decay is 0."""
    if not threshold_decay:
        return current
    return (1.0 - threshold_decay) * current + threshold_decay * ops.cast(
        previous, current.dtype
    )


def is_elementwise(
    shape: Any,
    block_dims: tuple[int, int],
    input_axes: int | None = None,
) -> bool:
    """Whether `block_magnitude_mask` masks a weight of `shape` element by
    element: blocks of 1x1, or a weight it does not read as a matrix."""
    if tuple(block_dims) == (1, 1):
        return True
    if input_axes is not None and len(shape) > 2:
        return False
    return len([d for d in shape if d != 1]) != 2


def magnitude_mask(
    magnitudes: Any,
    sparsity: Any,
    previous_threshold: Any,
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
    magnitudes: Any,
    sparsity: Any,
    previous_threshold: Any,
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
    if input_axes is not None and len(shape) > 2:
        split = [math.prod(shape[:input_axes]), math.prod(shape[input_axes:])]
        squeezed = ops.reshape(magnitudes, split)
    else:
        squeezed = ops.squeeze(magnitudes)
    rows, cols = squeezed.shape
    block = (
        rows if block_dims[0] == -1 else block_dims[0],
        cols if block_dims[1] == -1 else block_dims[1],
    )
    pooled = _pool_blocks(squeezed, block, pooling_function)
    update = magnitude_mask(
        pooled, sparsity, previous_threshold, threshold_decay, xla
    )
    expanded = ops.repeat(
        ops.repeat(update.mask, block[0], axis=0), block[1], axis=1
    )
    mask = ops.reshape(expanded[:rows, :cols], tuple(shape))
    return MaskUpdate(update.threshold, mask)


def _pool_blocks(
    values: Any, block: tuple[int, int], pooling_function: str
) -> Any:
    """Pools a rank-2 tensor over blocks tiled from its top-left corner.

    The input is padded at the bottom and right only, so block `(i, j)`
    covers rows `i*h:(i+1)*h` and columns `j*w:(j+1)*w`: exactly what the
    expanded mask covers. (TF's SAME padding also pads at the top and left
    when the padding is 2 or more, which would misalign the blocks.) AVG
    averages only the entries inside the tensor.
    """
    rows, cols = values.shape
    pad = [[0, -rows % block[0]], [0, -cols % block[1]]]

    def pool(x: Any, pooling: Any) -> Any:
        image = ops.expand_dims(ops.expand_dims(ops.pad(x, pad), 0), -1)
        pooled = pooling(
            image,
            block,
            strides=block,
            padding="valid",
            data_format="channels_last",
        )
        return pooled[0, :, :, 0]

    if pooling_function == "MAX":
        # Magnitudes are non-negative, so zero padding never wins a max.
        return pool(values, ops.max_pool)
    block_sums = pool(values, ops.average_pool)
    valid_fraction = pool(ops.ones_like(values), ops.average_pool)
    return block_sums / valid_fraction


def global_magnitude_masks(
    magnitudes: list[Any],
    sparsity: Any,
    previous_threshold: Any,
    threshold_decay: float,
    xla: bool = False,
) -> tuple[Any, list[Any]]:
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
    total = sum(math.prod(m.shape) for m in magnitudes)
    k = num_kept(total, sparsity)
    threshold = decayed_threshold(
        selection.kth_largest(magnitudes, k, xla=xla),
        previous_threshold,
        threshold_decay,
    )
    masks = [ops.cast(m >= threshold, m.dtype) for m in magnitudes]
    return threshold, masks


def m_by_n_mask(magnitudes: Any, zeros: int, group: int) -> Any:
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
    shape = tuple(magnitudes.shape)
    if len(shape) < 2:
        raise ValueError(
            "N:M sparsity needs a weight of rank >= 2 (groups run along "
            f"axis -2). Received: shape={list(shape)}"
        )
    rank = len(shape)
    # Move axis -2 last, pad it to whole groups, split it, pick per group.
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    moved = ops.transpose(magnitudes, perm)
    padding = -shape[-2] % group
    padded = ops.pad(moved, [[0, 0]] * (rank - 1) + [[0, padding]])
    groups = (shape[-2] + padding) // group
    moved_shape = tuple(shape[i] for i in perm[:-1])
    grouped = ops.reshape(padded, (*moved_shape, groups, group))
    if backends.is_tensorflow():
        _, kept = ops.top_k(grouped, k=group - zeros, sorted=False)
    else:
        # torch.topk orders ties arbitrarily; a stable sort (Keras' argsort
        # on JAX and PyTorch) keeps the lower index first.
        kept = ops.argsort(-grouped, axis=-1)[..., : group - zeros]
    one_hot = ops.one_hot(kept, group, dtype=magnitudes.dtype)
    mask = ops.sum(one_hot, axis=-2)
    mask = ops.reshape(mask, (*moved_shape, groups * group))[..., : shape[-2]]
    return ops.transpose(mask, perm)
