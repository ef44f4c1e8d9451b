"""Cost of a mask update in elementwise passes: what users pay, and the
selection alone.

For one float32 tensor of 1M, 10M and 37M entries (`|N(0, 1)|` from a fixed
seed) at sparsity 0.5 and 0.9, measures in one process, in ABBA rounds:

- pass: one elementwise pass, `reduce_sum(abs(w))` in a `tf.function`
  (graph mode, TF's CPU kernels): the unit;
- fit: the whole update as `fit` runs it, through the public API: one
  pruned layer holds the tensor (random signs), and the timed call is
  `UpdatePruningStep.on_train_batch_begin`, from the callback's entry
  (the due check) to the last assign (mask, weight, threshold); masks and
  weights are reset, untimed, before each call;
- loop: the same through `Pruning.conditional_mask_update_op()`, as a
  custom training loop calls it;
- host: the selection alone, `selection.kth_largest(w, k,
  method="host")` then `w >= threshold` materialized, in a `tf.function`;
- xla: the selection with `method="xla"` inside
  `tf.function(jit_compile=True)` (the XLA-safe path; informative);
- pass_xla: the elementwise pass under `jit_compile=True` (informative);
- sort: the sort reference `method="sort"` + mask, for 1M only (slow).

Each row is the median over rounds of the per-round ratio arm / pass, with
its min and max. Target: the whole update in `fit` <= 5 passes per
tensor. Then the global case: 10 tensors (Dense and Conv kernels)
totalling 50M entries, one threshold over all of them (`pruning_scheme=
"global"` for the whole-update arms) and one mask per tensor, against one
elementwise pass over all of them; target <= 10.

Every threshold, the whole updates' included, is checked against
`np.partition` (exact equality); the exit status is 1 if one differs.

On another Keras backend than TensorFlow (`KERAS_BACKEND=jax` or `torch`)
the unit is that backend's own pass, `sum(abs(w))` in `keras.ops` (under
`jax.jit` on JAX, eager on PyTorch), and the arms are `fit` and `loop`
(the whole update, as above; on JAX the timed call waits until the new
masks and weights are computed), `host` (pass 1 of the two-pass update
alone: `fused_update._select`, the NumPy magnitudes, finiteness and
selection, on the host arrays) and `numpy` (one NumPy pass,
`np.abs(w).sum()`, informative: the same unit on every backend). Those
rows carry the backend as `backend` and in their name. `--backends=
tensorflow,jax,torch` runs the script once per backend, each in its own
process, and prints the whole update's rows side by side.

    python benchmarks/mask_update.py [--quick] [--rounds=10] [--json=PATH]
        [--sizes=1,10,37] [--noglobal_case]
        [--backends=tensorflow,jax,torch]

`--quick` runs 1M only (and a 1M-entry global case).
"""

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402

import model_pruning as mp  # noqa: E402
from model_pruning import fused_update  # noqa: E402
from model_pruning import mask  # noqa: E402
from model_pruning import selection  # noqa: E402

_BACKEND = keras.backend.backend()

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke run: 1M entries only (global case: 1M in all)."
)
_ROUNDS = flags.DEFINE_integer(
    "rounds", 10, "Timed rounds per case (each arm once per round)."
)
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the magnitudes.")
_SIZES_FLAG = flags.DEFINE_list(
    "sizes",
    None,
    "Tensor sizes in millions of entries (default 1,10,37; 1 in --quick).",
)
_GLOBAL_CASE = flags.DEFINE_bool(
    "global_case", True, "Also run the global case (10 tensors, 50M)."
)
_TORCH_THREADS = common.torch_threads_flag()
_BACKENDS = common.backends_flag()

