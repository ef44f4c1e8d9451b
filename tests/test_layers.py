"""Tests of pruning each supported layer kind end to end, and model rewrites.

Each layer kind is put in a tiny model, pruned with `prune_low_magnitude`,
trained a few steps with `UpdatePruningStep`, stripped and saved.
"""

import keras
import numpy as np
import pytest

import model_pruning as mp

RANDOM = "random_normal"
FINAL_SPARSITY = 0.75


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


# name -> (input shape, input dtype, layer factory, pruned attribute paths,
#          whether to flatten before the head)
CASES = {
    "dense": (
        (6,),
        "float32",
        lambda n: keras.layers.Dense(5, kernel_initializer=RANDOM, name=n),
        ("kernel",),
        False,
    ),
    "conv1d": (
        (6, 2),
        "float32",
        lambda n: keras.layers.Conv1D(3, 2, kernel_initializer=RANDOM, name=n),
        ("kernel",),
        True,
    ),
    "conv2d": (
        (5, 5, 2),
        "float32",
        lambda n: keras.layers.Conv2D(3, 2, kernel_initializer=RANDOM, name=n),
        ("kernel",),
        True,
    ),
    "conv3d": (
        (3, 3, 3, 1),
        "float32",
        lambda n: keras.layers.Conv3D(2, 2, kernel_initializer=RANDOM, name=n),
        ("kernel",),
        True,
    ),
    "embedding": (
        (4,),
        "int32",
        lambda n: keras.layers.Embedding(
            10, 3, embeddings_initializer=RANDOM, name=n
        ),
        ("embeddings",),
        True,
    ),
    "lstm": (
        (4, 2),
        "float32",
        lambda n: _rnn(keras.layers.LSTM, n),
        ("cell.kernel", "cell.recurrent_kernel"),
        False,
    ),
    "gru": (
        (4, 2),
        "float32",
        lambda n: _rnn(keras.layers.GRU, n),
        ("cell.kernel", "cell.recurrent_kernel"),
        False,
    ),
    "simple_rnn": (
        (4, 2),
        "float32",
        lambda n: _rnn(keras.layers.SimpleRNN, n),
        ("cell.kernel", "cell.recurrent_kernel"),
        False,
    ),
    "dense_subclass": (
        (6,),
        "float32",
        lambda n: SubclassedDense(5, kernel_initializer=RANDOM, name=n),
        ("kernel",),
        False,
    ),
    "custom_prunable": (
        (6,),
        "float32",
        lambda n: CustomPrunable(5, name=n),
        ("kernel",),
        False,
    ),
}


def _attribute(layer, path):
    for part in path.split("."):
        layer = getattr(layer, part)
    return layer


def _inputs(shape, dtype, count=32):
    if dtype == "int32":
        return np.random.randint(0, 10, size=(count, *shape)).astype(dtype)
    return _floats(count, *shape)


def _build_case(name):
    shape, dtype, factory, attributes, flatten = CASES[name]
    layer = factory("under_test")
    inputs = keras.Input(shape, dtype=dtype)
    hidden = layer(inputs)
    if flatten:
        hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(
        2, kernel_initializer=RANDOM, bias_initializer=RANDOM, name="head"
    )(hidden)
    return keras.Model(inputs, outputs), attributes, _inputs(shape, dtype)


def _schedule():
    return mp.PolynomialDecay(
        0.0, FINAL_SPARSITY, begin_step=0, end_step=6, frequency=2
    )


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_prune_low_magnitude_layer_kind_end_to_end(case, tmp_path):
    model, attributes, x = _build_case(case)
    y = _floats(len(x), 2)
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    pruned.compile(optimizer="adam", loss="mse")
    pruned.fit(
        x,
        y,
        batch_size=4,
        epochs=1,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )
    assert int(pruned.optimizer.iterations) == 8

    # The layer under test and the Dense head are wrapped; their prunable
    # weights (and no bias) have masks.
    wrappers = {w.layer.name: w for w in mp.pruned_layers(pruned)}
    assert sorted(wrappers) == ["head", "under_test"]
    under_test = wrappers["under_test"]
    expected = [_attribute(under_test.layer, a) for a in attributes]
    assert [id(e.weight) for e in under_test.pruned_weights] == [
        id(v) for v in expected
    ]
    head = wrappers["head"]
    assert [e.weight for e in head.pruned_weights] == [head.layer.kernel]
    masked_ids = {id(e.weight) for e in mp.pruned_weights(pruned)}
    for wrapper in wrappers.values():
        biases = [v for v in wrapper.layer.weights if "bias" in v.path]
        if case != "embedding" or wrapper is head:
            assert biases, wrapper.name
        assert not any(id(b) in masked_ids for b in biases)
        mask_vars = [v for v in wrapper.weights if v.path.endswith("_mask")]
        assert len(mask_vars) == len(wrapper.pruned_weights)

    # Each mask keeps round_half_even((1 - 0.75) * n) entries.
    for entry in mp.pruned_weights(pruned):
        mask = _numpy(entry.mask)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        size = mask.size
        assert int(mask.sum()) == int(np.round(0.25 * size)), entry.name

    # Strip and save straight after training: the optimizer has moved the
    # raw weights at pruned positions since the last masked call, so the
    # masks must be folded in (strip) and restored (load) to match.
    raw = {id(e.weight): _numpy(e.weight) for e in mp.pruned_weights(pruned)}
    stripped = mp.strip_pruning(pruned)
    pruned_path = tmp_path / "pruned.keras"
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

    reloaded = keras.saving.load_model(pruned_path)
    assert len(mp.pruned_layers(reloaded)) == 2
    for before, after in zip(
        mp.get_masks(pruned), mp.get_masks(reloaded), strict=True
    ):
        np.testing.assert_array_equal(_numpy(before), _numpy(after))
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), predictions)

    stripped_path = tmp_path / "stripped.keras"
    stripped.save(stripped_path)
    reloaded_stripped = keras.saving.load_model(stripped_path)
    assert mp.pruned_layers(reloaded_stripped) == []
    np.testing.assert_array_equal(
        reloaded_stripped.predict(x, verbose=0), predictions
    )


def test_prune_low_magnitude_wraps_dense_inside_nested_model():
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")],
        name="inner",
    )
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="outer_dense")(inner(inputs))
    model = keras.Model(inputs, outputs)

    pruned = mp.prune_low_magnitude(model)

    names = sorted(w.layer.name for w in mp.pruned_layers(pruned))
    assert names == ["inner_dense", "outer_dense"]
    nested = [
        layer for layer in pruned.layers if isinstance(layer, keras.Model)
    ]
    assert len(nested) == 1
    assert isinstance(nested[0].layers[0], mp.PruneLowMagnitude)
    x = _floats(5, 4)
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )


def test_prune_low_magnitude_shared_layer_gets_one_wrapper():
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    outputs = shared(shared(inputs))
    model = keras.Model(inputs, outputs)

    pruned = mp.prune_low_magnitude(model)

    wrappers = mp.pruned_layers(pruned)
    assert len(wrappers) == 1
    assert len(mp.get_masks(pruned)) == 1
    x = _floats(5, 4)
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )


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


def test_prune_low_magnitude_unknown_layer_raises():
    class Unknown(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 2))

        def call(self, x):
            return x @ self.w

    layer = Unknown(name="unknown")
    layer.build((None, 4))
    with pytest.raises(ValueError, match="Supported") as error:
        mp.prune_low_magnitude(layer)
    assert "Unknown" in str(error.value)


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
