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
import shutil
import tempfile
from collections.abc import Callable

import keras

from model_pruning import _compat

_STAGING_SUFFIX = ".tmp"
_NAME_IN_STAGING = 100


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Saves like `keras.callbacks.ModelCheckpoint`, but atomically.

    Takes `ModelCheckpoint`'s arguments and decides when and where to save
    the same way (`save_freq`, `save_best_only`, templates such as
    `"ckpt-{epoch:02d}.keras"`); only the writing differs. Each save goes to
    `<dir>/.<file name>.<random>.tmp/<file name>` (a staging directory in
    the target's directory, so on the same file system), is flushed with
    `fsync`, and is then moved over the target with `os.replace`, so a kill
    at any moment leaves the previous checkpoint (or the new one) whole and
    loadable. The staging directory is removed after every save, successful
    or not; only a process killed during a save leaves one behind, and it
    never matches the checkpoint's file pattern (its name starts with `.`
    and ends with `.tmp`), so it can be deleted at any time.

    Remote paths (`gs://...` and the other paths Keras treats as remote)
    are saved the way `ModelCheckpoint` saves them: object stores replace a
    whole object at once.

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
        mode: `"auto"`, `"min"` or `"max"`, how `monitor` improves.
            Defaults to `"auto"`.
        save_freq: `"epoch"`, or an integer `N` to save every `N` batches.
            Defaults to `"epoch"`.
        initial_value_threshold: Starting "best" value of `monitor` for
            `save_best_only`. Defaults to `None`.

    Raises:
        ValueError: If `filepath` has the wrong extension or `save_freq` is
            invalid (as `ModelCheckpoint`).
        IsADirectoryError: At a save, if the formatted path is an existing
            directory.

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

    def _save_model(
        self, epoch: int, batch: int | None, logs: dict | None
    ) -> None:
        """Saves the model if due, through a staging file and `os.replace`.

        Overrides `ModelCheckpoint._save_model` (Keras 3.15); the path and
        the `save_best_only` decision still come from `ModelCheckpoint`
        (`_get_file_path`, `_should_save_model`).
        """
        filepath = self._get_file_path(epoch, batch, logs)
        if _compat.is_remote_path(filepath):
            super()._save_model(epoch, batch, logs)
            return
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                "`filepath` must name a file, not an existing directory. "
                f"Received: filepath={filepath}"
            )
        save = (
            self.model.save_weights
            if self.save_weights_only
            else self.model.save
        )
        _write_atomically(filepath, lambda path: save(path, overwrite=True))
        if self.verbose > 0:
            _compat.print_message(
                f"\nEpoch {epoch + 1}: finished saving model to {filepath}"
            )


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
