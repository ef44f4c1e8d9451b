"""Tests of the sparsity schedule, the mask-update rule and the shells."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_pruning import NO_END_STEP
from model_pruning import ConstantSparsity
from model_pruning import PolynomialDecay
from model_pruning import PruningHParams
from model_pruning import PruningSchedule
from model_pruning import should_update_masks
from model_pruning import target_sparsity
from model_pruning.schedule import update_is_due


def _reference_sparsity(initial, final, begin, end, exponent, step):
    """Contrib's continuous eq. (1), in float64 numpy."""
    progress = np.clip((step - begin) / (end - begin), 0.0, 1.0)
    return final + (initial - final) * (1.0 - progress) ** exponent


def _hparams(initial, final, begin, end, exponent):
    return PruningHParams(
        initial_sparsity=initial,
        target_sparsity=final,
        sparsity_function_begin_step=begin,
        sparsity_function_end_step=end,
        sparsity_function_exponent=exponent,
    )


SCHEDULES = [
    (0.0, 0.5, 0, 100, 3.0),  # contrib's defaults
    (0.1, 0.9, 200, 3000, 3.0),
    (0.0, 0.5, 10, 20, 1.0),
    (0.2, 0.8, 0, 1000, 2.0),
    (0.3, 0.95, 7, 8, 0.5),
]


