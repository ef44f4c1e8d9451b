"""End-to-end tests of the pruning API: tfmot's integration cases.

Cases ported from tensorflow/model-optimization, Apache-2.0, file
tensorflow_model_optimization/python/core/sparsity/keras/
prune_integration_test.py, commit b0eea48a00ebfbe2f93235d28a02e1b26aad8cbb
(the newest version stored: `sparsity_m_by_n` with DepthwiseConv2D,
MultiHeadAttention, tfmot's Keras-2 compat module). Each test mirrors one
tfmot test (same name, inputs, numbers and assertions); the code, including
the helpers tfmot takes from its `test_utils` modules, is our own.
"""

import glob
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tfmot_test_utils
from absl.testing import parameterized

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

layers = keras.layers


# Helpers (tfmot's `test_utils` and `keras/test_utils`, written anew).


def _named(options):
    """`named_parameters` arguments: one case per option, named after it."""
    return [(name, name) for name in options]


def _is_model_sparsity_not(sparsity, model):
    """Whether some prunable weight of a top-level wrapper is not at
    `sparsity`."""
    for layer in model.layers:
        if isinstance(layer, mp.PruneLowMagnitude):
            for weight in tfmot_test_utils.prunable_weights(layer):
                value = keras.ops.convert_to_numpy(weight)  # Keras 3
                if sparsity != tfmot_test_utils.get_sparsity(value):
                    return True
    return False


def _is_pruned_m_by_n(weight, m_by_n=(2, 4)):
    """Whether every `n` consecutive input-channel values (the last axis in
    TFLite's layout: Dense `[out, in]`, Conv2D `[out, h, w, in]`) hold at
    most `n - m` non-zeros; a last, shorter group counts the same way."""
    num_zeros, num_elem = m_by_n
    if num_zeros > num_elem:
        raise ValueError(f"m_by_n={m_by_n}: m must not exceed n")
    values = keras.ops.convert_to_numpy(weight)
    if values.ndim == 2:
        rows = values.T
    elif values.ndim == 4:
        rows = np.transpose(values, (3, 0, 1, 2)).reshape(-1, values.shape[2])
    else:
        raise ValueError(f"weight of shape {values.shape} is not supported")
    for row in rows:
        for start in range(0, row.shape[0], num_elem):
            group = row[start : start + num_elem]
            if np.count_nonzero(group) > num_elem - num_zeros:
                return False
    return True


def _assert_model_sparsity_m_by_n(test_case, model, m_by_n=(2, 4)):
    for layer in model.layers:
        if isinstance(layer, mp.PruneLowMagnitude):
            for weight in tfmot_test_utils.prunable_weights(layer):
                test_case.assertTrue(_is_pruned_m_by_n(weight, m_by_n))


