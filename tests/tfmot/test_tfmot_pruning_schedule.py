"""tfmot's pruning schedule cases, run against `model_pruning`.

The cases are ported from tensorflow/model-optimization, Apache-2.0, file
`tensorflow_model_optimization/python/core/sparsity/keras/
pruning_schedule_test.py`, commit 029972d04c4e28860f04900a1567db99118898ba:
each test below keeps the name, inputs, numbers and assertions of one tfmot
test. The code is our own; lines changed for Keras 3 or for our import names
are marked `# Keras 3:` or `# model_pruning:`.
"""

import keras
import tensorflow as tf
from absl.testing import parameterized

import model_pruning as mp

_BOTH_SCHEDULES = (
    {"testcase_name": "ConstantSparsity", "schedule_type": "constant_sparsity"},
    {"testcase_name": "PolynomialDecay", "schedule_type": "polynomial_decay"},
)

# model_pruning: the schedules tfmot's deserialization is given by name.
_SCHEDULE_OBJECTS = {
    "ConstantSparsity": mp.ConstantSparsity,
    "PolynomialDecay": mp.PolynomialDecay,
}


def _make_schedule(schedule_type, begin_step, end_step, frequency=10):
    """A schedule of `schedule_type` with fixed sparsities.

    Only the step arguments vary between the cases that use it.
    """
    if schedule_type == "constant_sparsity":
        # model_pruning: pruning_schedule.ConstantSparsity -> mp.
        return mp.ConstantSparsity(0.5, begin_step, end_step, frequency)
    # model_pruning: pruning_schedule.PolynomialDecay -> mp.
    return mp.PolynomialDecay(0.2, 0.8, begin_step, end_step, 3, frequency)


class PruningScheduleTest(tf.test.TestCase, parameterized.TestCase):
    """Step arguments (begin, end, frequency): validated and applied."""

    # Argument validation.

    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testBeginStepGreaterThanEqualsZero(self, schedule_type):
        for begin_step in (-1, -5):
            with self.assertRaises(ValueError):
                _make_schedule(schedule_type, begin_step, 1000)

        for begin_step in (0, 1, 100):
            _make_schedule(schedule_type, begin_step, 1000)

    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testEndStepGreaterThanEqualsZero(self, schedule_type):
        with self.assertRaises(ValueError):
            _make_schedule(schedule_type, 10, -5)

        for end_step in (0, 1, 100):
            _make_schedule(schedule_type, 0, end_step)

    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testEndStepGreaterThanEqualsBeginStep(self, schedule_type):
        with self.assertRaises(ValueError):
            _make_schedule(schedule_type, 10, 5)

        for end_step in (10, 20):
            _make_schedule(schedule_type, 10, end_step)

    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testFrequencyIsPositive(self, schedule_type):
        for frequency in (0, -1, -5):
            with self.assertRaises(ValueError):
                _make_schedule(schedule_type, 10, 1000, frequency)

        for frequency in (1, 10):
            _make_schedule(schedule_type, 10, 1000, frequency)

    def _check_sparsity_range(self, make):
        """`make(sparsity)` accepts exactly the sparsities in [0, 1)."""
        # Negative values are rejected.
        for sparsity in (-0.001, -1.0, -10.0):
            with self.assertRaises(ValueError):
                make(sparsity)
        # So are values of 1.0 and above.
        for sparsity in (1.0, 10.0):
            with self.assertRaises(ValueError):
                make(sparsity)

        for sparsity in (0.0, 0.001, 0.5, 0.99):
            make(sparsity)

    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testSparsityValueIsValid(self, schedule_type):
        if schedule_type == "constant_sparsity":
            # model_pruning: pruning_schedule.ConstantSparsity -> mp.
            self._check_sparsity_range(lambda s: mp.ConstantSparsity(s, 0))
        else:
            # model_pruning: pruning_schedule.PolynomialDecay -> mp.
            self._check_sparsity_range(
                lambda s: mp.PolynomialDecay(s, 0.8, 0, 10)
            )
            self._check_sparsity_range(
                lambda s: mp.PolynomialDecay(0.2, s, 0, 10)
            )

    # begin_step, end_step and frequency at work.

    # Keras 3: tfmot ran this in every Keras mode (run_all_keras_modes);
    # TF 2 has one, eager.
    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testPrunesOnlyInBeginEndStepRange(self, schedule_type):
        schedule = _make_schedule(schedule_type, 100, 200, 1)

        # Keras 3: no variable initializer to run in TF 2.
        before = [tf.Variable(90), tf.Variable(99)]
        inside = [tf.Variable(100), tf.Variable(110), tf.Variable(200)]
        after = [tf.Variable(201), tf.Variable(210)]

        for step in before:
            self.assertFalse(self.evaluate(schedule(step))[0])
        for step in inside:
            self.assertTrue(self.evaluate(schedule(step))[0])
        for step in after:
            self.assertFalse(self.evaluate(schedule(step))[0])

    # Keras 3: run eagerly only (tfmot: run_all_keras_modes).
    @parameterized.named_parameters(*_BOTH_SCHEDULES)
    def testOnlyPrunesAtValidFrequencySteps(self, schedule_type):
        schedule = _make_schedule(schedule_type, 100, 200, 10)

        # Keras 3: no variable initializer to run in TF 2.
        step_100 = tf.Variable(100)
        step_109 = tf.Variable(109)
        step_110 = tf.Variable(110)
        step_111 = tf.Variable(111)

        self.assertFalse(self.evaluate(schedule(step_109))[0])
        self.assertFalse(self.evaluate(schedule(step_111))[0])

        self.assertTrue(self.evaluate(schedule(step_100))[0])
        self.assertTrue(self.evaluate(schedule(step_110))[0])


