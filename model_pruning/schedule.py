"""Sparsity schedules: pure functions of the step, and tfmot-style shells.

`target_sparsity(hparams, step)` and `should_update_masks(hparams, step,
last_update_step)` are the whole schedule. `PolynomialDecay` and
`ConstantSparsity` keep tfmot's names and arguments; each is a thin,
serializable way to write a `PruningHParams`, so there is one representation
of a schedule inside the library.

The target sparsity is contrib's continuous eq. (1) of Zhu & Gupta (2017):

```
p = clip((step - begin) / (end - begin), 0, 1)
s = final + (initial - final) * (1 - p) ** exponent
```

with the hparams' `sparsity_function_begin_step`, `sparsity_function_end_step`,
`initial_sparsity`, `target_sparsity` and `sparsity_function_exponent`
(`PolynomialDecay`'s `begin_step`, `end_step`, `initial_sparsity`,
`final_sparsity` and `power`).
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from model_pruning.backends import wide_dtype
from model_pruning.hparams import NO_END_STEP
from model_pruning.hparams import PruningHParams


def target_sparsity(hparams: PruningHParams, step: Any) -> Any:
    """Returns the target sparsity at `step`: eq. (1) (module docstring).

    Args:
        hparams: The `PruningHParams` that define the schedule.
        step: The global step, a Python int or an integer scalar tensor.

    Returns:
        A float32 scalar tensor.
    """
    begin = hparams.sparsity_function_begin_step
    span = hparams.sparsity_function_end_step - begin
    # float64, rounded once at the end: graph rewrites of the division (x / c
    # into x * (1 / c)) then give the same float32 eagerly and in a graph.
    if _concrete_without_float64(step):
        # JAX without `jax_enable_x64` would compute in float32, one ulp
        # off the other backends' (and a Python int's) value at some steps.
        step = int(ops.convert_to_numpy(step))
    if isinstance(step, int | np.integer):  # Python's float64, any backend
        progress = min(max((int(step) - begin) / span, 0.0), 1.0)
        initial, final = hparams.initial_sparsity, hparams.target_sparsity
        exponent = float(hparams.sparsity_function_exponent)
        value = final + (initial - final) * (1.0 - progress) ** exponent
        return ops.convert_to_tensor(np.float32(value))
    elapsed = ops.cast(
        ops.cast(step, wide_dtype("int")) - begin, wide_dtype("float")
    )
    progress = ops.clip(elapsed / float(span), 0.0, 1.0)
    initial, final = hparams.initial_sparsity, hparams.target_sparsity
    sparsity = final + (initial - final) * ops.power(
        1.0 - progress, float(hparams.sparsity_function_exponent)
    )
    return ops.cast(sparsity, "float32")


def _concrete_without_float64(step: Any) -> bool:
    """Whether `step` is an integer tensor with a value (not traced) on a
    backend with no float64 (JAX without `jax_enable_x64`)."""
    if isinstance(step, int | np.integer) or wide_dtype("float") == "float64":
        return False
    import jax

    return not isinstance(ops.convert_to_tensor(step), jax.core.Tracer)


def should_update_masks(
    hparams: PruningHParams, step: Any, last_update_step: Any
) -> Any:
    """Returns whether masks update at `step` (a boolean scalar tensor).

    Contrib's rule, `begin_pruning_step <= step <= end_pruning_step` (no end
    when `end_pruning_step` is -1) and `last_update_step + pruning_frequency
    <= step`, plus one catch-up update at the first step at or after
    `end_pruning_step` when the regular updates stepped over it, so the final
    target is never missed.

    Args:
        hparams: The `PruningHParams` with the update window and frequency.
        step: The global step, an integer scalar.
        last_update_step: The step of the last mask update (0 before any).

    Returns:
        A boolean scalar tensor.
    """
    step = ops.cast(step, wide_dtype("int"))
    last = ops.cast(last_update_step, wide_dtype("int"))
    return _update_rule(hparams, step, last, ops.logical_and, ops.logical_or)


def update_is_due(
    hparams: PruningHParams, step: int, last_update_step: int
) -> bool:
    """`should_update_masks` on Python integers, with no TensorFlow op.

    Callbacks use it to skip the compiled update on steps where none is due.
    """
    return _update_rule(
        hparams,
        int(step),
        int(last_update_step),
        lambda a, b: a and b,
        lambda a, b: a or b,
    )


def due_at(hparams: PruningHParams, step: Any) -> Any:
    """Whether masks update at `step` in a run that took every step.

    `should_update_masks` with the last update step it would have seen: the
    first update is at `u0 = max(begin_pruning_step, pruning_frequency)`
    (the last update step starts at 0), then every `pruning_frequency`
    steps up to `end_pruning_step`, and at `end_pruning_step` itself:

    ```
    due = (step >= u0 and (step - u0) % pruning_frequency == 0
           and (end == -1 or step <= end)) or step == end
    ```

    Args:
        hparams: The `PruningHParams` with the update window and frequency.
        step: The global step, a Python int or an integer scalar tensor.

    Returns:
        A boolean scalar tensor.
    """
    step = ops.cast(step, wide_dtype("int"))
    frequency = hparams.pruning_frequency
    first = max(hparams.begin_pruning_step, frequency)
    on_grid = ops.logical_and(
        step >= first, ops.equal(ops.mod(step - first, frequency), 0)
    )
    end = hparams.end_pruning_step
    if end == NO_END_STEP:
        return on_grid
    return ops.logical_or(
        ops.logical_and(on_grid, step <= end), ops.equal(step, end)
    )


def _update_rule(hparams: PruningHParams, step, last, both, either):
    """Contrib's update rule plus the catch-up, for tensors or integers."""
    begun = step >= hparams.begin_pruning_step
    due = last + hparams.pruning_frequency <= step
    end = hparams.end_pruning_step
    if end == NO_END_STEP:
        return both(begun, due)
    regular = both(due, step <= end)
    catch_up = both(last < end, step >= end)
    return both(begun, either(regular, catch_up))


