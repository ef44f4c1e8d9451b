"""Tests of `Pruning`: contrib's `pruning_test.py` cases ported to Keras.

The numbers are contrib's (spec 6.2): weights `linspace(1, 100, 100)` in a
layer's kernel, a global step variable the test increments, and exact
non-zero counts after each mask update.
"""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_pruning as mp


class WeightsLayer(keras.layers.Layer):
    """A custom prunable layer whose only weight is named `weights`."""

    def __init__(self, units=1, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(
            name="weights",
            shape=(input_shape[-1], self.units),
            initializer="random_normal",
        )

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.w)

    def get_prunable_weights(self):
        return [self.w]


def _wrapped_dense(hparams=None, input_dim=100, units=1, **dense_kwargs):
    """Returns a built `PruneLowMagnitude(Dense)` without bias."""
    dense = keras.layers.Dense(units, use_bias=False, **dense_kwargs)
    wrapper = mp.PruneLowMagnitude(dense, hparams=hparams)
    wrapper.build((None, input_dim))
    return wrapper


def _linspace_wrapper(hparams=None, **dense_kwargs):
    """A wrapped Dense whose kernel is `linspace(1, 100, 100)` as (100, 1)."""
    wrapper = _wrapped_dense(hparams, **dense_kwargs)
    wrapper.layer.kernel.assign(
        np.linspace(1.0, 100.0, 100).reshape(100, 1).astype("float32")
    )
    return wrapper


def _mask(wrapper, index=0):
    return keras.ops.convert_to_numpy(wrapper.pruned_weights[index].mask)


def _nonzeros(wrapper, index=0):
    return int(np.count_nonzero(_mask(wrapper, index)))


def _step():
    return tf.Variable(0, dtype=tf.int64)


def test_pruning_external_sparsity_replaces_schedule():
    hparams = mp.PruningHParams(target_sparsity=0.9)
    wrapper = _linspace_wrapper(hparams)
    external = tf.Variable(0.5)
    pruning = mp.Pruning(global_step=_step(), sparsity=external, model=wrapper)

    # The internal schedule gives 0 at step 0 and 0.9 at its end.
    assert float(pruning.sparsity_at(hparams, 0)) == 0.5
    assert float(pruning.sparsity_at(hparams, 1000)) == 0.5
    external.assign(0.25)
    assert float(pruning.sparsity_at(hparams, 0)) == 0.25


def test_pruning_internal_schedule_without_external_sparsity():
    hparams = mp.PruningHParams(
        initial_sparsity=0.0,
        target_sparsity=0.9,
        sparsity_function_end_step=100,
    )
    wrapper = _linspace_wrapper(hparams)
    pruning = mp.Pruning(global_step=_step(), model=wrapper)

    assert float(pruning.sparsity_at(hparams, 0)) == 0.0
    np.testing.assert_allclose(
        float(pruning.sparsity_at(hparams, 50)), 0.9 * (1 - 0.5**3), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(pruning.sparsity_at(hparams, 200)), 0.9, rtol=1e-6
    )


def test_wrapper_masked_weights_equal_weights_before_update():
    wrapper = _wrapped_dense(input_dim=10, units=20)
    weights = np.random.normal(size=(10, 20)).astype("float32")
    wrapper.layer.kernel.assign(weights)

    mask = _mask(wrapper)
    assert mask.shape == (10, 20)
    assert np.all(mask == 1.0)
    (masked,) = mp.get_masked_weights(wrapper)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(masked), weights)
    x = np.random.normal(size=(3, 10)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(wrapper(x)), x @ weights, rtol=1e-5
    )


def test_pruning_mask_update_single_mask_keeps_five_percent():
    hparams = mp.PruningHParams(threshold_decay=0.0)
    wrapper = _linspace_wrapper(hparams)
    pruning = mp.Pruning(
        global_step=_step(), sparsity=tf.Variable(0.95), model=wrapper
    )

    assert _nonzeros(wrapper) == 100
    pruning.mask_update_op()
    assert _nonzeros(wrapper) == 5
    # The five largest magnitudes are kept; the threshold is the 5th largest.
    np.testing.assert_array_equal(
        np.flatnonzero(_mask(wrapper)), range(95, 100)
    )
    assert float(wrapper.pruned_weights[0].threshold) == 96.0


