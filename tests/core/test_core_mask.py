"""Mask math and the k-th largest selection on any backend, against NumPy
oracles (sorts and explicit loops written here)."""

import math
import zlib

import keras
import numpy as np
import pytest
from core_helpers import expected_kept
from core_helpers import to_numpy

from model_pruning import mask as mask_lib
from model_pruning import selection
from model_pruning.backends import wide_dtype


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _tensor(values, dtype="float32"):
    return keras.ops.convert_to_tensor(np.asarray(values, dtype), dtype)


def _reference_kth(arrays, k):
    """The k-th largest of the union by a sort; k = 0: the float above the
    maximum."""
    flat = np.concatenate([np.ravel(a) for a in arrays])
    ordered = np.sort(flat.astype(np.float64))[::-1]
    if k == 0:
        top = np.asarray(ordered[0]).astype(flat.dtype)
        return np.nextafter(top, np.asarray(np.inf, flat.dtype))
    return np.asarray(ordered[k - 1]).astype(flat.dtype)


def _reference_mask(magnitudes, sparsity):
    k = expected_kept(magnitudes.size, sparsity)
    threshold = _reference_kth([magnitudes], k)
    return (magnitudes >= threshold).astype(magnitudes.dtype), threshold


def _reference_block_mask(magnitudes, sparsity, block, pooling):
    """Blocks tiled from the top-left corner; AVG over the valid entries."""
    rows, cols = magnitudes.shape
    h = rows if block[0] == -1 else block[0]
    w = cols if block[1] == -1 else block[1]
    pooled = np.zeros((math.ceil(rows / h), math.ceil(cols / w)), np.float32)
    for i in range(pooled.shape[0]):
        for j in range(pooled.shape[1]):
            tile = magnitudes[i * h : (i + 1) * h, j * w : (j + 1) * w]
            pooled[i, j] = tile.max() if pooling == "MAX" else tile.mean()
    pooled_mask, _ = _reference_mask(pooled, sparsity)
    expanded = np.repeat(np.repeat(pooled_mask, h, axis=0), w, axis=1)
    return expanded[:rows, :cols], pooled


def _reference_m_by_n(magnitudes, zeros, group):
    """Keeps the `group - zeros` largest of each group along axis -2 (zero
    padded to whole groups); the lower index wins a tie."""
    moved = np.moveaxis(magnitudes, -2, -1)
    mask = np.zeros_like(moved)
    length = moved.shape[-1]
    for index in np.ndindex(moved.shape[:-1]):
        row = moved[index]
        for start in range(0, length, group):
            values = np.zeros(group, row.dtype)
            chunk = row[start : start + group]
            values[: chunk.size] = chunk
            # Stable sort of -values: ties keep the lower index first.
            kept = np.argsort(-values, kind="stable")[: group - zeros]
            for position in kept:
                if start + position < length:
                    mask[index][start + position] = 1
    return np.moveaxis(mask, -1, -2)


def test_magnitude_mask_contrib_update_single_mask():
    # contrib testUpdateSingleMask: 100 non-zeros before, 5 after.
    weights = np.linspace(1, 100, 100, dtype=np.float32)
    update = mask_lib.magnitude_mask(
        _tensor(weights), _tensor(0.95), _tensor(0.0), 0.0
    )
    mask = to_numpy(update.mask)
    assert np.count_nonzero(mask) == 5
    np.testing.assert_array_equal(np.flatnonzero(mask), range(95, 100))
    assert float(to_numpy(update.threshold)) == 96.0
    half = mask_lib.magnitude_mask(
        _tensor(weights), _tensor(0.5), _tensor(1000.0), 0.0
    )
    assert float(to_numpy(half.threshold)) == 51.0
    assert to_numpy(half.mask).sum() == 50


@pytest.mark.parametrize("shape", [(100,), (7, 13), (3, 3, 4, 8)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.77, 0.99])
def test_magnitude_mask_matches_numpy_sort(shape, sparsity):
    magnitudes = np.abs(_rng(shape, sparsity).normal(size=shape)).astype(
        "float32"
    )
    expected_mask, expected_threshold = _reference_mask(magnitudes, sparsity)
    update = mask_lib.magnitude_mask(
        _tensor(magnitudes), _tensor(sparsity), _tensor(0.0), 0.0
    )
    assert keras.backend.standardize_dtype(update.mask.dtype) == "float32"
    np.testing.assert_array_equal(to_numpy(update.mask), expected_mask)
    assert to_numpy(update.threshold) == expected_threshold


