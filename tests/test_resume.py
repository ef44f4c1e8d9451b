"""Kill a pruning `fit` with SIGKILL, resume it, get the uninterrupted run.

One module fixture runs the children of `resume_worker.py` (a few at once;
each pays TensorFlow's import): an uninterrupted run, a run killed at step
`STOP_AT` (mid-pruning, after its checkpoints are on disk), its resumptions
from the last `.keras` checkpoint and from `BackupAndRestore`, and a fresh
interpreter that loads a checkpoint. The tests compare what they wrote.
"""

import glob
import json
import os
import signal
import types

import keras
import numpy as np
import pytest
import resume_worker as rw
from reference import as_numpy
from reference import expected_kept
from reference import zhu_gupta_target

import model_pruning as mp

# Whole-model cases (`make test-fast` leaves them out), POSIX only.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only"),
]

STOP_AT = 21  # In epoch 3; after step 18's checkpoint and epoch 2's backup.
LAST_STEP = rw.EPOCHS * rw.STEPS_PER_EPOCH

# Loads a checkpoint in a fresh interpreter: first with Keras alone (which
# must fail), then after `import model_pruning`.
_LOAD_IN_FRESH_PROCESS = """
import sys
import keras
import numpy as np

path, out, inputs = sys.argv[1:]
try:
    keras.models.load_model(path)
    without = "loaded"
except Exception as error:
    without = f"{type(error).__name__}: {error}"

import model_pruning

model = keras.models.load_model(path)
np.savez(
    out,
    without=without,
    classes=[type(layer).__name__ for layer in model.layers],
    iterations=model.optimizer.iterations.numpy(),
    outputs=model(np.load(inputs)).numpy(),
    **{
        f"mask/{i}": mask.numpy()
        for i, mask in enumerate(model_pruning.get_masks(model))
    },
)
"""


def _inputs():
    return np.random.default_rng(7).normal(size=(32, 16)).astype("float32")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    reference_dir, killed_dir = root / "reference", root / "killed"
    np.save(root / "inputs.npy", _inputs())
    workers = []

    def start(name, args):
        workers.append(rw.Worker(args, log=str(root / f"{name}.log")))
        return workers[-1]

    try:
        reference = start(
            "reference",
            ["train", str(reference_dir), "--out", str(root / "ref.npz")],
        )
        killed = start(
            "killed", ["train", str(killed_dir), "--stop_at", str(STOP_AT)]
        )
        killed.wait_for(str(killed_dir / rw.STOPPED_MARKER))
        kill_status = killed.sigkill()
        after_kill = sorted(os.listdir(killed_dir))
        with open(killed_dir / rw.BACKUP_DIR / "training_metadata.json") as f:
            backup_metadata = json.load(f)
        latest = max(glob.glob(str(killed_dir / "step-*.keras")))
        resumed = start(
            "resume_keras",
            ["resume_keras", latest, "--out", str(root / "keras.npz")],
        )
        restored = start(
            "resume_backup",
            ["resume_backup", str(killed_dir), "--out", str(root / "bkp.npz")],
        )
        reference.finish()
        fresh = start(
            "fresh",
            [
                "-c",
                _LOAD_IN_FRESH_PROCESS,
                latest,
                str(root / "fresh.npz"),
                str(root / "inputs.npy"),
            ],
        )
        for worker in (resumed, restored, fresh):
            worker.finish()
    finally:
        for worker in workers:
            worker.stop()
    return types.SimpleNamespace(
        reference_dir=reference_dir,
        killed_dir=killed_dir,
        kill_status=kill_status,
        after_kill=after_kill,
        backup_metadata=backup_metadata,
        latest=latest,
        reference=dict(np.load(root / "ref.npz")),
        from_keras=dict(np.load(root / "keras.npz")),
        from_backup=dict(np.load(root / "bkp.npz")),
        fresh=dict(np.load(root / "fresh.npz")),
    )