def test_pruning_mask_update_half_sparsity_keeps_fifty():
    hparams = mp.PruningHParams(threshold_decay=0.0)
    wrapper = _linspace_wrapper(hparams)
    pruning = mp.Pruning(
        global_step=_step(), sparsity=tf.Variable(0.5), model=wrapper
    )

    pruning.mask_update_op()
    assert _nonzeros(wrapper) == 50
    np.testing.assert_array_equal(
        np.flatnonzero(_mask(wrapper)), range(50, 100)
    )


def _run_conditional_loop(pruning, global_step, sparsity, update):
    counts = []
    for value in np.linspace(0.0, 0.9, 10):
        sparsity.assign(value)
        update()
        global_step.assign_add(1)
        counts.append(_nonzeros(pruning.layers[0]))
    return counts


@pytest.mark.parametrize("in_tf_function", [False, True])
def test_pruning_conditional_mask_update_follows_step_window(in_tf_function):
    hparams = mp.PruningHParams(
        pruning_frequency=2,
        begin_pruning_step=1,
        end_pruning_step=6,
        nbins=100,
        threshold_decay=0.0,
    )
    wrapper = _linspace_wrapper(hparams)
    global_step = _step()
    sparsity = tf.Variable(0.0)
    pruning = mp.Pruning(
        global_step=global_step, sparsity=sparsity, model=wrapper
    )
    update = pruning.conditional_mask_update_op
    if in_tf_function:
        update = tf.function(update)

    counts = _run_conditional_loop(pruning, global_step, sparsity, update)

    assert counts == [100, 100, 80, 80, 60, 60, 40, 40, 40, 40]
    assert int(wrapper.last_mask_update_step) == 6


def test_pruning_conditional_mask_update_returns_whether_updated():
    hparams = mp.PruningHParams(
        pruning_frequency=2, begin_pruning_step=1, end_pruning_step=6
    )
    wrapper = _linspace_wrapper(hparams)
    global_step = _step()
    pruning = mp.Pruning(
        global_step=global_step, sparsity=tf.Variable(0.5), model=wrapper
    )

    fired = []
    for _ in range(10):
        fired.append(bool(pruning.conditional_mask_update_op()))
        global_step.assign_add(1)

    assert [i for i, f in enumerate(fired) if f] == [2, 4, 6]


def _weights_wrapper(name, hparams, weights):
    wrapper = mp.PruneLowMagnitude(
        WeightsLayer(units=weights.shape[1], name=name), hparams=hparams
    )
    wrapper.build((None, weights.shape[0]))
    wrapper.layer.w.assign(weights)
    return wrapper


def test_pruning_weight_specific_sparsity():
    hparams = mp.PruningHParams(
        begin_pruning_step=1,
        pruning_frequency=1,
        end_pruning_step=100,
        target_sparsity=0.5,
        sparsity_function_end_step=100,
        threshold_decay=0.0,
        weight_sparsity_map=(
            "layer1:0.6",
            "layer2/weights:0.75",
            ".*kernel:0.6",
        ),
    )
    values = np.linspace(1.0, 100.0, 100).reshape(100, 1).astype("float32")
    layer1 = _weights_wrapper("layer1", hparams, values)
    layer2 = _weights_wrapper("layer2", hparams, values)
    layer3 = _linspace_wrapper(hparams, name="layer3")
    model = [layer1, layer2, layer3]
    # Each regex matches exactly one weight.
    names = [entry.name for entry in mp.pruned_weights(model)]
    assert names == ["layer1/weights", "layer2/weights", "layer3/kernel"]

    global_step = _step()
    pruning = mp.Pruning(global_step=global_step, model=model)
    for _ in range(110):
        pruning.conditional_mask_update_op()
        global_step.assign_add(1)

    np.testing.assert_allclose(
        mp.get_weight_sparsity(model), [0.6, 0.75, 0.6], atol=1e-6
    )


