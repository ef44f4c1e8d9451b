"""Shared pieces of the benchmark suite: models, data, ABBA rounds, results.

Every benchmark reports *rows*: one measured ratio (pruned or stripped over
dense, or dense over an identical dense model for the A/A noise floor) as
the median of per-pair ratios, with their min and max. A row is a dict:

    {"name": str, "group": str, "median": float, "min": float,
     "max": float, "n": int, "target": float | None, "met": bool | None,
     "details": dict}

`met` is `median <= target` (`None` when the row has no target, as A/A
rows). Each benchmark script writes `{"rows": [...], ...}` with `--json`;
`run_all.py` merges them.

Rows measured on one Keras backend carry it as `"backend"` ("tensorflow",
"jax" or "torch"); `run_per_backend` runs a benchmark script once per
backend, each in its own process (Keras picks its backend from
`KERAS_BACKEND` when it is imported), and `format_backend_table` prints
their rows side by side.

This module imports TensorFlow only inside the functions that need it, so
`run_all.py` can use the table and JSON helpers without loading it.
"""

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

# Pruning frequency and final sparsity of the training benchmarks (issue 4).
FREQUENCY = 100
FINAL_SPARSITY = 0.9
# The Keras backends a benchmark can run on (`--backends`).
BACKENDS = ("tensorflow", "jax", "torch")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A benchmark model and its synthetic data.

    Attributes:
        name: Short name used in row names and on the command line.
        description: What the model is, for the table and the JSON.
        build: Returns a new, built, uncompiled Keras model.
        batch_size: Examples per training step and per inference call.
        make_batches: `make_batches(rng, count)` returns `(x, y)` NumPy
            arrays holding `count` batches.
        window_steps: Timed training steps per fit in a full run (at
            `steps_per_execution=1`); `quick_window_steps` in `--quick`.
    """

    name: str
    description: str
    build: Callable[[], Any]
    batch_size: int
    make_batches: Callable[[Any, int], tuple[Any, Any]]
    window_steps: int
    quick_window_steps: int


def _mlp():
    import keras

    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp",
    )


def _cnn():
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="cnn",
    )


_VOCAB = 10_000
_BPTT = 20


def _lstm_lm():
    import keras

    return keras.Sequential(
        [
            keras.Input((_BPTT,), dtype="int32"),
            keras.layers.Embedding(_VOCAB, 200),
            keras.layers.LSTM(200, return_sequences=True),
            keras.layers.LSTM(200, return_sequences=True),
            keras.layers.Dense(_VOCAB),
        ],
        name="lstm_lm",
    )


def _images(shape: tuple[int, ...], batch: int):
    def make(rng, count):
        x = rng.normal(size=(count * batch, *shape)).astype("float32")
        y = rng.integers(0, 10, size=count * batch).astype("int32")
        return x, y

    return make


def _tokens(batch: int):
    def make(rng, count):
        size = (count * batch, _BPTT)
        x = rng.integers(0, _VOCAB, size=size).astype("int32")
        y = rng.integers(0, _VOCAB, size=size).astype("int32")
        return x, y

    return make


MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="mlp",
            description="MLP 784-1024-1024-10, batch 128",
            build=_mlp,
            batch_size=128,
            make_batches=_images((784,), 128),
            window_steps=16,
            quick_window_steps=8,
        ),
        ModelSpec(
            name="cnn",
            description=(
                "CNN 28x28x1: conv 3x3x32, pool, conv 3x3x64, pool, "
                "dense 128, 10; batch 128"
            ),
            build=_cnn,
            batch_size=128,
            make_batches=_images((28, 28, 1), 128),
            window_steps=12,
            quick_window_steps=8,
        ),
        ModelSpec(
            name="lstm",
            description=(
                "word LM: embedding 10k x 200, 2 x LSTM 200, softmax 10k; "
                "batch 20, 20-step BPTT"
            ),
            build=_lstm_lm,
            batch_size=20,
            make_batches=_tokens(20),
            window_steps=6,
            quick_window_steps=4,
        ),
    )
}


def build_seeded(spec: ModelSpec, seed: int):
    """Builds `spec`'s model with its initial weights drawn from `seed`."""
    import keras

    keras.utils.set_random_seed(seed)
    return spec.build()


