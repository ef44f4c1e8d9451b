"""Tests of the mask math in `model_pruning.mask`, on plain tensors."""

import zlib

import numpy as np
import pytest
import tensorflow as tf

from model_pruning import PruningHParams
from model_pruning.mask import MaskUpdate
from model_pruning.mask import block_magnitude_mask
from model_pruning.mask import magnitude_mask
from model_pruning.mask import num_kept
from model_pruning.mask import zero_pruned


def _f32(value):
    return tf.constant(value, tf.float32)


def _mask(magnitudes, sparsity, previous=0.0, decay=0.0):
    return magnitude_mask(
        _f32(magnitudes), _f32(sparsity), _f32(previous), decay
    )


def _block_mask(magnitudes, sparsity, block_dims, pooling="AVG"):
    return block_magnitude_mask(
        _f32(magnitudes), _f32(sparsity), _f32(0.0), 0.0, block_dims, pooling
    )


def _rng(*key):
    """A generator seeded from a test's parameters."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _expected_kept(size, sparsity):
    """contrib's k in float32: round_half_even(size * (1 - s))."""
    kept = np.float32(size) * (np.float32(1.0) - np.float32(sparsity))
    return int(np.round(kept))


def _reference_mask(magnitudes, sparsity):
    """Sort-based reference: keep |w| >= the k-th largest magnitude."""
    flat = np.sort(magnitudes.reshape(-1))[::-1]
    k = _expected_kept(flat.size, sparsity)
    if k == 0:
        return np.zeros_like(magnitudes), None
    threshold = flat[k - 1]
    return (magnitudes >= threshold).astype(magnitudes.dtype), threshold


def test_magnitude_mask_contrib_update_single_mask():
    # contrib testUpdateSingleMask: 100 non-zeros before, 5 after.
    weights = np.linspace(1, 100, 100, dtype=np.float32)
    update = _mask(np.abs(weights), 0.95)
    assert isinstance(update, MaskUpdate)
    mask = update.mask.numpy()
    assert mask.shape == weights.shape
    assert np.count_nonzero(mask) == 5
    kept = np.sort(weights[mask == 1])
    np.testing.assert_array_equal(kept, np.sort(weights)[-5:])
    assert float(update.threshold) == 96.0


def test_magnitude_mask_half_sparsity_keeps_exactly_half():
    # FINAL's sort-based rule keeps exactly 50 (the histogram era kept 51).
    weights = np.linspace(1, 100, 100, dtype=np.float32)
    mask = _mask(weights, 0.5).mask.numpy()
    assert np.count_nonzero(mask) == 50
    np.testing.assert_array_equal(mask, (weights > 50).astype(np.float32))


def test_magnitude_mask_uses_magnitudes_of_signed_weights():
    weights = np.array([-5.0, 1.0, -0.5, 4.0, -3.0, 2.0], np.float32)
    mask = _mask(np.abs(weights), 0.5).mask.numpy()
    np.testing.assert_array_equal(mask, [1, 0, 0, 1, 1, 0])


@pytest.mark.parametrize(
    "size, sparsity",
    [
        (10, 0.25),
        (10, 0.35),
        (10, 0.45),
        (10, 0.15),
        (10, 0.05),
        (10, 0.96),
        (100, 0.005),
        (1000, 0.0005),
        (288, 0.9),
        (1000, 0.123),
        (7, 0.5),
        (3, 0.5),
        (100, 0.0),
        (100, 0.999),
    ],
)
def test_num_kept_matches_float32_numpy_round(size, sparsity):
    result = num_kept(size, _f32(sparsity))
    assert result.dtype == tf.int32
    assert int(result) == _expected_kept(size, sparsity)


def test_num_kept_python_float_sparsity():
    assert int(num_kept(10, 0.25)) == _expected_kept(10, 0.25)


def test_magnitude_mask_rounds_half_to_even():
    weights = np.arange(1, 11, dtype=np.float32)
    # 10 * (1 - 0.25) = 7.5 -> 8 kept; 10 * (1 - 0.35) = 6.5 -> 6 kept.
    for sparsity in (0.25, 0.35, 0.45, 0.15):
        mask = _mask(weights, sparsity).mask.numpy()
        assert mask.sum() == _expected_kept(10, sparsity)


