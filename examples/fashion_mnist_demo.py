"""Gradual magnitude pruning of a small MLP on Fashion-MNIST, end to end.

Trains a dense 784-300-100-10 MLP, prunes it to `--target_sparsity` with a
`PolynomialDecay` schedule (Zhu & Gupta 2017) while fine-tuning, strips the
pruning wrappers, checks that the stripped model predicts exactly what the
pruned one does, saves it, and prints per-weight sparsity tables, test
accuracies and timings.

Usage, from the repository root:

    python examples/fashion_mnist_demo.py --quick   # 6k/1k subset, ~15 s
    python examples/fashion_mnist_demo.py           # full data, < 1 minute

(Times measured on 2 CPU cores, TensorFlow start-up included.)

`--log_dir` sets where the TensorBoard pruning summaries go (default: a new
temporary directory). See `fashion_mnist_data.py` for where the data comes
from (`--data_dir`, `$FASHION_MNIST_DIR`, Debian's `dataset-fashion-mnist`,
or Keras' download).
"""

import dataclasses
import gzip
import math
import os
import sys
import tempfile
import time

import keras
import numpy as np
from absl import app
from absl import flags

import model_pruning as mp

try:  # Run as a script: this file's directory is on sys.path.
    import fashion_mnist_data
except ImportError:  # Run as `python -m examples.fashion_mnist_demo`.
    from examples import fashion_mnist_data

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "data_dir", None, "Directory with the four Fashion-MNIST IDX .gz files."
)
flags.DEFINE_integer("dense_epochs", 2, "Epochs of dense training.")
flags.DEFINE_integer("prune_epochs", 2, "Epochs of training while pruning.")
flags.DEFINE_float("target_sparsity", 0.9, "Final sparsity of the kernels.")
flags.DEFINE_integer("frequency", 100, "Steps between mask updates.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate, dense phase.")
flags.DEFINE_float(
    "prune_learning_rate", 1e-3, "Adam learning rate while pruning."
)
# `--log_dir` is absl.logging's own flag (default ""), reused here for the
# TensorBoard pruning summaries; absl writes no log files unless asked to.
flags.DEFINE_string(
    "output",
    "/tmp/model_pruning_demo/final.keras",
    "Where to save the stripped, pruned model.",
)
flags.DEFINE_bool(
    "quick",
    False,
    "Use 6,000 train / 1,000 test examples, 1 epoch per phase, batch size "
    "32 and mask updates every 10 steps (epoch, batch size and frequency "
    "flags given explicitly still win).",
)
flags.DEFINE_integer("seed", 0, "Random seed.")

QUICK_TRAIN, QUICK_TEST, QUICK_BATCH, QUICK_FREQUENCY = 6000, 1000, 32, 10


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's sizes, after `--quick` is applied."""

    train_size: int | None
    test_size: int | None
    dense_epochs: int
    prune_epochs: int
    batch_size: int
    frequency: int


def _settings() -> Settings:
    if not FLAGS.quick:
        return Settings(
            None,
            None,
            FLAGS.dense_epochs,
            FLAGS.prune_epochs,
            FLAGS.batch_size,
            FLAGS.frequency,
        )

    def pick(name: str, quick_value: int) -> int:
        return FLAGS[name].value if FLAGS[name].present else quick_value

    return Settings(
        QUICK_TRAIN,
        QUICK_TEST,
        pick("dense_epochs", 1),
        pick("prune_epochs", 1),
        pick("batch_size", QUICK_BATCH),
        pick("frequency", QUICK_FREQUENCY),
    )


def _load_data(settings: Settings) -> tuple:
    """Loads the data and, with `--quick`, a seeded random subset of it."""
    try:
        train, test = fashion_mnist_data.load_fashion_mnist(FLAGS.data_dir)
    except RuntimeError as error:
        sys.exit(f"Error: {error}")
    rng = np.random.default_rng(FLAGS.seed)

    def subset(split: tuple, size: int | None) -> tuple:
        if size is None or size >= len(split[0]):
            return split
        keep = np.sort(rng.choice(len(split[0]), size, replace=False))
        return split[0][keep], split[1][keep]

    return subset(train, settings.train_size), subset(test, settings.test_size)


