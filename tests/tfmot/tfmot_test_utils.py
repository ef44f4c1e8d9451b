"""Helpers shared by the ported tfmot tests, as tfmot's own `test_utils`
and `keras/test_utils` modules serve its tests (rewritten, not copied)."""

import shutil
import tempfile

import keras
import numpy as np

import model_pruning as mp


def mkdtemp(test_case):
    """`tempfile.mkdtemp()` as tfmot, removed when the test ends (absl's
    `create_tempdir` needs flags that pytest does not parse)."""
    path = tempfile.mkdtemp()
    test_case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def build_simple_dense_model():
    """tfmot's `keras_test_utils.build_simple_dense_model`."""
    return keras.Sequential(
        [
            keras.Input(shape=(10,)),  # Keras 3: an Input, not `input_shape=`
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )


def sublayers(model):
    """tfmot's `model.submodules`: every sublayer at any depth.

    Keras 3 layers have no `submodules`; `_flatten_layers` lists nested
    models and wrapped layers too.
    """
    return model._flatten_layers(include_self=False, recursive=True)


def prunable_weights(wrapper):
    """The weights a wrapper prunes.

    model_pruning: the wrapper lists them (tfmot's registry gives built-in
    layers a `get_prunable_weights()` method instead).
    """
    return [entry.weight for entry in wrapper.pruned_weights]


def get_sparsity(weights):
    return 1.0 - np.count_nonzero(weights) / float(weights.size)


def assert_model_sparsity(test_case, sparsity, model, rtol=1e-6, atol=1e-6):
    """tfmot's `test_utils.assert_model_sparsity`: every prunable weight of
    a top-level wrapper has `sparsity`."""
    for layer in model.layers:
        if isinstance(layer, mp.PruneLowMagnitude):
            for weight in prunable_weights(layer):
                test_case.assertAllClose(
                    sparsity,
                    # Keras 3: `convert_to_numpy` for `K.get_value`.
                    get_sparsity(keras.ops.convert_to_numpy(weight)),
                    rtol=rtol,
                    atol=atol,
                )
