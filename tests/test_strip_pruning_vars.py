"""Tests for the `strip_pruning_vars` tool: function, flags and command line.

One pruned model is trained once per module and saved by
`keras.callbacks.ModelCheckpoint`; each test reads those files.
"""

import importlib
import os
import re
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from reference import as_numpy
from reference import expected_kept

import model_pruning as mp

# Whole-model cases: `make test-fast` leaves them out (`make test` and Bazel
# run them).
pytestmark = pytest.mark.integration

# By module path: a package attribute of the same name may be the function.
tool = importlib.import_module("model_pruning.strip_pruning_vars")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FORBIDDEN = ("mask", "threshold", "last_mask_update_step")


def _dense_model():
    """16 -> Dense 32 relu -> Dense 4."""
    return keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Trains a pruned model with ModelCheckpoint; returns the facts."""
    keras.utils.set_random_seed(7)
    root = tmp_path_factory.mktemp("strip")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = rng.normal(size=(64, 4)).astype("float32")
    pruned = mp.prune_low_magnitude(
        _dense_model(),
        pruning_schedule=mp.ConstantSparsity(0.75, begin_step=0, frequency=1),
    )
    pruned.compile(optimizer="adam", loss="mse")
    checkpoints = root / "ckpt"
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[
            mp.UpdatePruningStep(),
            keras.callbacks.ModelCheckpoint(
                str(checkpoints / "model.{epoch:02d}.keras")
            ),
        ],
    )
    plain = root / "plain.keras"
    _dense_model().save(plain)
    return {
        "root": root,
        "checkpoints": checkpoints,
        "x": x,
        "expected": pruned.predict(x, batch_size=32, verbose=0),
        "masks": [as_numpy(m).copy() for m in mp.get_masks(pruned)],
        "plain": plain,
    }


def _forbidden_paths(model):
    return [
        v.path for v in model.variables if any(w in v.path for w in _FORBIDDEN)
    ]


def _check_sparse_kernels(model, masks):
    kernels = [as_numpy(layer.kernel) for layer in model.layers]
    assert len(kernels) == len(masks)
    for kernel, mask in zip(kernels, masks, strict=True):
        assert np.count_nonzero(mask) == expected_kept(mask.size, 0.75)
        assert np.all(kernel[mask == 0] == 0.0)
        assert np.all(kernel[mask == 1] != 0.0)


def _check_keras_file(path, saved):
    model = keras.models.load_model(path)
    assert not mp.pruned_layers(model)
    assert _forbidden_paths(model) == []
    _check_sparse_kernels(model, saved["masks"])
    got = model.predict(saved["x"], batch_size=32, verbose=0)
    assert np.array_equal(got, saved["expected"])


def _check_saved_model(path, saved):
    served = tf.saved_model.load(str(path))
    names = [v.name for v in served.variables]
    assert len(names) == 4
    assert not [n for n in names if any(w in n for w in _FORBIDDEN)]
    got = served.serve(tf.constant(saved["x"])).numpy()
    np.testing.assert_allclose(got, saved["expected"], rtol=0, atol=1e-6)


def _check_weights_file(path, saved):
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
    assert not [n for n in names if any(w in n for w in _FORBIDDEN)]
    model = _dense_model()
    model.load_weights(path)
    _check_sparse_kernels(model, saved["masks"])
    got = model.predict(saved["x"], batch_size=32, verbose=0)
    assert np.array_equal(got, saved["expected"])


def test_keras_output_is_stripped_sparse_and_bit_identical(saved, tmp_path):
    path = tool.strip_pruning_vars(
        str(saved["checkpoints"]), str(tmp_path / "out")
    )
    assert path == str(tmp_path / "out" / "pruning_stripped.keras")
    _check_keras_file(path, saved)


def test_single_keras_file_as_checkpoint(saved, tmp_path):
    path = tool.strip_pruning_vars(
        str(saved["checkpoints"] / "model.02.keras"),
        str(tmp_path),
        filename="final.keras",
    )
    _check_keras_file(path, saved)


def test_saved_model_output_serves_the_pruned_predictions(saved, tmp_path):
    path = tool.strip_pruning_vars(
        str(saved["checkpoints"]),
        str(tmp_path),
        filename="stripped_saved_model",
        output_format="saved_model",
    )
    assert os.path.isdir(path)
    _check_saved_model(path, saved)


def test_weights_h5_output_loads_into_the_plain_model(saved, tmp_path):
    path = tool.strip_pruning_vars(
        str(saved["checkpoints"]),
        str(tmp_path),
        filename="stripped.weights.h5",
        output_format="weights_h5",
    )
    _check_weights_file(path, saved)


def test_newest_checkpoint_wins_by_mtime_then_name(saved, tmp_path):
    final = (saved["checkpoints"] / "model.02.keras").read_bytes()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "a.keras").write_bytes(final)
    (folder / "z.keras").write_bytes(b"not a zip")  # later name, older
    (folder / "zz.weights.h5").write_bytes(b"ignored: not .keras")
    os.utime(folder / "a.keras", ns=(2_000_000_000, 2_000_000_000))
    os.utime(folder / "z.keras", ns=(1_000_000_000, 1_000_000_000))
    path = tool.strip_pruning_vars(str(folder), str(tmp_path / "out"))
    _check_keras_file(path, saved)

    # Same modification time: the later name is taken.
    os.utime(folder / "z.keras", ns=(2_000_000_000, 2_000_000_000))
    with pytest.raises(ValueError, match="z.keras"):
        tool.strip_pruning_vars(str(folder), str(tmp_path / "out"))


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "Could not find a checkpoint at: {checkpoint}"),
        ("empty", "Could not find a checkpoint at: {checkpoint}"),
        ("weights_only", "Could not find a checkpoint at: {checkpoint}"),
        ("text_file", "'{checkpoint}' is not a .keras file"),
        ("broken", "'{checkpoint}' is not a loadable .keras model"),
        (
            "unpruned",
            "'{checkpoint}' has no pruning variables "
            "(no PruneLowMagnitude layers)",
        ),
    ],
)
def test_bad_checkpoints_raise_before_writing(saved, tmp_path, setup, message):
    checkpoint = tmp_path / "ckpt"
    if setup == "empty":
        checkpoint.mkdir()
    elif setup == "weights_only":
        checkpoint.mkdir()
        (checkpoint / "model.weights.h5").write_bytes(b"")
    elif setup == "text_file":
        checkpoint = tmp_path / "model.txt"
        checkpoint.write_text("not a model")
    elif setup == "broken":
        checkpoint = tmp_path / "model.keras"
        checkpoint.write_bytes(b"not a zip")
    elif setup == "unpruned":
        checkpoint = saved["plain"]
    out = tmp_path / "out"
    expected = message.format(checkpoint=checkpoint)
    with pytest.raises(ValueError, match=re.escape(expected)):
        tool.strip_pruning_vars(str(checkpoint), str(out))
    assert not out.exists()


@pytest.mark.parametrize(
    "filename, output_format, message",
    [
        ("x.keras", "onnx", "Received: output_format='onnx'"),
        ("x.h5", "keras", "must end in '.keras'. Received: filename='x.h5'"),
        ("x.h5", "weights_h5", "must end in '.weights.h5'"),
        ("x.keras", "saved_model", "must not end in '.keras' or '.h5'"),
        (7, "keras", "Received: filename=7"),
    ],
)
def test_bad_output_arguments_raise_before_writing(
    saved, tmp_path, filename, output_format, message
):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(message)):
        tool.strip_pruning_vars(
            str(saved["checkpoints"]), str(out), filename, output_format
        )
    assert not out.exists()


@pytest.mark.parametrize(
    "output_format, expected",
    [
        ("keras", "pruning_stripped.keras"),
        ("weights_h5", "pruning_stripped.weights.h5"),
    ],
)
def test_default_filename_follows_the_format(
    saved, tmp_path, output_format, expected
):
    path = tool.strip_pruning_vars(
        str(saved["checkpoints"]), str(tmp_path), output_format=output_format
    )
    assert path == os.path.join(str(tmp_path), expected)
    assert os.path.isfile(path)


def test_import_defines_no_global_flags():
    assert "checkpoint_dir" not in flags.FLAGS
    assert "output_format" not in flags.FLAGS


def test_flags_have_contrib_defaults_and_are_defined_once():
    values = flags.FlagValues()
    tool._define_flags(values)
    tool._define_flags(values)  # Again: no DuplicateFlagError.
    values(["prog", "--checkpoint_dir=/ckpt"])
    assert values.checkpoint_dir == "/ckpt"
    assert values.output_dir == "/tmp"
    assert values.filename == ""  # per-format default
    assert values.output_format == "keras"
    values.unparse_flags()
    with pytest.raises(flags.IllegalFlagValueError, match="checkpoint_dir"):
        values(["prog"])


def _run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_REPO, env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "model_pruning.strip_pruning_vars", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=_REPO,
        timeout=120,
        check=False,
    )


def test_command_line_writes_each_format(saved, tmp_path):
    keras_run = _run_cli(
        f"--checkpoint_dir={saved['checkpoints']}", f"--output_dir={tmp_path}"
    )
    assert keras_run.returncode == 0, keras_run.stderr
    keras_path = tmp_path / "pruning_stripped.keras"
    assert keras_run.stdout.strip().splitlines()[-1] == str(keras_path)
    _check_keras_file(keras_path, saved)

    model_run = _run_cli(
        f"--checkpoint_dir={saved['checkpoints']}",
        f"--output_dir={tmp_path}",
        "--filename=served",
        "--output_format=saved_model",
    )
    assert model_run.returncode == 0, model_run.stderr
    assert model_run.stdout.strip().splitlines()[-1] == str(tmp_path / "served")
    _check_saved_model(tmp_path / "served", saved)


def test_command_line_error_exits_1_without_traceback(tmp_path):
    missing = tmp_path / "missing"
    result = _run_cli(
        f"--checkpoint_dir={missing}", f"--output_dir={tmp_path / 'out'}"
    )
    assert result.returncode == 1
    assert f"Error: Could not find a checkpoint at: {missing}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()