@keras.saving.register_keras_serializable(package="model_pruning")
class PruningSchedule:
    """Base class of the tfmot-style schedules.

    A thin shell over `PruningHParams` (`to_hparams()`): `sparsity(step)` and
    `should_prune(step, last_update_step)` evaluate the pure functions,
    `get_config()` / `from_config()` mirror each other, and `schedule(step)`
    gives tfmot's `(should_prune, sparsity)` pair.
    """

    def to_hparams(self) -> PruningHParams:
        raise NotImplementedError(
            f"Schedule '{self.__class__.__name__}' must override "
            "`to_hparams(self)`."
        )

    def __call__(self, step: Any) -> tuple[Any, Any]:
        """Returns `(should_prune, sparsity)` at `step`, as tfmot's do.

        `should_prune` assumes a run that took every step (see `due_at`).

        Args:
            step: The global step, a Python int or an integer scalar tensor.

        Returns:
            A boolean scalar tensor and a float32 scalar tensor.
        """
        hparams = self.to_hparams()
        return due_at(hparams, step), target_sparsity(hparams, step)

    def sparsity(self, step: Any) -> Any:
        """Returns the target sparsity at `step`."""
        return target_sparsity(self.to_hparams(), step)

    def should_prune(self, step: Any, last_update_step: Any = 0) -> Any:
        """Returns whether masks update at `step`, given the last update."""
        return should_update_masks(self.to_hparams(), step, last_update_step)

    def get_config(self) -> dict[str, Any]:
        """Returns tfmot's form: `{"class_name": ..., "config": {...}}`, the
        inner dict holding the constructor arguments."""
        return {
            "class_name": self.__class__.__name__,
            "config": self._arguments(),
        }

    def _arguments(self) -> dict[str, Any]:
        raise NotImplementedError(
            f"Schedule '{self.__class__.__name__}' must override "
            "`_arguments(self)` (its constructor arguments)."
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PruningSchedule":
        """Rebuilds a schedule from `get_config()` or from its inner dict.

        Raises:
            ValueError: If `config` names another schedule class.
        """
        if set(config) == {"class_name", "config"}:
            if config["class_name"] != cls.__name__:
                raise ValueError(
                    f"A {cls.__name__} config cannot rebuild a "
                    f"{config['class_name']}. Received: "
                    f"class_name={config['class_name']!r}"
                )
            config = config["config"]
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self.get_config() == other.get_config()
        )

    def __repr__(self) -> str:
        config = self.get_config().get("config", {})
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{self.__class__.__name__}({args})"


