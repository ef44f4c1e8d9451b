"""Tests of the contrib mirror's `pruning` module.

`PruningHParamsTest` / `PruningTest` port contrib's `pruning_test.py` (FINAL)
case by case, in a `tf.compat.v1` graph with a session, with contrib's
numbers; the `*_tf2` tests run the same cases eagerly, where a
`PruningRegistry` replaces the collections.
"""

import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_pruning import contrib
from model_pruning.contrib.python import pruning
from model_pruning.contrib.python import registry
from model_pruning.mask import block_magnitude_mask

TEST_HPARAMS = ",".join(
    [
        "name=test",
        "threshold_decay=0.9",
        "pruning_frequency=10",
        "sparsity_function_end_step=100",
        "target_sparsity=0.9",
        "weight_sparsity_map=[conv1:0.8,conv2/kernel:0.8]",
        "block_dims_map=[dense1:4x4,dense2:1x4]",
    ]
)


@pytest.fixture(autouse=True)
def _fresh_registry():
    with registry.PruningRegistry().as_default() as fresh:
        yield fresh


@pytest.fixture
def graph():
    """A fresh v1 graph with a global step, as contrib's setUp."""
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.train.get_or_create_global_step()
        yield g


def _session(graph):
    return tf.compat.v1.Session(graph=graph)


def _linspace_variable(name="weights"):
    return tf.compat.v1.Variable(tf.linspace(1.0, 100.0, 100), name=name)


# --- PruningHParamsTest -----------------------------------------------------


def test_init(graph):
    hparams = pruning.get_pruning_hparams().parse(TEST_HPARAMS)
    p = pruning.Pruning(hparams)
    assert p.spec.name == "test"
    assert p.spec.threshold_decay == pytest.approx(0.9)
    assert p.spec.pruning_frequency == 10
    assert p.spec.sparsity_function_end_step == 100
    assert p.spec.target_sparsity == pytest.approx(0.9)


def test_init_with_external_sparsity(graph):
    sparsity = tf.compat.v1.Variable(0.5, name="sparsity")
    hparams = pruning.get_pruning_hparams().parse(TEST_HPARAMS)
    p = pruning.Pruning(spec=hparams, sparsity=sparsity)
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        assert sess.run(p.sparsity) == pytest.approx(0.5)


def test_init_with_variable_reuse(graph):
    sparsity = tf.compat.v1.Variable(0.5, name="sparsity")
    hparams = pruning.get_pruning_hparams().parse(TEST_HPARAMS)
    p = pruning.Pruning(spec=hparams, sparsity=sparsity)
    p_copy = pruning.Pruning(spec=hparams, sparsity=sparsity)
    assert p.last_update_step is p_copy.last_update_step
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        assert sess.run(p.sparsity) == pytest.approx(0.5)
        assert sess.run(p.sparsity) == sess.run(p_copy.sparsity)


def test_schedule_sparsity_follows_global_step(graph):
    hparams = pruning.get_pruning_hparams().parse(TEST_HPARAMS)
    p = pruning.Pruning(hparams)
    step = tf.compat.v1.train.get_global_step()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        values = []
        for value in (0, 50, 100, 200):
            sess.run(step.assign(value))
            values.append(sess.run(p.sparsity))
    # s = 0.9 - 0.9 * (1 - t / 100) ** 3
    expected = [0.9 - 0.9 * (1 - min(t, 100) / 100) ** 3 for t in (0, 50, 100)]
    np.testing.assert_allclose(values[:3], expected, rtol=1e-6)
    assert values[3] == pytest.approx(0.9)


# --- PruningTest ------------------------------------------------------------


def test_create_mask_2d(graph):
    weights = tf.compat.v1.Variable(
        tf.random.normal([10, 20], stddev=1), name="weights"
    )
    masked_weights = pruning.apply_mask(
        weights, tf.compat.v1.get_variable_scope()
    )
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        weights_val, masked_val = sess.run([weights, masked_weights])
    np.testing.assert_array_equal(weights_val, masked_val)


def test_update_single_mask(graph):
    weights = _linspace_variable()
    masked_weights = pruning.apply_mask(weights)
    sparsity = tf.compat.v1.Variable(0.95, name="sparsity")
    p = pruning.Pruning(sparsity=sparsity)
    p.spec.threshold_decay = 0.0
    mask_update_op = p.mask_update_op()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        assert np.count_nonzero(sess.run(masked_weights)) == 100
        sess.run(mask_update_op)
        assert np.count_nonzero(sess.run(masked_weights)) == 5


