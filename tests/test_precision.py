"""Mixed precision: masks in the variable dtype, no precision lost."""

import keras
import numpy as np
import pytest
from reference import as_numpy
from reference import expected_kept

import model_pruning as mp


@pytest.fixture
def mixed_policy(request):
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_wrapper_call_keeps_float32_weights_exact(mixed_policy):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    pruned = mp.prune_low_magnitude(model)
    entry = mp.pruned_weights(pruned)[0]
    # 1.0001 is not representable in float16 or bfloat16.
    entry.weight.assign(np.full((8, 4), 1.0001, "float32"))

    pruned(np.ones((2, 8), "float32"))

    assert entry.weight.dtype == "float32"
    assert entry.mask.dtype == "float32"
    assert entry.threshold.dtype == "float32"
    np.testing.assert_array_equal(
        as_numpy(entry.weight), np.full((8, 4), 1.0001, "float32")
    )


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_fit_reaches_target_and_strips_identically(mixed_policy):
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, dtype="float32"),
        ]
    )
    schedule = mp.PolynomialDecay(
        0.0, 0.75, begin_step=0, end_step=6, frequency=2
    )
    pruned = mp.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = rng.integers(0, 3, size=64)
    pruned.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )

    for entry in mp.pruned_weights(pruned):
        kept = int(np.sum(as_numpy(entry.mask)))
        assert kept == expected_kept(int(np.prod(entry.mask.shape)), 0.75)
    stripped = mp.strip_pruning(pruned)
    np.testing.assert_array_equal(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )
