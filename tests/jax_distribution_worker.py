"""Child process of `test_jax_distribution.py`: pruning in `fit` under
Keras' distribution API on JAX, over 2 virtual CPU devices.

Run with `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2` (set before JAX
starts, hence a child process). Trains the same pruned model (weights from
NumPy, the same data, SGD) on one device, under `DataParallel` and under
`ModelParallel` with the Dense kernels sharded by rows, and builds two
more wrappers only to read their layouts. Writes `<out>/<case>.npz` and
`<out>/results.json`; `test_jax_distribution.py` asserts on them.
"""

import contextlib
import json
import os
import sys

import jax
import keras
import numpy as np

import model_pruning as mp
from model_pruning import backends
from model_pruning import fused_update

_STEPS = 8  # 2 epochs of 4 batches
_BATCH = 4


def _net():
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh", name="dense"),
            keras.layers.Dense(4, name="dense_1"),
        ],
        name="net",
    )


def _data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((_STEPS // 2 * _BATCH, 8)).astype("float32")
    y = rng.standard_normal((_STEPS // 2 * _BATCH, 4)).astype("float32")
    return x, y


def _initial_weights(model):
    rng = np.random.default_rng(3)
    return [
        (rng.standard_normal(w.shape) * 0.5).astype("float32")
        for w in model.weights
    ]


class _HostCopies:
    """Records every array of more than one entry split over several
    devices that `keras.ops.convert_to_numpy` copies to the host (what the
    library's host paths call)."""

    def __init__(self):
        self.shapes = []
        self._original = keras.ops.convert_to_numpy

    def __enter__(self):
        def convert(x):
            value = getattr(x, "value", x)
            sharding = getattr(value, "sharding", None)
            if (
                sharding is not None
                and len(sharding.device_set) > 1
                and not sharding.is_fully_replicated
                and np.size(value) > 1
            ):
                self.shapes.append(list(np.shape(value)))
            return self._original(x)

        keras.ops.convert_to_numpy = convert
        return self

    def __exit__(self, *exc):
        keras.ops.convert_to_numpy = self._original


class _Calls:
    """Counts the calls of `fused_update.kth_largest_magnitude`: the host
    NumPy selection, which must not run on a sharded weight."""

    def __init__(self, module):
        self.count = 0
        self._module = module
        self._original = module.kth_largest_magnitude

    def __enter__(self):
        def counted(*args, **kwargs):
            self.count += 1
            return self._original(*args, **kwargs)

        self._module.kth_largest_magnitude = counted
        return self

    def __exit__(self, *exc):
        self._module.kth_largest_magnitude = self._original


def _is_sharded_cases():
    """`backends.is_sharded` of an array on one device, replicated over
    both, and split by rows over both."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("model",))
    value = np.arange(8.0, dtype="float32").reshape(4, 2)

    def placed(spec):
        sharding = jax.sharding.NamedSharding(mesh, spec)
        return jax.device_put(value, sharding)

    return {
        "one_device": backends.is_sharded(jax.numpy.asarray(value)),
        "replicated": backends.is_sharded(placed(jax.sharding.PartitionSpec())),
        "rows": backends.is_sharded(
            placed(jax.sharding.PartitionSpec("model", None))
        ),
        "numpy": backends.is_sharded(value),
    }


def _layout_report(model):
    """Per pruned weight: its and its mask's sharding spec, whether they
    are equal, and whether the threshold and step are replicated."""
    report = []
    for layer in mp.pruned_layers(model):
        step = layer.last_mask_update_step.value.sharding
        for entry in layer.pruned_weights:
            weight = entry.weight.value.sharding
            mask = entry.mask.value.sharding
            report.append(
                {
                    "name": entry.name,
                    "mask_path": entry.mask.path,
                    "weight_spec": str(getattr(weight, "spec", weight)),
                    "mask_spec": str(getattr(mask, "spec", mask)),
                    "same_sharding": mask == weight,
                    "devices": len(mask.device_set),
                    "threshold_replicated": (
                        entry.threshold.value.sharding.is_fully_replicated
                    ),
                    "step_replicated": step.is_fully_replicated,
                }
            )
    return report


def _distribution(case):
    devices = keras.distribution.list_devices()
    if case == "data":
        return keras.distribution.DataParallel(devices=devices)
    mesh = keras.distribution.DeviceMesh((1, 2), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    # The keys match the kernels' paths: `dense/kernel`, and for the whole
    # model wrapped, `net/dense/kernel`; the masks' paths end in `_mask`.
    # "model_wide"'s key also matches the masks and thresholds.
    key = {"model": "dense.*kernel", "whole": ".*dense.*kernel"}
    layout_map[key.get(case, ".*kernel.*")] = ("model", None)
    return keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )


def _train(case, out):
    keras.backend.clear_session()
    keras.utils.set_random_seed(1)
    distribution = None if case == "single" else _distribution(case)
    scope = distribution.scope() if distribution else contextlib.nullcontext()
    with scope:
        model = _net()
        model.set_weights(_initial_weights(model))
        pruned = mp.prune_low_magnitude(
            model,
            pruning_schedule=mp.PolynomialDecay(
                0.0, 0.75, begin_step=0, end_step=6, frequency=2
            ),
        )
        layouts_before = _layout_report(pruned)
        pruned.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        x, y = _data()
        with _HostCopies() as copies, _Calls(fused_update) as fused:
            pruned.fit(
                x,
                y,
                batch_size=_BATCH,
                epochs=2,
                shuffle=False,
                callbacks=[mp.UpdatePruningStep()],
                verbose=0,
            )
        entries = mp.pruned_weights(pruned)
        arrays = {}
        for i, entry in enumerate(entries):
            arrays[f"mask_{i}"] = keras.ops.convert_to_numpy(entry.mask)
            arrays[f"weight_{i}"] = keras.ops.convert_to_numpy(entry.weight)
            arrays[f"threshold_{i}"] = keras.ops.convert_to_numpy(
                entry.threshold
            )
        stripped = mp.strip_pruning(pruned)
        for i, kernel in enumerate(layer.kernel for layer in stripped.layers):
            arrays[f"stripped_{i}"] = keras.ops.convert_to_numpy(kernel)
        arrays["pruned_output"] = np.asarray(pruned.predict(x, verbose=0))
        arrays["stripped_output"] = np.asarray(stripped.predict(x, verbose=0))
    np.savez(os.path.join(out, f"{case}.npz"), **arrays)
    return {
        "layouts_before": layouts_before,
        "layouts_after": _layout_report(pruned),
        "host_copies": copies.shapes,
        "fused_updates": fused.count,
        "stripped_names": [v.path for v in stripped.weights],
        "stripped_specs": [
            str(getattr(v.value.sharding, "spec", "one device"))
            for v in stripped.weights
        ],
        "steps": [
            int(keras.ops.convert_to_numpy(layer.last_mask_update_step))
            for layer in mp.pruned_layers(pruned)
        ],
    }


def _build_only(case):
    """Layouts of a wrapper over a whole model (masks named `kernel_mask`
    and `kernel_1_mask` under the wrapper), and of a `LayoutMap` whose key
    also matches the masks' and thresholds' own paths."""
    keras.backend.clear_session()
    with _distribution(case).scope():
        if case == "whole":
            inner = _net()
            wrapper = mp.PruneLowMagnitude(inner, name="whole")
            keras.Sequential([keras.Input((8,)), wrapper], name="outer")
            return _layout_report(wrapper)
        model = mp.prune_low_magnitude(_net())
        return _layout_report(model)


def main(out):
    results = {
        "backend": keras.backend.backend(),
        "devices": len(jax.devices()),
        "is_sharded": _is_sharded_cases(),
    }
    for case in ("single", "data", "model"):
        results[case] = _train(case, out)
    results["whole_model"] = _build_only("whole")
    results["model_wide"] = _build_only("model_wide")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
