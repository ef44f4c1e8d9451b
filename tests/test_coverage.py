"""Every layer and model kind, the selection API, and the paper's schemes.

The table test wraps each layer kind, fits a few steps on a schedule ending at
0.75, checks every pruned weight keeps exactly round_half_even(n / 4)
entries, strips, compares predictions bit for bit, and reloads `.keras`.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

TARGET = 0.75
FIT_STEPS = 4


def _schedule(**overrides):
    args = dict(
        initial_sparsity=0.0,
        final_sparsity=TARGET,
        begin_step=0,
        end_step=2,
        frequency=1,
    )
    args.update(overrides)
    return mp.PolynomialDecay(**args)


@keras.saving.register_keras_serializable(package="test_coverage")
class WideDense(keras.layers.Dense):
    """A subclass of Dense: matched by isinstance."""


@keras.saving.register_keras_serializable(package="test_coverage")
class DuckScale(keras.layers.Layer):
    """A custom layer that names its prunable weight by duck typing."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1], 3), initializer="normal"
        )
        self.offset = self.add_weight(name="offset", shape=(3,))

    def call(self, inputs):
        return inputs @ self.scale + self.offset

    def get_prunable_weights(self):
        return [self.scale]


@keras.saving.register_keras_serializable(package="test_coverage")
class Opaque(keras.layers.Layer):
    """A layer with a weight nothing knows how to prune."""

    def build(self, input_shape):
        self.w = self.add_weight(
            name="w", shape=(input_shape[-1], 3), initializer="normal"
        )

    def call(self, inputs):
        return inputs @ self.w


