"""The two-pass update (`model_pruning.fused_update`) against the general
path of TensorFlow ops (`model_pruning.mask`): the same thresholds, masks
and weights, bit for bit, and the same answer to NaN."""

import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_pruning as mp
from model_pruning import fused_update
from model_pruning import selection
from model_pruning.mask import decayed_threshold
from model_pruning.mask import global_magnitude_masks
from model_pruning.mask import magnitude_mask
from model_pruning.mask import num_kept
from model_pruning.mask import zero_pruned


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _weight_and_mask(size, pruned, dtype, key):
    """Signed weights with ties and zeros, and a mask with `pruned` zeros."""
    rng = _rng(size, pruned, dtype, key)
    weight = rng.standard_normal(size).astype(dtype)
    weight[rng.integers(0, size, size // 20 + 1)] = 0.5  # ties
    weight[rng.integers(0, size, size // 50 + 1)] = -0.0
    mask = (rng.random(size) >= pruned).astype(np.float32)
    return weight, mask


def _general(weights, masks, sparsity, previous, decay):
    """The TF-ops path: threshold, masks and weights as `pruning` had them."""
    magnitudes = [
        tf.abs(zero_pruned(tf.constant(w), tf.constant(m)))
        for w, m in zip(weights, masks, strict=True)
    ]
    if len(weights) == 1:
        update = magnitude_mask(
            magnitudes[0], tf.constant(sparsity), tf.constant(previous), decay
        )
        threshold, new_masks = update.threshold, [update.mask]
    else:
        threshold, new_masks = global_magnitude_masks(
            magnitudes, tf.constant(sparsity), tf.constant(previous), decay
        )
    combined = [
        tf.cast(n, tf.float32) * m
        for n, m in zip(new_masks, masks, strict=True)
    ]
    return (
        threshold.numpy(),
        [c.numpy() for c in combined],
        [
            (w * tf.cast(c, w.dtype)).numpy()
            for w, c in zip(weights, combined, strict=True)
        ],
    )


def _fused(weights, masks, sparsity, previous, decay):
    w = [tf.Variable(a) for a in weights]
    m = [tf.Variable(a) for a in masks]
    total = sum(a.size for a in weights)
    kth, finite = fused_update.kth_largest_magnitude(
        [tf.convert_to_tensor(v) for v in w],
        [tf.convert_to_tensor(v) for v in m],
        num_kept(total, tf.constant(sparsity)),
    )
    assert bool(finite)
    threshold = decayed_threshold(kth, tf.constant(previous), decay)
    fused_update.assign_at_threshold(w, m, threshold)
    return (
        threshold.numpy(),
        [v.numpy() for v in m],
        [v.numpy() for v in w],
    )


def _assert_same(got, expected):
    assert got[0] == expected[0]
    for a, b in zip(got[1], expected[1], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got[2], expected[2], strict=True):
        # Bit for bit: signed zeros (w * 0 keeps w's sign) included.
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.fixture(params=["xla", "tf_ops"], autouse=True)
def assign_path(request, monkeypatch):
    """Runs each test with the assigns compiled by XLA, and as TF ops."""
    minimum = 0 if request.param == "xla" else 1 << 62
    monkeypatch.setattr(fused_update, "_XLA_MIN_SIZE", minimum)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, 1000, (1 << 17) + 3, 400_001])
@pytest.mark.parametrize("pruned", [0.0, 0.5, 0.95])
def test_fused_update_equals_the_general_path(size, pruned, dtype):
    weight, mask = _weight_and_mask(size, pruned, dtype, "one")
    for sparsity in (0.0, 0.3, 0.5, 0.9, 0.999):
        for previous, decay in ((0.0, 0.0), (0.25, 0.5)):
            args = ([weight], [mask], sparsity, previous, decay)
            _assert_same(_fused(*args), _general(*args))


def test_fused_global_update_equals_the_general_path():
    pairs = [
        _weight_and_mask(size, pruned, np.float32, index)
        for index, (size, pruned) in enumerate(
            [(300_000, 0.0), (70_000, 0.5), (1, 0.0), (150_001, 0.9)]
        )
    ]
    weights = [p[0] for p in pairs]
    masks = [p[1] for p in pairs]
    for sparsity in (0.0, 0.5, 0.9, 0.99):
        args = (weights, masks, sparsity, 0.0, 0.0)
        _assert_same(_fused(*args), _general(*args))


@pytest.mark.parametrize(
    "bracket",
    [(5.0, 6.0), (-2.0, -1.0), (0.0, 0.0), (0.0, 0.5), (0.7, 0.7)],
)
def test_fused_selection_is_exact_when_the_sample_misses(bracket, monkeypatch):
    monkeypatch.setattr(selection, "_HOST_SMALL", 0)
    monkeypatch.setattr(
        selection,
        "_sample_bracket",
        lambda values, k, n: tuple(np.float32(b) for b in bracket),
    )
    weight, mask = _weight_and_mask(4001, 0.5, np.float32, "miss")
    for sparsity in (0.0, 0.2, 0.5, 0.7, 0.95):
        args = ([weight], [mask], sparsity, 0.0, 0.0)
        _assert_same(_fused(*args), _general(*args))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_kept_entry_is_found(bad):
    weight = np.linspace(-1, 1, 300_000).astype(np.float32)
    weight[123_456] = bad
    _, finite = fused_update.kth_largest_magnitude(
        [tf.constant(weight)], [tf.ones_like(weight)], 10
    )
    assert not bool(finite)


def test_non_finite_entries_count_only_where_kept():
    weight = np.linspace(-1, 1, 300_000).astype(np.float32)
    weight[5] = np.nan
    weight[7] = np.inf
    kept = np.ones_like(weight)
    _, finite = fused_update.kth_largest_magnitude(
        [tf.constant(weight)], [tf.constant(kept)], 10
    )
    assert not bool(finite)
    pruned = kept.copy()
    pruned[[5, 7]] = 0
    kth, finite = fused_update.kth_largest_magnitude(
        [tf.constant(weight)], [tf.constant(pruned)], 10
    )
    assert bool(finite)
    assert kth.numpy() == np.sort(np.abs(weight[pruned == 1]))[-10]


def _pruned_dense(block_size=(1, 1), **kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32)])
    return mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.ConstantSparsity(0.75, 0, frequency=1),
        block_size=block_size,
        **kwargs,
    )


def test_public_update_runs_the_fused_path_where_it_applies(monkeypatch):
    calls = []
    assign = fused_update.assign_at_threshold
    monkeypatch.setattr(
        fused_update,
        "assign_at_threshold",
        lambda *args: calls.append(args) or assign(*args),
    )
    step = tf.Variable(1, dtype=tf.int64)
    mp.Pruning(model=_pruned_dense(), global_step=step).mask_update_op()
    assert len(calls) == 1
    # Blocks, N:M and XLA take the general path.
    mp.Pruning(
        model=_pruned_dense(block_size=(4, 1)), global_step=step
    ).mask_update_op()
    mp.Pruning(
        model=_pruned_dense(sparsity_m_by_n=(2, 4)), global_step=step
    ).mask_update_op()
    mp.Pruning(
        model=_pruned_dense(), global_step=step, xla=True
    ).mask_update_op()
    assert len(calls) == 1
