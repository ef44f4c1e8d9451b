"""Tests of the Keras callbacks: UpdatePruningStep and PruningSummaries."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import as_numpy
from reference import expected_kept
from reference import zhu_gupta_target

import model_pruning as mp


def _model():
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras.layers.Dense(4)(hidden)
    return keras.Model(inputs, outputs)


def _pruned(initial=0.0, final=0.8, begin=0, end=40, frequency=5):
    pruned = mp.prune_low_magnitude(
        _model(),
        pruning_schedule=mp.PolynomialDecay(
            initial, final, begin_step=begin, end_step=end, frequency=frequency
        ),
    )
    return _compile(pruned)


def _compile(model):
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(samples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 16)).astype("float32")
    y = rng.integers(0, 4, size=(samples,)).astype("int32")
    return x, y


def _iterations(model):
    return int(as_numpy(model.optimizer.iterations))


def _read_scalars(directory):
    """Returns {tag: [(step, value), ...]} from every event file under it."""
    files = sorted(tf.io.gfile.glob(str(directory / "events.out.tfevents.*")))
    scalars = collections.defaultdict(list)
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    number = float(value.simple_value)
                scalars[value.tag].append((int(event.step), number))
    return scalars


class _EpochEndSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_epoch_end(self, epoch, logs=None):
        self.steps.append(_iterations(self.model))


def test_pruning_summaries_writes_scalars_at_optimizer_steps(tmp_path):
    pruned = _pruned()
    x, y = _data(60)
    epoch_ends = _EpochEndSteps()
    pruned.fit(
        x,
        y,
        batch_size=10,
        epochs=3,
        shuffle=False,
        callbacks=[
            mp.UpdatePruningStep(),
            mp.PruningSummaries(log_dir=tmp_path),
            epoch_ends,
        ],
        verbose=0,
    )
    assert epoch_ends.steps == [6, 12, 18]
    assert (tmp_path / "metrics").is_dir()
    assert list((tmp_path / "metrics").glob("events.out.tfevents.*"))
    scalars = _read_scalars(tmp_path / "metrics")

    hparams = mp.pruned_layers(pruned)[0].hparams
    target_tag = f"{hparams.name}/sparsity"
    assert target_tag in scalars
    # Distinct steps: `test_pruning_summaries_writes_each_tag_once_per_step`
    # checks that there is one point per step.
    assert sorted({step for step, _ in scalars[target_tag]}) == (
        epoch_ends.steps
    )
    for step, value in scalars[target_tag]:
        assert value == pytest.approx(
            float(zhu_gupta_target(step, 0.0, 0.8, 0, 40)), abs=1e-6
        )
        assert value == pytest.approx(
            float(mp.target_sparsity(hparams, step)), abs=1e-6
        )

    entries = mp.pruned_weights(pruned)
    assert [entry.name for entry in entries] == [
        "dense/kernel",
        "dense_1/kernel",
    ]
    final_sparsity = mp.get_weight_sparsity(pruned)
    final_thresholds = [float(as_numpy(t)) for t in mp.get_thresholds(pruned)]
    for entry, sparsity, threshold in zip(
        entries, final_sparsity, final_thresholds, strict=True
    ):
        for suffix in ("sparsity", "threshold"):
            tag = f"{entry.name}/{suffix}"
            assert tag in scalars, sorted(scalars)
            assert [s for s, _ in scalars[tag]] == epoch_ends.steps
        # The realized mask sparsity at the last epoch end is the model's.
        last_step, last_value = scalars[f"{entry.name}/sparsity"][-1]
        assert last_step == _iterations(pruned)
        assert last_value == pytest.approx(sparsity, abs=1e-6)
        assert scalars[f"{entry.name}/threshold"][-1][1] == pytest.approx(
            threshold, rel=1e-6
        )
        # The realized sparsity followed the rising schedule.
        values = [v for _, v in scalars[f"{entry.name}/sparsity"]]
        assert values == sorted(values)
        assert values[0] > 0.0
        size = int(np.prod(entry.weight.shape))
        last_update = int(
            as_numpy(mp.pruned_layers(pruned)[0].last_mask_update_step)
        )
        assert last_update == 15
        target = zhu_gupta_target(last_update, 0.0, 0.8, 0, 40)
        assert last_value == pytest.approx(
            1.0 - expected_kept(size, target) / size, abs=1e-6
        )


def test_pruning_summaries_integer_update_freq_writes_more_points(tmp_path):
    x, y = _data(50)
    logs = {"epoch": tmp_path / "epoch", "every2": tmp_path / "every2"}
    for name, freq in (("epoch", "epoch"), ("every2", 2)):
        keras.backend.clear_session()
        keras.utils.set_random_seed(1234)
        pruned = _pruned()
        pruned.fit(
            x,
            y,
            batch_size=10,
            epochs=2,
            shuffle=False,
            callbacks=[
                mp.UpdatePruningStep(),
                mp.PruningSummaries(log_dir=logs[name], update_freq=freq),
            ],
            verbose=0,
        )
    per_epoch = _read_scalars(logs["epoch"] / "metrics")
    per_batch = _read_scalars(logs["every2"] / "metrics")
    tag = "dense/kernel/sparsity"
    assert [step for step, _ in per_epoch[tag]] == [5, 10]
    # Batches 0, 2, 4 of each epoch (step = iterations before the batch),
    # plus the end of each epoch.
    expected = []
    for epoch in range(2):
        expected += [epoch * 5 + batch for batch in (0, 2, 4)]
        expected.append(epoch * 5 + 5)
    assert sorted(step for step, _ in per_batch[tag]) == sorted(expected)
    assert len(per_batch[tag]) > len(per_epoch[tag])
    assert set(per_batch) == set(per_epoch)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"log_dir": ""}, "log_dir=''"),
        ({"log_dir": "logs", "update_freq": 0}, "update_freq=0"),
        ({"log_dir": "logs", "update_freq": "batch"}, "update_freq='batch'"),
        ({"log_dir": "logs", "update_freq": -3}, "update_freq=-3"),
    ],
)
def test_pruning_summaries_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        mp.PruningSummaries(**kwargs)


def test_update_pruning_step_without_pruned_layers_raises_at_fit_start():
    model = _compile(_model())
    x, y = _data(20)
    with pytest.raises(ValueError, match="prune_low_magnitude"):
        model.fit(
            x,
            y,
            batch_size=10,
            epochs=1,
            callbacks=[mp.UpdatePruningStep()],
            verbose=0,
        )
    # Raised before the first batch: no training step ran.
    assert _iterations(model) == 0


def test_update_pruning_step_second_fit_continues_schedule():
    begin, end, frequency = 0, 40, 10
    pruned = _pruned(0.0, 0.8, begin, end, frequency)
    x, y = _data(150)
    callback = mp.UpdatePruningStep()

    pruned.fit(x, y, batch_size=10, epochs=1, callbacks=[callback], verbose=0)
    assert _iterations(pruned) == 15
    layers = mp.pruned_layers(pruned)
    assert [int(as_numpy(layer.last_mask_update_step)) for layer in layers] == [
        10,
        10,
    ]
    first_masks = [as_numpy(m).copy() for m in mp.get_masks(pruned)]
    sizes = [m.size for m in first_masks]
    for size, mask in zip(sizes, first_masks, strict=True):
        target = zhu_gupta_target(10, 0.0, 0.8, begin, end)
        assert np.count_nonzero(mask) == expected_kept(size, target)

    pruned.fit(x, y, batch_size=10, epochs=1, callbacks=[callback], verbose=0)
    # The step keeps counting; a restarted schedule would stop at 10 again.
    assert _iterations(pruned) == 30
    assert [int(as_numpy(layer.last_mask_update_step)) for layer in layers] == [
        30,
        30,
    ]
    target = zhu_gupta_target(30, 0.0, 0.8, begin, end)
    for size, old, mask in zip(
        sizes, first_masks, mp.get_masks(pruned), strict=True
    ):
        mask = as_numpy(mask)
        assert np.count_nonzero(mask) == expected_kept(size, target)
        assert np.count_nonzero(mask) < np.count_nonzero(old)
        assert np.all(mask <= old)

    # A fresh callback instance in a third fit continues as well.
    pruned.fit(
        x,
        y,
        batch_size=10,
        epochs=1,
        callbacks=[mp.UpdatePruningStep()],
        verbose=0,
    )
    assert _iterations(pruned) == 45
    assert [int(as_numpy(layer.last_mask_update_step)) for layer in layers] == [
        40,
        40,
    ]
    for size, mask in zip(sizes, mp.get_masks(pruned), strict=True):
        assert np.count_nonzero(as_numpy(mask)) == expected_kept(size, 0.8)


def test_pruning_summaries_writes_each_tag_once_per_step(tmp_path):
    """One hparams name (shared by every layer) is one series, one point a step.

    The docstring promises the target sparsity and last update step "per
    hparams name"; a point per layer duplicates the series.
    """
    pruned = _pruned()
    x, y = _data(40)
    pruned.fit(
        x,
        y,
        batch_size=10,
        epochs=2,
        callbacks=[
            mp.UpdatePruningStep(),
            mp.PruningSummaries(log_dir=tmp_path),
        ],
        verbose=0,
    )
    assert len(mp.pruned_layers(pruned)) == 2
    scalars = _read_scalars(tmp_path / "metrics")
    name = mp.pruned_layers(pruned)[0].hparams.name
    for tag in (f"{name}/sparsity", f"{name}/last_mask_update_step"):
        assert [step for step, _ in scalars[tag]] == [4, 8], tag
    for tag, points in scalars.items():
        steps = [step for step, _ in points]
        assert len(steps) == len(set(steps)), tag
