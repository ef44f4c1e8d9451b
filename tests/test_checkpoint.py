"""Tests of `AtomicModelCheckpoint`: Keras' saving rules, atomic writes.

The kill tests run `resume_worker.py save_loop` children that save a 21 MB
pruned model after every batch and SIGKILL them during saves.
"""

import fnmatch
import glob
import os
import random
import re
import signal
import stat
import time

import keras
import numpy as np
import pytest
import resume_worker
from keras.src.saving import saving_lib
from reference import as_numpy

import model_pruning as mp
from model_pruning.checkpoint import AtomicModelCheckpoint

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

_STEPS_PER_EPOCH = 4


def _model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(hidden)
    pruned = mp.prune_low_magnitude(
        keras.Model(inputs, outputs),
        pruning_schedule=mp.PolynomialDecay(
            0.2, 0.6, begin_step=0, end_step=10, frequency=2
        ),
    )
    pruned.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return pruned


def _fit(model, callbacks, epochs=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16 * _STEPS_PER_EPOCH, 6)).astype("float32")
    y = rng.integers(0, 3, size=(16 * _STEPS_PER_EPOCH,)).astype("int32")
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[mp.UpdatePruningStep(), *callbacks],
    )


def _iterations(model):
    return int(as_numpy(model.optimizer.iterations))


def _load(path):
    """Loads a `.keras` model, or `.weights.h5` into a fresh model."""
    if path.endswith(".weights.h5"):
        model = _model()
        model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        return model
    return keras.models.load_model(path)


def _state(model):
    return [as_numpy(v) for v in model.variables] + [
        as_numpy(v) for v in model.optimizer.variables
    ]


def test_keeps_model_checkpoint_arguments_and_checks():
    callback = AtomicModelCheckpoint(
        "c-{epoch}.weights.h5",
        monitor="loss",
        save_best_only=True,
        save_weights_only=True,
        mode="min",
        save_freq=7,
    )
    # Our own callback (no Keras internals), with ModelCheckpoint's names.
    assert isinstance(callback, keras.callbacks.Callback)
    assert callback.mode == "min" and callback.best is None
    assert callback.filepath == "c-{epoch}.weights.h5"
    assert callback.monitor == "loss"
    assert callback.save_best_only and callback.save_weights_only
    assert callback.save_freq == 7
    with pytest.raises(ValueError, match="must end in `.keras`"):
        AtomicModelCheckpoint("model.zip")
    with pytest.raises(ValueError, match="must end in `.weights.h5`"):
        AtomicModelCheckpoint("model.keras", save_weights_only=True)
    with pytest.raises(ValueError, match="save_freq"):
        AtomicModelCheckpoint("model.keras", save_freq="often")
    with pytest.raises(ValueError, match="Received: save_freq=0"):
        AtomicModelCheckpoint("model.keras", save_freq=0)
    with pytest.raises(ValueError, match="Received: mode='lowest'"):
        AtomicModelCheckpoint("model.keras", mode="lowest")


@pytest.mark.parametrize(
    "pattern, kwargs, saved",
    [
        (
            "ckpt-{epoch:02d}.keras",
            {},
            {"ckpt-01.keras": 4, "ckpt-02.keras": 8, "ckpt-03.keras": 12},
        ),
        (
            "w-{epoch}-{batch}.weights.h5",
            dict(save_weights_only=True, save_freq=3),
            {
                "w-1-3.weights.h5": 3,
                "w-2-2.weights.h5": 6,
                "w-3-1.weights.h5": 9,
                "w-3-4.weights.h5": 12,
            },
        ),
        ("latest.keras", dict(save_freq=5), {"latest.keras": 10}),
    ],
)
def test_writes_the_files_model_checkpoint_writes(
    tmp_path, pattern, kwargs, saved
):
    ours, theirs = tmp_path / "atomic", tmp_path / "keras"
    _fit(
        _model(),
        [
            keras.callbacks.ModelCheckpoint(str(theirs / pattern), **kwargs),
            AtomicModelCheckpoint(str(ours / pattern), **kwargs),
        ],
    )
    # Only the checkpoints: no staging file or directory is left behind.
    assert sorted(os.listdir(ours)) == sorted(saved)
    assert sorted(os.listdir(theirs)) == sorted(saved)
    for name, step in saved.items():
        got, want = _load(str(ours / name)), _load(str(theirs / name))
        assert _iterations(got) == step
        for a, b in zip(_state(got), _state(want), strict=True):
            np.testing.assert_array_equal(a, b)


