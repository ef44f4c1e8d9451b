"""`AtomicModelCheckpoint`: a `ModelCheckpoint` that never leaves a torn file.

Keras' `ModelCheckpoint` saves with `open(filepath, "wb")`: the old file is
truncated first, so a process killed during the save (preemption, OOM killer,
SIGKILL) leaves a partial zip that `load_model` rejects, and the previous
checkpoint is gone too. `AtomicModelCheckpoint` writes each save into a fresh
staging directory next to the target, flushes the file to disk, and only then
renames it over the target with `os.replace`, which is atomic on one file
system: at every moment the target is either the previous complete file or
the new complete file.
"""

import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from os import PathLike

import keras
from absl import logging

_STAGING_SUFFIX = ".tmp"
_NAME_IN_STAGING = 100
# Paths Keras writes through `tf.io.gfile` (URLs such as `gs://` and the
# mounts Keras' `file_utils.is_remote_path` lists): saved directly, since an
# object store replaces a whole object at once and `os.replace` cannot
# reach it.
_REMOTE_PATH = re.compile(
    r"^(/cns|/cfs|/gcs|/hdfs|/readahead|/placer|/tfhub|.*://)"
)
# `mode="auto"`: the monitored names whose best value is the largest.
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou", "r2")


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the model like `keras.callbacks.ModelCheckpoint`, atomically.

    Takes `ModelCheckpoint`'s arguments and decides when and where to save
    by its rules (`save_freq`, `save_best_only`, templates such as
    `"ckpt-{epoch:02d}.keras"`, the same messages with `verbose=1`); only
    the writing differs. Each save goes to
    `<dir>/.<file name>.<random>.tmp/<file name>` (a staging directory in
    the target's directory, so on the same file system), is flushed with
    `fsync`, and is then moved over the target with `os.replace`, so a kill
    at any moment leaves the previous checkpoint (or the new one) whole and
    loadable. The staging directory is removed after every save, successful
    or not; only a process killed during a save leaves one behind, and it
    never matches the checkpoint's file pattern (its name starts with `.`
    and ends with `.tmp`), so it can be deleted at any time.

    Remote paths (`gs://...`, any `scheme://`, and the other paths Keras
    treats as remote) are saved directly: object stores replace a whole
    object at once.

    With pruning, the callbacks' order does not matter: a save after batch
    `t` holds the state before the mask update due at step `t`, which
    `UpdatePruningStep` makes before the next batch (and a resumed fit makes
    first).

    Args:
        filepath: Path of the checkpoint, a string or `PathLike`, possibly
            with format fields filled from the epoch, the batch and `logs`
            (e.g. `"ckpt-{epoch:02d}.keras"`). Must end in `.keras` (or
            `.h5`), or in `.weights.h5` when `save_weights_only=True`.
        monitor: The metric `save_best_only` compares. Defaults to
            `"val_loss"`.
        verbose: 0 (silent) or 1 (a message per save). Defaults to `0`.
        save_best_only: Whether to save only when `monitor` improves.
            Defaults to `False`.
        save_weights_only: Whether to save `model.save_weights` (with the
            optimizer state when compiled) instead of the whole model.
            Defaults to `False`.
        mode: `"min"`, `"max"` or `"auto"`, how `monitor` improves. `"auto"`
            is `"max"` for names containing `acc`, `auc`, `precision`,
            `recall`, `f1`, `iou` or `r2` and `"min"` otherwise (Keras'
            own `"auto"` also reads a private direction of custom metrics;
            pass `mode` for those). Defaults to `"auto"`.
        save_freq: `"epoch"`, or an integer `N` to save every `N` batches.
            Defaults to `"epoch"`.
        initial_value_threshold: Starting "best" value of `monitor` for
            `save_best_only`. Defaults to `None`.

    Raises:
        ValueError: If `filepath` has the wrong extension, or `mode` or
            `save_freq` is not one of its values.
        IsADirectoryError: At a save, if the formatted path is an existing
            directory.
        KeyError: At a save, if `filepath` names a field that neither the
            epoch, the batch nor `logs` fill.

    Example:

    ```python
    model.fit(
        x,
        y,
        epochs=10,
        callbacks=[
            mp.UpdatePruningStep(),
            mp.AtomicModelCheckpoint("ckpt/model.keras", save_freq=100),
        ],
    )
    model = keras.models.load_model("ckpt/model.keras")  # Always loads.
    ```
    """

    def __init__(
        self,
        filepath: str | PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
    ) -> None:
        super().__init__()
        filepath = os.fspath(filepath)
        if save_weights_only and not filepath.endswith(".weights.h5"):
            raise ValueError(
                "`filepath` must end in `.weights.h5` with "
                f"`save_weights_only=True`. Received: filepath={filepath}"
            )
        if not save_weights_only and not filepath.endswith((".keras", ".h5")):
            raise ValueError(
                "`filepath` must end in `.keras` (or `.h5`). "
                f"Received: filepath={filepath}"
            )
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                "`mode` must be 'auto', 'min' or 'max'. "
                f"Received: mode={mode!r}"
            )
        if save_freq != "epoch" and (
            not isinstance(save_freq, int)
            or isinstance(save_freq, bool)
            or save_freq < 1
        ):
            raise ValueError(
                "`save_freq` must be 'epoch' or a positive integer. "
                f"Received: save_freq={save_freq!r}"
            )
        self.filepath = filepath
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.save_freq = save_freq
        self.best = initial_value_threshold
        self._epoch = 0
        self._batches_since_save = 0
        self._last_batch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch":
            return
        # With `steps_per_execution`, `batch` jumps by several at a time.
        if self._last_batch is None or batch <= self._last_batch:
            self._batches_since_save += batch + 1
        else:
            self._batches_since_save += batch - self._last_batch
        self._last_batch = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._epoch, batch, logs or {})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def _save(self, epoch: int, batch: int | None, logs: dict) -> None:
        """Saves the model to the formatted path if due."""
        filepath = self._format_path(epoch, batch, logs)
        if not self._is_due(epoch, logs, filepath):
            return
        save = (
            self.model.save_weights
            if self.save_weights_only
            else self.model.save
        )
        if _REMOTE_PATH.match(filepath):
            save(filepath, overwrite=True)
        else:
            if os.path.isdir(filepath):
                raise IsADirectoryError(
                    "`filepath` must name a file, not an existing directory. "
                    f"Received: filepath={filepath}"
                )
            _write_atomically(filepath, lambda path: save(path, overwrite=True))
        self._print(f"Epoch {epoch + 1}: finished saving model to {filepath}")

    def _format_path(self, epoch: int, batch: int | None, logs: dict) -> str:
        fields = dict(logs, epoch=epoch + 1)
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as error:
            raise KeyError(
                f"`filepath` names a field that is not filled: {error}. "
                f"Received: filepath={self.filepath}"
            ) from None

    def _is_due(self, epoch: int, logs: dict, filepath: str) -> bool:
        """`ModelCheckpoint`'s `save_best_only` rule, and its messages."""
        if not self.save_best_only:
            self._print(f"Epoch {epoch + 1}: saving model to {filepath}")
            return True
        current = logs.get(self.monitor)
        if current is None or getattr(current, "shape", ()) != ():
            warnings.warn(
                "`save_best_only` needs a scalar `monitor` in the logs; "
                f"saving anyway. Received: {self.monitor}={current!r}",
                stacklevel=2,
            )
            return True
        current = float(current)
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self.best is not None and not self._improves(current, self.best):
            self._print(
                f"Epoch {epoch + 1}: {self.monitor} did not improve from {best}"
            )
            return False
        self._print(
            f"Epoch {epoch + 1}: {self.monitor} improved from {best} to "
            f"{current:.5f}, saving model to {filepath}"
        )
        self.best = current
        return True

    def _improves(self, current: float, best: float) -> bool:
        mode = self.mode
        if mode == "auto":
            name = self.monitor.removeprefix("val_").lower()
            higher = any(part in name for part in _HIGHER_IS_BETTER)
            mode = "max" if higher else "min"
        return current > best if mode == "max" else current < best

    def _print(self, message: str) -> None:
        """Prints as Keras' callbacks do: to stdout, or to the absl log
        when Keras' interactive logging is off."""
        if self.verbose <= 0:
            return
        if keras.config.is_interactive_logging_enabled():
            sys.stdout.write(f"\n{message}\n")
            sys.stdout.flush()
        else:
            logging.info(message)


