"""Pruning every layer and model kind end to end, model rewrites, the
selection API and the paper's schemes.

The table test puts each layer kind in a small functional model, prunes it
with `prune_low_magnitude`, trains a few steps with `UpdatePruningStep` on a
schedule ending at 0.75, checks every pruned weight keeps exactly
round_half_even(n / 4) entries, strips (bit for bit) and reloads `.keras`.

Whole-model tests (fit, save, strip, reload) that only `make test` and Bazel
run are marked `integration` one by one, and so are the table's cases that
the fast loop (`make test-fast`) leaves out.
"""

import os
from typing import Any
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_pruning as mp

RANDOM = "random_normal"
TARGET = 0.75
FIT_STEPS = 4
L = keras.layers


@keras.saving.register_keras_serializable(package="test_layers")
class SubclassedDense(keras.layers.Dense):
    """A Dense subclass: pruned because it is an instance of Dense."""


@keras.saving.register_keras_serializable(package="test_layers")
class CustomPrunable(keras.layers.Layer):
    """A custom layer that prunes its kernel and keeps its bias."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer=RANDOM,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer=RANDOM
        )

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.kernel) + self.bias

    def get_prunable_weights(self):
        return [self.kernel]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="test_layers")
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


@keras.saving.register_keras_serializable(package="test_layers")
class Opaque(keras.layers.Layer):
    """A layer with a weight nothing knows how to prune."""

    def build(self, input_shape):
        self.w = self.add_weight(
            name="w", shape=(input_shape[-1], 3), initializer="normal"
        )

    def call(self, inputs):
        return inputs @ self.w


@keras.saving.register_keras_serializable(package="test_layers")
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


@keras.saving.register_keras_serializable(package="test_layers")
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


def _floats(*shape):
    return np.random.normal(size=shape).astype("float32")


def _rnn(cls, name):
    return cls(
        3,
        kernel_initializer=RANDOM,
        recurrent_initializer=RANDOM,
        bias_initializer=RANDOM,
        name=name,
    )


def _encoder_block_functional(inputs):
    attention = keras.layers.MultiHeadAttention(2, 4, name="mha")
    x = keras.layers.LayerNormalization()(inputs + attention(inputs, inputs))
    y = keras.layers.Dense(16, activation="relu", name="ffn_in")(x)
    y = keras.layers.Dense(8, name="ffn_out")(y)
    return keras.layers.LayerNormalization()(x + y)


class Case(NamedTuple):
    """One row of `LAYER_CASES`.

    Attributes:
        shape: The input shape, without the batch axis.
        body: inputs -> outputs: the layers under test, named.
        pruned: Each layer under test's name -> the attribute paths (from the
            layer, `.`-separated, list indices as numbers) of its pruned
            weights, in order. The Dense `head` is checked besides.
        fast: Run by `make test-fast`; the other cases are `integration`.
        dtype: The input dtype.
        prune_kwargs: More `prune_low_magnitude` arguments.
        biased: The layers under test have a bias (never pruned).
        head: The Dense head is pruned too (an `include` can leave it out).
        rebuilt_from_config: A custom layer that `prune_low_magnitude`
            rebuilds from its config: pruned, it saves weights (not
            `.keras`; its config recreates plain sublayers, see the README);
            stripped, it saves `.keras`.
    """

    shape: tuple[int, ...]
    body: Any
    pruned: dict[str, tuple[str, ...]]
    fast: bool = False
    dtype: str = "float32"
    prune_kwargs: dict[str, Any] = {}  # Read only: never mutated.
    biased: bool = True
    head: bool = True
    rebuilt_from_config: bool = False


U = "under_test"
KERNEL = {U: ("kernel",)}
CELL = {U: ("cell.kernel", "cell.recurrent_kernel")}
ATTENTION = tuple(
    f"{part}_dense.kernel" for part in ("query", "key", "value", "output")
)


def _directions(*paths):
    return {
        U: tuple(
            f"{side}_layer.{path}"
            for side in ("forward", "backward")
            for path in paths
        )
    }


# The cases with `fast=True` are the ones `make test-fast` has always run
# (one per kind, cheap); the rest are whole-model `integration` cases.
LAYER_CASES = {
    "dense": Case(
        (6,),
        lambda x: L.Dense(5, kernel_initializer=RANDOM, name=U)(x),
        KERNEL,
        fast=True,
    ),
    "einsum_dense": Case(
        (5, 8),
        lambda x: L.EinsumDense("abc,cd->abd", output_shape=(5, 6), name=U)(x),
        KERNEL,
        biased=False,
    ),
    "multi_head_attention": Case(
        (5, 8),
        lambda x: L.MultiHeadAttention(2, 4, name=U)(x, x),
        {U: ATTENTION},
    ),
    "transformer_encoder_functional": Case(
        (5, 8),
        _encoder_block_functional,
        {"mha": ATTENTION, "ffn_in": ("kernel",), "ffn_out": ("kernel",)},
    ),
    "transformer_encoder_custom_layer": Case(
        (5, 8),
        lambda x: EncoderBlock(name=U)(x),
        {
            U: tuple(f"attention.{path}" for path in ATTENTION)
            + ("feed_forward.0.kernel", "feed_forward.1.kernel")
        },
        rebuilt_from_config=True,
    ),
    "conv1d": Case(
        (6, 2),
        lambda x: L.Conv1D(3, 2, kernel_initializer=RANDOM, name=U)(x),
        KERNEL,
        fast=True,
    ),
    "conv2d": Case(
        (5, 5, 2),
        lambda x: L.Conv2D(3, 2, kernel_initializer=RANDOM, name=U)(x),
        KERNEL,
        fast=True,
    ),
    "conv3d": Case(
        (3, 3, 3, 1),
        lambda x: L.Conv3D(2, 2, kernel_initializer=RANDOM, name=U)(x),
        KERNEL,
        fast=True,
    ),
    "conv1d_transpose": Case(
        (6, 4), lambda x: L.Conv1DTranspose(5, 3, name=U)(x), KERNEL
    ),
    "conv2d_transpose": Case(
        (5, 5, 3), lambda x: L.Conv2DTranspose(5, 3, name=U)(x), KERNEL
    ),
    "conv3d_transpose": Case(
        (4, 4, 4, 2), lambda x: L.Conv3DTranspose(3, 3, name=U)(x), KERNEL
    ),
    "separable_conv1d": Case(
        (9, 4),
        lambda x: L.SeparableConv1D(6, 3, name=U)(x),
        {U: ("pointwise_kernel",)},
    ),
    # Named as Keras would: `test_depthwise_kernels_are_left_alone_by_default`
    # reads the name.
    "separable_conv2d": Case(
        (7, 7, 4),
        lambda x: L.SeparableConv2D(6, 3, name="separable_conv2d")(x),
        {"separable_conv2d": ("pointwise_kernel",)},
    ),
    "separable_conv2d_with_depthwise": Case(
        (7, 7, 4),
        lambda x: L.SeparableConv2D(6, 3, name="sep")(x),
        {"sep": ("pointwise_kernel", "depthwise_kernel")},
        prune_kwargs={"include": ["kernel"]},
    ),
    "depthwise_conv1d_when_asked": Case(
        (9, 4),
        lambda x: L.DepthwiseConv1D(3, depth_multiplier=2, name="dw")(x),
        {"dw": ("kernel",)},
        prune_kwargs={"include": ["^dw/kernel$"]},
        head=False,
    ),
    "depthwise_conv2d_when_asked": Case(
        (7, 7, 4),
        lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x),
        {"dw": ("kernel",)},
        prune_kwargs={"include": ["^dw/kernel$"]},
        head=False,
    ),
    "embedding": Case(
        (4,),
        lambda x: L.Embedding(10, 3, embeddings_initializer=RANDOM, name=U)(x),
        {U: ("embeddings",)},
        fast=True,
        dtype="int32",
        biased=False,
    ),
    "lstm": Case((4, 2), lambda x: _rnn(L.LSTM, U)(x), CELL, fast=True),
    "gru": Case((4, 2), lambda x: _rnn(L.GRU, U)(x), CELL, fast=True),
    "simple_rnn": Case(
        (4, 2), lambda x: _rnn(L.SimpleRNN, U)(x), CELL, fast=True
    ),
    "conv_lstm1d": Case(
        (3, 6, 2), lambda x: L.ConvLSTM1D(3, 3, name=U)(x), CELL
    ),
    "conv_lstm2d": Case(
        (3, 5, 5, 2), lambda x: L.ConvLSTM2D(3, 3, name=U)(x), CELL
    ),
    "conv_lstm3d": Case(
        (2, 4, 4, 4, 2), lambda x: L.ConvLSTM3D(2, 3, name=U)(x), CELL
    ),
    "bidirectional_lstm": Case(
        (6, 4),
        lambda x: L.Bidirectional(L.LSTM(5), name=U)(x),
        _directions("cell.kernel", "cell.recurrent_kernel"),
    ),
    "bidirectional_gru": Case(
        (6, 4),
        lambda x: L.Bidirectional(L.GRU(5), name=U)(x),
        _directions("cell.kernel", "cell.recurrent_kernel"),
    ),
    "time_distributed_dense": Case(
        (6, 4),
        lambda x: L.TimeDistributed(L.Dense(5), name=U)(x),
        {U: ("layer.kernel",)},
    ),
    "time_distributed_conv2d": Case(
        (3, 6, 6, 2),
        lambda x: L.TimeDistributed(L.Conv2D(4, 3), name=U)(x),
        {U: ("layer.kernel",)},
    ),
    "rnn_stacked_cells": Case(
        (6, 4),
        lambda x: L.RNN(
            [L.LSTMCell(5), L.GRUCell(4), L.SimpleRNNCell(3)], name=U
        )(x),
        {
            U: tuple(
                f"cell.cells.{i}.{kernel}"
                for i in range(3)
                for kernel in ("kernel", "recurrent_kernel")
            )
        },
    ),
    "dense_subclass": Case(
        (6,),
        lambda x: SubclassedDense(5, kernel_initializer=RANDOM, name=U)(x),
        KERNEL,
        fast=True,
    ),
    "custom_prunable": Case(
        (6,), lambda x: CustomPrunable(5, name=U)(x), KERNEL, fast=True
    ),
    "duck_typed_custom_layer": Case(
        (8,), lambda x: DuckScale(name=U)(x), {U: ("scale",)}, biased=False
    ),
}


def _attribute(layer, path):
    for part in path.split("."):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def _inputs(shape, dtype, count=32):
    if dtype == "int32":
        return np.random.randint(0, 10, size=(count, *shape)).astype(dtype)
    return _floats(count, *shape)


def _functional(case):
    spec = LAYER_CASES[case]
    inputs = keras.Input(spec.shape, dtype=spec.dtype)
    hidden = L.Flatten()(spec.body(inputs))
    outputs = L.Dense(
        2, kernel_initializer=RANDOM, bias_initializer=RANDOM, name="head"
    )(hidden)
    return keras.Model(inputs, outputs)


def _data(shape, count=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (count,) + tuple(shape)).astype("float32")


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def _pruned_names(model):
    return [e.name for e in mp.pruned_weights(model)]


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


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            name,
            marks=() if LAYER_CASES[name].fast else pytest.mark.integration,
        )
        for name in sorted(LAYER_CASES)
    ],
)
def test_every_layer_kind_prunes_strips_and_reloads(case, tmp_path):
    spec = LAYER_CASES[case]
    model = _functional(case)
    x = _inputs(spec.shape, spec.dtype)
    y = _floats(len(x), 2)
    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=_schedule(end_step=6, frequency=2),
        **spec.prune_kwargs,
    )
    names = [e.name for e in mp.pruned_weights(pruned)]
    assert names, "nothing was pruned"
    assert all("bias" not in n for n in names)
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )
    assert int(pruned.optimizer.iterations) == 8  # Past the end step, 6.

    # The layers under test and the Dense head are wrapped; their prunable
    # weights (and no bias) have masks.
    expected_layers = dict(spec.pruned)
    if spec.head:
        expected_layers["head"] = ("kernel",)
    wrappers = {w.layer.name: w for w in mp.pruned_layers(pruned)}
    assert sorted(wrappers) == sorted(expected_layers)
    for name, attributes in expected_layers.items():
        wrapper = wrappers[name]
        expected = [_attribute(wrapper.layer, a) for a in attributes]
        assert [id(e.weight) for e in wrapper.pruned_weights] == [
            id(v) for v in expected
        ], name
    masked_ids = {id(e.weight) for e in mp.pruned_weights(pruned)}
    for name, wrapper in wrappers.items():
        biases = [v for v in wrapper.layer.weights if "bias" in v.path]
        if spec.biased or name == "head":
            assert biases, wrapper.name
        assert not any(id(b) in masked_ids for b in biases)
        mask_vars = [v for v in wrapper.weights if v.path.endswith("_mask")]
        assert len(mask_vars) == len(wrapper.pruned_weights)

    # Each mask keeps round_half_even((1 - 0.75) * n) entries.
    for entry in mp.pruned_weights(pruned):
        mask = _numpy(entry.mask)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert entry.sparsity_scale == 1.0
    _kept_exactly(pruned)

    # Strip and save straight after training: the optimizer has moved the
    # raw weights at pruned positions since the last masked call, so the
    # masks must be folded in (strip) and restored (load) to match.
    raw = {id(e.weight): _numpy(e.weight) for e in mp.pruned_weights(pruned)}
    stripped = mp.strip_pruning(pruned)
    pruned_path = os.path.join(tmp_path, "pruned.keras")
    if not spec.rebuilt_from_config:
        pruned.save(pruned_path)

    assert mp.pruned_layers(stripped) == []
    for variable in stripped.weights:
        assert "_mask" not in variable.path
        assert "_threshold" not in variable.path
        assert "last_mask_update_step" not in variable.path
    for wrapper in wrappers.values():
        plain = stripped.get_layer(wrapper.layer.name)
        assert type(plain) is type(wrapper.layer)
        inner = [id(v) for v in wrapper.layer.weights]
        for entry in wrapper.pruned_weights:
            value = _numpy(plain.weights[inner.index(id(entry.weight))])
            mask = _numpy(entry.mask)
            assert np.all(value[mask == 0.0] == 0.0)
            np.testing.assert_array_equal(value, raw[id(entry.weight)] * mask)

    predictions = pruned.predict(x, verbose=0)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), predictions)

    if not spec.rebuilt_from_config:
        reloaded = keras.saving.load_model(pruned_path)
        assert len(mp.pruned_layers(reloaded)) == len(wrappers)
        assert [e.name for e in mp.pruned_weights(reloaded)] == names
        for before, after in zip(
            mp.get_masks(pruned), mp.get_masks(reloaded), strict=True
        ):
            np.testing.assert_array_equal(_numpy(before), _numpy(after))
        np.testing.assert_array_equal(
            reloaded.predict(x, verbose=0), predictions
        )

    stripped_path = os.path.join(tmp_path, "stripped.keras")
    stripped.save(stripped_path)
    reloaded_stripped = keras.saving.load_model(stripped_path)
    assert mp.pruned_layers(reloaded_stripped) == []
    np.testing.assert_array_equal(
        reloaded_stripped.predict(x, verbose=0), predictions
    )


def test_nested_model_is_pruned_inside():
    inner = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((6,))
    outputs = L.Dense(2, name="outer_dense")(inner(inputs))
    model = keras.Model(inputs, outputs)

    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())

    names = sorted(w.layer.name for w in mp.pruned_layers(pruned))
    assert names == ["inner_dense", "outer_dense"]
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "inner_dense/kernel",
        "outer_dense/kernel",
    ]
    nested = [
        layer for layer in pruned.layers if isinstance(layer, keras.Model)
    ]
    assert len(nested) == 1
    assert isinstance(nested[0].layers[0], mp.PruneLowMagnitude)
    x = _data((6,))
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    _fit(pruned, x, np.zeros((8, 2)))
    _kept_exactly(pruned)
    stripped = mp.strip_pruning(pruned)
    np.testing.assert_array_equal(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )


def test_shared_layer_gets_one_wrapper_and_one_mask_per_weight():
    shared = L.Dense(4, name="shared")
    a, b = keras.Input((4,)), keras.Input((4,))
    # Called on two inputs side by side, then again on its own output.
    model = keras.Model([a, b], shared(shared(a) + shared(b)))

    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())

    wrappers = mp.pruned_layers(pruned)
    assert len(wrappers) == 1
    assert len(mp.get_masks(pruned)) == 1
    names = [e.name for e in mp.pruned_weights(pruned)]
    assert names.count("shared/kernel") == 1
    x = [_data((4,)), _data((4,), seed=1)]
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(
        x,
        np.zeros((8, 4)),
        batch_size=2,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )
    _kept_exactly(pruned)


@pytest.mark.parametrize(
    "factory",
    [keras.layers.LayerNormalization, keras.layers.BatchNormalization],
)
def test_layer_with_nothing_to_prune_wraps_as_a_pass_through(factory):
    # As tfmot: normalization (and Dropout, pooling) wrap with no masks.
    layer = factory()
    wrapped = mp.prune_low_magnitude(layer)
    x = _floats(5, 4)
    y = wrapped(x)
    assert wrapped.pruned_weights == ()
    np.testing.assert_allclose(y, layer(x), rtol=1e-6)


def test_unsupported_layer_raises_or_is_skipped_with_warning():
    # Wrapped alone, it raises, naming its class and the supported kinds.
    layer = Opaque(name="unknown")
    layer.build((None, 4))
    with pytest.raises(ValueError, match="Supported") as error:
        mp.prune_low_magnitude(layer)
    assert "Opaque" in str(error.value)
    # In a model: an error, or skipped with a warning, or left out by choice.
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


def test_prune_low_magnitude_leaves_unsupported_layer_in_model_unwrapped():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="d1")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(2, name="d2")(hidden)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    bn.set_weights([_floats(*w.shape) ** 2 + 0.5 for w in bn.weights])

    pruned = mp.prune_low_magnitude(model)

    copy = pruned.get_layer("bn")
    assert type(copy) is keras.layers.BatchNormalization
    assert copy is not bn
    for before, after in zip(bn.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert sorted(w.layer.name for w in mp.pruned_layers(pruned)) == [
        "d1",
        "d2",
    ]


def test_prune_low_magnitude_already_wrapped_layer_raises():
    wrapped = mp.prune_low_magnitude(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="already wrapped"):
        mp.prune_low_magnitude(wrapped)


def test_pruning_a_pruned_model_again_keeps_it_or_names_what_differs():
    def schedule(sparsity):
        return mp.ConstantSparsity(sparsity, begin_step=0)

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    pruned = mp.prune_low_magnitude(model, pruning_schedule=schedule(0.5))
    # Alike: the pruned layer is kept, with its pruning.
    again = mp.prune_low_magnitude(pruned, pruning_schedule=schedule(0.5))
    assert [w.hparams.target_sparsity for w in mp.pruned_layers(again)] == [0.5]
    # Other arguments are not ignored: the error names what differs.
    with pytest.raises(ValueError) as error:
        mp.prune_low_magnitude(pruned, pruning_schedule=schedule(0.9))
    message = str(error.value)
    assert "already pruned" in message
    assert "target_sparsity=0.5 (this call: 0.9)" in message
    with pytest.raises(ValueError, match=r"block_height=1 \(this call: 4\)"):
        mp.prune_low_magnitude(
            pruned, pruning_schedule=schedule(0.5), block_size=(4, 1)
        )
    with pytest.raises(ValueError, match="exclude=.*this call"):
        mp.prune_low_magnitude(
            pruned, pruning_schedule=schedule(0.5), exclude=["bias"]
        )


def test_pruning_a_model_pruned_whole_again_keeps_it_or_raises():
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.layers.Dense(3)])

    class Tower(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.block = block

        def call(self, inputs):
            return self.block(inputs)

    tower = Tower()
    tower(np.ones((1, 4), "float32"))
    schedule = mp.ConstantSparsity(0.5, begin_step=0)
    pruned = mp.prune_low_magnitude(tower, pruning_schedule=schedule)
    assert isinstance(pruned, mp.PrunedModel)
    assert mp.prune_low_magnitude(pruned, pruning_schedule=schedule) is pruned
    with pytest.raises(ValueError, match="already pruned"):
        mp.prune_low_magnitude(
            pruned, pruning_schedule=mp.ConstantSparsity(0.8, begin_step=0)
        )


def test_prune_low_magnitude_leaves_original_model_unchanged():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, kernel_initializer=RANDOM)(inputs)
    outputs = keras.layers.Dense(2, kernel_initializer=RANDOM)(hidden)
    model = keras.Model(inputs, outputs)
    original = [w.copy() for w in model.get_weights()]

    pruned = mp.prune_low_magnitude(
        model, pruning_schedule=mp.ConstantSparsity(0.5, begin_step=0)
    )
    for layer in mp.pruned_layers(pruned):
        assert all(layer.layer.weights[0] is not w for w in model.weights)
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(
        _floats(16, 6),
        _floats(16, 2),
        batch_size=4,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )

    for before, after in zip(original, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    trained = [_numpy(w) for w in mp.get_weights(pruned)]
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(trained, original[::2], strict=True)
    )


def test_unbuilt_sequential_prunes_and_builds_on_first_call():
    model = keras.Sequential(
        [
            keras.layers.Dense(3, name="d"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.DepthwiseConv1D(1, name="dw"),
        ]
    )
    pruned = mp.prune_low_magnitude(model)
    assert not pruned.built
    # Chosen by class: Dense is wrapped, Dropout and the depthwise
    # convolution (not pruned by default) are not.
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "PruneLowMagnitude",
        "Dropout",
        "DepthwiseConv1D",
    ]
    pruned(_floats(2, 4)[:, None, :])
    assert [e.name for e in mp.pruned_weights(pruned)] == ["d/kernel"]
    assert not model.built  # The source model is left as it was.


def test_subclassed_model_without_config_raises_clearly():
    class Subclassed(keras.Model):
        def __init__(self):  # Takes no base-layer keyword arguments.
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model(_floats(1, 3))
    assert model.built
    with pytest.raises(ValueError, match="get_config"):
        mp.prune_low_magnitude(model)


@pytest.mark.integration
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


@pytest.mark.integration
def test_separable_include_prunes_both_kernels():
    pruned = mp.prune_low_magnitude(
        _functional("separable_conv2d_with_depthwise"), include=["^sep/"]
    )
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "sep/pointwise_kernel",
        "sep/depthwise_kernel",
    ]


@pytest.mark.integration
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


@keras.saving.register_keras_serializable(package="test_layers")
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_global_scheme_needs_one_schedule():
    model = _three_dense()
    with pytest.raises(ValueError, match="same hparams"):
        pruned = mp.prune_low_magnitude(
            model,
            pruning_scheme="global",
            layer_args={"c": {"pruning_schedule": mp.ConstantSparsity(0.8, 0)}},
        )
        mp.Pruning(model=pruned)


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_m_by_n_rejects_a_vector():
    with pytest.raises(ValueError, match="rank >= 2"):
        mp.mask.m_by_n_mask(tf.ones((8,)), 2, 4)


@pytest.mark.integration
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