def test_magnitude_mask_zero_kept_masks_everything():
    weights = np.linspace(0.1, 1.0, 10, dtype=np.float32)
    assert _expected_kept(10, 0.96) == 0
    update = _mask(weights, 0.96)
    np.testing.assert_array_equal(update.mask.numpy(), np.zeros(10))
    assert float(update.threshold) > weights.max()
    assert np.isfinite(float(update.threshold))


def test_magnitude_mask_zero_sparsity_keeps_everything():
    rng = np.random.default_rng(0)
    magnitudes = np.abs(rng.normal(size=(8, 16))).astype(np.float32)
    magnitudes[0, :4] = 0.0  # Already-pruned entries are kept at s = 0.
    update = _mask(magnitudes, 0.0)
    np.testing.assert_array_equal(update.mask.numpy(), np.ones((8, 16)))
    assert float(update.threshold) == magnitudes.min()


def test_magnitude_mask_ties_at_threshold_are_kept():
    # contrib's `mask = |w| >= threshold`: every magnitude equal to the
    # threshold is kept, so equal weights are all kept even though k is 5.
    magnitudes = np.full(10, 0.3, np.float32)
    update = _mask(magnitudes, 0.5)
    np.testing.assert_array_equal(update.mask.numpy(), np.ones(10))
    assert float(update.threshold) == np.float32(0.3)


def test_magnitude_mask_partial_ties_keep_more_than_k():
    magnitudes = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 4.0], np.float32)
    # k = 3, the 3rd largest is 2.0, and all three 2.0 entries are kept.
    mask = _mask(magnitudes, 0.5).mask.numpy()
    np.testing.assert_array_equal(mask, [0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("decay", [0.3, 0.9])
@pytest.mark.parametrize("previous", [0.0, 0.7, 2.5])
def test_magnitude_mask_threshold_decay(decay, previous):
    rng = np.random.default_rng(1)
    magnitudes = np.abs(rng.normal(size=(20, 10))).astype(np.float32)
    sparsity = 0.6
    k = _expected_kept(magnitudes.size, sparsity)
    kth = np.sort(magnitudes.reshape(-1))[::-1][k - 1]
    expected = (1.0 - decay) * kth + decay * previous
    update = _mask(magnitudes, sparsity, previous=previous, decay=decay)
    assert float(update.threshold) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(
        update.mask.numpy(),
        (magnitudes >= update.threshold.numpy()).astype(np.float32),
    )


def test_magnitude_mask_no_decay_ignores_previous_threshold():
    magnitudes = np.linspace(1, 100, 100, dtype=np.float32)
    update = _mask(magnitudes, 0.5, previous=1000.0, decay=0.0)
    assert float(update.threshold) == 51.0
    assert update.mask.numpy().sum() == 50


@pytest.mark.parametrize(
    "shape", [(100,), (10, 20), (7, 13), (3, 3, 4, 8), (1, 1, 16, 5)]
)
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.77, 0.9, 0.99])
def test_magnitude_mask_matches_numpy_sort_reference(shape, sparsity):
    rng = _rng(shape, sparsity)
    magnitudes = np.abs(rng.normal(size=shape)).astype(np.float32)
    expected_mask, expected_threshold = _reference_mask(magnitudes, sparsity)
    update = _mask(magnitudes, sparsity)
    mask = update.mask.numpy()
    assert mask.shape == shape
    assert update.mask.dtype == tf.float32
    np.testing.assert_array_equal(mask, expected_mask)
    if expected_threshold is not None:
        assert float(update.threshold) == expected_threshold


