"""End-to-end tests: prune, train, save, resume, strip, export.

Expected schedules and mask sizes are computed here in NumPy from Zhu &
Gupta's eq. (1) and contrib's update rule, independently of the library.
"""

import copy
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import as_numpy
from reference import expected_kept
from reference import zhu_gupta_target

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

_F32 = np.float32


def _mlp(bias_initializer="random_normal"):
    """64 -> Dense 128 relu -> Dense 64 relu -> Dense 10 (logits)."""
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(
        128, activation="relu", bias_initializer=bias_initializer
    )(inputs)
    hidden = keras.layers.Dense(
        64, activation="relu", bias_initializer=bias_initializer
    )(hidden)
    outputs = keras.layers.Dense(10, bias_initializer=bias_initializer)(hidden)
    return keras.Model(inputs, outputs)


def _data(samples=320, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 64)).astype("float32")
    y = rng.integers(0, 10, size=(samples,)).astype("int32")
    return x, y


def _compile(model, optimizer="adam", **kwargs):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def _expected_update_steps(begin, end, frequency, last_step):
    """Contrib's update rule plus the catch-up at the end step."""
    steps, last = [], 0
    for t in range(1, last_step + 1):
        regular = begin <= t and last + frequency <= t and t <= end
        catch_up = begin <= t and last < end <= t
        if regular or catch_up:
            steps.append(t)
            last = t
    return steps


