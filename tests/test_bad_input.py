"""Bad input gets a clear error (or a documented result), before any change."""

import string
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from reference import as_numpy

import model_pruning as mp
from model_pruning.hparams import PruningHParams


def _mlp(name="mlp"):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, name="dense_1"),
            keras.layers.Dense(2, name="dense_2"),
        ],
        name=name,
    )


def _compile(model):
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 2, n)


def _pruning(model, step=1, xla=False):
    return mp.Pruning(
        model=model, global_step=tf.Variable(step, tf.int64), xla=xla
    )


def test_fit_without_update_pruning_step_says_so():
    pruned = _compile(mp.prune_low_magnitude(_mlp()))
    x, y = _data()
    before = [as_numpy(w).copy() for w in pruned.weights]

    with pytest.raises(ValueError, match="UpdatePruningStep"):
        pruned.fit(x, y, epochs=1, verbose=0)

    assert int(as_numpy(pruned.optimizer.iterations)) == 0
    for value, weight in zip(before, pruned.weights, strict=True):
        np.testing.assert_array_equal(value, as_numpy(weight))
    # Adding the callback then trains and prunes.
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[mp.UpdatePruningStep()])
    assert int(as_numpy(pruned.optimizer.iterations)) > 0


def test_training_call_needs_a_pruning_object_in_custom_loops():
    pruned = mp.prune_low_magnitude(_mlp())
    x, _ = _data(4)
    with pytest.raises(ValueError, match="conditional_mask_update_op"):
        pruned(x, training=True)

    _pruning(pruned)
    assert pruned(x, training=True).shape == (4, 2)
    # Inference never needs one.
    assert mp.prune_low_magnitude(_mlp())(x).shape == (4, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mask_update_with_non_finite_weight_raises_and_keeps_its_mask(bad):
    pruned = mp.prune_low_magnitude(_mlp())
    kernel = mp.get_weights(pruned)[0]
    value = as_numpy(kernel).copy()
    value[0, 0] = bad
    kernel.assign(value)
    threshold = mp.get_thresholds(pruned)[0]

    with pytest.raises(tf.errors.InvalidArgumentError, match="dense_1/kernel"):
        _pruning(pruned).mask_update_op()

    # The weight holding it keeps its mask and threshold; other weights may
    # have updated in the same step (documented).
    assert np.all(as_numpy(mp.get_masks(pruned)[0]) == 1.0)
    assert as_numpy(threshold) == 0.0


def test_mask_update_with_nan_under_xla_leaves_that_mask_unchanged():
    pruned = mp.prune_low_magnitude(_mlp())
    kernel = mp.get_weights(pruned)[0]
    value = as_numpy(kernel).copy()
    value[0, 0] = np.nan
    kernel.assign(value)
    pruning = _pruning(pruned, xla=True)
    update = tf.function(pruning.mask_update_op, jit_compile=True)

    update()

    first, second = (as_numpy(m) for m in mp.get_masks(pruned))
    assert np.all(first == 1.0)  # the NaN weight's mask: not updated
    assert np.sum(second) == np.round(second.size * 0.5)  # the other: pruned


class _WithEmptyWeight(keras.layers.Layer):
    """A layer with a zero-size prunable weight beside a normal one."""

    def build(self, input_shape):
        self.empty = self.add_weight(name="empty", shape=(0, 4))
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], 4))

    def call(self, inputs):
        return inputs @ self.kernel

    def get_prunable_weights(self):
        return [self.empty, self.kernel]


def test_zero_size_weight_is_left_alone():
    layer = mp.prune_low_magnitude(_WithEmptyWeight(), pruning_schedule=None)
    layer(np.ones((2, 6), "float32"))

    _pruning(layer).mask_update_op()

    empty, kernel = layer.pruned_weights
    assert tuple(empty.mask.shape) == (0, 4)
    assert np.sum(as_numpy(kernel.mask)) == 12  # 24 weights at 0.5
    assert mp.get_weight_sparsity(layer)[1] == 0.5


