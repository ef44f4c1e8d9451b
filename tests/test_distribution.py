"""Pruning under `tf.distribute`.

- `MirroredStrategy` over two logical CPUs: both replicas hold the same
  masks (after every batch), thresholds, weights and steps, and they match
  a single-device run on the same global batches.
- `MultiWorkerMirroredStrategy` with two worker processes on loopback
  ports: `fit` with `UpdatePruningStep`, both workers end with the same
  state, and the chief's `.keras` checkpoint loads with it. (Keras 3's
  `fit` needs a workaround under this strategy, unrelated to pruning: see
  `distribution_worker._patch_reduce_for_keras`.)

TensorFlow fixes its devices and cluster when it starts, and other tests
have started it in this process already, so the training runs in child
processes (`distribution_worker.py`) that dump their state to `.npz`; the
assertions are here. Every child has a deadline and is killed when the test
ends, however it ends.

Tolerances: masks (after every batch), step counters, and everything
compared across replicas or across workers must be exactly equal. Weights
and thresholds are compared with the single-device run to `atol=1e-6`: on
two replicas each gradient is two partial sums over 4 examples added by
the all-reduce, on one device one sum over 8, so float32 rounding differs
in the last bits (observed: at most 3e-8 on weights of magnitude ~0.3,
i.e. about one ulp there). `1e-6` is ~30x that and ~3 orders of magnitude
below one SGD update (learning rate 0.05), so a missed, doubled or
mis-scaled step would still fail. The masks' exact equality shows the
rounding never moved a weight across a threshold.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import distribution_worker as worker
import keras
import numpy as np
import pytest
from reference import as_numpy
from reference import expected_kept

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

_WORKER = Path(__file__).with_name("distribution_worker.py")
_TIMEOUT_S = 120
_ATOL = 1e-6  # see the module docstring
_NUM_PRUNED = 2  # Dense kernels
_BIND_ERRORS = ("Address already in use", "Could not start gRPC server")


def _env(**extra):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The children import model_pruning and numpy as this process does.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def _tail(path, chars=4000):
    text = Path(path).read_text(errors="replace")
    return text[-chars:]


def _run_children(specs, log_dir, timeout=_TIMEOUT_S):
    """Runs `distribution_worker.py` once per `(args, env)` in `specs`.

    All children run at once (multi-worker training needs both). Returns
    when all exit 0; fails the test with their logs as soon as one exits
    non-zero or the deadline passes. Children still running when this
    returns or raises are killed.

    Returns:
        The log file paths, one per child.
    """
    procs, logs = [], []
    try:
        for i, (args, env) in enumerate(specs):
            log = Path(log_dir) / f"child_{i}.log"
            logs.append(log)
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(_WORKER), *args],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed or all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                failed = [i for i, c in enumerate(codes) if c is None]
                break
            time.sleep(0.1)
        if failed:
            _kill(procs)
            report = "\n".join(
                f"--- child {i} {specs[i][0]} exit={procs[i].returncode} "
                f"(timeout {timeout} s):\n{_tail(logs[i])}"
                for i in range(len(procs))
            )
            raise _ChildFailed(report)
        return logs
    finally:
        _kill(procs)


class _ChildFailed(Exception):
    pass


def _kill(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _run_or_fail(specs, log_dir):
    try:
        return _run_children(specs, log_dir)
    except _ChildFailed as error:
        pytest.fail(f"distribution_worker.py failed:\n{error}")


def _kept(mask):
    return int(np.count_nonzero(mask))


# --- MirroredStrategy ------------------------------------------------------


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """(arrays, info) from one `mirrored` child run, shared by the tests."""
    out = tmp_path_factory.mktemp("mirrored")
    _run_or_fail([(["mirrored", str(out)], _env())], out)
    with open(out / "mirrored.json") as f:
        info = json.load(f)
    with np.load(out / "mirrored.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return arrays, info


def _state_names(arrays, prefix):
    return sorted(
        key.split("/", 1)[1] for key in arrays if key.startswith(prefix + "/")
    )


def test_mirrored_runs_on_two_replicas(mirrored):
    arrays, info = mirrored
    assert info["num_replicas"] == 2
    # The replicas read below are two copies, one on each logical CPU.
    devices = info["mask_devices"]
    assert len(devices) == 2
    assert devices[0].endswith("CPU:0") and devices[1].endswith("CPU:1")
    # Every pruning variable (and the step) is mirrored, not per-replica.
    assert set(info["variable_types"].values()) == {"MirroredVariable"}
    names = _state_names(arrays, "replica0")
    assert names == _state_names(arrays, "replica1")
    assert names == _state_names(arrays, "single")
    assert sum(n.startswith("mask_") for n in names) == _NUM_PRUNED


def test_mirrored_replicas_hold_identical_state(mirrored):
    arrays, _ = mirrored
    for name in _state_names(arrays, "replica0"):
        np.testing.assert_array_equal(
            arrays[f"replica0/{name}"],
            arrays[f"replica1/{name}"],
            err_msg=f"{name} differs between replicas",
        )
    for i in range(_NUM_PRUNED):
        assert len(arrays[f"steps/replica0/mask_{i}"]) == worker.STEPS
        np.testing.assert_array_equal(
            arrays[f"steps/replica0/mask_{i}"],
            arrays[f"steps/replica1/mask_{i}"],
            err_msg=f"mask_{i} differs between replicas after some batch",
        )


def test_mirrored_matches_single_device(mirrored):
    arrays, _ = mirrored
    for r in range(2):
        replica = f"replica{r}"
        assert arrays[f"{replica}/iterations"] == worker.STEPS
        assert arrays["single/iterations"] == worker.STEPS
        for layer in range(_NUM_PRUNED):
            name = f"last_update_{layer}"
            assert arrays[f"{replica}/{name}"] == worker.END_STEP
            assert arrays[f"single/{name}"] == worker.END_STEP
        for i in range(_NUM_PRUNED):
            # Masks: exact, after every batch and at the end.
            np.testing.assert_array_equal(
                arrays[f"steps/{replica}/mask_{i}"],
                arrays[f"steps/single/mask_{i}"],
                err_msg=f"{replica} mask_{i} history vs single device",
            )
            mask = arrays[f"{replica}/mask_{i}"]
            np.testing.assert_array_equal(mask, arrays[f"single/mask_{i}"])
            # Weights (as stored: masked entries hold the last SGD step,
            # zeroed again at the next call) and thresholds: all-reduce
            # rounding only.
            weight = arrays[f"{replica}/weight_{i}"]
            single = arrays[f"single/weight_{i}"]
            np.testing.assert_allclose(weight, single, rtol=0, atol=_ATOL)
            np.testing.assert_allclose(
                arrays[f"{replica}/threshold_{i}"],
                arrays[f"single/threshold_{i}"],
                rtol=0,
                atol=_ATOL,
            )
            # Training did move the kept weights (the check is not vacuous).
            assert not np.allclose(
                weight, worker.initial_weights()[2 * i] * mask, atol=1e-3
            )


def test_mirrored_reaches_target_sparsity_exactly(mirrored):
    arrays, _ = mirrored
    for prefix in ("replica0", "replica1", "single"):
        for i in range(_NUM_PRUNED):
            mask = arrays[f"{prefix}/mask_{i}"]
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert _kept(mask) == expected_kept(
                mask.size, worker.FINAL_SPARSITY
            ), f"{prefix} mask_{i}"


# --- MultiWorkerMirroredStrategy -------------------------------------------


def _free_ports(count):
    """`count` distinct free loopback ports (bound together, then freed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tf_config(ports, index):
    return json.dumps(
        {
            "cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def _run_multi_worker(out):
    """Starts both workers; retries once with new ports if a port was
    taken between picking it and the worker binding it."""
    for attempt in range(2):
        ports = _free_ports(2)
        specs = [
            (
                ["multi_worker", str(out)],
                _env(TF_CONFIG=_tf_config(ports, index)),
            )
            for index in range(2)
        ]
        try:
            return _run_children(specs, out)
        except _ChildFailed as error:
            if attempt == 0 and any(e in str(error) for e in _BIND_ERRORS):
                continue
            pytest.fail(f"multi-worker training failed:\n{error}")
    raise AssertionError("unreachable")


def test_multi_worker_fit_prune_checkpoint(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _run_multi_worker(out)

    # Only the chief's checkpoint is kept; workers' scratch saves are gone.
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".log") == [
        "chief.keras",
        "worker_0.npz",
        "worker_1.npz",
    ]
    states = []
    for index in range(2):
        with np.load(out / f"worker_{index}.npz") as data:
            states.append({key: data[key] for key in data.files})
    chief, other = states
    assert bool(chief["is_chief"]) and not bool(other["is_chief"])
    assert chief["num_replicas"] == other["num_replicas"] == 2

    # Both workers: the same state, bit for bit.
    assert sorted(chief) == sorted(other)
    for name in chief:
        if name == "is_chief":
            continue
        np.testing.assert_array_equal(
            chief[name], other[name], err_msg=f"{name} differs"
        )

    # One global batch of 8 per step, split over the workers: 16 steps.
    assert chief["iterations"] == worker.STEPS
    for layer in range(_NUM_PRUNED):
        assert chief[f"last_update_{layer}"] == worker.END_STEP
    for i in range(_NUM_PRUNED):
        mask = chief[f"mask_{i}"]
        assert _kept(mask) == expected_kept(mask.size, worker.FINAL_SPARSITY)

    # The chief's checkpoint holds the trained pruning state.
    restored = keras.models.load_model(out / "chief.keras")
    assert len(mp.pruned_layers(restored)) == _NUM_PRUNED
    for i, entry in enumerate(mp.pruned_weights(restored)):
        np.testing.assert_array_equal(as_numpy(entry.mask), chief[f"mask_{i}"])
        np.testing.assert_array_equal(
            as_numpy(entry.threshold), chief[f"threshold_{i}"]
        )
        np.testing.assert_array_equal(
            as_numpy(entry.weight), chief[f"weight_{i}"]
        )
    for layer in mp.pruned_layers(restored):
        assert as_numpy(layer.last_mask_update_step) == worker.END_STEP
    assert as_numpy(restored.optimizer.iterations) == worker.STEPS
