"""A `.keras` file saved mid-pruning on one backend resumes on another, and
the three backends prune alike: child processes, one per backend and job
(`cross_backend_worker.py`)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.integration

_ALL = ("tensorflow", "jax", "torch")
_BACKENDS = [b for b in _ALL if importlib.util.find_spec(b) is not None]
_WORKER = os.path.join(os.path.dirname(__file__), "cross_backend_worker.py")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(backend, out_dir, *args):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=os.pathsep.join(
            filter(None, [_ROOT, os.environ.get("PYTHONPATH")])
        ),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    child = subprocess.run(
        [sys.executable, _WORKER, str(out_dir), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, f"{backend}: {child.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{backend: dir}` holding `full.npz` and `mid.keras`, and
    `resumed.npz` from the previous backend's `mid.keras` (in a cycle)."""
    if len(_BACKENDS) < 2:
        pytest.skip(f"needs two backends; installed: {_BACKENDS}")
    dirs = {b: tmp_path_factory.mktemp(b) for b in _BACKENDS}
    for backend, out_dir in dirs.items():
        _run(backend, out_dir)
    for i, backend in enumerate(_BACKENDS):
        source = _BACKENDS[i - 1]
        _run(backend, dirs[backend], dirs[source] / "mid.keras")
    return dirs


def _load(path):
    with np.load(path) as data:
        return dict(data)


def _pairs(arrays):
    count = sum(1 for k in arrays if k.startswith("mask"))
    return [(arrays[f"mask{i}"], arrays[f"weight{i}"]) for i in range(count)]


@pytest.mark.parametrize("index", range(len(_BACKENDS)))
def test_file_saved_on_one_backend_resumes_on_another(runs, index):
    backend, source = _BACKENDS[index], _BACKENDS[index - 1]
    full = _load(runs[backend] / "full.npz")
    resumed = _load(runs[backend] / "resumed.npz")
    assert int(resumed["iterations"]) == int(full["iterations"]) == 24
    np.testing.assert_array_equal(resumed["last"], full["last"])
    np.testing.assert_array_equal(full["last"], [16, 16])
    for (mask, weight), (mask0, weight0) in zip(
        _pairs(resumed), _pairs(full), strict=True
    ):
        np.testing.assert_array_equal(mask, mask0, err_msg=source)
        np.testing.assert_allclose(weight, weight0, rtol=1e-5, atol=1e-6)
        assert np.all(weight[mask == 0] == 0)


def test_same_masks_on_every_backend_for_the_same_weights_and_data(runs):
    results = {b: _pairs(_load(runs[b] / "full.npz")) for b in _BACKENDS}
    first = _BACKENDS[0]
    for backend in _BACKENDS[1:]:
        for (mask, weight), (mask0, weight0) in zip(
            results[backend], results[first], strict=True
        ):
            # Exactly equal: no magnitude ties at the thresholds here.
            np.testing.assert_array_equal(mask, mask0, err_msg=backend)
            np.testing.assert_allclose(weight, weight0, rtol=1e-4, atol=1e-5)
    # Pruning is done: the final sparsity on every backend.
    for mask, _ in results[first]:
        kept = np.round(np.float32(mask.size) * (1 - np.float32(0.8)))
        assert int(mask.sum()) == int(kept)
