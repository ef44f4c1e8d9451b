"""Tests of the contrib mirror's masked layers and RNN cells.

Port contrib's `layers/layers_test.py` (TF@ebbed36) and
`layers/rnn_cells_test.py` (FINAL) with their shapes and counts, in a
`tf.compat.v1` graph (collections) and in TF2 eager mode (registry); then
check what the layers compute and that they work in `keras.layers.RNN`.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_pruning import contrib
from model_pruning.contrib.python import pruning
from model_pruning.contrib.python import registry
from model_pruning.contrib.python.layers import core_layers
from model_pruning.contrib.python.layers import layers
from model_pruning.contrib.python.layers import rnn_cells

HEIGHT, WIDTH = 7, 9
BATCH_SIZE, DIM = 8, 10


@pytest.fixture(params=["graph", "tf2"])
def mode(request):
    """Runs a test in a fresh v1 graph and in eager mode."""
    with registry.PruningRegistry().as_default():
        if request.param == "graph":
            with tf.Graph().as_default():
                yield request.param
        else:
            yield request.param


def _collection(name):
    """contrib's `ops.get_collection` in graph mode, the getters in TF2."""
    if registry.in_graph_mode():
        return tf.compat.v1.get_collection(name)
    getter = {
        core_layers.MASK_COLLECTION: pruning.get_masks,
        core_layers.MASKED_WEIGHT_COLLECTION: pruning.get_masked_weights,
    }[name]
    return getter()


def _shape(value):
    return list(tf.TensorShape(value.shape).as_list())


# --- layers_test.py ---------------------------------------------------------


def test_invalid_rank3(mode):
    input_tensor = tf.ones((HEIGHT, WIDTH, 3))
    with pytest.raises(ValueError, match="rank"):
        layers.masked_conv2d(input_tensor, 32, 3)
    assert pruning.get_masks() == []


def test_invalid_rank5(mode):
    input_tensor = tf.ones((8, 8, HEIGHT, WIDTH, 3))
    with pytest.raises(ValueError, match="rank"):
        layers.masked_conv2d(input_tensor, 32, 3)


def test_single_conv_mask_added(mode):
    kernel_size = 3
    input_depth, output_depth = 8, 32
    input_tensor = tf.ones((8, HEIGHT, WIDTH, input_depth))
    layers.masked_conv2d(input_tensor, output_depth, kernel_size)
    masks = _collection(core_layers.MASK_COLLECTION)
    assert len(masks) == 1
    assert _shape(masks[0]) == [
        kernel_size,
        kernel_size,
        input_depth,
        output_depth,
    ]
    masked_weight = _collection(core_layers.MASKED_WEIGHT_COLLECTION)
    assert len(masked_weight) == 1
    assert _shape(masked_weight[0]) == [
        kernel_size,
        kernel_size,
        input_depth,
        output_depth,
    ]


def test_multiple_conv_mask_added(mode):
    number_of_layers = 5
    kernel_size = 3
    base_depth = 4
    depth_step = 7
    top_layer = tf.ones((8, HEIGHT, WIDTH, base_depth))
    for ix in range(number_of_layers):
        top_layer = layers.masked_conv2d(
            top_layer, base_depth + (ix + 1) * depth_step, kernel_size
        )
    masks = _collection(core_layers.MASK_COLLECTION)
    masked_weight = _collection(core_layers.MASKED_WEIGHT_COLLECTION)
    assert len(masks) == number_of_layers
    assert len(masked_weight) == number_of_layers
    for ix in range(number_of_layers):
        expected = [
            kernel_size,
            kernel_size,
            base_depth + ix * depth_step,
            base_depth + (ix + 1) * depth_step,
        ]
        assert _shape(masks[ix]) == expected
        assert _shape(masked_weight[ix]) == expected


def test_single_fc_mask_added(mode):
    input_depth, output_depth = 8, 32
    layers.masked_fully_connected(tf.ones((5, input_depth)), output_depth)
    masks = _collection(core_layers.MASK_COLLECTION)
    assert len(masks) == 1
    assert _shape(masks[0]) == [input_depth, output_depth]
    masked_weight = _collection(core_layers.MASKED_WEIGHT_COLLECTION)
    assert len(masked_weight) == 1
    assert _shape(masked_weight[0]) == [input_depth, output_depth]


def test_multiple_fc_mask_added(mode):
    number_of_layers = 5
    base_depth = 4
    depth_step = 7
    top_layer = tf.ones((8, base_depth))
    for ix in range(number_of_layers):
        top_layer = layers.masked_fully_connected(
            top_layer, base_depth + (ix + 1) * depth_step
        )
    masks = _collection(core_layers.MASK_COLLECTION)
    masked_weight = _collection(core_layers.MASKED_WEIGHT_COLLECTION)
    assert len(masks) == number_of_layers
    assert len(masked_weight) == number_of_layers
    for ix in range(number_of_layers):
        expected = [
            base_depth + ix * depth_step,
            base_depth + (ix + 1) * depth_step,
        ]
        assert _shape(masks[ix]) == expected
        assert _shape(masked_weight[ix]) == expected