def _expected_last_update(step):
    """Contrib's update rule plus the catch-up at the end step, in Python.

    Returns the last update a checkpoint saved after `step` training steps
    holds: `UpdatePruningStep` makes the update for step `t` before batch
    `t + 1`, so a mid-fit save after batch `step` has those through
    `step - 1`.
    """
    last = 0
    for t in range(1, step):
        begun = t >= rw.BEGIN_STEP
        regular = last + rw.FREQUENCY <= t <= rw.END_STEP
        catch_up = last < rw.END_STEP <= t
        if begun and (regular or catch_up):
            last = t
    return last


def _expected_sparsity(step):
    last = _expected_last_update(step)
    return zhu_gupta_target(
        last,
        rw.INITIAL_SPARSITY,
        rw.FINAL_SPARSITY,
        rw.BEGIN_STEP,
        rw.END_STEP,
    )


def _assert_same_state(got, want):
    """Every array of the final state is bit-identical."""
    keys = sorted(k for k in want if not k.startswith("run/"))
    assert keys == sorted(k for k in got if not k.startswith("run/"))
    different = [k for k in keys if not np.array_equal(got[k], want[k])]
    assert not different, f"Differs from the uninterrupted run: {different}"


def test_uninterrupted_run_prunes_to_the_final_sparsity(runs):
    state = runs.reference
    assert int(state["run/start_step"]) == 0
    assert int(state["run/batches"]) == LAST_STEP
    assert int(state["iterations"]) == LAST_STEP
    layers = [k for k in state if k.startswith("last_update/")]
    assert len(layers) == 3
    assert all(int(state[k]) == rw.END_STEP for k in layers)
    for i in range(3):
        mask = state[f"mask/{i}"]
        assert np.count_nonzero(mask) == expected_kept(
            mask.size, rw.FINAL_SPARSITY
        )


def test_kill_falls_mid_pruning_after_the_checkpoints(runs):
    assert runs.kill_status == -signal.SIGKILL
    # Epoch checkpoints at steps 8 and 16, step checkpoints at 9 and 18;
    # no staging directory (no save was under way).
    assert runs.after_kill == [
        rw.BACKUP_DIR,
        "epoch-01.keras",
        "epoch-02.keras",
        "step-02-01.keras",
        "step-03-02.keras",
        rw.STOPPED_MARKER,
    ]
    assert runs.backup_metadata["epoch"] == 2
    model = keras.models.load_model(runs.latest)
    assert os.path.basename(runs.latest) == "step-03-02.keras"
    assert as_numpy(model.optimizer.iterations) == 18
    # Step 18 is an update step, but its update runs before batch 19, after
    # this save: the checkpoint holds the update of step 12, and a fit
    # resumed from it makes the step-18 update first.
    assert [
        as_numpy(x.last_mask_update_step) for x in mp.pruned_layers(model)
    ] == [12] * 3
    sparsity = mp.get_weight_sparsity(model)
    assert all(
        rw.INITIAL_SPARSITY < s < rw.FINAL_SPARSITY - 0.1 for s in sparsity
    )
    # Up to the kill the two runs are the same, byte for byte in state.
    reference = keras.models.load_model(runs.reference_dir / "step-03-02.keras")
    for got, want in zip(model.variables, reference.variables, strict=True):
        np.testing.assert_array_equal(as_numpy(got), as_numpy(want))


def test_resume_from_keras_checkpoint_matches_uninterrupted_run(runs):
    # It trained only what the checkpoint lacked: steps 19 to 48.
    assert int(runs.from_keras["run/start_step"]) == 18
    assert int(runs.from_keras["run/batches"]) == LAST_STEP - 18
    _assert_same_state(runs.from_keras, runs.reference)


def test_resume_from_backup_and_restore_matches_uninterrupted_run(runs):
    # BackupAndRestore restored epoch 2's end (step 16), not a fresh start.
    assert int(runs.from_backup["run/start_step"]) == 16
    assert int(runs.from_backup["run/batches"]) == LAST_STEP - 16
    _assert_same_state(runs.from_backup, runs.reference)


