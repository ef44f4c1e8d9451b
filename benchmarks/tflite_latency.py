"""LiteRT (TFLite) inference latency of sparse exports against dense ones.

Each model is built from a fixed seed (`keras.utils.set_random_seed`),
pruned at once to each sparsity (`ConstantSparsity`, masks set with
`Pruning.mask_update_op()`, so no weight moves) with blocks LiteRT's sparse
kernels take: `block_size=(4, 1)` for float32, `(16, 1)` for int8 (4 or 16
consecutive input rows of a `Dense` kernel per output column), and
written with `mp.export_tflite(..., sparse=True)`. The baseline is the
unpruned model written with `sparse=False` (for int8 rows, the int8 dense
file: `quantize="int8"`, calibrated on 32 random inputs). Files go to a
temporary directory.

Models: `dense1024` and `dense4096` (one layer, Input(N) -> Dense(N));
`mlp` (784-1024-1024-10, relu); `demo_mlp` (the Fashion-MNIST demo's
28x28 -> Flatten -> 300-100-10, relu); `transformer` (input (64, 256):
MultiHeadAttention with 4 heads of 64 + residual + LayerNorm, FFN Dense 1024
relu -> Dense 256 + residual + LayerNorm; every Dense and EinsumDense
kernel is pruned, the attention projections included); `mobilenet_v2`
(`keras.applications.MobileNetV2`, 224x224x3, `weights=None`, logits; its
1x1 convolutions are pruned, `block_size=(4, 1)`, with
`PruneForLatencyOnXNNPack`, or with that policy's `allow_pruning` as
`policy=` when its model check rejects Keras 3's MobileNetV2, noted as
`pruning_policy_error` in `details`).

Timing: one case group is a model, a dtype (float32 or int8), a batch and a
thread count. Its arms are one allocated interpreter per file
(`ai_edge_litert.interpreter.Interpreter(model_path, num_threads)`, or
`tf.lite.Interpreter` without `ai-edge-litert`; XNNPACK is applied by
default) with its input set once: `dense`, `dense_copy` (a second
interpreter of the same dense file, for the A/A row) and one `sparse` arm
per sparsity. Each arm is warmed up; a sample is the mean time of `invokes`
back-to-back `invoke()` calls (`invokes` chosen once per group so that a
dense sample takes about 0.1 s, 0.02 s in `--quick`), and the rounds time
all arms interleaved in ABBA order (`common.run_rounds`). A row is the median
of the per-round ratios sparse / dense time (<= target is met), with min,
max, and the median per-round speedup dense / sparse in `details`; the A/A
row is dense_copy / dense. Times include Python's `invoke()` call, a few
microseconds, which matters only for the smallest models.

Default grid (20 rounds per group; 582 s on 2 AMD EPYC cores, load about 1):

- dense1024 and dense4096, float32 and int8: 50%, 75%, 90% and 95% at
  batch 1, 1 thread; batch 8, 1 thread; and batch 1, 2 threads;
- mlp, float32 and int8: 50%, 75%, 90% and 95% at batch 1, 1 thread; 90%
  at batch 8, 1 thread and batch 1, 2 threads;
- demo_mlp and transformer, float32 and int8: 90% at batch 1, 1 thread;
  batch 8, 1 thread; and batch 1, 2 threads;
- mobilenet_v2: float32, 90%, batch 1, 1 thread.

`--quick` (a smoke run, under a minute): a 256-unit Dense layer (float32 and
int8 at 50% and 90%, batch 1, 1 thread; float32 at 90%, batch 8, 2
threads) and a small transformer block (seq 8, d 32, 2 heads, FFN 64;
float32 and int8 at 90%, batch 1, 1 thread), 2 rounds.

Targets (time ratios sparse / dense): float32 at 90%, batch 1, 1 thread:
dense1024 <= 0.5, dense4096 <= 0.25, mlp <= 0.5; int8 at 90%, batch 1, 1
thread, against the int8 dense file: <= 1.0 for the same three models.
Size rows at 90%: the int8 (16, 1) file over the float32 dense file, <= 0.04
for dense1024, dense4096 and mlp (no target for the other models), and the
float32 (4, 1) file over the float32 dense file (no target).

Every sparse file is also checked: `details` hold `mp.inspect_tflite`'s
count and names of pruned weights stored `densified` (rebuilt dense by a
DENSIFY op when the model runs, so they do not run sparse), its count of
weights per storage (`missing`: a pruned weight it could not find in the
file), and the outputs on 8 random inputs against the stripped Keras
model: float32 files must match within |tflite - keras| <= 1e-5 + 1e-5
|keras| (`outputs_match`; `max_abs_error`, next to `max_abs_output`), int8
files report `max_abs_error_over_range`, the largest error over the range
of the Keras outputs (quantization error, not checked). A float32 mismatch
or a group that fails makes the exit status 1 after all rows are written.

    python benchmarks/tflite_latency.py [--quick] [--json=PATH]
        [--models=dense1024,...] [--rounds=20] [--seed=0]
"""