def dataset(spec: ModelSpec, batches: int = 8, seed: int = 0):
    """Returns `batches` synthetic batches, cached and repeated forever."""
    import numpy as np
    import tensorflow as tf

    x, y = spec.make_batches(np.random.default_rng(seed), batches)
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(spec.batch_size, drop_remainder=True)
        .cache()
        .repeat()
    )


def arrays(spec: ModelSpec, batches: int, seed: int = 0):
    """Returns `(x, y)`: `batches` synthetic batches as NumPy arrays, which
    `fit` reads on every backend (through its own data adapter)."""
    import numpy as np

    return spec.make_batches(np.random.default_rng(seed), batches)


def round_orders(arms: Sequence[str], rounds: int) -> list[list[str]]:
    """Returns the order of the arms in each round: ABBA across rounds.

    Even rounds run the arms in the given order, odd rounds reversed, so
    every pair of arms runs in both orders equally often (for an even
    number of rounds): `[A, B, C], [C, B, A], [A, B, C], ...`.
    """
    forward = list(arms)
    return [forward if r % 2 == 0 else forward[::-1] for r in range(rounds)]


def run_rounds(
    arms: Sequence[str],
    rounds: int,
    measure: Callable[[str, int], float],
    first_round: int = 0,
) -> dict[str, list[float]]:
    """Measures every arm once per round, in ABBA order.

    Args:
        arms: Names of the arms.
        rounds: Number of rounds (pairs).
        measure: `measure(arm, round_index)` returns one sample (a time).
        first_round: Index passed to `measure` for the first round.

    Returns:
        `{arm: [sample of round 0, sample of round 1, ...]}`.
    """
    samples: dict[str, list[float]] = {arm: [] for arm in arms}
    for index, order in enumerate(round_orders(arms, rounds)):
        for arm in order:
            samples[arm].append(measure(arm, first_round + index))
    return samples


def ratios(samples: dict[str, list[float]], num: str, den: str) -> list[float]:
    """Returns the per-round ratios `samples[num][i] / samples[den][i]`."""
    return [a / b for a, b in zip(samples[num], samples[den], strict=True)]