def test_three_weights_at_high_sparsity_are_all_pruned():
    # k = round_half_even(3 * 0.01) = 0: the rule prunes the whole tensor.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])
    schedule = mp.ConstantSparsity(0.99, begin_step=0, frequency=1)
    pruned = mp.prune_low_magnitude(model, pruning_schedule=schedule)

    _pruning(pruned).mask_update_op()

    (mask,) = mp.get_masks(pruned)
    assert np.sum(as_numpy(mask)) == 0
    (threshold,) = mp.get_thresholds(pruned)
    largest = np.max(np.abs(as_numpy(mp.get_weights(pruned)[0])))
    assert as_numpy(threshold) > largest


def test_weight_sparsity_map_matching_nothing_warns():
    hparams = mp.get_pruning_hparams().parse(
        "target_sparsity=0.5,weight_sparsity_map=[no_such_layer/kernel:0.8],"
        "block_dims_map=[missing:2x2]"
    )
    with pytest.warns(UserWarning) as record:
        mp.prune_low_magnitude(_mlp(), hparams=hparams)
    messages = " ".join(str(w.message) for w in record)
    assert "no_such_layer/kernel:0.8" in messages
    assert "missing:2x2" in messages
    assert "dense_1/kernel" in messages  # the names that do exist


def test_weight_sparsity_map_matching_everything_does_not_warn():
    hparams = mp.get_pruning_hparams().parse(
        "weight_sparsity_map=[dense_1/kernel:0.8,dense_2:0.6]"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mp.prune_low_magnitude(_mlp(), hparams=hparams)


def test_two_maps_matching_one_weight_raise_and_leave_model_untouched():
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    hparams = mp.get_pruning_hparams().parse(
        "weight_sparsity_map=[dense_1:0.8,.*kernel:0.6]"
    )
    with pytest.raises(ValueError, match="Multiple matches"):
        mp.prune_low_magnitude(model, hparams=hparams)
    assert not mp.pruned_layers(model)
    for value, weight in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(value, weight)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"pruning_schedule": "poly"}, "pruning_schedule"),
        ({"block_size": (2,)}, "block_size"),
        ({"block_pooling_type": "MIN"}, "block_pooling_function"),
        (
            {
                "hparams": PruningHParams(),
                "pruning_schedule": mp.ConstantSparsity(0.5, 0),
            },
            "pruning_schedule",
        ),
    ],
)
def test_prune_low_magnitude_bad_arguments_name_them(kwargs, argument):
    model = _mlp()
    with pytest.raises(ValueError, match=argument):
        mp.prune_low_magnitude(model, **kwargs)
    assert not mp.pruned_layers(model)


def test_strip_pruning_of_a_plain_model_returns_it_unchanged():
    model = _mlp()
    with pytest.warns(UserWarning, match="no pruned layers"):
        assert mp.strip_pruning(model) is model


_NAMES = list(PruningHParams().values())
_pieces = st.one_of(
    st.sampled_from(_NAMES),
    st.sampled_from(["=", ",", "[", "]", ":", "-1", "0.5", "1e3", "x", "AVG"]),
    st.text(string.printable, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=12).map("".join))
def test_hparams_parse_fuzz_parses_or_raises_value_error(text):
    try:
        result = mp.get_pruning_hparams().parse(text)
    except ValueError:
        return
    assert isinstance(result, PruningHParams)
    # Whatever parsed is valid: it round-trips through its config.
    assert PruningHParams.from_config(result.get_config()) == result


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_NAMES),
        st.one_of(
            st.integers(-5, 5),
            st.floats(allow_nan=True),
            st.text(max_size=6),
            st.lists(st.text(max_size=6), max_size=3),
        ),
        max_size=4,
    )
)
def test_hparams_fields_fuzz_construct_or_raise_value_error(fields):
    try:
        PruningHParams().override(**fields)
    except ValueError:
        return


def test_fit_with_only_pruning_summaries_still_says_update_step_is_missing(
    tmp_path,
):
    pruned = _compile(mp.prune_low_magnitude(_mlp()))
    x, y = _data()
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        pruned.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[mp.PruningSummaries(log_dir=str(tmp_path))],
        )
