"""Layers and models pruned whole, in place (KerasHub-style), without KerasHub.

The classes here do what KerasHub layers do to a per-layer rebuild: create
their sublayers in `build()`, own vector parameters (`LayerScale`), position
embeddings and tied embeddings, live inside a Functional subclass with its
own constructor. Each is copied whole from its own config and pruned in
place inside one `PruneLowMagnitude`.
"""

import os

import keras
import numpy as np
import pytest

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

L = keras.layers


def _schedule(sparsity=0.75):
    return mp.ConstantSparsity(sparsity, begin_step=0, frequency=1)


@keras.saving.register_keras_serializable(package="test_in_place")
class BuildTimeBlock(L.Layer):
    """Creates its sublayers in `build()`, like KerasHub's blocks, and owns a
    vector parameter (a `LayerScale`-like gamma)."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def build(self, input_shape):
        self._inner_dense = L.Dense(2 * self.width, name="intermediate")
        self._inner_dense.build(input_shape)
        self._output_dense = L.Dense(self.width)  # A generated name.
        self._output_dense.build((*input_shape[:-1], 2 * self.width))
        self.gamma = self.add_weight(
            shape=(self.width,), initializer="ones", name="gamma"
        )

    def call(self, inputs):
        hidden = self._output_dense(self._inner_dense(inputs))
        return inputs + self.gamma * hidden

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package="test_in_place")
class TinyBackbone(keras.Model):
    """A Functional subclass with its own constructor, as KerasHub's
    backbones are: token embedding tied with the output projection,
    position embedding, two build-time blocks."""

    def __init__(self, vocabulary_size=16, width=8, length=6, **kwargs):
        tokens = keras.Input((length,), dtype="int32", name="token_ids")
        embedding = L.ReversibleEmbedding(
            vocabulary_size, width, name="token_embedding"
        )
        positions = L.Embedding(length, width, name="position_embedding")
        position_ids = keras.ops.zeros_like(tokens) + keras.ops.arange(length)
        x = embedding(tokens) + positions(position_ids)
        x = BuildTimeBlock(width, name="block_0")(x)
        x = BuildTimeBlock(width, name="block_1")(x)
        logits = embedding(x, reverse=True)
        super().__init__(tokens, logits, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.width = width
        self.length = length

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "width": self.width,
            "length": self.length,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _tokens(batch=8, seed=0):
    return np.random.default_rng(seed).integers(0, 16, (batch, 6))


def _fit(model, x, y, epochs=1):
    model.compile(optimizer="adam", loss="mse")
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=epochs,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )


def _assert_at_target(model, sparsity):
    for entry in mp.pruned_weights(model):
        mask = keras.ops.convert_to_numpy(entry.mask)
        weight = keras.ops.convert_to_numpy(entry.weight)
        kept = int(np.round(mask.size * (1 - sparsity)))
        assert int(mask.sum()) == kept, entry.name
        assert not np.any(weight[mask == 0]), entry.name


BACKBONE_WEIGHTS = [
    "tiny_backbone/token_embedding/embeddings",
    "tiny_backbone/block_0/intermediate/kernel",
    "tiny_backbone/block_0/_output_dense/kernel",
    "tiny_backbone/block_1/intermediate/kernel",
    "tiny_backbone/block_1/_output_dense/kernel",
]


def test_functional_subclass_is_pruned_whole_saved_resumed_and_stripped(
    tmp_path,
):
    keras.utils.set_random_seed(0)
    model = TinyBackbone(name="tiny_backbone")
    x = _tokens()
    before = model.predict(x, verbose=0)
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    assert isinstance(pruned, mp.PrunedModel)
    assert isinstance(pruned.inner, TinyBackbone)
    # The tied embedding has one mask; the position embedding, the gammas
    # and the biases are not pruned; a generated sublayer name is replaced
    # by the attribute holding it.
    assert [e.name for e in mp.pruned_weights(pruned)] == BACKBONE_WEIGHTS
    assert not mp.pruned_layers(model)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)

    y = np.zeros((8, 6, 16))
    _fit(pruned, x, y)
    _assert_at_target(pruned, 0.75)
    expected = pruned.predict(x, verbose=0)

    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    assert [e.name for e in mp.pruned_weights(reloaded)] == BACKBONE_WEIGHTS
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)
    masks = [keras.ops.convert_to_numpy(m) for m in mp.get_masks(reloaded)]
    reloaded.fit(
        x, y, batch_size=4, verbose=0, callbacks=[mp.UpdatePruningStep()]
    )
    for old, new in zip(masks, mp.get_masks(reloaded), strict=True):
        new = keras.ops.convert_to_numpy(new)
        assert not np.any(new[old == 0])  # no regrowth after resuming

    stripped = mp.strip_pruning(pruned)
    assert isinstance(stripped, TinyBackbone)
    assert not mp.pruned_layers(stripped)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), expected)
    path = os.path.join(tmp_path, "stripped.keras")
    stripped.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), expected)


def test_subclass_nested_in_a_functional_model_is_wrapped_whole():
    keras.utils.set_random_seed(1)
    backbone = TinyBackbone(name="tiny_backbone")
    tokens = keras.Input((6,), dtype="int32")
    outputs = L.Dense(2, name="head")(L.Flatten()(backbone(tokens)))
    model = keras.Model(tokens, outputs)
    pruned = mp.prune_low_magnitude(model, pruning_schedule=_schedule())
    assert type(pruned) is type(model)  # a plain graph stays one
    wrappers = mp.pruned_layers(pruned)
    assert isinstance(wrappers[0].layer, TinyBackbone)
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        *BACKBONE_WEIGHTS,
        "head/kernel",
    ]
    x = _tokens()
    _fit(pruned, x, np.zeros((8, 2)))
    _assert_at_target(pruned, 0.75)
    stripped = mp.strip_pruning(pruned)
    assert isinstance(stripped.layers[1], TinyBackbone)
    np.testing.assert_array_equal(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0)
    )


def test_position_embedding_is_pruned_only_when_included():
    model = TinyBackbone(name="tiny_backbone")
    pruned = mp.prune_low_magnitude(
        model, include=["embedding/embeddings$", "intermediate"]
    )
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "tiny_backbone/token_embedding/embeddings",
        "tiny_backbone/position_embedding/embeddings",
        "tiny_backbone/block_0/intermediate/kernel",
        "tiny_backbone/block_1/intermediate/kernel",
    ]


def test_untied_reversible_embedding_prunes_both_tables():
    tokens = keras.Input((4,), dtype="int32")
    embedding = L.ReversibleEmbedding(10, 6, tie_weights=False, name="emb")
    model = keras.Model(tokens, embedding(embedding(tokens), reverse=True))
    pruned = mp.prune_low_magnitude(model)
    assert [e.name for e in mp.pruned_weights(pruned)] == [
        "emb/embeddings",
        "emb/reverse_embeddings",
    ]


class MatrixOwner(L.Layer):
    """Owns a matrix that is not a projection the registry knows."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(input_shape[-1], 4), name="table")
        self.dense = L.Dense(3, name="proj")
        self.dense.build((*input_shape[:-1], 4))

    def call(self, inputs):
        return self.dense(keras.ops.matmul(inputs, self.table))


