"""tfmot's tests of the `PruneForLatencyOnXNNPack` pruning policy, ported to
Keras 3 and `model_pruning`.

Cases ported from tensorflow/model-optimization, Apache-2.0, file
tensorflow_model_optimization/python/core/sparsity/keras/
pruning_policy_test.py, commit 0ff265d3ab37b5ed6ef83329e58aa38ef796ab90.
Each test mirrors one tfmot test of the same name (inputs, numbers,
assertions); the code is our own. Lines changed for Keras 3 or for
`model_pruning` are marked `# Keras 3: ...` or `# model_pruning: ...`.
"""

import keras
import tensorflow as tf
import tfmot_test_utils

import model_pruning as mp

layers = keras.layers

# Keras 3: tfmot's `CompatGlobalAveragePooling2D` (a `keepdims` shim for
# TF <= 2.5) is not needed: Keras 3's `GlobalAveragePooling2D` takes
# `keepdims`, and the tests use it directly.


class PruningPolicyTest(tf.test.TestCase):
    INVALID_TO_PRUNE_START_LAYER_ERROR = (
        "Could not find `Conv2D 3x3` layer with stride 2x2, "
        "`input filters == 3` and `VALID` padding and preceding "
        "`ZeroPadding2D` with `padding == 1` in all input branches of the "
        "model"
    )

    INVALID_TO_PRUNE_STOP_LAYER_ERROR = (
        "Could not find a `GlobalAveragePooling2D` layer in all output branches"
    )

    INVALID_TO_PRUNE_MIDDLE_LAYER_ERROR = (
        "Layer {} is not supported for the PruneForLatencyOnXNNPack pruning "
        "policy"
    )

    INVALID_TO_PRUNE_UNBUILT_ERROR = (
        "Unbuilt models are not supported currently."
    )

    def setUp(self):
        super().setUp()
        self.params = {
            "pruning_schedule": mp.ConstantSparsity(0.5, 0),
            "block_size": (1, 1),
            "block_pooling_type": "AVG",
        }

    def _count_pruned_layers(self, model):
        count = 0
        for layer in tfmot_test_utils.sublayers(
            model
        ):  # Keras 3: for `model.submodules`
            if isinstance(layer, mp.PruneLowMagnitude):
                count += 1
        return count

    def testPruneUnsupportedModelForLatencyOnXNNPackPolicyNoStartLayer(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="same",
        )(i)
        x = layers.Conv2D(filters=16, kernel_size=[1, 1])(x)
        o = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs=[i], outputs=[o])
        with self.assertRaises(ValueError) as e:
            _ = mp.prune_low_magnitude(
                model,
                pruning_policy=mp.PruneForLatencyOnXNNPack(),
                **self.params,
            )
        self.assertEqual(
            str(e.exception), self.INVALID_TO_PRUNE_START_LAYER_ERROR
        )

    def testPruneUnsupportedModelForLatencyOnXNNPackPolicyNoStopLayer(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        x = layers.Conv2D(filters=16, kernel_size=[1, 1])(x)
        # Keras 3: `pool_size` has no default (tf.keras' was (2, 2)).
        o = layers.AveragePooling2D(pool_size=(2, 2))(x)
        model = keras.Model(inputs=[i], outputs=[o])
        with self.assertRaises(ValueError) as e:
            _ = mp.prune_low_magnitude(
                model,
                pruning_policy=mp.PruneForLatencyOnXNNPack(),
                **self.params,
            )
        self.assertEqual(
            str(e.exception), self.INVALID_TO_PRUNE_STOP_LAYER_ERROR
        )

    def testPruneUnsupportedModelForLatencyOnXNNPackPolicyMiddleLayer(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        x = layers.Conv2D(filters=16, kernel_size=[1, 1])(x)
        x = layers.MaxPooling2D(pool_size=(2, 2), strides=(2, 2))(x)
        o = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs=[i], outputs=[o])
        with self.assertRaises(ValueError) as e:
            _ = mp.prune_low_magnitude(
                model,
                pruning_policy=mp.PruneForLatencyOnXNNPack(),
                **self.params,
            )
        self.assertEqual(
            str(e.exception),
            self.INVALID_TO_PRUNE_MIDDLE_LAYER_ERROR.format(
                layers.MaxPooling2D.__name__
            ),
        )

    def testPruneSequentialModelForLatencyOnXNNPackPolicy(self):
        # No InputLayer
        model = keras.Sequential(
            [
                layers.ZeroPadding2D(padding=1),
                layers.Conv2D(
                    filters=4,
                    kernel_size=(3, 3),
                    strides=(2, 2),
                    padding="valid",
                ),
                layers.DepthwiseConv2D(kernel_size=(3, 3), padding="same"),
                layers.Conv2D(filters=8, kernel_size=[1, 1]),
                layers.GlobalAveragePooling2D(),
            ]
        )
        with self.assertRaises(ValueError) as e:
            _ = mp.prune_low_magnitude(
                model,
                pruning_policy=mp.PruneForLatencyOnXNNPack(),
                **self.params,
            )
        self.assertEqual(str(e.exception), self.INVALID_TO_PRUNE_UNBUILT_ERROR)

        # With InputLayer
        model = keras.Sequential(
            [
                keras.Input(shape=(8, 8, 3)),  # Keras 3: for `input_shape=`
                layers.ZeroPadding2D(padding=1),
                layers.Conv2D(
                    filters=4,
                    kernel_size=(3, 3),
                    strides=(2, 2),
                    padding="valid",
                ),
                layers.DepthwiseConv2D(kernel_size=(3, 3), padding="same"),
                layers.Conv2D(filters=8, kernel_size=[1, 1]),
                layers.GlobalAveragePooling2D(),
            ]
        )
        pruned_model = mp.prune_low_magnitude(
            model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 1)

    def testPruneModelRecursivelyForLatencyOnXNNPackPolicy(self):
        original_model = keras.Sequential(
            [
                keras.Input(shape=(8, 8, 3)),  # Keras 3: for `input_shape=`
                layers.ZeroPadding2D(padding=1),
                layers.Conv2D(
                    filters=4,
                    kernel_size=(3, 3),
                    strides=(2, 2),
                    padding="valid",
                ),
                keras.Sequential(
                    [
                        layers.Conv2D(filters=8, kernel_size=[1, 1]),
                        layers.Conv2D(filters=16, kernel_size=[1, 1]),
                    ]
                ),
                layers.GlobalAveragePooling2D(),
            ]
        )
        pruned_model = mp.prune_low_magnitude(
            original_model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 2)

    def testPruneFunctionalModelWithLayerReusedForLatencyOnXNNPackPolicy(
        self,
    ):
        # The model reuses the Conv2D() layer. Make sure it's only pruned once.
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        conv_layer = layers.Conv2D(filters=16, kernel_size=[1, 1])
        x = conv_layer(x)
        x = conv_layer(x)
        o = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs=[i], outputs=[o])
        pruned_model = mp.prune_low_magnitude(
            model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 1)

    def testFunctionalModelNoPruningLayersForLatencyOnXNNPackPolicy(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        x = layers.DepthwiseConv2D(kernel_size=(3, 3), padding="same")(x)
        x = layers.Activation("relu")(x)
        o = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs=[i], outputs=[o])

        pruned_model = mp.prune_low_magnitude(
            model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 0)

    def testFunctionalModelForLatencyOnXNNPackPolicy(self):
        i1 = keras.Input(shape=(16, 16, 3))
        x1 = layers.ZeroPadding2D(padding=1)(i1)
        x1 = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x1)
        x1_1 = layers.DepthwiseConv2D(kernel_size=(3, 3), padding="same")(x1)
        x1_2 = layers.Conv2D(filters=16, kernel_size=[1, 1])(x1)
        x1 = layers.Add()([x1_1, x1_2])

        i2 = keras.Input(shape=(16, 16, 3))
        x2 = layers.ZeroPadding2D(padding=1)(i2)
        x2 = layers.Conv2D(
            filters=8,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x2)
        x2 = layers.ZeroPadding2D(padding=1)(x2)
        x2 = layers.DepthwiseConv2D(
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x2)
        # Keras 3: `GlobalAveragePooling2D(keepdims=True)` for tfmot's
        # `CompatGlobalAveragePooling2D(keepdims=True)`.
        x2_1 = layers.GlobalAveragePooling2D(keepdims=True)(x2)
        x2_1 = layers.Conv2D(filters=32, kernel_size=[1, 1])(x2_1)
        x2_1 = layers.Activation("sigmoid")(x2_1)
        x2_2 = layers.Conv2D(filters=32, kernel_size=[1, 1])(x2)
        x2_2 = layers.UpSampling2D(interpolation="bilinear")(x2_2)
        x2 = layers.Multiply()([x2_1, x2_2])

        x2 = layers.Conv2D(filters=16, kernel_size=[1, 1])(x2)
        x = layers.Add()([x1, x2])
        # Keras 3: as above, for `CompatGlobalAveragePooling2D`.
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)

        o1 = layers.Conv2D(filters=7, kernel_size=[1, 1])(x)
        o2 = layers.Conv2D(filters=3, kernel_size=[1, 1])(x)
        model = keras.Model(inputs=[i1, i2], outputs=[o1, o2])

        pruned_model = mp.prune_low_magnitude(
            model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 6)

    def testPruneFunctionalModelAfterCloneForLatencyOnXNNPackPolicy(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        x = layers.Conv2D(filters=16, kernel_size=[1, 1])(x)
        o = layers.GlobalAveragePooling2D()(x)
        original_model = keras.Model(inputs=[i], outputs=[o])

        cloned_model = keras.models.clone_model(
            original_model, clone_function=lambda layer: layer
        )
        pruned_model = mp.prune_low_magnitude(
            cloned_model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 1)

    def testFunctionalModelWithTFOpsForLatencyOnXNNPackPolicy(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        residual = layers.Conv2D(filters=16, kernel_size=[1, 1])(x)
        # Keras 3: operators on KerasTensors become Keras ops (not
        # TFOpLambda layers) in the functional graph.
        x = x + residual
        x = x - residual
        x = x * residual
        # Keras 3: a KerasTensor cannot enter a TF function; the Keras op
        # `keras.ops.copy` for `tf.identity` (`keras.ops.identity` makes an
        # identity matrix).
        x = keras.ops.copy(x)
        o = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs=[i], outputs=[o])

        pruned_model = mp.prune_low_magnitude(
            model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 1)

    def testFunctionalModelForLatencyOnDoubleXNNPackPolicy(self):
        i = keras.Input(shape=(8, 8, 3))
        x = layers.ZeroPadding2D(padding=1)(i)
        x = layers.Conv2D(
            filters=16,
            kernel_size=(3, 3),
            strides=(2, 2),
            padding="valid",
        )(x)
        x = layers.Conv2D(filters=16, kernel_size=[1, 1])(x)
        o = layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs=[i], outputs=[o])

        pruned_model = mp.prune_low_magnitude(
            model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(pruned_model), 1)
        double_pruned_model = mp.prune_low_magnitude(
            pruned_model,
            pruning_policy=mp.PruneForLatencyOnXNNPack(),
            **self.params,
        )
        self.assertEqual(self._count_pruned_layers(double_pruned_model), 1)
