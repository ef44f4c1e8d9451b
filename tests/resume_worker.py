"""Child process of `test_resume.py` and `test_checkpoint.py`.

Each run is a fresh interpreter that the tests may kill with SIGKILL. A run
that is to be killed writes a marker file (atomically) once the state the
test needs is on disk, then blocks; the test waits for the marker and kills
it, so no kill races a write the test relies on.

    python resume_worker.py train WORKDIR [--stop_at STEP] [--out NPZ]
        Trains the pruned MLP from scratch (deterministic: seeded weights,
        op determinism, NumPy data, `shuffle=False`) with `UpdatePruningStep`
        and these checkpoints in WORKDIR:
          epoch-{epoch:02d}.keras       keras.callbacks.ModelCheckpoint,
                                        every epoch;
          step-{epoch:02d}-{batch:02d}.keras
                                        AtomicModelCheckpoint, every
                                        SAVE_EVERY batches;
          backup/                       keras.callbacks.BackupAndRestore,
                                        every epoch.
        With --stop_at it writes WORKDIR/stopped after step STEP (after
        those callbacks) and blocks; otherwise it finishes and writes --out.

    python resume_worker.py resume_keras PATH --out NPZ
        Loads PATH (a `.keras` checkpoint of `train`) and trains on to the
        end: the rest of the checkpoint's epoch, then the remaining epochs.

    python resume_worker.py resume_backup WORKDIR --out NPZ
        Builds the model as `train` does and fits with `BackupAndRestore`
        on WORKDIR/backup, which restores the last backup and its epoch.

    python resume_worker.py save_loop PATH [--keras_checkpoint]
            [--block_in_save N]
        Trains a larger pruned model until killed (at most MAX_SECONDS),
        saving PATH after every batch with `AtomicModelCheckpoint` (or
        Keras' `ModelCheckpoint` with --keras_checkpoint). After each save
        it writes the optimizer step to PATH.progress. With
        --block_in_save N the N-th save blocks half way (the weights
        written, the file not closed) after writing PATH.blocked.

A blocked child exits by itself after MAX_SECONDS, so a test that dies
before its kill leaves no process behind for long.

The `.npz` of a finished run holds the pruning state (`mask/i`,
`threshold/i`, `weight/i`, `last_update/i`), `iterations`, every model
variable (`variable/i`) and every optimizer variable (`optimizer/i`), and
how the run went: the step it started from after any restore
(`run/start_step`) and the batches it trained (`run/batches`).
"""

import argparse
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import model_pruning as mp  # noqa: E402
from model_pruning.checkpoint import AtomicModelCheckpoint  # noqa: E402

SEED = 1234
SAMPLES = 256
BATCH = 32
STEPS_PER_EPOCH = SAMPLES // BATCH  # 8
EPOCHS = 6  # 48 steps
INITIAL_SPARSITY = 0.1
FINAL_SPARSITY = 0.8
BEGIN_STEP = 4
END_STEP = 40
FREQUENCY = 6  # mask updates at steps 6, 12, 18, 24, 30, 36, 40
SAVE_EVERY = 9  # step checkpoints at steps 9, 18, 27, 36, 45

EPOCH_PATTERN = "epoch-{epoch:02d}.keras"
STEP_PATTERN = "step-{epoch:02d}-{batch:02d}.keras"
BACKUP_DIR = "backup"
STOPPED_MARKER = "stopped"

# A child left behind by a dying test exits on its own after this long.
MAX_SECONDS = 300

_WORKER = os.path.abspath(__file__)
_REPO = os.path.dirname(os.path.dirname(_WORKER))


def data() -> tuple[np.ndarray, np.ndarray]:
    """The training set, from a seeded NumPy generator."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 16)).astype("float32")
    y = rng.integers(0, 4, size=(SAMPLES,)).astype("int32")
    return x, y


def build_model() -> keras.Model:
    """16 -> Dense 64 relu -> Dense 32 relu -> Dense 4, pruned, compiled."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(64, activation="relu")(inputs)
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    outputs = keras.layers.Dense(4)(hidden)
    pruned = mp.prune_low_magnitude(
        keras.Model(inputs, outputs),
        pruning_schedule=mp.PolynomialDecay(
            INITIAL_SPARSITY,
            FINAL_SPARSITY,
            begin_step=BEGIN_STEP,
            end_step=END_STEP,
            frequency=FREQUENCY,
        ),
    )
    pruned.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return pruned


