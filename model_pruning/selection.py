"""Exact k-th largest selection in O(n), for magnitude thresholds.

`kth_largest(values, k)` returns exactly what a full sort returns (the
reference, `mask.kth_largest`), ties included, without sorting. Two exact
fast paths:

- `"host"`: the tensors go to NumPy through `tf.numpy_function` (no copy on
  CPU). A fixed pseudo-random sample brackets the k-th largest; one pass over
  the data, in cache-sized chunks, counts the entries above the bracket and
  extracts the few inside it; `np.partition` ranks those. The fastest path on
  CPU, eagerly or in a plain `tf.function`. It cannot run inside XLA.
- `"xla"`: stock TF ops with static sizes (bit-cast keys, histograms by
  `tf.math.unsorted_segment_sum`, cumulative sums), no `boolean_mask` and no
  Python, so it compiles under `tf.function(jit_compile=True)`; it also runs
  outside XLA, on any device. A radix select: one 65536-bin histogram of the
  top 16 bits of the keys, then one of the low 16 bits of the entries in the
  bin that holds the k-th largest.

The host path is exact whatever the data: the sample only decides how much
work the exact step does, never its result.
"""

import concurrent.futures
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from model_pruning import backends

METHODS = ("auto", "sort", "host", "xla")

_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_KERAS_FLOAT_DTYPES = tuple(d.name for d in _FLOAT_DTYPES)

# Host path.
_HOST_SMALL = 1 << 17  # At or below: one np.partition of the whole input.
HOST_CHUNK = 1 << 17  # Elements per chunk of the counting pass (512 KiB).
_CHUNKS_PER_THREAD = 8
_HOST_MAX_SAMPLE = 1 << 16
_HOST_MIN_SAMPLE = 1 << 12

# XLA path.
_DIGIT_BITS = 16  # 65536-bin histograms: 2 levels for float32.
_XLA_WIDE_DIGITS_FROM = 1 << 16  # Below: 8-bit digits, 4 levels for f32.

# Half-width of the sample bracket, in standard deviations of the sample rank
# of the k-th largest (binomial), plus a few ranks. A miss costs time only.
_BRACKET_SIGMAS = 4.0
_BRACKET_SLACK = 2
_SAMPLE_SEED = 0x5E1EC7