def _block_masking(graph, hparams, weights, expected_mask):
    threshold = tf.compat.v1.Variable(0.0, name="threshold")
    sparsity = tf.compat.v1.Variable(0.5, name="sparsity")
    pruning_hparams = pruning.get_pruning_hparams().parse(",".join(hparams))
    p = pruning.Pruning(pruning_hparams, sparsity=sparsity)
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        weights = tf.convert_to_tensor(weights)
        name = registry.weight_name(weights)
        spec = p.spec.hparams
        _, new_mask = block_magnitude_mask(
            tf.abs(weights),
            p.sparsity * spec.sparsity_scale(name),
            threshold,
            spec.threshold_decay,
            spec.block_dims(name),
            spec.block_pooling_function,
        )
        assert new_mask.get_shape() == weights.get_shape()
        np.testing.assert_array_equal(sess.run(new_mask), expected_mask)


_EXPECTED_ROWS_3_4 = [
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0],
    [1.0, 1.0, 1.0, 1.0],
]


def test_block_masking_with_nonnegative_block_dimensions(graph):
    param_list = ["block_height=2", "block_width=2", "threshold_decay=0"]
    weights_avg = tf.constant(
        [
            [0.1, 0.1, 0.2, 0.2],
            [0.1, 0.1, 0.2, 0.2],
            [0.3, 0.3, 0.4, 0.4],
            [0.3, 0.3, 0.4, 0.4],
        ]
    )
    weights_max = tf.constant(
        [
            [0.1, 0.0, 0.2, 0.0],
            [0.0, -0.1, 0.0, -0.2],
            [0.3, 0.0, 0.4, 0.0],
            [0.0, -0.3, 0.0, -0.4],
        ]
    )
    _block_masking(
        graph,
        param_list + ["block_pooling_function=MAX"],
        weights_max,
        _EXPECTED_ROWS_3_4,
    )
    _block_masking(
        graph,
        param_list + ["block_pooling_function=AVG"],
        weights_avg,
        _EXPECTED_ROWS_3_4,
    )


def test_block_masking_with_negative_block_dimensions(graph):
    param_list = ["block_height=1", "block_width=-1", "threshold_decay=0"]
    weights_avg = tf.constant(
        [
            [0.1, 0.1, 0.1, 0.1],
            [0.2, 0.2, 0.2, 0.2],
            [0.3, 0.3, 0.3, 0.3],
            [0.3, 0.3, 0.4, 0.4],
        ]
    )
    weights_max = tf.constant(
        [
            [0.1, 0.0, 0.1, 0.0],
            [0.0, 0.1, 0.0, 0.2],
            [0.3, 0.0, 0.3, 0.0],
            [0.0, -0.3, 0.0, 0.4],
        ]
    )
    _block_masking(
        graph,
        param_list + ["block_pooling_function=MAX"],
        weights_max,
        _EXPECTED_ROWS_3_4,
    )
    _block_masking(
        graph,
        param_list + ["block_pooling_function=AVG"],
        weights_avg,
        _EXPECTED_ROWS_3_4,
    )


def test_block_masking_with_higher_dimensions(graph):
    param_list = ["block_height=2", "block_width=2", "threshold_decay=0"]
    weights_avg = tf.constant(
        [
            [
                [0.1, 0.1, 0.2, 0.2],
                [0.1, 0.1, 0.2, 0.2],
                [0.3, 0.3, 0.4, 0.4],
                [0.3, 0.3, 0.4, 0.4],
            ]
        ]
    )
    weights_max = tf.constant(
        [
            [
                [0.1, 0.0, 0.2, 0.0],
                [0.0, -0.1, 0.0, -0.2],
                [0.3, 0.0, 0.4, 0.0],
                [0.0, -0.3, 0.0, -0.4],
            ]
        ]
    )
    _block_masking(
        graph,
        param_list + ["block_pooling_function=MAX"],
        weights_max,
        [_EXPECTED_ROWS_3_4],
    )
    _block_masking(
        graph,
        param_list + ["block_pooling_function=AVG"],
        weights_avg,
        [_EXPECTED_ROWS_3_4],
    )