def _check_sparse_checkpoint(path, step):
    """Loads a checkpoint, checks its masks against the schedule and its
    stripped weights against the masks; returns its sparsities."""
    model = keras.models.load_model(path)
    assert as_numpy(model.optimizer.iterations) == step
    assert [
        as_numpy(x.last_mask_update_step) for x in mp.pruned_layers(model)
    ] == [_expected_last_update(step)] * 3
    entries = mp.pruned_weights(model)
    raw = {e.name: (as_numpy(e.weight), as_numpy(e.mask)) for e in entries}
    stripped = mp.strip_pruning(model)
    assert not [v.path for v in stripped.variables if "mask" in v.path]
    for name, (weight, mask) in raw.items():
        layer, attribute = name.split("/")
        kernel = as_numpy(getattr(stripped.get_layer(layer), attribute))
        kept = mask == 1
        assert np.count_nonzero(mask) == expected_kept(
            mask.size, _expected_sparsity(step)
        )
        # +0.0 exactly where masked, the trained value elsewhere.
        assert np.all(kernel[~kept] == 0)
        assert not np.any(np.signbit(kernel[~kept]))
        np.testing.assert_array_equal(kernel[kept], weight[kept])
        assert np.count_nonzero(kernel) == np.count_nonzero(mask)
    np.testing.assert_array_equal(
        as_numpy(stripped(_inputs())), as_numpy(model(_inputs()))
    )
    return mp.get_weight_sparsity(model)


def test_epoch_checkpoints_strip_to_exact_zeros_where_masked(runs):
    paths = sorted(glob.glob(str(runs.reference_dir / "epoch-*.keras")))
    assert len(paths) == rw.EPOCHS
    sparsities = [
        _check_sparse_checkpoint(path, rw.STEPS_PER_EPOCH * (epoch + 1))
        for epoch, path in enumerate(paths)
    ]
    # Saved at steps 8 to 48; each holds the updates through the step
    # before it (the one due at 40 is in the step-48 checkpoint only).
    for before, after in zip(sparsities[:-1], sparsities[1:], strict=True):
        # Non-decreasing per weight (a small one may round to the same
        # count between two late updates), increasing over the model.
        assert all(a <= b for a, b in zip(before, after, strict=True))
        assert sum(after) > sum(before)
    assert all(s < rw.FINAL_SPARSITY for s in sparsities[4])


def test_step_checkpoints_strip_to_exact_zeros_where_masked(runs):
    paths = sorted(glob.glob(str(runs.reference_dir / "step-*.keras")))
    steps = list(range(rw.SAVE_EVERY, LAST_STEP + 1, rw.SAVE_EVERY))
    assert len(paths) == len(steps) == 5
    for path, step in zip(paths, steps, strict=True):
        _check_sparse_checkpoint(path, step)
    assert not [n for n in os.listdir(runs.reference_dir) if ".tmp" in n]


def test_fresh_process_loads_checkpoint_after_import_model_pruning(runs):
    fresh = runs.fresh
    # Keras alone does not know the wrapper; `import model_pruning` is all
    # it takes.
    assert "PruneLowMagnitude" in str(fresh["without"])
    assert list(fresh["classes"]).count("PruneLowMagnitude") == 3
    model = keras.models.load_model(runs.latest)
    assert int(fresh["iterations"]) == as_numpy(model.optimizer.iterations)
    masks = mp.get_masks(model)
    assert len([k for k in fresh if k.startswith("mask/")]) == len(masks)
    for i, mask in enumerate(masks):
        np.testing.assert_array_equal(fresh[f"mask/{i}"], as_numpy(mask))
    np.testing.assert_allclose(
        fresh["outputs"], as_numpy(model(_inputs())), rtol=1e-6, atol=1e-6
    )