import dataclasses
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable

import common

common.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import model_pruning as mp  # noqa: E402

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke run: small models, 2 rounds (under a minute)."
)
_JSON = flags.DEFINE_string("json", None, "Write the rows to this file.")
_MODELS = flags.DEFINE_list(
    "models", None, "Only these models of the grid (default: all)."
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", None, "Timed rounds per case group. Default 20, 2 in --quick."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights and data.")

_GROUP = "tflite"
_BLOCKS = {"float32": (4, 1), "int8": (16, 1)}
_CALIBRATION_SAMPLES = 32
_CHECK_BATCH = 8
_RTOL = 1e-5
_ATOL = 1e-5
# (model, dtype, sparsity, batch, threads) -> target time ratio.
_LATENCY_TARGETS = {
    ("dense1024", "float32", 0.9, 1, 1): 0.5,
    ("dense4096", "float32", 0.9, 1, 1): 0.25,
    ("mlp", "float32", 0.9, 1, 1): 0.5,
}
_INT8_TARGET = 1.0
_INT8_TARGET_MODELS = ("dense1024", "dense4096", "mlp")
_SIZE_TARGETS = {"dense1024": 0.04, "dense4096": 0.04, "mlp": 0.04}
_SIZE_SPARSITY = 0.9
_SWEEP = (0.5, 0.75, 0.9, 0.95)


@dataclasses.dataclass(frozen=True)
class _Model:
    name: str
    description: str
    build: Callable[[], keras.Model]
    input_shape: tuple[int, ...]
    pruning_policy: Callable[[], mp.PruningPolicy] | None = None


@dataclasses.dataclass(frozen=True)
class _Case:
    """A case group: one model, dtype, batch and thread count."""

    model: str
    dtype: str
    batch: int
    threads: int
    sparsities: tuple[float, ...]


@dataclasses.dataclass
class _File:
    """A written .tflite file and what was checked about it."""

    path: str
    size: int
    checks: dict


def _dense_layer(units: int) -> Callable[[], keras.Model]:
    def build():
        return keras.Sequential(
            [keras.Input((units,)), keras.layers.Dense(units)],
            name=f"dense{units}",
        )

    return build


def _mlp(sizes: tuple[int, ...], input_shape: tuple[int, ...], name: str):
    def build():
        layers = [keras.Input(input_shape)]
        if len(input_shape) > 1:
            layers.append(keras.layers.Flatten())
        layers += [keras.layers.Dense(n, activation="relu") for n in sizes]
        layers.append(keras.layers.Dense(10))
        return keras.Sequential(layers, name=name)

    return build


def _transformer(seq: int, dim: int, heads: int, ffn: int):
    def build():
        inputs = keras.Input((seq, dim))
        attention = keras.layers.MultiHeadAttention(
            heads, key_dim=dim // heads
        )(inputs, inputs)
        x = keras.layers.LayerNormalization()(inputs + attention)
        f = keras.layers.Dense(ffn, activation="relu")(x)
        f = keras.layers.Dense(dim)(f)
        outputs = keras.layers.LayerNormalization()(x + f)
        return keras.Model(inputs, outputs, name="transformer")

    return build


def _mobilenet_v2():
    # Logits, so that the output check compares more than a softmax of
    # near-equal values.
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(224, 224, 3), classifier_activation=None
    )