class _Score(keras.callbacks.Callback):
    """Puts `score` = `scores[epoch]` into the epoch's logs."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]


def test_save_best_only_saves_only_improvements_and_names_the_target(
    tmp_path, capsys
):
    path = tmp_path / "best.keras"
    callback = AtomicModelCheckpoint(
        str(path), monitor="score", mode="min", save_best_only=True, verbose=1
    )
    _fit(_model(), [_Score([3.0, 1.0, 2.0]), callback])
    assert _iterations(keras.models.load_model(path)) == 8  # Epoch 2's.
    assert callback.best == 1.0
    printed = capsys.readouterr().out
    assert f"saving model to {path}" in printed
    assert f"finished saving model to {path}" in printed
    assert "score did not improve from 1.00000" in printed
    assert ".tmp" not in printed
    assert os.listdir(tmp_path) == ["best.keras"]


def _fail_saves_after(monkeypatch, good_saves):
    """Makes Keras' saving raise half way through after `good_saves`."""
    save_state = saving_lib._save_state
    calls = []

    def failing_save_state(*args, **kwargs):
        if kwargs.get("inner_path") == "":  # The top call of a save.
            calls.append(1)
            if len(calls) > good_saves:
                raise OSError("disk full (simulated)")
        save_state(*args, **kwargs)

    monkeypatch.setattr(saving_lib, "_save_state", failing_save_state)


def test_failed_save_keeps_previous_checkpoint_and_leaves_no_staging(
    tmp_path, monkeypatch
):
    _fail_saves_after(monkeypatch, good_saves=1)
    callback = AtomicModelCheckpoint(str(tmp_path / "ckpt.keras"))
    with pytest.raises(OSError, match="simulated"):
        _fit(_model(), [callback])
    assert os.listdir(tmp_path) == ["ckpt.keras"]
    assert _iterations(keras.models.load_model(tmp_path / "ckpt.keras")) == 4


def test_keras_model_checkpoint_loses_the_file_on_a_failed_save(
    tmp_path, monkeypatch
):
    """The failure `AtomicModelCheckpoint` exists for: Keras truncates the
    previous checkpoint before writing the new one."""
    _fail_saves_after(monkeypatch, good_saves=1)
    callback = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.keras"))
    with pytest.raises(OSError, match="simulated"):
        _fit(_model(), [callback])
    with pytest.raises(ValueError):
        keras.models.load_model(tmp_path / "ckpt.keras")


def _keras_pattern_regex(pattern):
    """The regex `ModelCheckpoint` matches checkpoint file names with (in
    `_get_most_recently_modified_file_matching_pattern`)."""
    return f"^{re.sub(r'{.*}', r'.*', os.path.basename(pattern))}$"


def test_during_a_save_the_target_is_whole_and_nothing_matches_the_pattern(
    tmp_path, monkeypatch
):
    # The widest pattern possible: every file name ending in ".keras".
    pattern = str(tmp_path / "{epoch:02d}.keras")
    callback = AtomicModelCheckpoint(pattern, save_freq=2)
    # Keras' own rule for the newest checkpoint matching a pattern.
    keras_matcher = keras.callbacks.ModelCheckpoint(pattern)
    first, second = str(tmp_path / "01.keras"), str(tmp_path / "02.keras")
    targets = [first, first, second, second]  # Saves at steps 2, 4, 6, 8.
    seen = []
    save_state = saving_lib._save_state

    def observing_save_state(*args, **kwargs):
        save_state(*args, **kwargs)
        if kwargs.get("inner_path") != "":
            return
        # Half way through a save: the weights are written, not the file.
        target = targets[len(seen)]
        seen.append(
            dict(
                staging=[n for n in os.listdir(tmp_path) if n.endswith(".tmp")],
                globbed=sorted(glob.glob(str(tmp_path / "*.keras"))),
                latest=keras_matcher._get_most_recently_modified_file_matching_pattern(
                    pattern
                ),
                target_step=os.path.exists(target)
                and _iterations(keras.models.load_model(target)),
            )
        )

    monkeypatch.setattr(saving_lib, "_save_state", observing_save_state)
    _fit(_model(), [callback], epochs=2)
    monkeypatch.undo()

    assert [m["target_step"] for m in seen] == [False, 2, False, 6]
    assert [m["globbed"] for m in seen] == [
        [],
        [first],
        [first],
        [first, second],
    ]
    assert [m["latest"] for m in seen] == [None, first, first, second]
    regex = _keras_pattern_regex(pattern)
    for moment, target in zip(seen, targets, strict=True):
        (staging,) = moment["staging"]
        assert staging.startswith(f".{os.path.basename(target)}.")
        assert not re.match(regex, staging)
        assert not fnmatch.fnmatch(staging, "*.keras")
    assert sorted(os.listdir(tmp_path)) == ["01.keras", "02.keras"]
    assert _iterations(keras.models.load_model(second)) == 8