def test_pruning_per_layer_block_sparsity():
    hparams = mp.PruningHParams(
        block_dims_map=("layer1/weights:1x1", "layer2/weights:1x2"),
        block_pooling_function="AVG",
        threshold_decay=0.0,
    )
    w1 = np.array([[-0.1, 0.1], [-0.2, 0.2]], dtype="float32")
    w2 = np.array([[0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4]], dtype="float32")
    layer1 = _weights_wrapper("layer1", hparams, w1)
    layer2 = _weights_wrapper("layer2", hparams, w2)
    assert layer1.pruned_weights[0].block_dims == (1, 1)
    assert layer2.pruned_weights[0].block_dims == (1, 2)
    pruning = mp.Pruning(
        global_step=_step(), sparsity=tf.Variable(0.5), model=[layer1, layer2]
    )

    pruning.mask_update_op()

    np.testing.assert_array_equal(_mask(layer1), [[0, 0], [1, 1]])
    np.testing.assert_array_equal(_mask(layer2), [[0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_allclose(
        mp.get_weight_sparsity([layer1, layer2]), [0.5, 0.5]
    )


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_prune_low_magnitude_block_size_masks_whole_blocks(pooling):
    dense = keras.layers.Dense(6, use_bias=False)
    wrapper = mp.prune_low_magnitude(
        dense,
        pruning_schedule=mp.ConstantSparsity(0.5, begin_step=0),
        block_size=(2, 2),
        block_pooling_type=pooling,
    )
    wrapper.build((None, 4))
    weights = np.random.normal(size=(4, 6)).astype("float32")
    dense.kernel.assign(weights)
    pruning = mp.Pruning(global_step=_step(), model=wrapper)

    pruning.mask_update_op()

    mask = _mask(wrapper)
    blocks = mask.reshape(2, 2, 3, 2).transpose(0, 2, 1, 3)  # (2, 3, 2, 2)
    block_mask = blocks[:, :, 0, 0]
    # Constant on every 2x2 block.
    np.testing.assert_array_equal(
        blocks, np.broadcast_to(block_mask[:, :, None, None], blocks.shape)
    )
    # Half of the 6 blocks kept: those with the largest pooled magnitude.
    magnitudes = np.abs(weights).reshape(2, 2, 3, 2).transpose(0, 2, 1, 3)
    pool = np.mean if pooling == "AVG" else np.max
    pooled = pool(magnitudes, axis=(2, 3))
    expected = np.zeros(6)
    expected[np.argsort(pooled, axis=None)[-3:]] = 1.0
    np.testing.assert_array_equal(block_mask.reshape(-1), expected)


def test_pruning_pruned_weights_never_regrow():
    hparams = mp.PruningHParams(threshold_decay=0.0)
    wrapper = _linspace_wrapper(hparams)
    sparsity = tf.Variable(0.5)
    pruning = mp.Pruning(global_step=_step(), sparsity=sparsity, model=wrapper)
    pruning.mask_update_op()
    assert _mask(wrapper)[0, 0] == 0.0

    # A pruned position's raw weight becomes by far the largest.
    kernel = wrapper.layer.kernel
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[0, 0]], [1e6]))
    pruning.mask_update_op()
    assert _mask(wrapper)[0, 0] == 0.0
    assert _nonzeros(wrapper) == 50

    sparsity.assign(0.6)
    pruning.mask_update_op()
    assert _mask(wrapper)[0, 0] == 0.0
    assert _nonzeros(wrapper) == 40
    np.testing.assert_array_equal(
        np.flatnonzero(_mask(wrapper)), range(60, 100)
    )


def test_pruning_spec_differing_from_layer_hparams_raises():
    wrapper = _linspace_wrapper(mp.PruningHParams(target_sparsity=0.5))
    # The same spec is accepted.
    mp.Pruning(
        spec=mp.PruningHParams(target_sparsity=0.5),
        global_step=_step(),
        model=wrapper,
    )
    with pytest.raises(ValueError, match="spec"):
        mp.Pruning(
            spec=mp.PruningHParams(target_sparsity=0.7),
            global_step=_step(),
            model=wrapper,
        )


def test_pruning_model_without_pruned_layers_raises():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="prune_low_magnitude"):
        mp.Pruning(global_step=_step(), model=model)


def test_pruning_without_global_step_or_optimizer_raises_on_update():
    inputs = keras.Input((100,))
    wrapper = mp.PruneLowMagnitude(keras.layers.Dense(1, use_bias=False))
    model = keras.Model(inputs, wrapper(inputs))
    pruning = mp.Pruning(sparsity=0.5, model=model)

    with pytest.raises(ValueError, match="global_step"):
        pruning.mask_update_op()
    with pytest.raises(ValueError, match="global_step"):
        pruning.conditional_mask_update_op()