def _build_mnist_layer_list():
    # Keras 3: no input_shape= on the first Conv2D; the models below start
    # with keras.Input(shape=(28, 28, 1)).
    return [
        layers.Conv2D(32, 5, padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        layers.BatchNormalization(),
        layers.Conv2D(64, 5, padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        layers.Flatten(),
        layers.Dense(1024, activation="relu"),
        layers.Dropout(0.4),
        layers.Dense(10, activation="softmax"),
    ]


def _build_mnist_sequential_model():
    return keras.Sequential(
        [keras.Input(shape=(28, 28, 1))] + _build_mnist_layer_list()
    )


def _build_mnist_functional_model():
    inp = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 5, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D((2, 2), (2, 2), padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D((2, 2), (2, 2), padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model([inp], [out])


def _build_mnist_layerwise_pruned_model(pruning_params):
    if pruning_params is None:
        raise ValueError("pruning_params should be provided.")
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),  # Keras 3: not input_shape=
            mp.prune_low_magnitude(
                layers.Conv2D(32, 5, padding="same", activation="relu"),
                **pruning_params,
            ),
            layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
            layers.BatchNormalization(),
            mp.prune_low_magnitude(
                layers.Conv2D(64, 5, padding="same", activation="relu"),
                **pruning_params,
            ),
            layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
            layers.Flatten(),
            mp.prune_low_magnitude(
                layers.Dense(1024, activation="relu"), **pruning_params
            ),
            layers.Dropout(0.4),
            mp.prune_low_magnitude(
                layers.Dense(10, activation="softmax"), **pruning_params
            ),
        ]
    )


def _build_mnist_model(model_type, pruning_params=None):
    # tfmot builds all four and picks one; building only the one asked for
    # gives the same model.
    return {
        "sequential": _build_mnist_sequential_model,
        "functional": _build_mnist_functional_model,
        "layer_list": _build_mnist_layer_list,
        "layer_wise": lambda: _build_mnist_layerwise_pruned_model(
            pruning_params
        ),
    }[model_type]()


def _model_type_keys():
    return ["sequential", "functional", "layer_list", "layer_wise"]


def _save_restore_keras_model(model):
    # Keras 3: `.keras`, not `.h5`.
    keras_file = os.path.join(tempfile.mkdtemp(), "model.keras")
    keras.models.save_model(model, keras_file)
    with mp.prune_scope():
        loaded_model = keras.models.load_model(keras_file)
    return loaded_model


def _save_restore_tf_model(model):
    # Keras 3: no TF SavedModel format that `load_model` reads back; the TF
    # format's counterpart is a `tf.train.Checkpoint` of the model and its
    # optimizer, read into the model recreated from its config.
    prefix = os.path.join(tempfile.mkdtemp(), "ckpt")
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(prefix)
    with mp.prune_scope():
        loaded_model = model.__class__.from_config(model.get_config())
    loaded_model.compile(
        loss=model.loss,
        optimizer=model.optimizer.__class__.from_config(
            model.optimizer.get_config()
        ),
        metrics=["accuracy"],
    )
    loaded_model.optimizer.build(loaded_model.trainable_variables)
    tf.train.Checkpoint(
        model=loaded_model, optimizer=loaded_model.optimizer
    ).read(prefix).assert_existing_objects_matched()
    return loaded_model


def _save_restore_fns():
    return [
        ("SaveRestoreKerasModel", _save_restore_keras_model),
        ("SaveRestoreTfModel", _save_restore_tf_model),
    ]


def _write_tf_weights(model):
    # Keras 3: save_weights('x.tf') is gone; the TF-format weights file is a
    # tf.train.Checkpoint of the model.
    prefix = os.path.join(tempfile.mkdtemp(), "weights")
    return tf.train.Checkpoint(model=model).write(prefix)


def _read_tf_weights(model, path):
    # Keras 3: load_weights of a TF-format file, as a tf.train.Checkpoint.
    tf.train.Checkpoint(model=model).read(path)


def _latest_checkpoint(checkpoint_dir):
    # Keras 3: tf.train.latest_checkpoint does not see `.weights.h5` files.
    return max(
        glob.glob(os.path.join(checkpoint_dir, "*.weights.h5")),
        key=os.path.getmtime,
    )


class _ModelCompare:
    """Comparisons of two models' trainable weights (tfmot's mixin)."""

    def _assert_weights_different_objects(self, model1, model2):
        self.assertEqual(
            len(model1.trainable_weights), len(model2.trainable_weights)
        )
        for w1, w2 in zip(
            model1.trainable_weights, model2.trainable_weights, strict=True
        ):
            self.assertNotEqual(id(w1), id(w2))

    def _assert_weights_same_values(self, model1, model2):
        self.assertEqual(
            len(model1.trainable_weights), len(model2.trainable_weights)
        )
        # Keras 3: not keras.backend.batch_get_value
        values1 = [
            keras.ops.convert_to_numpy(w) for w in model1.trainable_weights
        ]
        values2 = [
            keras.ops.convert_to_numpy(w) for w in model2.trainable_weights
        ]
        for w1, w2 in zip(values1, values2, strict=True):
            self.assertAllClose(w1, w2)

    def _assert_weights_different_values(self, model1, model2):
        self.assertEqual(
            len(model1.trainable_weights), len(model2.trainable_weights)
        )
        values1 = [
            keras.ops.convert_to_numpy(w) for w in model1.trainable_weights
        ]
        values2 = [
            keras.ops.convert_to_numpy(w) for w in model2.trainable_weights
        ]
        for w1, w2 in zip(values1, values2, strict=True):
            self.assertNotAllClose(w1, w2)


# Keras 3: tfmot reads these from its registry's `_LAYERS_WEIGHTS_MAP` (the
# layers with weights, less Conv2DTranspose and Conv3DTranspose, in the
# map's order); written out here by name, since Keras 3 has no
# LocallyConnected1D/2D classes to list.
_PRUNABLE_LAYERS = [
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Dense",
    "Embedding",
    "LocallyConnected1D",
    "LocallyConnected2D",
    "MultiHeadAttention",
]

# tfmot: `PruneRegistry._RNN_LAYERS - {keras.layers.RNN}`.
_RNN_LAYERS = ["GRU", "LSTM", "SimpleRNN"]


class PruneIntegrationTest(
    tf.test.TestCase, parameterized.TestCase, _ModelCompare
):
    # Keras 3: tfmot runs each test in every Keras execution mode
    # (`keras_parameterized.run_all_keras_modes`); these run in the default.

    def _batch(self, dims, batch_size):
        """Returns `dims` with a `None` batch size replaced by
        `batch_size`."""
        dims = list(dims)  # Keras 3: shapes are tuples.
        if dims[0] is None:
            dims[0] = batch_size
        return dims

    def _get_params_for_layer(self, layer_type):
        """Returns `([constructor args], input_shape)` for a layer type."""
        return {
            "Conv1D": ([4, 2], (3, 6)),
            "Conv2D": ([4, (2, 2)], (4, 6, 1)),
            # tfmot leaves Conv2DTranspose ([2, (3, 3)], (7, 6, 3)) and
            # Conv3DTranspose ([2, (3, 3, 3)], (5, 7, 6, 3)) out: their
            # weights became NaN in some eager modes.
            "Conv3D": ([2, (3, 3, 3)], (5, 7, 6, 3)),
            "SeparableConv1D": ([4, 3], (3, 6)),
            "SeparableConv2D": ([4, (2, 2)], (4, 6, 1)),
            "Dense": ([4], (6,)),
            "LocallyConnected1D": ([4, 2], (3, 6)),
            "LocallyConnected2D": ([4, (2, 2)], (4, 6, 1)),
            # Embedding has a separate test since training it is not
            # feasible as a single layer.
            "Embedding": (None, None),
            # MultiHeadAttention layer has a separate test
            "MultiHeadAttention": (None, None),
        }[layer_type]

    def setUp(self):
        super().setUp()
        self.params = {
            "pruning_schedule": mp.ConstantSparsity(0.5, 0, -1, 1),
            "block_size": (1, 1),
            "block_pooling_type": "AVG",
        }

    def _check_strip_pruning_matches_original(
        self, model, sparsity, input_data=None
    ):
        tfmot_test_utils.assert_model_sparsity(self, sparsity, model)
        stripped_model = mp.strip_pruning(model)

        if input_data is None:
            input_data = np.random.randn(
                # Keras 3: a Sequential model has `inputs`, not `input`.
                *self._batch(model.inputs[0].shape, 1)
            )

        model_result = model.predict(input_data)
        stripped_model_result = stripped_model.predict(input_data)
        np.testing.assert_almost_equal(model_result, stripped_model_result)

    def _is_pruned(self, model):
        for layer in model.layers:
            if isinstance(layer, mp.PruneLowMagnitude):
                return True

    def _train_model(
        self, model, epochs=1, x_train=None, y_train=None, callbacks=None
    ):
        if x_train is None:
            # A one-element tuple, as in tfmot (its trailing comma); Keras 3
            # warns that the input structure differs and unpacks it.
            x_train = (np.random.rand(20, 10),)
        if y_train is None:
            y_train = keras.utils.to_categorical(
                np.random.randint(5, size=(20, 1)), 5
            )

        # Keras 3: an uncompiled model has no `optimizer` attribute.
        if getattr(model, "optimizer", None) is None:
            model.compile(
                loss="categorical_crossentropy",
                optimizer="sgd",
                metrics=["accuracy"],
            )

        if callbacks is None:
            callbacks = []
            if self._is_pruned(model):
                callbacks = [mp.UpdatePruningStep()]

        model.fit(
            x_train,
            y_train,
            epochs=epochs,
            batch_size=20,
            callbacks=callbacks,
        )

    def _get_pretrained_model(self):
        model = tfmot_test_utils.build_simple_dense_model()
        self._train_model(model, epochs=1)
        return model

    ###################################################################
    # Sanity checks and special cases for training with pruning.

    def testPrunesZeroSparsity_IsNoOp(self):
        model = tfmot_test_utils.build_simple_dense_model()

        model2 = tfmot_test_utils.build_simple_dense_model()
        model2.set_weights(model.get_weights())

        params = self.params
        params["pruning_schedule"] = mp.ConstantSparsity(
            target_sparsity=0, begin_step=0, frequency=1
        )
        pruned_model = mp.prune_low_magnitude(model2, **params)

        x_train = (np.random.rand(20, 10),)  # A tuple, as in tfmot.
        y_train = keras.utils.to_categorical(
            np.random.randint(5, size=(20, 1)), 5
        )

        self._train_model(model, epochs=1, x_train=x_train, y_train=y_train)
        self._train_model(
            pruned_model, epochs=1, x_train=x_train, y_train=y_train
        )

        self._assert_weights_different_objects(model, pruned_model)
        self._assert_weights_same_values(model, pruned_model)

    def testPruneWithHighSparsity(self):
        params = self.params
        params["pruning_schedule"] = mp.ConstantSparsity(
            target_sparsity=0.99, begin_step=0, frequency=1
        )

        model = mp.prune_low_magnitude(
            tfmot_test_utils.build_simple_dense_model(), **params
        )
        self._train_model(model, epochs=1)
        for layer in model.layers:
            if isinstance(layer, mp.PruneLowMagnitude):
                # model_pruning: not layer.layer.get_prunable_weights()
                for weight in tfmot_test_utils.prunable_weights(layer):
                    value = keras.ops.convert_to_numpy(weight)  # Keras 3
                    # Differs from tfmot: tfmot keeps at least one weight
                    # (k = max(round(n * (1 - s)), 1)); a target that leaves
                    # fewer than one weight masks the whole tensor here.
                    # The first kernel (80 weights) keeps round(0.8) = 1,
                    # the second (40 weights) round(0.4) = 0.
                    expected = 1 if round(value.size * 0.01) >= 1 else 0
                    self.assertEqual(expected, np.count_nonzero(value))

    ###################################################################
    # Tests for training with pruning with pretrained models or weights.

    def testPrunePretrainedModel_RemovesOptimizer(self):
        model = self._get_pretrained_model()

        self.assertIsNotNone(model.optimizer)
        pruned_model = mp.prune_low_magnitude(model, **self.params)
        # Keras 3: an uncompiled model has no `optimizer` attribute.
        self.assertIsNone(getattr(pruned_model, "optimizer", None))

    def testPrunePretrainedModel_PreservesWeightObjects(self):
        model = self._get_pretrained_model()

        pruned_model = mp.prune_low_magnitude(model, **self.params)
        # Differs from tfmot: pruning a model builds a new one from copies
        # of its layers (the model passed in is never changed), so the
        # weights are new variables holding the same values; tfmot wraps
        # the original layers and asserts the same objects.
        self._assert_weights_different_objects(model, pruned_model)
        self._assert_weights_same_values(model, pruned_model)

    def testPrunePretrainedModel_SameInferenceWithoutTraining(self):
        model = self._get_pretrained_model()
        pruned_model = mp.prune_low_magnitude(model, **self.params)

        input_data = np.random.rand(10, 10)

        out = model.predict(input_data)
        pruned_out = pruned_model.predict(input_data)

        self.assertTrue((out == pruned_out).all())

    def testLoadTFWeightsThenPrune_SameInferenceWithoutTraining(self):
        model = self._get_pretrained_model()

        tf_weights = _write_tf_weights(model)  # Keras 3

        # load weights into model then prune.
        same_architecture_model = tfmot_test_utils.build_simple_dense_model()
        _read_tf_weights(same_architecture_model, tf_weights)  # Keras 3
        pruned_model = mp.prune_low_magnitude(
            same_architecture_model, **self.params
        )

        input_data = np.random.rand(10, 10)

        out = model.predict(input_data)
        pruned_out = pruned_model.predict(input_data)

        self.assertTrue((out == pruned_out).all())

    # Test this and _DifferentInferenceWithoutTraining
    # because pruning and then loading pretrained weights
    # is unusual behavior and extra coverage is safer.
    def testPruneThenLoadTFWeights_DoesNotPreserveWeights(self):
        model = self._get_pretrained_model()

        tf_weights = _write_tf_weights(model)  # Keras 3

        # load weights into pruned model.
        same_architecture_model = tfmot_test_utils.build_simple_dense_model()
        pruned_model = mp.prune_low_magnitude(
            same_architecture_model, **self.params
        )
        _read_tf_weights(pruned_model, tf_weights)  # Keras 3

        self._assert_weights_different_values(model, pruned_model)

    def testPruneThenLoadTFWeights_DifferentInferenceWithoutTraining(self):
        model = self._get_pretrained_model()

        tf_weights = _write_tf_weights(model)  # Keras 3

        # load weights into pruned model.
        same_architecture_model = tfmot_test_utils.build_simple_dense_model()
        pruned_model = mp.prune_low_magnitude(
            same_architecture_model, **self.params
        )
        _read_tf_weights(pruned_model, tf_weights)  # Keras 3

        input_data = np.random.rand(10, 10)

        out = model.predict(input_data)
        pruned_out = pruned_model.predict(input_data)

        self.assertFalse((out == pruned_out).any())

    def testPruneThenLoadsKerasWeights_Fails(self):
        model = self._get_pretrained_model()

        # Keras 3: weights files end in `.weights.h5`.
        keras_weights = os.path.join(tempfile.mkdtemp(), "w.weights.h5")
        model.save_weights(keras_weights)

        # load weights into pruned model.
        same_architecture_model = tfmot_test_utils.build_simple_dense_model()
        pruned_model = mp.prune_low_magnitude(
            same_architecture_model, **self.params
        )

        # error since number of keras_weights is fewer than weights in pruned
        # model because pruning introduces weights.
        with self.assertRaises(ValueError):
            pruned_model.load_weights(keras_weights)

    ###################################################################
    # Tests for training with pruning from scratch.

    @parameterized.named_parameters(*_named(_PRUNABLE_LAYERS))
    def testPrunesSingleLayer_ReachesTargetSparsity(self, layer_type):
        if layer_type.startswith("LocallyConnected"):
            # Keras 3: the layer no longer exists.
            self.skipTest(f"Keras 3 has no {layer_type}")
        layer_class = getattr(layers, layer_type)
        model = keras.Sequential()
        args, input_shape = self._get_params_for_layer(layer_type)
        if args is None:
            return  # Test for layer not supported yet.
        model.add(keras.Input(shape=input_shape))  # Keras 3
        model.add(mp.prune_low_magnitude(layer_class(*args), **self.params))

        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        model.fit(
            # Keras 3: `inputs[0]`/`outputs[0]`, not `input`/`output`.
            np.random.randn(*self._batch(model.inputs[0].shape, 32)),
            np.random.randn(*self._batch(model.outputs[0].shape, 32)),
            callbacks=[mp.UpdatePruningStep()],
        )

        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)

        self._check_strip_pruning_matches_original(model, 0.5)

    @parameterized.named_parameters(
        {
            "testcase_name": "Conv2D",
            "layer_type": layers.Conv2D,
            "layer_arg": [16, (5, 7)],
            "input_shape": (10, 10, 8),
        },
        {
            "testcase_name": "Dense",
            "layer_type": layers.Dense,
            "layer_arg": [16],
            "input_shape": [(8)],
        },
        {
            "testcase_name": "Conv2D_not_multiple_4",
            "layer_type": layers.Conv2D,
            "layer_arg": [16, (5, 7)],
            "input_shape": (10, 10, 7),
            "sparsity_ratio": 0.428571,
        },
        {
            "testcase_name": "Conv2D_1by2",
            "layer_type": layers.Conv2D,
            "layer_arg": [16, (5, 7)],
            "input_shape": (10, 10, 8),
            "m_by_n": (1, 2),
        },
        {
            "testcase_name": "Dense_1by2",
            "layer_type": layers.Dense,
            "layer_arg": [16],
            "input_shape": [(8)],
            "m_by_n": (1, 2),
        },
        {
            "testcase_name": "DepthwiseConv_2by4",
            "layer_type": layers.DepthwiseConv2D,
            "layer_arg": [3],
            "input_shape": (7, 7, 32),
            "m_by_n": (2, 4),
        },
    )
    def testMbyNSparsityPruning_SupportedLayers(
        self,
        layer_type,
        layer_arg,
        input_shape,
        m_by_n=(2, 4),
        sparsity_ratio=0.50,
    ):
        """Check that we prune supported layers with m by n sparsity."""
        self.params.update({"sparsity_m_by_n": m_by_n})

        model = keras.Sequential()
        model.add(keras.Input(shape=input_shape))  # Keras 3
        model.add(mp.prune_low_magnitude(layer_type(*layer_arg), **self.params))
        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )

        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        model.fit(
            # Keras 3: `inputs[0]`/`outputs[0]`, not `input`/`output`.
            np.random.randn(*self._batch(model.inputs[0].shape, 32)),
            np.random.randn(*self._batch(model.outputs[0].shape, 32)),
            callbacks=[mp.UpdatePruningStep()],
        )

        _assert_model_sparsity_m_by_n(self, model, m_by_n)
        self._check_strip_pruning_matches_original(model, sparsity_ratio)

    def testSparsityPruningMbyN_SupportedSubclassLayers(self):
        """Check subclass layer that is supported for m by n sparsity."""
        m_by_n = (2, 4)
        self.params.update({"sparsity_m_by_n": m_by_n})

        class SubclassLayer(keras.layers.Layer):
            def __init__(self):
                super().__init__()
                # Keras 3: no input_shape=[7, 7, 3] (the model's
                # keras.Input gives it).
                self.conv1 = keras.layers.Conv2D(
                    2, 3, activation="relu", padding="same"
                )
                self.conv2 = keras.layers.DepthwiseConv2D(3)
                self.flatten = keras.layers.Flatten()
                self.dense = layers.Dense(10, activation="sigmoid")

            def call(self, inputs):
                x = self.conv1(inputs)
                x = self.conv2(x)
                x = self.flatten(x)
                x = self.dense(x)
                return x

        inputs = keras.Input(shape=(7, 7, 3))
        outputs = SubclassLayer()(inputs)
        model = keras.Model(inputs, outputs)
        with self.assertRaises(ValueError):
            model = mp.prune_low_magnitude(model, **self.params)

        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )

        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        # Differs from tfmot: `model` kept no pruned layer, and
        # UpdatePruningStep raises at the start of `fit` for a model with
        # no pruned layers (tfmot trains it and prunes nothing).
        with self.assertRaises(ValueError):
            model.fit(
                # Keras 3: `inputs[0]`/`outputs[0]`, not `input`/`output`.
                np.random.randn(*self._batch(model.inputs[0].shape, 32)),
                np.random.randn(*self._batch(model.outputs[0].shape, 32)),
                callbacks=[mp.UpdatePruningStep()],
            )

        _assert_model_sparsity_m_by_n(self, model, m_by_n)
        self._check_strip_pruning_matches_original(model, 0.5)

    @parameterized.named_parameters(*_named(_RNN_LAYERS))
    def testRNNLayersSingleCell_ReachesTargetSparsity(self, layer_type):
        model = keras.Sequential()
        model.add(keras.Input(shape=(3, 4)))  # Keras 3
        model.add(
            mp.prune_low_magnitude(
                getattr(layers, layer_type)(10), **self.params
            )
        )

        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        model.fit(
            # Keras 3: `inputs[0]`/`outputs[0]`, not `input`/`output`.
            np.random.randn(*self._batch(model.inputs[0].shape, 32)),
            np.random.randn(*self._batch(model.outputs[0].shape, 32)),
            callbacks=[mp.UpdatePruningStep()],
        )

        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)

        self._check_strip_pruning_matches_original(model, 0.5)

    def testRNNLayersWithRNNCellParams_ReachesTargetSparsity(self):
        model = keras.Sequential()
        model.add(keras.Input(shape=(3, 4)))  # Keras 3
        model.add(
            mp.prune_low_magnitude(
                keras.layers.RNN(
                    [
                        layers.LSTMCell(10),
                        layers.GRUCell(10),
                        layers.SimpleRNNCell(10),
                    ]
                ),
                **self.params,
            )
        )

        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        model.fit(
            # Keras 3: `inputs[0]`/`outputs[0]`, not `input`/`output`.
            np.random.randn(*self._batch(model.inputs[0].shape, 32)),
            np.random.randn(*self._batch(model.outputs[0].shape, 32)),
            callbacks=[mp.UpdatePruningStep()],
        )

        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)

        self._check_strip_pruning_matches_original(model, 0.5)

    def testPrunesEmbedding_ReachesTargetSparsity(self):
        model = keras.Sequential()
        model.add(keras.Input(shape=(5,)))  # Keras 3
        model.add(
            mp.prune_low_magnitude(
                layers.Embedding(input_dim=10, output_dim=3), **self.params
            )
        )
        model.add(layers.Flatten())
        model.add(layers.Dense(1, activation="sigmoid"))

        model.compile(
            loss="binary_crossentropy", optimizer="sgd", metrics=["accuracy"]
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        model.fit(
            np.random.randint(10, size=(32, 5)),
            np.random.randint(2, size=(32, 1)),
            callbacks=[mp.UpdatePruningStep()],
        )

        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)

        input_data = np.random.randint(10, size=(32, 5))
        self._check_strip_pruning_matches_original(model, 0.5, input_data)

    def testPruneRecursivelyReachesTargetSparsity(self):
        internal_model = keras.Sequential(
            [keras.Input(shape=(10,)), keras.layers.Dense(10)]  # Keras 3
        )
        model = keras.Sequential(
            [
                internal_model,
                layers.Flatten(),
                layers.Dense(1),
            ]
        )
        model.compile(
            loss="binary_crossentropy", optimizer="sgd", metrics=["accuracy"]
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        # Differs from tfmot: nothing here is pruned, and UpdatePruningStep
        # raises at the start of `fit` for a model with no pruned layers
        # (tfmot trains it and prunes nothing).
        with self.assertRaises(ValueError):
            model.fit(
                np.random.randint(10, size=(32, 10)),
                np.random.randint(2, size=(32, 1)),
                callbacks=[mp.UpdatePruningStep()],
            )

        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)

        input_data = np.random.randint(10, size=(32, 10))
        self._check_strip_pruning_matches_original(model, 0.5, input_data)

    def testMHALayerReachesTargetSparsity(self):
        inp = keras.layers.Input(shape=(32, 32), batch_size=100)
        x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16)(
            query=inp, value=inp
        )
        out = keras.layers.Flatten()(x)
        model = keras.Model(inputs=inp, outputs=out)
        model = mp.prune_low_magnitude(model, **self.params)
        x_train = np.random.uniform(size=(500, 32, 32))
        y_train = np.random.randint(low=0, high=1024, size=(500,))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)
        model.fit(
            x_train,
            y_train,
            epochs=1,
            batch_size=100,
            callbacks=[mp.UpdatePruningStep()],
        )
        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)
        self._check_strip_pruning_matches_original(model, 0.5, x_train)

    @parameterized.named_parameters(*_named(_model_type_keys()))
    def testPrunesMnist_ReachesTargetSparsity(self, model_type):
        model = _build_mnist_model(model_type, self.params)
        if model_type == "layer_list":
            model = keras.Sequential(
                # Keras 3: keras.Input first, not input_shape= on Conv2D.
                [keras.Input(shape=(28, 28, 1))]
                + mp.prune_low_magnitude(model, **self.params)
            )
        elif model_type in ["sequential", "functional"]:
            model = mp.prune_low_magnitude(model, **self.params)

        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )
        tfmot_test_utils.assert_model_sparsity(
            self, 0.0, model, rtol=1e-4, atol=1e-4
        )
        model.fit(
            np.random.rand(32, 28, 28, 1),
            keras.utils.to_categorical(np.random.randint(10, size=(32, 1)), 10),
            callbacks=[mp.UpdatePruningStep()],
        )

        tfmot_test_utils.assert_model_sparsity(
            self, 0.5, model, rtol=1e-4, atol=1e-4
        )

        self._check_strip_pruning_matches_original(model, 0.5)

    ###################################################################
    # Tests for pruning with checkpointing.

    # tfmot's note: https://github.com/tensorflow/model-optimization/issues/206
    # (checkpoints written during pruning are not sparse). The test does not
    # reproduce the bug exactly, so it runs three times and asserts that at
    # least one checkpoint is not at the target sparsity.
    def testPruneCheckpoints_CheckpointsNotSparse(self):
        is_model_sparsity_not_list = []

        # Run multiple times since problem doesn't always happen.
        for _ in range(3):
            model = tfmot_test_utils.build_simple_dense_model()
            pruned_model = mp.prune_low_magnitude(model, **self.params)

            checkpoint_dir = tempfile.mkdtemp()
            # Keras 3: weights-only checkpoints end in `.weights.h5`, not
            # `.tf`.
            checkpoint_path = checkpoint_dir + "/weights.{epoch:02d}.weights.h5"

            callbacks = [
                mp.UpdatePruningStep(),
                keras.callbacks.ModelCheckpoint(
                    filepath=checkpoint_path,
                    save_weights_only=True,
                    save_freq=1,
                ),
            ]

            # Train one step. Sparsity reaches final sparsity.
            self._train_model(pruned_model, epochs=1, callbacks=callbacks)
            tfmot_test_utils.assert_model_sparsity(self, 0.5, pruned_model)

            latest_checkpoint = _latest_checkpoint(checkpoint_dir)  # Keras 3

            same_architecture_model = (
                tfmot_test_utils.build_simple_dense_model()
            )
            pruned_model = mp.prune_low_magnitude(
                same_architecture_model, **self.params
            )

            # Sanity check.
            tfmot_test_utils.assert_model_sparsity(self, 0, pruned_model)

            pruned_model.load_weights(latest_checkpoint)
            is_model_sparsity_not_list.append(
                _is_model_sparsity_not(0.5, pruned_model)
            )

        self.assertTrue(any(is_model_sparsity_not_list))

    @parameterized.named_parameters(*_save_restore_fns())
    def testPruneStopAndRestart_PreservesSparsity(self, save_restore_fn):
        # tfmot returns here for the TF format (b/151755698: its SavedModel
        # lost the step); our `tf.train.Checkpoint` keeps it, so it runs.

        begin_step, end_step = 1, 4
        params = self.params
        params["pruning_schedule"] = mp.PolynomialDecay(
            0.2, 0.6, begin_step, end_step, 3, 1
        )

        model = mp.prune_low_magnitude(
            tfmot_test_utils.build_simple_dense_model(), **params
        )
        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )
        # Model hasn't been trained yet. Sparsity 0.0
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)

        # Train only 1 step. Sparsity 0.2 (initial_sparsity)
        self._train_model(model, epochs=1)
        tfmot_test_utils.assert_model_sparsity(self, 0.2, model)

        model = save_restore_fn(model)

        # Training has run all 4 steps. Sparsity 0.6 (final_sparsity)
        self._train_model(model, epochs=3)
        tfmot_test_utils.assert_model_sparsity(self, 0.6, model)

        self._check_strip_pruning_matches_original(model, 0.6)

    @parameterized.named_parameters(*_save_restore_fns())
    def testPruneWithPolynomialDecayPastEndStep_PreservesSparsity(
        self, save_restore_fn
    ):
        # tfmot returns here for the TF format (b/151755698: its SavedModel
        # lost the step); our `tf.train.Checkpoint` keeps it, so it runs.

        begin_step, end_step = 0, 2
        params = self.params
        params["pruning_schedule"] = mp.PolynomialDecay(
            0.2, 0.6, begin_step, end_step, 3, 1
        )

        model = mp.prune_low_magnitude(
            tfmot_test_utils.build_simple_dense_model(), **params
        )
        model.compile(
            loss="categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
        )

        # Model hasn't been trained yet. Sparsity 0.0
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)

        # Train 3 steps, past end_step. Sparsity 0.6 (final_sparsity)
        self._train_model(model, epochs=3)
        tfmot_test_utils.assert_model_sparsity(self, 0.6, model)

        model = save_restore_fn(model)

        # Ensure sparsity is preserved.
        tfmot_test_utils.assert_model_sparsity(self, 0.6, model)

        # Train one more step to ensure nothing happens that brings sparsity
        # back below 0.6.
        self._train_model(model, epochs=1)
        tfmot_test_utils.assert_model_sparsity(self, 0.6, model)

        self._check_strip_pruning_matches_original(model, 0.6)