def make_row(
    name: str,
    group: str,
    values: Sequence[float],
    target: float | None,
    details: dict | None = None,
) -> dict:
    """Returns a result row: median, min and max of `values`."""
    median = statistics.median(values)
    return {
        "name": name,
        "group": group,
        "median": round(median, 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
        "target": target,
        "met": None if target is None else bool(median <= target),
        "details": details or {},
    }


def error_row(name: str, group: str, details: dict | None = None) -> dict:
    """Returns the row of a measurement that failed: no values, no
    target; `name` says what failed."""
    return {
        "name": name,
        "group": group,
        "median": None,
        "min": None,
        "max": None,
        "n": 0,
        "target": None,
        "met": None,
        "details": details or {},
    }


def _format_number(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def format_table(rows: Sequence[dict]) -> str:
    """Returns the rows as a text table: name, median, [min, max], target,
    met, n."""
    header = ("row", "median", "[min, max]", "target", "met", "n")
    lines = []
    for row in rows:
        median, low, high = row.get("median"), row.get("min"), row.get("max")
        spread = (
            "-"
            if low is None or high is None
            else f"[{_format_number(low)}, {_format_number(high)}]"
        )
        met = row.get("met")
        lines.append(
            (
                str(row["name"]),
                _format_number(median),
                spread,
                "-" if row.get("target") is None else f"<= {row['target']}",
                "-" if met is None else ("yes" if met else "NO"),
                "-" if row.get("n") is None else str(row["n"]),
            )
        )
    widths = [
        max(len(header[i]), *(len(line[i]) for line in lines))
        if lines
        else len(header[i])
        for i in range(len(header))
    ]

    def join(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    out = [join(header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [join(line) for line in lines]
    return "\n".join(out)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(*packages: str) -> str | None:
    """Returns the installed version of the first of `packages` found."""
    for package in packages:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """Returns what the numbers were measured on, and by which command."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "keras": _version("keras"),
        "jax": _version("jax"),
        "torch": _version("torch"),
        "keras_backend": os.environ.get("KERAS_BACKEND"),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }


def write_json(path: str, payload: dict) -> None:
    """Writes `payload` as indented JSON, creating the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=2)
        file.write("\n")


def finish(rows: list[dict], start: float, json_path: str | None) -> None:
    """Prints the table and wall time of one benchmark script, and writes
    its rows and the machine's description as JSON when asked."""
    print()
    print(format_table(rows))
    seconds = time.perf_counter() - start
    print(f"Wall time: {seconds:.0f} s")
    if json_path:
        write_json(
            json_path,
            {
                "rows": rows,
                "machine": machine_info(),
                "wall_seconds": round(seconds, 1),
            },
        )


def check_backends(backends: Sequence[str]) -> list[str]:
    """Returns `backends` checked against `BACKENDS`, duplicates removed.

    Raises:
        ValueError: If one is not a Keras backend this suite runs on.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(
            f"Unknown backends {unknown}; choose from {list(BACKENDS)}. "
            f"Received: backends={list(backends)}"
        )
    return list(dict.fromkeys(backends))


def present_flag_args(names: Sequence[str]) -> list[str]:
    """Returns the absl flags among `names` given on the command line, as
    `--name=value` arguments (for a child process)."""
    from absl import flags

    return [
        flags.FLAGS[name].serialize()
        for name in names
        if flags.FLAGS[name].present
    ]


def run_per_backend(
    script: str, backends: Sequence[str], args: Sequence[str]
) -> tuple[list[dict], dict]:
    """Runs `script` once per Keras backend, each in a fresh process with
    `KERAS_BACKEND` set, and merges the rows of their `--json`.

    Args:
        script: Path of a benchmark script that takes `--json`.
        backends: Keras backends, in the order they run.
        args: Further arguments of every child.

    Returns:
        `(rows, children)`: the rows (each with its `backend`), a failed
        child as an `error_row`; and per backend the command, exit status,
        wall seconds and machine description of its child.
    """
    import tempfile

    rows: list[dict] = []
    children: dict = {}
    with tempfile.TemporaryDirectory() as directory:
        for backend in backends:
            json_path = os.path.join(directory, f"{backend}.json")
            argv = [sys.executable, script, f"--json={json_path}", *args]
            env = {
                **os.environ,
                "KERAS_BACKEND": backend,
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
            print(
                f"\n-- {backend}: KERAS_BACKEND={backend} {' '.join(argv[1:])}",
                flush=True,
            )
            start = time.perf_counter()
            returncode = subprocess.run(argv, env=env, check=False).returncode
            record = {
                "command": (
                    f"KERAS_BACKEND={backend} "
                    + " ".join([os.path.basename(sys.executable), *argv[1:]])
                ),
                "returncode": returncode,
                "wall_seconds": round(time.perf_counter() - start, 1),
            }
            payload = {}
            if os.path.exists(json_path):
                with open(json_path, encoding="utf-8") as file:
                    payload = json.load(file)
            child_rows = [
                {**row, "backend": row.get("backend", backend)}
                for row in payload.get("rows", [])
            ]
            if returncode != 0 or not child_rows:
                child_rows.append(
                    {
                        **error_row(
                            f"{os.path.basename(script)} on {backend}: "
                            f"FAILED (exit {returncode})",
                            "backends",
                        ),
                        "backend": backend,
                    }
                )
            record["machine"] = payload.get("machine")
            children[backend] = record
            rows += child_rows
    return rows, children


def _spread(row: dict) -> str:
    if row.get("median") is None:
        return "FAILED"
    return (
        f"{row['median']:.3f} [{row['min']:.3f}, {row['max']:.3f}]"
        if row.get("min") is not None
        else f"{row['median']:.3f}"
    )


def _order(backend: str) -> int:
    return BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS)


def format_backend_table(rows: Sequence[dict]) -> str:
    """Returns the per-backend rows side by side: one line per backend and
    case (`details["case"]`: model and variant, or tensor and sparsity)
    with the measured ratio (median [min, max]), its A/A row's (or
    `details["aside"]`, such as the times), and the target. Rows without
    `details["case"]` are left out."""
    header = (
        "backend",
        "case",
        "measure",
        "median [min, max]",
        "A/A (or ms)",
        "target",
    )
    by_key: dict[tuple, dict] = {}
    lines = []
    for row in rows:
        details = row.get("details") or {}
        case = details.get("case")
        if case is None:
            if row.get("median") is None and "backend" in row:  # failed
                lines.append(
                    (row["backend"], row["name"], "", "FAILED", "-", "-")
                )
            continue
        key = (row.get("backend", "?"), case)
        if details.get("role") == "aa":
            by_key.setdefault(key, {})["aa"] = row
        else:
            by_key.setdefault(key, {}).setdefault("rows", []).append(row)
    cases = list(dict.fromkeys(case for _, case in by_key))
    cases += [line[1] for line in lines]  # failed runs, last
    for (backend, case), found in by_key.items():
        aa = found.get("aa")
        for row in found.get("rows", []):
            target = row.get("target")
            met = row.get("met")
            lines.append(
                (
                    backend,
                    case,
                    str(row["details"].get("measure", "")),
                    _spread(row),
                    _spread(aa)
                    if aa is not None
                    else str(row["details"].get("aside", "-")),
                    "-"
                    if target is None
                    else f"<= {target:g} "
                    + ("-" if met is None else ("yes" if met else "NO")),
                )
            )
    if not lines:
        return "(no per-backend rows)"
    widths = [
        max(len(header[i]), *(len(line[i]) for line in lines))
        for i in range(len(header))
    ]
    out = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "-" * (sum(widths) + 2 * (len(widths) - 1)),
    ]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
        for line in sorted(
            lines, key=lambda line: (cases.index(line[1]), _order(line[0]))
        )
    ]
    return "\n".join(out)


def backends_flag():
    """Defines `--backends` (call once per script, at import)."""
    from absl import flags

    return flags.DEFINE_list(
        "backends",
        None,
        "Run once per Keras backend, each in its own process, and print the "
        f"rows side by side; from {list(BACKENDS)}. Default: only the "
        "backend Keras runs on here (KERAS_BACKEND).",
    )


def torch_threads_flag():
    """Defines `--torch_threads` (call once per script, at import)."""
    from absl import flags

    return flags.DEFINE_integer(
        "torch_threads",
        1,
        "On PyTorch, torch.set_num_threads(N) before timing; 0 keeps "
        "PyTorch's default (one per core). Default 1: on a machine whose "
        "cores other processes share, PyTorch's OpenMP threads wait for "
        "each other (one sum(abs(w)) of 1M entries: 24 ms on 2 threads "
        "against 0.15 ms on 1, measured on a loaded 2-core machine).",
    )


def set_torch_threads(threads: int) -> int | None:
    """On PyTorch, sets its intra-op threads (unless `threads` is 0);
    returns the number in use (`None` on other backends)."""
    import keras

    if keras.backend.backend() != "torch":
        return None
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ and Python log chatter (call before
    importing TensorFlow for the C++ part)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