def _matrix_owner_model():
    inputs = keras.Input((5,))
    return keras.Model(inputs, MatrixOwner(name="owner")(inputs))


def test_unknown_matrix_raises_naming_layer_class_and_weight():
    with pytest.raises(ValueError) as raised:
        mp.prune_low_magnitude(_matrix_owner_model())
    message = str(raised.value)
    for part in ("'owner'", "MatrixOwner", "owner/table", "exclude", "warn"):
        assert part in message


def test_unknown_matrix_is_skipped_alone_with_warn_or_exclude():
    with pytest.warns(UserWarning, match="owner/table"):
        pruned = mp.prune_low_magnitude(
            _matrix_owner_model(), unsupported="warn"
        )
    assert [e.name for e in mp.pruned_weights(pruned)] == ["owner/proj/kernel"]
    pruned = mp.prune_low_magnitude(
        _matrix_owner_model(), exclude=["owner/table"]
    )
    assert [e.name for e in mp.pruned_weights(pruned)] == ["owner/proj/kernel"]


class NoConfig(L.Layer):
    """Its constructor takes an argument its config does not return."""

    def __init__(self, width):
        super().__init__()
        self.dense = L.Dense(width)

    def call(self, inputs):
        return self.dense(inputs)


def test_layer_whose_config_cannot_recreate_it_gets_a_clear_error():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, NoConfig(2)(inputs))
    with pytest.raises(ValueError, match="NoConfig.*get_config"):
        mp.prune_low_magnitude(model)


@keras.saving.register_keras_serializable(package="test_in_place")
class SelfCompiling(TinyBackbone):
    """Compiles itself in `__init__` with a metric, as KerasHub's tasks do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.compile(optimizer="sgd", loss="mse", metrics=["mae"])


def test_model_that_compiles_itself_trains_inside_the_wrapper(tmp_path):
    pruned = mp.prune_low_magnitude(
        SelfCompiling(name="tiny_backbone"), pruning_schedule=_schedule()
    )
    x, y = _tokens(), np.zeros((8, 6, 16))
    # Its own (unbuilt) compile metrics are not the outer model's: fit and
    # evaluate report only the outer model's loss.
    _fit(pruned, x, y)
    assert list(pruned.evaluate(x, y, verbose=0, return_dict=True)) == ["loss"]
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    reloaded.fit(
        x, y, batch_size=4, verbose=0, callbacks=[mp.UpdatePruningStep()]
    )
    _assert_at_target(reloaded, 0.75)


def test_pruned_model_without_mask_updates_raises_in_fit():
    pruned = mp.prune_low_magnitude(
        TinyBackbone(name="tiny_backbone"), pruning_schedule=_schedule()
    )
    pruned.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        pruned.fit(_tokens(), np.zeros((8, 6, 16)), verbose=0)