def test_pruning_uses_optimizer_iterations_without_global_step():
    inputs = keras.Input((100,))
    hparams = mp.PruningHParams(pruning_frequency=3, threshold_decay=0.0)
    wrapper = mp.PruneLowMagnitude(
        keras.layers.Dense(1, use_bias=False), hparams=hparams
    )
    model = keras.Model(inputs, wrapper(inputs))
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    pruning = mp.Pruning(sparsity=0.5, model=model)

    assert not bool(pruning.conditional_mask_update_op())
    model.optimizer.iterations.assign(3)
    assert bool(pruning.conditional_mask_update_op())
    assert int(wrapper.last_mask_update_step) == 3


def _two_layer_model():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(7, name="first")(inputs)
    outputs = keras.layers.Dense(3, name="second")(hidden)
    model = keras.Model(inputs, outputs)
    return mp.prune_low_magnitude(
        model, pruning_schedule=mp.ConstantSparsity(0.5, begin_step=0)
    )


def test_accessors_return_aligned_lists_in_stable_order():
    pruned = _two_layer_model()
    pruning = mp.Pruning(global_step=_step(), model=pruned)
    pruning.mask_update_op()

    first = (
        mp.get_masks(pruned),
        mp.get_thresholds(pruned),
        mp.get_weights(pruned),
    )
    second = (
        mp.get_masks(pruned),
        mp.get_thresholds(pruned),
        mp.get_weights(pruned),
    )
    for a, b in zip(first, second, strict=True):
        assert [id(v) for v in a] == [id(v) for v in b]

    masks, thresholds, weights = first
    assert len(masks) == len(thresholds) == len(weights) == 2
    wrappers = mp.pruned_layers(pruned)
    assert [w.layer.name for w in wrappers] == ["first", "second"]
    assert weights[0] is wrappers[0].layer.kernel
    assert weights[1] is wrappers[1].layer.kernel
    for wrapper, mask, threshold in zip(
        wrappers, masks, thresholds, strict=True
    ):
        assert mask is wrapper.pruned_weights[0].mask
        assert threshold is wrapper.pruned_weights[0].threshold
    for mask, weight in zip(masks, weights, strict=True):
        assert tuple(mask.shape) == tuple(weight.shape)

    masked = mp.get_masked_weights(pruned)
    for value, mask, weight in zip(masked, masks, weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(value),
            keras.ops.convert_to_numpy(weight)
            * keras.ops.convert_to_numpy(mask),
        )
    sparsities = mp.get_weight_sparsity(pruned)
    expected = [1.0 - np.mean(keras.ops.convert_to_numpy(m)) for m in masks]
    np.testing.assert_allclose(sparsities, expected)
    np.testing.assert_allclose(sparsities, [0.5, 0.5], atol=1 / 21)


def test_update_pruning_step_callback_reaches_final_sparsity():
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(
        5, kernel_initializer="random_normal", name="hidden"
    )(inputs)
    outputs = keras.layers.Dense(
        2, kernel_initializer="random_normal", name="out"
    )(hidden)
    model = keras.Model(inputs, outputs)
    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.PolynomialDecay(
            0.0, 0.75, begin_step=0, end_step=10, frequency=4
        ),
    )
    pruned.compile(optimizer="adam", loss="mse", steps_per_execution=3)
    x = np.random.normal(size=(20, 10)).astype("float32")
    y = np.random.normal(size=(20, 2)).astype("float32")

    pruned.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[mp.UpdatePruningStep()],
    )

    assert int(pruned.optimizer.iterations) == 15
    for wrapper in mp.pruned_layers(pruned):
        assert int(wrapper.last_mask_update_step) >= 10
        for entry in wrapper.pruned_weights:
            size = int(np.prod(entry.weight.shape))
            ones = int(np.sum(keras.ops.convert_to_numpy(entry.mask)))
            assert ones == int(np.round(0.25 * size)), entry.name


def test_pruning_objects_for_many_models_do_not_warn_of_retracing():
    messages = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    tf.get_logger().addHandler(handler)
    try:
        for _ in range(7):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            pruned = mp.prune_low_magnitude(model)
            step = tf.Variable(1, dtype=tf.int64)
            mp.Pruning(model=pruned, global_step=step).mask_update_op()
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [m for m in messages if "retracing" in m]
