"""Tests of the contrib mirror's graph strip tool.

`test_convolutional_model`, `test_fully_connected_model` and
`test_lstm_model` port contrib's `strip_pruning_vars_test.py` (FINAL): 5
conv, 3 fully connected and 2 LSTM layers keep 5, 3 and 2 mask nodes when
frozen, 0 after stripping, and the stripped graph's outputs are
bit-identical. The 2-layer `MultiRNNCell` + `static_rnn` of contrib is a
`keras.layers.RNN` over `StackedRNNCells` here.
"""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_pruning.contrib.python import pruning
from model_pruning.contrib.python import strip_pruning_vars as strip_tool
from model_pruning.contrib.python import strip_pruning_vars_lib
from model_pruning.contrib.python.layers import layers
from model_pruning.contrib.python.layers import rnn_cells

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

PRUNING_SPEC = ",".join(
    [
        "pruning_frequency=1",
        "begin_pruning_step=1",
        "end_pruning_step=10",
        "nbins=2048",
        "threshold_decay=0.0",
    ]
)


def _get_number_pruning_vars(graph_def):
    number_vars = 0
    for node in graph_def.node:
        if re.match(r"^.*(mask$)|(threshold$)", node.name):
            number_vars += 1
    return number_vars


def _get_node_names(tensor_names):
    return [
        strip_pruning_vars_lib._node_name(tensor_name)
        for tensor_name in tensor_names
    ]


def _build_convolutional_model(number_of_layers):
    kernel_size = 3
    base_depth = 4
    depth_step = 7
    height, width = 7, 9
    with tf.compat.v1.variable_scope("conv_model"):
        top_layer = tf.ones((8, height, width, base_depth))
        for ix in range(number_of_layers):
            top_layer = layers.masked_conv2d(
                top_layer,
                base_depth + (ix + 1) * depth_step,
                kernel_size,
                scope="Conv_" + str(ix),
            )
    return top_layer


def _build_fully_connected_model(number_of_layers):
    base_depth = 4
    depth_step = 7
    top_layer = tf.ones((8, base_depth))
    with tf.compat.v1.variable_scope("fc_model"):
        for ix in range(number_of_layers):
            top_layer = layers.masked_fully_connected(
                top_layer, base_depth + (ix + 1) * depth_step
            )
    return top_layer


def _build_lstm_model(number_of_layers):
    batch_size = 8
    dim = 10
    inputs = tf.compat.v1.Variable(tf.random.normal([batch_size, dim]))

    def lstm_cell():
        return rnn_cells.MaskedBasicLSTMCell(
            dim, forget_bias=0.0, state_is_tuple=True, reuse=False
        )

    cell = keras.layers.StackedRNNCells(
        [lstm_cell() for _ in range(number_of_layers)]
    )
    return keras.layers.RNN(cell)(inputs[:, tf.newaxis, :])


def _prune_and_freeze(build, number_of_layers):
    """Builds, prunes for 20 rounds and freezes a model (contrib's
    `_get_initial_outputs`); returns outputs, output names and GraphDef."""
    graph = tf.Graph()
    with graph.as_default():
        sparsity = tf.compat.v1.Variable(0.5, name="sparsity")
        global_step = tf.compat.v1.train.get_or_create_global_step()
        increment_global_step = tf.compat.v1.assign_add(global_step, 1)
        top_layer = build(number_of_layers)
        output_tensor_names = [top_layer.name]
        pruning_hparams = pruning.get_pruning_hparams().parse(PRUNING_SPEC)
        p = pruning.Pruning(pruning_hparams, sparsity=sparsity)
        mask_update_op = p.conditional_mask_update_op()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(20):
                sess.run(mask_update_op)
                sess.run(increment_global_step)
            sparsities = sess.run(pruning.get_weight_sparsity())
            reference_outputs = [
                sess.run(graph.get_tensor_by_name(name))
                for name in output_tensor_names
            ]
            initial_graph_def = (
                tf.compat.v1.graph_util.convert_variables_to_constants(
                    sess,
                    graph.as_graph_def(),
                    _get_node_names(output_tensor_names),
                )
            )
    np.testing.assert_allclose(sparsities, [0.5] * number_of_layers)
    return reference_outputs, output_tensor_names, initial_graph_def


def _final_outputs(final_graph_def, output_tensor_names):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(final_graph_def, name="final")
        with tf.compat.v1.Session(graph=graph) as sess:
            return [
                sess.run(graph.get_tensor_by_name("final/" + name))
                for name in output_tensor_names
            ]