def test_partitioned_variable_masking(graph):
    partitioner = tf.compat.v1.variable_axis_size_partitioner(40)
    with tf.compat.v1.variable_scope("", partitioner=partitioner):
        sparsity = tf.compat.v1.Variable(0.5, name="Sparsity")
        weights = tf.compat.v1.get_variable(
            "weights", initializer=tf.linspace(1.0, 100.0, 100)
        )
        masked_weights = pruning.apply_mask(
            weights, scope=tf.compat.v1.get_variable_scope()
        )
    assert len(list(weights)) == 10
    assert len(list(pruning.get_masks()[0])) == 10  # the mask is partitioned
    p = pruning.Pruning(sparsity=sparsity)
    p.spec.threshold_decay = 0.0
    mask_update_op = p.mask_update_op()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(mask_update_op)
        masked_val = sess.run(masked_weights)
    assert np.count_nonzero(masked_val) == 50
    # The threshold is global across the shards: the largest 50 survive.
    np.testing.assert_array_equal(np.nonzero(masked_val)[0], np.arange(50, 100))


def test_conditional_mask_update(graph):
    param_list = [
        "pruning_frequency=2",
        "begin_pruning_step=1",
        "end_pruning_step=6",
        "nbins=100",
    ]
    pruning_hparams = pruning.get_pruning_hparams().parse(",".join(param_list))
    weights = _linspace_variable()
    masked_weights = pruning.apply_mask(weights)
    sparsity = tf.compat.v1.Variable(0.00, name="sparsity")
    p = pruning.Pruning(pruning_hparams, sparsity=sparsity)
    p.spec.threshold_decay = 0.0
    mask_update_op = p.conditional_mask_update_op()
    sparsity_val = tf.linspace(0.0, 0.9, 10)
    global_step = tf.compat.v1.train.get_global_step()
    increment_global_step = tf.compat.v1.assign_add(global_step, 1)
    non_zero_count = []
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for i in range(10):
            sess.run(tf.compat.v1.assign(sparsity, sparsity_val[i]))
            sess.run(mask_update_op)
            sess.run(increment_global_step)
            non_zero_count.append(np.count_nonzero(sess.run(masked_weights)))
        last_update = sess.run(p.last_update_step)
    # Weights pruned at steps 2, 4 and 6.
    assert non_zero_count == [100, 100, 80, 80, 60, 60, 40, 40, 40, 40]
    assert last_update == 6


def test_weight_specific_sparsity(graph):
    param_list = [
        "begin_pruning_step=1",
        "pruning_frequency=1",
        "end_pruning_step=100",
        "target_sparsity=0.5",
        "weight_sparsity_map=[layer1:0.6,layer2/weights:0.75,.*kernel:0.6]",
        "threshold_decay=0.0",
    ]
    pruning_hparams = pruning.get_pruning_hparams().parse(",".join(param_list))
    with tf.compat.v1.variable_scope("layer1"):
        w1 = _linspace_variable("weights")
        _ = pruning.apply_mask(w1)
    with tf.compat.v1.variable_scope("layer2"):
        w2 = _linspace_variable("weights")
        _ = pruning.apply_mask(w2)
    with tf.compat.v1.variable_scope("layer3"):
        w3 = _linspace_variable("kernel")
        _ = pruning.apply_mask(w3)
    p = pruning.Pruning(pruning_hparams)
    mask_update_op = p.conditional_mask_update_op()
    increment_global_step = tf.compat.v1.assign_add(
        tf.compat.v1.train.get_global_step(), 1
    )
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for _ in range(110):
            sess.run(mask_update_op)
            sess.run(increment_global_step)
        np.testing.assert_allclose(
            sess.run(pruning.get_weight_sparsity()), [0.6, 0.75, 0.6]
        )


