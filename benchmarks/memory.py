"""Peak memory of a pruning fit against a dense fit (issues 4 and 16).

Two models: `single`, one 37M-element weight (`Dense(6100)` on 6100
inputs: a 6100 x 6100 kernel, 37.2M weights), and `mlp`, a 50M-parameter
MLP of several kernels (4096 inputs, three `Dense(4096)`: 50.3M weights).
Each is trained with Adam for a few steps,
dense in one fresh process and pruned in another (twice: masks of the
weights' dtype, float32, and `mask_dtype="uint8"`): `PolynomialDecay(0.0,
0.9, begin_step=0, end_step=steps - 2, frequency=2)` with
`UpdatePruningStep`: 4 steps, the masks update at step 2 and end at 90%
sparsity (a second update, at step 4 of 6, raised the peak by under 1%:
2245 -> 2255 MiB on 2 cores). Each process reports its peak resident set
size (`VmHWM` in `/proc/self/status`) after the fit, which includes the
TensorFlow runtime, the weights, Adam's slots, the gradients and, for the
pruned side, the masks and the mask update's temporaries.
Sides run in ABBA order (dense, pruned, pruned_uint8, pruned_uint8,
pruned, dense, ...), one process each; each row is the median of the
per-round ratios pruned / dense.

    python benchmarks/memory.py [--quick] [--json=PATH] [--pairs=2]
        [--models=single,mlp] [--units=6100] [--steps=4] [--batch_size=32]

`--quick` runs one pair instead of two.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import common
from absl import app
from absl import flags

_QUICK = flags.DEFINE_bool("quick", False, "Smoke run: 1 pair.")
_JSON = flags.DEFINE_string("json", None, "Write the rows to this file.")
_PAIRS = flags.DEFINE_integer(
    "pairs", None, "Pairs of processes. Default 2, 1 in --quick."
)
_UNITS = flags.DEFINE_integer(
    "units", 6100, "Input and output width: the kernel is units x units."
)
_MODELS = flags.DEFINE_list(
    "models",
    ["single", "mlp"],
    "single: one units x units kernel; mlp: 4096 -> 3 x Dense(4096).",
)
_STEPS = flags.DEFINE_integer("steps", 4, "Training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_SIDE = flags.DEFINE_enum(
    "side",
    None,
    ["dense", "pruned", "pruned_uint8"],
    "Run one side here (internal).",
)
_MODEL = flags.DEFINE_enum(
    "model", "single", ["single", "mlp"], "The model of --side (internal)."
)
_MLP_WIDTH = 4096
_MLP_LAYERS = 3

_GROUP = "memory"
_TARGET = 1.25


def _status_mib(field: str) -> float:
    """Returns a `/proc/self/status` field (`VmHWM`, `VmRSS`) in MiB."""
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _layers(model: str, units: int) -> tuple[int, list[int]]:
    """`(inputs, widths of the Dense layers)` of a model."""
    if model == "mlp":
        return _MLP_WIDTH, [_MLP_WIDTH] * _MLP_LAYERS
    return units, [units]


def _describe(model: str, units: int) -> str:
    inputs, widths = _layers(model, units)
    dense = " -> ".join(f"Dense({w})" for w in widths)
    weights = sum(
        a * b for a, b in zip([inputs, *widths[:-1]], widths, strict=True)
    )
    return f"{inputs} inputs -> {dense} ({weights / 1e6:.1f}M weights)"


def _train(
    side: str, model_name: str, units: int, steps: int, batch: int
) -> dict:
    """Trains one side in this process; returns its measurements."""
    common.quiet_tensorflow()
    import keras
    import numpy as np

    import model_pruning as mp

    keras.utils.set_random_seed(0)
    inputs, widths = _layers(model_name, units)
    model = keras.Sequential(
        [keras.Input((inputs,))] + [keras.layers.Dense(w) for w in widths]
    )
    units = widths[-1]
    callbacks = []
    if side != "dense":
        schedule = mp.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=common.FINAL_SPARSITY,
            begin_step=0,
            end_step=max(2, steps - 2),
            frequency=2,
        )
        model = mp.prune_low_magnitude(
            model,
            pruning_schedule=schedule,
            mask_dtype="uint8" if side == "pruned_uint8" else None,
        )
        callbacks = [mp.UpdatePruningStep()]
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, inputs)).astype("float32")
    y = rng.normal(size=(batch * steps, units)).astype("float32")
    rss_before_fit = _status_mib("VmRSS")
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
    result = {
        "side": side,
        "largest_weight_elements": max(
            a * b for a, b in zip([inputs, *widths[:-1]], widths, strict=True)
        ),
        "fit_seconds": round(time.perf_counter() - start, 1),
        "rss_before_fit_mib": round(rss_before_fit, 1),
        "peak_rss_mib": round(_status_mib("VmHWM"), 1),
    }
    if side != "dense":
        result["sparsity"] = [
            round(float(s), 4) for s in mp.get_weight_sparsity(model)
        ]
    return result


def _run_side(
    side: str, model: str, units: int, steps: int, batch: int
) -> dict:
    """Runs one side in a fresh process; returns its measurements."""
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        f"--side={side}",
        f"--model={model}",
        f"--units={units}",
        f"--steps={steps}",
        f"--batch_size={batch}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    output = subprocess.run(
        argv, check=True, capture_output=True, text=True, env=env
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def run(
    pairs: int, model: str, units: int, steps: int, batch: int
) -> list[dict]:
    """Runs `pairs` ABBA rounds of processes; returns the two rows."""
    sides = {"dense": [], "pruned": [], "pruned_uint8": []}

    def measure(side: str, round_index: int) -> float:
        del round_index
        result = _run_side(side, model, units, steps, batch)
        sides[side].append(result)
        print(json.dumps(result), flush=True)
        return result["peak_rss_mib"]

    samples = common.run_rounds(tuple(sides), pairs, measure)
    return [
        _row(model, units, steps, batch, side, samples, sides)
        for side in ("pruned", "pruned_uint8")
    ]


def _row(model, units, steps, batch, side, samples, sides) -> dict:
    """The row of one pruned side against the dense side."""
    ratios = common.ratios(samples, side, "dense")
    details = {
        "model": f"{_describe(model, units)}, Adam, batch {batch}",
        "largest_weight_elements": sides["dense"][-1][
            "largest_weight_elements"
        ],
        "steps": steps,
        "peak_rss_mib_median": {
            side: round(statistics.median(values), 1)
            for side, values in samples.items()
        },
        "rss_before_fit_mib_median": {
            side: round(
                statistics.median(r["rss_before_fit_mib"] for r in results), 1
            )
            for side, results in sides.items()
        },
        "final_sparsity": sides[side][-1]["sparsity"],
        "ratios": [round(r, 4) for r in ratios],
    }
    masks = "uint8 masks" if side == "pruned_uint8" else "float32 masks"
    return common.make_row(
        f"memory {_name(model, units)} Adam, {masks}: pruned/dense peak RSS",
        _GROUP,
        ratios,
        _TARGET,
        details,
    )


def _name(model: str, units: int) -> str:
    if model == "mlp":
        return f"MLP {_MLP_LAYERS}x{_MLP_WIDTH}x{_MLP_WIDTH}"
    return f"{units}x{units}"


def main(argv: list[str]) -> None:
    del argv
    steps = _STEPS.value
    units = _UNITS.value
    if _SIDE.value:
        result = _train(_SIDE.value, _MODEL.value, units, steps, _BATCH.value)
        print(json.dumps(result))
        return
    start = time.perf_counter()
    pairs = _PAIRS.value or (1 if _QUICK.value else 2)
    rows = []
    for model in _MODELS.value:
        if model not in ("single", "mlp"):
            raise app.UsageError(
                f"--models takes single and mlp. Received: {model!r}"
            )
        rows += run(pairs, model, units, steps, _BATCH.value)
    common.finish(rows, start, _JSON.value)


if __name__ == "__main__":
    app.run(main)
