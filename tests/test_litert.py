"""Tests for the LiteRT path: `inspect_tflite`, `PruneForLatencyOnLiteRT`,
int8 export and the `DensifiedWeightWarning`.

LiteRT runs a fully-connected weight with its sparse kernel only in blocks
of 4 inputs (float32) or 16 (int8); the file says so (sparsity parameters
with a block map, no `DENSIFY` op), which is what these tests read.
"""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import as_numpy

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration


def _mlp(inputs=64, hidden=128, outputs=32):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(outputs, name="out"),
        ]
    )


def _set_masks(pruned):
    """Runs one mask update at the schedule's constant sparsity."""
    mp.Pruning(
        model=pruned, global_step=tf.Variable(1, dtype=tf.int64)
    ).mask_update_op()
    return pruned


def _pruned(model=None, sparsity=0.9, **kwargs):
    return _set_masks(
        mp.prune_low_magnitude(
            _mlp() if model is None else model,
            pruning_schedule=mp.ConstantSparsity(sparsity, 0, frequency=1),
            **kwargs,
        )
    )


def _inputs(samples=16, features=64):
    return (
        np.random.default_rng(0)
        .normal(size=(samples, features))
        .astype("float32")
    )


def _export(pruned, path, **kwargs):
    """Exports and returns the `DensifiedWeightWarning`s raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.export_tflite(pruned, path, **kwargs)
    return [
        w for w in caught if issubclass(w.category, mp.DensifiedWeightWarning)
    ]


def test_blocks_of_four_inputs_run_on_the_sparse_kernel(tmp_path):
    pruned = _pruned(block_size=(4, 1))
    path = tmp_path / "blocks.tflite"
    assert not _export(pruned, path)

    report = mp.inspect_tflite(path, pruned)
    assert [w.name for w in report.weights] == ["hidden/kernel", "out/kernel"]
    for weight in report.weights:
        assert weight.storage == "sparse"
        assert weight.op == "FULLY_CONNECTED"
        assert weight.dtype == "float32"
        # 1x4 blocks of LiteRT's [out, in] layout are Keras' (4, 1).
        assert weight.block == (1, 4)
        assert weight.layer_class == "Dense"
        assert weight.sparsity == pytest.approx(0.9, abs=1e-3)
        assert weight.fix == ""
    assert report.sparse == report.weights
    assert not report.densified
    assert "2 sparse" in str(report)

    stripped = mp.strip_pruning(pruned)
    x = _inputs()
    np.testing.assert_allclose(
        mp.run_tflite(path, x),
        stripped.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    # The stripped model reads the same: its weights with zeros.
    from_stripped = mp.inspect_tflite(path.read_bytes(), stripped)
    assert [w.storage for w in from_stripped.weights] == ["sparse", "sparse"]


def test_unstructured_pruning_is_densified_and_warns_with_the_fix(tmp_path):
    pruned = _pruned()
    path = tmp_path / "unstructured.tflite"
    caught = _export(pruned, path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 of 2 pruned weights will run at dense speed" in message
    assert "hidden/kernel (densified)" in message
    assert "block_size=(4, 1)" in message

    report = mp.inspect_tflite(path, pruned)
    assert [w.storage for w in report.weights] == ["densified"] * 2
    assert report.densified == report.weights
    assert all(w.block == (1, 1) for w in report.weights)
    assert "PruneForLatencyOnLiteRT" in report.weights[0].fix


def test_dense_export_stores_pruned_weights_dense(tmp_path):
    pruned = _pruned(block_size=(4, 1))
    path = tmp_path / "dense.tflite"
    assert not _export(pruned, path, sparse=False)  # only sparse exports warn
    report = mp.inspect_tflite(path, pruned)
    assert [w.storage for w in report.weights] == ["dense", "dense"]
    assert all(w.block is None for w in report.weights)


def test_int8_with_blocks_of_sixteen_is_sparse_small_and_close(tmp_path):
    pruned = _pruned(_mlp(256, 256, 64), block_size=(16, 1))
    x = _inputs(64, 256)
    int8_path = tmp_path / "int8.tflite"
    float_path = tmp_path / "float.tflite"
    assert not _export(
        pruned, int8_path, quantize="int8", representative_data=x
    )
    mp.export_tflite(mp.strip_pruning(pruned), float_path, sparse=False)

    report = mp.inspect_tflite(int8_path, pruned)
    assert [w.storage for w in report.weights] == ["sparse", "sparse"]
    assert all(w.dtype == "int8" for w in report.weights)
    assert all(w.block == (1, 16) for w in report.weights)
    # int8 values (1 byte instead of 4) of 10% of the weights, plus block
    # indices: well under a tenth of the float32 dense file.
    assert os.path.getsize(int8_path) < 0.1 * os.path.getsize(float_path)

    expected = mp.strip_pruning(pruned).predict(x, verbose=0)
    error = np.abs(mp.run_tflite(int8_path, x) - expected).max()
    assert error < 0.05 * np.abs(expected).max()


def test_int8_with_blocks_of_four_is_densified_and_warns(tmp_path):
    pruned = _pruned(block_size=(4, 1))
    caught = _export(
        pruned,
        tmp_path / "int8.tflite",
        quantize="int8",
        representative_data=_inputs(),
    )
    assert len(caught) == 1
    assert "block_size=(16, 1)" in str(caught[0].message)
    assert "XNNPACK" in str(caught[0].message)


def test_layers_litert_cannot_run_sparse_are_named_with_the_reason(
    tmp_path,
):
    inputs = keras.Input((8,), dtype="int32")
    embedded = keras.layers.Embedding(64, 16, name="embed")(inputs)
    image = keras.layers.Reshape((8, 1, 16))(embedded)
    conv = keras.layers.Conv2D(16, 1, name="pointwise")(image)
    model = keras.Model(inputs, keras.layers.Flatten()(conv))
    pruned = _pruned(model, block_size=(4, 1))
    path = tmp_path / "mixed.tflite"
    caught = _export(pruned, path)
    assert len(caught) == 1

    report = {w.layer: w for w in mp.inspect_tflite(path, pruned).weights}
    assert report["pointwise"].storage == "densified"
    assert report["pointwise"].op == "CONV_2D"
    assert "convolution kernels are dense" in report["pointwise"].fix
    assert report["embed"].storage == "dense"
    assert report["embed"].op == "GATHER"
    assert "lookup tables dense" in report["embed"].fix


def test_policy_prunes_dense_layers_in_the_blocks_litert_runs(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((30,)),  # 30 inputs: no whole blocks of 4
            keras.layers.Dense(64, name="odd"),
            keras.layers.Dense(64, name="even"),
        ]
    )
    pruned = _pruned(model, pruning_policy=mp.PruneForLatencyOnLiteRT())
    wrapped = {layer.layer.name: layer for layer in mp.pruned_layers(pruned)}
    assert list(wrapped) == ["even"]
    assert wrapped["even"].block_size == (4, 1)

    int8 = _pruned(
        _mlp(), pruning_policy=mp.PruneForLatencyOnLiteRT(quantize="int8")
    )
    assert [layer.block_size for layer in mp.pruned_layers(int8)] == [
        (16, 1),
        (16, 1),
    ]
    kernel = as_numpy(mp.get_masks(int8)[0])
    blocks = kernel.reshape(4, 16, -1)  # (64 inputs / 16, 16, outputs)
    # Every block of 16 inputs of one output is all kept or all pruned.
    assert np.all(blocks.min(axis=1) == blocks.max(axis=1))

    # A block height that is a multiple of 4 is kept.
    eights = _pruned(
        _mlp(),
        block_size=(8, 1),
        pruning_policy=mp.PruneForLatencyOnLiteRT(),
    )
    assert mp.pruned_layers(eights)[0].block_size == (8, 1)
    path = tmp_path / "eights.tflite"
    assert not _export(eights, path)


def test_policy_rejects_blocks_and_models_litert_cannot_run_sparse():
    policy = mp.PruneForLatencyOnLiteRT()
    with pytest.raises(ValueError) as error:
        mp.prune_low_magnitude(_mlp(), block_size=(2, 2), pruning_policy=policy)
    assert "Layer 'hidden' (Dense)" in str(error.value)
    assert "Received: block_size=(2, 2)" in str(error.value)

    with pytest.raises(ValueError, match="Received: block_size=\\(4, 1\\)"):
        mp.prune_low_magnitude(
            _mlp(),
            block_size=(4, 1),
            pruning_policy=mp.PruneForLatencyOnLiteRT(quantize="int8"),
        )
    with pytest.raises(ValueError, match="Received: sparsity_m_by_n='2:4'"):
        mp.prune_low_magnitude(
            _mlp(), sparsity_m_by_n=(2, 4), pruning_policy=policy
        )
    convolutional = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)]
    )
    with pytest.raises(ValueError, match="would prune nothing"):
        mp.prune_low_magnitude(convolutional, pruning_policy=policy)
    with pytest.raises(ValueError, match="Received: quantize='fp16'"):
        mp.PruneForLatencyOnLiteRT(quantize="fp16")


def test_export_and_inspect_reject_bad_arguments(tmp_path):
    model = _mlp()
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="Received: quantize='int4'"):
        mp.export_tflite(model, path, quantize="int4")
    with pytest.raises(ValueError, match="Received: representative_data=No"):
        mp.export_tflite(model, path, quantize="int8")
    with pytest.raises(ValueError, match="Received: quantize=None"):
        mp.export_tflite(model, path, representative_data=_inputs())
    with pytest.raises(ValueError, match=r"of shape \(0, 64\)"):
        mp.export_tflite(
            model,
            path,
            quantize="int8",
            representative_data=np.zeros((0, 64)),
        )
    assert not os.listdir(tmp_path)

    with pytest.raises(ValueError, match="Received: model='m'"):
        mp.inspect_tflite(b"", "m")
    with pytest.raises(ValueError, match="is not a TFLite flatbuffer"):
        mp.inspect_tflite(b"not a flatbuffer at all", model)
    with pytest.raises(ValueError, match="Received: storage='fast'"):
        mp.litert.LiteRTReport(()).with_storage("fast")


def _transformer_block(sequence=16, width=64, heads=4):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((sequence, width))
    attended = keras.layers.MultiHeadAttention(
        heads, width // heads, name="attention"
    )(inputs, inputs)
    hidden = keras.layers.LayerNormalization(name="norm")(inputs + attended)
    expanded = keras.layers.Dense(4 * width, activation="relu", name="up")(
        hidden
    )
    outputs = keras.layers.Dense(width, name="down")(expanded)
    return keras.Model(inputs, hidden + outputs)


def test_attention_projections_run_sparse_in_blocks_of_their_inputs(
    tmp_path,
):
    pruned = _pruned(
        _transformer_block(), pruning_policy=mp.PruneForLatencyOnLiteRT()
    )
    names = [w.name for w in mp.pruned_weights(pruned)]
    assert names == [
        "attention/query/kernel",
        "attention/key/kernel",
        "attention/value/kernel",
        "attention/attention_output/kernel",
        "up/kernel",
        "down/kernel",
    ]
    # The query kernel [64, 4, 16] is the matrix [64 inputs, 64 outputs]
    # and the output kernel [4, 16, 64] is [64, 64]: blocks of 4 inputs.
    for entry in mp.pruned_weights(pruned)[:4]:
        matrix = as_numpy(entry.mask).reshape(64, 64)
        blocks = matrix.reshape(16, 4, 64)
        assert np.all(blocks.min(axis=1) == blocks.max(axis=1)), entry.name
        assert np.mean(matrix == 0) == pytest.approx(0.9, abs=1e-3)

    path = tmp_path / "block.tflite"
    assert not _export(pruned, path)
    report = mp.inspect_tflite(path, pruned)
    assert [w.storage for w in report.weights] == ["sparse"] * 6
    assert {w.op for w in report.weights} == {"FULLY_CONNECTED"}
    assert {w.layer_class for w in report.weights} == {"EinsumDense", "Dense"}

    x = np.random.default_rng(0).normal(size=(2, 16, 64)).astype("float32")
    expected = mp.strip_pruning(pruned).predict(x, verbose=0)
    np.testing.assert_allclose(
        mp.run_tflite(path, x), expected, rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_policy_prunes_a_kerashub_bert_so_its_projections_run_sparse(
    tmp_path,
):
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
    )
    classifier = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    pruned = _pruned(classifier, pruning_policy=mp.PruneForLatencyOnLiteRT())
    names = [w.name for w in mp.pruned_weights(pruned)]
    # Wrapped whole: the embeddings are left out, every projection and
    # feed-forward kernel of both layers, the pooler and the head pruned.
    assert len(names) == 14
    assert not [n for n in names if "embedding" in n]
    assert sum("self_attention_layer" in n for n in names) == 8

    path = tmp_path / "bert.tflite"
    assert not _export(pruned, path)
    report = mp.inspect_tflite(path, pruned)
    assert [w.storage for w in report.weights] == ["sparse"] * 14


def test_policy_prunes_lstm_kernels_that_run_sparse_when_unrolled(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 32)),
            keras.layers.LSTM(32, unroll=True, name="lstm"),
            keras.layers.Dense(16, name="out"),
        ]
    )
    pruned = _pruned(model, pruning_policy=mp.PruneForLatencyOnLiteRT())
    names = [w.name for w in mp.pruned_weights(pruned)]
    assert names == [
        "lstm/lstm_cell/kernel",
        "lstm/lstm_cell/recurrent_kernel",
        "out/kernel",
    ]
    assert {layer.block_size for layer in mp.pruned_layers(pruned)} == {(4, 1)}

    path = tmp_path / "lstm.tflite"
    assert not _export(pruned, path)
    report = mp.inspect_tflite(path, pruned)
    assert [w.storage for w in report.weights] == ["sparse"] * 3
    assert {w.op for w in report.weights} == {"FULLY_CONNECTED"}

    x = np.random.default_rng(0).normal(size=(2, 6, 32)).astype("float32")
    expected = mp.strip_pruning(pruned).predict(x, verbose=0)
    np.testing.assert_allclose(
        mp.run_tflite(path, x), expected, rtol=1e-4, atol=1e-4
    )


def test_a_kernel_scaled_by_folded_batch_norm_is_found_by_its_zeros(
    tmp_path,
):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 16))
    conv = keras.layers.Conv2D(32, 1, use_bias=False, name="pointwise")
    norm = keras.layers.BatchNormalization(name="norm")
    model = keras.Model(inputs, norm(conv(inputs)))
    rng = np.random.default_rng(0)
    norm.gamma.assign(rng.uniform(0.5, 2.0, 32).astype("float32"))
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, 32).astype("float32"))
    pruned = _pruned(model, block_size=(4, 1))
    path = tmp_path / "folded.tflite"
    _export(pruned, path)

    (weight,) = mp.inspect_tflite(path, pruned).weights
    # The file holds kernel * gamma / sqrt(variance): other sums, same zeros.
    assert weight.name == "pointwise/kernel"
    assert weight.storage == "densified"
    assert weight.op == "CONV_2D"
    assert "convolution kernels are dense" in weight.fix