def test_per_layer_block_sparsity(graph):
    param_list = [
        "block_dims_map=[layer1/weights:1x1,layer2/weights:1x2]",
        "block_pooling_function=AVG",
        "threshold_decay=0.0",
    ]
    pruning_hparams = pruning.get_pruning_hparams().parse(",".join(param_list))
    with tf.compat.v1.variable_scope("layer1"):
        w1 = tf.constant([[-0.1, 0.1], [-0.2, 0.2]], name="weights")
        pruning.apply_mask(w1)
    with tf.compat.v1.variable_scope("layer2"):
        w2 = tf.constant(
            [[0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4]], name="weights"
        )
        pruning.apply_mask(w2)
    sparsity = tf.compat.v1.Variable(0.5, name="sparsity")
    p = pruning.Pruning(pruning_hparams, sparsity=sparsity)
    mask_update_op = p.mask_update_op()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(mask_update_op)
        mask1_eval = sess.run(pruning.get_masks()[0])
        mask2_eval = sess.run(pruning.get_masks()[1])
        np.testing.assert_array_equal(
            sess.run(pruning.get_weight_sparsity()), [0.5, 0.5]
        )
    np.testing.assert_array_equal(mask1_eval, [[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(
        mask2_eval, [[0, 0, 1.0, 1.0], [0, 0, 1.0, 1.0]]
    )


# --- Registration -----------------------------------------------------------


def test_collections_are_aligned_and_named(graph):
    with tf.compat.v1.variable_scope("conv1") as scope:
        w1 = tf.compat.v1.get_variable("weights", [3, 3, 2, 4])
        m1 = pruning.apply_mask(w1, scope)
    with tf.compat.v1.variable_scope("fc") as scope:
        w2 = tf.compat.v1.get_variable("weights", [8, 2])
        m2 = pruning.apply_mask(w2, scope)
    assert pruning.get_weights() == [w1, w2]
    assert [m.op.name for m in pruning.get_masks()] == ["conv1/mask", "fc/mask"]
    assert [t.op.name for t in pruning.get_thresholds()] == [
        "conv1/threshold",
        "fc/threshold",
    ]
    assert pruning.get_masked_weights() == [m1, m2]
    assert m1.op.name == "conv1/weights/masked_weight"
    assert not pruning.get_masks()[0].trainable
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        thresholds = sess.run(pruning.get_thresholds())
    assert thresholds == [0.0, 0.0]


def test_same_weight_registered_once_in_graph(graph):
    weights = _linspace_variable()
    first = pruning.apply_mask(weights, "cell")
    second = pruning.apply_mask(weights, "cell")  # an RNN's second step
    assert len(pruning.get_masks()) == 1
    assert len(pruning.get_masked_weights()) == 1
    sparsity = tf.compat.v1.Variable(0.5)
    p = pruning.Pruning(sparsity=sparsity)
    op = p.mask_update_op()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(op)
        a, b = sess.run([first, second])
    np.testing.assert_array_equal(a, b)
    assert np.count_nonzero(a) == 50


def test_mask_update_op_is_an_op_and_sets_last_update_step(graph):
    weights = _linspace_variable()
    pruning.apply_mask(weights)
    p = pruning.Pruning(sparsity=0.3)
    op = p.mask_update_op()
    assert isinstance(op, tf.Operation)
    step = tf.compat.v1.train.get_global_step()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(step.assign(7))
        assert sess.run(op) is None
        assert sess.run(p.last_update_step) == 7
        assert sess.run(pruning.get_weight_sparsity()) == [pytest.approx(0.3)]


def test_masks_never_regrow_in_graph_mode(graph):
    """The library's rule: a pruned weight stays pruned when the sparsity
    falls (contrib recomputed from raw weights and revived it)."""
    weights = _linspace_variable()
    masked = pruning.apply_mask(weights)
    sparsity = tf.compat.v1.Variable(0.5)
    p = pruning.Pruning(sparsity=sparsity)
    op = p.mask_update_op()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(op)
        sess.run(sparsity.assign(0.2))
        sess.run(op)
        assert np.count_nonzero(sess.run(masked)) == 50


def test_summaries_in_graph(graph):
    with tf.compat.v1.variable_scope("conv1") as scope:
        pruning.apply_mask(_linspace_variable(), scope)
    hparams = pruning.get_pruning_hparams().parse("name=cifar10_pruning")
    p = pruning.Pruning(hparams)
    summaries = p.add_pruning_summaries()
    names = [s.op.name for s in summaries]
    assert names == [
        "cifar10_pruning_summaries/sparsity",
        "cifar10_pruning_summaries/last_mask_update_step",
        "cifar10_pruning_summaries/conv1/mask/sparsity",
        "cifar10_pruning_summaries/conv1/threshold/threshold",
    ]
    merged = tf.compat.v1.summary.merge_all()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        event = tf.compat.v1.Summary.FromString(sess.run(merged))
    values = {v.tag: v.simple_value for v in event.value}
    assert values["cifar10_pruning_summaries/conv1/mask/sparsity"] == 0.0
    assert values["cifar10_pruning_summaries/sparsity"] == 0.0


def test_print_hparams(graph, caplog):
    hparams = pruning.get_pruning_hparams().parse("name=logged")
    p = pruning.Pruning(hparams)
    with caplog.at_level(logging.INFO):
        p.print_hparams()
    logged = json.loads(caplog.records[-1].getMessage())
    assert logged["name"] == "logged"
    assert logged["target_sparsity"] == 0.5


def test_hparams_parse_in_place_and_validated():
    hparams = pruning.get_pruning_hparams()
    assert hparams.parse("target_sparsity=0.9") is hparams
    assert hparams.target_sparsity == 0.9
    with pytest.raises(ValueError, match="target_sparsity"):
        hparams.parse("target_sparsity=1.5")
    assert hparams.target_sparsity == 0.9  # unchanged by the failed parse
    with pytest.raises(ValueError, match="threshold_decay"):
        hparams.threshold_decay = 1.0
    with pytest.raises(ValueError, match="Pruning must begin before"):
        hparams.parse("begin_pruning_step=10,end_pruning_step=5")
    assert hparams.hparams == contrib.get_pruning_hparams().hparams.override(
        target_sparsity=0.9
    )


# --- TF2 mode ---------------------------------------------------------------


def test_update_single_mask_tf2(_fresh_registry):
    weights = tf.Variable(tf.linspace(1.0, 100.0, 100), name="weights")
    sparsity = tf.Variable(0.95)
    assert np.count_nonzero(pruning.apply_mask(weights)) == 100
    p = pruning.Pruning(sparsity=sparsity, global_step=tf.Variable(0))
    p.spec.threshold_decay = 0.0
    assert bool(p.mask_update_op())
    assert np.count_nonzero(pruning.apply_mask(weights)) == 5
    assert len(_fresh_registry.entries) == 1  # applied twice, one entry
    assert np.count_nonzero(pruning.get_masked_weights()[0]) == 5


def test_conditional_mask_update_tf2():
    hparams = pruning.get_pruning_hparams().parse(
        "pruning_frequency=2,begin_pruning_step=1,end_pruning_step=6"
    )
    weights = tf.Variable(tf.linspace(1.0, 100.0, 100), name="weights")
    pruning.apply_mask(weights)
    sparsity = tf.Variable(0.0)
    step = tf.Variable(0, dtype=tf.int64)
    p = pruning.Pruning(hparams, global_step=step, sparsity=sparsity)
    p.spec.threshold_decay = 0.0
    counts, updated = [], []
    for value in np.linspace(0.0, 0.9, 10):
        sparsity.assign(value)
        updated.append(bool(p.conditional_mask_update_op()))
        step.assign_add(1)
        counts.append(np.count_nonzero(pruning.get_masked_weights()[0]))
    assert counts == [100, 100, 80, 80, 60, 60, 40, 40, 40, 40]
    assert (
        updated == [False, False, True, False, True, False, True] + [False] * 3
    )


def test_weight_specific_sparsity_tf2():
    hparams = pruning.get_pruning_hparams().parse(
        "begin_pruning_step=1,pruning_frequency=1,end_pruning_step=100,"
        "target_sparsity=0.5,threshold_decay=0.0,"
        "weight_sparsity_map=[layer1:0.6,layer2/weights:0.75,.*kernel:0.6]"
    )
    for name in ("layer1/weights", "layer2/weights", "layer3/kernel"):
        pruning.apply_mask(tf.Variable(tf.linspace(1.0, 100.0, 100), name=name))
    step = tf.Variable(0, dtype=tf.int64)
    p = pruning.Pruning(hparams, global_step=step)

    @tf.function
    def train_step():
        step.assign_add(1)
        return p.conditional_mask_update_op()

    for _ in range(110):
        train_step()
    np.testing.assert_allclose(
        [float(s) for s in pruning.get_weight_sparsity()], [0.6, 0.75, 0.6]
    )


def test_per_layer_block_sparsity_tf2():
    hparams = pruning.get_pruning_hparams().parse(
        "block_dims_map=[layer1/weights:1x1,layer2/weights:1x2],"
        "block_pooling_function=AVG,threshold_decay=0.0"
    )
    w1 = tf.Variable([[-0.1, 0.1], [-0.2, 0.2]], name="layer1/weights")
    w2 = tf.Variable(
        [[0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4]], name="layer2/weights"
    )
    pruning.apply_mask(w1)
    pruning.apply_mask(w2)
    p = pruning.Pruning(hparams, sparsity=0.5, global_step=tf.Variable(0))
    p.mask_update_op()
    masks = [m.numpy() for m in pruning.get_masks()]
    np.testing.assert_array_equal(masks[0], [[0, 0], [1, 1]])
    np.testing.assert_array_equal(masks[1], [[0, 0, 1, 1], [0, 0, 1, 1]])


class _MaskedMatMul(keras.layers.Layer):
    """A custom layer that masks its kernel with `apply_mask` in `call`."""

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], 6), initializer="ones"
        )

    def call(self, inputs):
        return tf.matmul(inputs, contrib.apply_mask(self.kernel, self.name))