class PruneIntegrationCustomTrainingLoopTest(
    tf.test.TestCase, parameterized.TestCase
):
    def testPrunesModel_CustomTrainingLoop_ReachesTargetSparsity(self):
        pruned_model = mp.prune_low_magnitude(
            tfmot_test_utils.build_simple_dense_model(),
            pruning_schedule=mp.ConstantSparsity(
                target_sparsity=0.5, begin_step=0, frequency=1
            ),
        )

        batch_size = 20
        x_train = np.random.rand(20, 10)
        y_train = keras.utils.to_categorical(
            np.random.randint(5, size=(batch_size, 1)), 5
        )

        loss = keras.losses.categorical_crossentropy
        optimizer = keras.optimizers.SGD()

        unused_arg = -1

        step_callback = mp.UpdatePruningStep()
        step_callback.set_model(pruned_model)
        pruned_model.optimizer = optimizer

        step_callback.on_train_begin()
        # 2 epochs
        for _ in range(2):
            step_callback.on_train_batch_begin(batch=unused_arg)
            inp = np.reshape(x_train, [batch_size, 10])  # original: [10].
            with tf.GradientTape() as tape:
                logits = pruned_model(inp, training=True)
                loss_value = loss(y_train, logits)
                grads = tape.gradient(
                    loss_value, pruned_model.trainable_variables
                )
                optimizer.apply_gradients(
                    zip(grads, pruned_model.trainable_variables, strict=True)
                )
            step_callback.on_epoch_end(batch=unused_arg)

        tfmot_test_utils.assert_model_sparsity(self, 0.5, pruned_model)
