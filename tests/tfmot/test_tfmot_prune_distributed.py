"""tfmot's test of pruning under `tf.distribute`, ported to Keras 3 and
`model_pruning`.

Cases ported from tensorflow/model-optimization, Apache-2.0, file
tensorflow_model_optimization/python/core/sparsity/keras/
prune_distributed_test.py, newest stored version (the one on the public
`tf.distribute` API that also saves and reloads the model in `prune_scope`;
the index lists this file at commit
627554f7b8ddce90719d41118c2773eb53074673 and names no commit for that
version). The test mirrors tfmot's test of the same name (inputs, numbers,
assertions); the code is our own. Lines changed for Keras 3 or for
`model_pruning` are marked `# Keras 3: ...` or `# model_pruning: ...`.

Strategies: as tfmot, `MultiWorkerMirroredStrategy()` (no `TF_CONFIG`: one
local worker), `MirroredStrategy()` and `OneDeviceStrategy("/cpu:0")`, each
on this process's default devices, i.e. one CPU replica. They are built
inside the test, not when the module is imported, so that collecting tests
does not start TensorFlow. Pruning over two replicas and two worker
processes is covered by `tests/test_distribution.py`.
"""

import os

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


def _distribution_strategies():
    # Factories, called in the test (see the module docstring).
    return [
        lambda: tf.distribute.MultiWorkerMirroredStrategy(),
        lambda: tf.distribute.MirroredStrategy(),
        # tfmot: TODO add ParameterServerStrategy once ready in TF2.
        lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
    ]


class PruneDistributedTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.params = {
            "pruning_schedule": mp.ConstantSparsity(0.5, 0, -1, 1),
            "block_size": (1, 1),
            "block_pooling_type": "AVG",
        }

    @parameterized.parameters(_distribution_strategies())
    def testPrunesSimpleDenseModel(self, distribution):
        distribution = distribution()
        with distribution.scope():
            model = mp.prune_low_magnitude(
                tfmot_test_utils.build_simple_dense_model(), **self.params
            )
            model.compile(
                loss="categorical_crossentropy",
                optimizer="sgd",
                metrics=["accuracy"],
            )

        # Model hasn't been trained yet. Sparsity 0.0
        tfmot_test_utils.assert_model_sparsity(self, 0.0, model)

        # Simple unpruned model. No sparsity.
        model.fit(
            np.random.rand(20, 10),
            keras.utils.to_categorical(np.random.randint(5, size=(20, 1)), 5),
            epochs=2,
            callbacks=[mp.UpdatePruningStep()],
            batch_size=20,
        )
        model.predict(np.random.rand(20, 10))
        tfmot_test_utils.assert_model_sparsity(self, 0.5, model)

        # Keras 3: the `.keras` format, not `.h5`.
        keras_file = os.path.join(tfmot_test_utils.mkdtemp(self), "model.keras")
        keras.models.save_model(model, keras_file)

        with mp.prune_scope():
            loaded_model = keras.models.load_model(keras_file)

        tfmot_test_utils.assert_model_sparsity(self, 0.5, loaded_model)