@keras.saving.register_keras_serializable(package="test_coverage")
class EncoderBlock(keras.layers.Layer):
    """A transformer encoder block as a custom layer built from sublayers."""

    def __init__(self, width=8, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.heads = heads
        self.attention = keras.layers.MultiHeadAttention(heads, width // heads)
        self.norms = [keras.layers.LayerNormalization() for _ in range(2)]
        self.feed_forward = [
            keras.layers.Dense(2 * width, activation="relu"),
            keras.layers.Dense(width),
        ]

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        for norm in self.norms:
            norm.build(input_shape)
        self.feed_forward[0].build(input_shape)
        self.feed_forward[1].build(tuple(input_shape[:-1]) + (2 * self.width,))

    def call(self, inputs):
        x = self.norms[0](inputs + self.attention(inputs, inputs))
        y = self.feed_forward[1](self.feed_forward[0](x))
        return self.norms[1](x + y)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "heads": self.heads,
        }


@keras.saving.register_keras_serializable(package="test_coverage")
class SubclassedNet(keras.Model):
    """A subclassed model holding layers in attributes and a list."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.first = keras.layers.Dense(units, activation="relu")
        self.blocks = [
            keras.layers.Dense(units, activation="tanh"),
            keras.layers.BatchNormalization(),
        ]
        self.head = keras.layers.Dense(2)

    def call(self, inputs):
        x = self.first(inputs)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _encoder_block_functional(inputs):
    attention = keras.layers.MultiHeadAttention(2, 4, name="mha")
    x = keras.layers.LayerNormalization()(inputs + attention(inputs, inputs))
    y = keras.layers.Dense(16, activation="relu", name="ffn_in")(x)
    y = keras.layers.Dense(8, name="ffn_out")(y)
    return keras.layers.LayerNormalization()(x + y)


L = keras.layers
# name -> (input shape without batch, body(inputs) -> outputs, prune kwargs)
LAYER_CASES = {
    "dense": ((8,), lambda x: L.Dense(6)(x), {}),
    "einsum_dense": (
        (5, 8),
        lambda x: L.EinsumDense("abc,cd->abd", output_shape=(5, 6))(x),
        {},
    ),
    "multi_head_attention": (
        (5, 8),
        lambda x: L.MultiHeadAttention(2, 4)(x, x),
        {},
    ),
    "transformer_encoder_functional": ((5, 8), _encoder_block_functional, {}),
    "transformer_encoder_custom_layer": (
        (5, 8),
        lambda x: EncoderBlock()(x),
        {},
    ),
    "conv1d": ((9, 4), lambda x: L.Conv1D(6, 3)(x), {}),
    "conv2d": ((7, 7, 3), lambda x: L.Conv2D(6, 3)(x), {}),
    "conv3d": ((5, 5, 5, 2), lambda x: L.Conv3D(4, 3)(x), {}),
    "conv1d_transpose": ((6, 4), lambda x: L.Conv1DTranspose(5, 3)(x), {}),
    "conv2d_transpose": ((5, 5, 3), lambda x: L.Conv2DTranspose(5, 3)(x), {}),
    "conv3d_transpose": (
        (4, 4, 4, 2),
        lambda x: L.Conv3DTranspose(3, 3)(x),
        {},
    ),
    "separable_conv1d": ((9, 4), lambda x: L.SeparableConv1D(6, 3)(x), {}),
    "separable_conv2d": ((7, 7, 4), lambda x: L.SeparableConv2D(6, 3)(x), {}),
    "separable_conv2d_with_depthwise": (
        (7, 7, 4),
        lambda x: L.SeparableConv2D(6, 3, name="sep")(x),
        {"include": ["kernel"]},
    ),
    "depthwise_conv1d_when_asked": (
        (9, 4),
        lambda x: L.DepthwiseConv1D(3, depth_multiplier=2, name="dw")(x),
        {"include": ["^dw/kernel$"]},
    ),
    "depthwise_conv2d_when_asked": (
        (7, 7, 4),
        lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x),
        {"include": ["^dw/kernel$"]},
    ),
    "embedding": (
        (6,),
        lambda x: L.Embedding(20, 8)(keras.ops.cast(x * 19, "int32")),
        {},
    ),
    "lstm": ((6, 4), lambda x: L.LSTM(5)(x), {}),
    "gru": ((6, 4), lambda x: L.GRU(5)(x), {}),
    "simple_rnn": ((6, 4), lambda x: L.SimpleRNN(5)(x), {}),
    "conv_lstm1d": ((3, 6, 2), lambda x: L.ConvLSTM1D(3, 3)(x), {}),
    "conv_lstm2d": ((3, 5, 5, 2), lambda x: L.ConvLSTM2D(3, 3)(x), {}),
    "conv_lstm3d": ((2, 4, 4, 4, 2), lambda x: L.ConvLSTM3D(2, 3)(x), {}),
    "bidirectional_lstm": (
        (6, 4),
        lambda x: L.Bidirectional(L.LSTM(5))(x),
        {},
    ),
    "bidirectional_gru": ((6, 4), lambda x: L.Bidirectional(L.GRU(5))(x), {}),
    "time_distributed_dense": (
        (6, 4),
        lambda x: L.TimeDistributed(L.Dense(5))(x),
        {},
    ),
    "time_distributed_conv2d": (
        (3, 6, 6, 2),
        lambda x: L.TimeDistributed(L.Conv2D(4, 3))(x),
        {},
    ),
    "rnn_stacked_cells": (
        (6, 4),
        lambda x: L.RNN([L.LSTMCell(5), L.GRUCell(4), L.SimpleRNNCell(3)])(x),
        {},
    ),
    "dense_subclass": ((8,), lambda x: WideDense(6)(x), {}),
    "duck_typed_custom_layer": ((8,), lambda x: DuckScale()(x), {}),
}

# Custom layers rebuilt by `prune_low_magnitude` from their config: pruned,
# they save weights (not `.keras`); stripped, they save `.keras`.
REBUILT_FROM_CONFIG = {"transformer_encoder_custom_layer"}


def _functional(case):
    shape, body, _ = LAYER_CASES[case]
    inputs = keras.Input(shape)
    outputs = body(inputs)
    outputs = L.Dense(2, name="head")(L.Flatten()(outputs))
    return keras.Model(inputs, outputs)


def _data(shape, count=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (count,) + tuple(shape)).astype("float32")


def _kept_exactly(model, target=TARGET):
    for entry in mp.pruned_weights(model):
        mask = keras.ops.convert_to_numpy(entry.mask)
        expected = np.round(mask.size * (1.0 - target * entry.sparsity_scale))
        assert mask.sum() == expected, entry.name


def _fit(model, x, y):
    """Fits `FIT_STEPS` steps, past the schedule's end step."""
    model.compile(optimizer="adam", loss="mse")
    model.fit(
        x,
        y,
        batch_size=len(x) // FIT_STEPS,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_layer_kind_prunes_strips_and_reloads(case, tmp_path):
    shape, _, prune_kwargs = LAYER_CASES[case]
    model = _functional(case)
    x = _data(shape)
    y = np.zeros((len(x), 2), "float32")
    pruned = mp.prune_low_magnitude(
        model, pruning_schedule=_schedule(), **prune_kwargs
    )
    names = [e.name for e in mp.pruned_weights(pruned)]
    assert names, "nothing was pruned"
    assert all("bias" not in n for n in names)
    _fit(pruned, x, y)
    _kept_exactly(pruned)

    expected = pruned.predict(x, verbose=0)
    stripped = mp.strip_pruning(pruned)
    assert not mp.pruned_layers(stripped)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), expected)

    path = os.path.join(tmp_path, "stripped.keras")
    stripped.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)
    if case in REBUILT_FROM_CONFIG:
        return  # Its config recreates plain sublayers (see the README).
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    assert [e.name for e in mp.pruned_weights(reloaded)] == names
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)


