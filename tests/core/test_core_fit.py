"""`fit` with `UpdatePruningStep` on any backend: exact final sparsity,
exact zeros, the update steps; then `strip_pruning`, `sparsity_report` and
a `.keras` save and resume mid-pruning."""

import keras
import numpy as np
import pytest
from core_helpers import BACKEND
from core_helpers import classification_data
from core_helpers import cnn
from core_helpers import compile_for_classes
from core_helpers import due_steps
from core_helpers import expected_kept
from core_helpers import masks_and_weights
from core_helpers import mlp
from core_helpers import to_numpy

import model_pruning as mp

_FINAL, _END, _FREQUENCY = 0.75, 7, 2
_SAMPLES, _BATCH, _EPOCHS = 64, 8, 2  # 16 steps


def _schedule():
    return mp.PolynomialDecay(
        0.0, _FINAL, begin_step=0, end_step=_END, frequency=_FREQUENCY
    )


def _pruned_fit(
    model,
    data,
    *,
    optimizer="adam",
    epochs=_EPOCHS,
    callbacks=(),
    **compile_kwargs,
):
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    compile_for_classes(pruned, optimizer, **compile_kwargs)
    x, y = data
    pruned.fit(
        x,
        y,
        batch_size=_BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[mp.UpdatePruningStep(), *callbacks],
    )
    return pruned


def _assert_final_sparsity_and_exact_zeros(pruned):
    pairs = masks_and_weights(pruned)
    assert pairs
    for mask, weight in pairs:
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert int(mask.sum()) == expected_kept(mask.size, _FINAL)
        # Adam's momentum would move pruned entries: the constraint keeps
        # them exactly zero.
        assert np.all(weight[mask == 0] == 0)


def _assert_last_update_step(pruned, stride=1):
    steps = _SAMPLES // _BATCH * _EPOCHS
    last = due_steps(0, _END, _FREQUENCY, steps, stride)[-1]
    for layer in mp.pruned_layers(pruned):
        assert int(to_numpy(layer.last_mask_update_step)) == last


def _jit_options():
    # jit_compile=True is XLA on TensorFlow and JAX, torch.compile on
    # PyTorch (slow to compile on CPU: an integration case there).
    slow = [pytest.mark.integration] if BACKEND == "torch" else []
    return [False, pytest.param(True, marks=slow)]


@pytest.mark.parametrize("jit_compile", _jit_options())
def test_fit_mlp_reaches_the_final_sparsity_exactly(jit_compile):
    pruned = _pruned_fit(mlp(), classification_data(), jit_compile=jit_compile)
    _assert_final_sparsity_and_exact_zeros(pruned)
    _assert_last_update_step(pruned)
    assert len(mp.pruned_layers(pruned)) == 2


def test_fit_cnn_reaches_the_final_sparsity_exactly():
    data = classification_data(shape=(8, 8, 1))
    pruned = _pruned_fit(cnn(), data, jit_compile=False)
    _assert_final_sparsity_and_exact_zeros(pruned)
    _assert_last_update_step(pruned)
    shapes = [tuple(e.weight.shape) for e in mp.pruned_weights(pruned)]
    assert shapes == [(3, 3, 1, 4), (36, 3)]


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="Keras' PyTorch trainer takes steps_per_execution=1 only",
)
def test_fit_with_steps_per_execution_two_catches_up_at_the_end():
    pruned = _pruned_fit(mlp(), classification_data(), steps_per_execution=2)
    _assert_final_sparsity_and_exact_zeros(pruned)
    # The callback runs every second step: the end step 7 is caught up at 8.
    _assert_last_update_step(pruned, stride=2)


def test_fit_under_mixed_float16_keeps_float32_masks_and_exact_zeros():
    keras.config.set_dtype_policy("mixed_float16")  # conftest restores it
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, dtype="float32"),
        ]
    )
    pruned = _pruned_fit(model, classification_data())
    for entry in mp.pruned_weights(pruned):
        assert entry.mask.dtype == entry.weight.dtype == "float32"
    _assert_final_sparsity_and_exact_zeros(pruned)
    _assert_last_update_step(pruned)


def test_fit_with_uint8_masks_reaches_the_final_sparsity_exactly():
    model = mlp()
    pruned = mp.prune_low_magnitude(
        model, pruning_schedule=_schedule(), mask_dtype="uint8"
    )
    compile_for_classes(pruned)
    x, y = classification_data()
    pruned.fit(
        x,
        y,
        batch_size=_BATCH,
        epochs=_EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )
    assert all(e.mask.dtype == "uint8" for e in mp.pruned_weights(pruned))
    _assert_final_sparsity_and_exact_zeros(pruned)
    _assert_last_update_step(pruned)