_SIZES = (1_000_000, 10_000_000, 37_000_000)
_SPARSITIES = (0.5, 0.9)
_SORT_MAX_SIZE = 1_000_000
_TARGET = 5.0
_GLOBAL_TARGET = 10.0
_GLOBAL_SPARSITY = 0.9
# 10 kernels, 50.07M entries in all.
_GLOBAL_SHAPES = (
    (4096, 4096),
    (4096, 3072),
    (3072, 2560),
    (2048, 2560),
    (2048, 2048),
    (1024, 1536),
    (3, 3, 256, 512),
    (1024, 512),
    (512, 256),
    (256, 10),
)


def _magnitudes(rng: np.random.Generator, shape) -> np.ndarray:
    return np.abs(rng.standard_normal(shape, dtype=np.float32))


def _exact_kth_largest(arrays: list[np.ndarray], k: int) -> np.float32:
    flat = np.concatenate([a.ravel() for a in arrays])
    return flat[np.argpartition(flat, flat.size - k)[flat.size - k]]


def _arms(arrays: list[np.ndarray], k_value: int, with_sort: bool) -> dict:
    """Returns `{arm: callable}`; each call runs once and blocks."""
    if _BACKEND != "tensorflow":
        return _other_backend_arms(arrays, k_value)
    import tensorflow as tf

    tensors = [tf.constant(a) for a in arrays]
    k = tf.constant(k_value, tf.int32)
    single = len(tensors) == 1

    def passes(*ws):
        return tf.add_n([tf.reduce_sum(tf.abs(w)) for w in ws])

    def update(method: str, xla: bool):
        def run(*ws):
            threshold = selection.kth_largest(
                ws[0] if single else list(ws), k, method=method, xla=xla
            )
            return threshold, [w >= threshold for w in ws]

        return tf.function(run, jit_compile=xla)

    graph_pass = tf.function(passes)
    xla_pass = tf.function(passes, jit_compile=True)
    functions = {
        "pass": lambda: graph_pass(*tensors).numpy(),
        "host": _threshold_of(update("host", False), tensors),
        "xla": _threshold_of(update("xla", True), tensors),
        "pass_xla": lambda: xla_pass(*tensors).numpy(),
    }
    if with_sort:
        functions["sort"] = _threshold_of(update("sort", False), tensors)
    return functions


def _other_backend_arms(arrays: list[np.ndarray], k_value: int) -> dict:
    """JAX's and PyTorch's arms: the backend's pass, pass 1 of the fused
    update alone (NumPy, on the host arrays), a NumPy pass."""
    tensors = [ops.convert_to_tensor(a) for a in arrays]

    def passes(*ws):
        total = ops.sum(ops.abs(ws[0]))
        for w in ws[1:]:
            total = total + ops.sum(ops.abs(w))
        return total

    if _BACKEND == "jax":
        import jax

        passes = jax.jit(passes)
    ones = [np.ones_like(a) for a in arrays]

    def host():
        kth, _ = fused_update._select(max(k_value, 1), *arrays, *ones)
        return kth

    return {
        "pass": lambda: float(ops.convert_to_numpy(passes(*tensors))),
        "host": host,
        "numpy": lambda: float(sum(np.abs(a).sum() for a in arrays)),
    }


def _block(entries) -> None:
    """On JAX, waits until the entries' masks and weights are computed."""
    if _BACKEND == "jax":
        import jax

        jax.block_until_ready(
            [v.value for e in entries for v in (e.mask, e.weight)]
        )


def _threshold_of(function, tensors) -> Callable[[], np.ndarray]:
    def call():
        threshold, _ = function(*tensors)  # The masks are materialized.
        return threshold.numpy()

    return call


def _measure(
    functions: dict, rounds: int, prepare: dict | None = None
) -> dict[str, list[float]]:
    """Times every arm once per round, in ABBA order (after two warm-ups).

    `prepare[arm]`, when given, runs untimed before each call of the arm.
    """
    prepare = prepare or {}

    def call(arm):
        if arm in prepare:
            prepare[arm]()
        start = time.perf_counter()
        functions[arm]()
        return time.perf_counter() - start

    for arm in functions:
        call(arm)
        call(arm)
    arms = list(functions)
    samples = {arm: [] for arm in arms}
    for index in range(rounds):
        for arm in arms if index % 2 == 0 else arms[::-1]:
            samples[arm].append(call(arm))
    return samples


