"""tfmot's tests of the pruning callbacks (`UpdatePruningStep`,
`PruningSummaries`), ported to Keras 3 and `model_pruning`.

Cases ported from tensorflow/model-optimization, Apache-2.0, file
tensorflow_model_optimization/python/core/sparsity/keras/
pruning_callbacks_test.py, as stored at commit
33d2d9238c671e7fc7a0f7c4a2025b85b38b3b77 of the fork sarvex/model-optimization
(newer than any stored tensorflow/model-optimization version, whose newest is
6db4f2b76f2f99c69fd6c95d6f2b5e5f235dedac with 4 of these 6 tests). Each test
mirrors one tfmot test of the same name (inputs, numbers, assertions); the
code is our own. Lines changed for Keras 3 or for `model_pruning` are marked
`# Keras 3: ...` or `# model_pruning: ...`; assertions inverted to a
deliberate design difference are marked `# Differs from tfmot: ...`.

tfmot runs most of these under `keras_parameterized.run_all_keras_modes`
(TF1 graph mode, eager, `tf.function`); here each runs once, in TF 2's
default mode (`fit` compiles a `tf.function`, the custom loops run eagerly).
"""

import os

import keras
import numpy as np
import tensorflow as tf
import tfmot_test_utils
from absl.testing import parameterized

import model_pruning as mp


class PruneCallbacksTest(tf.test.TestCase, parameterized.TestCase):
    _BATCH_SIZE = 20

    def _assertLogsExist(self, log_dir):
        self.assertNotEmpty(os.listdir(log_dir))

    def _pruned_model_setup(self, custom_training_loop=False):
        pruned_model = mp.prune_low_magnitude(
            tfmot_test_utils.build_simple_dense_model()
        )

        x_train = np.random.rand(self._BATCH_SIZE, 10)
        y_train = keras.utils.to_categorical(
            np.random.randint(5, size=(self._BATCH_SIZE, 1)), 5
        )

        loss = keras.losses.categorical_crossentropy
        optimizer = keras.optimizers.SGD()

        if custom_training_loop:
            return pruned_model, loss, optimizer, x_train, y_train
        pruned_model.compile(
            loss=loss, optimizer=optimizer, metrics=["accuracy"]
        )
        return pruned_model, x_train, y_train

    def testUpdatePruningStepsAndLogsSummaries(self):
        log_dir = tfmot_test_utils.mkdtemp(self)
        pruned_model, x_train, y_train = self._pruned_model_setup()
        pruned_model.fit(
            x_train,
            y_train,
            batch_size=self._BATCH_SIZE,
            epochs=3,
            callbacks=[
                mp.UpdatePruningStep(),
                mp.PruningSummaries(log_dir=log_dir),
            ],
        )

        # Keras 3: `keras.ops.convert_to_numpy` for `K.get_value`.
        self.assertEqual(
            3,
            keras.ops.convert_to_numpy(pruned_model.layers[0].pruning_step),
        )
        self.assertEqual(
            3,
            keras.ops.convert_to_numpy(pruned_model.layers[1].pruning_step),
        )

        self._assertLogsExist(log_dir)

    def testUpdatePruningStepsAndLogsSummaries_CustomTrainingLoop(self):
        log_dir = tfmot_test_utils.mkdtemp(self)
        pruned_model, loss, optimizer, x_train, y_train = (
            self._pruned_model_setup(custom_training_loop=True)
        )

        unused_arg = -1

        step_callback = mp.UpdatePruningStep()
        log_callback = mp.PruningSummaries(log_dir=log_dir)
        # The recipe tfmot documents for custom loops: the callbacks get
        # the model, and the model gets the optimizer, by hand.
        step_callback.set_model(pruned_model)
        log_callback.set_model(pruned_model)
        pruned_model.optimizer = optimizer

        step_callback.on_train_begin()
        for _ in range(3):
            log_callback.on_epoch_begin(epoch=unused_arg)
            # One batch per epoch: 20 examples, batch size 20.
            step_callback.on_train_batch_begin(batch=unused_arg)
            inp = np.reshape(x_train, [self._BATCH_SIZE, 10])
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

        # Keras 3: `keras.ops.convert_to_numpy` for `K.get_value`.
        self.assertEqual(
            3,
            keras.ops.convert_to_numpy(pruned_model.layers[0].pruning_step),
        )
        self.assertEqual(
            3,
            keras.ops.convert_to_numpy(pruned_model.layers[1].pruning_step),
        )
        self._assertLogsExist(log_dir)

    def testUpdatePruningStepsAndLogsSummaries_RunInference(self):
        pruned_model, _, _, x_train, _ = self._pruned_model_setup(
            custom_training_loop=True
        )
        model_output = pruned_model(x_train)
        del model_output

        # Keras 3: `keras.ops.convert_to_numpy` for `K.get_value`.
        self.assertEqual(
            -1,
            keras.ops.convert_to_numpy(pruned_model.layers[0].pruning_step),
        )
        self.assertEqual(
            -1,
            keras.ops.convert_to_numpy(pruned_model.layers[1].pruning_step),
        )

    def testPruneTrainingRaisesError_PruningStepCallbackMissing(self):
        pruned_model, x_train, y_train = self._pruned_model_setup()

        # Throws an error since UpdatePruningStep is missing.
        with self.assertRaises(tf.errors.InvalidArgumentError):
            pruned_model.fit(x_train, y_train)

    def testPruneTrainingLoopRaisesError_PruningStepCallbackMissing_CustomTrainingLoop(  # noqa: E501
        self,
    ):
        pruned_model, _, _, x_train, _ = self._pruned_model_setup(
            custom_training_loop=True
        )

        # Throws an error since UpdatePruningStep is missing.
        with self.assertRaises(tf.errors.InvalidArgumentError):
            inp = np.reshape(x_train, [self._BATCH_SIZE, 10])
            with tf.GradientTape():
                pruned_model(inp, training=True)

    def testPruningSummariesRaisesError_LogDirNotNonEmptyString(self):
        with self.assertRaises(ValueError):
            mp.PruningSummaries(log_dir="")

        with self.assertRaises(ValueError):
            mp.PruningSummaries(log_dir=None)

        with self.assertRaises(ValueError):
            mp.PruningSummaries(log_dir=object())