def write_marker(path: str, text: str) -> None:
    """Writes a small file atomically, so a reader sees all of it or none."""
    with open(f"{path}.part", "w") as f:
        f.write(text)
    os.replace(f"{path}.part", path)


def _block() -> None:
    """Waits to be killed (exits by itself after `MAX_SECONDS`)."""
    time.sleep(MAX_SECONDS)
    os._exit(3)


class _StopAt(keras.callbacks.Callback):
    """After step `step`, writes `marker` and blocks until killed."""

    def __init__(self, step: int, marker: str):
        super().__init__()
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step == self.step:
            write_marker(self.marker, str(step))
            _block()


class _Recorder(keras.callbacks.Callback):
    """Records the step a run starts from (after any restore) and the
    number of batches it trains, over one or more `fit` calls. List it
    last, after `BackupAndRestore`."""

    def __init__(self):
        super().__init__()
        self.start_step = None
        self.batches = 0

    def on_train_begin(self, logs=None):
        if self.start_step is None:
            step = self.model.optimizer.iterations
            self.start_step = int(keras.ops.convert_to_numpy(step))

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _fit(model, x, y, callbacks, **kwargs) -> None:
    model.fit(
        x,
        y,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        callbacks=[mp.UpdatePruningStep(), *callbacks],
        **kwargs,
    )


def _train(args) -> None:
    workdir = args.path
    callbacks = [
        # A save after batch t holds the masks due through step t - 1;
        # UpdatePruningStep makes step t's update before the next batch.
        keras.callbacks.ModelCheckpoint(os.path.join(workdir, EPOCH_PATTERN)),
        AtomicModelCheckpoint(
            os.path.join(workdir, STEP_PATTERN), save_freq=SAVE_EVERY
        ),
        keras.callbacks.BackupAndRestore(
            os.path.join(workdir, BACKUP_DIR), delete_checkpoint=False
        ),
    ]
    if args.stop_at is not None:
        marker = os.path.join(workdir, STOPPED_MARKER)
        callbacks.append(_StopAt(args.stop_at, marker))
    recorder = _Recorder()
    x, y = data()
    model = build_model()
    _fit(model, x, y, [*callbacks, recorder], epochs=EPOCHS)
    _write_state(model, recorder, args.out)


def _resume_keras(args) -> None:
    recorder = _Recorder()
    x, y = data()
    model = keras.models.load_model(args.path)
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    epoch, batch = divmod(step, STEPS_PER_EPOCH)
    if batch:
        # The rest of the interrupted epoch: the same batches, in order.
        rest = slice(batch * BATCH, None)
        _fit(model, x[rest], y[rest], [recorder], epochs=1)
        epoch += 1
    _fit(model, x, y, [recorder], epochs=EPOCHS, initial_epoch=epoch)
    _write_state(model, recorder, args.out)


def _resume_backup(args) -> None:
    recorder = _Recorder()
    x, y = data()
    model = build_model()
    backup = keras.callbacks.BackupAndRestore(
        os.path.join(args.path, BACKUP_DIR), delete_checkpoint=False
    )
    _fit(model, x, y, [backup, recorder], epochs=EPOCHS)
    _write_state(model, recorder, args.out)


def _write_state(model: keras.Model, recorder: _Recorder, out: str) -> None:
    def numpy(variable):
        return keras.ops.convert_to_numpy(variable)

    arrays = {
        "run/start_step": recorder.start_step,
        "run/batches": recorder.batches,
        "iterations": numpy(model.optimizer.iterations),
    }
    for i, entry in enumerate(mp.pruned_weights(model)):
        arrays[f"mask/{i}"] = numpy(entry.mask)
        arrays[f"threshold/{i}"] = numpy(entry.threshold)
        arrays[f"weight/{i}"] = numpy(entry.weight)
    for i, layer in enumerate(mp.pruned_layers(model)):
        arrays[f"last_update/{i}"] = numpy(layer.last_mask_update_step)
    for i, variable in enumerate(model.variables):
        arrays[f"variable/{i}"] = numpy(variable)
    for i, variable in enumerate(model.optimizer.variables):
        arrays[f"optimizer/{i}"] = numpy(variable)
    np.savez(out, **arrays)