def test_custom_keras_layer_eager_and_tf_function(_fresh_registry):
    layer = _MaskedMatMul(name="custom")
    x = tf.constant(np.arange(12, dtype="float32").reshape(3, 4))
    layer(x)
    call = tf.function(layer.__call__)
    call(x)
    call(x + 1.0)
    assert len(_fresh_registry.entries) == 1
    (entry,) = _fresh_registry.entries
    assert entry.name == "custom/kernel"
    assert entry.weight is layer.kernel
    # Make the magnitudes distinct, then prune half of them.
    layer.kernel.assign(np.arange(1, 25, dtype="float32").reshape(4, 6))
    p = contrib.Pruning(sparsity=0.5, global_step=tf.Variable(0))
    p.mask_update_op()
    mask = contrib.get_masks()[0].numpy()
    assert mask.sum() == 12
    np.testing.assert_array_equal(mask.reshape(-1)[12:], np.ones(12))
    expected = x.numpy() @ (layer.kernel.numpy() * mask)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(call(x).numpy(), expected, rtol=1e-6)


def test_custom_keras_layer_in_graph(graph):
    layer = _MaskedMatMul(name="custom")
    x_value = np.arange(12, dtype="float32").reshape(3, 4)
    x = tf.constant(x_value)
    layer(x)
    y = layer(x)  # a second call registers nothing more
    assert len(pruning.get_masks()) == 1
    assert pruning.get_masks()[0].op.name == "custom/mask"
    assert pruning.get_weights()[0].op.name == "custom/kernel"
    op = pruning.Pruning(sparsity=0.5).mask_update_op()
    with _session(graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        kernel = layer.kernel.value
        sess.run(kernel.assign(np.arange(1, 25, dtype="float32").reshape(4, 6)))
        sess.run(op)
        mask, kernel_value, got = sess.run([pruning.get_masks()[0], kernel, y])
    assert mask.sum() == 12
    np.testing.assert_allclose(got, x_value @ (kernel_value * mask))


def test_keras_fit_with_masked_layers_tf2(_fresh_registry):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            contrib.MaskedFullyConnected(16, activation="relu"),
            contrib.MaskedFullyConnected(2),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    hparams = contrib.get_pruning_hparams().parse(
        "pruning_frequency=1,target_sparsity=0.75,sparsity_function_end_step=4"
    )
    p = contrib.Pruning(hparams, global_step=model.optimizer.iterations)
    update = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: p.conditional_mask_update_op()
    )
    x = np.random.RandomState(0).normal(size=(32, 8)).astype("float32")
    y = np.random.RandomState(1).normal(size=(32, 2)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[update], verbose=0)
    assert len(contrib.get_masks()) == 2
    np.testing.assert_allclose(
        [float(s) for s in contrib.get_weight_sparsity()], [0.75, 0.75]
    )
    # The forward pass uses kernel * mask.
    first = model.layers[0]
    masked = first.kernel.numpy() * first.mask.numpy()
    hidden = np.maximum(x @ masked + first.bias.numpy(), 0.0)
    np.testing.assert_allclose(first(x).numpy(), hidden, rtol=1e-5, atol=1e-6)


