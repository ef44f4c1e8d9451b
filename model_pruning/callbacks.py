"""Keras callbacks: run the mask updates in `fit`, and log them."""

import os
from typing import Any

import keras
from keras import ops

from model_pruning.pruning import Pruning


class UpdatePruningStep(keras.callbacks.Callback):
    """Runs `Pruning.conditional_mask_update_op()` between training steps.

    The update for step `t` (the optimizer's `iterations` after `t` steps)
    runs at the start of the next batch, and once more when `fit` ends, so
    the trained model always holds the masks due at its last step. The step
    is read in the graph, so updates are neither skipped nor doubled with
    `steps_per_execution=N` (the callback then runs every N steps, and an
    update that fell due in between happens at the next run) or when a fit
    resumes from a checkpoint. A checkpoint saved after batch `t`, by any
    callback in any order, holds the state before the update for step `t`,
    and a fit resumed from it makes that update first: resumed and
    uninterrupted runs agree exactly.

    The step is counted in Python (the optimizer's `iterations` read at
    each epoch's start, plus `batch`), so steps with no update due touch no
    model state: on JAX, whose `fit` holds the state outside the variables
    mid-epoch, the callback reaches the model (`self.model`, which syncs it
    back) only when an update is due.

    In a custom training loop, tfmot's recipe works as it is:
    `set_model(model)` (with `model.optimizer` set), `on_train_begin()`,
    then `on_train_batch_begin(batch=-1)` before each step and
    `on_epoch_end(batch=-1)` after each epoch; the step is then read from
    the optimizer's `iterations` at each call.

    Raises:
        ValueError: At the start of `fit` if the model has no pruned layers.
    """

    def __init__(self):
        super().__init__()
        self._pruning: Pruning | None = None
        self._epoch_start: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._pruning = _pruning_for(self.model, self._pruning)
        self._pruning.refresh()  # The model may have been loaded or updated.
        self._epoch_start = None
        # From here on the optimizer's constraint keeps the weights masked.
        for layer in self._pruning.layers:
            layer.apply_masks()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # `fit` holds the model's state in its variables here, on JAX too.
        iterations = self.model.optimizer.iterations
        self._epoch_start = int(ops.convert_to_numpy(iterations))

    def on_train_batch_begin(
        self, batch: int, logs: dict | None = None
    ) -> None:
        # `batch` is the execution's first step, so this is the step the
        # optimizer has taken, with `steps_per_execution` too.
        step = None
        if batch >= 0 and self._epoch_start is not None:
            step = self._epoch_start + batch
        # The rule in Python first: steps with nothing due read nothing.
        if self._pruning.any_update_due(step):
            _ = self.model  # On JAX, puts fit's state back in the variables.
            self._pruning.conditional_mask_update_op(step)

    def on_epoch_end(
        self,
        epoch: int | None = None,
        logs: dict | None = None,
        batch: int | None = None,
    ) -> None:
        """In a custom loop, runs the update due after the epoch's last step.

        tfmot's custom training loops call `on_epoch_end(batch=-1)` after
        each epoch, and never `on_train_end`: called with `batch`, it makes
        the update due. In `fit` (no `batch`) it does nothing: the next
        batch, or the end of `fit`, makes that update, so a checkpoint saved
        at the epoch's end holds the state before it, whatever the order of
        the callbacks.

        Args:
            epoch: The epoch, unused. Defaults to `None`.
            logs: Unused. Defaults to `None`.
            batch: Given by tfmot's custom-loop recipe (its value is
                unused). Defaults to `None`.
        """
        if batch is not None:
            self._pruning.conditional_mask_update_op()

    def on_train_end(self, logs: dict | None = None) -> None:
        _ = self.model  # On JAX, puts fit's state back in the variables.
        self._pruning.conditional_mask_update_op()
        self._epoch_start = None


class PruningSummaries(keras.callbacks.Callback):
    """Writes pruning scalars for TensorBoard at the optimizer's step.

    Scalars: the schedule's target sparsity and last update step per hparams
    name, and for every pruned weight its target sparsity, mask sparsity and
    threshold (see `Pruning.add_pruning_summaries`). They go to
    `<log_dir>/metrics`, as tfmot wrote them. In `fit` they are written at
    each epoch's end; in a custom loop, at each call of `on_epoch_begin` or
    `on_epoch_end` (after `set_model`), as tfmot's recipe makes them.

    Args:
        log_dir: Directory of the TensorBoard logs.
        update_freq: `"epoch"` to write at the end of each epoch, or an
            integer `N` to write every `N` batches too. Defaults to
            `"epoch"`.

    Raises:
        ValueError: If `log_dir` is empty or `update_freq` is invalid.
    """

    def __init__(self, log_dir: str, update_freq: Any = "epoch"):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(
                "`log_dir` must be a non-empty path. "
                f"Received: log_dir={log_dir!r}"
            )
        if update_freq != "epoch" and not (
            isinstance(update_freq, int)
            and not isinstance(update_freq, bool)
            and update_freq > 0
        ):
            raise ValueError(
                "`update_freq` must be 'epoch' or a positive integer. "
                f"Received: update_freq={update_freq!r}"
            )
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._pruning: Pruning | None = None
        self._in_fit = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start()
        self._in_fit = True

    def on_train_batch_begin(
        self, batch: int, logs: dict | None = None
    ) -> None:
        if self.update_freq != "epoch" and batch % self.update_freq == 0:
            self._write()

    def on_epoch_begin(
        self, epoch: int | None = None, logs: dict | None = None
    ) -> None:
        # tfmot's custom-loop recipe calls only `on_epoch_begin`.
        if not self._in_fit:
            self._write()

    def on_epoch_end(
        self,
        epoch: int | None = None,
        logs: dict | None = None,
        batch: int | None = None,
    ) -> None:
        self._write()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._in_fit = False
        if self._writer is not None:
            self._writer.flush()

    def _start(self) -> None:
        self._pruning = _pruning_for(
            self.model, self._pruning, updates_masks=False
        )
        if self._writer is None:
            import tensorflow as tf  # tf.summary, on any Keras backend

            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "metrics")
            )

    def _write(self) -> None:
        if self._pruning is None or self._pruning.model is not self.model:
            self._start()  # A custom loop need not call `on_train_begin`.
        with self._writer.as_default():
            self._pruning.add_pruning_summaries()
        self._writer.flush()


def _pruning_for(
    model: keras.Model, previous: Pruning | None, updates_masks: bool = True
) -> Pruning:
    """Returns a `Pruning` for `model`, reusing `previous` (and its traced
    update function) when a later `fit` trains the same model."""
    if previous is not None and previous.model is model:
        return previous
    return Pruning(model=model, updates_masks=updates_masks)