def _steps(begin, end):
    span = end - begin
    steps = {
        0,
        begin - 1,
        begin,
        begin + 1,
        begin + span // 4,
        begin + span // 3,
        begin + span // 2,
        end - 1,
        end,
        end + 1,
        end + 5,
        10 * end,
    }
    return sorted(s for s in steps if s >= 0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_target_sparsity_matches_continuous_formula_eagerly(schedule):
    hparams = _hparams(*schedule)
    for step in _steps(schedule[2], schedule[3]):
        expected = _reference_sparsity(*schedule, step)
        for value in (step, tf.constant(step), tf.constant(step, tf.int64)):
            result = target_sparsity(hparams, value)
            assert result.dtype == tf.float32
            assert result.shape == ()
            assert abs(float(result) - expected) < 1e-6, (step, value)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_target_sparsity_matches_continuous_formula_in_tf_function(schedule):
    hparams = _hparams(*schedule)
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def compute():
        return target_sparsity(hparams, step)

    steps = _steps(schedule[2], schedule[3])
    for value in steps:
        step.assign(value)
        expected = _reference_sparsity(*schedule, value)
        graph_result = float(compute())
        eager_result = float(target_sparsity(hparams, value))
        assert abs(graph_result - expected) < 1e-6, value
        # Bit-equal: the number of weights kept depends on it.
        assert graph_result == eager_result, value
    # The step is read from the variable, not frozen into the graph.
    assert compute.experimental_get_tracing_count() == 1


def test_target_sparsity_endpoints():
    hparams = _hparams(0.1, 0.9, 200, 3000, 3.0)
    # Before and at the begin step: the initial sparsity.
    assert float(target_sparsity(hparams, 0)) == pytest.approx(0.1)
    assert float(target_sparsity(hparams, 200)) == pytest.approx(0.1)
    # At and after the end step: the target sparsity.
    assert float(target_sparsity(hparams, 3000)) == pytest.approx(0.9)
    assert float(target_sparsity(hparams, 10**7)) == pytest.approx(0.9)


def test_target_sparsity_is_monotonic_between_begin_and_end():
    hparams = _hparams(0.0, 0.9, 100, 1100, 3.0)
    values = [float(target_sparsity(hparams, t)) for t in range(0, 1300, 50)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(0.9)


def test_target_sparsity_ignores_pruning_window_and_frequency():
    # Contrib: the schedule depends only on the sparsity_function_* fields.
    base = _hparams(0.0, 0.8, 0, 100, 3.0)
    gated = base.override(
        begin_pruning_step=50, end_pruning_step=60, pruning_frequency=7
    )
    for step in (0, 25, 55, 70, 100, 200):
        assert float(target_sparsity(gated, step)) == float(
            target_sparsity(base, step)
        )


def _simulate(hparams, steps, predicate=should_update_masks):
    """Runs the update rule over `steps`, as a callback would.

    `last_update_step` starts at 0 (contrib's `last_mask_update_step`) and
    becomes the step of each update.
    """
    last, updates = 0, []
    for step in steps:
        if bool(predicate(hparams, step, last)):
            updates.append(step)
            last = step
    return updates


def test_should_update_masks_contrib_conditional_update():
    # contrib testConditionalMaskUpdate: counts change after gs 2, 4 and 6.
    hparams = PruningHParams(
        begin_pruning_step=1, pruning_frequency=2, end_pruning_step=6
    )
    assert _simulate(hparams, range(10)) == [2, 4, 6]


def test_should_update_masks_first_update_at_frequency_when_begin_zero():
    hparams = PruningHParams(begin_pruning_step=0, pruning_frequency=10)
    assert _simulate(hparams, range(35)) == [10, 20, 30]


def test_should_update_masks_waits_for_begin_step():
    hparams = PruningHParams(begin_pruning_step=53, pruning_frequency=10)
    assert _simulate(hparams, range(90)) == [53, 63, 73, 83]


def test_should_update_masks_no_end_step_continues_forever():
    hparams = PruningHParams(
        begin_pruning_step=0, pruning_frequency=10, end_pruning_step=-1
    )
    updates = _simulate(hparams, range(301))
    assert updates == list(range(10, 301, 10))
    far = 10**12
    assert bool(should_update_masks(hparams, far, far - 10))
    assert not bool(should_update_masks(hparams, far, far - 9))


def test_should_update_masks_catch_up_at_end_step():
    hparams = PruningHParams(
        begin_pruning_step=0, end_pruning_step=250, pruning_frequency=100
    )
    assert _simulate(hparams, range(401)) == [100, 200, 250]


def test_should_update_masks_no_catch_up_when_update_falls_on_end():
    hparams = PruningHParams(
        begin_pruning_step=0, end_pruning_step=300, pruning_frequency=100
    )
    assert _simulate(hparams, range(451)) == [100, 200, 300]


@pytest.mark.parametrize(
    "begin, end, frequency, stride",
    [
        (0, 250, 100, 3),
        (0, 95, 10, 7),
        (0, 50, 5, 5),
        (20, 1000, 64, 9),
        (1, 6, 2, 4),
        (0, 100, 1, 3),
    ],
)
def test_should_update_masks_sparse_callback_skips_no_update(
    begin, end, frequency, stride
):
    # A callback that only runs every `stride` steps (steps_per_execution).
    hparams = PruningHParams(
        begin_pruning_step=begin,
        end_pruning_step=end,
        pruning_frequency=frequency,
    )
    steps = range(0, 4 * end + 1, stride)
    updates = _simulate(hparams, steps)
    assert updates
    first_executed_at_or_after_end = math.ceil(end / stride) * stride
    # The final update is the first executed step at or after the end step.
    assert updates[-1] >= end
    assert updates[-1] == first_executed_at_or_after_end
    # The first update is the first executed step that is due.
    assert updates[0] == math.ceil(max(begin, frequency) / stride) * stride
    regular = updates[:-1] if updates[-1] > end else updates
    gaps = np.diff(regular)
    # Regular updates are at least `frequency` apart, and none is skipped:
    # each happens at the first executed step where it is due.
    assert np.all(gaps >= frequency)
    assert np.all(gaps < frequency + stride)
    assert all(u <= end for u in regular)


@pytest.mark.parametrize(
    "hparams",
    [
        PruningHParams(
            begin_pruning_step=1, pruning_frequency=2, end_pruning_step=6
        ),
        PruningHParams(
            begin_pruning_step=0, pruning_frequency=100, end_pruning_step=250
        ),
        PruningHParams(begin_pruning_step=30, pruning_frequency=7),
    ],
)
def test_should_update_masks_same_eager_and_in_tf_function(hparams):
    step = tf.Variable(0, dtype=tf.int64)
    last = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def predicate():
        return should_update_masks(hparams, step, last)

    for t in range(0, 320, 7):
        for previous in sorted({0, max(0, t - 100), max(0, t - 7), t}):
            step.assign(t)
            last.assign(previous)
            graph_result = predicate()
            eager_result = should_update_masks(hparams, t, previous)
            assert graph_result.dtype == tf.bool
            assert bool(graph_result) == bool(eager_result), (t, previous)
    assert predicate.experimental_get_tracing_count() == 1


def test_should_update_masks_simulation_in_tf_function():
    hparams = PruningHParams(
        begin_pruning_step=0, end_pruning_step=250, pruning_frequency=100
    )
    step = tf.Variable(0, dtype=tf.int64)
    last = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def train_step():
        update = should_update_masks(hparams, step, last)
        if update:
            last.assign(step)
        step.assign_add(1)
        return update

    updates = [t for t in range(401) if bool(train_step())]
    assert updates == [100, 200, 250]
    assert int(last) == 250


def test_polynomial_decay_to_hparams_field_mapping():
    schedule = PolynomialDecay(
        0.1, 0.8, begin_step=10, end_step=110, power=2, frequency=5
    )
    hparams = schedule.to_hparams()
    assert isinstance(hparams, PruningHParams)
    assert hparams.begin_pruning_step == 10
    assert hparams.end_pruning_step == 110
    assert hparams.pruning_frequency == 5
    assert hparams.initial_sparsity == pytest.approx(0.1)
    assert hparams.target_sparsity == pytest.approx(0.8)
    assert hparams.sparsity_function_begin_step == 10
    assert hparams.sparsity_function_end_step == 110
    assert hparams.sparsity_function_exponent == 2.0


def test_polynomial_decay_defaults_are_tfmot():
    schedule = PolynomialDecay(0.0, 0.5, 0, 100)
    assert schedule.power == 3
    assert schedule.frequency == 100
    assert schedule.to_hparams().sparsity_function_exponent == 3.0
    assert schedule.to_hparams().pruning_frequency == 100


def test_constant_sparsity_to_hparams_field_mapping():
    schedule = ConstantSparsity(0.6, begin_step=20, end_step=200, frequency=7)
    hparams = schedule.to_hparams()
    assert hparams.begin_pruning_step == 20
    assert hparams.end_pruning_step == 200
    assert hparams.pruning_frequency == 7
    assert hparams.initial_sparsity == pytest.approx(0.6)
    assert hparams.target_sparsity == pytest.approx(0.6)
    assert hparams.sparsity_function_begin_step == 20


def test_constant_sparsity_defaults_are_tfmot():
    schedule = ConstantSparsity(0.5, begin_step=0)
    assert schedule.end_step == -1
    assert schedule.frequency == 100
    assert schedule.to_hparams().end_pruning_step == NO_END_STEP


def test_polynomial_decay_sparsity_values():
    schedule = PolynomialDecay(0.0, 0.9, 0, 100)
    assert float(schedule.sparsity(50)) == pytest.approx(
        0.9 - 0.9 * 0.125, abs=1e-6
    )
    assert float(schedule.sparsity(0)) == 0.0
    assert float(schedule.sparsity(100)) == pytest.approx(0.9)
    assert float(schedule.sparsity(1000)) == pytest.approx(0.9)


@pytest.mark.parametrize("step", [0, 99, 100, 101, 150, 333, 600, 601, 5000])
def test_polynomial_decay_sparsity_matches_formula(step):
    schedule = PolynomialDecay(0.2, 0.85, 100, 600, power=2)
    expected = _reference_sparsity(0.2, 0.85, 100, 600, 2.0, step)
    assert abs(float(schedule.sparsity(step)) - expected) < 1e-6


@pytest.mark.parametrize("end_step", [-1, 500])
def test_constant_sparsity_sparsity_at_all_steps_from_begin(end_step):
    schedule = ConstantSparsity(0.65, begin_step=20, end_step=end_step)
    for step in (20, 21, 50, 499, 500, 501, 10**6):
        assert float(schedule.sparsity(step)) == pytest.approx(0.65), step


def test_constant_sparsity_sparsity_in_tf_function():
    schedule = ConstantSparsity(0.4, begin_step=0)
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def compute():
        return schedule.sparsity(step)

    for value in (0, 1, 1000):
        step.assign(value)
        assert float(compute()) == pytest.approx(0.4)


def test_polynomial_decay_should_prune_catches_up():
    schedule = PolynomialDecay(0.0, 0.9, 0, 250, frequency=100)
    updates = _simulate(
        schedule, range(401), lambda s, t, last: s.should_prune(t, last)
    )
    assert updates == [100, 200, 250]


def test_constant_sparsity_should_prune_until_training_stops():
    schedule = ConstantSparsity(0.5, begin_step=10, frequency=30)
    updates = _simulate(
        schedule, range(200), lambda s, t, last: s.should_prune(t, last)
    )
    assert updates == [30, 60, 90, 120, 150, 180]


@pytest.mark.parametrize(
    "schedule",
    [
        PolynomialDecay(0.1, 0.8, 10, 110, power=2, frequency=5),
        PolynomialDecay(0.0, 0.5, 0, 100),
        ConstantSparsity(0.6, 20, end_step=200, frequency=7),
        ConstantSparsity(0.5, 0),
    ],
)
def test_schedule_config_round_trip(schedule):
    config = schedule.get_config()
    rebuilt = type(schedule).from_config(config)
    assert type(rebuilt) is type(schedule)
    assert rebuilt == schedule
    assert rebuilt.get_config() == config
    assert rebuilt.to_hparams() == schedule.to_hparams()
    # tfmot's form: the class name, and the constructor arguments only.
    assert config["class_name"] == type(schedule).__name__
    assert type(schedule)(**config["config"]) == schedule


@pytest.mark.parametrize(
    "schedule",
    [
        PolynomialDecay(0.1, 0.8, 10, 110, power=2, frequency=5),
        ConstantSparsity(0.6, 20, end_step=200, frequency=7),
        ConstantSparsity(0.5, 0),
    ],
)
def test_schedule_keras_serialization_round_trip(schedule):
    serialized = keras.saving.serialize_keras_object(schedule)
    assert isinstance(serialized, dict)
    # Registered: deserializes without custom_objects.
    rebuilt = keras.saving.deserialize_keras_object(serialized)
    assert type(rebuilt) is type(schedule)
    assert rebuilt == schedule
    assert rebuilt.to_hparams() == schedule.to_hparams()


def test_schedule_equality_distinguishes_configs():
    assert PolynomialDecay(0.0, 0.5, 0, 100) != PolynomialDecay(
        0.0, 0.6, 0, 100
    )
    assert ConstantSparsity(0.5, 0) != ConstantSparsity(0.5, 1)
    assert ConstantSparsity(0.5, 0, 100) != PolynomialDecay(0.5, 0.5, 0, 100)


def test_schedule_base_class_is_abstract():
    schedule = PruningSchedule()
    with pytest.raises(NotImplementedError):
        schedule.to_hparams()
    with pytest.raises(NotImplementedError):
        schedule.get_config()


_POLY = {
    "initial_sparsity": 0.0,
    "final_sparsity": 0.9,
    "begin_step": 10,
    "end_step": 100,
}
_CONST = {"target_sparsity": 0.5, "begin_step": 10}


@pytest.mark.parametrize(
    "cls, defaults, name, value",
    [
        (PolynomialDecay, _POLY, "initial_sparsity", 1.0),
        (PolynomialDecay, _POLY, "initial_sparsity", -0.1),
        (PolynomialDecay, _POLY, "final_sparsity", 1.0),
        (PolynomialDecay, _POLY, "final_sparsity", -0.1),
        (PolynomialDecay, _POLY, "final_sparsity", "0.5"),
        (PolynomialDecay, _POLY, "begin_step", -1),
        (PolynomialDecay, _POLY, "frequency", 0),
        (PolynomialDecay, _POLY, "frequency", -5),
        (PolynomialDecay, _POLY, "end_step", 9),
        (PolynomialDecay, _POLY, "end_step", 5),
        (PolynomialDecay, _POLY, "end_step", -1),
        (PolynomialDecay, _POLY, "begin_step", 1.5),
        (PolynomialDecay, _POLY, "end_step", 100.0),
        (PolynomialDecay, _POLY, "frequency", 2.5),
        (PolynomialDecay, _POLY, "begin_step", True),
        (ConstantSparsity, _CONST, "target_sparsity", 1.0),
        (ConstantSparsity, _CONST, "target_sparsity", -0.1),
        (ConstantSparsity, _CONST, "begin_step", -1),
        (ConstantSparsity, _CONST, "frequency", 0),
        (ConstantSparsity, _CONST, "end_step", 9),
        (ConstantSparsity, _CONST, "end_step", 5),
        (ConstantSparsity, _CONST, "end_step", -2),
        (ConstantSparsity, _CONST, "begin_step", 1.0),
        (ConstantSparsity, _CONST, "end_step", 50.5),
        (ConstantSparsity, _CONST, "frequency", "10"),
    ],
)
def test_schedule_rejects_bad_arguments(cls, defaults, name, value):
    kwargs = dict(defaults, **{name: value})
    with pytest.raises(ValueError) as error:
        cls(**kwargs)
    assert f"{name}={value!r}" in str(error.value)


@pytest.mark.parametrize(
    "begin, end, frequency",
    [(0, -1, 1), (0, 250, 100), (5, 40, 7), (3, 4, 10)],
)
def test_python_rule_agrees_with_the_graph_rule(begin, end, frequency):
    hparams = PruningHParams().override(
        begin_pruning_step=begin,
        end_pruning_step=end,
        pruning_frequency=frequency,
    )
    for step in range(0, 300, 5):
        for last in range(0, step + 1, 11):
            graph = bool(should_update_masks(hparams, step, last))
            python = update_is_due(hparams, step, last)
            assert python == graph, (step, last)


@pytest.mark.parametrize("power", [0, -1.5, "3"])
def test_polynomial_decay_refuses_a_power_that_is_not_positive(power):
    with pytest.raises(ValueError, match=f"Received: power={power!r}"):
        PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10, power=power)