def kth_largest(
    values: tf.Tensor | Sequence[tf.Tensor],
    k: tf.Tensor | int,
    *,
    method: str = "auto",
    xla: bool = False,
) -> tf.Tensor:
    """Returns the k-th largest entry of `values`, exactly, without sorting.

    ```
    result = sort(concat([flatten(v) for v in values]), descending)[k - 1]
    result = nextafter(max(values), +inf)         if k == 0
    ```

    Ties count once per entry, so the result equals the sort's entry bit for
    bit (up to the sign of a zero: `-0.0 == 0.0`), and `values >= result`
    keeps every entry tied with it. With `k == 0` nothing passes
    `values >= result`.

    Methods, all exact:

    - `"sort"`: the reference, a full `tf.math.top_k` of the concatenation:
      O(n log n).
    - `"host"`: NumPy through `tf.numpy_function`. A sample of at most 65536
      entries at fixed pseudo-random positions gives a bracket `[lo, hi]`
      that holds the k-th largest with high probability. One pass in chunks
      of 65536 entries counts the entries `> lo` and `> hi` and extracts
      those in `(lo, hi]` (about 1.6% of them at most sparsities; ties at
      `lo`, such as already pruned zeros, are counted, not extracted);
      `np.partition` ranks the extracted ones. When the counts show that the
      k-th largest is outside the bracket, it is selected exactly with
      `np.partition` on the side that holds it (slower, rare). Inputs of at
      most 131072 entries are partitioned directly. Eager or graph mode, not
      under XLA; tensors on an accelerator are copied to the host.
    - `"xla"`: TF ops only, static sizes, XLA-compatible (also runs outside
      XLA, on any device). Floats are mapped to integer keys with the same
      order (`bits ^ ((bits >> 31) & 0x7fffffff)`), then a radix select:
      per 16-bit digit of the key, most significant first, a 65536-bin
      histogram (`unsorted_segment_sum`) of the entries that match the
      digits found so far, and the bin holding the rank (a cumulative sum).
      Two full passes for float32, four for float64; below 65536 float32
      entries, four passes of 8-bit digits (cheaper cumulative sums).
    - `"auto"`: `"xla"` if `xla=True`, else `"host"`. Nothing is detected
      (TF has no public way to ask whether a graph is being compiled): pass
      `xla=True` when the caller is compiled with `jit_compile=True`
      (Keras' default on GPU), where `"host"` cannot compile. On a GPU
      without XLA, `method="xla"` avoids the copy to the host.

    float16 and bfloat16 are selected as float32 (exact: the conversion is
    order-preserving and the result is one of the entries), so they cost a
    cast. float64 works on every path (the `"xla"` path on 64-bit keys: up to
    4 histogram levels).

    NaN: the caller must check finiteness first. With NaN entries the
    result is unspecified and the methods may differ (so does the reference:
    `top_k` does not order NaN): `"xla"` ranks a NaN above `+inf` (a
    negative-signed NaN below `-inf`) and never raises; `"host"` may return
    NaN, return an entry, or raise (when its counts do not add up: a
    `ValueError` eagerly, `tf.errors.InvalidArgumentError` in a graph).
    Infinities are ranked like any float. Values need not be non-negative:
    any finite floats are ranked.

    Subnormals are ranked by their exact values. TF's CPU kernels flush
    subnormals to zero, so the `"sort"` reference (`top_k`) treats zeros and
    subnormals as ties and may return another member of that class than
    `"host"` and `"xla"` do; `values >= result` computed by TF on CPU selects
    the same entries either way. (Likewise, when the largest entry is 0,
    `k == 0` gives the smallest subnormal, which TF on CPU compares as 0:
    the reference has the same behavior.)

    Args:
        values: A float tensor of any shape, or a list of float tensors of one
            dtype (float16, bfloat16, float32 or float64) and any shapes: the
            k-th largest is taken over the union of their entries ("global"
            pruning) without concatenating them (except for `"sort"`). Must
            have at least one entry. The `"xla"` method needs static shapes.
        k: Integer scalar (Python int or int32/int64 tensor) in
            `[0, total size]`. A static `k` outside the range raises; a
            dynamic one is clamped into it.
        method: `"auto"`, `"sort"`, `"host"` or `"xla"`. Defaults to
            `"auto"`.
        xla: Whether the caller runs under XLA (`jit_compile=True`); only
            `"auto"` reads it, and `method="host"` with `xla=True` raises.
            Defaults to `False`.

    Returns:
        A scalar tensor of the dtype of `values`.

    Raises:
        ValueError: For an unknown `method`, a non-bool `xla`, `"host"` with
            `xla=True`, no tensors, no entries, mixed or non-float dtypes, a
            non-integer or non-scalar `k`, a static `k` outside
            `[0, total size]`, dynamic shapes with `"xla"`, or 2**31 entries
            or more with `"xla"`.

    Example:

    >>> w = tf.constant([[0.5, 0.1], [0.9, 0.5]])
    >>> float(kth_largest(w, 2))
    0.5
    >>> float(kth_largest([w, tf.constant([0.75])], 2))
    0.75
    """
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. Received: method={method!r}"
        )
    if not isinstance(xla, bool):
        raise ValueError(f"`xla` must be a bool. Received: xla={xla!r}")
    if method == "host" and xla:
        raise ValueError(
            "method='host' calls NumPy and cannot run under XLA; use "
            "method='xla' or 'auto'. Received: method='host', xla=True"
        )
    if not backends.is_tensorflow():
        return _keras_kth_largest(values, k, method)
    tensors = _as_tensor_list(values)
    static_sizes = [t.shape.num_elements() for t in tensors]
    total = None if None in static_sizes else sum(static_sizes)
    if total == 0:
        raise ValueError(
            "`values` must have at least one entry. Received: values with "
            f"shapes {[t.shape.as_list() for t in tensors]}"
        )
    k = _check_k(k, total)
    if method == "auto":
        method = "xla" if xla else "host"

    if method == "xla" and total is None:
        raise ValueError(
            "method='xla' needs static shapes. Received: values with shapes "
            f"{[t.shape for t in tensors]}"
        )
    if method == "xla" and total >= 2**31:
        raise ValueError(
            "method='xla' counts in int32 and supports fewer than 2**31 "
            f"entries. Received: values with {total} entries"
        )

    with tf.name_scope("kth_largest"):
        size = tf.add_n([tf.size(t, out_type=tf.int64) for t in tensors])
        k = tf.clip_by_value(tf.cast(k, tf.int64), 0, size)
        # k == 0 selects the maximum (k = 1) and steps above it.
        rank = tf.maximum(k, 1)
        if method == "sort":
            selected = _sort_select(tensors, rank)
        elif method == "host":
            selected = _host_select(tensors, rank)
        else:
            selected = _xla_select(tensors, rank, total)
        return tf.where(k > 0, selected, next_up(selected))


