"""tfmot's `PruneLowMagnitude` wrapper cases, run against `model_pruning`.

The cases are ported from tensorflow/model-optimization, Apache-2.0, file
`tensorflow_model_optimization/python/core/sparsity/keras/
pruning_wrapper_test.py`, commit 126b855d3d511afdd11af1595c2117e686690bbc:
each test below keeps the name, inputs, numbers and assertions of one tfmot
test. The code is our own; lines changed for Keras 3 or for our import names
are marked `# Keras 3:` or `# model_pruning:`.
"""

import keras
import tensorflow as tf

import model_pruning as mp

layers = keras.layers
# model_pruning: pruning_wrapper.PruneLowMagnitude -> mp.PruneLowMagnitude.
Prune = mp.PruneLowMagnitude


class CustomLayer(keras.layers.Layer):
    """A custom layer with a kernel and a bias, and no way to prune them."""

    def __init__(self, input_dim=16, output_dim=32):
        super().__init__()
        self.weight = self.add_weight(
            shape=(input_dim, output_dim),
            initializer="random_normal",
            trainable=True,
        )
        self.bias = self.add_weight(
            # Keras 3: a shape is a tuple, not a bare int.
            shape=(output_dim,),
            initializer="zeros",
            trainable=True,
        )

    def call(self, inputs):
        return tf.matmul(inputs, self.weight) + self.bias


class CustomLayerPrunable(CustomLayer):
    """`CustomLayer` that names its prunable weights.

    Only `get_prunable_weights` tells it apart from `CustomLayer`.
    """

    def get_prunable_weights(self):
        return [self.weight, self.bias]


class PruningWrapperTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.model = keras.Sequential()
        self.params = {
            # model_pruning: pruning_schedule.ConstantSparsity -> mp.
            "pruning_schedule": mp.ConstantSparsity(0.5, 0),
            "block_size": (1, 1),
            "block_pooling_type": "AVG",
        }

    def testPruneWrapperAllowsOnlyValidPoolingType(self):
        layer = layers.Dense(10)
        with self.assertRaises(ValueError):
            Prune(layer, block_pooling_type="MIN")

        Prune(layer, block_pooling_type="AVG")
        Prune(layer, block_pooling_type="MAX")

    def _check_mask_count(self, expected_mask_count=0):
        """The model's wrappers hold `expected_mask_count` masks in all."""
        mask_count = sum(len(layer.pruning_vars) for layer in self.model.layers)
        self.assertEqual(mask_count, expected_mask_count)

    def testDense(self):
        self.model.add(Prune(layers.Dense(10), **self.params))
        self.model.build(input_shape=(10, 1))

        self._check_mask_count(expected_mask_count=1)

    def testEmbedding(self):
        # Keras 3: `input_shape=(10,)` on the wrapper -> a keras.Input first.
        self.model.add(keras.Input(shape=(10,)))
        self.model.add(Prune(layers.Embedding(10, 10), **self.params))
        # Keras 3: the input shape built the model already, as in tfmot,
        # whose `model.build(input_shape=(10, 1))` then did nothing; Keras 3
        # raises on that second, different shape, so it is left out.

        self._check_mask_count(expected_mask_count=1)

    def testConv2D(self):
        self.model.add(Prune(layers.Conv2D(4, (3, 3)), **self.params))
        self.model.build(input_shape=(1, 16, 16, 4))

        self._check_mask_count(expected_mask_count=1)

    def testPruneModel(self):
        self.model.add(Prune(layers.Conv2D(32, 5)))
        self.model.add(Prune(layers.MaxPooling2D((2, 2), (2, 2))))
        self.model.add(Prune(layers.Conv2D(64, 5)))
        self.model.add(Prune(layers.MaxPooling2D((2, 2), (2, 2))))
        self.model.add(Prune(layers.Flatten()))
        self.model.add(Prune(layers.Dense(1024)))
        self.model.add(Prune(layers.Dropout(0.4)))
        self.model.add(Prune(layers.Dense(10)))
        self.model.build(input_shape=(1, 28, 28, 1))

        self._check_mask_count(expected_mask_count=4)

        # Serialization: a model rebuilt from the config has the same config,
        # once each layer's `build_config` is set aside.
        model_config = self.model.get_config()
        restored = self.model.__class__.from_config(
            model_config,
            # model_pruning: pruning_wrapper.PruneLowMagnitude -> mp.
            custom_objects={"PruneLowMagnitude": mp.PruneLowMagnitude},
        )
        restored_config = restored.get_config()
        for config in (model_config, restored_config):
            for layer in config["layers"]:
                layer.pop("build_config", None)
        self.assertEqual(model_config, restored_config)

    def testCustomLayerNonPrunable(self):
        layer = CustomLayer(input_dim=16, output_dim=32)
        # Keras 3: a shape is a tuple, not a bare int.
        inputs = keras.layers.Input(shape=(16,))
        _ = layer(inputs)
        with self.assertRaises(ValueError):
            Prune(layer, block_pooling_type="MAX")

    def testCustomLayerPrunable(self):
        layer = CustomLayerPrunable(input_dim=16, output_dim=32)
        # Keras 3: a shape is a tuple, not a bare int.
        inputs = keras.layers.Input(shape=(16,))
        _ = layer(inputs)
        pruned_layer = Prune(layer, block_pooling_type="MAX")
        # The wrapper's name: "prune_low_magnitude_" (the wrapper class's
        # name in snake case) and then the wrapped layer's name.
        self.assertEqual(
            pruned_layer.name, "prune_low_magnitude_custom_layer_prunable"
        )

    def testCollectPrunableLayers(self):
        # Keras 3: `input_shape=(None, 4)` on the RNN -> a keras.Input first.
        self.model.add(keras.Input(shape=(None, 4)))
        lstm_layer = keras.layers.RNN(
            layers.LSTMCell(4, dropout=0.5, recurrent_dropout=0.5)
        )
        self.model.add(Prune(lstm_layer))
        self.model.add(Prune(layers.BatchNormalization()))
        self.model.add(Prune(layers.Flatten()))
        self.model.add(Prune(layers.Dense(10)))
        self.model.add(Prune(layers.Dropout(0.5)))
        # Keras 3: the input shape built the model already, as in tfmot,
        # whose `model.build(input_shape=(1, 4))` then did nothing; Keras 3
        # raises on that second, different shape, so it is left out.

        # model_pruning: pruning_wrapper.collect_prunable_layers ->
        # mp.pruned_layers.
        self.assertLen(mp.pruned_layers(self.model), 5)

    def testConv3DWeightNotPrunedWithSparsityMbyN(self):
        layer = keras.layers.Conv3D(2, 3)
        # Keras 3: Conv3D takes rank-5 inputs only, so tfmot's leading 4 of
        # shape (4, 28, 28, 28, 1), an extra batch dimension Keras 2 folded
        # into the batch, is the batch size here; the kernel is the same.
        inputs = keras.layers.Input(shape=(28, 28, 28, 1), batch_size=4)
        _ = layer(inputs)
        self.model.add(Prune(layer, sparsity_m_by_n=(2, 4)))

        # model_pruning: pruning_wrapper.collect_prunable_layers ->
        # mp.pruned_layers.
        pruned_layers = mp.pruned_layers(self.model)

        self.assertLen(pruned_layers, 1)
        # M-by-N sparsity prunes rank-2 (Dense) and rank-4 (Conv2D) weights
        # only: the rank-5 Conv3D kernel gets no pruning variables.
        self.assertLen(pruned_layers[0].pruning_vars, 0)


if __name__ == "__main__":
    tf.test.main()