class ConstantSparsityTest(tf.test.TestCase, parameterized.TestCase):
    # Keras 3: run eagerly only (tfmot: run_all_keras_modes).
    def testPrunesForeverIfEndStepIsNegativeOne(self):
        # model_pruning: pruning_schedule.ConstantSparsity -> mp.
        schedule = mp.ConstantSparsity(0.5, 0, -1, 10)

        # Keras 3: no variable initializer to run in TF 2.
        steps = [tf.Variable(10000), tf.Variable(100000000)]

        for step in steps:
            self.assertTrue(self.evaluate(schedule(step))[0])
        for step in steps:
            self.assertAllClose(0.5, self.evaluate(schedule(step))[1])

    # Keras 3: run eagerly only (tfmot: run_all_keras_modes).
    def testPrunesWithConstantSparsity(self):
        # model_pruning: pruning_schedule.ConstantSparsity -> mp.
        schedule = mp.ConstantSparsity(0.5, 100, 200, 10)

        # Keras 3: no variable initializer to run in TF 2.
        for step in (tf.Variable(100), tf.Variable(110), tf.Variable(200)):
            self.assertAllClose(0.5, self.evaluate(schedule(step))[1])

    def testSerializeDeserialize(self):
        # model_pruning: pruning_schedule.ConstantSparsity -> mp.
        schedule = mp.ConstantSparsity(0.7, 10, 20, 10)

        config = schedule.get_config()
        # Keras 3: tf.keras.utils -> keras.utils.
        restored = keras.utils.deserialize_keras_object(
            config, custom_objects=_SCHEDULE_OBJECTS
        )

        self.assertEqual(schedule.__dict__, restored.__dict__)


class PolynomialDecayTest(tf.test.TestCase, parameterized.TestCase):
    def testRaisesErrorIfEndStepIsNegative(self):
        with self.assertRaises(ValueError):
            # model_pruning: pruning_schedule.PolynomialDecay -> mp.
            mp.PolynomialDecay(0.4, 0.8, 10, -1)

    # Keras 3: run eagerly only (tfmot: run_all_keras_modes).
    def testPolynomialDecay_PrunesCorrectly(self):
        # model_pruning: pruning_schedule.PolynomialDecay -> mp.
        schedule = mp.PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)

        # Keras 3: no variable initializer to run in TF 2.
        expected = {100: 0.2, 102: 0.4928, 105: 0.725, 110: 0.8}

        # tfmot's numbers, checked there against tf.polynomial_decay.
        for step, sparsity in expected.items():
            self.assertAllClose(
                sparsity, self.evaluate(schedule(tf.Variable(step)))[1]
            )

    def testSerializeDeserialize(self):
        # model_pruning: pruning_schedule.PolynomialDecay -> mp.
        schedule = mp.PolynomialDecay(0.2, 0.6, 10, 20, 5, 10)

        config = schedule.get_config()
        # Keras 3: tf.keras.utils -> keras.utils.
        restored = keras.utils.deserialize_keras_object(
            config, custom_objects=_SCHEDULE_OBJECTS
        )

        self.assertEqual(schedule.__dict__, restored.__dict__)


if __name__ == "__main__":
    tf.test.main()