_MODEL_LIST = (
    _Model(
        "dense1024", "Input(1024) -> Dense(1024)", _dense_layer(1024), (1024,)
    ),
    _Model(
        "dense4096", "Input(4096) -> Dense(4096)", _dense_layer(4096), (4096,)
    ),
    _Model(
        "mlp",
        "MLP 784-1024-1024-10, relu",
        _mlp((1024, 1024), (784,), "mlp"),
        (784,),
    ),
    _Model(
        "demo_mlp",
        "Fashion-MNIST demo MLP: 28x28 -> Flatten -> 300-100-10, relu",
        _mlp((300, 100), (28, 28), "demo_mlp"),
        (28, 28),
    ),
    _Model(
        "transformer",
        "transformer block, (64, 256): MHA 4x64 + residual + LayerNorm, "
        "FFN 1024 relu -> 256 + residual + LayerNorm",
        _transformer(64, 256, 4, 1024),
        (64, 256),
    ),
    _Model(
        "mobilenet_v2",
        "MobileNetV2 224x224x3, 1x1 convolutions pruned "
        "(PruneForLatencyOnXNNPack)",
        _mobilenet_v2,
        (224, 224, 3),
        mp.PruneForLatencyOnXNNPack,
    ),
)
_QUICK_MODEL_LIST = (
    _Model("dense256", "Input(256) -> Dense(256)", _dense_layer(256), (256,)),
    _Model(
        "transformer_small",
        "transformer block, (8, 32): MHA 2x16 + residual + LayerNorm, "
        "FFN 64 relu -> 32 + residual + LayerNorm",
        _transformer(8, 32, 2, 64),
        (8, 32),
    ),
)
MODELS = {m.name: m for m in _MODEL_LIST + _QUICK_MODEL_LIST}


def _default_grid() -> list[_Case]:
    cases = []
    for dtype in ("float32", "int8"):
        for model in ("dense1024", "dense4096"):
            for batch, threads in ((1, 1), (8, 1), (1, 2)):
                cases.append(_Case(model, dtype, batch, threads, _SWEEP))
        cases.append(_Case("mlp", dtype, 1, 1, _SWEEP))
        for model in ("mlp", "demo_mlp", "transformer"):
            if model != "mlp":
                cases.append(_Case(model, dtype, 1, 1, (0.9,)))
            cases.append(_Case(model, dtype, 8, 1, (0.9,)))
            cases.append(_Case(model, dtype, 1, 2, (0.9,)))
    cases.append(_Case("mobilenet_v2", "float32", 1, 1, (0.9,)))
    return sorted(cases, key=lambda c: _model_order(c.model))


def _quick_grid() -> list[_Case]:
    return [
        _Case("dense256", "float32", 1, 1, (0.5, 0.9)),
        _Case("dense256", "float32", 8, 2, (0.9,)),
        _Case("dense256", "int8", 1, 1, (0.5, 0.9)),
        _Case("transformer_small", "float32", 1, 1, (0.9,)),
        _Case("transformer_small", "int8", 1, 1, (0.9,)),
    ]


def _model_order(name: str) -> int:
    return list(MODELS).index(name)


def _interpreter_class() -> Callable[..., object]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        return tf.lite.Interpreter


