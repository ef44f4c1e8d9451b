"""tfmot's surface on our wrapper: keyword calls, tracked pruning state,
tfmot's attributes and schedule interface (issue 14's two bugs and what
the ported suite in tests/tfmot relies on)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_pruning as mp

L = keras.layers


def _mha_model():
    query = keras.Input((5, 8), name="query")
    value = keras.Input((3, 8), name="value")
    attention = mp.PruneLowMagnitude(L.MultiHeadAttention(2, 4, name="mha"))
    out = attention(query=query, value=value, key=value)
    return keras.Model([query, value], out), attention


def test_keyword_calls_reach_the_wrapped_layer_and_build_it():
    model, attention = _mha_model()
    # Built from the query and value shapes (3 keys): all four projections.
    assert len(attention.pruned_weights) == 4
    assert attention.layer.key_dense.kernel.shape == (8, 2, 4)
    q = np.random.rand(2, 5, 8).astype("float32")
    v = np.random.rand(2, 3, 8).astype("float32")
    mask = np.zeros((2, 5, 3), bool)
    mask[..., 0] = True
    by_keyword = attention(query=q, value=v, attention_mask=mask)
    expected = attention.layer(q, v, attention_mask=mask)
    np.testing.assert_allclose(by_keyword, expected, rtol=1e-6)
    assert model([q, v]).shape == (2, 5, 8)
    dense = mp.PruneLowMagnitude(L.Dense(3))
    assert dense(inputs=np.ones((2, 4), "float32")).shape == (2, 3)


def test_keyword_call_without_an_updater_still_raises_in_training():
    attention = mp.PruneLowMagnitude(L.MultiHeadAttention(2, 4))
    x = np.ones((1, 2, 4), "float32")
    with pytest.raises(mp.wrapper.NoMaskUpdaterError) as raised:
        attention(query=x, value=x, training=True)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, tf.errors.InvalidArgumentError)


def _sparse_dense_model():
    model = keras.Sequential(
        [keras.Input((6,)), L.Dense(8, name="a"), L.Dense(2, name="b")]
    )
    pruned = mp.prune_low_magnitude(
        model, pruning_schedule=mp.ConstantSparsity(0.5, 0, frequency=1)
    )
    for layer in mp.pruned_layers(pruned):
        for entry in layer.pruned_weights:
            ones = np.ones(entry.mask.shape, "float32")
            ones.flat[::2] = 0.0
            entry.mask.assign(ones)
            entry.threshold.assign(0.25)
    return pruned


class _Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = L.Dense(4, name="inner")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


def test_checkpoint_carries_masks_and_thresholds(tmp_path):
    pruned = _sparse_dense_model()
    prefix = tf.train.Checkpoint(model=pruned).write(str(tmp_path / "ck"))
    names = [name for name, _ in tf.train.list_variables(prefix)]
    assert sum("kernel_mask" in n for n in names) == 2
    assert sum("kernel_threshold" in n for n in names) == 2
    fresh = mp.prune_low_magnitude(
        keras.Sequential(
            [keras.Input((6,)), L.Dense(8, name="a"), L.Dense(2, name="b")]
        )
    )
    tf.train.Checkpoint(model=fresh).read(prefix).assert_consumed()
    for want, got in zip(
        mp.get_masks(pruned), mp.get_masks(fresh), strict=True
    ):
        np.testing.assert_array_equal(want, got)
    assert [float(t) for t in mp.get_thresholds(fresh)] == [0.25] * 2


def test_saved_model_carries_masks_of_layer_and_whole_model_wrappers(tmp_path):
    pruned = _sparse_dense_model()
    tf.saved_model.save(pruned, str(tmp_path / "graph"))
    inputs = keras.Input((6,))
    block = _Block(name="block")
    whole = mp.prune_low_magnitude(keras.Model(inputs, block(inputs)))
    tf.saved_model.save(whole, str(tmp_path / "whole"))
    for name, count in (("graph", 2), ("whole", 1)):
        saved = tf.train.list_variables(
            str(tmp_path / name / "variables" / "variables")
        )
        masks = [n for n, _ in saved if "pruning_state/kernel_mask" in n]
        assert len(masks) == count, name
        tf.saved_model.load(str(tmp_path / name))


def test_tfmot_attributes_read_the_one_hparams():
    schedule = mp.PolynomialDecay(0.1, 0.8, 10, 110, power=2, frequency=5)
    wrapper = mp.PruneLowMagnitude(
        L.Dense(4),
        pruning_schedule=schedule,
        block_size=(4, 1),
        block_pooling_type="MAX",
    )
    assert wrapper.pruning_schedule == schedule
    assert wrapper.block_size == (4, 1)
    assert wrapper.block_pooling_type == "MAX"
    assert wrapper.sparsity_m_by_n is None
    assert wrapper.hparams.block_height == 4
    assert wrapper.pruning_vars == []
    wrapper.build((None, 8))
    assert [v.name for v in wrapper.pruning_vars[0]] == [
        "kernel",
        "kernel_mask",
        "kernel_threshold",
    ]
    assert int(wrapper.pruning_step) == -1
    contrib = mp.PruneLowMagnitude(L.Dense(4), hparams=mp.get_pruning_hparams())
    assert contrib.pruning_schedule is None  # Its own function window.
    with pytest.raises(ValueError, match="either `pruning_schedule`"):
        mp.PruneLowMagnitude(
            L.Dense(4),
            pruning_schedule=schedule,
            hparams=mp.get_pruning_hparams(),
        )


def test_pruning_step_is_the_optimizer_step_once_managed():
    pruned = mp.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), L.Dense(3)]),
        pruning_schedule=mp.ConstantSparsity(0.5, 0, frequency=1),
    )
    pruned.compile("sgd", "mse")
    pruned.fit(
        np.ones((8, 4)),
        np.ones((8, 3)),
        batch_size=4,
        epochs=2,
        callbacks=[mp.UpdatePruningStep()],
        verbose=0,
    )
    assert int(pruned.layers[0].pruning_step) == 4


@pytest.mark.parametrize(
    "schedule, updates",
    [
        # First update at max(begin_step, frequency), then every frequency
        # steps, and at end_step: what `fit` does, step by step.
        (mp.ConstantSparsity(0.5, 10, end_step=45, frequency=10), 5),
        (mp.PolynomialDecay(0.0, 0.8, 0, 25, frequency=10), 3),
    ],
)
def test_calling_a_schedule_tells_the_steps_fit_updates_at(schedule, updates):
    due = [t for t in range(60) if bool(schedule(t)[0])]
    hparams = schedule.to_hparams()
    last, simulated = 0, []
    for step in range(60):
        if bool(mp.should_update_masks(hparams, step, last)):
            simulated.append(step)
            last = step
    assert due == simulated
    assert len(due) == updates
    assert float(schedule(60)[1]) == pytest.approx(
        float(mp.target_sparsity(hparams, 60))
    )


def test_schedule_config_is_tfmots_nested_form_and_round_trips():
    schedule = mp.ConstantSparsity(0.5, 10, 20, 5)
    config = schedule.get_config()
    assert config == {
        "class_name": "ConstantSparsity",
        "config": {
            "target_sparsity": 0.5,
            "begin_step": 10,
            "end_step": 20,
            "frequency": 5,
        },
    }
    assert mp.ConstantSparsity.from_config(config) == schedule
    assert mp.ConstantSparsity.from_config(config["config"]) == schedule
    with pytest.raises(ValueError, match="class_name='ConstantSparsity'"):
        mp.PolynomialDecay.from_config(config)


def test_begin_equal_to_end_prunes_to_the_final_sparsity():
    schedule = mp.PolynomialDecay(0.2, 0.7, 10, 10, frequency=1)
    assert float(schedule(10)[1]) == pytest.approx(0.7)
    assert bool(schedule(10)[0])
    constant = mp.ConstantSparsity(0.6, 0, 0)
    assert constant.to_hparams().end_pruning_step == 1


def test_pruning_policy_must_be_a_policy_and_applies_to_models_only():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    with pytest.raises(ValueError, match="Received: pruning_policy="):
        mp.prune_low_magnitude(model, pruning_policy=lambda layer: True)
    with pytest.raises(ValueError, match="choose layers of a model"):
        mp.prune_low_magnitude(
            L.Dense(3), pruning_policy=mp.PruneForLatencyOnXNNPack()
        )


@pytest.mark.parametrize(
    "layer, call",
    [
        (L.Dense(3), lambda w, x: w(inputs=x)),
        (L.Conv1D(3, 2), lambda w, x: w(inputs=x[:, :, :])),
        (L.LSTM(3), lambda w, x: w(sequences=x, mask=np.ones((2, 5), bool))),
        (
            L.Bidirectional(L.GRU(2)),
            lambda w, x: w(sequences=x, training=False),
        ),
    ],
    ids=["dense", "conv1d", "lstm", "bidirectional"],
)
def test_every_wrapped_kind_takes_its_own_keywords(layer, call):
    x = np.random.rand(2, 5, 4).astype("float32")
    wrapper = mp.PruneLowMagnitude(layer)
    by_keyword = call(wrapper, x)
    assert wrapper.pruned_weights
    np.testing.assert_allclose(by_keyword, layer(x), rtol=1e-6)