# contrib testBlockMaskingWithNonnegativeBlockDimensions data.
_AVG_2X2 = [
    [0.1, 0.1, 0.2, 0.2],
    [0.1, 0.1, 0.2, 0.2],
    [0.3, 0.3, 0.4, 0.4],
    [0.3, 0.3, 0.4, 0.4],
]
_MAX_2X2 = [
    [0.1, 0.0, 0.2, 0.0],
    [0.0, -0.1, 0.0, -0.2],
    [0.3, 0.0, 0.4, 0.0],
    [0.0, -0.3, 0.0, -0.4],
]
# contrib testBlockMaskingWithNegativeBlockDimensions data.
_AVG_ROWS = [
    [0.1, 0.1, 0.1, 0.1],
    [0.2, 0.2, 0.2, 0.2],
    [0.3, 0.3, 0.3, 0.3],
    [0.3, 0.3, 0.4, 0.4],
]
_MAX_ROWS = [
    [0.1, 0.0, 0.1, 0.0],
    [0.0, 0.1, 0.0, 0.2],
    [0.3, 0.0, 0.3, 0.0],
    [0.0, -0.3, 0.0, 0.4],
]
_EXPECTED_BLOCK_MASK = np.array(
    [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], np.float32
)


@pytest.mark.parametrize(
    "weights, block_dims, pooling",
    [
        (_MAX_2X2, (2, 2), "MAX"),
        (_AVG_2X2, (2, 2), "AVG"),
        (_MAX_ROWS, (1, -1), "MAX"),
        (_AVG_ROWS, (1, -1), "AVG"),
    ],
)
def test_block_magnitude_mask_contrib_block_masking(
    weights, block_dims, pooling
):
    magnitudes = np.abs(np.array(weights, np.float32))
    update = _block_mask(magnitudes, 0.5, block_dims, pooling)
    assert update.mask.shape == magnitudes.shape
    np.testing.assert_array_equal(update.mask.numpy(), _EXPECTED_BLOCK_MASK)


@pytest.mark.parametrize(
    "weights, block_dims, pooling",
    [
        (_MAX_2X2, (2, 2), "MAX"),
        (_AVG_2X2, (2, 2), "AVG"),
        (_MAX_ROWS, (1, -1), "MAX"),
        (_AVG_ROWS, (1, -1), "AVG"),
    ],
)
def test_block_magnitude_mask_contrib_higher_dimensions(
    weights, block_dims, pooling
):
    magnitudes = np.abs(np.array(weights, np.float32)).reshape(1, 4, 4)
    update = _block_mask(magnitudes, 0.5, block_dims, pooling)
    assert update.mask.shape == (1, 4, 4)
    np.testing.assert_array_equal(
        update.mask.numpy(), _EXPECTED_BLOCK_MASK.reshape(1, 4, 4)
    )


def test_block_magnitude_mask_threshold_is_in_pooled_units():
    magnitudes = np.abs(np.array(_AVG_2X2, np.float32))
    update = _block_mask(magnitudes, 0.5, (2, 2), "AVG")
    # Pooled blocks are 0.1, 0.2, 0.3, 0.4; k = 2 so the threshold is 0.3.
    assert float(update.threshold) == pytest.approx(0.3)
    update = _block_mask(magnitudes, 0.75, (-1, -1), "MAX")
    # One block, k = round(0.25) = 0: nothing kept.
    np.testing.assert_array_equal(update.mask.numpy(), np.zeros((4, 4)))


def test_block_magnitude_mask_contrib_per_layer_block_sparsity():
    # contrib testPerLayerBlockSparsity, block dims from block_dims_map.
    hparams = PruningHParams(
        block_dims_map=["layer1/weights:1x1", "layer2/weights:1x2"]
    )
    w1 = np.array([[-0.1, 0.1], [-0.2, 0.2]], np.float32)
    w2 = np.array([[0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4]], np.float32)
    mask1 = _block_mask(
        np.abs(w1), 0.5, hparams.block_dims("layer1/weights")
    ).mask.numpy()
    mask2 = _block_mask(
        np.abs(w2), 0.5, hparams.block_dims("layer2/weights")
    ).mask.numpy()
    np.testing.assert_array_equal(mask1, [[0, 0], [1, 1]])
    np.testing.assert_array_equal(mask2, [[0, 0, 1, 1], [0, 0, 1, 1]])
    assert mask1.mean() == 0.5  # sparsity 0.5
    assert mask2.mean() == 0.5


