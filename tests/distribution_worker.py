"""Child process of `test_distribution.py`: trains a pruned model under a
`tf.distribute` strategy and dumps its pruning state to `.npz` files.

TensorFlow fixes its devices (and a `MultiWorkerMirroredStrategy` its
cluster) when its runtime starts, so each run gets a fresh interpreter:

    python distribution_worker.py mirrored OUT_DIR
        Two logical CPUs and `MirroredStrategy(["/cpu:0", "/cpu:1"])`, then
        the same training on one device with no strategy. Writes
        `OUT_DIR/mirrored.npz`: `replica<r>/<name>` (replica r's copy of each
        state variable after `fit`), `steps/replica<r>/mask_<i>` (its masks
        after every batch, stacked), and the same under `single/`;
        `OUT_DIR/mirrored.json`: the replica count, the variables' types and
        the devices of a mask's copies.

    TF_CONFIG=... python distribution_worker.py multi_worker OUT_DIR
        One worker of a `MultiWorkerMirroredStrategy`. The chief saves
        `OUT_DIR/chief.keras`; the other worker saves to a temporary
        directory and deletes it (Keras' multi-worker rule: every worker
        runs the save, only the chief's file is kept). Writes
        `OUT_DIR/worker_<task index>.npz`.

State variables are named `iterations`, `last_update_<layer>`, `mask_<i>`,
`threshold_<i>` and `weight_<i>` (i over `mp.pruned_weights`). The test
does the asserting; this script only trains and records. The model starts
from NumPy-seeded weights, so every run starts from the same values
whatever the strategy does to variable creation.
"""

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SAMPLES = 128
GLOBAL_BATCH = 8
STEPS = SAMPLES // GLOBAL_BATCH  # one epoch
FINAL_SPARSITY = 0.8
END_STEP = 12
FREQUENCY = 4  # masks update at steps 4, 8 and 12
LEARNING_RATE = 0.05


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 16)).astype("float32")
    y = rng.integers(0, 4, size=(SAMPLES,)).astype("int32")
    return x, y


def initial_weights():
    """[kernel, bias] of Dense(16->32) and Dense(32->4), from NumPy."""
    rng = np.random.default_rng(1)
    return [
        rng.normal(scale=0.3, size=(16, 32)).astype("float32"),
        rng.normal(scale=0.1, size=(32,)).astype("float32"),
        rng.normal(scale=0.3, size=(32, 4)).astype("float32"),
        rng.normal(scale=0.1, size=(4,)).astype("float32"),
    ]


def _pruned_model():
    """Builds, prunes and compiles the model (in the caller's scope)."""
    import keras

    import model_pruning as mp

    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras.layers.Dense(4)(hidden)
    model = keras.Model(inputs, outputs)
    model.set_weights(initial_weights())
    pruned = mp.prune_low_magnitude(
        model,
        pruning_schedule=mp.PolynomialDecay(
            0.0,
            FINAL_SPARSITY,
            begin_step=0,
            end_step=END_STEP,
            frequency=FREQUENCY,
        ),
    )
    pruned.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return pruned


def _fit(model, *extra_callbacks):
    import model_pruning as mp

    x, y = _data()
    model.fit(
        x,
        y,
        batch_size=GLOBAL_BATCH,
        epochs=1,
        shuffle=False,
        callbacks=[mp.UpdatePruningStep(), *extra_callbacks],
        verbose=0,
    )


def _state_variables(model):
    """{name: Keras variable}: the pruning state and the optimizer step."""
    import model_pruning as mp

    found = {"iterations": model.optimizer.iterations}
    for i, layer in enumerate(mp.pruned_layers(model)):
        found[f"last_update_{i}"] = layer.last_mask_update_step
    for i, entry in enumerate(mp.pruned_weights(model)):
        found[f"mask_{i}"] = entry.mask
        found[f"threshold_{i}"] = entry.threshold
        found[f"weight_{i}"] = entry.weight
    return found


def _components(strategy, variable):
    """Each local replica's copy of a Keras variable, as NumPy arrays.

    Under a strategy a Keras 3 variable's `.value` is the `tf.Variable` the
    strategy created (a `MirroredVariable`); with no strategy it is a plain
    variable and this returns its one value.
    """
    return [
        np.array(t.numpy())
        for t in strategy.experimental_local_results(variable.value)
    ]


