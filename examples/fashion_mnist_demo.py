"""Gradual pruning of a trained Fashion-MNIST classifier (the paper's Table 1
and Figures 1-2, at small scale).

Trains a dense 784-300-100-10 MLP (`--dense` phase, `--prune_begin_step`
steps), then, starting from that trained model (weights and Adam state),
prunes a copy to each of `--sparsities` with the cubic schedule of eq. (1)
while training on, and, as a control, trains the dense model on for the
same steps. As section 3 of the paper advises, the learning-rate schedule
and the pruning schedule are chosen together: the second phase restarts
the learning rate (`--prune_learning_rate`, lower than the first phase's,
as the paper did for MobileNets), pruning ends at `--prune_end_step` while
the rate is still reasonably high, and the remaining steps recover at a
decaying rate.

Each pruned model is stripped, checked to predict exactly what the pruned
one does, and saved. Prints and writes:

- `fashion_mnist_pruning.{md,csv}`: sparsity, NNZ parameters, accuracy and
  file size of every model (Table 1);
- `fashion_mnist_pruning_weights.{md,csv}`: each kernel's mask sparsity;
- `fashion_mnist_pruning_schedule.png` (Figure 1: target and mask sparsity
  against step) and `fashion_mnist_pruning_training.png` (Figure 2:
  learning rate and sparsity, and accuracy during training), both read
  back from the TensorBoard logs that `PruningSummaries` wrote.

Usage, from the repository root:

    python examples/fashion_mnist_demo.py               # --mode=quick
    python examples/fashion_mnist_demo.py --mode=full   # all 60k images
    python examples/fashion_mnist_demo.py --mode=tiny --data=synthetic

Modes size everything (flags given explicitly win): `tiny` (a few hundred
examples, a few steps: tests), `quick` (12,000 / 2,000 images: `make demo`)
and `full` (60,000 / 10,000: docs/reproductions.md). See
`fashion_mnist_data.py` for where the data comes from (`--data_dir`,
`$FASHION_MNIST_DIR`, Debian's `dataset-fashion-mnist`, or Keras'
download); `--data=synthetic` uses generated images instead. Plots need
matplotlib (`--noplot` skips them; without matplotlib they are skipped with
a warning).
"""

import gzip
import os
import tempfile
import time

import keras
import numpy as np
from absl import app
from absl import flags

try:  # Run as a script: this file's directory is on sys.path.
    import reproduction_lib as lib
    import tasks
except ImportError:  # Run as `python -m examples.fashion_mnist_demo`.
    from examples import reproduction_lib as lib
    from examples import tasks

FLAGS = flags.FLAGS
lib.define_common_flags(flags, "/tmp/model_pruning_demo")
flags.DEFINE_string(
    "data_dir", None, "Directory with the four Fashion-MNIST IDX .gz files."
)
flags.DEFINE_list(
    "sparsities", ["0.5", "0.75", "0.9", "0.95"], "Final sparsities."
)
flags.DEFINE_float(
    "width", 1.0, "Width multiplier of the 300-100 hidden layers."
)
flags.DEFINE_float(
    "learning_rate", None, "Adam learning rate at the start of training."
)
flags.DEFINE_float(
    "prune_learning_rate",
    None,
    "Adam learning rate at the start of the pruning phase.",
)
flags.DEFINE_integer(
    "num_train", None, "Training images, validation included (0: all)."
)
flags.DEFINE_integer("num_test", None, "Test images (0: all).")

DEFAULTS = {
    "tiny": dict(
        num_train=600,
        num_test=200,
        batch_size=32,
        total_steps=24,
        chunk_steps=6,
        prune_begin_step=12,
        prune_end_step=20,
        frequency=2,
        learning_rate=3e-3,
        prune_learning_rate=1e-3,
        lr_decay=0.1,
    ),
    "quick": dict(
        num_train=12000,
        num_test=2000,
        batch_size=64,
        total_steps=1000,
        chunk_steps=50,
        prune_begin_step=500,
        prune_end_step=800,
        frequency=25,
        learning_rate=1e-3,
        prune_learning_rate=1e-3,
        lr_decay=0.1,
    ),
    "full": dict(
        num_train=0,
        num_test=0,
        batch_size=128,
        total_steps=4000,
        chunk_steps=100,
        prune_begin_step=2000,
        prune_end_step=3300,
        frequency=100,
        learning_rate=1e-3,
        prune_learning_rate=1e-3,
        lr_decay=0.1,
    ),
}


def _value(name: str):
    return lib.resolve(FLAGS, name, DEFAULTS[FLAGS.mode])