class _WeightsLayer(keras.layers.Layer):
    """A layer that only holds weights of given shapes, all prunable."""

    def __init__(self, shapes, **kwargs):
        super().__init__(**kwargs)
        self.shapes = [tuple(s) for s in shapes]

    def build(self, input_shape):
        self.tensors = [
            self.add_weight(name=f"w{i}", shape=shape, initializer="zeros")
            for i, shape in enumerate(self.shapes)
        ]

    def call(self, inputs):
        return inputs

    def get_prunable_weights(self):
        return list(self.tensors)


def _whole_update_arms(
    arrays: list[np.ndarray], sparsity: float
) -> tuple[dict, dict, Callable[[], float]]:
    """The update as users pay for it, through the public API.

    One pruned layer holds the weights (`|N(0, 1)|` values with random
    signs), `ConstantSparsity(sparsity, 0, frequency=1)` (global scheme
    for several weights). Arms: `fit`, `UpdatePruningStep`'s
    `on_train_batch_begin` (what `fit` calls before a batch: the Python
    due check, then the compiled update, to the last assign); `loop`,
    `Pruning.conditional_mask_update_op()` as a custom loop calls it. Before
    each call (untimed) the masks are reset to ones, the weights to their
    values, and the step moved on so that the update is due.

    Returns:
        `(functions, prepare, threshold)`: the timed arms, their untimed
        resets, and a reader of the threshold the last update set.
    """
    rng = np.random.default_rng(1)
    signed = [a * np.where(rng.random(a.shape) < 0.5, -1, 1) for a in arrays]
    signed = [a.astype(np.float32) for a in signed]
    hparams = mp.ConstantSparsity(sparsity, 0, frequency=1).to_hparams()
    if len(arrays) > 1:
        hparams = dataclasses.replace(hparams, pruning_scheme="global")
    layer = mp.prune_low_magnitude(
        _WeightsLayer([a.shape for a in arrays]), hparams=hparams
    )
    layer.build((None, 1))
    model = keras.Sequential([keras.Input((1,)), layer])
    model.compile(optimizer="sgd", loss="mse")
    step = model.optimizer.iterations
    callback = mp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()  # As `fit` calls it.
    pruning = mp.Pruning(model=model, global_step=step)
    entries = layer.pruned_weights
    ones = [np.ones(a.shape, np.float32) for a in arrays]

    def reset():
        for entry, value, one in zip(entries, signed, ones, strict=True):
            entry.weight.assign(value)
            entry.mask.assign(one)
        step.assign_add(1)

    def fit():
        callback.on_train_batch_begin(0)
        _block(entries)

    def loop():
        ops.convert_to_numpy(pruning.conditional_mask_update_op())
        _block(entries)

    def reset_and_wait():
        reset()
        _block(entries)

    functions = {"fit": fit, "loop": loop}
    prepare = {"fit": reset_and_wait, "loop": reset_and_wait}
    return (
        functions,
        prepare,
        lambda: float(ops.convert_to_numpy(entries[0].threshold)),
    )


def _row(name: str, ratios: list[float], target, details: dict) -> dict:
    median = statistics.median(ratios)
    return {
        "name": name,
        "backend": _BACKEND,
        "group": "mask_update",
        "median": round(median, 4),
        "min": round(min(ratios), 4),
        "max": round(max(ratios), 4),
        "n": len(ratios),
        "target": target,
        "met": None if target is None else bool(median <= target),
        "details": details,
    }