def _mask_recorder(strategy):
    """A callback recording every replica's masks after each batch (run it
    after `UpdatePruningStep`, so it sees that batch's mask update)."""
    import keras

    import model_pruning as mp

    class MaskRecorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []  # rows[batch][mask][replica]

        def on_train_batch_end(self, batch, logs=None):
            self.rows.append(
                [
                    _components(strategy, mask)
                    for mask in mp.get_masks(self.model)
                ]
            )

    return MaskRecorder()


def _record(arrays, prefix, strategy, model, recorder):
    for name, variable in _state_variables(model).items():
        for r, value in enumerate(_components(strategy, variable)):
            arrays[f"{prefix}{r}/{name}"] = value
    for i in range(len(recorder.rows[0])):
        for r in range(len(recorder.rows[0][i])):
            arrays[f"steps/{prefix}{r}/mask_{i}"] = np.stack(
                [row[i][r] for row in recorder.rows]
            )


def _mirrored(out_dir):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    arrays = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _pruned_model()
    recorder = _mask_recorder(strategy)
    _fit(model, recorder)
    _record(arrays, "replica", strategy, model, recorder)
    mask = _state_variables(model)["mask_0"].value
    info = {
        "num_replicas": strategy.num_replicas_in_sync,
        "mask_devices": [
            t.device for t in strategy.experimental_local_results(mask)
        ],
        "variable_types": {
            name: type(v.value).__name__
            for name, v in _state_variables(model).items()
        },
    }

    keras.backend.clear_session()
    default = tf.distribute.get_strategy()  # no strategy: one device
    single = _pruned_model()
    recorder = _mask_recorder(default)
    _fit(single, recorder)
    _record(arrays, "single", default, single, recorder)
    # "single0/<name>" -> "single/<name>": one copy, no replicas.
    arrays = {
        key.replace("single0/", "single/"): value
        for key, value in arrays.items()
    }

    np.savez(os.path.join(out_dir, "mirrored.npz"), **arrays)
    with open(os.path.join(out_dir, "mirrored.json"), "w") as f:
        json.dump(info, f)


def _patch_reduce_for_keras(strategy):
    """Works around Keras 3's `fit` under `MultiWorkerMirroredStrategy`.

    Keras' TF trainer calls `strategy.reduce` in two ways that
    `CollectiveAllReduceStrategy` rejects (keras-team/keras#20585,
    tensorflow/tensorflow#72388), before the model or this library runs:
    `_maybe_symbolic_build` reduces the whole `(x, y)` batch structure
    ("Attempt to convert a value (PerReplica...) with an unsupported type"),
    and `reduce_per_replica` reduces the scalar loss with `axis=0` ("Invalid
    reduction dimension 0 for input with 0 dimensions"). This reduces each
    leaf of a structure on its own and drops `axis` for scalars. Gradients
    and variable updates do not go through it (the optimizer all-reduces
    them); only what Keras reduces to build the model and to log does.
    """
    reduce = strategy.reduce

    def reduce_each(reduce_op, value, axis=None):
        def one(leaf):
            scalar = all(
                t.shape.rank == 0
                for t in strategy.experimental_local_results(leaf)
            )
            return reduce(reduce_op, leaf, axis=None if scalar else axis)

        return tf.nest.map_structure(one, value)

    strategy.reduce = reduce_each
    return strategy


def _multi_worker(out_dir):
    # Must exist before any other TensorFlow op runs in this process.
    strategy = _patch_reduce_for_keras(
        tf.distribute.MultiWorkerMirroredStrategy()
    )
    import keras

    task_id = strategy.cluster_resolver.task_id
    # True on the chief: worker 0 when the cluster has no "chief" task.
    is_chief = strategy.extended.should_checkpoint
    with strategy.scope():
        model = _pruned_model()
    _fit(model)

    if is_chief:
        model.save(os.path.join(out_dir, "chief.keras"))
    else:
        scratch = tempfile.mkdtemp(prefix=f"worker_{task_id}_")
        try:
            model.save(os.path.join(scratch, "model.keras"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    arrays = {
        name: keras.ops.convert_to_numpy(variable)
        for name, variable in _state_variables(model).items()
    }
    arrays["num_replicas"] = np.array(strategy.num_replicas_in_sync)
    arrays["is_chief"] = np.array(is_chief)
    np.savez(os.path.join(out_dir, f"worker_{task_id}.npz"), **arrays)


if __name__ == "__main__":
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "mirrored":
        _mirrored(directory)
    elif mode == "multi_worker":
        _multi_worker(directory)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