class _Progress(keras.callbacks.Callback):
    """Writes the optimizer step to `path` after each batch's save; stops
    training after `MAX_SECONDS`."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.deadline = time.monotonic() + MAX_SECONDS

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        write_marker(self.path, str(step))
        if time.monotonic() > self.deadline:
            self.model.stop_training = True


def _block_in_save(n: int, marker: str) -> None:
    """Makes the `n`-th save block after writing the weights, before the
    file is closed (a test-only patch of Keras' saving internals)."""
    from keras.src.saving import saving_lib

    save_state = saving_lib._save_state
    calls = []

    def blocking_save_state(saveable, *args, **kwargs):
        save_state(saveable, *args, **kwargs)
        if kwargs.get("inner_path") == "":  # The top call of a save.
            calls.append(1)
            if len(calls) == n:
                write_marker(marker, str(n))
                _block()

    saving_lib._save_state = blocking_save_state


def big_model() -> keras.Model:
    """A pruned MLP of 2.2M parameters (a 21 MB `.keras` file with Adam's
    slots), half of each kernel masked."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((256,))
    hidden = keras.layers.Dense(1024, activation="relu")(inputs)
    hidden = keras.layers.Dense(1024, activation="relu")(hidden)
    outputs = keras.layers.Dense(10)(hidden)
    pruned = mp.prune_low_magnitude(
        keras.Model(inputs, outputs),
        # Masks update once, below: a save, not pruning, fills each step.
        pruning_schedule=mp.ConstantSparsity(0.5, begin_step=0),
    )
    pruned.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    mp.Pruning(model=pruned).mask_update_op()
    return pruned


def _save_loop(args) -> None:
    if args.block_in_save is not None:
        _block_in_save(args.block_in_save, f"{args.path}.blocked")
    checkpoint_class = (
        keras.callbacks.ModelCheckpoint
        if args.keras_checkpoint
        else AtomicModelCheckpoint
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 256)).astype("float32")
    y = rng.integers(0, 10, size=(64,)).astype("int32")
    model = big_model()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1_000_000,
        verbose=0,
        callbacks=[
            mp.UpdatePruningStep(),
            checkpoint_class(args.path, save_freq=1),
            _Progress(f"{args.path}.progress"),
        ],
    )


class Worker:
    """Parent side: a running `resume_worker.py` (or `python -c`) child.

    Its output goes to `log` (a file, so a chatty child never blocks on a
    full pipe); the repository root is its working directory and comes
    first on its `PYTHONPATH`.

    Args:
        args: Arguments after `resume_worker.py`, or `["-c", code, ...]` to
            run `code` instead.
        log: Path of the log file.
    """

    def __init__(self, args: list[str], log: str):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_REPO, env.get("PYTHONPATH")) if p
        )
        command = args if args[0] == "-c" else [_WORKER, *args]
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=_REPO,
                env=env,
            )

    def output(self) -> str:
        """The child's output so far."""
        with open(self.log, errors="replace") as f:
            return f.read()

    def _fail(self, why: str):
        self.stop()
        raise AssertionError(f"{why}\n--- worker output ---\n{self.output()}")

    def wait_for(self, path: str, timeout: float = 180.0) -> None:
        """Waits until `path` exists; fails if the child exits first."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if self.process.poll() is not None:
                self._fail(
                    f"Worker exited with {self.process.returncode} before "
                    f"writing {path}."
                )
            if time.monotonic() > deadline:
                self._fail(f"No {path} after {timeout} s.")
            time.sleep(0.02)

    def sigkill(self) -> int:
        """Kills the child with SIGKILL; returns its exit status."""
        os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=60)

    def finish(self, timeout: float = 240.0) -> str:
        """Waits for a successful exit; returns the output."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"Worker still running after {timeout} s.")
        if returncode != 0:
            self._fail(f"Worker failed with exit status {returncode}.")
        return self.output()

    def stop(self) -> None:
        """Kills the child if it still runs (for clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "mode", choices=["train", "resume_keras", "resume_backup", "save_loop"]
    )
    parser.add_argument("path")
    parser.add_argument("--out")
    parser.add_argument("--stop_at", type=int)
    parser.add_argument("--block_in_save", type=int)
    parser.add_argument("--keras_checkpoint", action="store_true")
    args = parser.parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    {
        "train": _train,
        "resume_keras": _resume_keras,
        "resume_backup": _resume_backup,
        "save_loop": _save_loop,
    }[args.mode](args)


if __name__ == "__main__":
    main(sys.argv[1:])