def _keras_kth_largest(values, k, method: str):
    """`kth_largest` on the JAX and PyTorch backends, which run it eagerly.

    `"host"` and `"auto"` take the host path above on the values' NumPy
    copies, unless a value is sharded over several devices (Keras'
    distribution API): that one, like `"sort"` and `"xla"`, is sorted with
    `keras.ops` where it lives, never gathered to the host.
    """
    tensors = list(values) if isinstance(values, (list, tuple)) else [values]
    if not tensors:
        raise ValueError(
            "`values` must be a tensor or a non-empty list of tensors. "
            f"Received: values={values!r}"
        )
    tensors = [ops.convert_to_tensor(v) for v in tensors]
    dtypes = sorted({keras.backend.standardize_dtype(t.dtype) for t in tensors})
    if len(dtypes) != 1 or dtypes[0] not in _KERAS_FLOAT_DTYPES:
        raise ValueError(
            "`values` must be float16, bfloat16, float32 or float64 tensors "
            f"of one dtype. Received: values of dtypes {dtypes}"
        )
    total = sum(math.prod(t.shape) for t in tensors)
    if total == 0:
        raise ValueError(
            "`values` must have at least one entry. Received: values with "
            f"shapes {[tuple(t.shape) for t in tensors]}"
        )
    k = int(ops.convert_to_numpy(k))
    if not 0 <= k <= total:
        raise ValueError(
            f"`k` must be in [0, {total}] (the number of entries). "
            f"Received: k={k}"
        )
    rank = max(k, 1)  # k == 0 selects the maximum and steps above it.
    wide = "float64" if dtypes[0] == "float64" else "float32"
    if method in ("sort", "xla") or any(map(backends.is_sharded, tensors)):
        flat = ops.concatenate(
            [ops.reshape(ops.cast(t, wide), (-1,)) for t in tensors]
        )
        selected = ops.convert_to_numpy(ops.sort(flat)[total - rank])
    else:
        arrays = [
            ops.convert_to_numpy(t).astype(wide, copy=False) for t in tensors
        ]
        selected = host_kth_largest(FlatArrays(arrays), rank)
    # Exact in the values' own dtype: the selected entry is one of them.
    selected = np.asarray(selected).astype(dtypes[0])
    if k == 0:
        selected = np.nextafter(selected, np.asarray(np.inf, selected.dtype))
    return ops.convert_to_tensor(selected, dtypes[0])


