"""Issue 4's benchmark suite: prune at the cost of dense training.

Runs each benchmark in its own process, with `--json` to a temporary file,
and prints one table of ratios (median over pairs, [min, max], target,
met) and writes it as JSON with the machine it ran on:

1. `training_overhead.py`: mean training step time pruned / dense, for an
   MLP, a CNN and an LSTM language model, under Keras' default CPU path,
   `jit_compile=True` and `steps_per_execution=8`, each with an A/A row
   (dense / identical dense) for the noise floor;
2. `memory.py`: peak RSS of a pruning fit / a dense fit, one 37M-element
   weight and a 50M-parameter MLP, each side in a fresh process;
3. `strip_latency.py`: inference time of the stripped model / the dense
   model (and A/A);
4. `mask_update.py`: the whole mask update as `fit` and a custom loop run
   it, and the selection alone, per elementwise pass;
5. `tflite_latency.py`: LiteRT (TFLite) inference time of sparse exports
   (float32 with (4, 1) blocks, int8 with (16, 1)) / dense exports, with
   A/A rows, file-size rows and output checks;
6. `training_backends`, `mask_update_backends`: rows 1 and 4 on Keras'
   JAX and PyTorch backends (`--backends=jax,torch`, one process per
   backend; training: the MLP and the CNN on each backend's default `fit`
   path). Every row of 1, 4 and 6 carries its `backend`; the table of
   per-backend rows side by side follows the main table.

Each row's `met` is `median <= target`; A/A rows have no target. Timings
are only as quiet as the machine: read a ratio against its A/A row.

    python benchmarks/run_all.py [--quick] [--json=PATH] [--only=...]
        [--strict]

`--json` defaults to `benchmarks/results.json` (`benchmarks/results-quick.json`
with `--quick`). `--strict` exits 1 when a target is missed. A benchmark
that fails is reported in the table and makes the exit status 1.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import common
from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (script, its arguments besides --json and --quick)
_BENCHMARKS = {
    "training": ("training_overhead.py", []),
    "memory": ("memory.py", []),
    "strip": ("strip_latency.py", []),
    "mask_update": ("mask_update.py", []),
    "tflite": ("tflite_latency.py", []),
    "training_backends": (
        "training_overhead.py",
        ["--backends=jax,torch", "--models=mlp,cnn", "--variants=default"],
    ),
    "mask_update_backends": ("mask_update.py", ["--backends=jax,torch"]),
}

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke run: every benchmark with its --quick."
)
_JSON = flags.DEFINE_string(
    "json",
    None,
    "Where to write the results. Defaults to benchmarks/results.json "
    "(benchmarks/results-quick.json with --quick).",
)
_ONLY = flags.DEFINE_list(
    "only", list(_BENCHMARKS), f"Benchmarks to run, from {list(_BENCHMARKS)}."
)
_STRICT = flags.DEFINE_bool(
    "strict", False, "Exit with status 1 when a row misses its target."
)

_NAME_KEYS = ("name", "row", "label")
_MEDIAN_KEYS = ("median", "median_ratio", "ratio", "value")
_MIN_KEYS = ("min", "min_ratio")
_MAX_KEYS = ("max", "max_ratio")
_N_KEYS = ("n", "pairs", "repeats")


def _first(row: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in row:
            return key, row[key]
    return None, None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _normalize_row(row: dict, group: str) -> dict:
    """Maps a row of another script's JSON onto this suite's row schema."""
    used = set()
    values = {}
    for field, keys in (
        ("name", _NAME_KEYS),
        ("median", _MEDIAN_KEYS),
        ("min", _MIN_KEYS),
        ("max", _MAX_KEYS),
        ("n", _N_KEYS),
    ):
        key, value = _first(row, keys)
        if key is not None:
            used.add(key)
        values[field] = value
    name = str(values["name"] or "unnamed")
    if group.startswith("mask_update") and not name.lower().startswith("mask"):
        name = f"mask update: {name}"
    target = row.get("target")
    met = row.get("met")
    if met is None and _is_number(target) and _is_number(values["median"]):
        met = values["median"] <= target
    used |= {"target", "met", "group", "details", "backend"}
    details = dict(row.get("details") or {})
    details.update({k: v for k, v in row.items() if k not in used})
    backend = {"backend": row["backend"]} if "backend" in row else {}
    return {
        "name": name,
        **backend,
        "group": row.get("group", group),
        "median": values["median"],
        "min": values["min"],
        "max": values["max"],
        "n": values["n"],
        "target": target,
        "met": met,
        "details": details,
    }


def _rows_of(payload, group: str) -> list[dict]:
    """Returns the rows of a benchmark's JSON, in this suite's schema."""
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if not isinstance(rows, list):
        return []
    return [_normalize_row(r, group) for r in rows if isinstance(r, dict)]


def _run_benchmark(name: str, quick: bool, directory: str) -> dict:
    """Runs one benchmark script; returns its record and rows."""
    script_name, args = _BENCHMARKS[name]
    script = os.path.join(_HERE, script_name)
    if not os.path.exists(script):
        message = f"skipped: {os.path.relpath(script)} does not exist"
        print(f"\n== {name}: {message}", flush=True)
        return {"skipped": message, "rows": []}
    json_path = os.path.join(directory, f"{name}.json")
    argv = [sys.executable, script, f"--json={json_path}", *args]
    if quick:
        argv.append("--quick")
    print(f"\n== {name}: {' '.join(argv[1:])}", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    returncode = subprocess.run(argv, env=env, check=False).returncode
    record = {
        "command": " ".join([os.path.basename(sys.executable), *argv[1:]]),
        "returncode": returncode,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    payload = None
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as file:
            payload = json.load(file)
    rows = [] if payload is None else _rows_of(payload, name)
    if returncode != 0:
        rows.append(
            common.error_row(f"{name}: FAILED (exit {returncode})", name)
        )
    elif not rows:
        rows.append(common.error_row(f"{name}: no rows in its JSON", name))
    if name.startswith("mask_update") and payload is not None:
        record["raw"] = payload
    return {**record, "rows": rows}


def main(argv: list[str]) -> int:
    del argv
    start = time.perf_counter()
    for name in _ONLY.value:
        if name not in _BENCHMARKS:
            raise app.UsageError(
                f"unknown benchmark {name!r}; choose from {list(_BENCHMARKS)}"
            )
    json_path = _JSON.value or os.path.join(
        _HERE, "results-quick.json" if _QUICK.value else "results.json"
    )
    machine = common.machine_info()
    records, rows = {}, []
    with tempfile.TemporaryDirectory() as directory:
        for name in _BENCHMARKS:
            if name in _ONLY.value:
                record = _run_benchmark(name, _QUICK.value, directory)
                rows += record.pop("rows")
                records[name] = record
    seconds = time.perf_counter() - start
    targeted = [row for row in rows if row["target"] is not None]
    met = sum(1 for row in targeted if row["met"])
    failed = [n for n, r in records.items() if r.get("returncode", 0) != 0]
    machine["load_average_1_5_15_at_end"] = [
        round(x, 2) for x in os.getloadavg()
    ]
    print(
        f"\nIssue 4 benchmarks ({'quick' if _QUICK.value else 'full'} run, "
        f"{machine['cpu_model']}, {machine['usable_cores']} cores, "
        f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}); "
        "ratios are medians over pairs, compare with the A/A rows:\n"
    )
    print(common.format_table(rows))
    print("\nPer Keras backend, side by side:\n")
    print(common.format_backend_table(rows))
    print(
        f"\nTargets met: {met} of {len(targeted)}. Wall time: {seconds:.0f} s."
        f" Results: {json_path}"
    )
    common.write_json(
        json_path,
        {
            "suite": "issue 4: prune at the cost of dense training",
            "quick": _QUICK.value,
            "machine": machine,
            "wall_seconds": round(seconds, 1),
            "targets_met": f"{met}/{len(targeted)}",
            "rows": rows,
            "benchmarks": records,
        },
    )
    if failed:
        print(f"Failed: {', '.join(failed)}")
        return 1
    if _STRICT.value and met < len(targeted):
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
