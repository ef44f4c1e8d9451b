"""Tests of `save_sparse_weights` and `load_sparse_weights` on pruned models."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import as_numpy

import model_pruning as mp
from model_pruning.sparse_formats import encode_bitmask
from model_pruning.sparse_formats import encode_csrc
from model_pruning.sparse_io import load_sparse_weights
from model_pruning.sparse_io import save_sparse_weights

_CASES = [
    ("auto", 4),
    ("auto", 5),
    ("bitmask", 4),
    ("csr", 4),
    ("csr", 5),
]


def _mlp(last_units=10):
    """128 -> Dense 512 relu -> Dense 256 relu -> Dense `last_units`."""
    dense = lambda units, **kw: keras.layers.Dense(  # noqa: E731
        units, bias_initializer="random_normal", **kw
    )
    return keras.Sequential(
        [
            keras.Input((128,)),
            dense(512, activation="relu"),
            dense(256, activation="relu"),
            dense(last_units),
        ]
    )


@pytest.fixture(scope="module")
def models():
    """A model pruned to 90% (masks forced once) and its stripped copy."""
    keras.utils.set_random_seed(42)
    pruned = mp.prune_low_magnitude(
        _mlp(),
        pruning_schedule=mp.ConstantSparsity(0.9, begin_step=0, frequency=1),
    )
    pruned.compile(optimizer="sgd", loss="mse")
    step = tf.Variable(1, dtype=tf.int64)
    mp.Pruning(model=pruned, global_step=step).mask_update_op()
    return pruned, mp.strip_pruning(pruned)


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).normal(size=(16, 128)).astype("float32")


def _numpy_weights(model):
    return [as_numpy(w) for w in model.weights]


def _assert_bit_identical(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert np.array_equal(a.view(np.uint32), e.view(np.uint32))


def _header(path):
    with np.load(path) as archive:
        return json.loads(archive["header"].tobytes())


def _dense_bytes(model):
    return sum(w.nbytes for w in _numpy_weights(model))


def test_stripped_model_is_90_percent_sparse(models):
    _, stripped = models
    kernels = [w for w in _numpy_weights(stripped) if w.ndim == 2]
    for kernel in kernels:
        assert np.mean(kernel == 0) == pytest.approx(0.9, abs=1e-4)


@pytest.mark.parametrize("format, index_bits", _CASES)
def test_round_trip_is_bit_identical(
    models, inputs, tmp_path, format, index_bits
):
    _, stripped = models
    path = tmp_path / "weights.npz"
    size = save_sparse_weights(
        stripped, path, format=format, index_bits=index_bits
    )
    assert size == path.stat().st_size
    target = keras.models.clone_model(stripped)
    load_sparse_weights(target, path)
    _assert_bit_identical(_numpy_weights(target), _numpy_weights(stripped))
    np.testing.assert_array_equal(
        as_numpy(target(inputs)), as_numpy(stripped(inputs))
    )


def test_pruned_model_is_stripped_before_saving(models, tmp_path):
    pruned, stripped = models
    path = tmp_path / "weights.npz"
    save_sparse_weights(pruned, path)
    entries = _header(path)["weights"]
    assert [e["path"] for e in entries] == [w.path for w in stripped.weights]
    target = keras.models.clone_model(stripped)
    load_sparse_weights(target, path)
    _assert_bit_identical(_numpy_weights(target), _numpy_weights(stripped))


def test_file_at_90_percent_is_under_15_percent_of_dense(models, tmp_path):
    _, stripped = models
    dense = _dense_bytes(stripped)
    sizes = {
        format: save_sparse_weights(stripped, tmp_path / format, format=format)
        for format in ("auto", "bitmask", "csr")
    }
    assert sizes["auto"] < 0.15 * dense
    assert sizes["bitmask"] < 0.15 * dense
    assert sizes["auto"] <= min(sizes["bitmask"], sizes["csr"])


@pytest.mark.parametrize("index_bits", [4, 5])
@pytest.mark.parametrize("quantize", [False, True])
def test_auto_picks_the_smallest_format_per_weight(
    models, tmp_path, index_bits, quantize
):
    _, stripped = models
    path = tmp_path / "weights.npz"
    save_sparse_weights(
        stripped, path, index_bits=index_bits, quantize=quantize
    )
    for entry, weight in zip(
        _header(path)["weights"], _numpy_weights(stripped), strict=True
    ):
        sizes = {
            "dense": weight.nbytes,
            "bitmask": encode_bitmask(weight, quantize=quantize).nbytes,
            "csr": encode_csrc(weight, index_bits, quantize=quantize).nbytes,
        }
        assert entry["format"] == min(sizes, key=sizes.get)
    formats = [e["format"] for e in _header(path)["weights"]]
    assert formats[0::2] != ["dense"] * 3  # kernels are stored sparse


@pytest.mark.parametrize("format", ["auto", "bitmask", "csr"])
def test_quantized_round_trip_within_tolerance(
    models, inputs, tmp_path, format
):
    _, stripped = models
    path = tmp_path / "weights.npz"
    size = save_sparse_weights(stripped, path, format=format, quantize=True)
    assert size < 0.08 * _dense_bytes(stripped)
    target = keras.models.clone_model(stripped)
    load_sparse_weights(target, path)
    entries = _header(path)["weights"]
    for entry, loaded, original in zip(
        entries, _numpy_weights(target), _numpy_weights(stripped), strict=True
    ):
        assert loaded.dtype == original.dtype
        zeros = original == 0
        assert np.array_equal(loaded[zeros].view(np.uint32), original[zeros])
        if entry["scale"] is None:
            assert entry["format"] == "dense"
            np.testing.assert_array_equal(loaded, original)
            continue
        bound = entry["scale"] / 2 + np.spacing(np.abs(original).max())
        assert np.abs(loaded - original).max() <= bound
    np.testing.assert_allclose(
        as_numpy(target(inputs)), as_numpy(stripped(inputs)), atol=0.05
    )


class _Counter(keras.layers.Layer):
    """Identity layer with an int32 weight, to check non-float weights."""

    def build(self, input_shape):
        self.count = self.add_weight(
            shape=(5,), dtype="int32", initializer="zeros", trainable=False
        )

    def call(self, inputs):
        return inputs


def test_integer_weights_stay_exact_when_quantizing(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), _Counter()]
    )
    model.layers[-1].count.assign([0, 7, 0, 0, -3])
    path = tmp_path / "weights.npz"
    save_sparse_weights(model, path, format="csr", quantize=True)
    entries = _header(path)["weights"]
    assert entries[-1]["dtype"] == "int32"
    assert entries[-1]["scale"] is None
    target = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), _Counter()]
    )
    load_sparse_weights(target, path)
    np.testing.assert_array_equal(
        as_numpy(target.layers[-1].count), [0, 7, 0, 0, -3]
    )


@pytest.mark.parametrize("format", ["auto", "bitmask", "csr"])
def test_bfloat16_model_round_trip(tmp_path, format):
    def model():
        return keras.Sequential(
            [
                keras.Input((16,)),
                keras.layers.Dense(
                    32, dtype="bfloat16", bias_initializer="random_normal"
                ),
            ]
        )

    source = model()
    kernel = as_numpy(source.layers[0].kernel)
    kernel[np.abs(kernel.astype(np.float32)) < 0.2] = 0
    source.layers[0].kernel.assign(kernel)
    path = tmp_path / "weights.npz"
    save_sparse_weights(source, path, format=format)
    assert [e["dtype"] for e in _header(path)["weights"]] == ["bfloat16"] * 2
    target = model()
    load_sparse_weights(target, path)
    for loaded, original in zip(
        _numpy_weights(target), _numpy_weights(source), strict=True
    ):
        assert loaded.dtype == original.dtype
        assert np.array_equal(loaded.view(np.uint16), original.view(np.uint16))


def test_mismatched_architecture_raises_and_changes_nothing(models, tmp_path):
    _, stripped = models
    path = tmp_path / "weights.npz"
    save_sparse_weights(stripped, path)
    # Same first two layers, so only a check before assigning anything
    # leaves them untouched.
    target = _mlp(last_units=12)
    before = _numpy_weights(target)
    with pytest.raises(ValueError, match=r"Weight 4 .*\(256, 12\)"):
        load_sparse_weights(target, path)
    _assert_bit_identical(_numpy_weights(target), before)


def test_fewer_weights_raise_and_change_nothing(models, tmp_path):
    _, stripped = models
    path = tmp_path / "weights.npz"
    save_sparse_weights(stripped, path)
    target = keras.Sequential(
        [keras.Input((128,)), keras.layers.Dense(512, activation="relu")]
    )
    before = _numpy_weights(target)
    with pytest.raises(ValueError, match="holds 6 weights but `model` has 2"):
        load_sparse_weights(target, path)
    _assert_bit_identical(_numpy_weights(target), before)


def test_loading_into_a_pruned_model_raises(models, tmp_path):
    pruned, stripped = models
    path = tmp_path / "weights.npz"
    save_sparse_weights(stripped, path)
    with pytest.raises(ValueError, match="strip_pruning"):
        load_sparse_weights(pruned, path)


def test_bad_arguments(models, tmp_path):
    _, stripped = models
    path = tmp_path / "weights.npz"
    with pytest.raises(ValueError, match="format='coo'"):
        save_sparse_weights(stripped, path, format="coo")
    with pytest.raises(ValueError, match="index_bits=3"):
        save_sparse_weights(stripped, path, index_bits=3)
    with pytest.raises(TypeError, match="quantize=1"):
        save_sparse_weights(stripped, path, quantize=1)
    with pytest.raises(TypeError, match="model="):
        save_sparse_weights("model", path)
    with pytest.raises(TypeError, match="model="):
        load_sparse_weights(None, path)
    assert not path.exists()


def test_not_a_sparse_weights_file(models, tmp_path):
    _, stripped = models
    path = tmp_path / "other.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(ValueError, match="not a file written by"):
        load_sparse_weights(stripped, path)
