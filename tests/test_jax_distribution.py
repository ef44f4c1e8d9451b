"""Pruning under Keras' distribution API on JAX, on 2 virtual CPU devices.

`jax_distribution_worker.py` runs in a child process (JAX fixes its device
count when it starts, from `XLA_FLAGS`): the same pruned model, from the
same NumPy weights and data with SGD, is trained in `fit` with
`UpdatePruningStep` on one device, under `DataParallel` (weights
replicated, batches split) and under `ModelParallel` (both Dense kernels
split by rows over a `(1, 2)` mesh); two more wrappers are only built.

Checked here:

- every mask has exactly its weight's sharding, before and after `fit`,
  whatever the `LayoutMap` says of the mask's own path; thresholds and
  `last_mask_update_step` are replicated, even under a key that matches
  their paths (`".*kernel.*"`, which would otherwise split a scalar);
- no sharded weight is copied to the host: the host NumPy selection runs
  for replicated weights only, and `keras.ops.convert_to_numpy` sees no
  split array during `fit`;
- the masks and thresholds equal the single-device run's exactly. Weights
  differ by float rounding only (`_ATOL`): a gradient summed over two
  devices (two half batches, or two halves of a kernel's rows) adds in
  another order than on one (observed: at most 6e-8 on weights of
  magnitude ~1, one ulp). `1e-6` is far below one SGD update (learning
  rate 0.1), and the masks' equality shows no rounding moved a weight
  across a threshold;
- pruned entries are exactly 0 in the weights, and `strip_pruning` folds
  the masks in (its kernels keep the `LayoutMap`'s layout).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import model_pruning as mp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("jax") is None, reason="jax not installed"
    ),
]

_WORKER = Path(__file__).with_name("jax_distribution_worker.py")
_TIMEOUT_S = 300
_ATOL = 1e-6  # see the module docstring
_RUNS = ("data", "model")
_SPLIT_BY_ROWS = "P('model', None)"
_REPLICATED = "P(None, None)"


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """Runs the worker once; returns `(results, {run: arrays})`."""
    out = tmp_path_factory.mktemp("jax_distribution")
    package_root = os.path.dirname(os.path.dirname(mp.__file__))
    path = [package_root, os.environ.get("PYTHONPATH", "")]
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, path)),
    )
    run = subprocess.run(
        [sys.executable, str(_WORKER), str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((out / "results.json").read_text())
    arrays = {
        name: dict(np.load(out / f"{name}.npz")) for name in ("single", *_RUNS)
    }
    return results, arrays


def test_child_runs_jax_on_two_devices(child):
    results, _ = child
    assert results["backend"] == "jax"
    assert results["devices"] == 2


def test_each_mask_has_its_weights_layout(child):
    results, _ = child
    expected = {
        "data": _REPLICATED,
        "model": _SPLIT_BY_ROWS,
        "whole_model": _SPLIT_BY_ROWS,
        "model_wide": _SPLIT_BY_ROWS,
    }
    reports = {
        "data": results["data"]["layouts_before"],
        "data after fit": results["data"]["layouts_after"],
        "model": results["model"]["layouts_before"],
        "model after fit": results["model"]["layouts_after"],
        "whole_model": results["whole_model"],
        "model_wide": results["model_wide"],
    }
    for case, report in reports.items():
        spec = expected[case.removesuffix(" after fit")]
        assert len(report) == 2, case
        for entry in report:
            assert entry["same_sharding"] is True, (case, entry)
            assert entry["weight_spec"] == spec, (case, entry)
            assert entry["mask_spec"] == spec, (case, entry)
            assert entry["devices"] == 2, (case, entry)
            assert entry["threshold_replicated"] is True, (case, entry)
            assert entry["step_replicated"] is True, (case, entry)
    # The masks' own paths match no key of the LayoutMap.
    assert [e["mask_path"] for e in results["whole_model"]] == [
        "outer/whole/kernel_mask",
        "outer/whole/kernel_1_mask",
    ]
    assert [e["mask_path"] for e in results["model"]["layouts_after"]] == [
        "net/prune_low_magnitude_dense/kernel_mask",
        "net/prune_low_magnitude_dense_1/kernel_mask",
    ]


def test_sharded_weights_are_not_copied_to_the_host(child):
    results, _ = child
    assert results["is_sharded"] == {
        "one_device": False,
        "replicated": False,
        "rows": True,
        "numpy": False,
    }
    for run in ("single", *_RUNS):
        assert results[run]["host_copies"] == [], run
    # The host selection: for the replicated weights as on one device,
    # never for the split ones.
    assert results["single"]["fused_updates"] > 0
    single = results["single"]["fused_updates"]
    assert results["data"]["fused_updates"] == single
    assert results["model"]["fused_updates"] == 0


@pytest.mark.parametrize("run", _RUNS)
def test_masks_match_a_single_device_run(child, run):
    results, arrays = child
    single, distributed = arrays["single"], arrays[run]
    assert results[run]["steps"] == results["single"]["steps"] == [6, 6]
    for i in range(2):
        mask = distributed[f"mask_{i}"]
        np.testing.assert_array_equal(mask, single[f"mask_{i}"])
        assert np.mean(mask == 0) == 0.75  # the schedule's final sparsity
        np.testing.assert_array_equal(
            distributed[f"threshold_{i}"], single[f"threshold_{i}"]
        )
        weight = distributed[f"weight_{i}"]
        np.testing.assert_allclose(
            weight, single[f"weight_{i}"], rtol=0, atol=_ATOL
        )
        assert np.all(weight[mask == 0] == 0), i


@pytest.mark.parametrize("run", ("single", *_RUNS))
def test_strip_pruning_folds_the_masks_in(child, run):
    results, arrays = child
    values = arrays[run]
    for i in range(2):
        np.testing.assert_array_equal(
            values[f"stripped_{i}"], values[f"weight_{i}"] * values[f"mask_{i}"]
        )
    np.testing.assert_array_equal(
        values["stripped_output"], values["pruned_output"]
    )
    assert results[run]["stripped_names"] == [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]
    if run == "model":
        assert results[run]["stripped_specs"][::2] == [_SPLIT_BY_ROWS] * 2