def _as_tensor_list(values) -> list[tf.Tensor]:
    """Returns `values` as a non-empty list of float tensors of one dtype."""
    if isinstance(values, (list, tuple)):
        if not values:
            raise ValueError(
                "`values` must be a tensor or a non-empty list of tensors. "
                f"Received: values={values!r}"
            )
        tensors = [tf.convert_to_tensor(v) for v in values]
    else:
        tensors = [tf.convert_to_tensor(values)]
    dtypes = sorted({t.dtype.name for t in tensors})
    if len(dtypes) != 1 or tensors[0].dtype not in _FLOAT_DTYPES:
        raise ValueError(
            "`values` must be float16, bfloat16, float32 or float64 tensors "
            f"of one dtype. Received: values of dtypes {dtypes}"
        )
    return tensors


def _check_k(k, total: int | None) -> tf.Tensor:
    """Validates `k` and returns it as a tensor."""
    k = tf.convert_to_tensor(k)
    if not k.dtype.is_integer or k.shape.rank not in (None, 0):
        raise ValueError(
            "`k` must be an integer scalar. Received: "
            f"k={k!r} (dtype {k.dtype.name}, shape {k.shape})"
        )
    static = tf.get_static_value(k)
    if static is not None and total is not None and not 0 <= static <= total:
        raise ValueError(
            f"`k` must be in [0, {total}] (the number of entries). "
            f"Received: k={int(static)}"
        )
    return k


def next_up(x: tf.Tensor) -> tf.Tensor:
    """`tf.math.nextafter(x, +inf)`, also for float16 and bfloat16."""
    if x.dtype in (tf.float32, tf.float64):
        return tf.math.nextafter(x, tf.constant(math.inf, x.dtype))
    # -0.0 -> +0.0 first, so that the step goes to the smallest subnormal.
    x = tf.where(tf.equal(x, 0), tf.zeros_like(x), x)
    bits = tf.cast(tf.bitcast(x, tf.int16), tf.int32)
    key = _to_key(bits, 16) + 1
    stepped = tf.cast(_to_key(key, 16), tf.int16)
    return tf.where(
        tf.math.is_nan(x) | tf.equal(x, math.inf),
        x,
        tf.bitcast(stepped, x.dtype),
    )


def _to_key(bits: tf.Tensor, width: int) -> tf.Tensor:
    """Maps the bits of a float (as signed ints) to keys in the float order.

    Non-negative floats keep their bits; negative ones get their magnitude
    bits flipped, so a larger float has a larger signed key. The map is its
    own inverse. `width` is the float's width; for 16 the bits are held in
    int32 and sign-extended.
    """
    sign = tf.bitwise.right_shift(bits, tf.constant(width - 1, bits.dtype))
    return tf.bitwise.bitwise_xor(
        bits,
        tf.bitwise.bitwise_and(
            sign, tf.constant(2 ** (width - 1) - 1, bits.dtype)
        ),
    )


# ---------------------------------------------------------------------------
# "sort": the reference.


def _sort_select(tensors: list[tf.Tensor], rank: tf.Tensor) -> tf.Tensor:
    flat = tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)
    ordered = tf.math.top_k(flat, k=tf.size(flat), sorted=True).values
    return tf.gather(ordered, rank - 1)


# ---------------------------------------------------------------------------
# "host": NumPy.


def _host_select(tensors: list[tf.Tensor], rank: tf.Tensor) -> tf.Tensor:
    dtype = tensors[0].dtype
    work = tf.float64 if dtype == tf.float64 else tf.float32
    inputs = [tf.cast(t, work) if t.dtype != work else t for t in tensors]
    selected = tf.numpy_function(
        _numpy_kth_largest, [rank, *inputs], work, stateful=False
    )
    selected = tf.ensure_shape(selected, [])
    return tf.cast(selected, dtype) if work != dtype else selected


def _numpy_kth_largest(rank, *arrays):
    """The k-th largest (1 <= k <= size) of the union of `arrays`, in NumPy."""
    return host_kth_largest(FlatArrays(arrays), int(rank))