def test_depthwise_kernels_are_left_alone_by_default():
    separable = _functional("separable_conv2d")
    pruned = mp.prune_low_magnitude(separable)
    names = [e.name for e in mp.pruned_weights(pruned)]
    assert names == ["separable_conv2d/pointwise_kernel", "head/kernel"]
    depthwise_only = keras.Sequential(
        [keras.Input((7, 7, 4)), L.DepthwiseConv2D(3), L.Flatten(), L.Dense(2)]
    )
    pruned = mp.prune_low_magnitude(depthwise_only)
    assert [e.name for e in mp.pruned_weights(pruned)] == ["dense/kernel"]


def test_separable_include_prunes_both_kernels():
    pruned = mp.prune_low_magnitude(
        _functional("separable_conv2d_with_depthwise"), include=["^sep/"]
    )
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "sep/pointwise_kernel",
        "sep/depthwise_kernel",
    ]


def test_shared_layer_has_one_mask_per_weight():
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], L.Dense(1)(shared(a) + shared(b)))
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    names = [e.name for e in mp.pruned_weights(pruned)]
    assert names.count("shared/kernel") == 1
    x = [_data((4,)), _data((4,), seed=1)]
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(
        x,
        np.zeros((8, 1)),
        batch_size=2,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )
    _kept_exactly(pruned)


def test_nested_model_is_pruned_inside():
    inner = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(2, name="outer")(inner(inputs)))
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "inner_dense/kernel",
        "outer/kernel",
    ]
    x = _data((6,))
    _fit(pruned, x, np.zeros((8, 2)))
    _kept_exactly(pruned)
    stripped = mp.strip_pruning(pruned)
    np.testing.assert_array_equal(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )


def test_subclassed_model_is_pruned_trained_saved_and_stripped(tmp_path):
    model = SubclassedNet()
    x = _data((5,))
    reference = model(x)
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    # Copied whole from its config and pruned in place inside one wrapper.
    assert isinstance(pruned, mp.PrunedModel)
    assert isinstance(pruned.inner, SubclassedNet)
    assert pruned.inner is not model
    np.testing.assert_array_equal(pruned(x), reference)  # weights copied
    # Sublayers with generated names (`dense_3`) are named by attribute.
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "subclassed_net/first/kernel",
        "subclassed_net/blocks/0/kernel",
        "subclassed_net/head/kernel",
    ]
    assert not mp.pruned_layers(model)  # the source is untouched
    _fit(pruned, x, np.zeros((8, 2)))
    _kept_exactly(pruned)
    expected = pruned.predict(x, verbose=0)

    # The pruned model itself saves and loads as `.keras`, masks included.
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, mp.PrunedModel)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)
    for a, b in zip(mp.get_masks(reloaded), mp.get_masks(pruned), strict=True):
        np.testing.assert_array_equal(a, b)

    stripped = mp.strip_pruning(pruned)
    assert isinstance(stripped, SubclassedNet)
    assert not mp.pruned_layers(stripped)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), expected)
    path = os.path.join(tmp_path, "stripped.keras")
    stripped.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)