def _write_atomically(filepath: str, write: Callable[[str], None]) -> None:
    """Writes a file through a staging copy and `os.replace`.

    `write(path)` is called with a path in a new staging directory next to
    `filepath` that has the same file name (so extension checks pass); the
    file it writes is flushed to disk and renamed over `filepath`, and the
    staging directory is removed, whether `write` succeeds or raises.

    Args:
        filepath: The local file to create or replace.
        write: A function that writes one file at the path it is given.

    Raises:
        FileNotFoundError: If `write` did not create the file.
        Exception: Whatever `write` raises; `filepath` is then unchanged.
    """
    directory, name = os.path.split(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    # The name is shortened so that the staging name stays within NAME_MAX.
    staging = tempfile.mkdtemp(
        prefix=f".{name[:_NAME_IN_STAGING]}.",
        suffix=_STAGING_SUFFIX,
        dir=directory,
    )
    try:
        staged = os.path.join(staging, name)
        write(staged)
        _fsync(staged, os.O_RDWR)
        os.replace(staged, filepath)
        _fsync_directory(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: str, flags: int) -> None:
    """Flushes a file's (or a directory's) data to disk."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    """Makes a rename in `directory` durable, where the system allows it.

    POSIX only; some file systems refuse `fsync` on a directory, and the
    rename has happened by then, so a refusal is not an error.
    """
    if os.name != "posix":
        return
    try:
        _fsync(directory, os.O_RDONLY)
    except OSError:
        pass