class _MaskRecorder(keras.callbacks.Callback):
    """Records, before each batch (after `UpdatePruningStep` ran, as it is
    listed first), the step, update steps and masks."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rows.append(
            (
                int(as_numpy(self.model.optimizer.iterations)),
                [
                    int(as_numpy(layer.last_mask_update_step))
                    for layer in mp.pruned_layers(self.model)
                ],
                [as_numpy(mask).copy() for mask in mp.get_masks(self.model)],
            )
        )


def test_fit_mlp_reaches_target_and_follows_eq1_at_every_update():
    initial, final, begin, end, frequency = 0.0, 0.9, 0, 40, 10
    pruned = mp.prune_low_magnitude(
        _mlp(),
        pruning_schedule=mp.PolynomialDecay(
            initial, final, begin_step=begin, end_step=end, frequency=frequency
        ),
    )
    _compile(pruned)
    x, y = _data(320)
    recorder = _MaskRecorder()
    pruned.fit(
        x,
        y,
        batch_size=32,
        epochs=5,
        shuffle=False,
        callbacks=[mp.UpdatePruningStep(), recorder],
        verbose=0,
    )
    total_steps = 50
    assert int(as_numpy(pruned.optimizer.iterations)) == total_steps
    assert [row[0] for row in recorder.rows] == list(range(total_steps))

    layers = mp.pruned_layers(pruned)
    assert len(layers) == 3
    sizes = [int(np.prod(w.shape)) for w in mp.get_weights(pruned)]
    assert sizes == [64 * 128, 128 * 64, 64 * 10]

    expected_updates = _expected_update_steps(
        begin, end, frequency, total_steps
    )
    assert expected_updates == [10, 20, 30, 40]

    previous_last = [0] * len(layers)
    previous_masks = [
        np.ones(w.shape, "float32") for w in mp.get_weights(pruned)
    ]
    observed_updates = []
    for step, lasts, masks in recorder.rows:
        changed = lasts != previous_last
        if changed:
            observed_updates.append(step)
            assert lasts == [step] * len(layers)
            target = zhu_gupta_target(step, initial, final, begin, end)
            for layer in layers:
                library_target = float(mp.target_sparsity(layer.hparams, step))
                assert library_target == pytest.approx(float(target), abs=1e-6)
            for size, mask, old in zip(
                sizes, masks, previous_masks, strict=True
            ):
                assert np.count_nonzero(mask) == expected_kept(size, target)
                # Masks only shrink: nothing pruned comes back.
                assert np.all(mask <= old)
        else:
            for mask, old in zip(masks, previous_masks, strict=True):
                np.testing.assert_array_equal(mask, old)
        previous_last, previous_masks = lasts, masks
    assert observed_updates == expected_updates

    # Final state: exactly round_half_even(0.1 * n) entries kept.
    for size, mask in zip(sizes, mp.get_masks(pruned), strict=True):
        mask = as_numpy(mask)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.count_nonzero(mask) == int(np.round(0.1 * size))
        assert np.count_nonzero(mask) == expected_kept(size, final)

    # Biases are never pruned.
    for layer in layers:
        assert [
            entry.name.split("/")[-1] for entry in layer.pruned_weights
        ] == ["kernel"]
        assert not any("bias" in entry.name for entry in layer.pruned_weights)

    masks = [as_numpy(m) for m in mp.get_masks(pruned)]
    stripped = mp.strip_pruning(pruned)
    dense_layers = [
        layer
        for layer in stripped.layers
        if isinstance(layer, keras.layers.Dense)
    ]
    assert len(dense_layers) == 3
    for layer, size, mask in zip(dense_layers, sizes, masks, strict=True):
        kernel = as_numpy(layer.kernel)
        assert np.count_nonzero(kernel) == int(np.round(0.1 * size))
        np.testing.assert_array_equal(kernel != 0, mask != 0)
        bias = as_numpy(layer.bias)
        assert np.count_nonzero(bias) == bias.size


def test_fit_catch_up_update_reaches_final_sparsity_when_end_is_skipped():
    begin, end, frequency = 0, 25, 10
    pruned = mp.prune_low_magnitude(
        _mlp(),
        pruning_schedule=mp.PolynomialDecay(
            0.0, 0.9, begin_step=begin, end_step=end, frequency=frequency
        ),
    )
    _compile(pruned)
    x, y = _data(300)
    recorder = _MaskRecorder()
    pruned.fit(
        x,
        y,
        batch_size=10,
        epochs=1,
        shuffle=False,
        callbacks=[mp.UpdatePruningStep(), recorder],
        verbose=0,
    )
    assert int(as_numpy(pruned.optimizer.iterations)) == 30

    updates, last = [], 0
    for step, lasts, _ in recorder.rows:
        assert len(set(lasts)) == 1
        if lasts[0] != last:
            updates.append(step)
            assert lasts[0] == step
            last = lasts[0]
    assert updates == [10, 20, 25]
    assert updates == _expected_update_steps(begin, end, frequency, 30)

    hparams = mp.pruned_layers(pruned)[0].hparams
    assert float(mp.target_sparsity(hparams, 25)) == float(_F32(0.9))
    # Without the catch-up the last update (step 20) would leave 0.8928.
    stale = float(zhu_gupta_target(20, 0.0, 0.9, begin, end))
    assert stale == pytest.approx(0.8928, abs=1e-6)
    for weight, mask in zip(
        mp.get_weights(pruned), mp.get_masks(pruned), strict=True
    ):
        size = int(np.prod(weight.shape))
        kept = np.count_nonzero(as_numpy(mask))
        assert kept == expected_kept(size, 0.9)
        assert kept == int(np.round(0.1 * size))
        assert kept < expected_kept(size, stale)
    for sparsity, weight in zip(
        mp.get_weight_sparsity(pruned), mp.get_weights(pruned), strict=True
    ):
        size = int(np.prod(weight.shape))
        assert sparsity == pytest.approx(
            1.0 - np.round(0.1 * size) / size, abs=1e-6
        )


def _build_resume_model():
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    pruned = mp.prune_low_magnitude(
        _mlp(),
        pruning_schedule=mp.PolynomialDecay(
            0.1, 0.8, begin_step=4, end_step=40, frequency=6
        ),
    )
    return _compile(pruned, optimizer=keras.optimizers.Adam(1e-3))


def _pruning_state(model):
    return {
        "iterations": int(as_numpy(model.optimizer.iterations)),
        "masks": [as_numpy(v).copy() for v in mp.get_masks(model)],
        "thresholds": [as_numpy(v).copy() for v in mp.get_thresholds(model)],
        "weights": [as_numpy(v).copy() for v in mp.get_weights(model)],
        "last": [
            int(as_numpy(layer.last_mask_update_step))
            for layer in mp.pruned_layers(model)
        ],
        "variables": {v.path: as_numpy(v).copy() for v in model.variables},
        "optimizer": [as_numpy(v).copy() for v in model.optimizer.variables],
    }


def test_save_mid_pruning_and_resume_matches_uninterrupted_fit(tmp_path):
    x, y = _data(256)
    fit_kwargs = dict(batch_size=32, shuffle=False, verbose=0)
    epochs, split = 6, 3  # 8 steps per epoch; save at step 24 of 48.

    run_a = _build_resume_model()
    run_a.fit(
        x, y, epochs=epochs, callbacks=[mp.UpdatePruningStep()], **fit_kwargs
    )
    state_a = _pruning_state(run_a)
    assert state_a["iterations"] == 48
    assert state_a["last"] == [40, 40, 40]

    run_b = _build_resume_model()
    run_b.fit(
        x, y, epochs=split, callbacks=[mp.UpdatePruningStep()], **fit_kwargs
    )
    mid = _pruning_state(run_b)
    hparams = mp.pruned_layers(run_b)[0].hparams
    # The save falls strictly inside the pruning window, after an update.
    assert (
        hparams.begin_pruning_step
        < mid["iterations"]
        < (hparams.end_pruning_step)
    )
    assert mid["iterations"] == 24
    updates_so_far = _expected_update_steps(4, 40, 6, mid["iterations"])
    assert mid["last"] == [updates_so_far[-1]] * 3
    mid_sparsity = mp.get_weight_sparsity(run_b)
    assert all(0.1 < s < 0.8 for s in mid_sparsity)

    path = tmp_path / "mid.keras"
    run_b.save(path)
    keras.backend.clear_session()
    resumed = keras.models.load_model(path)
    loaded = _pruning_state(resumed)
    assert loaded["iterations"] == mid["iterations"]
    assert loaded["last"] == mid["last"]
    for key in ("masks", "thresholds", "weights", "optimizer"):
        for got, want in zip(loaded[key], mid[key], strict=True):
            np.testing.assert_array_equal(got, want)
    assert [layer.hparams for layer in mp.pruned_layers(resumed)] == [
        hparams
    ] * 3

    resumed.fit(
        x,
        y,
        epochs=epochs,
        initial_epoch=split,
        callbacks=[mp.UpdatePruningStep()],
        **fit_kwargs,
    )
    state_b = _pruning_state(resumed)
    assert state_b["iterations"] == state_a["iterations"]
    assert state_b["last"] == state_a["last"]
    for got, want in zip(state_b["masks"], state_a["masks"], strict=True):
        assert np.array_equal(got, want)
    for key in ("thresholds", "weights", "optimizer"):
        for got, want in zip(state_b[key], state_a[key], strict=True):
            np.testing.assert_array_equal(got, want)
    assert sorted(state_b["variables"]) == sorted(state_a["variables"])
    for name, value in state_a["variables"].items():
        np.testing.assert_array_equal(state_b["variables"][name], value)
    # The schedule continued to the final target rather than restarting.
    for weight, mask in zip(state_b["weights"], state_b["masks"], strict=True):
        assert np.count_nonzero(mask) == expected_kept(weight.size, 0.8)


def _forbidden_paths(model):
    words = ("mask", "threshold", "last_mask_update_step")
    return [v.path for v in model.variables if any(w in v.path for w in words)]


def test_strip_pruning_gives_identical_predictions_and_sparse_exports(
    tmp_path,
):
    original = _mlp()
    original_weights = [w.copy() for w in original.get_weights()]
    pruned = mp.prune_low_magnitude(
        original,
        pruning_schedule=mp.PolynomialDecay(
            0.0, 0.75, begin_step=0, end_step=10, frequency=5
        ),
    )
    _compile(pruned)
    x, y = _data(200)
    pruned.fit(
        x,
        y,
        batch_size=10,
        epochs=1,
        callbacks=[mp.UpdatePruningStep()],
        verbose=0,
    )
    for original_value, value in zip(
        original.get_weights(), original_weights, strict=True
    ):
        assert np.array_equal(original_value, value)
    assert not mp.pruned_layers(original)

    masks = [as_numpy(m).copy() for m in mp.get_masks(pruned)]
    for mask in masks:
        assert np.count_nonzero(mask) == expected_kept(mask.size, 0.75)

    stripped = mp.strip_pruning(pruned)
    assert not mp.pruned_layers(stripped)
    assert _forbidden_paths(stripped) == []
    assert len(stripped.variables) == 6

    expected = pruned.predict(x, batch_size=50, verbose=0)
    got = stripped.predict(x, batch_size=50, verbose=0)
    assert np.array_equal(got, expected)

    def check_sparse(model):
        kernels = [
            as_numpy(layer.kernel)
            for layer in model.layers
            if isinstance(layer, keras.layers.Dense)
        ]
        assert len(kernels) == len(masks)
        for kernel, mask in zip(kernels, masks, strict=True):
            assert np.all(kernel[mask == 0] == 0.0)
            assert not np.any(np.signbit(kernel[mask == 0]))  # no -0.0
            assert np.all(kernel[mask == 1] != 0.0)
        assert _forbidden_paths(model) == []
        assert np.array_equal(
            model.predict(x, batch_size=50, verbose=0), expected
        )

    check_sparse(stripped)

    keras_path = tmp_path / "stripped.keras"
    stripped.save(keras_path)
    check_sparse(keras.models.load_model(keras_path))

    weights_path = tmp_path / "stripped.weights.h5"
    stripped.save_weights(weights_path)
    fresh = keras.models.clone_model(stripped)
    assert not np.array_equal(
        fresh.predict(x, batch_size=50, verbose=0), expected
    )
    fresh.load_weights(weights_path)
    check_sparse(fresh)

    prefix = tf.train.Checkpoint(model=stripped).save(
        str(tmp_path / "ckpt" / "stripped")
    )
    fresh = keras.models.clone_model(stripped)
    assert not np.array_equal(
        fresh.predict(x, batch_size=50, verbose=0), expected
    )
    status = tf.train.Checkpoint(model=fresh).restore(prefix)
    status.assert_existing_objects_matched()
    check_sparse(fresh)

    # Stripping and exporting left the pruned model alone.
    for mask, now in zip(masks, mp.get_masks(pruned), strict=True):
        assert np.array_equal(mask, as_numpy(now))


def test_custom_training_loop_with_pruning_object_reaches_target():
    begin, end, frequency, total = 0, 30, 10, 35
    pruned = mp.prune_low_magnitude(
        _mlp(),
        pruning_schedule=mp.PolynomialDecay(
            0.0, 0.85, begin_step=begin, end_step=end, frequency=frequency
        ),
    )
    optimizer = keras.optimizers.SGD(learning_rate=0.05)
    optimizer.build(pruned.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruning = mp.Pruning(model=pruned, global_step=optimizer.iterations)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        optimizer.apply_gradients(
            zip(grads, pruned.trainable_variables, strict=True)
        )
        return pruning.conditional_mask_update_op()

    x, y = _data(total * 8)
    sizes = [int(np.prod(w.shape)) for w in mp.get_weights(pruned)]
    updates = []
    for i in range(total):
        batch = slice(i * 8, (i + 1) * 8)
        updated = bool(train_step(x[batch], y[batch]))
        step = int(as_numpy(optimizer.iterations))
        assert step == i + 1
        lasts = {
            int(as_numpy(layer.last_mask_update_step))
            for layer in mp.pruned_layers(pruned)
        }
        if updated:
            updates.append(step)
            assert lasts == {step}
            target = zhu_gupta_target(step, 0.0, 0.85, begin, end)
            for size, mask in zip(sizes, mp.get_masks(pruned), strict=True):
                kept = np.count_nonzero(as_numpy(mask))
                assert kept == expected_kept(size, target)
    assert updates == _expected_update_steps(begin, end, frequency, total)
    for size, mask in zip(sizes, mp.get_masks(pruned), strict=True):
        assert np.count_nonzero(as_numpy(mask)) == expected_kept(size, 0.85)


def test_get_config_round_trips_wrappers_and_whole_model():
    schedule = mp.PolynomialDecay(
        0.05, 0.7, begin_step=3, end_step=33, power=2, frequency=7
    )
    pruned = mp.prune_low_magnitude(
        _mlp(), pruning_schedule=schedule, block_size=(2, 2)
    )
    wrappers = mp.pruned_layers(pruned)
    assert len(wrappers) == 3
    for wrapper in wrappers:
        config = wrapper.get_config()
        assert (
            config["hparams"]
            == schedule.to_hparams()
            .override(block_height=2, block_width=2)
            .get_config()
        )
        # Keras' Wrapper.from_config pops 'layer' from the dict it is given.
        rebuilt = mp.PruneLowMagnitude.from_config(copy.deepcopy(config))
        assert isinstance(rebuilt, mp.PruneLowMagnitude)
        assert rebuilt.hparams == wrapper.hparams
        assert rebuilt.get_config() == config
        assert rebuilt.layer.get_config() == wrapper.layer.get_config()

    serialized = keras.saving.serialize_keras_object(pruned)
    restored = keras.saving.deserialize_keras_object(serialized)
    # Deserialized build configs hold lists where the original held tuples;
    # compare the JSON forms, where both are arrays.
    assert _as_json(restored.get_config()) == _as_json(pruned.get_config())
    restored_wrappers = mp.pruned_layers(restored)
    assert [w.name for w in restored_wrappers] == [w.name for w in wrappers]
    assert [w.hparams for w in restored_wrappers] == [
        w.hparams for w in wrappers
    ]
    assert [w.pruned_weights[0].block_dims for w in restored_wrappers] == [
        (2, 2)
    ] * 3
    assert sorted(v.path for v in restored.variables) == sorted(
        v.path for v in pruned.variables
    )

    from_json = keras.models.model_from_json(pruned.to_json())
    assert _as_json(from_json.get_config()) == _as_json(pruned.get_config())
    assert [w.hparams for w in mp.pruned_layers(from_json)] == [
        w.hparams for w in wrappers
    ]


def _as_json(config):
    return json.dumps(config, sort_keys=True)


def test_fit_with_jit_compile_reaches_target():
    pruned = mp.prune_low_magnitude(
        _mlp(),
        pruning_schedule=mp.PolynomialDecay(
            0.0, 0.6, begin_step=0, end_step=20, frequency=5
        ),
    )
    _compile(pruned, jit_compile=True)
    x, y = _data(250)
    pruned.fit(
        x,
        y,
        batch_size=10,
        epochs=1,
        shuffle=False,
        callbacks=[mp.UpdatePruningStep()],
        verbose=0,
    )
    assert int(as_numpy(pruned.optimizer.iterations)) == 25
    assert [
        int(as_numpy(layer.last_mask_update_step))
        for layer in mp.pruned_layers(pruned)
    ] == [20, 20, 20]
    for weight, mask in zip(
        mp.get_weights(pruned), mp.get_masks(pruned), strict=True
    ):
        size = int(np.prod(weight.shape))
        assert np.count_nonzero(as_numpy(mask)) == expected_kept(size, 0.6)
    stripped = mp.strip_pruning(pruned)
    # The stripped model is uncompiled; predict under XLA too, like for like.
    stripped.compile(jit_compile=True)
    assert np.array_equal(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )


def test_strip_pruning_returns_an_uncompiled_model_without_optimizer_state(
    tmp_path,
):
    pruned = mp.prune_low_magnitude(_mlp())
    _compile(pruned)
    x, y = _data(40)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[mp.UpdatePruningStep()])

    stripped = mp.strip_pruning(pruned)

    assert pruned.compiled
    assert not stripped.compiled
    pruned.save(tmp_path / "pruned.keras")
    stripped.save(tmp_path / "stripped.keras")
    # Adam's two slots and the masks make the pruned file about 4x the
    # weights; the stripped file holds the weights alone.
    stripped_bytes = os.path.getsize(tmp_path / "stripped.keras")
    assert stripped_bytes < 0.5 * os.path.getsize(tmp_path / "pruned.keras")