def test_masks_follow_eq1_at_every_update_step():
    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.kept = {}

        def on_train_batch_begin(self, batch, logs=None):
            step = int(to_numpy(self.model.optimizer.iterations))
            self.kept[step] = [
                int(to_numpy(m).sum()) for m in mp.get_masks(self.model)
            ]

    recorder = Recorder()
    pruned = _pruned_fit(mlp(), classification_data(), callbacks=[recorder])
    sizes = [int(np.prod(m.shape)) for m in mp.get_masks(pruned)]
    schedule = _schedule()
    expected, kept = {}, list(sizes)
    for step in range(_SAMPLES // _BATCH * _EPOCHS):
        if step in due_steps(0, _END, _FREQUENCY, step)[-1:]:
            target = float(to_numpy(schedule.sparsity(step)))
            kept = [expected_kept(n, target) for n in sizes]
        expected[step] = kept
    assert recorder.kept == expected


def test_strip_pruning_predicts_the_same_with_exact_zeros():
    x, y = classification_data(shape=(8, 8, 1))
    pruned = _pruned_fit(cnn(), (x, y))
    stripped = mp.strip_pruning(pruned)
    assert not mp.pruned_layers(stripped)
    assert not any(
        isinstance(layer, mp.PruneLowMagnitude) for layer in stripped.layers
    )
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0),
        pruned.predict(x, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    kernels = {
        layer.name: to_numpy(layer.kernel)
        for layer in stripped.layers
        if hasattr(layer, "kernel")
    }
    masks = [m for m, _ in masks_and_weights(pruned)]
    assert len(kernels) == len(masks)
    for kernel, mask in zip(kernels.values(), masks, strict=True):
        zeros = kernel[mask == 0]
        assert np.all(zeros == 0) and not np.any(np.signbit(zeros))
    # The report counts the stripped weights.
    report = mp.sparsity_report(pruned)
    by_name = {w.name: w for w in report.weights}
    assert len(by_name) == len(stripped.weights)
    for name, kernel in kernels.items():
        weight = by_name[f"{name}/kernel"]
        assert weight.pruned
        assert weight.size == kernel.size
        assert weight.nnz == np.count_nonzero(kernel)
        assert weight.sparsity == pytest.approx(1 - weight.nnz / weight.size)
    assert report.total.size == sum(
        int(np.prod(w.shape)) for w in stripped.weights
    )
    assert report.total.nnz == sum(
        np.count_nonzero(to_numpy(w)) for w in stripped.weights
    )
    assert not by_name["conv2d/bias"].pruned


@pytest.mark.integration
def test_keras_file_saved_mid_pruning_resumes_like_an_uninterrupted_fit(
    tmp_path,
):
    data = classification_data()
    base = mlp()
    initial = base.get_weights()
    uninterrupted = _pruned_fit(base, data, epochs=3)

    base.set_weights(initial)
    first = _pruned_fit(base, data, epochs=1)
    path = str(tmp_path / "mid.keras")
    first.save(path)
    # After one epoch (8 steps) the pruning is under way, not finished.
    kept = [int(m.sum()) for m, _ in masks_and_weights(first)]
    assert kept != [m.size for m, _ in masks_and_weights(first)]
    loaded = keras.models.load_model(path)
    x, y = data
    loaded.fit(
        x,
        y,
        batch_size=_BATCH,
        epochs=3,
        initial_epoch=1,
        shuffle=False,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )
    assert int(to_numpy(loaded.optimizer.iterations)) == 24
    for (mask, weight), (mask0, weight0) in zip(
        masks_and_weights(loaded), masks_and_weights(uninterrupted), strict=True
    ):
        np.testing.assert_array_equal(mask, mask0)
        np.testing.assert_allclose(weight, weight0, rtol=1e-5, atol=1e-6)
    for layer, layer0 in zip(
        mp.pruned_layers(loaded), mp.pruned_layers(uninterrupted), strict=True
    ):
        assert int(to_numpy(layer.last_mask_update_step)) == int(
            to_numpy(layer0.last_mask_update_step)
        )
    _assert_final_sparsity_and_exact_zeros(loaded)