def test_summaries_tf2(tmp_path):
    pruning.apply_mask(tf.Variable(tf.linspace(1.0, 100.0, 100), name="w"))
    step = tf.Variable(3, dtype=tf.int64)
    p = pruning.Pruning(sparsity=0.25, global_step=step)
    p.mask_update_op()
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        assert p.add_pruning_summaries() is None
    writer.flush()
    tags = {}
    for path in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = float(tf.make_ndarray(value.tensor))
    assert tags["model_pruning_summaries/sparsity"] == 0.25
    assert tags["model_pruning_summaries/last_mask_update_step"] == 3
    assert tags["model_pruning_summaries/mask/sparsity"] == 0.25


def test_registry_as_default_isolates(_fresh_registry):
    weights = tf.Variable(tf.ones([3]))
    pruning.apply_mask(weights)
    inner = registry.PruningRegistry()
    with inner.as_default():
        assert pruning.get_masks() == []
        pruning.apply_mask(tf.Variable(tf.ones([2])))
        assert len(pruning.get_masks()) == 1
    assert len(pruning.get_masks()) == 1
    assert pruning.get_masks()[0].shape == (3,)
    contrib.clear_registry()
    assert pruning.get_masks() == []


# --- Bad input --------------------------------------------------------------


def test_apply_mask_rejects_bad_input_before_creating_anything(graph):
    before = len(tf.compat.v1.global_variables())
    with pytest.raises(TypeError, match=r"Received: x=list"):
        pruning.apply_mask([1.0, 2.0])
    with pytest.raises(TypeError, match="Received: scope=3"):
        pruning.apply_mask(_linspace_variable(), scope=3)
    placeholder = tf.compat.v1.placeholder(tf.float32, [None, 3])
    with pytest.raises(ValueError, match=r"Received: x.shape=\(None, 3\)"):
        pruning.apply_mask(placeholder)
    assert len(tf.compat.v1.global_variables()) == before + 1
    assert pruning.get_masks() == []


