"""Inference latency after `strip_pruning` against the dense model (issue 4,
row 3).

For each model of `common.MODELS` (MLP, CNN, LSTM language model): the
dense model built from a seed, the same model pruned to 90%
(`ConstantSparsity`, masks set at once with `Pruning.mask_update_op()`) and
stripped with `strip_pruning`, and an identical dense copy (A/A). Each
model's forward pass `model(x, training=False)` on one batch (the training
batch size) is wrapped in a `tf.function`, traced and run a few times
before timing. One sample is the mean time of `calls` back-to-back calls
(`calls` chosen once so that a sample takes about 0.2 s; 0.05 s in
`--quick`). Rounds time the three arms in ABBA order (`dense, stripped,
dense_copy`, then reversed); the rows are the medians of the per-round
ratios stripped / dense and dense_copy / dense.

    python benchmarks/strip_latency.py [--quick] [--json=PATH] [--pairs=16]
        [--models=mlp,cnn,lstm]
"""

import statistics
import time

import common

common.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import model_pruning as mp  # noqa: E402

_QUICK = flags.DEFINE_bool("quick", False, "Smoke run: 2 rounds, 0.05 s.")
_JSON = flags.DEFINE_string("json", None, "Write the rows to this file.")
_MODELS = flags.DEFINE_list(
    "models", list(common.MODELS), "Models to run, from common.MODELS."
)
_PAIRS = flags.DEFINE_integer(
    "pairs", None, "Timed rounds (pairs) per row. Default 16, 2 in --quick."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights and data.")

_GROUP = "strip_latency"
_TARGET = 1.02
_ARMS = ("dense", "stripped", "dense_copy")


def _stripped(spec: common.ModelSpec, seed: int) -> keras.Model:
    """Builds the seeded model, prunes it to 90% at once and strips it."""
    pruned = mp.prune_low_magnitude(
        common.build_seeded(spec, seed),
        pruning_schedule=mp.ConstantSparsity(
            common.FINAL_SPARSITY, begin_step=0, frequency=1
        ),
    )
    mp.Pruning(
        model=pruned, global_step=tf.Variable(1, dtype=tf.int64)
    ).mask_update_op()
    sparsity = mp.get_weight_sparsity(pruned)
    if min(sparsity) < common.FINAL_SPARSITY - 0.01:
        raise RuntimeError(f"pruned to {sparsity}, not 0.9")
    return mp.strip_pruning(pruned)


def _timed_call(model: keras.Model, x: tf.Tensor):
    """Returns `run(calls)`: seconds per call of the traced forward pass."""
    forward = tf.function(lambda inputs: model(inputs, training=False))
    for _ in range(3):
        forward(x).numpy()

    def run(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            out = forward(x)
        out.numpy()
        return (time.perf_counter() - start) / calls

    return run


def _measure_model(
    spec: common.ModelSpec, rounds: int, sample_seconds: float, seed: int
) -> list[dict]:
    x, _ = spec.make_batches(np.random.default_rng(seed), 1)
    x = tf.constant(x)
    arms = {
        "dense": _timed_call(common.build_seeded(spec, seed), x),
        "stripped": _timed_call(_stripped(spec, seed), x),
        "dense_copy": _timed_call(common.build_seeded(spec, seed), x),
    }
    one_call = statistics.median(arms["dense"](1) for _ in range(5))
    calls = max(1, round(sample_seconds / one_call))
    samples = common.run_rounds(_ARMS, rounds, lambda arm, _: arms[arm](calls))
    stripped = common.ratios(samples, "stripped", "dense")
    aa = common.ratios(samples, "dense_copy", "dense")
    details = {
        "model": spec.description,
        "rounds": rounds,
        "calls_per_sample": calls,
        "ms_per_call_median": {
            arm: round(1000 * statistics.median(values), 3)
            for arm, values in samples.items()
        },
    }
    name = f"strip {spec.name}"
    return [
        common.make_row(
            f"{name}: stripped/dense inference",
            _GROUP,
            stripped,
            _TARGET,
            {**details, "ratios": [round(r, 4) for r in stripped]},
        ),
        common.make_row(
            f"{name}: A/A dense/dense inference",
            _GROUP,
            aa,
            None,
            {**details, "ratios": [round(r, 4) for r in aa]},
        ),
    ]


def run(
    model_names: list[str], rounds: int, sample_seconds: float, seed: int
) -> list[dict]:
    """Measures every model; returns the rows."""
    rows = []
    for name in model_names:
        model_rows = _measure_model(
            common.MODELS[name], rounds, sample_seconds, seed
        )
        print(
            f"{model_rows[0]['name']}: median {model_rows[0]['median']:.3f}, "
            f"A/A {model_rows[1]['median']:.3f}; ms/call "
            f"{model_rows[0]['details']['ms_per_call_median']}",
            flush=True,
        )
        rows += model_rows
        keras.backend.clear_session()
    return rows


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")
    for name in _MODELS.value:
        if name not in common.MODELS:
            raise app.UsageError(f"unknown model {name!r}")
    rounds = _PAIRS.value or (2 if _QUICK.value else 16)
    sample_seconds = 0.05 if _QUICK.value else 0.2
    rows = run(_MODELS.value, rounds, sample_seconds, _SEED.value)
    common.finish(rows, start, _JSON.value)


if __name__ == "__main__":
    app.run(main)