def _interpreter(path: str, x: np.ndarray, threads: int):
    """Returns an allocated interpreter of `path` with input `x` set."""
    interpreter = _interpreter_class()(model_path=path, num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    return interpreter


def _run(path: str, x: np.ndarray) -> np.ndarray:
    interpreter = _interpreter(path, x, 1)
    interpreter.invoke()
    output = interpreter.get_output_details()[0]["index"]
    return np.array(interpreter.get_tensor(output))


class _Files:
    """Builds, prunes, writes and checks the .tflite files, once each."""

    def __init__(self, directory: str, seed: int):
        self._directory = directory
        self.seed = seed
        self._files: dict[tuple, _File] = {}
        self._inputs: dict[str, np.ndarray] = {}

    def inputs(self, model: _Model, count: int, offset: int = 0):
        """Returns `count` random inputs of `model` (fixed by the seed)."""
        key = model.name
        if key not in self._inputs:
            rng = np.random.default_rng(self.seed)
            size = (_CALIBRATION_SAMPLES + 16, *model.input_shape)
            self._inputs[key] = rng.normal(size=size).astype(np.float32)
        return self._inputs[key][offset : offset + count]

    def _build(self, model: _Model) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        return model.build()

    def get(self, model: _Model, dtype: str, sparsity: float | None) -> _File:
        """Returns the file of `model` in `dtype`, dense (`sparsity` None)
        or pruned to `sparsity`."""
        key = (model.name, dtype, sparsity)
        if key not in self._files:
            started = time.perf_counter()
            self._files[key] = self._write(model, dtype, sparsity)
            self._files[key].checks["export_seconds"] = round(
                time.perf_counter() - started, 1
            )
        return self._files[key]

    def written(
        self, model_name: str, dtype: str, sparsity: float | None
    ) -> _File | None:
        """Returns a file already written, or None."""
        return self._files.get((model_name, dtype, sparsity))

    def _write(
        self, model: _Model, dtype: str, sparsity: float | None
    ) -> _File:
        label = "dense" if sparsity is None else f"s{round(100 * sparsity)}"
        path = os.path.join(
            self._directory, f"{model.name}_{dtype}_{label}.tflite"
        )
        keras_model = self._build(model)
        quantize = "int8" if dtype == "int8" else None
        calibration = (
            self.inputs(model, _CALIBRATION_SAMPLES, 16) if quantize else None
        )
        checks: dict = {}
        if sparsity is None:
            exported = reference = keras_model
        else:
            exported = self._pruned(model, keras_model, dtype, sparsity, checks)
            reference = mp.strip_pruning(exported)
            checks["mask_sparsity"] = [
                round(s, 4) for s in mp.get_weight_sparsity(exported)
            ]
        with warnings.catch_warnings():
            # export_tflite warns about densified weights; they are counted
            # below from inspect_tflite's report.
            warnings.simplefilter("ignore")
            size = mp.export_tflite(
                exported,
                path,
                sparse=sparsity is not None,
                quantize=quantize,
                representative_data=calibration,
            )
        if sparsity is not None:
            report = mp.inspect_tflite(path, exported)
            storage: dict[str, int] = {}
            for weight in report.weights:
                storage[weight.storage] = storage.get(weight.storage, 0) + 1
            checks["pruned_weights"] = len(report.weights)
            checks["storage"] = storage
            checks["densified"] = len(report.densified)
            checks["densified_weights"] = [
                f"{w.layer}/{w.weight}" for w in report.densified
            ]
        x = self.inputs(model, _CHECK_BATCH)
        expected = np.asarray(reference(x, training=False))
        actual = _run(path, x)
        error = np.abs(actual - expected)
        checks["max_abs_error"] = float(error.max())
        # Randomly initialized deep models can have vanishing outputs
        # (MobileNetV2's are about 1e-16), which makes any error look small.
        checks["max_abs_output"] = float(np.abs(expected).max())
        if dtype == "float32":
            checks["outputs_match"] = bool(
                np.all(error <= _ATOL + _RTOL * np.abs(expected))
            )
        else:
            value_range = float(expected.max() - expected.min())
            checks["max_abs_error_over_range"] = round(
                float(error.max()) / max(value_range, 1e-12), 5
            )
        keras.backend.clear_session()
        return _File(path, size, checks)

    def _pruned(
        self,
        model: _Model,
        keras_model: keras.Model,
        dtype: str,
        sparsity: float,
        checks: dict,
    ) -> keras.Model:
        """Returns `keras_model` pruned to `sparsity` at once; notes in
        `checks` what it had to work around."""
        arguments = dict(
            pruning_schedule=mp.ConstantSparsity(
                sparsity, begin_step=0, frequency=1
            ),
            block_size=_BLOCKS[dtype],
        )
        if model.pruning_policy is None:
            pruned = mp.prune_low_magnitude(keras_model, **arguments)
        else:
            pruning_policy = model.pruning_policy()
            try:
                pruned = mp.prune_low_magnitude(
                    keras_model, pruning_policy=pruning_policy, **arguments
                )
            except ValueError as error:
                # Keras 3's MobileNetV2 opens with a 'same'-padded stride-2
                # convolution, not ZeroPadding2D + 'valid', which the
                # policy's model check rejects: prune the layers it allows.
                checks["pruning_policy_error"] = str(error)[:200]
                pruned = mp.prune_low_magnitude(
                    keras_model,
                    policy=pruning_policy.allow_pruning,
                    **arguments,
                )
        mp.Pruning(
            model=pruned, global_step=tf.Variable(1, dtype=tf.int64)
        ).mask_update_op()
        reached = mp.get_weight_sparsity(pruned)
        if not reached or min(reached) < sparsity - 0.02:
            raise RuntimeError(
                f"{model.name} pruned to {reached}, not {sparsity}"
            )
        return pruned


def _time(interpreter, invokes: int) -> float:
    invoke = interpreter.invoke
    start = time.perf_counter()
    for _ in range(invokes):
        invoke()
    return (time.perf_counter() - start) / invokes


def _sparsity_label(sparsity: float) -> str:
    return f"{round(100 * sparsity)}%"


def _measure_case(
    case: _Case,
    files: _Files,
    rounds: int,
    sample_seconds: float,
) -> list[dict]:
    model = MODELS[case.model]
    dense = files.get(model, case.dtype, None)
    sparse = {s: files.get(model, case.dtype, s) for s in case.sparsities}
    rng = np.random.default_rng(files.seed + 1)
    x = rng.normal(size=(case.batch, *model.input_shape)).astype(np.float32)
    arms = {
        "dense": _interpreter(dense.path, x, case.threads),
        "dense_copy": _interpreter(dense.path, x, case.threads),
    }
    for sparsity, file in sparse.items():
        arms[f"sparse_{sparsity}"] = _interpreter(file.path, x, case.threads)
    for interpreter in arms.values():
        for _ in range(3):
            interpreter.invoke()
    one = statistics.median(_time(arms["dense"], 1) for _ in range(5))
    invokes = max(1, round(sample_seconds / one))
    for interpreter in arms.values():
        _time(interpreter, invokes)
    samples = common.run_rounds(
        list(arms), rounds, lambda arm, _: _time(arms[arm], invokes)
    )
    ms = {
        arm: round(1000 * statistics.median(values), 4)
        for arm, values in samples.items()
    }
    prefix = f"tflite {case.model} {case.dtype} b{case.batch} t{case.threads}"
    common_details = {
        "model": model.description,
        "dtype": case.dtype,
        "batch": case.batch,
        "threads": case.threads,
        "rounds": rounds,
        "invokes_per_sample": invokes,
        "dense_file_bytes": dense.size,
        "dense_checks": dense.checks,
    }
    rows = []
    for sparsity, file in sparse.items():
        arm = f"sparse_{sparsity}"
        values = common.ratios(samples, arm, "dense")
        speedups = common.ratios(samples, "dense", arm)
        target = _LATENCY_TARGETS.get(
            (case.model, case.dtype, sparsity, case.batch, case.threads)
        )
        if (
            case.dtype == "int8"
            and case.model in _INT8_TARGET_MODELS
            and sparsity == 0.9
            and (case.batch, case.threads) == (1, 1)
        ):
            target = _INT8_TARGET
        rows.append(
            common.make_row(
                f"{prefix} {_sparsity_label(sparsity)}: sparse/dense time",
                _GROUP,
                values,
                target,
                {
                    **common_details,
                    "sparsity": sparsity,
                    "block_size": list(_BLOCKS[case.dtype]),
                    "speedup_median": round(statistics.median(speedups), 3),
                    "ms_per_invoke_median": {
                        "dense": ms["dense"],
                        "sparse": ms[arm],
                    },
                    "sparse_file_bytes": file.size,
                    "ratios": [round(r, 4) for r in values],
                    **file.checks,
                },
            )
        )
    aa = common.ratios(samples, "dense_copy", "dense")
    rows.append(
        common.make_row(
            f"{prefix}: A/A dense/dense time",
            _GROUP,
            aa,
            None,
            {
                **common_details,
                "ms_per_invoke_median": {
                    "dense": ms["dense"],
                    "dense_copy": ms["dense_copy"],
                },
                "ratios": [round(r, 4) for r in aa],
            },
        )
    )
    return rows


def _size_rows(model_name: str, files: _Files) -> list[dict]:
    """File size rows at 90%: int8 (16, 1) and float32 (4, 1) over the
    float32 dense file, for the files the grid wrote."""
    model = MODELS[model_name]
    dense = files.written(model_name, "float32", None)
    if dense is None:
        return []
    rows = []
    for dtype in ("int8", "float32"):
        file = files.written(model_name, dtype, _SIZE_SPARSITY)
        if file is None:
            continue
        ratio = file.size / dense.size
        target = _SIZE_TARGETS.get(model_name) if dtype == "int8" else None
        rows.append(
            common.make_row(
                f"tflite {model_name} {dtype} {_sparsity_label(_SIZE_SPARSITY)}"
                f" {tuple(_BLOCKS[dtype])}: file size / float32 dense",
                _GROUP,
                [ratio],
                target,
                {
                    "model": model.description,
                    "sparse_file_bytes": file.size,
                    "float32_dense_file_bytes": dense.size,
                    "densified": file.checks.get("densified"),
                },
            )
        )
    return rows


def run(
    cases: list[_Case], rounds: int, sample_seconds: float, seed: int
) -> tuple[list[dict], list[str]]:
    """Measures every case group; returns the rows and the problems."""
    rows, problems = [], []
    with tempfile.TemporaryDirectory() as directory:
        files = _Files(directory, seed)
        models = list(dict.fromkeys(case.model for case in cases))
        for model_name in models:
            for case in (c for c in cases if c.model == model_name):
                name = (
                    f"tflite {case.model} {case.dtype} b{case.batch} "
                    f"t{case.threads}"
                )
                started = time.perf_counter()
                try:
                    case_rows = _measure_case(
                        case, files, rounds, sample_seconds
                    )
                except Exception as error:  # noqa: BLE001 (report, go on)
                    traceback.print_exc()
                    message = f"{type(error).__name__}: {error}"[:300]
                    rows.append(
                        common.error_row(
                            f"{name}: FAILED ({message})",
                            _GROUP,
                            {"error": message},
                        )
                    )
                    problems.append(f"{name}: {message}")
                    continue
                for row in case_rows:
                    if row["details"].get("outputs_match") is False:
                        problems.append(
                            f"{row['name']}: float32 outputs differ from "
                            f"Keras (max abs error "
                            f"{row['details']['max_abs_error']:.3g})"
                        )
                    print(_progress(row), flush=True)
                print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
                rows += case_rows
            size_rows = _size_rows(model_name, files)
            for row in size_rows:
                print(_progress(row), flush=True)
            rows += size_rows
    return rows, problems


def _progress(row: dict) -> str:
    details = row["details"]
    text = f"{row['name']}: {row['median']:.3f}"
    if "speedup_median" in details:
        ms = details["ms_per_invoke_median"]
        text += (
            f" (speedup {details['speedup_median']:.2f}x, "
            f"{ms['dense']:.4g} -> {ms['sparse']:.4g} ms; densified "
            f"{details.get('densified')}/{details.get('pruned_weights')}; "
            f"max abs error {details['max_abs_error']:.2g})"
        )
    return text


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.WARNING)
    cases = _quick_grid() if _QUICK.value else _default_grid()
    if _MODELS.value:
        for name in _MODELS.value:
            if name not in {c.model for c in cases}:
                raise app.UsageError(
                    f"unknown model {name!r}; choose from "
                    f"{sorted({c.model for c in cases})}"
                )
        cases = [c for c in cases if c.model in _MODELS.value]
    rounds = _ROUNDS.value or (2 if _QUICK.value else 20)
    sample_seconds = 0.02 if _QUICK.value else 0.1
    rows, problems = run(cases, rounds, sample_seconds, _SEED.value)
    common.finish(rows, start, _JSON.value)
    if problems:
        print("Problems:\n  " + "\n  ".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
