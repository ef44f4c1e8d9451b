"""Runs one pruning job on the Keras backend of `KERAS_BACKEND`, for
`test_core_cross_backend.py`.

    python cross_backend_worker.py OUT_DIR [RESUME_FROM]

Without RESUME_FROM: trains a pruned MLP from NumPy initial weights with
SGD for 3 epochs (`OUT_DIR/full.npz`: masks, weights, last update steps),
and again for 1 epoch, saved mid-pruning as `OUT_DIR/mid.keras`. With
RESUME_FROM (a `.keras` file saved on any backend): loads it and trains
epochs 2 and 3 (`OUT_DIR/resumed.npz`).
"""

import os
import sys

import keras
import numpy as np

import model_pruning as mp

_EPOCHS, _BATCH, _SAMPLES = 3, 8, 64  # 24 steps


def _data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(_SAMPLES, 8)).astype("float32")
    y = rng.integers(0, 3, size=_SAMPLES).astype("int32")
    return x, y


def _pruned():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(11)
    model.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in model.weights]
    )
    schedule = mp.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=16, frequency=4
    )
    pruned = mp.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return pruned


def _fit(model, epochs, initial_epoch=0):
    x, y = _data()
    model.fit(
        x,
        y,
        batch_size=_BATCH,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[mp.UpdatePruningStep()],
    )


def _dump(model, path):
    arrays = {}
    for i, entry in enumerate(mp.pruned_weights(model)):
        arrays[f"mask{i}"] = keras.ops.convert_to_numpy(entry.mask)
        arrays[f"weight{i}"] = keras.ops.convert_to_numpy(entry.weight)
    arrays["last"] = np.array(
        [
            int(keras.ops.convert_to_numpy(layer.last_mask_update_step))
            for layer in mp.pruned_layers(model)
        ]
    )
    arrays["iterations"] = np.array(
        int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    )
    np.savez(path, **arrays)


def main(out_dir, resume_from=None):
    if resume_from:
        # Keras 3.15 saves the optimizer of a PyTorch model under its torch
        # module (keras.src.backend.torch.optimizers.torch_sgd), which
        # another backend would import and fail in: name the public class.
        model = keras.models.load_model(
            resume_from, custom_objects={"SGD": keras.optimizers.SGD}
        )
        _fit(model, _EPOCHS, initial_epoch=1)
        _dump(model, os.path.join(out_dir, "resumed.npz"))
        return
    full = _pruned()
    _fit(full, _EPOCHS)
    _dump(full, os.path.join(out_dir, "full.npz"))
    keras.utils.clear_session()
    first = _pruned()
    _fit(first, 1)
    first.save(os.path.join(out_dir, "mid.keras"))


if __name__ == "__main__":
    main(*sys.argv[1:])