def test_creates_directories_and_files_like_keras(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit(
        _model(),
        [AtomicModelCheckpoint(os.path.join("new", "dir", "m.keras"))],
        epochs=1,
    )
    path = tmp_path / "new" / "dir" / "m.keras"
    assert _iterations(keras.models.load_model(path)) == 4
    assert os.listdir(path.parent) == ["m.keras"]
    # The permissions `open()` gives, not a private temporary file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_file_names_up_to_the_system_limit(tmp_path):
    name = "m" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 6) + ".keras"
    _fit(_model(), [AtomicModelCheckpoint(str(tmp_path / name))], epochs=1)
    assert os.listdir(tmp_path) == [name]
    assert _iterations(keras.models.load_model(tmp_path / name)) == 4


def test_a_directory_at_the_path_raises(tmp_path):
    (tmp_path / "ckpt.keras").mkdir()
    callback = AtomicModelCheckpoint(str(tmp_path / "ckpt.keras"))
    with pytest.raises(IsADirectoryError, match="ckpt.keras"):
        _fit(_model(), [callback], epochs=1)
    assert os.listdir(tmp_path) == ["ckpt.keras"]


def _staging_dirs(directory):
    return {n for n in os.listdir(directory) if n.endswith(".tmp")}


def _read_step(path):
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        return None


def _wait_for_next_save(worker, progress, timeout=60.0):
    """Polls the child's progress file; returns (step, time) of the next
    completed save."""
    before = _read_step(progress)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = _read_step(progress)
        if step is not None and step != before:
            return step, time.monotonic()
        if worker.process.poll() is not None:
            break
        time.sleep(0.002)
    worker.stop()
    raise AssertionError(f"No new save.\n{worker.output()}")


def _kill_at_random_during_a_save(worker, progress, rng):
    """Kills the child at a random moment of a save: measures one
    save-and-step period, then kills 10-70% of a period after a save."""
    worker.wait_for(progress)
    _, start = _wait_for_next_save(worker, progress)
    _, end = _wait_for_next_save(worker, progress)
    _wait_for_next_save(worker, progress)
    time.sleep(rng.uniform(0.1, 0.7) * (end - start))
    return worker.sigkill()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_sigkill_during_saves_leaves_a_loadable_checkpoint_unlike_keras(
    tmp_path,
):
    """Three kills of children saving every batch: one half way through a
    save (and Keras' `ModelCheckpoint` killed the same way, whose file is
    then unreadable), two at random moments of a save."""
    ours, theirs = tmp_path / "atomic", tmp_path / "keras"
    ours.mkdir()
    theirs.mkdir()
    path = str(ours / "ckpt.keras")
    keras_path = str(theirs / "ckpt.keras")
    # Keras' ModelCheckpoint and ours, each killed half way through its
    # third save (the weights written, the file not closed yet).
    blocked = []
    try:
        for name, p, extra in [
            ("keras", keras_path, ["--keras_checkpoint"]),
            ("atomic", path, []),
        ]:
            blocked.append(
                resume_worker.Worker(
                    ["save_loop", p, "--block_in_save", "3", *extra],
                    log=str(tmp_path / f"{name}.log"),
                )
            )
        for worker, p in zip(blocked, [keras_path, path], strict=True):
            worker.wait_for(f"{p}.blocked")
            assert worker.sigkill() == -signal.SIGKILL
    finally:
        for worker in blocked:
            worker.stop()
    with pytest.raises(ValueError):
        keras.models.load_model(keras_path)
    assert _iterations(keras.models.load_model(path)) == 2
    assert len(_staging_dirs(ours)) == 1

    # Then killed at random moments during saves, on the same path.
    rng = random.Random(0)
    for attempt in range(2):
        staging = _staging_dirs(ours)
        progress = f"{path}.progress"
        os.remove(progress)
        worker = resume_worker.Worker(
            ["save_loop", path], log=str(tmp_path / f"random{attempt}.log")
        )
        try:
            assert (
                _kill_at_random_during_a_save(worker, progress, rng)
                == -signal.SIGKILL
            )
        finally:
            worker.stop()
        saved = _read_step(progress)
        # The last save the child finished, or the one after it if the
        # kill fell between its rename and the progress file.
        assert _iterations(keras.models.load_model(path)) in (saved, saved + 1)
        assert glob.glob(str(ours / "*.keras")) == [path]
        assert len(_staging_dirs(ours) - staging) <= 1
    # The random kills fell inside saves (a staging directory stayed).
    assert len(_staging_dirs(ours)) > 1


