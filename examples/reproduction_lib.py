"""Shared machinery of the paper reproductions (Zhu & Gupta 2017).

One experiment trains models of one task under one `Recipe`, the same for
every model: batch size, step budget, learning-rate schedule (a function of
the optimizer step) and, for sparse models, when pruning begins and ends.

`train_width()` trains the dense model of one width for the whole budget
and, for each requested sparsity, a pruned branch of it: the branch starts
from the dense model's weights *and optimizer state* at the step where
pruning begins, so it is the run "train dense, then prune from
`begin_step` on" without paying for the dense prefix again. Every run, dense
or sparse, ends after the same number of steps. (The data order starts over
at the branch step, for the dense run as well, so after it dense and sparse
runs see the same batches.)

Also here: TensorBoard summaries of the learning rate and of the task's
metric during training, reading those and `PruningSummaries`' logs back,
text tables (printed, and written as Markdown and CSV) and the plots
(matplotlib, imported only when a plot is drawn).
"""

import csv
import dataclasses
import glob
import logging
import math
import os
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

import model_pruning as mp

MODES = ("tiny", "quick", "full")


class Task(Protocol):
    """What `train_width()` needs to know about a task (see `tasks.py`)."""

    name: str
    metric_name: str  # "accuracy" or "perplexity"
    higher_is_better: bool

    def build_model(self, width: float) -> keras.Model: ...

    def compile(self, model: keras.Model, optimizer: Any) -> None: ...

    def train_dataset(self, batch_size: int, seed: int) -> tf.data.Dataset:
        """Infinite, shuffled, batched training data."""

    def evaluate(self, model: keras.Model, split: str) -> float:
        """The metric on `"val_subset"`, `"val"` or `"test"`."""

    def width_label(self, width: float) -> str: ...

    # Optional: regexes of weights left dense (`unpruned_weights`), as the
    # paper left MobileNet's few first-layer and depthwise weights dense.


