"""Peak memory of pruning a 50M-parameter model through a whole schedule.

Trains the same MLP (input 4096, three Dense 4096 layers: 50.3M prunable
kernel weights) once dense and once pruned with `PolynomialDecay` to 90%, each
in its own process, and prints each process's peak resident memory (VmHWM)
and the ratio pruned / dense, measured in this one run.

    python benchmarks/large_model_memory.py [--width=4096] [--steps=40]
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

_WIDTH = flags.DEFINE_integer("width", 4096, "Input and layer width.")
_LAYERS = flags.DEFINE_integer("layers", 3, "Number of Dense layers.")
_STEPS = flags.DEFINE_integer("steps", 40, "Training steps.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_MODE = flags.DEFINE_enum(
    "mode", None, ["dense", "pruned"], "Run one side (internal)."
)


def _peak_rss_mib() -> float:
    """Returns this process's peak resident set size (VmHWM) in MiB."""
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _train(mode: str) -> dict:
    """Trains one side in this process; returns its measurements."""
    import keras
    import numpy as np

    import model_pruning as mp

    width, steps, batch = _WIDTH.value, _STEPS.value, _BATCH.value
    layers = [keras.Input((width,))]
    layers += [keras.layers.Dense(width) for _ in range(_LAYERS.value)]
    model = keras.Sequential(layers)
    callbacks = []
    if mode == "pruned":
        end = steps * 3 // 4
        schedule = mp.PolynomialDecay(
            0.0, 0.9, begin_step=0, end_step=end, frequency=max(1, end // 4)
        )
        model = mp.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks = [mp.UpdatePruningStep()]
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, width)).astype("float32")
    y = rng.normal(size=(batch * steps, width)).astype("float32")
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    result = {
        "mode": mode,
        "prunable_params": _LAYERS.value * width * width,
        "fit_seconds": round(seconds, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }
    if mode == "pruned":
        result["sparsity"] = [
            round(s, 4) for s in mp.get_weight_sparsity(model)
        ]
    return result


def _run_side(mode: str) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), f"--mode={mode}"]
    argv += [
        f"--width={_WIDTH.value}",
        f"--layers={_LAYERS.value}",
        f"--steps={_STEPS.value}",
        f"--batch_size={_BATCH.value}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    output = subprocess.run(
        argv, check=True, capture_output=True, text=True, env=env
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    if _MODE.value:
        print(json.dumps(_train(_MODE.value)))
        return
    dense = _run_side("dense")
    pruned = _run_side("pruned")
    for side in (dense, pruned):
        print(json.dumps(side))
    ratio = pruned["peak_rss_mib"] / dense["peak_rss_mib"]
    print(
        f"prunable parameters: {dense['prunable_params']:,}; peak RSS dense "
        f"{dense['peak_rss_mib']:.0f} MiB, pruned "
        f"{pruned['peak_rss_mib']:.0f} MiB, ratio {ratio:.2f}; final "
        f"sparsity {pruned['sparsity']}"
    )


if __name__ == "__main__":
    app.run(main)
