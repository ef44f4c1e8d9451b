"""`PruneLowMagnitude` on any backend: the pruning variables it adds for
each supported layer kind, its config, and its refusal to train with
nothing updating its masks."""

import keras
import numpy as np
import pytest
from core_helpers import expected_kept
from core_helpers import to_numpy

import model_pruning as mp


def _mha():
    return keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)


# (layer factory, input shape, expected {weight name: shape}).
_LAYERS = {
    "dense": (
        lambda: keras.layers.Dense(3, name="dense"),
        (5,),
        {"dense/kernel": (5, 3)},
    ),
    "conv2d": (
        lambda: keras.layers.Conv2D(2, 3, name="conv"),
        (6, 6, 1),
        {"conv/kernel": (3, 3, 1, 2)},
    ),
    "embedding": (
        lambda: keras.layers.Embedding(10, 4, name="emb"),
        (7,),
        {"emb/embeddings": (10, 4)},
    ),
    "einsum_dense": (
        lambda: keras.layers.EinsumDense(
            "ab,bcd->acd", output_shape=(2, 3), bias_axes="d", name="ein"
        ),
        (5,),
        {"ein/kernel": (5, 2, 3)},
    ),
    "lstm": (
        lambda: keras.layers.LSTM(3, name="lstm"),
        (4, 5),
        {
            "lstm/lstm_cell/kernel": (5, 12),
            "lstm/lstm_cell/recurrent_kernel": (3, 12),
        },
    ),
}


def _built_wrapper(kind, **kwargs):
    factory, shape, _ = _LAYERS[kind]
    wrapper = mp.PruneLowMagnitude(factory(), **kwargs)
    wrapper.build((None, *shape))
    return wrapper


def _mha_wrapper(**kwargs):
    wrapper = mp.PruneLowMagnitude(_mha(), name="pmha", **kwargs)
    query = np.ones((2, 3, 6), "float32")
    wrapper(query, query)
    return wrapper


def _input(kind, batch=2):
    shape = _LAYERS[kind][1]
    if kind == "embedding":
        return np.arange(batch * 7).reshape(batch, 7) % 10
    return (
        np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
    )


@pytest.mark.parametrize("kind", sorted(_LAYERS))
def test_wrapper_adds_a_mask_and_threshold_per_pruned_weight(kind):
    wrapper = _built_wrapper(kind)
    expected = _LAYERS[kind][2]
    entries = wrapper.pruned_weights
    assert {e.name: tuple(e.weight.shape) for e in entries} == expected
    for entry in entries:
        leaf = entry.name.rsplit("/", 1)[1]
        assert entry.mask.name == f"{leaf}_mask"
        assert entry.threshold.name == f"{leaf}_threshold"
        assert entry.mask.path.startswith(wrapper.name + "/")
        assert tuple(entry.mask.shape) == tuple(entry.weight.shape)
        assert tuple(entry.threshold.shape) == ()
        assert entry.mask.dtype == entry.weight.dtype == "float32"
        assert not entry.mask.trainable and not entry.threshold.trainable
        np.testing.assert_array_equal(to_numpy(entry.mask), 1.0)
        assert float(to_numpy(entry.threshold)) == 0.0
    assert "int" in wrapper.last_mask_update_step.dtype
    assert int(to_numpy(wrapper.last_mask_update_step)) == 0
    # Masks and thresholds are non-trainable weights of the wrapper.
    paths = {v.path for v in wrapper.non_trainable_weights}
    assert {e.mask.path for e in entries} <= paths
    assert {e.threshold.path for e in entries} <= paths


def test_multi_head_attention_gets_a_mask_per_projection_kernel():
    wrapper = _mha_wrapper()
    shapes = {e.name: tuple(e.weight.shape) for e in wrapper.pruned_weights}
    assert shapes == {
        "multi_head_attention/query/kernel": (6, 2, 4),
        "multi_head_attention/key/kernel": (6, 2, 4),
        "multi_head_attention/value/kernel": (6, 2, 4),
        "multi_head_attention/attention_output/kernel": (2, 4, 6),
    }
    names = [e.mask.name for e in wrapper.pruned_weights]
    assert len(set(names)) == 4  # Four kernels, four distinct masks.
    for entry in wrapper.pruned_weights:
        assert tuple(entry.mask.shape) == tuple(entry.weight.shape)


def test_mask_dtype_uint8_gives_one_byte_masks():
    wrapper = _built_wrapper("dense", mask_dtype="uint8")
    (entry,) = wrapper.pruned_weights
    assert entry.mask.dtype == "uint8"
    assert entry.threshold.dtype == "float32"