class FlatArrays:
    """Float arrays to rank on the host, seen flat.

    The interface `host_kth_largest` reads: `sizes`, `dtype`, `at(index,
    positions)` (the values of array `index` at sorted flat positions),
    `chunk(index, start, stop, buffer)` (the values `start:stop` of array
    `index`, possibly computed into `buffer`) and `whole()` (every array,
    flat). A subclass may compute the values as it goes (`fused_update`
    ranks masked magnitudes without writing them out).
    """

    def __init__(self, arrays: Sequence[np.ndarray]):
        self._arrays = [np.ravel(a) for a in arrays if np.size(a)]

    @property
    def sizes(self) -> list[int]:
        return [a.size for a in self._arrays]

    @property
    def dtype(self) -> np.dtype:
        return self._arrays[0].dtype

    def at(self, index: int, positions: np.ndarray) -> np.ndarray:
        return self._arrays[index][positions]

    def chunk(
        self, index: int, start: int, stop: int, buffer: np.ndarray
    ) -> np.ndarray:
        del buffer  # The values are there already.
        return self._arrays[index][start:stop]

    def whole(self) -> list[np.ndarray]:
        return self._arrays


class _Counts(NamedTuple):
    above_lo: int  # > lo, or >= lo when nothing is extracted
    above_hi: int
    inside: list[np.ndarray]  # the entries in (lo, hi], when extracted


