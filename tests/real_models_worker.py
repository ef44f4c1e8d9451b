"""Child process of `test_real_models.py`: reload a pruned model and resume.

    python real_models_worker.py MODEL DATA OUT [--hub] [--resume_steps N]

A fresh interpreter that imports `model_pruning` (and `keras_hub` with
--hub) and nothing of the tests. The test starts it first thing, so these
imports overlap the test's own work; it then waits for DATA (an `.npz` of
`pack("x", inputs)` and `pack("y", targets)`), which the test writes once
MODEL is saved. It loads MODEL with `keras.models.load_model` (compiled, so
with its optimizer state), runs it on the inputs, resumes training for
`--resume_steps` steps (default `RESUME_STEPS`; 0 skips it) with
`UpdatePruningStep`, and writes OUT (`.npz`):

    outputs/...          the loaded model's outputs (`unpack(out, "outputs")`)
    classes              the loaded model's class name
    names                the pruned weights' names, in `pruned_weights` order
    iterations_loaded    the optimizer step on load
    optimizer_sums       sum |v| (float64) of each optimizer variable on load
    size                 per pruned weight: its number of elements
    kept_loaded          per pruned weight: mask non-zeros on load
    masked_nonzero_loaded  per pruned weight on load: entries where the mask
                         is 0 but the weight is not

and, after resuming:

    iterations_resumed   the optimizer step
    kept_resumed         per pruned weight: mask non-zeros
    regrown              per pruned weight: mask entries that went 0 -> 1
    masked_nonzero       per pruned weight: entries where the mask is 0 but
                         the weight is not
    losses               the resumed fit's loss per epoch

A child whose DATA never comes exits by itself after `MAX_WAIT` seconds.
"""

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RESUME_STEPS = 2
MAX_WAIT = 600

_WORKER = os.path.abspath(__file__)
_REPO = os.path.dirname(os.path.dirname(_WORKER))


def pack(prefix: str, value) -> dict[str, np.ndarray]:
    """Flattens an array or a dict of arrays into `.npz` entries.

    An array becomes `{prefix: array}`, a dict `{f"{prefix}/{key}": ...}`.
    """
    if isinstance(value, dict):
        return {f"{prefix}/{k}": np.asarray(v) for k, v in value.items()}
    return {prefix: np.asarray(value)}


def unpack(arrays, prefix: str):
    """The inverse of `pack` on a loaded `.npz` (or a dict)."""
    if prefix in arrays:
        return np.asarray(arrays[prefix])
    start = f"{prefix}/"
    return {
        key[len(start) :]: np.asarray(arrays[key])
        for key in arrays
        if key.startswith(start)
    }


def outputs(model: keras.Model, inputs):
    """The model's inference outputs as NumPy arrays (an array or a dict).

    Eager calls in parent and child run the same kernels on the same
    inputs, so their results agree bit for bit.
    """
    result = model(inputs, training=False)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, result)


def optimizer_sums(model: keras.Model) -> np.ndarray:
    """`sum |v|` in float64 of every optimizer variable, in order."""
    return np.array(
        [
            np.abs(keras.ops.convert_to_numpy(v).astype(np.float64)).sum()
            for v in model.optimizer.variables
        ]
    )


def _iterations(model: keras.Model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + MAX_WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"No {path} after {MAX_WAIT} s.")
        time.sleep(0.05)


def _nonzero_where_masked(masks, weights) -> np.ndarray:
    return np.array(
        [
            np.count_nonzero((mask == 0) & (weight != 0))
            for mask, weight in zip(masks, weights, strict=True)
        ]
    )


def _state(entries) -> tuple[list[np.ndarray], list[np.ndarray]]:
    masks = [keras.ops.convert_to_numpy(e.mask).copy() for e in entries]
    weights = [keras.ops.convert_to_numpy(e.weight) for e in entries]
    return masks, weights


def _run(args) -> None:
    if args.hub:
        import keras_hub  # noqa: F401  (registers its classes)
    import model_pruning as mp

    _wait_for(args.data)
    data = np.load(args.data)
    x, y = unpack(data, "x"), unpack(data, "y")
    model = keras.models.load_model(args.model)
    entries = mp.pruned_weights(model)
    masks, weights = _state(entries)
    result = {
        "classes": type(model).__name__,
        "names": np.array([e.name for e in entries]),
        "iterations_loaded": _iterations(model),
        "optimizer_sums": optimizer_sums(model),
        "size": np.array([m.size for m in masks]),
        "kept_loaded": np.array([np.count_nonzero(m) for m in masks]),
        "masked_nonzero_loaded": _nonzero_where_masked(masks, weights),
        **pack("outputs", outputs(model, x)),
    }
    if args.resume_steps:
        history = model.fit(
            x,
            y,
            batch_size=len(keras.tree.flatten(x)[0]) // args.resume_steps,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[mp.UpdatePruningStep()],
        )
        after, weights = _state(entries)
        result.update(
            iterations_resumed=_iterations(model),
            kept_resumed=np.array([np.count_nonzero(m) for m in after]),
            regrown=np.array(
                [
                    np.count_nonzero((old == 0) & (new != 0))
                    for old, new in zip(masks, after, strict=True)
                ]
            ),
            masked_nonzero=_nonzero_where_masked(after, weights),
            losses=np.array(history.history["loss"]),
        )
    np.savez(args.out, **result)


class Worker:
    """Parent side: a running `real_models_worker.py` child.

    Its output goes to `log` (a file, so a chatty child never blocks on a
    full pipe); the repository root is its working directory and comes
    first on its `PYTHONPATH`.

    Args:
        args: Arguments after `real_models_worker.py`.
        log: Path of the log file.
    """

    def __init__(self, args: list[str], log: str):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_REPO, env.get("PYTHONPATH")) if p
        )
        self.log = log
        self.started = time.monotonic()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, _WORKER, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=_REPO,
                env=env,
            )

    def output(self) -> str:
        """The child's output so far."""
        with open(self.log, errors="replace") as f:
            return f.read()

    def finish(self, timeout: float = 300.0) -> float:
        """Waits for a successful exit; returns the seconds since start."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"Worker still running after {timeout} s.\n"
                f"--- worker output ---\n{self.output()}"
            ) from None
        if returncode != 0:
            raise AssertionError(
                f"Worker failed with exit status {returncode}.\n"
                f"--- worker output ---\n{self.output()}"
            )
        return time.monotonic() - self.started

    def stop(self) -> None:
        """Kills the child if it still runs (for clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--hub", action="store_true")
    parser.add_argument("--resume_steps", type=int, default=RESUME_STEPS)
    _run(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
