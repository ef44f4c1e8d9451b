"""Which entry points run on which Keras backend.

The core runs on TensorFlow, JAX and PyTorch (`tests/core/` runs there);
what is built on TensorFlow itself (contrib, SavedModel and LiteRT export)
refuses the others with `UnsupportedBackendError`, naming itself and the
backend, before it changes anything; Keras' numpy backend, which cannot
train, is refused by every entry point.

The real check runs child processes with `KERAS_BACKEND=numpy` and
`jax` / `torch` where installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

import model_pruning as mp
from model_pruning import backends

_CHILD = textwrap.dedent(
    """
    import json, sys
    import keras
    import model_pruning as mp

    results = {}

    def attempt(name, call):
        try:
            call()
        except mp.UnsupportedBackendError as error:
            results[name] = str(error)
        else:
            results[name] = None

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    before = [v.path for v in model.variables]
    attempt("prune_low_magnitude", lambda: mp.prune_low_magnitude(model))
    attempt(
        "PruneLowMagnitude",
        lambda: mp.PruneLowMagnitude(keras.layers.Dense(2)),
    )
    attempt("export_tflite", lambda: mp.export_tflite(model, "m.tflite"))
    attempt(
        "export_saved_model", lambda: mp.export_saved_model(model, "sm")
    )
    from model_pruning.contrib.python.layers import core_layers
    from model_pruning.contrib.python import pruning as contrib_pruning

    attempt("MaskedFullyConnected", lambda: core_layers.MaskedFullyConnected(2))
    attempt("contrib Pruning", lambda: contrib_pruning.Pruning())
    try:
        loaded = keras.models.load_model(sys.argv[1])
    except Exception as error:
        results["load_model"] = repr(error)
    else:
        results["load_model"] = [e.name for e in mp.pruned_weights(loaded)]
    results["unchanged"] = before == [v.path for v in model.variables]
    # What needs no pruning variables works on any backend.
    results["report_size"] = mp.sparsity_report(model).total.size
    schedule = mp.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10)
    results["schedule_sparsity"] = float(schedule(5)[1])
    print("RESULTS " + json.dumps(results))
    """
)
_TENSORFLOW_ONLY = (
    "export_tflite",
    "export_saved_model",
    "MaskedFullyConnected",
    "contrib Pruning",
)


def _installed_backends():
    found = ["numpy"]
    for name in ("jax", "torch"):
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    return found


def test_check_backend_names_the_entry_point_and_the_backend(monkeypatch):
    backends.check_backend("export_tflite", backends.TENSORFLOW_ONLY)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    backends.check_backend("prune_low_magnitude")  # JAX runs the core.
    with pytest.raises(
        mp.UnsupportedBackendError,
        match=r"`export_tflite` runs on the Keras backend tensorflow only\. "
        r"Set KERAS_BACKEND=tensorflow.*"
        r"Received: keras.backend.backend\(\)='jax'",
    ):
        backends.check_backend("export_tflite", backends.TENSORFLOW_ONLY)
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(
        mp.UnsupportedBackendError,
        match=r"`Pruning` runs on the Keras backends tensorflow, jax, torch "
        r"only.*Received: keras.backend.backend\(\)='numpy'",
    ):
        backends.check_backend("Pruning")
    assert issubclass(mp.UnsupportedBackendError, NotImplementedError)


@pytest.mark.integration
@pytest.mark.parametrize("backend", _installed_backends())
def test_entry_points_run_or_refuse_by_backend(backend, tmp_path):
    pruned = mp.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    )
    saved = str(tmp_path / "pruned.keras")
    pruned.save(saved)
    # The child imports the same model_pruning as this process.
    package_root = os.path.dirname(os.path.dirname(mp.__file__))
    path = [package_root, os.environ.get("PYTHONPATH", "")]
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=os.pathsep.join(filter(None, path)),
    )
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, saved],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [
        line for line in child.stdout.splitlines() if line.startswith("RESULTS")
    ]
    assert child.returncode == 0 and lines, child.stdout + child.stderr
    results = json.loads(lines[0].removeprefix("RESULTS "))
    assert results.pop("report_size") == 4 * 3 + 3
    assert results.pop("schedule_sparsity") == pytest.approx(0.4375)
    loaded = results.pop("load_model")
    unchanged = results.pop("unchanged")
    received = f"Received: keras.backend.backend()='{backend}'"
    if backend == "numpy":  # Keras' numpy backend cannot train: all refuse.
        assert unchanged is True
        assert "PruneLowMagnitude" in loaded and received in loaded
        refused = list(results)
    else:  # The core runs; a file saved on TensorFlow loads.
        assert loaded == ["dense/kernel"]
        assert results.pop("prune_low_magnitude") is None
        assert results.pop("PruneLowMagnitude") is None
        refused = list(_TENSORFLOW_ONLY)
        assert sorted(results) == sorted(refused)
    for entry_point in refused:
        message = results[entry_point]
        assert message is not None, entry_point
        assert f"`{entry_point}` runs on the Keras backend" in message
        assert received in message
    assert sorted(os.listdir(tmp_path)) == ["pruned.keras"]