def test_remote_paths_are_saved_directly(tmp_path, monkeypatch):
    """A `scheme://` path goes through Keras' own (gfile) saving: TF's
    in-memory `ram://` file system stands in for `gs://`."""
    monkeypatch.chdir(tmp_path)
    path = f"ram://{tmp_path.name}/ckpt-{{epoch}}.keras"
    _fit(_model(), [AtomicModelCheckpoint(path)], epochs=2)
    assert _iterations(keras.models.load_model(path.format(epoch=2))) == 8
    assert _iterations(keras.models.load_model(path.format(epoch=1))) == 4
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "monitor, scores, mode, best_epoch, keras_knows",
    [
        ("val_accuracy", [0.5, 0.9, 0.7], "auto", 2, True),
        ("val_loss", [3.0, 1.0, 2.0], "auto", 2, True),
        ("val_auc", [0.5, 0.4, 0.8], "auto", 3, False),
        ("val_mae", [3.0, 2.0, 1.0], "auto", 3, False),
        ("val_custom", [1.0, 3.0, 2.0], "max", 2, True),
    ],
)
def test_save_best_only_direction(
    tmp_path, monitor, scores, mode, best_epoch, keras_knows
):
    """`mode="auto"` picks the direction Keras picks for its metrics
    (compared where the model compiles the metric; Keras' "auto" needs it
    compiled)."""

    class Scores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs[monitor] = scores[epoch]

    model = _model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = [
        AtomicModelCheckpoint(
            str(tmp_path / "a.keras"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
        )
    ]
    if keras_knows:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(tmp_path / "k.keras"),
                monitor=monitor,
                mode=mode,
                save_best_only=True,
            )
        )
    _fit(model, [Scores(), *callbacks])
    for callback in callbacks:
        assert callback.best == scores[best_epoch - 1]
        saved = keras.models.load_model(callback.filepath)
        assert _iterations(saved) == best_epoch * _STEPS_PER_EPOCH


def test_steps_per_execution_counts_batches_like_keras(tmp_path):
    model = _model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=3,
    )
    pattern = "s-{epoch}-{batch}.keras"
    _fit(
        model,
        [
            AtomicModelCheckpoint(str(tmp_path / "a" / pattern), save_freq=5),
            keras.callbacks.ModelCheckpoint(
                str(tmp_path / "k" / pattern), save_freq=5
            ),
        ],
    )
    saved = sorted(os.listdir(tmp_path / "a"))
    assert saved == sorted(os.listdir(tmp_path / "k"))
    assert len(saved) >= 2


def test_verbose_messages_go_to_the_absl_log_without_interactive_logging(
    tmp_path, capsys, caplog
):
    keras.config.disable_interactive_logging()
    try:
        with caplog.at_level("INFO"):
            _fit(
                _model(),
                [AtomicModelCheckpoint(str(tmp_path / "m.keras"), verbose=1)],
                epochs=1,
            )
    finally:
        keras.config.enable_interactive_logging()
    assert "finished saving model to" not in capsys.readouterr().out
    assert "finished saving model to" in caplog.text


def test_unfilled_field_names_the_filepath(tmp_path):
    callback = AtomicModelCheckpoint(str(tmp_path / "m-{nope}.keras"))
    with pytest.raises(KeyError, match="nope"):
        _fit(_model(), [callback], epochs=1)
