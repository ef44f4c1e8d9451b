"""model_pruning on Keras backends other than TensorFlow: each entry point
refuses at once with `UnsupportedBackendError`, naming itself and the
backend, before it changes anything.

The real check runs child processes with `KERAS_BACKEND=numpy` (always
installed with Keras) and `KERAS_BACKEND=jax` / `torch` where installed.
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

    attempt("MaskedFullyConnected", lambda: core_layers.MaskedFullyConnected(2))
    try:
        keras.models.load_model(sys.argv[1])
    except Exception as error:
        results["load_model"] = repr(error)
    else:
        results["load_model"] = None
    results["unchanged"] = before == [v.path for v in model.variables]
    # What needs no pruning variables works on any backend.
    results["report_size"] = mp.sparsity_report(model).total.size
    schedule = mp.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10)
    results["schedule_sparsity"] = float(schedule(5)[1])
    print("RESULTS " + json.dumps(results))
    """
)


def _installed_backends():
    found = ["numpy"]
    for name in ("jax", "torch"):
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    return found


def test_check_backend_names_the_entry_point_and_the_backend(monkeypatch):
    backends.check_backend("prune_low_magnitude")  # TensorFlow: no error.
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(
        mp.UnsupportedBackendError,
        match=r"`prune_low_magnitude` runs on Keras' TensorFlow backend "
        r"only.*KERAS_BACKEND=tensorflow.*"
        r"Received: keras.backend.backend\(\)='jax'",
    ):
        backends.check_backend("prune_low_magnitude")
    assert issubclass(mp.UnsupportedBackendError, NotImplementedError)


@pytest.mark.integration
@pytest.mark.parametrize("backend", _installed_backends())
def test_every_entry_point_refuses_another_backend(backend, tmp_path):
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
    assert results.pop("unchanged") is True
    assert results.pop("report_size") == 4 * 3 + 3
    assert results.pop("schedule_sparsity") == pytest.approx(0.4375)
    loaded = results.pop("load_model")
    assert loaded is not None and "PruneLowMagnitude" in loaded
    assert "TensorFlow backend only" in loaded
    for entry_point, message in results.items():
        assert message is not None, entry_point
        assert f"`{entry_point}` runs on Keras' TensorFlow backend" in message
        assert f"Received: keras.backend.backend()='{backend}'" in message
    assert sorted(os.listdir(tmp_path)) == ["pruned.keras"]