def test_magnitude_mask_ties_at_the_threshold_are_kept():
    magnitudes = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 4.0], np.float32)
    # k = 3; the 3rd largest is 2.0 and all three 2.0 entries are kept.
    update = mask_lib.magnitude_mask(
        _tensor(magnitudes), _tensor(0.5), _tensor(0.0), 0.0
    )
    np.testing.assert_array_equal(to_numpy(update.mask), [0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("decay", [0.3, 0.9])
def test_magnitude_mask_threshold_decay(decay):
    magnitudes = np.abs(_rng(decay).normal(size=(20, 10))).astype("float32")
    k = expected_kept(magnitudes.size, 0.6)
    kth = np.sort(magnitudes.ravel())[::-1][k - 1]
    update = mask_lib.magnitude_mask(
        _tensor(magnitudes), _tensor(0.6), _tensor(0.7), decay
    )
    threshold = to_numpy(update.threshold)
    assert threshold == pytest.approx((1 - decay) * kth + decay * 0.7, 1e-6)
    np.testing.assert_array_equal(
        to_numpy(update.mask), (magnitudes >= threshold).astype("float32")
    )


@pytest.mark.parametrize(
    "size, sparsity, expected",
    [
        (10, 0.25, 8),  # 7.5 -> 8
        (10, 0.75, 2),  # 2.5 -> 2
        (6, 0.75, 2),  # 1.5 -> 2
        (2, 0.75, 0),  # 0.5 -> 0
        (4, 0.375, 2),  # 2.5 -> 2
        (100, 0.875, 12),  # 12.5 -> 12
        (100, 0.625, 38),  # 37.5 -> 38
    ],
)
def test_num_kept_rounds_half_to_even(size, sparsity, expected):
    kept = mask_lib.num_kept(size, _tensor(sparsity))
    assert keras.backend.standardize_dtype(kept.dtype) == "int32"
    assert int(to_numpy(kept)) == expected == expected_kept(size, sparsity)


# contrib testBlockMaskingWithNonnegativeBlockDimensions and
# testBlockMaskingWithNegativeBlockDimensions.
_CONTRIB_BLOCKS = [
    (
        [
            [0.1, 0.0, 0.2, 0.0],
            [0.0, -0.1, 0.0, -0.2],
            [0.3, 0.0, 0.4, 0.0],
            [0.0, -0.3, 0.0, -0.4],
        ],
        (2, 2),
        "MAX",
    ),
    (
        [
            [0.1, 0.1, 0.2, 0.2],
            [0.1, 0.1, 0.2, 0.2],
            [0.3, 0.3, 0.4, 0.4],
            [0.3, 0.3, 0.4, 0.4],
        ],
        (2, 2),
        "AVG",
    ),
    (
        [
            [0.1, 0.0, 0.1, 0.0],
            [0.0, 0.1, 0.0, 0.2],
            [0.3, 0.0, 0.3, 0.0],
            [0.0, -0.3, 0.0, 0.4],
        ],
        (1, -1),
        "MAX",
    ),
    (
        [
            [0.1, 0.1, 0.1, 0.1],
            [0.2, 0.2, 0.2, 0.2],
            [0.3, 0.3, 0.3, 0.3],
            [0.3, 0.3, 0.4, 0.4],
        ],
        (1, -1),
        "AVG",
    ),
]


@pytest.mark.parametrize("weights, block, pooling", _CONTRIB_BLOCKS)
def test_block_magnitude_mask_contrib_cases(weights, block, pooling):
    magnitudes = np.abs(np.array(weights, np.float32))
    update = mask_lib.block_magnitude_mask(
        _tensor(magnitudes), _tensor(0.5), _tensor(0.0), 0.0, block, pooling
    )
    expected = np.array([[0] * 4, [0] * 4, [1] * 4, [1] * 4], np.float32)
    np.testing.assert_array_equal(to_numpy(update.mask), expected)


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
@pytest.mark.parametrize(
    "shape, block",
    [((8, 12), (2, 3)), ((7, 10), (3, 4)), ((9, 5), (2, -1)), ((5, 6), (4, 4))],
)
def test_block_magnitude_mask_partial_edge_blocks_match_numpy(
    pooling, shape, block
):
    magnitudes = np.abs(_rng(shape, block, pooling).normal(size=shape))
    magnitudes = magnitudes.astype("float32")
    expected, pooled = _reference_block_mask(magnitudes, 0.5, block, pooling)
    update = mask_lib.block_magnitude_mask(
        _tensor(magnitudes), _tensor(0.5), _tensor(0.0), 0.0, block, pooling
    )
    assert tuple(update.mask.shape) == shape
    np.testing.assert_array_equal(to_numpy(update.mask), expected)
    # The threshold is in pooled units: the k-th largest pooled value.
    k = expected_kept(pooled.size, 0.5)
    assert to_numpy(update.threshold) == pytest.approx(
        np.sort(pooled.ravel())[::-1][k - 1], rel=1e-6
    )


@pytest.mark.parametrize(
    "shape, zeros, group",
    [((8, 3), 2, 4), ((10, 5), 2, 4), ((3, 3, 6, 2), 2, 4), ((7, 4), 1, 3)],
)
def test_m_by_n_mask_matches_numpy_groups(shape, zeros, group):
    rng = _rng(shape, zeros, group)
    # Small integers: many ties, which the lower index wins.
    magnitudes = rng.integers(0, 4, size=shape).astype("float32")
    mask = to_numpy(mask_lib.m_by_n_mask(_tensor(magnitudes), zeros, group))
    assert mask.shape == shape
    np.testing.assert_array_equal(
        mask, _reference_m_by_n(magnitudes, zeros, group)
    )
    # Exactly N:M once axis -2 is padded with pruned zeros to whole groups.
    length = shape[-2]
    padded = np.moveaxis(mask, -2, -1)
    for index in np.ndindex(padded.shape[:-1]):
        for start in range(0, length, group):
            chunk = padded[index][start : start + group]
            assert chunk.sum() == min(group - zeros, chunk.size)


def test_m_by_n_mask_two_of_four_keeps_the_largest():
    magnitudes = np.array([[0.1], [0.4], [0.3], [0.2], [5], [1], [2], [3]])
    mask = mask_lib.m_by_n_mask(_tensor(magnitudes), 2, 4)
    np.testing.assert_array_equal(
        to_numpy(mask).ravel(), [0, 1, 1, 0, 1, 0, 0, 1]
    )


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_global_magnitude_masks_use_one_threshold(sparsity):
    rng = _rng(sparsity)
    arrays = [
        np.abs(rng.normal(size=(6, 7))).astype("float32"),
        3 * np.abs(rng.normal(size=(11,))).astype("float32"),
    ]
    threshold, masks = mask_lib.global_magnitude_masks(
        [_tensor(a) for a in arrays], _tensor(sparsity), _tensor(0.0), 0.0
    )
    total = sum(a.size for a in arrays)
    expected = _reference_kth(arrays, expected_kept(total, sparsity))
    assert to_numpy(threshold) == expected
    for array, mask in zip(arrays, masks, strict=True):
        np.testing.assert_array_equal(
            to_numpy(mask), (array >= expected).astype("float32")
        )
    kept = sum(int(to_numpy(m).sum()) for m in masks)
    assert kept == expected_kept(total, sparsity)


def _dtypes():
    found = ["float16", "float32"]
    if wide_dtype("float") == "float64":  # not JAX without x64
        found.append("float64")
    return found


@pytest.mark.parametrize("dtype", _dtypes())
@pytest.mark.parametrize("kind", ["random", "ties", "pruned"])
@pytest.mark.parametrize("method", ["auto", "sort"])
def test_kth_largest_matches_numpy_sort(dtype, kind, method):
    rng = _rng(dtype, kind)
    if kind == "random":
        values = np.abs(rng.normal(size=(37, 11)))
    elif kind == "ties":
        values = rng.integers(0, 6, size=(37, 11)) * 0.25
    else:
        values = np.abs(rng.normal(size=(37, 11)))
        values.ravel()[rng.permutation(values.size)[: values.size // 2]] = 0
    values = values.astype(dtype)
    for k in sorted({0, 1, 2, 40, 203, 406, 407}):
        got = to_numpy(
            selection.kth_largest(_tensor(values, dtype), k, method=method)
        )
        expected = _reference_kth([values], k)
        assert got.dtype == expected.dtype
        assert got == expected, (k, got, expected)


def test_kth_largest_k_zero_is_the_next_float_above_the_maximum():
    values = np.array([0.5, 0.25, 0.125], np.float32)
    got = to_numpy(selection.kth_largest(_tensor(values), 0))
    assert got == np.nextafter(np.float32(0.5), np.float32(np.inf))
    assert not np.any(values >= got)
    half = np.array([0.5, 0.25], np.float16)
    got = to_numpy(selection.kth_largest(_tensor(half, "float16"), 0))
    assert got.dtype == np.float16
    assert got == np.nextafter(np.float16(0.5), np.float16(np.inf))


def test_kth_largest_of_a_list_is_that_of_the_concatenation():
    rng = _rng("list")
    arrays = [
        np.abs(rng.normal(size=shape)).astype("float32")
        for shape in [(5, 4), (17,), (2, 3, 3)]
    ]
    total = sum(a.size for a in arrays)
    tensors = [_tensor(a) for a in arrays]
    for k in (0, 1, 7, total // 2, total):
        got = to_numpy(selection.kth_largest(tensors, k))
        assert got == _reference_kth(arrays, k), k
    # k may be an integer tensor.
    k = keras.ops.convert_to_tensor(7, "int32")
    assert to_numpy(selection.kth_largest(tensors, k)) == _reference_kth(
        arrays, 7
    )


def test_kth_largest_all_ties_keep_everything():
    values = np.full((4, 5), 0.375, np.float32)
    got = to_numpy(selection.kth_largest(_tensor(values), 10))
    assert got == np.float32(0.375)
    assert np.all(values >= got)


@pytest.mark.parametrize("k", [-1, 21])
def test_kth_largest_rejects_k_outside_the_range(k):
    with pytest.raises(ValueError, match=f"Received: k={k}"):
        selection.kth_largest(_tensor(np.ones((4, 5))), k)


def test_zero_pruned_gives_positive_zeros():
    weight = np.array([-1.0, 2.0, -3.0, 4.0], np.float32)
    mask = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    got = to_numpy(mask_lib.zero_pruned(_tensor(weight), _tensor(mask)))
    np.testing.assert_array_equal(got, [0.0, 2.0, 0.0, 4.0])
    assert not np.any(np.signbit(got[mask == 0]))