@keras.saving.register_keras_serializable(package="test_coverage")
class WrappedInInit(keras.Model):
    """The documented way for full `.keras` round trips: wrap in __init__."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = mp.prune_low_magnitude(
            L.Dense(6, activation="relu"), pruning_schedule=_schedule()
        )
        self.head = L.Dense(2)

    def call(self, inputs):
        return self.head(self.hidden(inputs))


def test_subclassed_model_wrapping_in_init_saves_and_strips(tmp_path):
    model = WrappedInInit()
    x = _data((5,))
    model(x)
    _fit(model, x, np.zeros((8, 2)))
    _kept_exactly(model)
    path = os.path.join(tmp_path, "pruned.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)
    stripped = mp.strip_pruning(model)
    assert not mp.pruned_layers(stripped)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), expected)


def _three_dense():
    return keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(8, name="a"),
            L.Dense(8, name="b"),
            L.Dense(2, name="c"),
        ]
    )


def _pruned_names(model):
    return [e.name for e in mp.pruned_weights(model)]


def test_selection_by_include_exclude_policy_and_layer_args():
    model = _three_dense()
    assert _pruned_names(
        mp.prune_low_magnitude(model, include=["^a/", "^c/"])
    ) == ["a/kernel", "c/kernel"]
    assert _pruned_names(mp.prune_low_magnitude(model, exclude=["^b/"])) == [
        "a/kernel",
        "c/kernel",
    ]
    assert _pruned_names(
        mp.prune_low_magnitude(model, policy=lambda layer: layer.name != "a")
    ) == ["b/kernel", "c/kernel"]

    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.ConstantSparsity(0.5, 0),
        layer_args={"c": {"pruning_schedule": mp.ConstantSparsity(0.8, 0)}},
        policy=lambda layer: (
            {"block_size": (2, 2)} if layer.name == "b" else True
        ),
    )
    by_layer = {
        layer.layer.name: layer.hparams for layer in mp.pruned_layers(pruned)
    }
    assert by_layer["a"].target_sparsity == 0.5
    assert (by_layer["b"].block_height, by_layer["b"].block_width) == (2, 2)
    assert by_layer["c"].target_sparsity == 0.8


def test_unsupported_layer_raises_or_is_skipped_with_warning():
    model = keras.Sequential(
        [keras.Input((6,)), Opaque(name="opaque"), L.Dense(2, name="d")]
    )
    with pytest.raises(ValueError, match="opaque.*unsupported='warn'"):
        mp.prune_low_magnitude(model)
    with pytest.warns(UserWarning, match="Not pruned.*opaque"):
        pruned = mp.prune_low_magnitude(model, unsupported="warn")
    assert _pruned_names(pruned) == ["d/kernel"]
    # Leaving it out explicitly is not an error.
    assert _pruned_names(
        mp.prune_low_magnitude(model, exclude=["^opaque/"])
    ) == ["d/kernel"]
    skip_opaque = lambda layer: layer.name != "opaque"  # noqa: E731
    assert _pruned_names(mp.prune_low_magnitude(model, policy=skip_opaque)) == [
        "d/kernel"
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"unsupported": "ignore"}, "unsupported='ignore'"),
        ({"include": "a"}, "include='a'"),
        ({"exclude": ["("]}, "exclude="),
        ({"policy": 3}, "policy=3"),
        ({"layer_args": {"zzz": {}}}, "zzz"),
        ({"layer_args": {"a": {"speed": 1}}}, "speed"),
        ({"sparsity_m_by_n": (4, 2)}, "sparsity_m_by_n"),
        ({"pruning_scheme": "random"}, "pruning_scheme='random'"),
    ],
)
def test_bad_selection_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mp.prune_low_magnitude(_three_dense(), **kwargs)


def _magnitudes(model):
    return {
        e.name: np.abs(keras.ops.convert_to_numpy(e.weight))
        for e in mp.pruned_weights(model)
    }


def test_global_scheme_keeps_the_top_magnitudes_across_layers():
    model = _three_dense()
    # Give the layers different scales so that global sparsities differ.
    for scale, layer in zip((0.1, 1.0, 10.0), model.layers, strict=True):
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * scale, bias])
    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.ConstantSparsity(0.7, 0),
        pruning_scheme="global",
    )
    before = _magnitudes(pruned)
    pruning = mp.Pruning(model=pruned, global_step=tf.constant(0, tf.int64))
    pruning.mask_update_op()
    everything = np.concatenate([m.ravel() for m in before.values()])
    kept = int(np.round(everything.size * 0.3))
    threshold = np.sort(everything)[::-1][kept - 1]
    total_kept = 0
    for entry in mp.pruned_weights(pruned):
        mask = keras.ops.convert_to_numpy(entry.mask)
        np.testing.assert_array_equal(mask, before[entry.name] >= threshold)
        total_kept += mask.sum()
    assert total_kept == kept
    sparsities = mp.get_weight_sparsity(pruned)
    assert sparsities[0] > 0.9 and sparsities[2] < 0.1


def test_global_scheme_needs_one_schedule():
    model = _three_dense()
    with pytest.raises(ValueError, match="same hparams"):
        pruned = mp.prune_low_magnitude(
            model,
            pruning_scheme="global",
            layer_args={"c": {"pruning_schedule": mp.ConstantSparsity(0.8, 0)}},
        )
        mp.Pruning(model=pruned)


def test_layerwise_scheme_updates_one_layer_at_a_time():
    model = _three_dense()
    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.PolynomialDecay(
            0.0, 0.8, begin_step=0, end_step=30, frequency=6
        ),
        pruning_scheme="layerwise",
    )
    step = tf.Variable(0, dtype=tf.int64)
    pruning = mp.Pruning(model=pruned, global_step=step)
    layers = mp.pruned_layers(pruned)
    updates = []
    for t in range(0, 40):
        step.assign(t)
        before = [int(layer.last_mask_update_step.numpy()) for layer in layers]
        pruning.conditional_mask_update_op()
        after = [int(layer.last_mask_update_step.numpy()) for layer in layers]
        updates += [(t, j) for j in range(3) if after[j] != before[j]]
    # Delays 0, 2, 4 (3 layers share the interval of 6 steps).
    expected = sorted(
        (t, j)
        for j, delay in enumerate((0, 2, 4))
        for t in range(6 + delay, 31 + delay, 6)
    )
    assert updates == expected
    # Every layer ends at the final target.
    for entry in mp.pruned_weights(pruned):
        mask = keras.ops.convert_to_numpy(entry.mask)
        assert mask.sum() == np.round(mask.size * 0.2)


def test_m_by_n_keeps_two_of_every_four_and_survives_reload(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((5, 5, 8)),
            L.Conv2D(4, 3, name="conv"),
            L.Flatten(),
            L.Dense(4, name="d"),
        ]
    )
    pruned = mp.prune_low_magnitude(
        model, pruning_schedule=_schedule(), sparsity_m_by_n=(2, 4)
    )
    x = _data((5, 5, 8))
    _fit(pruned, x, np.zeros((8, 4)))
    path = os.path.join(tmp_path, "nm.keras")
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    for layer in mp.pruned_layers(reloaded):
        assert layer.hparams.m_by_n == (2, 4)
    for entry in mp.pruned_weights(pruned):
        mask = keras.ops.convert_to_numpy(entry.mask)
        moved = np.moveaxis(mask, -2, -1)
        groups = moved.reshape(moved.shape[:-1] + (-1, 4))
        assert (groups.sum(-1) <= 2).all(), entry.name
        assert mask.mean() == 0.5


def test_m_by_n_pads_a_weight_that_does_not_split_into_groups():
    # As tfmot: axis -2 (6 inputs) is padded with zeros to 8, so the last
    # group holds 2 real weights and 2 padding zeros, which count as its
    # pruned entries: both real weights stay.
    magnitudes = tf.constant(
        np.arange(1, 25, dtype="float32").reshape(6, 4)[::-1].copy()
    )
    mask = mp.mask.m_by_n_mask(magnitudes, 2, 4).numpy()
    np.testing.assert_array_equal(mask[:4].sum(axis=0), [2, 2, 2, 2])
    np.testing.assert_array_equal(mask[:2], np.ones((2, 4)))  # Largest two.
    np.testing.assert_array_equal(mask[4:], np.ones((2, 4)))
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, name="d")])
    pruned = mp.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    assert [e.name for e in mp.pruned_weights(pruned)] == ["d/kernel"]


def test_m_by_n_rejects_a_vector():
    with pytest.raises(ValueError, match="rank >= 2"):
        mp.mask.m_by_n_mask(tf.ones((8,)), 2, 4)


def test_optimizer_keeps_weights_masked_and_keeps_user_constraint():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(8, kernel_constraint="non_neg", name="a"),
            L.Dense(2, name="b"),
        ]
    )
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    x = _data((6,))
    _fit(pruned, x, np.ones((8, 2), "float32"))
    for entry in mp.pruned_weights(pruned):
        # The stored variable after the last optimizer step, not a re-mask.
        weight = keras.ops.convert_to_numpy(entry.weight)
        mask = keras.ops.convert_to_numpy(entry.mask)
        assert not np.any(weight[mask == 0]), entry.name
    kernel_a = keras.ops.convert_to_numpy(mp.pruned_weights(pruned)[0].weight)
    assert kernel_a.min() >= 0.0  # the layer's own constraint still applies