# --- rnn_cells_test.py ------------------------------------------------------


@pytest.mark.parametrize(
    "cell_class", [rnn_cells.MaskedBasicLSTMCell, rnn_cells.MaskedLSTMCell]
)
def test_masked_lstm_cell_registers_one_mask(mode, cell_class):
    expected_num_masks = 1
    expected_num_rows = 2 * DIM
    expected_num_cols = 4 * DIM
    inputs = tf.random.normal([BATCH_SIZE, DIM])
    c = tf.random.normal([BATCH_SIZE, DIM])
    h = tf.random.normal([BATCH_SIZE, DIM])
    state = rnn_cells.LSTMStateTuple(c, h)
    lstm_cell = cell_class(DIM)
    output, new_state = lstm_cell(inputs, state)
    lstm_cell(output, new_state)  # A second step registers nothing more.
    assert len(pruning.get_masks()) == expected_num_masks
    assert len(pruning.get_masked_weights()) == expected_num_masks
    assert len(pruning.get_thresholds()) == expected_num_masks
    assert len(pruning.get_weights()) == expected_num_masks
    for mask in pruning.get_masks():
        assert tuple(mask.shape) == (expected_num_rows, expected_num_cols)
    for weight in pruning.get_weights():
        assert tuple(weight.shape) == (expected_num_rows, expected_num_cols)
    assert isinstance(new_state, rnn_cells.LSTMStateTuple)


# --- What the layers compute ------------------------------------------------


@contextlib.contextmanager
def _tf2_registry():
    with registry.PruningRegistry().as_default() as fresh:
        yield fresh


def _prune_half():
    p = contrib.Pruning(sparsity=0.5, global_step=tf.Variable(0))
    p.mask_update_op()


def test_masked_fully_connected_uses_masked_kernel():
    with _tf2_registry():
        layer = contrib.MaskedFullyConnected(3, activation="relu")
        x = np.random.RandomState(0).normal(size=(4, 2, 5)).astype("float32")
        layer(x)
        assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
        assert [w.name for w in layer.non_trainable_weights] == [
            "mask",
            "threshold",
        ]
        layer.bias.assign([0.1, -0.2, 0.3])
        _prune_half()
        mask = layer.mask.numpy()
        assert mask.sum() == 8  # 15 entries, round_half_even(7.5) = 8 kept
        kernel = layer.kernel.numpy() * mask
        expected = np.maximum(x @ kernel + layer.bias.numpy(), 0.0)
        np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_masked_conv2d_uses_masked_kernel():
    with _tf2_registry():
        layer = contrib.MaskedConv2D(4, 3, padding="same")
        x = np.random.RandomState(1).normal(size=(2, 6, 6, 3))
        x = x.astype("float32")
        layer(x)
        assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
        assert [w.name for w in layer.non_trainable_weights] == [
            "mask",
            "threshold",
        ]
        _prune_half()
        reference = keras.layers.Conv2D(4, 3, padding="same")
        reference.build(x.shape)
        reference.set_weights(
            [layer.kernel.numpy() * layer.mask.numpy(), layer.bias.numpy()]
        )
        assert layer.mask.numpy().mean() == 0.5
        config = layer.get_config()
        assert config["padding"] == "same" and config["filters"] == 4
        clone = contrib.MaskedConv2D.from_config(config)
        assert clone.kernel_size == (3, 3) and clone.padding == "same"
        np.testing.assert_allclose(layer(x), reference(x), rtol=1e-5, atol=1e-5)


