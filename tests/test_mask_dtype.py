"""`mask_dtype="uint8"`: one byte per mask entry, the same pruning.

Every update path (element-wise two-pass, its XLA assigns, blocks, N:M,
global, threshold decay, a `jit_compile=True` step) gives the masks,
thresholds and weights of the default float32 masks, bit for bit; the
masks save, reload and resume as uint8; bad values are refused.
"""

import keras
import numpy as np
import pytest

import model_pruning as mp
from model_pruning import fused_update
from model_pruning.contrib.python import pruning as contrib_pruning

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration


def _model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(8),
        ]
    )


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.normal(size=(64, 8)).astype("float32")
    return x, y


def _pruned_fit(mask_dtype, jit_compile=False, **kwargs):
    schedule = mp.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=6, frequency=2
    )
    model = mp.prune_low_magnitude(
        _model(), pruning_schedule=schedule, mask_dtype=mask_dtype, **kwargs
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="mse",
        jit_compile=jit_compile,
    )
    x, y = _data()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[mp.UpdatePruningStep()],
    )
    return model


def _state(model):
    entries = mp.accessors.pruned_weights(model)
    return (
        [np.asarray(e.mask) for e in entries],
        [np.asarray(e.threshold) for e in entries],
        [np.asarray(e.weight) for e in entries],
    )


def _assert_same_pruning(uint8_model, float_model):
    """uint8 masks equal the float32 ones; thresholds and weights equal."""
    masks8, thresholds8, weights8 = _state(uint8_model)
    masks32, thresholds32, weights32 = _state(float_model)
    assert all(m.dtype == np.uint8 for m in masks8)
    assert all(m.dtype == np.float32 for m in masks32)
    assert 0 < sum(int((m == 0).sum()) for m in masks8)
    for m8, m32 in zip(masks8, masks32, strict=True):
        np.testing.assert_array_equal(m8, m32.astype(np.uint8))
    np.testing.assert_array_equal(thresholds8, thresholds32)
    for w8, w32 in zip(weights8, weights32, strict=True):
        np.testing.assert_array_equal(w8, w32)


_CASES = {
    "elementwise": {},
    "block": {"block_size": (2, 2)},
    "m_by_n": {"sparsity_m_by_n": (2, 4)},
    "global": {"pruning_scheme": "global"},
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_uint8_masks_equal_float_masks(case):
    kwargs = _CASES[case]
    _assert_same_pruning(
        _pruned_fit("uint8", **kwargs), _pruned_fit(None, **kwargs)
    )


def test_uint8_masks_under_jit_compile():
    _assert_same_pruning(
        _pruned_fit("uint8", jit_compile=True),
        _pruned_fit(None, jit_compile=True),
    )


def test_uint8_masks_through_the_xla_assigns(monkeypatch):
    """The fused update's XLA path (large weights) writes uint8 masks."""
    monkeypatch.setattr(fused_update, "_XLA_MIN_SIZE", 1)
    _assert_same_pruning(_pruned_fit("uint8"), _pruned_fit(None))


def test_uint8_masks_use_a_quarter_of_the_bytes():
    pruned8 = mp.prune_low_magnitude(_model(), mask_dtype="uint8")
    pruned32 = mp.prune_low_magnitude(_model())
    bytes8 = sum(np.asarray(m).nbytes for m in mp.get_masks(pruned8))
    bytes32 = sum(np.asarray(m).nbytes for m in mp.get_masks(pruned32))
    assert bytes8 * 4 == bytes32


def test_uint8_masks_save_reload_and_strip(tmp_path):
    model = _pruned_fit("uint8")
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for before, after in zip(
        mp.get_masks(model), mp.get_masks(loaded), strict=True
    ):
        assert np.asarray(after).dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    wrapper = loaded.layers[0]
    assert wrapper.hparams.mask_dtype == "uint8"
    assert (
        mp.PruneLowMagnitude.from_config(wrapper.get_config()).hparams
        == wrapper.hparams
    )
    x, _ = _data()
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    stripped = mp.strip_pruning(loaded)
    for weight, mask in zip(
        [stripped.layers[0].kernel, stripped.layers[1].kernel],
        mp.get_masks(loaded),
        strict=True,
    ):
        assert (np.asarray(weight)[np.asarray(mask) == 0] == 0).all()


def test_mask_dtype_from_hparams_string():
    hparams = mp.get_pruning_hparams().parse("mask_dtype=uint8")
    pruned = mp.prune_low_magnitude(_model(), hparams=hparams)
    assert {np.asarray(m).dtype for m in mp.get_masks(pruned)} == {
        np.dtype("uint8")
    }


def test_bad_mask_dtype_is_refused_naming_it():
    with pytest.raises(ValueError, match="Received: mask_dtype='int8'"):
        mp.prune_low_magnitude(_model(), mask_dtype="int8")
    with pytest.raises(ValueError, match="mask_dtype='uint8'"):
        mp.prune_low_magnitude(
            _model(), hparams=mp.get_pruning_hparams(), mask_dtype="uint8"
        )


def test_contrib_refuses_mask_dtype():
    spec = mp.get_pruning_hparams().override(mask_dtype="uint8")
    with pytest.raises(ValueError, match="mask_dtype"):
        contrib_pruning.Pruning(spec, global_step=keras.Variable(0))