def test_apply_mask_rejects_symbolic_tensor_in_tf2():
    @tf.function
    def f(x):
        return pruning.apply_mask(x * 2.0)

    with pytest.raises(TypeError, match="symbolic tensor"):
        f(tf.ones([2]))
    assert pruning.get_masks() == []


def test_pruning_rejects_bad_arguments(graph):
    before = len(tf.compat.v1.global_variables())
    with pytest.raises(TypeError, match="Received: spec='target'"):
        pruning.Pruning(spec="target")
    with pytest.raises(ValueError, match="Received: sparsity=1.5"):
        pruning.Pruning(sparsity=1.5)
    with pytest.raises(TypeError, match="Received: sparsity='half'"):
        pruning.Pruning(sparsity="half")
    with pytest.raises(TypeError, match="Received: global_step=2.5"):
        pruning.Pruning(global_step=2.5)
    assert len(tf.compat.v1.global_variables()) == before


def test_pruning_needs_a_global_step():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Received: global_step=None"):
            pruning.Pruning()
        assert tf.compat.v1.global_variables() == []
    with pytest.raises(ValueError, match="Received: global_step=None"):
        pruning.Pruning()


def test_graph_pruning_used_outside_its_graph(graph):
    p = pruning.Pruning()
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="created in its graph"):
            p.mask_update_op()


def test_misaligned_collections_raise(graph):
    pruning.apply_mask(_linspace_variable())
    tf.compat.v1.add_to_collection(registry.MASK_COLLECTION, tf.ones([1]))
    p = pruning.Pruning()
    with pytest.raises(ValueError, match="not aligned"):
        p.mask_update_op()


def test_pruning_rejects_hparams_contrib_does_not_have(graph, monkeypatch):
    """Fields the library has beyond contrib's must keep their defaults."""
    contrib_only = tuple(f for f in pruning.CONTRIB_HPARAMS if f != "nbins")
    monkeypatch.setattr(pruning, "CONTRIB_HPARAMS", contrib_only)
    pruning.Pruning(pruning.get_pruning_hparams())  # nbins at its default
    before = len(tf.compat.v1.global_variables())
    spec = pruning.get_pruning_hparams().parse("name=other,nbins=100")
    with pytest.raises(ValueError, match="Received: nbins=100"):
        pruning.Pruning(spec)
    assert len(tf.compat.v1.global_variables()) == before
    p = pruning.Pruning(pruning.get_pruning_hparams().parse("name=late"))
    p.spec.nbins = 7  # set after construction: checked when building ops
    with pytest.raises(ValueError, match="Received: nbins=7"):
        p.mask_update_op()
