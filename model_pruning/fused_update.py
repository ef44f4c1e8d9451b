"""The element-wise mask update in two passes over the weights.

The update of a weight `w` with mask `m` at `k` kept entries is

```
magnitudes = |w| where m != 0, else 0
kth        = k-th largest of magnitudes   (next float above max if k == 0)
threshold  = (1 - decay) * kth + decay * previous_threshold
new_mask   = (magnitudes >= threshold) * m
new_weight = w * new_mask
```

Written as TensorFlow ops (`pruning._update_weight`'s general path) that is
about ten passes over the tensor: the masked copy, `abs`, the finiteness
check, the selection's counting pass, the compare, the cast, the AND with
the old mask, the multiply, the assigns, each writing a new tensor. Here it
is two passes:

1. `kth_largest_magnitude`, in NumPy over chunks that stay in cache: per
   chunk the magnitudes, whether they are finite, and the selection's
   count and extraction (`selection`'s `"host"` method: a sample gives a
   bracket `[lo, hi]` around the k-th largest; the pass counts the
   entries above it and extracts those inside; `np.partition` ranks the
   few extracted);
2. `assign_at_threshold`: the compare, the new mask and the masked
   weight, as one XLA loop that writes both in place for weights of 4M
   entries or more, and as TF ops below that.

Results are bit for bit those of the general path: the same k-th
largest, the same float32 arithmetic, `w * new_mask` with its signed
zeros. Only float32 and float64 weights with element-wise masks take this
path, in graph or eager mode, not inside an XLA-compiled caller; the rest
uses the general one. On JAX and PyTorch, which update eagerly, pass 1
reads the weights' and masks' host memory as NumPy arrays without a copy
(a weight split over several devices never comes here), and pass 2 is one
`jax.jit` loop donated the old buffers on JAX, and writes in place, chunk
by chunk, on PyTorch (the `keras.ops` form for a non-contiguous tensor).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from model_pruning import backends
from model_pruning import selection

FUSED_DTYPES = ("float32", "float64")
FUSED_MASK_DTYPES = (*FUSED_DTYPES, "uint8")
# Below this many entries the assigns run as TF ops: there XLA's call costs
# more than the passes it saves (measured: 1M entries, 4.8 ms with TF ops
# against 7.9 ms with XLA; 10M, 24 against 22; 37M, 82 against 66), and
# compiling costs about 30 ms once per weight.
_XLA_MIN_SIZE = 1 << 22


def kth_largest_magnitude(
    weights: list[Any], masks: list[Any], k: Any
) -> tuple[Any, Any]:
    """The k-th largest masked magnitude of `weights`, and finiteness.

    Args:
        weights: Float tensors (one dtype in `FUSED_DTYPES`).
        masks: Their masks (0 pruned, non-zero kept), same shapes, each
            of a dtype in `FUSED_MASK_DTYPES`.
        k: Integer scalar in `[0, total size]`.

    Returns:
        `(kth, finite)`: `selection.kth_largest` of `|w| * (m != 0)` over
        all entries (a scalar of the weights' dtype; unspecified when not
        finite), and whether every kept entry is finite.
    """
    if not backends.is_tensorflow():  # Eager: NumPy on the host arrays.
        k = int(ops.convert_to_numpy(k))
        kth, finite = _select(max(k, 1), *map(_host_array, [*weights, *masks]))
        if k == 0:
            kth = np.nextafter(kth, np.asarray(np.inf, kth.dtype))
        return ops.convert_to_tensor(kth), bool(finite)
    weights = [tf.convert_to_tensor(w) for w in weights]
    masks = [tf.convert_to_tensor(m) for m in masks]
    dtype = weights[0].dtype
    k = tf.cast(k, tf.int64)
    kth, finite = tf.numpy_function(
        _select,
        [tf.maximum(k, 1), *weights, *masks],
        [dtype, tf.bool],
        stateful=False,
    )
    kth = tf.ensure_shape(kth, [])
    return (
        tf.where(k > 0, kth, selection.next_up(kth)),
        tf.ensure_shape(finite, []),
    )


def assign_at_threshold(
    weights: list[Any],
    masks: list[Any],
    threshold: Any,
    mask_weight: bool = True,
) -> None:
    """Assigns each mask `where(|w| >= threshold, m, 0)` and each weight
    `w * new_mask`, in one pass per weight.

    A pruned entry (`m == 0`) stays 0 whatever `w` holds there (NaN
    included), as in the general path. The pass is compiled with XLA (its
    loop reads `w` and `m` once and writes both in place) unless the
    weights are small (under `_XLA_MIN_SIZE` entries in all, where
    compiling costs more than it saves) or a weight is a `tf.distribute`
    variable, which XLA-compiled assigns do not handle; then it runs as
    TensorFlow ops.

    Args:
        weights: The weight variables.
        masks: Their mask variables.
        threshold: A scalar (cast to each weight's dtype).
        mask_weight: Whether to assign the weights too. Defaults to `True`.
    """
    if not backends.is_tensorflow():
        # Under Keras' distribution API the jitted pass keeps its inputs'
        # sharding, and a JAX variable lays out what it is assigned anyway.
        for weight, mask in zip(weights, masks, strict=True):
            if keras.backend.backend() == "torch" and _assign_in_place_torch(
                weight, mask, threshold, mask_weight
            ):
                continue
            new_mask, new_weight = _masked_at_threshold(mask_weight)(
                weight.value, mask.value, threshold
            )
            mask.assign(new_mask)
            if mask_weight:
                weight.assign(new_weight)
        return

    def assign() -> tf.Tensor:
        for weight, mask in zip(weights, masks, strict=True):
            value = tf.convert_to_tensor(weight)
            kept = tf.abs(value) >= tf.cast(threshold, value.dtype)
            new_mask = tf.where(kept, mask, tf.zeros([], mask.dtype))
            mask.assign(new_mask)
            if mask_weight:
                weight.assign(value * tf.cast(new_mask, value.dtype))
        return tf.constant(True)

    if (
        any(_distributed(v) for v in (*weights, *masks))
        or sum(math.prod(w.shape) for w in weights) < _XLA_MIN_SIZE
    ):
        assign()
    else:
        # A new function object each trace (see `Pruning.__init__`).
        tf.function(functools.partial(assign), jit_compile=True)()


def _host_array(value: Any) -> np.ndarray:
    """`value` (a Keras variable or tensor) as a NumPy array, sharing its
    memory where the backend allows it (a tensor in host memory), since
    pass 1 only reads it; a copy otherwise."""
    value = getattr(value, "value", value)
    backend = keras.backend.backend()
    if backend == "torch":
        tensor = value.detach()
        if tensor.device.type == "cpu":
            return tensor.numpy()
    elif backend == "jax":
        return np.asarray(value)  # No copy for an array on the CPU.
    return ops.convert_to_numpy(value)


# Entries per chunk of the in-place PyTorch pass: its temporaries (the
# magnitudes and the compare) stay in cache.
_TORCH_CHUNK = 1 << 18


def _assign_in_place_torch(
    weight: Any, mask: Any, threshold: Any, mask_weight: bool
) -> bool:
    """`_new_mask_and_weight`'s values written into the variables' own
    tensors, chunk by chunk: per chunk `|w|` and `|w| >= threshold` into
    two cached buffers, the mask zeroed where that fails, the weight
    multiplied by the new mask. One read of `w` and `m` and one write of
    each, where the `keras.ops` form makes `abs`, the compare, `where`,
    the cast, the product and two copies, each over the whole tensor.
    The same values bit for bit (`masked_fill_` is `where(kept, m, 0)`,
    `mul_` the product of `w` and the mask in `w`'s dtype).

    Returns:
        Whether it assigned: `False` for a tensor that is not contiguous
        (the `keras.ops` form then runs).
    """
    import torch

    w, m = weight.value, mask.value
    if not (w.is_contiguous() and m.is_contiguous()):
        return False
    with torch.no_grad():
        flat_w, flat_m = w.view(-1), m.view(-1)
        size = flat_w.numel()
        bound = torch.as_tensor(threshold, device=w.device).to(w.dtype)
        chunk = max(1, min(size, _TORCH_CHUNK))
        magnitudes = torch.empty(chunk, dtype=w.dtype, device=w.device)
        dropped = torch.empty(chunk, dtype=torch.bool, device=w.device)
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            part_m = flat_m[start:stop]
            mags, drop = magnitudes[: stop - start], dropped[: stop - start]
            torch.abs(flat_w[start:stop], out=mags)
            torch.ge(mags, bound, out=drop)  # NaN: False, so dropped
            drop.logical_not_()
            part_m.masked_fill_(drop, 0)
            if mask_weight:
                flat_w[start:stop].mul_(part_m)
    return True


def _new_mask_and_weight(weight: Any, mask: Any, threshold: Any):
    """`(where(|w| >= threshold, m, 0), w * new_mask)` with `keras.ops`."""
    kept = ops.abs(weight) >= ops.cast(threshold, weight.dtype)
    new_mask = ops.where(kept, mask, ops.zeros((), mask.dtype))
    return new_mask, weight * ops.cast(new_mask, weight.dtype)


@functools.cache
def _masked_at_threshold(donate_weight: bool):
    """`_new_mask_and_weight`, compiled into one loop on JAX (eager ops on
    PyTorch). On JAX the old mask's buffer (and the weight's, when
    `donate_weight`: the weight is assigned the result) is donated, so the
    loop writes in place instead of filling new arrays."""
    if keras.backend.backend() == "jax":
        import jax

        donated = (0, 1) if donate_weight else (1,)
        return jax.jit(_new_mask_and_weight, donate_argnums=donated)
    return _new_mask_and_weight


def _distributed(variable: Any) -> bool:
    """Whether a (Keras) variable is backed by a `tf.distribute` one."""
    backing = getattr(variable, "value", variable)
    return (
        isinstance(backing, tf.distribute.DistributedValues)
        or tf.distribute.has_strategy()
    )


class _NotFinite(Exception):
    """A kept entry is NaN or Inf: its magnitudes cannot be ranked."""


class _MaskedMagnitudes(selection.FlatArrays):
    """`|w|` where `m != 0`, else `+0`, computed chunk by chunk as the
    selection reads it; raises `_NotFinite` on a NaN or Inf it computes."""

    def __init__(self, weights, masks):
        pairs = [
            (np.ravel(w), np.ravel(m))
            for w, m in zip(weights, masks, strict=True)
            if np.size(w)
        ]
        self._weights = [w for w, _ in pairs]
        self._masks = [m for _, m in pairs]

    @property
    def sizes(self) -> list[int]:
        return [w.size for w in self._weights]

    @property
    def dtype(self) -> np.dtype:
        return self._weights[0].dtype

    def at(self, index, positions):
        w = self._weights[index][positions]
        return _masked_abs(w, self._masks[index][positions], np.empty_like(w))

    def chunk(self, index, start, stop, buffer):
        w = self._weights[index][start:stop]
        m = self._masks[index][start:stop]
        # |w| * (m != 0) is one fast loop where `where=` is slow; it is
        # |w| where m != 0 and 0 elsewhere, unless a pruned entry is NaN
        # or Inf (then NaN): the exact form decides.
        with np.errstate(invalid="ignore"):  # inf * 0
            x = np.multiply(np.abs(w, out=buffer), m != 0, out=buffer)
        if not x.max() < np.inf:  # NaN or Inf somewhere
            x = _masked_abs(w, m, buffer)
            if not np.isfinite(x).all():
                raise _NotFinite
        return x

    def whole(self):
        arrays = [
            _masked_abs(w, m, np.empty_like(w))
            for w, m in zip(self._weights, self._masks, strict=True)
        ]
        if not all(np.isfinite(a).all() for a in arrays):
            raise _NotFinite
        return arrays


def _masked_abs(w, m, out):
    """`|w|` where `m != 0`, else `+0`, into `out` (the exact form)."""
    np.abs(w, out=out)
    out[m == 0] = 0
    return out


def _select(rank, *arrays):
    half = len(arrays) // 2
    values = _MaskedMagnitudes(arrays[:half], arrays[half:])
    try:
        kth = selection.host_kth_largest(values, int(rank))
    except _NotFinite:
        return np.zeros((), values.dtype), np.asarray(False)
    return np.asarray(kth, values.dtype), np.asarray(True)