def _case(
    label: str,
    arrays: list[np.ndarray],
    sparsity: float,
    rounds: int,
    with_sort: bool,
    target: float,
) -> tuple[list[dict], bool]:
    """Measures one case; returns its rows and whether every method is exact."""
    total = sum(a.size for a in arrays)
    k_value = round(total * (1 - sparsity))
    functions = _arms(arrays, k_value, with_sort)
    expected = _exact_kth_largest(arrays, k_value)
    exact = {
        arm: bool(functions[arm]() == expected)
        for arm in functions
        if not arm.startswith("pass") and arm != "numpy"
    }
    whole, prepare, threshold = _whole_update_arms(arrays, sparsity)
    # The library's k: round_half_even(float32(total) * (1 - s)), which can
    # differ by one from Python's for tens of millions of entries.
    library_k = int(
        ops.convert_to_numpy(
            mask.num_kept(total, ops.convert_to_tensor(sparsity, "float32"))
        )
    )
    expected_whole = _exact_kth_largest(arrays, library_k)
    for arm, function in whole.items():
        prepare[arm]()
        function()
        exact[arm] = threshold() == float(expected_whole)
    functions.update(whole)
    samples = _measure(functions, rounds, prepare)
    medians_ms = {
        arm: round(statistics.median(times) * 1e3, 3)
        for arm, times in samples.items()
    }
    details = {
        "entries": total,
        "tensors": len(arrays),
        "sparsity": sparsity,
        "k": k_value,
        "median_ms": medians_ms,
        "exact": exact,
    }
    rows = []
    for arm, denominator, row_target in (
        ("fit", "pass", target),
        ("loop", "pass", None),
        ("host", "pass", None),
        ("xla", "pass", None),
        ("xla", "pass_xla", None),
        ("sort", "pass", None),
        ("numpy", "pass", None),
    ):
        if arm not in samples:
            continue
        ratios = [
            a / b
            for a, b in zip(samples[arm], samples[denominator], strict=True)
        ]
        method = {
            "fit": "whole update in fit",
            "loop": "whole update, custom loop",
            "host": "selection host"
            if _BACKEND == "tensorflow"
            else "fused pass 1 (NumPy selection)",
            "xla": "selection xla (jit)",
            "sort": "selection sort",
            "numpy": "NumPy pass",
        }[arm]
        case = f"{label} s={sparsity}"
        name = f"{case}: {method} / {denominator}"
        if _BACKEND != "tensorflow":
            name += f" ({_BACKEND})"
        row_details = dict(details)
        if arm == "fit":  # The row of the per-backend table.
            row_details.update(
                case=case,
                measure=f"{method} / pass",
                aside=f"{medians_ms[arm]:.1f} / {medians_ms['pass']:.1f} ms",
            )
        row = _row(name, ratios, row_target, row_details)
        row["arms"] = [arm, denominator]
        rows.append(row)
    return rows, all(exact.values())


def _format(rows: list[dict]) -> str:
    header = ("row", "median", "[min, max]", "ms (update, pass)", "target")
    lines = []
    for row in rows:
        ms = row["details"]["median_ms"]
        arm, denominator = row["arms"]
        lines.append(
            (
                row["name"],
                f"{row['median']:.2f}x",
                f"[{row['min']:.2f}, {row['max']:.2f}]",
                f"{ms[arm]:.1f}, {ms[denominator]:.1f}",
                "-"
                if row["target"] is None
                else f"<= {row['target']:g} {'yes' if row['met'] else 'NO'}",
            )
        )
    widths = [max(len(c[i]) for c in (header, *lines)) for i in range(5)]
    out = []
    for index, cells in enumerate((header, *lines)):
        out.append(
            "  ".join(
                [cells[0].ljust(widths[0])]
                + [
                    c.rjust(w)
                    for c, w in zip(cells[1:], widths[1:], strict=True)
                ]
            )
        )
        if index == 0:
            out.append("-" * (sum(widths) + 8))
    return "\n".join(out)


