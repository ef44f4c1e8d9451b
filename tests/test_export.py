"""Tests for `export_saved_model`, `export_tflite` and `run_tflite`."""

import os
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import as_numpy
from reference import expected_kept

import model_pruning as mp
from model_pruning import export

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

_FORBIDDEN = ("mask", "threshold", "last_mask_update_step")


def _dense_model():
    """64 -> Dense 256 relu -> Dense 10."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def _pruned(sparsity=0.9):
    """A pruned `_dense_model` whose masks are set to `sparsity` at once."""
    pruned = mp.prune_low_magnitude(
        _dense_model(),
        pruning_schedule=mp.ConstantSparsity(
            sparsity, begin_step=0, frequency=1
        ),
    )
    mp.Pruning(
        model=pruned, global_step=tf.Variable(1, dtype=tf.int64)
    ).mask_update_op()
    for mask in mp.get_masks(pruned):
        assert np.count_nonzero(as_numpy(mask)) == expected_kept(
            mask.shape[0] * mask.shape[1], sparsity
        )
    return pruned


def _inputs(samples=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(samples, 64)).astype("float32")


def _tree_size(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def test_saved_model_strips_and_matches_the_keras_model(tmp_path):
    pruned = _pruned()
    masks = [as_numpy(m).copy() for m in mp.get_masks(pruned)]
    x = _inputs()
    expected = pruned.predict(x, verbose=0)

    path = tmp_path / "saved_model"
    size = export.export_saved_model(pruned, path)
    assert size > 0
    assert size == _tree_size(path)

    served = tf.saved_model.load(str(path))
    names = [v.name for v in served.variables]
    assert len(names) == 4
    assert not [n for n in names if any(w in n for w in _FORBIDDEN)]
    kernels = [v.numpy() for v in served.variables if "kernel" in v.name]
    for kernel, mask in zip(kernels, masks, strict=True):
        assert np.all(kernel[mask == 0] == 0.0)
    got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

    # Exporting left the pruned model as it was.
    assert len(mp.pruned_layers(pruned)) == 2
    for mask, now in zip(masks, mp.get_masks(pruned), strict=True):
        assert np.array_equal(mask, as_numpy(now))


def test_sparse_tflite_is_smaller_and_both_match_the_keras_model(tmp_path):
    pruned = _pruned(0.9)
    x = _inputs()
    expected = pruned.predict(x, verbose=0)

    sparse_path = tmp_path / "sparse.tflite"
    dense_path = tmp_path / "nested" / "dense.tflite"
    sparse_size = export.export_tflite(pruned, sparse_path)
    dense_size = export.export_tflite(pruned, dense_path, sparse=False)
    assert sparse_size == os.path.getsize(sparse_path) > 0
    assert dense_size == os.path.getsize(dense_path) > 0
    # 90% of the 64 x 256 + 256 x 10 kernel entries are zeros.
    assert sparse_size < dense_size / 2

    for path in (sparse_path, dense_path):
        got = export.run_tflite(path, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    from_bytes = export.run_tflite(sparse_path.read_bytes(), x[:3])
    np.testing.assert_allclose(from_bytes, expected[:3], rtol=0, atol=1e-5)


def test_unpruned_model_exports_without_a_warning(tmp_path):
    model = _dense_model()
    x = _inputs(4)
    expected = model.predict(x, verbose=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no pruned layers")
        export.export_saved_model(model, tmp_path / "saved_model")
        export.export_tflite(model, tmp_path / "model.tflite")
    got = export.run_tflite(str(tmp_path / "model.tflite"), x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_run_tflite_falls_back_to_tf_lite_quietly(tmp_path, monkeypatch):
    model = _dense_model()
    x = _inputs(2)
    path = tmp_path / "model.tflite"
    export.export_tflite(model, path)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = export.run_tflite(path, x)
    assert not [w for w in caught if "Interpreter" in str(w.message)]
    np.testing.assert_allclose(
        got, model.predict(x, verbose=0), rtol=0, atol=1e-5
    )


def test_run_tflite_rejects_two_inputs(tmp_path):
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    path = tmp_path / "two.tflite"
    export.export_tflite(model, path)
    with pytest.raises(ValueError, match="Received: a model with 2 inputs"):
        export.run_tflite(path, np.zeros((1, 3), "float32"))


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="Received: model='model'"):
        export.export_saved_model("model", tmp_path / "saved_model")
    with pytest.raises(ValueError, match="Received: model=None"):
        export.export_tflite(None, tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="Received: sparse='yes'"):
        export.export_tflite(_dense_model(), tmp_path / "m.tflite", "yes")
    with pytest.raises(ValueError, match="Received: select_tf_ops=1"):
        export.export_tflite(
            _dense_model(), tmp_path / "m.tflite", select_tf_ops=1
        )
    assert not os.listdir(tmp_path)