@keras.saving.register_keras_serializable(package="model_pruning_examples")
class DecayPhases(keras.optimizers.schedules.LearningRateSchedule):
    """Exponential learning-rate decay in phases of the optimizer step.

    Phase `i` covers steps `[begin_i, end_i)` and decays exponentially from
    `initial_i` to `final_i`; each phase begins where the previous ended.
    After the last phase the rate stays at its final value.

    Args:
        phases: `(begin_step, end_step, initial_rate, final_rate)` tuples,
            contiguous, the first beginning at step 0.
    """

    def __init__(self, phases: Sequence[Sequence[float]]):
        phases = [tuple(p) for p in phases]
        if not phases or phases[0][0] != 0:
            raise ValueError(f"phases must start at step 0. Got {phases}")
        for (_, end, _, _), (begin, _, _, _) in zip(
            phases, phases[1:], strict=False
        ):
            if begin != end:
                raise ValueError(f"phases must be contiguous. Got {phases}")
        for begin, end, initial, final in phases:
            if end <= begin or initial <= 0 or final <= 0:
                raise ValueError(
                    "each phase needs end > begin and positive rates. "
                    f"Got {phases}"
                )
        self.phases = phases

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        rate = tf.constant(float(self.phases[0][2]), tf.float32)
        for begin, end, initial, final in self.phases:
            fraction = tf.clip_by_value((step - begin) / (end - begin), 0, 1)
            phase_rate = initial * tf.pow(final / initial, fraction)
            rate = tf.where(step >= begin, phase_rate, rate)
        return rate

    def get_config(self) -> dict:
        return {"phases": [list(p) for p in self.phases]}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How every run of an experiment trains.

    Attributes:
        batch_size: Training batch size.
        total_steps: The step budget of every run, dense or sparse.
        chunk_steps: Steps between evaluations during training (one Keras
            "epoch"); divides `total_steps` and `prune_begin_step`.
        learning_rate: Returns the schedule for a base learning rate.
        prune_begin_step: Step at which pruning begins (the branch point).
        prune_end_step: Step at which the final sparsity is reached.
        prune_frequency: Steps between mask updates.
        optimizer: `"adam"`, or `"sgd"` (plain, as Zaremba et al.).
        clipnorm: Global gradient-norm clipping, or `None`.
    """

    batch_size: int
    total_steps: int
    chunk_steps: int
    learning_rate: Callable[[float], DecayPhases]
    prune_begin_step: int
    prune_end_step: int
    prune_frequency: int
    optimizer: str = "adam"
    clipnorm: float | None = None

    def describe(self, base_learning_rate: float = 1.0) -> str:
        """One line: batch, budget, learning-rate phases, pruning."""
        phases = ", ".join(
            f"steps {b}-{e}: {i:.2g} -> {f:.2g}"
            for b, e, i, f in self.learning_rate(base_learning_rate).phases
        )
        name = {"adam": "Adam", "sgd": "SGD"}[self.optimizer]
        return (
            f"batch {self.batch_size}, {self.total_steps} steps; {name} "
            f"learning rate {phases} (exponential); pruning from step "
            f"{self.prune_begin_step} to {self.prune_end_step}, masks "
            f"updated every {self.prune_frequency} steps"
            + (f"; global clipnorm {self.clipnorm:g}" if self.clipnorm else "")
        )

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"Unknown optimizer {self.optimizer!r}")
        for name in ("total_steps", "prune_begin_step"):
            if getattr(self, name) % self.chunk_steps:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not a multiple of "
                    f"chunk_steps={self.chunk_steps}"
                )
        if not (
            0 <= self.prune_begin_step < self.prune_end_step
            and self.prune_end_step <= self.total_steps
        ):
            raise ValueError(
                "need 0 <= prune_begin_step < prune_end_step <= total_steps. "
                f"Got {self.prune_begin_step}, {self.prune_end_step}, "
                f"{self.total_steps}"
            )


@dataclasses.dataclass
class RunResult:
    """One trained model: where it stands and how good it is."""

    task: str
    width: float
    width_label: str
    sparsity: float  # The target; 0.0 for a dense model.
    learning_rate: float
    steps: int
    nnz: int  # Non-zero parameters, biases included.
    params: int  # All parameters.
    val: float
    test: float
    seconds: float  # Training time of this run's own steps.
    weight_sparsity: dict[str, float] = dataclasses.field(default_factory=dict)
    log_dir: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.width_label}, {self.sparsity:.1%}"


@dataclasses.dataclass
class RunOutput:
    result: RunResult
    model: keras.Model  # Stripped (no pruning wrappers), compiled.
    pruned_model: keras.Model | None = None  # Before stripping.


class TrainingSummaries(keras.callbacks.Callback):
    """Writes `learning_rate` and `eval/<metric>` at the optimizer's step.

    At the start of `fit` and at the end of every epoch (chunk), the task's
    metric on its validation subset goes to `<log_dir>/eval`, as a
    TensorBoard scalar, together with the learning rate; with `verbose`, a
    line is printed too. `values` keeps them by step.

    Args:
        task: The task.
        log_dir: The run's log directory.
        label: The run's name, for printing.
        verbose: Print a line per evaluation.
        known: `{step: value}` already measured (a branch's starting point
            is its dense run's model): written, not evaluated again.
    """

    def __init__(
        self,
        task: Task,
        log_dir: str,
        label: str,
        verbose: bool,
        known: dict[int, float] | None = None,
    ):
        super().__init__()
        self.task = task
        self.label = label
        self.verbose = verbose
        self.values: dict[int, float] = dict(known or {})
        self._writer = tf.summary.create_file_writer(
            os.path.join(log_dir, "eval")
        )
        self._start = time.perf_counter()
        self._last_step = None

    def _write(self) -> None:
        optimizer = self.model.optimizer
        step = int(optimizer.iterations.numpy())
        if step == self._last_step:  # A second `fit` resuming the first.
            return
        self._last_step = step
        rate = float(optimizer.learning_rate.numpy())
        value = self.values.get(step)
        if value is None:
            value = self.task.evaluate(self.model, "val_subset")
            self.values[step] = value
        with self._writer.as_default():
            tf.summary.scalar("learning_rate", rate, step=step)
            tf.summary.scalar(f"eval/{self.task.metric_name}", value, step)
        self._writer.flush()
        if self.verbose:
            sparsity = ""
            if mp.pruned_layers(self.model):
                sparsities = mp.get_weight_sparsity(self.model)
                sparsity = f"  mask sparsity {max(sparsities):.3f}"
            print(
                f"  [{self.label}] step {step:6d}  lr {rate:.2e}  "
                f"val subset {self.task.metric_name} {value:.4f}{sparsity}  "
                f"({time.perf_counter() - self._start:.0f} s)",
                flush=True,
            )

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._write()

    def on_train_batch_begin(
        self, batch: int, logs: dict | None = None
    ) -> None:
        # The learning rate alone, ten times per chunk, for Figure 2a.
        if batch and batch % max(1, self.params["steps"] // 10) == 0:
            optimizer = self.model.optimizer
            with self._writer.as_default():
                tf.summary.scalar(
                    "learning_rate",
                    float(optimizer.learning_rate.numpy()),
                    step=int(optimizer.iterations.numpy()),
                )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._write()


def count_nonzero(model: keras.Model) -> tuple[int, int]:
    """Returns `(non-zero parameters, all parameters)` of `model`."""
    values = model.get_weights()
    return (
        int(sum(np.count_nonzero(v) for v in values)),
        int(sum(v.size for v in values)),
    )


def _make_optimizer(recipe: Recipe, learning_rate: float) -> Any:
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
    return optimizers[recipe.optimizer](
        recipe.learning_rate(learning_rate),
        global_clipnorm=recipe.clipnorm,
    )


def _slot_variables(optimizer: Any) -> list:
    """The optimizer's per-weight variables, in build order."""
    return [
        v
        for v in optimizer.variables
        if v.path.split("/")[-1] not in ("iteration", "learning_rate")
    ]


def _snapshot_optimizer(optimizer: Any) -> tuple[int, list[np.ndarray]]:
    return (
        int(optimizer.iterations.numpy()),
        [v.numpy() for v in _slot_variables(optimizer)],
    )


def _restore_optimizer(
    optimizer: Any, variables: list, snapshot: tuple[int, list[np.ndarray]]
) -> None:
    """Builds `optimizer` for `variables` and loads a snapshot into it.

    Raises:
        RuntimeError: If the snapshot's slots do not match, in number or
            shape, those of `variables` (the pruned model must list its
            trainable weights in the dense model's order).
    """
    optimizer.build(variables)
    step, values = snapshot
    slots = _slot_variables(optimizer)
    shapes = [tuple(v.shape) for v in slots]
    if shapes != [v.shape for v in values]:
        raise RuntimeError(
            "Optimizer state does not match the branch's weights: "
            f"{shapes} vs {[v.shape for v in values]}"
        )
    optimizer.iterations.assign(step)
    for slot, value in zip(slots, values, strict=True):
        slot.assign(value)


def _run_label(
    task: Task,
    width: float,
    sparsity: float,
    lr: float,
    block_size: tuple[int, int] = (1, 1),
) -> str:
    label = f"{task.name}_w{width:g}_s{sparsity:g}_lr{lr:g}"
    if sparsity and tuple(block_size) != (1, 1):
        label += f"_block{block_size[0]}x{block_size[1]}"
    return label


def _finish(
    task: Task,
    model: keras.Model,
    width: float,
    sparsity: float,
    lr: float,
    steps: int,
    seconds: float,
    log_dir: str,
    pruned: keras.Model | None = None,
    note: str = "",
) -> RunOutput:
    """Strips `model` if pruned, evaluates it and counts its non-zeros."""
    weight_sparsity = {}
    if pruned is not None:
        names = [entry.name for entry in mp.pruned_weights(pruned)]
        weight_sparsity = dict(
            zip(names, mp.get_weight_sparsity(pruned), strict=True)
        )
        model = mp.strip_pruning(pruned)
        task.compile(model, "adam")
    nnz, params = count_nonzero(model)
    result = RunResult(
        task=task.name,
        width=width,
        width_label=task.width_label(width),
        sparsity=sparsity,
        learning_rate=lr,
        steps=steps,
        nnz=nnz,
        params=params,
        val=task.evaluate(model, "val"),
        test=task.evaluate(model, "test"),
        seconds=seconds,
        weight_sparsity=weight_sparsity,
        log_dir=log_dir,
        note=note,
    )
    return RunOutput(result, model, pruned)


def train_width(
    task: Task,
    width: float,
    sparsities: Sequence[float],
    recipe: Recipe,
    learning_rate: float,
    log_root: str,
    seed: int = 0,
    evaluate_branch_point: bool = False,
    verbose: bool = True,
    block_size: tuple[int, int] = (1, 1),
) -> list[RunOutput]:
    """Trains the dense model of `width` and a pruned branch per sparsity.

    The dense model trains for `recipe.total_steps`. Each sparsity `s > 0`
    gets a copy of the dense model (weights and optimizer state) at step
    `recipe.prune_begin_step`, wrapped with `prune_low_magnitude` and a
    `PolynomialDecay(0, s, prune_begin_step, prune_end_step)` schedule, and
    trained to `recipe.total_steps` under the same learning-rate schedule.
    Summaries go to `<log_root>/<run label>/{eval,metrics}`.

    Args:
        task: The task.
        width: The model's width (the task interprets it).
        sparsities: Final sparsities of the pruned branches (0 is ignored:
            the dense run is always made).
        recipe: How every run trains.
        learning_rate: Base learning rate given to `recipe.learning_rate`.
        log_root: Parent directory of the runs' TensorBoard logs.
        seed: Seeds the dense model's initialization; the data order is the
            task's.
        evaluate_branch_point: Also return the dense model evaluated at the
            branch step (its result has `note="branch point"`).
        verbose: Print progress.
        block_size: `(height, width)` of the pruning blocks of every pruned
            rank-2 weight (the hparams' `block_height`, `block_width`; AVG
            pooling); `(1, 1)`, the default, prunes weight by weight.

    Returns:
        The dense run first (after the branch-point run, if asked), then one
        run per sparsity, in the order given.
    """
    keras.utils.set_random_seed(seed)
    dataset = task.train_dataset(recipe.batch_size, seed)
    chunk = recipe.chunk_steps
    branch_epoch = recipe.prune_begin_step // chunk
    total_epochs = recipe.total_steps // chunk
    sparsities = [s for s in sparsities if s > 0]
    outputs = []

    dense_label = _run_label(task, width, 0.0, learning_rate)
    dense_dir = os.path.join(log_root, dense_label)
    dense = task.build_model(width)
    task.compile(dense, _make_optimizer(recipe, learning_rate))
    summaries = TrainingSummaries(task, dense_dir, dense_label, verbose)
    fit_args = dict(
        x=dataset,
        steps_per_epoch=chunk,
        shuffle=False,  # The dataset is shuffled.
        verbose=0,
        callbacks=[summaries],
    )
    if verbose:
        print(f"{dense_label}: dense, {recipe.total_steps} steps", flush=True)
    start = time.perf_counter()
    seconds = 0.0
    if branch_epoch:
        dense.fit(epochs=branch_epoch, **fit_args)
    seconds += time.perf_counter() - start
    weights = dense.get_weights()
    optimizer_state = _snapshot_optimizer(dense.optimizer)
    if evaluate_branch_point:
        at_branch = task.build_model(width)  # `dense` trains on.
        at_branch.set_weights(weights)
        task.compile(at_branch, "adam")
        outputs.append(
            _finish(
                task,
                at_branch,
                width,
                0.0,
                learning_rate,
                recipe.prune_begin_step,
                seconds,
                dense_dir,
                note="branch point",
            )
        )
    start = time.perf_counter()
    dense.fit(epochs=total_epochs, initial_epoch=branch_epoch, **fit_args)
    seconds += time.perf_counter() - start
    outputs.append(
        _finish(
            task,
            dense,
            width,
            0.0,
            learning_rate,
            recipe.total_steps,
            seconds,
            dense_dir,
        )
    )

    for sparsity in sparsities:
        label = _run_label(task, width, sparsity, learning_rate, block_size)
        log_dir = os.path.join(log_root, label)
        base = task.build_model(width)
        base.set_weights(weights)
        schedule = mp.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=sparsity,
            begin_step=recipe.prune_begin_step,
            end_step=recipe.prune_end_step,
            frequency=recipe.prune_frequency,
        )
        hparams = schedule.to_hparams()
        if tuple(block_size) != (1, 1):
            hparams = dataclasses.replace(
                hparams, block_height=block_size[0], block_width=block_size[1]
            )
        kept = getattr(task, "unpruned_weights", ())
        if kept:  # Kept dense through a per-weight target of 0.
            hparams = dataclasses.replace(
                hparams, weight_sparsity_map=tuple(f"{w}:0.0" for w in kept)
            )
        pruned = mp.prune_low_magnitude(base, hparams=hparams)
        optimizer = _make_optimizer(recipe, learning_rate)
        task.compile(pruned, optimizer)
        _restore_optimizer(
            optimizer, pruned.trainable_variables, optimizer_state
        )
        known = {  # The branch starts from the dense model at this step.
            step: value
            for step, value in summaries.values.items()
            if step == recipe.prune_begin_step
        }
        callbacks = [
            mp.UpdatePruningStep(),
            # Four points per mask update, so Figure 1 shows eq. (1)'s curve.
            mp.PruningSummaries(
                log_dir, update_freq=max(1, recipe.prune_frequency // 4)
            ),
            TrainingSummaries(task, log_dir, label, verbose, known),
        ]
        if verbose:
            print(
                f"{label}: pruned from step {recipe.prune_begin_step} to "
                f"{recipe.prune_end_step}, trained to {recipe.total_steps}",
                flush=True,
            )
        start = time.perf_counter()
        pruned.fit(
            dataset,
            epochs=total_epochs,
            initial_epoch=branch_epoch,
            steps_per_epoch=chunk,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        seconds = time.perf_counter() - start
        outputs.append(
            _finish(
                task,
                None,
                width,
                sparsity,
                learning_rate,
                recipe.total_steps,
                seconds,
                log_dir,
                pruned=pruned,
            )
        )
    return outputs


def select_best(
    results: Sequence[RunResult], higher_is_better: bool
) -> list[RunResult]:
    """Per `(width, sparsity, note)`, the run with the best validation
    metric (the learning-rate search), in first-seen order."""
    best: dict[tuple, RunResult] = {}
    for result in results:
        key = (result.width, result.sparsity, result.note)
        current = best.get(key)
        better = (
            current is None
            or (higher_is_better and result.val > current.val)
            or (not higher_is_better and result.val < current.val)
        )
        if better:
            best[key] = result
    return list(best.values())


# Tables.


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Returns a Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max([len(h)] + [len(r[i]) for r in cells])
        for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) for v, w in zip(values, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def write_table(
    path_stem: str,
    headers: Sequence[str],
    rows: Sequence[Sequence],
    title: str = "",
) -> str:
    """Prints the table and writes `<path_stem>.md` and `<path_stem>.csv`.

    Returns:
        The Markdown text.
    """
    text = format_table(headers, rows)
    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    with open(path_stem + ".md", "w", encoding="utf-8") as f:
        f.write((f"{title}\n\n" if title else "") + text + "\n")
    with open(path_stem + ".csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)
    print(f"\n{title}\n{text}\n(written to {path_stem}.md and .csv)")
    return text


def format_count(count: int) -> str:
    """`4_210_000 -> "4.21M"`, `61_035 -> "61.0k"`."""
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    if count >= 1_000:
        return f"{count / 1e3:.1f}k"
    return str(count)


# TensorBoard logs.


def read_scalars(log_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads every scalar under `log_dir` with TensorBoard's
    `EventAccumulator` (each directory holding event files, recursively).

    Returns:
        `{tag: (steps, values)}`, sorted by step; when a step was written
        twice, the last value read wins.
    """
    from tensorboard.backend.event_processing import event_accumulator

    # The accumulator logs at INFO each time it reaches the end of a file.
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    points: dict[str, dict[int, float]] = {}
    pattern = os.path.join(log_dir, "**", "events.out.tfevents.*")
    directories = sorted(
        {os.path.dirname(p) for p in glob.glob(pattern, recursive=True)}
    )
    for directory in directories:
        accumulator = event_accumulator.EventAccumulator(
            directory,
            size_guidance={
                event_accumulator.TENSORS: 0,
                event_accumulator.SCALARS: 0,
            },
        )
        accumulator.Reload()
        tags = accumulator.Tags()
        for tag in tags.get(event_accumulator.TENSORS, []):
            for event in accumulator.Tensors(tag):
                value = float(tf.make_ndarray(event.tensor_proto))
                points.setdefault(tag, {})[event.step] = value
        for tag in tags.get(event_accumulator.SCALARS, []):
            for event in accumulator.Scalars(tag):
                points.setdefault(tag, {})[event.step] = float(event.value)
    return {
        tag: (
            np.array(sorted(by_step), np.int64),
            np.array([by_step[s] for s in sorted(by_step)], np.float64),
        )
        for tag, by_step in points.items()
    }


def schedule_tag(scalars: dict) -> str | None:
    """The tag of the schedule's target sparsity (`<spec name>/sparsity`)
    in `PruningSummaries`' scalars, or `None`."""
    for tag in sorted(scalars):
        name = tag.rsplit("/", 1)[0]
        if tag.endswith("/sparsity") and (
            f"{name}/last_mask_update_step" in scalars
        ):
            return tag
    return None


def mask_sparsity_tags(scalars: dict) -> list[str]:
    """Tags of each pruned weight's mask sparsity."""
    target = schedule_tag(scalars)
    return sorted(
        tag
        for tag in scalars
        if tag.endswith("/sparsity")
        and tag != target
        and tag.rsplit("/", 1)[0] + "/threshold" in scalars
    )


# Plots. matplotlib is an optional extra, imported only here.


def import_pyplot() -> Any:
    """Returns `matplotlib.pyplot` with the non-interactive Agg backend.

    Raises:
        ImportError: If matplotlib is missing, saying how to install it.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Plots need matplotlib: pip install matplotlib "
            "(or pip install -e '.[examples]')"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots_enabled(requested: bool) -> bool:
    """Whether to draw plots: requested and matplotlib importable (else a
    warning is printed and the example goes on without plots)."""
    if not requested:
        return False
    try:
        import_pyplot()
    except ImportError as error:
        print(f"Warning: {error}; no plots written.")
        return False
    return True


def plot_schedule(runs: dict[str, dict], path: str, title: str) -> None:
    """Figure 1: target sparsity (eq. 1) against step, with the sparsity of
    one mask, for each run, read from `PruningSummaries`' logs."""
    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, scalars in runs.items():
        tag = schedule_tag(scalars)
        if tag is None:
            continue
        steps, values = scalars[tag]
        (line,) = ax.plot(steps, values, label=f"{label}: target")
        masks = mask_sparsity_tags(scalars)
        if masks:
            steps, values = scalars[masks[0]]
            ax.step(
                steps,
                values,
                where="post",
                linestyle=":",
                color=line.get_color(),
                label=f"{label}: mask of {masks[0].rsplit('/', 1)[0]}",
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("sparsity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(
    runs: dict[str, dict], metric_name: str, path: str, title: str
) -> None:
    """Figure 2: (a) learning rate and target sparsity against step, for
    the last run given; (b) the validation metric of every run, with its
    target sparsity on a second axis."""
    plt = import_pyplot()
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    last = list(runs)[-1]
    scalars = runs[last]
    # The learning rate of the run logged longest (the dense run's covers
    # the steps before the branches began too).
    rates = max(
        (r["learning_rate"] for r in runs.values() if "learning_rate" in r),
        key=lambda points: len(points[0]),
        default=None,
    )
    if rates is not None:
        ax_a.plot(*rates, color="tab:blue", label="learning rate")
    ax_a.set_yscale("log")
    ax_a.set_xlabel("training step")
    ax_a.set_ylabel("learning rate", color="tab:blue")
    ax_a.set_title(f"(a) learning rate and sparsity ({last})")
    twin = ax_a.twinx()
    tag = schedule_tag(scalars)
    if tag is not None:
        steps, values = scalars[tag]
        twin.plot(steps, values, color="tab:red", label="target sparsity")
    twin.set_ylabel("target sparsity", color="tab:red")
    twin.set_ylim(0, 1)
    twin_b = ax_b.twinx()
    shown = []  # Values after each run's first point, for the y-limits.
    for label, run in runs.items():
        key = f"eval/{metric_name}"
        if key not in run:
            continue
        steps, values = run[key]
        shown.extend(values[1:])
        (line,) = ax_b.plot(steps, values, marker=".", label=label)
        tag = schedule_tag(run)
        if tag is not None:
            steps, values = run[tag]
            twin_b.plot(steps, values, ":", alpha=0.6, color=line.get_color())
    ax_b.set_xlabel("training step")
    ax_b.set_ylabel(f"validation {metric_name} (solid)")
    if metric_name == "perplexity":
        ax_b.set_yscale("log")
        ax_b.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax_b.yaxis.set_minor_formatter(plt.matplotlib.ticker.ScalarFormatter())
    if shown:  # Zoom past the untrained model's first point.
        low, high = min(shown), max(shown)
        margin = 0.05 * (high - low) or 0.01 * high
        if metric_name == "perplexity":
            ax_b.set_ylim(low / 1.05, high * 1.05)
        else:
            ax_b.set_ylim(low - margin, high + margin)
    twin_b.set_ylabel("target sparsity (dotted)")
    twin_b.set_ylim(0, 1)
    ax_b.set_title(f"(b) {metric_name} during training")
    ax_b.grid(alpha=0.3)
    ax_b.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sparse_vs_dense(
    dense: Sequence[RunResult],
    sparse: Sequence[RunResult],
    metric_name: str,
    path: str,
    title: str,
) -> None:
    """Figure 3: test metric against non-zero parameters (log scale), the
    dense widths and the sparsities of the largest width as two curves."""
    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for runs, style, name in (
        (dense, "o-", "small-dense (widths)"),
        (sparse, "s-", "large-sparse (sparsities)"),
    ):
        runs = sorted(runs, key=lambda r: r.nnz)
        if not runs:
            continue
        ax.plot(
            [r.nnz for r in runs], [r.test for r in runs], style, label=name
        )
        for r in runs:
            text = r.width_label if r.sparsity == 0 else f"{r.sparsity:.1%}"
            ax.annotate(
                text,
                (r.nnz, r.test),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    ax.set_xscale("log")
    ticker = plt.matplotlib.ticker
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(
        ticker.FuncFormatter(lambda x, _: format_count(int(round(x))))
    )
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    if metric_name == "perplexity":
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(ticker.ScalarFormatter())
    ax.set_xlabel("non-zero parameters (log scale)")
    ax.set_ylabel(f"test {metric_name}")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Flags shared by the example scripts.

RECIPE_FLAGS = (
    "batch_size",
    "total_steps",
    "chunk_steps",
    "prune_begin_step",
    "prune_end_step",
    "frequency",
    "lr_decay",
)


def define_common_flags(flags_module: Any, output_dir: str) -> None:
    """Defines the flags every reproduction script has (call it once, at
    import of the script, never of a library module)."""
    define = flags_module
    define.DEFINE_enum("mode", "quick", MODES, "Size of the experiment.")
    define.DEFINE_enum(
        "data",
        "real",
        ["real", "synthetic"],
        "real: Fashion-MNIST or the Penn Treebank; synthetic: generated "
        "data (no data set or package needed).",
    )
    define.DEFINE_integer("batch_size", None, "Training batch size.")
    define.DEFINE_integer(
        "total_steps", None, "Step budget of every model, dense or sparse."
    )
    define.DEFINE_integer(
        "chunk_steps", None, "Steps between evaluations during training."
    )
    define.DEFINE_integer(
        "prune_begin_step", None, "Step where pruning begins."
    )
    define.DEFINE_integer(
        "prune_end_step", None, "Step where the final sparsity is reached."
    )
    define.DEFINE_integer("frequency", None, "Steps between mask updates.")
    define.DEFINE_float(
        "lr_decay",
        None,
        "Learning rate at the end of a decay phase / at its start.",
    )
    define.DEFINE_string(
        "output_dir", output_dir, "Where tables, plots and logs go."
    )
    define.DEFINE_bool("plot", True, "Write the plots (needs matplotlib).")
    define.DEFINE_bool("verbose", True, "Print progress during training.")
    define.DEFINE_integer("seed", 0, "Random seed.")


def resolve(flags_values: Any, name: str, mode_defaults: dict) -> Any:
    """The flag's value if given on the command line, else the mode's."""
    flag = flags_values[name]
    return flag.value if flag.present else mode_defaults[name]


# Reports shared by the example scripts.


def write_weight_sparsity_table(
    outputs: Sequence[RunOutput], path_stem: str, title: str
) -> str:
    """Writes each pruned weight's shape and mask sparsity in every sparse
    run of `outputs` (one column per run)."""
    sparse = [o for o in outputs if o.pruned_model is not None]
    if not sparse:
        return ""
    shapes = {
        entry.name: tuple(entry.weight.shape)
        for entry in mp.pruned_weights(sparse[0].pruned_model)
    }
    headers = ["weight", "shape", "weights"] + [
        f"{o.result.sparsity:.1%} run" for o in sparse
    ]
    rows = [
        [name, "x".join(map(str, shape)), f"{math.prod(shape):,}"]
        + [f"{o.result.weight_sparsity[name]:.4f}" for o in sparse]
        for name, shape in shapes.items()
    ]
    return write_table(path_stem, headers, rows, title)


def plot_schedule_and_training(
    task: Task,
    outputs: Sequence[RunOutput],
    path_stem: str,
    title: str,
) -> list[str]:
    """Figures 1 and 2 from the TensorBoard logs of `outputs` (a dense run
    and its pruned branches): `<stem>_schedule.png`, `<stem>_training.png`.

    Returns:
        The paths written.
    """
    runs = {}
    for output in outputs:
        if output.result.note:
            continue
        name = (
            "dense"
            if output.result.sparsity == 0
            else f"{output.result.sparsity:.1%}"
        )
        runs[name] = read_scalars(output.result.log_dir)
    schedule_path = path_stem + "_schedule.png"
    training_path = path_stem + "_training.png"
    sparse = {k: v for k, v in runs.items() if schedule_tag(v) is not None}
    plot_schedule(sparse, schedule_path, f"{title}: sparsity schedule (eq. 1)")
    plot_training(runs, task.metric_name, training_path, title)
    return [schedule_path, training_path]