@pytest.mark.parametrize("kind", sorted(_LAYERS) + ["mha"])
def test_mask_update_keeps_the_largest_magnitudes_of_each_weight(kind):
    hparams = mp.PruningHParams(threshold_decay=0.0)
    wrapper = (
        _mha_wrapper(hparams=hparams)
        if kind == "mha"
        else _built_wrapper(kind, hparams=hparams)
    )
    step = keras.Variable(0, dtype="int32", trainable=False)
    pruning = mp.Pruning(global_step=step, sparsity=0.6, model=wrapper)
    before = [to_numpy(e.weight) for e in wrapper.pruned_weights]
    pruning.mask_update_op()
    for entry, weight in zip(wrapper.pruned_weights, before, strict=True):
        mask = to_numpy(entry.mask)
        magnitudes = np.sort(np.abs(weight).ravel())[::-1]
        k = expected_kept(weight.size, 0.6)
        assert int(mask.sum()) == k, entry.name
        np.testing.assert_array_equal(
            mask, (np.abs(weight) >= magnitudes[k - 1]).astype("float32")
        )
        assert float(to_numpy(entry.threshold)) == magnitudes[k - 1]
        # The update masks the weight too.
        np.testing.assert_array_equal(to_numpy(entry.weight), weight * mask)


@pytest.mark.parametrize("kind", sorted(_LAYERS))
def test_config_round_trip_rebuilds_the_same_pruning_variables(kind):
    schedule = mp.PolynomialDecay(0.1, 0.7, begin_step=3, end_step=30)
    wrapper = _built_wrapper(kind, pruning_schedule=schedule)
    config = wrapper.get_config()
    rebuilt = mp.PruneLowMagnitude.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.pruning_schedule == schedule
    assert rebuilt.hparams == wrapper.hparams
    rebuilt.build((None, *_LAYERS[kind][1]))
    assert [(e.name, tuple(e.mask.shape)) for e in rebuilt.pruned_weights] == [
        (e.name, tuple(e.mask.shape)) for e in wrapper.pruned_weights
    ]
    # Registered: Keras deserializes it without custom objects.
    serialized = keras.saving.serialize_keras_object(wrapper)
    again = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(again, mp.PruneLowMagnitude)
    assert again.hparams == wrapper.hparams


@pytest.mark.parametrize("kind", ["dense", "lstm"])
def test_training_call_without_a_mask_updater_raises(kind):
    wrapper = _built_wrapper(kind)
    with pytest.raises(
        mp.wrapper.NoMaskUpdaterError, match="Received: training=True"
    ):
        wrapper(_input(kind), training=True)
    assert issubclass(mp.wrapper.NoMaskUpdaterError, ValueError)
    wrapper(_input(kind), training=False)  # Inference is fine.


def test_fit_without_the_callback_raises():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    pruned = mp.prune_low_magnitude(model)
    pruned.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 5), "float32")
    with pytest.raises(mp.wrapper.NoMaskUpdaterError):
        pruned.fit(x, np.ones((4, 2), "float32"), epochs=1, verbose=0)


def test_weights_set_by_hand_are_masked_by_apply_masks_and_strip():
    hparams = mp.PruningHParams(threshold_decay=0.0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    pruned = mp.prune_low_magnitude(model, hparams=hparams)
    pruning = mp.Pruning(
        global_step=keras.Variable(0, dtype="int32", trainable=False),
        sparsity=0.5,
        model=pruned,
    )
    pruning.mask_update_op()
    (wrapper,) = mp.pruned_layers(pruned)
    (entry,) = wrapper.pruned_weights
    mask = to_numpy(entry.mask)
    assert int(mask.sum()) == expected_kept(15, 0.5)
    entry.weight.assign(np.ones((5, 3), "float32"))
    x = np.arange(10, dtype="float32").reshape(2, 5)
    bias = to_numpy(wrapper.layer.bias)
    stripped = mp.strip_pruning(pruned)
    np.testing.assert_array_equal(to_numpy(stripped.layers[0].kernel), mask)
    np.testing.assert_allclose(
        to_numpy(stripped(x)), x @ mask + bias, rtol=1e-6
    )
    wrapper.apply_masks()
    np.testing.assert_array_equal(to_numpy(entry.weight), mask)
    np.testing.assert_allclose(to_numpy(pruned(x)), x @ mask + bias, rtol=1e-6)


@pytest.mark.parametrize("mask_dtype", [None, "uint8"])
def test_mask_constraint_masks_the_weight_as_the_optimizer_applies_it(
    mask_dtype,
):
    weights = np.array([[-2.0, 1.0], [-0.5, np.nan]], "float32")
    wrapper = _built_wrapper("dense", mask_dtype=mask_dtype)
    (entry,) = wrapper.pruned_weights
    entry.weight.assign(np.resize(weights, (5, 3)))
    mask = np.resize(np.array([[1, 0], [0, 1]], "float32"), (5, 3))
    entry.mask.assign(mask.astype(mask_dtype or "float32"))
    before = to_numpy(entry.weight)
    # What a Keras optimizer does after each update.
    entry.weight.assign(entry.weight.constraint(entry.weight))
    after = to_numpy(entry.weight)
    expected = np.where(mask != 0, before, 0.0)
    np.testing.assert_array_equal(after, expected)
    # Only kept entries carry a value: NaN and signs stay where kept.
    assert np.isnan(after[mask != 0]).sum() == np.isnan(before[mask != 0]).sum()
    np.testing.assert_array_equal(after[mask == 0], 0.0)