def _build_dense_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(300, activation="relu", name="hidden_300"),
            keras.layers.Dense(100, activation="relu", name="hidden_100"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="mlp",
    )


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, batch_size=1000, verbose=0)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(_predict(model, x), axis=-1) == y))


def _make_schedule(
    num_train: int, settings: Settings
) -> tuple[mp.PolynomialDecay, int]:
    """Returns a schedule ending at 2/3 of the pruning steps, and the steps."""
    steps_per_epoch = math.ceil(num_train / settings.batch_size)
    total_steps = steps_per_epoch * settings.prune_epochs
    end_step = max(1, round(total_steps * 2 / 3))
    schedule = mp.PolynomialDecay(
        0.0,
        FLAGS.target_sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=settings.frequency,
    )
    return schedule, total_steps


class _MaskUpdateLog(keras.callbacks.Callback):
    """Records the step and mask sparsities of every mask update in `fit`."""

    def __init__(self):
        super().__init__()
        self.updates: list[tuple[int, list[float]]] = []
        self._last = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None):
        layer = mp.pruned_layers(self.model)[0]
        step = int(keras.ops.convert_to_numpy(layer.last_mask_update_step))
        if step != self._last:
            self._last = step
            self.updates.append((step, mp.get_weight_sparsity(self.model)))


def _prune_and_train(
    dense: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    settings: Settings,
) -> keras.Model:
    """Returns a pruned copy of `dense`, fine-tuned under the schedule."""
    schedule, total_steps = _make_schedule(len(x_train), settings)
    log_dir = FLAGS.log_dir or tempfile.mkdtemp(prefix="model_pruning_demo_")
    print(f"\nPruning schedule: {schedule} over {total_steps} steps")
    print(f"TensorBoard pruning summaries: {log_dir}")
    pruned = mp.prune_low_magnitude(dense, pruning_schedule=schedule)
    _compile(pruned, FLAGS.prune_learning_rate)
    update_log = _MaskUpdateLog()
    pruned.fit(
        x_train,
        y_train,
        batch_size=settings.batch_size,
        epochs=settings.prune_epochs,
        verbose=2,
        callbacks=[
            mp.UpdatePruningStep(),
            update_log,
            mp.PruningSummaries(log_dir=log_dir),
        ],
    )
    print("Mask updates (step: sparsity of each pruned weight):")
    for step, sparsities in update_log.updates:
        print(f"  {step:6d}: " + " ".join(f"{s:.4f}" for s in sparsities))
    return pruned


def _pruned_names(pruned: keras.Model) -> set[str]:
    """Returns `"<layer>/<weight>"` for each weight that `pruned` prunes."""
    return {entry.name for entry in mp.pruned_weights(pruned)}


def _weight_rows(model: keras.Model, pruned_names: set[str]) -> list[tuple]:
    rows = []
    for layer in model.layers:
        for weight in layer.weights:
            name = f"{layer.name}/{weight.name}"
            value = keras.ops.convert_to_numpy(weight)
            nonzero = int(np.count_nonzero(value))
            pruned = "yes" if name in pruned_names else "no"
            rows.append((name, value.shape, value.size, nonzero, pruned))
    return rows