def _reference_block_mask(magnitudes, sparsity, block_dims, pooling):
    """Numpy reference: SAME-padded pooling over partial blocks."""
    rows, cols = magnitudes.shape
    height = rows if block_dims[0] == -1 else block_dims[0]
    width = cols if block_dims[1] == -1 else block_dims[1]
    block_rows = -(-rows // height)
    block_cols = -(-cols // width)
    reduce = np.mean if pooling == "AVG" else np.max
    pooled = np.empty((block_rows, block_cols), np.float32)
    for i in range(block_rows):
        for j in range(block_cols):
            block = magnitudes[
                i * height : (i + 1) * height, j * width : (j + 1) * width
            ]
            pooled[i, j] = reduce(block)
    block_mask, _ = _reference_mask(pooled, sparsity)
    expanded = np.kron(block_mask, np.ones((height, width), np.float32))
    return expanded[:rows, :cols], block_mask


@pytest.mark.parametrize(
    "shape, block_dims",
    [
        ((5, 5), (2, 2)),
        ((7, 3), (3, 2)),
        ((30, 30), (4, 4)),
        ((32, 32), (4, 4)),
        ((2, 32), (1, 4)),
        ((32, 2), (4, 1)),
        ((3, 3), (6, 6)),
        ((9, 10), (1, -1)),
        ((9, 10), (-1, 3)),
    ],
)
@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_block_magnitude_mask_matches_numpy_reference(
    shape, block_dims, pooling, sparsity
):
    rng = _rng(shape, block_dims)
    magnitudes = np.abs(rng.normal(size=shape)).astype(np.float32)
    expected, _ = _reference_block_mask(
        magnitudes, sparsity, block_dims, pooling
    )
    mask = _block_mask(magnitudes, sparsity, block_dims, pooling).mask
    assert mask.shape == shape
    np.testing.assert_array_equal(mask.numpy(), expected)


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_magnitude_mask_non_divisible_shape_same_padding(pooling):
    rng = np.random.default_rng(5)
    magnitudes = np.abs(rng.normal(size=(5, 5))).astype(np.float32)
    mask = _block_mask(magnitudes, 0.5, (2, 2), pooling).mask.numpy()
    assert mask.shape == (5, 5)
    # Constant within each (partial) 2x2 block of a 3x3 block grid.
    block_values = []
    for i in range(3):
        for j in range(3):
            block = mask[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            assert np.all(block == block.flat[0]), (i, j)
            block_values.append(block.flat[0])
    # 9 blocks at sparsity 0.5: round_half_even(4.5) = 4 blocks kept.
    assert sum(block_values) == _expected_kept(9, 0.5)


def test_block_magnitude_mask_avg_averages_valid_entries_of_edge_block():
    # The edge column block holds one valid column of large values; padding
    # must not dilute its average (TF AVG pooling ignores the padding).
    magnitudes = np.array(
        [[0.1, 0.1, 0.9], [0.1, 0.1, 0.9], [0.2, 0.2, 0.05]], np.float32
    )
    # Blocks (2x2, SAME): [[0.1, 0.9], [0.2, 0.05]]; keep 2 of 4.
    mask = _block_mask(magnitudes, 0.5, (2, 2), "AVG").mask.numpy()
    np.testing.assert_array_equal(mask, [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_magnitude_mask_edge_padding_keeps_blocks_aligned(pooling):
    # 10 columns in blocks of 3: the blocks are columns 0-2, 3-5, 6-8 and the
    # partial block 9. The only non-zero weight is in column 2, so the block
    # of columns 0-2 is the one kept. SAME pooling pads one column at the
    # front here (pad_total = 2), which must not shift the blocks.
    magnitudes = np.zeros((2, 10), np.float32)
    magnitudes[:, 2] = 1.0
    mask = _block_mask(magnitudes, 0.75, (2, 3), pooling).mask.numpy()
    expected = np.zeros((2, 10), np.float32)
    expected[:, 0:3] = 1.0
    np.testing.assert_array_equal(mask, expected)


def test_block_magnitude_mask_conv_kernel_falls_back_to_elementwise():
    rng = np.random.default_rng(7)
    magnitudes = np.abs(rng.normal(size=(3, 3, 4, 8))).astype(np.float32)
    block = _block_mask(magnitudes, 0.5, (2, 2), "AVG")
    element = _mask(magnitudes, 0.5)
    expected, threshold = _reference_mask(magnitudes, 0.5)
    assert block.mask.shape == (3, 3, 4, 8)
    np.testing.assert_array_equal(block.mask.numpy(), expected)
    np.testing.assert_array_equal(block.mask.numpy(), element.mask.numpy())
    assert float(block.threshold) == threshold


def test_block_magnitude_mask_one_by_one_conv_kernel_uses_blocks():
    # A 1x1 conv kernel squeezes to rank 2 and gets block pruning (contrib).
    rng = np.random.default_rng(8)
    magnitudes = np.abs(rng.normal(size=(1, 1, 8, 6))).astype(np.float32)
    expected, _ = _reference_block_mask(magnitudes[0, 0], 0.5, (2, 3), "MAX")
    mask = _block_mask(magnitudes, 0.5, (2, 3), "MAX").mask
    assert mask.shape == (1, 1, 8, 6)
    np.testing.assert_array_equal(mask.numpy()[0, 0], expected)


def test_block_magnitude_mask_one_by_one_block_is_elementwise():
    rng = np.random.default_rng(9)
    magnitudes = np.abs(rng.normal(size=(6, 7))).astype(np.float32)
    block = _block_mask(magnitudes, 0.6, (1, 1), "MAX")
    expected, threshold = _reference_mask(magnitudes, 0.6)
    np.testing.assert_array_equal(block.mask.numpy(), expected)
    assert float(block.threshold) == threshold


@pytest.mark.parametrize(
    "shape, block_dims, pooling, sparsity",
    [
        ((10, 20), (1, 1), "AVG", 0.7),
        ((3, 3, 4, 8), (2, 2), "AVG", 0.5),
        ((5, 5), (2, 2), "AVG", 0.5),
        ((1, 8, 12), (2, 4), "MAX", 0.6),
        ((9, 10), (1, -1), "AVG", 0.3),
        ((10,), (1, 1), "AVG", 0.96),  # k == 0
    ],
)
def test_block_magnitude_mask_same_under_xla(
    shape, block_dims, pooling, sparsity
):
    rng = np.random.default_rng(11)
    magnitudes = np.abs(rng.normal(size=shape)).astype(np.float32)

    @tf.function(jit_compile=True)
    def compiled(values, target, previous):
        return block_magnitude_mask(
            values, target, previous, 0.5, block_dims, pooling, xla=True
        )

    args = (_f32(magnitudes), _f32(sparsity), _f32(0.25))
    eager = block_magnitude_mask(*args, 0.5, block_dims, pooling)
    xla = compiled(*args)
    np.testing.assert_array_equal(xla.mask.numpy(), eager.mask.numpy())
    assert float(xla.threshold) == pytest.approx(
        float(eager.threshold), rel=1e-6
    )


def test_magnitude_mask_same_under_xla_and_tf_function():
    rng = np.random.default_rng(12)
    magnitudes = _f32(np.abs(rng.normal(size=(16, 16))))

    def update(target, xla=False):
        return magnitude_mask(magnitudes, target, _f32(0.0), 0.0, xla=xla)

    compiled = tf.function(lambda t: update(t, xla=True), jit_compile=True)
    graph = tf.function(update)
    for sparsity in (0.0, 0.5, 0.9, 0.999):
        eager = update(_f32(sparsity))
        for result in (compiled(_f32(sparsity)), graph(_f32(sparsity))):
            np.testing.assert_array_equal(
                result.mask.numpy(), eager.mask.numpy()
            )
            assert float(result.threshold) == float(eager.threshold)


def test_zero_pruned_gives_positive_zero_where_masked():
    weight = _f32([[-2.0, 3.0], [-0.5, 0.25]])
    mask = _f32([[0.0, 1.0], [1.0, 0.0]])

    result = zero_pruned(weight, mask).numpy()

    np.testing.assert_array_equal(result, [[0.0, 3.0], [-0.5, 0.0]])
    # A product would give -0.0 for the masked -2.0; encoders and files
    # should see a plain zero.
    assert not np.signbit(result[0, 0])
    assert not np.signbit(result[1, 1])