def _basic_lstm_step(x, c, h, kernel, bias, forget_bias):
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    gates = np.concatenate([x, h], axis=1) @ kernel + bias
    i, j, f, o = np.split(gates, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    new_h = np.tanh(new_c) * sigmoid(o)
    return new_c, new_h


def test_basic_lstm_in_keras_rnn_matches_reference():
    with _tf2_registry():
        cell = contrib.MaskedBasicLSTMCell(4, forget_bias=0.5)
        rnn = keras.layers.RNN(cell, return_state=True)
        x = np.random.RandomState(2).normal(size=(3, 5, 6)).astype("float32")
        rnn(x)
        cell.bias.assign(np.linspace(-1, 1, 16, dtype="float32"))
        _prune_half()
        output, c_out, h_out = (t.numpy() for t in rnn(x))
        assert len(contrib.get_masks()) == 1
        kernel = cell.kernel.numpy() * cell.mask.numpy()
        c = h = np.zeros((3, 4), "float32")
        for t in range(5):
            c, h = _basic_lstm_step(
                x[:, t], c, h, kernel, cell.bias.numpy(), 0.5
            )
        np.testing.assert_allclose(output, h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_out, h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c_out, c, rtol=1e-5, atol=1e-6)


def test_lstm_cell_without_extras_equals_basic_cell():
    with _tf2_registry():
        basic = contrib.MaskedBasicLSTMCell(4, state_is_tuple=False)
        full = contrib.MaskedLSTMCell(4, state_is_tuple=False)
        x = tf.random.normal([2, 3])
        state = basic.zero_state(2)
        assert state.shape == (2, 8)
        basic(x, state)
        full(x, state)
        full.set_weights(basic.get_weights())
        state = tf.random.normal([2, 8])
        out_basic, state_basic = basic(x, state)
        out_full, state_full = full(x, state)
        np.testing.assert_allclose(out_basic, out_full, rtol=1e-6)
        np.testing.assert_allclose(state_basic, state_full, rtol=1e-6)


def test_lstm_cell_with_peepholes_projection_and_clips():
    with _tf2_registry():
        cell = contrib.MaskedLSTMCell(
            6, use_peepholes=True, num_proj=3, cell_clip=0.1, proj_clip=0.05
        )
        rnn = keras.layers.RNN(cell, return_sequences=True)
        out = rnn(np.ones((2, 4, 5), "float32"))
        assert out.shape == (2, 4, 3)
        assert float(tf.reduce_max(tf.abs(out))) <= np.float32(0.05)
        # The mask covers the main kernel only: [input + num_proj, 4 * units].
        assert tuple(cell.mask.shape) == tuple(cell.kernel.shape) == (8, 24)
        assert len(contrib.get_masks()) == 1
        names = sorted(w.name for w in cell.weights)
        assert names == sorted(
            [
                "kernel",
                "bias",
                "mask",
                "threshold",
                "w_f_diag",
                "w_i_diag",
                "w_o_diag",
                "projection_kernel",
            ]
        )


def test_masked_layers_save_and_load(tmp_path):
    with _tf2_registry():
        model = keras.Sequential(
            [
                keras.Input((5, 3)),
                keras.layers.RNN(contrib.MaskedLSTMCell(4, use_peepholes=True)),
                contrib.MaskedFullyConnected(2),
            ]
        )
        _prune_half()
        path = str(tmp_path / "masked.keras")
        model.save(path)
        x = np.random.RandomState(3).normal(size=(2, 5, 3)).astype("float32")
        expected = model(x).numpy()
    with _tf2_registry():
        loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(loaded(x).numpy(), expected)
        np.testing.assert_array_equal(
            loaded.layers[-1].mask.numpy(), model.layers[-1].mask.numpy()
        )
        assert len(contrib.get_masks()) == 2  # the loaded layers registered


def test_slim_names_and_reuse_in_graph():
    with tf.Graph().as_default():
        x = tf.ones((2, 5, 5, 3))
        y = layers.masked_conv2d(x, 4, 3, scope="conv1")
        layers.masked_conv2d(x, 4, 3, scope="conv1", reuse=True)
        assert len(pruning.get_masks()) == 1
        names = sorted(v.op.name for v in tf.compat.v1.global_variables())
        assert names == [
            "conv1/biases",
            "conv1/mask",
            "conv1/threshold",
            "conv1/weights",
        ]
        assert pruning.get_masked_weights()[0].op.name == (
            "conv1/weights/masked_weight"
        )
        z = layers.masked_fully_connected(
            tf.ones((2, 3)),
            4,
            activation_fn=None,
            biases_initializer=None,
            outputs_collections=["outputs"],
        )
        assert tf.compat.v1.get_collection("outputs") == [z]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            assert sess.run(y).min() >= 0.0  # relu by default
        with pytest.raises(ValueError, match="reuse=True"):
            layers.masked_conv2d(x, 4, 3, scope="conv9", reuse=True)


def test_bad_layer_arguments():
    with _tf2_registry():
        with pytest.raises(ValueError, match="Received: num_outputs=2.5"):
            layers.masked_fully_connected(tf.ones((2, 3)), 2.5)
        with pytest.raises(ValueError, match="Received: data_format='NCW'"):
            layers.masked_conv2d(tf.ones((1, 4, 4, 1)), 2, 3, data_format="NCW")
        with pytest.raises(ValueError, match="graph collections"):
            layers.masked_fully_connected(
                tf.ones((2, 3)), 2, outputs_collections=["x"]
            )
        with pytest.raises(ValueError, match="Received: num_units=0"):
            contrib.MaskedBasicLSTMCell(0)
        with pytest.raises(ValueError, match="Received: num_unit_shards=2"):
            contrib.MaskedLSTMCell(4, num_unit_shards=2)
        with pytest.raises(ValueError, match="Received: filters=-1"):
            contrib.MaskedConv2D(-1, 3)
        with pytest.raises(ValueError, match="Received: groups=2"):
            contrib.MaskedConv2D(4, 3, groups=2)
        assert contrib.get_masks() == []