def _count(values: FlatArrays, lo, hi, extract: bool) -> _Counts:
    """One pass over `values` in chunks, split over the host's cores (NumPy
    releases the GIL in its loops): counts the entries above `lo` and above
    `hi`, and extracts those in between when `extract`."""
    spans = [
        (index, start, min(start + HOST_CHUNK, size))
        for index, size in enumerate(values.sizes)
        for start in range(0, size, HOST_CHUNK)
    ]
    # Threads pay off from about 8 chunks each (1M entries: one thread).
    workers = min(_host_threads(), len(spans) // _CHUNKS_PER_THREAD)
    if workers < 2:
        return _count_spans(values, spans, lo, hi, extract)
    share = -(-len(spans) // workers)
    futures = [
        _thread_pool().submit(
            _count_spans, values, spans[i : i + share], lo, hi, extract
        )
        for i in range(0, len(spans), share)
    ]
    parts = [f.result() for f in futures]
    return _Counts(
        sum(p.above_lo for p in parts),
        sum(p.above_hi for p in parts),
        [x for p in parts for x in p.inside],
    )


def _count_spans(values, spans, lo, hi, extract: bool) -> _Counts:
    low_test = np.greater if extract else np.greater_equal
    buffer = np.empty(HOST_CHUNK, values.dtype)
    low = np.empty(HOST_CHUNK, bool)
    high = np.empty(HOST_CHUNK, bool)
    above_lo = above_hi = 0
    inside = []
    for index, start, stop in spans:
        m = stop - start
        x = values.chunk(index, start, stop, buffer[:m])
        low_test(x, lo, out=low[:m])
        above_lo += np.count_nonzero(low[:m])
        np.greater(x, hi, out=high[:m])
        above_hi += np.count_nonzero(high[:m])
        if extract:
            np.not_equal(low[:m], high[:m], out=low[:m])
            inside.append(x[low[:m]])
    return _Counts(above_lo, above_hi, inside)


def _host_threads() -> int:
    """Threads for the host pass: the cores this process may use, or TF's
    intra-op setting when one is made."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return configured or len(os.sched_getaffinity(0))


_POOL: list[concurrent.futures.ThreadPoolExecutor] = []


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=_host_threads(), thread_name_prefix="selection"
            )
        )
    return _POOL[0]


def host_kth_largest(values: FlatArrays, k: int) -> np.ndarray:
    """The k-th largest (1 <= k <= size) of `values`: the `"host"` method.

    Returns:
        A NumPy scalar of `values.dtype`.

    Raises:
        ValueError: When the counts do not add up (NaN entries).
    """
    sizes = values.sizes
    n = sum(sizes)
    dtype = values.dtype
    if n <= _HOST_SMALL:
        arrays = values.whole()
        flat = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        return np.asarray(_partition_largest(flat, k), dtype)

    lo, hi = _sample_bracket(values, k, n)
    # One pass in cache-sized chunks. With lo < hi: count the entries > lo
    # and > hi, and extract those in (lo, hi] (ties at lo are not extracted:
    # pruned zeros can be half the entries). With lo == hi (a tie in the
    # sample): count the entries >= lo and > hi; nothing to extract.
    extract = lo < hi
    count_low, count_gt_hi, inside = _count(values, lo, hi, extract)

    position = k - count_gt_hi  # Rank of the answer among the entries <= hi.
    if position <= 0:
        # Above the bracket (a sample miss): rank among the entries > hi.
        above = np.concatenate([a[a > hi] for a in values.whole()])
        return np.asarray(_partition_largest(above, k), dtype)
    count_ge_lo = count_low
    if extract:
        inside = np.concatenate(inside)
        if position <= inside.size:
            return np.asarray(_partition_largest(inside, position), dtype)
        # The answer is lo or below: count the ties at lo (one more pass).
        count_ge_lo += sum(
            int(np.count_nonzero(a == lo)) for a in values.whole()
        )
    if k <= count_ge_lo:
        return np.asarray(lo, dtype)
    # Below the bracket (a sample miss): rank among the entries < lo.
    below = np.concatenate([a[a < lo] for a in values.whole()])
    if below.size < k - count_ge_lo:
        # NaN fails every comparison, so the counts do not add up.
        raise ValueError(
            "`values` hold NaN entries, which cannot be ranked. Received: "
            f"{n - count_ge_lo - below.size} entries that are neither below, "
            "at nor above the bracket"
        )
    return np.asarray(_partition_largest(below, k - count_ge_lo), dtype)


def _partition_largest(flat: np.ndarray, k: int):
    """The k-th largest of a flat array (1 <= k <= size), by introselect."""
    index = flat.size - k
    return np.partition(flat, index)[index]


def _sample_bracket(values: FlatArrays, k: int, n: int):
    """Returns `(lo, hi)`, a likely bracket of the k-th largest of `values`.

    The sample takes from each array a share proportional to its size, one
    entry at a pseudo-random offset in each of equal strides (fixed seed), so
    it is deterministic. `lo` may be `-inf` and `hi` `+inf`.
    """
    total_sample = int(min(_HOST_MAX_SAMPLE, max(_HOST_MIN_SAMPLE, n // 32)))
    parts = []
    for index, size in enumerate(values.sizes):
        count = max(1, round(total_sample * size / n))
        parts.append(values.at(index, _sample_positions(size, count)))
    sample = np.concatenate(parts)
    low_rank, high_rank = _bracket_ranks(k, n, sample.size)
    hi = math.inf if high_rank < 1 else _partition_largest(sample, high_rank)
    lo = (
        -math.inf
        if low_rank > sample.size
        else _partition_largest(sample, low_rank)
    )
    return lo, hi


def _bracket_ranks(k: int, n: int, sample_size: int) -> tuple[int, int]:
    """Sample ranks (1-based, from the largest) bracketing the k-th largest.

    Returns `(low_rank, high_rank)`: the bracket is from the `low_rank`-th to
    the `high_rank`-th largest sample entry; either may fall outside
    `[1, sample_size]`, meaning unbounded on that side.
    """
    fraction = k / n
    expected = fraction * sample_size
    spread = (
        _BRACKET_SIGMAS * math.sqrt(sample_size * fraction * (1.0 - fraction))
        + _BRACKET_SLACK
    )
    return math.ceil(expected + spread), math.floor(expected - spread)


_POSITIONS_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _sample_positions(size: int, count: int) -> np.ndarray:
    """`count` sorted positions in `[0, size)`: one per stride, jittered."""
    key = (size, count)
    positions = _POSITIONS_CACHE.get(key)
    if positions is None:
        count = min(count, size)
        starts = np.arange(count, dtype=np.int64) * size // count
        ends = np.arange(1, count + 1, dtype=np.int64) * size // count
        rng = np.random.default_rng(_SAMPLE_SEED + size)
        positions = starts + rng.integers(0, ends - starts)
        if size < 2**31:
            positions = positions.astype(np.int32)
        if len(_POSITIONS_CACHE) >= 64:
            _POSITIONS_CACHE.clear()
        _POSITIONS_CACHE[key] = positions
    return positions


# ---------------------------------------------------------------------------
# "xla": histograms on integer keys.


def _xla_select(
    tensors: list[tf.Tensor], rank: tf.Tensor, total: int
) -> tf.Tensor:
    dtype = tensors[0].dtype
    if dtype == tf.float64:
        int_dtype, width = tf.int64, 64
    else:
        int_dtype, width = tf.int32, 32
    work = tf.float64 if dtype == tf.float64 else tf.float32
    keys = [
        _to_key(
            tf.bitcast(tf.cast(tf.reshape(t, [-1]), work), int_dtype), width
        )
        for t in tensors
        if t.shape.num_elements()
    ]
    # Few float32 entries: 4 levels of 256 bins (cheaper cumulative sums).
    # float64 keeps 16-bit digits (8 levels would compile slowly).
    small = total < _XLA_WIDE_DIGITS_FROM and width == 32
    digit_bits = 8 if small else _DIGIT_BITS
    key = _radix_select(keys, tf.cast(rank, tf.int32), width, digit_bits)
    value = tf.bitcast(_to_key(key, width), work)
    return tf.cast(value, dtype) if work != dtype else value


def _histogram(index: tf.Tensor, bins: int) -> tf.Tensor:
    """Counts of each index in `[0, bins)`; negative indices are dropped."""
    return tf.math.unsorted_segment_sum(
        tf.ones_like(index, tf.int32), index, bins
    )


def _find_in_histogram(
    hist: tf.Tensor, rank: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Bin holding the `rank`-th largest entry, and the count above that bin.

    `hist` is ordered by increasing key; `1 <= rank <= sum(hist)`.
    """
    at_or_above = tf.cumsum(hist, reverse=True)
    bin_index = tf.reduce_sum(tf.cast(at_or_above >= rank, tf.int32)) - 1
    bin_index = tf.maximum(bin_index, 0)
    above = tf.gather(at_or_above, bin_index) - tf.gather(hist, bin_index)
    return bin_index, above


def _radix_select(
    keys: list[tf.Tensor], rank: tf.Tensor, width: int, digit_bits: int
) -> tf.Tensor:
    """The key of the `rank`-th largest entry of `keys` (1 <= rank <= size).

    Most significant digit first: a histogram of the digit over the entries
    whose higher digits equal those found so far (the others get index -1,
    dropped), then the bin holding the rank. The top digit is signed (an
    arithmetic shift), offset into `[0, bins)`.
    """
    dtype = keys[0].dtype
    bins = 1 << digit_bits
    prefix = None  # The digits found so far, as a signed int of `dtype`.
    for level in range(width // digit_bits):
        shift = width - digit_bits * (level + 1)
        hist = None
        for key in keys:
            shifted = tf.bitwise.right_shift(key, tf.constant(shift, dtype))
            if level == 0:
                index = tf.cast(shifted, tf.int32) + bins // 2
            else:
                digit = tf.bitwise.bitwise_and(
                    shifted, tf.constant(bins - 1, dtype)
                )
                higher = tf.bitwise.right_shift(
                    key, tf.constant(shift + digit_bits, dtype)
                )
                index = tf.where(
                    tf.equal(higher, prefix),
                    tf.cast(digit, tf.int32),
                    tf.constant(-1, tf.int32),
                )
            counts = _histogram(index, bins)
            hist = counts if hist is None else hist + counts
        found, above = _find_in_histogram(hist, rank)
        rank -= above
        if level == 0:
            prefix = tf.cast(found - bins // 2, dtype)
        else:
            prefix = tf.bitwise.bitwise_or(
                tf.bitwise.left_shift(prefix, tf.constant(digit_bits, dtype)),
                tf.cast(found, dtype),
            )
    return prefix
