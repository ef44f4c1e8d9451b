"""Custom training loops with `Pruning`, one recipe per backend.

Each loop trains a pruned MLP with SGD and calls
`pruning.conditional_mask_update_op()` after every optimizer step; the
masks must reach the schedule's final sparsity and pruned weights stay
exactly zero. The recipes are the README's.
"""

import keras
import numpy as np
import pytest
from core_helpers import BACKEND
from core_helpers import classification_data
from core_helpers import expected_kept
from core_helpers import masks_and_weights
from core_helpers import mlp
from core_helpers import to_numpy

import model_pruning as mp

_FINAL = 0.8
_STEPS = 12  # Updates at 2, 4 and 6 (the end step).


def _pruned_model():
    schedule = mp.PolynomialDecay(
        0.0, _FINAL, begin_step=0, end_step=6, frequency=2
    )
    return mp.prune_low_magnitude(mlp(), pruning_schedule=schedule)


def _pruned_model_and_loop_state():
    """A pruned model, its built SGD optimizer and a `Pruning` stepped by
    the optimizer's `iterations`."""
    model = _pruned_model()
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    pruning = mp.Pruning(model=model, global_step=optimizer.iterations)
    return model, optimizer, pruning


def _batches():
    x, y = classification_data(samples=_STEPS * 8)
    for i in range(_STEPS):
        yield x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]


_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _assert_pruned(model):
    for mask, weight in masks_and_weights(model):
        assert int(mask.sum()) == expected_kept(mask.size, _FINAL)
        assert np.all(weight[mask == 0] == 0)
    for layer in mp.pruned_layers(model):
        assert int(to_numpy(layer.last_mask_update_step)) == 6


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a tf.function loop")
def test_tensorflow_loop_updates_masks_inside_a_tf_function():
    import tensorflow as tf

    model, optimizer, pruning = _pruned_model_and_loop_state()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = _LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        pruning.conditional_mask_update_op()

    for x, y in _batches():
        train_step(x, y)
    _assert_pruned(model)


@pytest.mark.skipif(BACKEND != "torch", reason="a PyTorch loop")
def test_torch_loop_updates_masks_after_each_step():
    model, optimizer, pruning = _pruned_model_and_loop_state()

    for x, y in _batches():
        model.zero_grad()
        loss = _LOSS(y, model(x, training=True))
        loss.backward()
        grads = [v.value.grad for v in model.trainable_variables]
        optimizer.apply(grads, model.trainable_variables)
        pruning.conditional_mask_update_op()
    _assert_pruned(model)


@pytest.mark.skipif(BACKEND != "jax", reason="a JAX loop")
def test_jax_loop_updates_masks_between_jitted_steps():
    import jax

    model, optimizer, pruning = _pruned_model_and_loop_state()

    def loss_fn(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return _LOSS(y, y_pred), non_trainable

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, optimizer_vars = state
        (_, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, x, y
        )
        trainable, optimizer_vars = optimizer.stateless_apply(
            optimizer_vars, grads, trainable
        )
        return trainable, non_trainable, optimizer_vars

    def read_state():
        return (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )

    def write_state(state):
        variables = (
            model.trainable_variables,
            model.non_trainable_variables,
            optimizer.variables,
        )
        for group, values in zip(variables, state, strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)

    state = read_state()
    for x, y in _batches():
        state = train_step(state, x, y)
        write_state(state)
        pruning.conditional_mask_update_op()
        state = read_state()
    _assert_pruned(model)
