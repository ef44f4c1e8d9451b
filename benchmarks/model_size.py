"""Model size of pruned models in each storage format, at several sparsities.

For an MLP (784-300-100-10) and a small CNN (Conv 5x5x32, pool, Conv 5x5x64,
pool, Dense 256, Dense 10 on 28x28x1) built with fixed seeds, prunes each to
0%, 50%, 75%, 90% and 95% (`ConstantSparsity`, masks set at once; 0% is the
dense model itself), strips it, and prints one table per model, sizes in
bytes (all weights, biases included):

- dense: the float32 weights (`sum(w.nbytes)`),
- .keras and .keras.gz: the saved model file and gzip -9 of it,
- bitmask, csr(4b), int8+csr: the `sparse_formats` encoders, summed,
- tflite: `export_tflite(..., sparse=True)` (EXPERIMENTAL_SPARSITY),
- compact: per weight the smallest of dense, bit-mask and CSR(C), summed,
  and compact / dense.

Then checks that at 90% sparsity compact <= 0.15x dense for every model
(exit status 1 if not).

    python benchmarks/model_size.py [--quick] [--seed=0]
"""

import gzip
import os
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import model_pruning as mp  # noqa: E402
from model_pruning.export import export_tflite  # noqa: E402
from model_pruning.report import sparsity_report  # noqa: E402

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke run: only the MLP at 90% sparsity."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the initial weights.")

_SPARSITIES = (0.0, 0.5, 0.75, 0.9, 0.95)
_INDEX_BITS = 4
_CHECK_SPARSITY = 0.9
_CHECK_RATIO = 0.15
_COLUMNS = (
    ("sparsity", 8),
    ("nnz", 7),
    ("dense", 8),
    (".keras", 8),
    (".keras.gz", 9),
    ("bitmask", 8),
    (f"csr({_INDEX_BITS}b)", 8),
    ("tflite", 8),
    ("int8+csr", 8),
    ("compact", 8),
    ("compact/dense", 13),
)


def _mlp() -> keras.Model:
    """784 -> Dense 300 relu -> Dense 100 relu -> Dense 10."""
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp",
    )


def _cnn() -> keras.Model:
    """28x28x1 -> Conv 5x5x32, pool, Conv 5x5x64, pool, Dense 256, 10."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="cnn",
    )


def _stripped_model(
    build: Callable[[], keras.Model], sparsity: float
) -> keras.Model:
    """Builds the model with the fixed seed, prunes it and strips it."""
    keras.utils.set_random_seed(_SEED.value)
    model = build()
    if sparsity == 0.0:
        return model
    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.ConstantSparsity(
            sparsity, begin_step=0, frequency=1
        ),
    )
    mp.Pruning(
        model=pruned, global_step=tf.Variable(1, dtype=tf.int64)
    ).mask_update_op()
    return mp.strip_pruning(pruned)


def _file_sizes(model: keras.Model) -> dict[str, int]:
    """Saves `.keras` and sparse TFLite files; returns their sizes."""
    with tempfile.TemporaryDirectory() as directory:
        keras_path = os.path.join(directory, "model.keras")
        model.save(keras_path)
        with open(keras_path, "rb") as file:
            keras_data = file.read()
        tflite_path = os.path.join(directory, "model.tflite")
        return {
            ".keras": len(keras_data),
            ".keras.gz": len(gzip.compress(keras_data, 9, mtime=0)),
            "tflite": export_tflite(model, tflite_path, sparse=True),
        }


def _measure(build: Callable[[], keras.Model], sparsity: float) -> dict:
    """Returns one table row's values for `build` at `sparsity`."""
    model = _stripped_model(build, sparsity)
    total = sparsity_report(model, index_bits=_INDEX_BITS).total
    return {
        "sparsity": sparsity,
        "nnz": total.nnz,
        "dense": total.dense_bytes,
        **_file_sizes(model),
        "bitmask": total.bitmask_bytes,
        f"csr({_INDEX_BITS}b)": total.csr_bytes,
        "int8+csr": total.int8_csr_bytes,
        "compact": total.compact_bytes,
        "compact/dense": total.compact_bytes / total.dense_bytes,
    }


def _format_cell(name: str, value: float, width: int) -> str:
    if name == "sparsity":
        return f"{value:.2f}".rjust(width)
    if name == "compact/dense":
        return f"{value:.3f}x".rjust(width)
    return str(value).rjust(width)


def _print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title} (sizes in bytes)")
    widths = [max(width, len(name)) for name, width in _COLUMNS]
    names = [name for name, _ in _COLUMNS]
    print("  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        cells = [
            _format_cell(name, row[name], width)
            for name, width in zip(names, widths, strict=True)
        ]
        print("  ".join(cells))


def _check(name: str, rows: list[dict]) -> bool:
    """Prints whether compact <= 0.15x dense at 90%; returns it."""
    (row,) = [r for r in rows if r["sparsity"] == _CHECK_SPARSITY]
    ratio = row["compact/dense"]
    passed = ratio <= _CHECK_RATIO
    print(
        f"{name} at {_CHECK_SPARSITY:.0%}: compact {row['compact']} B = "
        f"{ratio:.3f}x dense float32 {row['dense']} B "
        f"(<= {_CHECK_RATIO}x): {'PASS' if passed else 'FAIL'}"
    )
    return passed


def main(argv: list[str]) -> int:
    del argv
    start = time.perf_counter()
    logging.set_verbosity(logging.WARNING)  # SavedModel export chatter
    tf.get_logger().setLevel("ERROR")
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"seed {_SEED.value}, CSR(C) index bits {_INDEX_BITS}"
    )
    models = [("MLP 784-300-100-10", _mlp), ("CNN 28x28x1", _cnn)]
    sparsities = _SPARSITIES
    if _QUICK.value:
        models, sparsities = models[:1], (_CHECK_SPARSITY,)
    results = {}
    for name, build in models:
        rows = [_measure(build, sparsity) for sparsity in sparsities]
        _print_table(name, rows)
        results[name] = rows
    print()
    passed = [_check(name, rows) for name, rows in results.items()]
    print(f"Wall time: {time.perf_counter() - start:.1f} s")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    app.run(main)