@keras.saving.register_keras_serializable(package="model_pruning")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` (eq. (1)).

    ```
    p = clip((step - begin_step) / (end_step - begin_step), 0, 1)
    s = final_sparsity + (initial_sparsity - final_sparsity) * (1 - p) ** power
    ```

    Masks update every `frequency` steps from `begin_step` to `end_step`, and
    once more at the first step at or after `end_step` if an update did not
    fall on it.

    Args:
        initial_sparsity: Sparsity at `begin_step`, in `[0, 1)`.
        final_sparsity: Sparsity at and after `end_step`, in `[0, 1)`.
        begin_step: First step of pruning, `>= 0`.
        end_step: Step where `final_sparsity` is reached, `>= begin_step`
            (equal: `final_sparsity` from `begin_step` on, as
            `ConstantSparsity(final_sparsity, begin_step, begin_step + 1)`).
        power: Exponent of the polynomial. Defaults to `3`.
        frequency: Steps between mask updates, `>= 1`. Defaults to `100`.

    Raises:
        ValueError: If an argument is out of range.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=100)
    >>> round(float(schedule.sparsity(50)), 4)
    0.7875
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = power
        self.frequency = frequency
        _check_schedule_args(self._arguments())

    def to_hparams(self) -> PruningHParams:
        if self.end_step == self.begin_step:
            # No time to rise: the final sparsity at once (eq. (1) at p=1).
            return ConstantSparsity(
                self.final_sparsity,
                self.begin_step,
                self.end_step,
                self.frequency,
            ).to_hparams()
        return PruningHParams(
            begin_pruning_step=self.begin_step,
            end_pruning_step=self.end_step,
            pruning_frequency=self.frequency,
            initial_sparsity=float(self.initial_sparsity),
            target_sparsity=float(self.final_sparsity),
            sparsity_function_begin_step=self.begin_step,
            sparsity_function_end_step=self.end_step,
            sparsity_function_exponent=float(self.power),
        )

    def _arguments(self) -> dict[str, Any]:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="model_pruning")
class ConstantSparsity(PruningSchedule):
    """Prune to `target_sparsity` at once, re-pruning every `frequency` steps.

    Args:
        target_sparsity: The sparsity, in `[0, 1)`.
        begin_step: First step of pruning, `>= 0`.
        end_step: Last step of pruning, `>= begin_step` (equal: the window
            ends at `begin_step + 1`, as contrib's hparams need an end after
            the begin); `-1` prunes until training stops. Defaults to `-1`.
        frequency: Steps between mask updates, `>= 1`. Defaults to `100`.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        target_sparsity: float,
        begin_step: int,
        end_step: int = NO_END_STEP,
        frequency: int = 100,
    ):
        self.target_sparsity = target_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        _check_schedule_args(self._arguments())

    def to_hparams(self) -> PruningHParams:
        end = self.end_step
        if end == self.begin_step:
            # Contrib's window needs an end after its begin: one more step.
            end = self.begin_step + 1
        return PruningHParams(
            begin_pruning_step=self.begin_step,
            end_pruning_step=end,
            pruning_frequency=self.frequency,
            initial_sparsity=float(self.target_sparsity),
            target_sparsity=float(self.target_sparsity),
            sparsity_function_begin_step=self.begin_step,
            sparsity_function_end_step=self.begin_step + 1,
        )

    def _arguments(self) -> dict[str, Any]:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


def _check_schedule_args(config: dict[str, Any]) -> None:
    """Raises a `ValueError` naming the tfmot argument that is out of range;
    what passes makes valid `PruningHParams`."""
    for name in ("initial_sparsity", "final_sparsity", "target_sparsity"):
        value = config.get(name, 0.0)
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(
                f"`{name}` must be a number in [0, 1). "
                f"Received: {name}={value!r}"
            )
    for name in ("begin_step", "end_step", "frequency"):
        value = config[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(
                f"`{name}` must be an integer. Received: {name}={value!r}"
            )
    for name, lowest in (("begin_step", 0), ("frequency", 1)):
        if config[name] < lowest:
            raise ValueError(
                f"`{name}` must be >= {lowest}. Received: {name}={config[name]}"
            )
    end = config["end_step"]
    if end != NO_END_STEP and end < config["begin_step"] or end < NO_END_STEP:
        raise ValueError(
            "`end_step` must be at or after `begin_step` (or -1 for no end "
            f"where allowed). Received: begin_step={config['begin_step']}, "
            f"end_step={end}"
        )
    if "final_sparsity" in config and end == NO_END_STEP:
        raise ValueError(
            "PolynomialDecay needs an `end_step` where `final_sparsity` is "
            f"reached. Received: end_step={end}"
        )
    power = config.get("power", 1)
    if not isinstance(power, (int, float)) or not power > 0:
        raise ValueError(
            f"`power` must be a positive number. Received: power={power!r}"
        )


def schedule_from_hparams(hparams: PruningHParams) -> PruningSchedule | None:
    """Returns the tfmot-style schedule that `hparams` came from, if any.

    `ConstantSparsity` and `PolynomialDecay` write hparams whose sparsity
    function and pruning window line up; hparams written another way
    (contrib's, with their own sparsity-function window) have no such
    schedule.

    Returns:
        A `ConstantSparsity`, a `PolynomialDecay`, or `None`.
    """
    begin, end = hparams.begin_pruning_step, hparams.end_pruning_step
    function_window = (
        hparams.sparsity_function_begin_step,
        hparams.sparsity_function_end_step,
    )
    if (
        hparams.initial_sparsity == hparams.target_sparsity
        and function_window == (begin, begin + 1)
    ):
        return ConstantSparsity(
            hparams.target_sparsity,
            begin_step=begin,
            end_step=end,
            frequency=hparams.pruning_frequency,
        )
    if end != NO_END_STEP and function_window == (begin, end):
        exponent = hparams.sparsity_function_exponent
        return PolynomialDecay(
            hparams.initial_sparsity,
            hparams.target_sparsity,
            begin_step=begin,
            end_step=end,
            power=int(exponent) if exponent.is_integer() else exponent,
            frequency=hparams.pruning_frequency,
        )
    return None