def _recipe() -> lib.Recipe:
    """Two learning-rate phases: dense training, then pruning and
    recovery, each decaying exponentially by `--lr_decay`."""
    begin, total = _value("prune_begin_step"), _value("total_steps")
    decay = _value("lr_decay")
    prune_lr = _value("prune_learning_rate")

    def learning_rate(lr: float) -> lib.DecayPhases:
        return lib.DecayPhases(
            [
                (0, begin, lr, lr * decay),
                (begin, total, prune_lr, prune_lr * decay),
            ]
        )

    return lib.Recipe(
        batch_size=_value("batch_size"),
        total_steps=total,
        chunk_steps=_value("chunk_steps"),
        learning_rate=learning_rate,
        prune_begin_step=begin,
        prune_end_step=_value("prune_end_step"),
        prune_frequency=_value("frequency"),
    )


def _file_kib(model: keras.Model) -> tuple[float, float]:
    """The size of `model`'s weights as an uncompiled `.keras` file, raw
    and gzipped (-9), in KiB."""
    # From the config alone: `clone_model` would copy the compile config,
    # and the file would carry the optimizer's state.
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        clone.save(path)
        with open(path, "rb") as f:
            data = f.read()
    return len(data) / 1024, len(gzip.compress(data, 9)) / 1024


def _check_strip_and_save(
    task: tasks.FashionMnistTask, output: lib.RunOutput
) -> str:
    """Checks that the stripped model predicts exactly what the pruned one
    does, saves it, and returns "bit-identical" (or raises)."""
    x = task.x_test
    expected = keras.ops.convert_to_numpy(output.pruned_model(x))
    got = keras.ops.convert_to_numpy(output.model(x))
    if not np.array_equal(expected, got):
        diff = float(np.max(np.abs(expected - got)))
        if diff > 1e-6:
            raise RuntimeError(f"Stripped model differs: max |diff| {diff}")
        verdict = f"max diff {diff:.1e}"
    else:
        verdict = "bit-identical"
    path = os.path.join(
        FLAGS.output_dir, f"mlp_sparsity_{output.result.sparsity:g}.keras"
    )
    output.model.save(path)
    print(f"Saved {path} (stripped vs pruned predictions: {verdict})")
    return verdict


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.perf_counter()
    num_train = _value("num_train") or None
    try:
        task = tasks.fashion_mnist_task(
            "synthetic" if FLAGS.data == "synthetic" else "fashion_mnist",
            num_train,
            _value("num_test") or None,
            val_size=max(1, (num_train or 60000) // 12),
            val_subset_size=2000,
            data_dir=FLAGS.data_dir,
            seed=FLAGS.seed,
        )
    except RuntimeError as error:
        raise SystemExit(f"Error: {error}") from error
    recipe = _recipe()
    sparsities = [float(s) for s in FLAGS.sparsities]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    print(
        f"Data: {len(task.x_train)} train, {len(task.x_val)} validation, "
        f"{len(task.x_test)} test ({FLAGS.data}); {FLAGS.mode} mode\n"
        + recipe.describe(_value("learning_rate")),
        flush=True,
    )

    outputs = lib.train_width(
        task,
        FLAGS.width,
        sparsities,
        recipe,
        _value("learning_rate"),
        os.path.join(FLAGS.output_dir, "logs"),
        seed=FLAGS.seed,
        evaluate_branch_point=True,
        verbose=FLAGS.verbose,
    )
    train_seconds = time.perf_counter() - start

    headers = [
        "model",
        "sparsity",
        "NNZ params",
        "NNZ",
        "steps",
        "test accuracy",
        "val accuracy",
        ".keras KiB",
        "gzip KiB",
        "stripped = pruned",
    ]
    rows = []
    for output in outputs:
        result = output.result
        if output.pruned_model is not None:
            name, check = "pruned", _check_strip_and_save(task, output)
        elif result.note:
            name, check = f"dense ({result.note})", "-"
        else:
            name, check = "dense, trained on (control)", "-"
        raw, packed = _file_kib(output.model)
        rows.append(
            [
                name,
                f"{result.sparsity:.1%}",
                f"{result.nnz:,}",
                lib.format_count(result.nnz),
                result.steps,
                f"{result.test:.4f}",
                f"{result.val:.4f}",
                f"{raw:.0f}",
                f"{packed:.0f}",
                check,
            ]
        )
    stem = os.path.join(FLAGS.output_dir, "fashion_mnist_pruning")
    width_label = outputs[0].result.width_label
    lib.write_table(
        stem,
        headers,
        rows,
        f"Fashion-MNIST MLP {width_label}: dense for {recipe.prune_begin_step}"
        f" steps, then pruned (or not) for "
        f"{recipe.total_steps - recipe.prune_begin_step} more; "
        f"{len(task.x_test)} test images",
    )
    lib.write_weight_sparsity_table(
        outputs, stem + "_weights", "Mask sparsity of every pruned kernel"
    )
    if lib.plots_enabled(FLAGS.plot):
        paths = lib.plot_schedule_and_training(
            task, outputs, stem, f"Fashion-MNIST MLP {width_label}"
        )
        print("Plots: " + ", ".join(paths))
    print(
        f"Time: training {train_seconds:.0f} s, total "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    app.run(main)