def _print_table(title: str, model: keras.Model, pruned_names: set) -> None:
    """Prints each weight's shape, size, non-zeros and sparsity, and totals."""
    rows = _weight_rows(model, pruned_names)
    header = ("weight", "shape", "weights", "non-zeros", "sparsity", "prunable")
    fmt = "{:<20} {:>12} {:>9} {:>10} {:>9} {:>9}"
    line = "-" * len(fmt.format(*header))
    print(f"\n{title}\n{line}\n{fmt.format(*header)}\n{line}")
    for name, shape, size, nonzero, pruned in rows:
        sparsity = f"{1 - nonzero / size:.4f}"
        print(fmt.format(name, str(shape), size, nonzero, sparsity, pruned))
    print(line)
    for label, chosen in (
        ("total (prunable)", [r for r in rows if r[4] == "yes"]),
        ("total (all)", rows),
    ):
        size = sum(r[2] for r in chosen)
        nonzero = sum(r[3] for r in chosen)
        sparsity = f"{1 - nonzero / size:.4f}" if size else "-"
        print(fmt.format(label, "", size, nonzero, sparsity, "").rstrip())


def _strip_check_and_save(pruned: keras.Model, x: np.ndarray) -> keras.Model:
    """Strips `pruned`, checks predictions match, saves and reloads it."""
    stripped = mp.strip_pruning(pruned)
    expected = _predict(pruned, x)
    got = _predict(stripped, x)
    diff = float(np.max(np.abs(expected - got)))
    if not np.allclose(expected, got, rtol=0.0, atol=1e-6):
        raise RuntimeError(f"Stripped model differs: max |diff| = {diff}")
    exact = "bit-identical" if np.array_equal(expected, got) else "close"
    print(f"\nStripped vs pruned predictions: {exact} (max |diff| {diff:g})")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    stripped.save(FLAGS.output)
    reloaded = keras.models.load_model(FLAGS.output)
    same = np.array_equal(_predict(reloaded, x), got)
    size_kib = os.path.getsize(FLAGS.output) / 1024
    print(
        f"Saved stripped model to {FLAGS.output} ({size_kib:.0f} KiB); "
        f"reloaded predictions identical: {same}"
    )
    return stripped


def _file_kib(model: keras.Model) -> tuple[float, float]:
    """Returns the model's `.keras` size and its gzipped size, in KiB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            data = f.read()
    return len(data) / 1024, len(gzip.compress(data)) / 1024


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    keras.utils.set_random_seed(FLAGS.seed)
    settings = _settings()
    times = {}
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = _load_data(settings)
    times["load data"] = time.perf_counter() - start
    print(f"Data: {len(x_train)} train, {len(x_test)} test; {settings}")

    tick = time.perf_counter()
    dense = _build_dense_model()
    _compile(dense, FLAGS.learning_rate)
    dense.fit(
        x_train,
        y_train,
        batch_size=settings.batch_size,
        epochs=settings.dense_epochs,
        verbose=2,
    )
    dense_accuracy = _accuracy(dense, x_test, y_test)
    times["dense training"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pruned = _prune_and_train(dense, x_train, y_train, settings)
    pruned_accuracy = _accuracy(pruned, x_test, y_test)
    times["pruning training"] = time.perf_counter() - tick

    tick = time.perf_counter()
    stripped = _strip_check_and_save(pruned, x_test)
    stripped_accuracy = _accuracy(stripped, x_test, y_test)
    times["strip, check, save"] = time.perf_counter() - tick

    pruned_names = _pruned_names(pruned)
    _print_table("Before pruning (dense model)", dense, pruned_names)
    _print_table("After pruning (stripped model)", stripped, pruned_names)
    print(f"\nTest accuracy on {len(x_test)} examples:")
    print(f"  dense            {dense_accuracy:.4f}")
    print(f"  pruned           {pruned_accuracy:.4f}")
    print(f"  pruned, stripped {stripped_accuracy:.4f}")
    print("Saved .keras file size (raw / gzip -9):")
    for name, model in (("dense", dense), ("pruned, stripped", stripped)):
        raw, packed = _file_kib(model)
        print(f"  {name:<16} {raw:7.0f} KiB / {packed:6.0f} KiB")
    print("Time:")
    for name, seconds in times.items():
        print(f"  {name:<20} {seconds:6.1f} s")
    print(f"  {'total':<20} {time.perf_counter() - start:6.1f} s")


if __name__ == "__main__":
    app.run(main)