@pytest.mark.parametrize(
    "build, number_masked_layers",
    [
        pytest.param(_build_convolutional_model, 5, id="convolutional"),
        pytest.param(_build_fully_connected_model, 3, id="fully_connected"),
        pytest.param(_build_lstm_model, 2, id="lstm"),
    ],
)
def test_strip_model(build, number_masked_layers):
    initial_outputs, names, initial_graph_def = _prune_and_freeze(
        build, number_masked_layers
    )
    final_graph_def = strip_pruning_vars_lib.strip_pruning_vars_fn(
        initial_graph_def, _get_node_names(names)
    )
    final_outputs = _final_outputs(final_graph_def, names)
    assert _get_number_pruning_vars(initial_graph_def) == number_masked_layers
    assert _get_number_pruning_vars(final_graph_def) == 0
    assert not any(
        "threshold" in n.name or n.name.endswith("mask")
        for n in final_graph_def.node
    )
    for initial_output, final_output in zip(
        initial_outputs, final_outputs, strict=True
    ):
        np.testing.assert_array_equal(initial_output, final_output)
    # Half of each folded weight is zero.
    folded = [
        tf.make_ndarray(n.attr["value"].tensor)
        for n in final_graph_def.node
        if "masked_weight" in n.name
    ]
    assert folded
    for value in folded:
        assert np.count_nonzero(value) == value.size // 2


def _train_and_save(checkpoint_dir):
    """A masked model trained 3 steps in a session, saved by a v1 Saver."""
    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.constant(
            np.random.RandomState(0).normal(size=(16, 6)), "float32"
        )
        y = tf.constant(np.random.RandomState(1).randint(0, 3, 16), tf.int64)
        hidden = layers.masked_fully_connected(x, 8, scope="fc1")
        logits = layers.masked_fully_connected(
            hidden, 3, activation_fn=None, scope="logits"
        )
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=logits
            )
        )
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, global_step=global_step
        )
        hparams = pruning.get_pruning_hparams().parse(
            "pruning_frequency=1,target_sparsity=0.5,"
            "sparsity_function_end_step=2"
        )
        mask_update_op = pruning.Pruning(
            hparams, global_step=global_step
        ).conditional_mask_update_op()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train_op)
                sess.run(mask_update_op)
            expected = sess.run(logits)
            saver.save(sess, os.path.join(checkpoint_dir, "model.ckpt"), 3)
    return logits.op.name, expected


def test_graph_def_from_checkpoint_and_strip_pruning_vars(tmp_path):
    output_node, expected = _train_and_save(str(tmp_path))
    frozen = strip_pruning_vars_lib.graph_def_from_checkpoint(
        str(tmp_path), [output_node]
    )
    assert _get_number_pruning_vars(frozen) == 2
    path = strip_pruning_vars_lib.strip_pruning_vars(
        str(tmp_path), [output_node], str(tmp_path / "out"), "stripped.pb"
    )
    assert path == str(tmp_path / "out" / "stripped.pb")
    graph_def = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
    assert _get_number_pruning_vars(graph_def) == 0
    (got,) = _final_outputs(graph_def, [output_node + ":0"])
    np.testing.assert_array_equal(got, expected)


def test_strip_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Could not find a checkpoint"):
        strip_pruning_vars_lib.graph_def_from_checkpoint(str(tmp_path), ["y"])
    with pytest.raises(ValueError, match="at least 1 output node"):
        strip_pruning_vars_lib.graph_def_from_checkpoint(str(tmp_path), [])
    with pytest.raises(TypeError, match="Received: output_node_names='y'"):
        strip_pruning_vars_lib.strip_pruning_vars_fn(
            tf.compat.v1.GraphDef(), "y"
        )
    with pytest.raises(TypeError, match="Received: input_graph_def=dict"):
        strip_pruning_vars_lib.strip_pruning_vars_fn({}, ["y"])
    with pytest.raises(ValueError, match=r"\['y'\] are not in the graph"):
        strip_pruning_vars_lib.strip_pruning_vars_fn(
            tf.compat.v1.GraphDef(), ["y"]
        )
    with pytest.raises(ValueError, match="Received: filename=''"):
        strip_pruning_vars_lib.strip_pruning_vars(
            str(tmp_path), ["y"], "/tmp", ""
        )
    assert list(tmp_path.iterdir()) == []


def test_node_and_tensor_names():
    assert strip_pruning_vars_lib._node_name("a/b:0") == "a/b"
    assert strip_pruning_vars_lib._node_name("a/b") == "a/b"
    assert strip_pruning_vars_lib._tensor_name("a/b") == "a/b:0"
    assert strip_pruning_vars_lib._tensor_name("a/b:1") == "a/b:1"


def test_command_line(tmp_path):
    output_node, expected = _train_and_save(str(tmp_path))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": repo}
    command = [
        sys.executable,
        "-m",
        "model_pruning.contrib.python.strip_pruning_vars",
        f"--checkpoint_dir={tmp_path}",
        f"--output_dir={tmp_path / 'out'}",
    ]
    result = subprocess.run(
        [*command, f"--output_node_names= {output_node} ,"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    path = result.stdout.strip().splitlines()[-1]
    assert path == str(tmp_path / "out" / "pruning_stripped.pb")
    graph_def = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
    (got,) = _final_outputs(graph_def, [output_node + ":0"])
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="atleast 1 output node"):
        strip_tool.parse_output_node_names(" , ")
    assert strip_tool.parse_output_node_names(" a/b , c,") == ["a/b", "c"]
