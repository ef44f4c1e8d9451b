"""Schedules on any backend: eq. (1) and contrib's update rule, for Python
integer steps and for integer tensors of the current backend."""

import keras
import numpy as np
import pytest
from core_helpers import to_numpy
from core_helpers import zhu_gupta_target

import model_pruning as mp
from model_pruning.schedule import update_is_due


def _step_forms(step):
    """The step as a Python int, an int32 tensor and an int64 tensor."""
    return [
        step,
        keras.ops.convert_to_tensor(step, "int32"),
        keras.ops.convert_to_tensor(step, "int64"),
    ]


def _simulate(predicate, steps):
    """The steps at which `predicate(step, last)` updates, `last` starting
    at 0 (contrib's `last_mask_update_step`)."""
    last, updates = 0, []
    for step in steps:
        if bool(to_numpy(predicate(step, last))):
            updates.append(step)
            last = step
    return updates


@pytest.mark.parametrize(
    "initial, final, begin, end, power",
    [
        (0.0, 0.5, 0, 100, 3),  # contrib's defaults
        (0.1, 0.9, 200, 3000, 3),
        (0.2, 0.85, 100, 600, 2),
        (0.3, 0.95, 7, 8, 1),
    ],
)
def test_polynomial_decay_sparsity_follows_eq1(
    initial, final, begin, end, power
):
    schedule = mp.PolynomialDecay(initial, final, begin, end, power=power)
    hparams = schedule.to_hparams()
    for step in sorted(
        {
            0,
            begin,
            begin + 1,
            (begin + end) // 2,
            end - 1,
            end,
            end + 1,
            10 * end,
        }
    ):
        expected = zhu_gupta_target(step, initial, final, begin, end, power)
        for value in _step_forms(step):
            sparsity = schedule.sparsity(value)
            assert keras.backend.standardize_dtype(sparsity.dtype) == "float32"
            assert float(to_numpy(sparsity)) == pytest.approx(
                expected, abs=1e-6
            ), (step, value)
            # The pure function and tfmot's `(should_prune, sparsity)` agree.
            assert float(to_numpy(mp.target_sparsity(hparams, value))) == (
                float(to_numpy(sparsity))
            )
            assert float(to_numpy(schedule(value)[1])) == float(
                to_numpy(sparsity)
            )


def test_polynomial_decay_sparsity_at_the_middle_is_contribs_number():
    schedule = mp.PolynomialDecay(0.0, 0.9, 0, 100)
    assert float(to_numpy(schedule.sparsity(50))) == pytest.approx(
        0.9 - 0.9 * 0.125, abs=1e-6
    )
    assert float(to_numpy(schedule.sparsity(0))) == 0.0
    assert float(to_numpy(schedule.sparsity(1000))) == pytest.approx(0.9)


@pytest.mark.parametrize("end_step", [-1, 500])
def test_constant_sparsity_is_constant_from_begin(end_step):
    schedule = mp.ConstantSparsity(0.65, begin_step=20, end_step=end_step)
    for step in (20, 21, 499, 500, 501, 10**6):
        for value in _step_forms(step):
            assert float(to_numpy(schedule.sparsity(value))) == pytest.approx(
                0.65
            )


@pytest.mark.parametrize(
    "hparams, steps, expected",
    [
        # contrib testConditionalMaskUpdate: counts change at 2, 4 and 6.
        (
            mp.PruningHParams(
                begin_pruning_step=1, pruning_frequency=2, end_pruning_step=6
            ),
            range(10),
            [2, 4, 6],
        ),
        (
            mp.PruningHParams(begin_pruning_step=0, pruning_frequency=10),
            range(35),
            [10, 20, 30],
        ),
        (
            mp.PruningHParams(begin_pruning_step=53, pruning_frequency=10),
            range(90),
            [53, 63, 73, 83],
        ),
        # The catch-up at the end step when the updates step over it.
        (
            mp.PruningHParams(
                begin_pruning_step=0,
                end_pruning_step=250,
                pruning_frequency=100,
            ),
            range(401),
            [100, 200, 250],
        ),
        (
            mp.PruningHParams(
                begin_pruning_step=0,
                end_pruning_step=300,
                pruning_frequency=100,
            ),
            range(451),
            [100, 200, 300],
        ),
    ],
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_should_update_masks_contrib_rule(hparams, steps, expected, as_tensor):
    def predicate(step, last):
        if as_tensor:
            step = keras.ops.convert_to_tensor(step, "int64")
            last = keras.ops.convert_to_tensor(last, "int64")
        result = mp.should_update_masks(hparams, step, last)
        assert keras.backend.standardize_dtype(result.dtype) == "bool"
        return result

    assert _simulate(predicate, steps) == expected
    # The Python rule the callback runs agrees.
    assert _simulate(lambda s, t: update_is_due(hparams, s, t), steps) == (
        expected
    )


def test_schedule_should_prune_catches_up_and_runs_until_stopped():
    poly = mp.PolynomialDecay(0.0, 0.9, 0, 250, frequency=100)
    assert _simulate(poly.should_prune, range(401)) == [100, 200, 250]
    constant = mp.ConstantSparsity(0.5, begin_step=10, frequency=30)
    assert _simulate(constant.should_prune, range(200)) == [
        30,
        60,
        90,
        120,
        150,
        180,
    ]
    tensor_steps = _simulate(
        lambda s, t: poly.should_prune(
            keras.ops.convert_to_tensor(s, "int32"), t
        ),
        range(401),
    )
    assert tensor_steps == [100, 200, 250]


def test_schedule_call_is_due_in_a_run_that_took_every_step():
    schedule = mp.PolynomialDecay(0.0, 0.9, 0, 250, frequency=100)
    due = [
        t
        for t in range(401)
        if bool(to_numpy(schedule(keras.ops.convert_to_tensor(t))[0]))
    ]
    assert due == [100, 200, 250]
    assert [t for t in range(401) if bool(to_numpy(schedule(t)[0]))] == due


def test_schedule_config_round_trip_and_keras_serialization():
    for schedule in (
        mp.PolynomialDecay(0.1, 0.8, 10, 110, power=2, frequency=5),
        mp.ConstantSparsity(0.6, 20, end_step=200, frequency=7),
    ):
        rebuilt = type(schedule).from_config(schedule.get_config())
        assert rebuilt == schedule
        serialized = keras.saving.serialize_keras_object(schedule)
        assert keras.saving.deserialize_keras_object(serialized) == schedule


def test_target_sparsity_is_the_same_for_ints_and_tensors_at_every_step():
    hparams = mp.PolynomialDecay(0.0, 0.87, 3, 93, power=3).to_hparams()
    ints = np.array(
        [to_numpy(mp.target_sparsity(hparams, t)) for t in range(100)]
    )
    tensors = np.array(
        [
            to_numpy(
                mp.target_sparsity(
                    hparams, keras.ops.convert_to_tensor(t, "int32")
                )
            )
            for t in range(100)
        ]
    )
    # Bit-equal: the number of weights kept depends on it.
    np.testing.assert_array_equal(ints, tensors)