def _run_backends(backends: list[str], start: float) -> int:
    """Runs this script once per backend; prints the rows side by side."""
    rows, children = common.run_per_backend(
        os.path.abspath(__file__),
        backends,
        common.present_flag_args(
            ["quick", "rounds", "seed", "sizes", "global_case", "torch_threads"]
        ),
    )
    print(
        "\nWhole mask update in fit, in passes of sum(abs(w)), per backend:\n"
    )
    print(common.format_backend_table(rows))
    seconds = time.perf_counter() - start
    print(f"Wall time: {seconds:.0f} s")
    if _JSON.value:
        common.write_json(
            _JSON.value,
            {
                "benchmark": "mask_update",
                "command": " ".join(["python", *sys.argv]),
                "quick": _QUICK.value,
                "seconds": round(seconds, 1),
                "exact": all(c["returncode"] == 0 for c in children.values()),
                "backends": children,
                "machine": common.machine_info(),
                "rows": rows,
            },
        )
    return 1 if any(c["returncode"] for c in children.values()) else 0


def _sizes() -> tuple[int, ...]:
    if _SIZES_FLAG.value:
        try:
            return tuple(int(float(m) * 1e6) for m in _SIZES_FLAG.value)
        except ValueError as error:
            raise app.UsageError(f"--sizes: {error}") from None
    return _SIZES[:1] if _QUICK.value else _SIZES


def main(argv: list[str]) -> int:
    del argv
    start = time.perf_counter()
    if _BACKENDS.value:
        try:
            backends = common.check_backends(_BACKENDS.value)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
        return _run_backends(backends, start)
    torch_threads = common.set_torch_threads(_TORCH_THREADS.value)
    rng = np.random.default_rng(_SEED.value)
    rounds = _ROUNDS.value
    sizes = _sizes()
    rows, exact = [], True
    for size in sizes:
        array = _magnitudes(rng, (size,))
        for sparsity in _SPARSITIES:
            case_rows, case_exact = _case(
                f"{size / 1e6:g}M",
                [array],
                sparsity,
                rounds,
                size <= _SORT_MAX_SIZE,
                _TARGET,
            )
            rows += case_rows
            exact &= case_exact
            print(_format(case_rows), flush=True)
        del array
    if _GLOBAL_CASE.value:
        shapes = list(_GLOBAL_SHAPES)
        if _QUICK.value:  # The same proportions, 1/50 of the size.
            shapes = [(max(1, int(np.prod(s)) // 50),) for s in shapes]
        total = sum(int(np.prod(s)) for s in shapes)
        label = f"global 10 tensors {total / 1e6:.1f}M"
        arrays = [_magnitudes(rng, shape) for shape in shapes]
        case_rows, case_exact = _case(
            label, arrays, _GLOBAL_SPARSITY, rounds, False, _GLOBAL_TARGET
        )
        rows += case_rows
        exact &= case_exact
        print(_format(case_rows), flush=True)

    seconds = time.perf_counter() - start
    print(f"\nAll mask updates in one table ({seconds:.0f} s):")
    print(_format(rows))
    print(
        "every threshold equals np.partition's:",
        "yes" if exact else "NO",
    )
    if _JSON.value:
        payload = {
            "benchmark": "mask_update",
            "command": " ".join(["python", *sys.argv]),
            "quick": _QUICK.value,
            "rounds": rounds,
            "seconds": round(seconds, 1),
            "exact": exact,
            "backend": _BACKEND,
            "torch_threads": torch_threads,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "keras_backend": _BACKEND,
                "keras": keras.__version__,
                "tensorflow": common._version("tensorflow"),
                "jax": common._version("jax"),
                "torch": common._version("torch"),
                "numpy": np.__version__,
            },
            "rows": rows,
        }
        with open(_JSON.value, "w", encoding="utf-8") as file:
            json.dump(payload, file, indent=2)
    return 0 if exact else 1


if __name__ == "__main__":
    app.run(main)
