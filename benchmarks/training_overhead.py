"""Training step time of pruning against dense training (issue 4, row 1).

For each model (MLP 784-1024-1024-10, a small CNN, a 2-layer LSTM-200 word
language model; see `common.MODELS`) and each variant of Keras' `fit`
(`default`: `jit_compile="auto"`, the backend's default path: no XLA on
TensorFlow without a GPU, XLA on JAX, eager on PyTorch; `jit`:
`jit_compile=True`, TensorFlow only (on JAX it is the default, on PyTorch
it would be `torch.compile`); `spe8`: the default's `jit_compile`,
`steps_per_execution=8`), three models of identical initial weights are
trained in one process on the same synthetic batches (NumPy arrays, one
pass over them per fit):

- `dense`: the plain model;
- `pruned`: `prune_low_magnitude(model, PolynomialDecay(0.0, 0.9,
  begin_step=0, end_step=100 * (pairs + 1), frequency=100))` trained with
  `UpdatePruningStep` (every weight of every layer pruned);
- `dense_copy`: a second, identical dense model, for the A/A noise floor.

Each round fits every arm once (`fit(..., steps_per_epoch=S)`), in ABBA
order across rounds (`dense, pruned, dense_copy`, then reversed). One
warm-up round (tracing, XLA compilation, the first mask update) is not
timed. What is timed: a callback listed first records `perf_counter()` at
every `on_train_batch_begin` (once per execution, so every
`steps_per_execution` steps) and at `on_epoch_end`; the window runs from
the start of the second execution to the end of the epoch, so it holds `n`
whole executions, each including the train function, every callback (the
mask update check) and the input pipeline, and none of fit's set-up (the
first execution holds the input iterator's start) or tear-down
(`on_train_end`).

Mask updates are included at their real rate. Before each fit every arm's
`optimizer.iterations` is set (outside the window) so that the pruned
arm's next update, due every 100 steps, falls in the middle of its window;
the `last_mask_update_step` of every pruned layer is checked after each
fit. The pruned arm's mean step time is then
`(o * (P / e - 1) + u) / P`: `o` the mean time of its ordinary executions
in the window, `u` the time of the execution that ran the update, `e` the
steps per execution and `P` the steps between two updates in a real fit
(100, or 104 when `e` = 8). This is the mean over a whole update period,
measured in short fits. The dense arms' mean step time is the mean over
their window. Per round: pruned / dense and dense_copy / dense (A/A); a row
reports the median of these ratios over the rounds, with min and max.

It runs on the Keras backend `KERAS_BACKEND` names (TensorFlow by
default); rows carry it as `backend`, and rows of another backend than
TensorFlow have it in their name too (`train mlp default (jax): ...`).
`--backends=tensorflow,jax,torch` runs the script once per backend, each
in its own process, and prints their rows side by side; a variant a
backend does not have (`jit` off TensorFlow) is left out there.

    python benchmarks/training_overhead.py [--quick] [--json=PATH]
        [--models=mlp,cnn,lstm] [--variants=default,jit,spe8] [--pairs=15]
        [--backends=tensorflow,jax,torch]
"""

import dataclasses
import functools
import gc
import math
import os
import statistics
import time
import warnings

import common

common.quiet_tensorflow()

import keras  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from keras import ops  # noqa: E402

import model_pruning as mp  # noqa: E402

_QUICK = flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: 2 rounds, short windows; unless --models or --variants is "
    "given, only the MLP runs every variant, the others the default one.",
)
_JSON = flags.DEFINE_string("json", None, "Write the rows to this file.")
_MODELS = flags.DEFINE_list(
    "models", list(common.MODELS), "Models to run, from common.MODELS."
)
_VARIANTS = flags.DEFINE_list(
    "variants", ["default", "jit", "spe8"], "fit variants to run."
)
_PAIRS = flags.DEFINE_integer(
    "pairs", None, "Timed rounds (pairs) per row. Default 15, 2 in --quick."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights and data.")
_MASK_DTYPE = flags.DEFINE_enum(
    "mask_dtype",
    "",
    ["", "uint8"],
    "`mask_dtype` of the pruned arm: '' (the weight's dtype) or 'uint8'.",
)
_TORCH_THREADS = common.torch_threads_flag()
_BACKENDS = common.backends_flag()

_GROUP = "training_overhead"
_ARMS = ("dense", "pruned", "dense_copy")


@dataclasses.dataclass(frozen=True)
class Variant:
    """How `fit` runs: XLA or not (`"auto"`: the backend's default),
    steps per execution, the target, and the backends it runs on."""

    jit_compile: bool | str
    steps_per_execution: int
    target: float
    backends: tuple[str, ...] = common.BACKENDS


VARIANTS = {
    "default": Variant(jit_compile="auto", steps_per_execution=1, target=1.05),
    "jit": Variant(
        jit_compile=True,
        steps_per_execution=1,
        target=1.03,
        backends=("tensorflow",),
    ),
    "spe8": Variant(jit_compile="auto", steps_per_execution=8, target=1.05),
}


class StepTimer(keras.callbacks.Callback):
    """Records `(batch, perf_counter())` at every `on_train_batch_begin`,
    and `(None, perf_counter())` at `on_epoch_end`.

    List it first so its time stamp precedes the other callbacks' work for
    that batch. It has no batch-end hook, so Keras keeps dispatching
    batch-end callbacks asynchronously, as it does without it.

    On JAX a training step returns before it has run (asynchronous
    dispatch), so a time stamp alone says when a step was queued. There,
    before the stamps at the batches in `block_at` and at the epoch's end,
    it waits until the model's variables are computed (`self.model` hands
    fit's state to the variables first): the time between two such stamps
    is then the time the steps between them took.
    """

    def __init__(self, block_at: tuple[int, ...] = ()):
        super().__init__()
        self.stamps: list[tuple[int, float]] = []
        self.block_at = set(block_at) if _ASYNC_DISPATCH else set()

    def on_train_begin(self, logs=None):
        self.stamps = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch in self.block_at:
            _block_until_computed(self.model)
        self.stamps.append((batch, time.perf_counter()))

    def on_epoch_end(self, epoch, logs=None):
        if _ASYNC_DISPATCH:
            _block_until_computed(self.model)
        self.stamps.append((None, time.perf_counter()))


# JAX dispatches steps asynchronously; TensorFlow's eager calls and
# PyTorch's CPU ops return when they have run.
_ASYNC_DISPATCH = keras.backend.backend() == "jax"


def _block_until_computed(model: keras.Model) -> None:
    import jax

    jax.block_until_ready([v.value for v in model.variables])


@dataclasses.dataclass
class _Arm:
    model: keras.Model
    timer: StepTimer
    callbacks: list
    pruned: bool


class _Cell:
    """One model under one variant: three arms, their fits and timings."""

    def __init__(
        self,
        spec: common.ModelSpec,
        variant_name: str,
        rounds: int,
        window_steps: int,
        seed: int,
    ):
        self.spec = spec
        self.variant_name = variant_name
        self.variant = VARIANTS[variant_name]
        self.rounds = rounds
        spe = self.variant.steps_per_execution
        self.spe = spe
        self.window_execs = max(2, window_steps // spe)
        # One untimed execution (the input iterator starts) before the window.
        self.fit_steps = (self.window_execs + 1) * spe
        self.update_exec = 1 + self.window_execs // 2
        self.period = math.ceil(common.FREQUENCY / spe) * spe
        if self.fit_steps > common.FREQUENCY:
            raise ValueError(
                f"A fit of {self.fit_steps} steps would hold more than one "
                f"mask update (every {common.FREQUENCY} steps). Received: "
                f"window_steps={window_steps}, steps_per_execution={spe}"
            )
        # Round 0 is the warm-up; the update of round r is at step
        # FREQUENCY * (r + 1), the last one at the schedule's end step.
        self.end_step = common.FREQUENCY * (rounds + 1)
        self.data = common.arrays(spec, self.fit_steps, seed=seed)
        self.auto_jit = _auto_jit_compile()
        self.arms = {
            name: self._make_arm(name == "pruned", seed) for name in _ARMS
        }
        self._check_identical_start()
        self.ordinary_ms: list[float] = []
        self.update_excess_ms: list[float] = []
        self.window_mean_ms: dict[str, list[float]] = {a: [] for a in _ARMS}

    def _make_arm(self, pruned: bool, seed: int) -> _Arm:
        model = common.build_seeded(self.spec, seed)
        # The window's start, the update's execution and the next one.
        timer = StepTimer(
            block_at=tuple(
                e * self.spe
                for e in (1, self.update_exec, self.update_exec + 1)
                if e <= self.window_execs
            )
        )
        callbacks = [timer]
        if pruned:
            schedule = mp.PolynomialDecay(
                initial_sparsity=0.0,
                final_sparsity=common.FINAL_SPARSITY,
                begin_step=0,
                end_step=self.end_step,
                frequency=common.FREQUENCY,
            )
            model = mp.prune_low_magnitude(
                model,
                pruning_schedule=schedule,
                mask_dtype=_MASK_DTYPE.value or None,
            )
            callbacks.append(mp.UpdatePruningStep())
        with warnings.catch_warnings():
            # Keras warns and falls back if a model cannot be jit-compiled;
            # `_check_jit` turns that into an error after the warm-up.
            warnings.simplefilter("ignore")
            model.compile(
                optimizer=keras.optimizers.Adam(),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True
                ),
                jit_compile=self.variant.jit_compile,
                steps_per_execution=self.spe,
            )
        return _Arm(model, timer, callbacks, pruned)

    def _check_identical_start(self) -> None:
        dense = self.arms["dense"].model.get_weights()
        copy = self.arms["dense_copy"].model.get_weights()
        if not all((a == b).all() for a, b in zip(dense, copy, strict=True)):
            raise RuntimeError("dense and dense_copy start from other weights")

    @property
    def jit_compile(self) -> bool:
        """What the variant's `jit_compile` resolves to here."""
        if self.variant.jit_compile == "auto":
            return self.auto_jit
        return bool(self.variant.jit_compile)

    def _check_jit(self) -> None:
        for name, arm in self.arms.items():
            if bool(arm.model.jit_compile) != self.jit_compile:
                raise RuntimeError(
                    f"{self.spec.name} {name}: Keras resolved jit_compile to "
                    f"{arm.model.jit_compile}, not {self.jit_compile}"
                )

    def _start_step(self, round_index: int) -> int:
        update_step = common.FREQUENCY * (round_index + 1)
        return update_step - self.update_exec * self.spe

    def measure(self, name: str, round_index: int) -> float:
        """Fits arm `name` once; returns its mean seconds per step."""
        arm = self.arms[name]
        arm.model.optimizer.iterations.assign(self._start_step(round_index))
        x, y = self.data
        arm.model.fit(
            x,
            y,
            batch_size=self.spec.batch_size,
            epochs=1,
            steps_per_epoch=self.fit_steps,
            verbose=0,
            shuffle=False,
            callbacks=arm.callbacks,
        )
        batches = [batch for batch, _ in arm.timer.stamps]
        expected = [*range(0, self.fit_steps, self.spe), None]
        if batches != expected:
            raise RuntimeError(f"batch starts {batches}, expected {expected}")
        stamps = [t for _, t in arm.timer.stamps]
        # Durations of executions 1 .. window_execs.
        execs = [
            stamps[i + 1] - stamps[i] for i in range(1, self.window_execs + 1)
        ]
        self.window_mean_ms[name].append(
            1000 * sum(execs) / (len(execs) * self.spe)
        )
        if not arm.pruned:
            return sum(execs) / (len(execs) * self.spe)
        self._check_update(arm, round_index)
        update = execs[self.update_exec - 1]
        ordinary = execs[: self.update_exec - 1] + execs[self.update_exec :]
        mean_ordinary = statistics.fmean(ordinary)
        self.ordinary_ms.append(1000 * mean_ordinary / self.spe)
        self.update_excess_ms.append(1000 * (update - mean_ordinary))
        per_period = mean_ordinary * (self.period // self.spe - 1) + update
        return per_period / self.period

    def _check_update(self, arm: _Arm, round_index: int) -> None:
        expected = common.FREQUENCY * (round_index + 1)
        for layer in mp.pruned_layers(arm.model):
            last = int(ops.convert_to_numpy(layer.last_mask_update_step))
            if last != expected:
                raise RuntimeError(
                    f"{layer.name}: last mask update at step {last}, "
                    f"expected {expected}: the update left the window"
                )

    def run(self) -> list[dict]:
        """Warms up, runs the timed rounds; returns the two rows."""
        common.run_rounds(_ARMS, 1, self.measure, first_round=0)
        self._check_jit()
        self.ordinary_ms.clear()
        self.update_excess_ms.clear()
        for values in self.window_mean_ms.values():
            values.clear()
        samples = common.run_rounds(
            _ARMS, self.rounds, self.measure, first_round=1
        )
        pruned_ratios = common.ratios(samples, "pruned", "dense")
        aa_ratios = common.ratios(samples, "dense_copy", "dense")
        sparsity = mp.get_weight_sparsity(self.arms["pruned"].model)
        backend = keras.backend.backend()
        case = f"{self.spec.name} {self.variant_name}"
        details = {
            "case": case,
            "measure": "pruned/dense",
            "model": self.spec.description,
            "jit_compile": self.jit_compile,
            "blocks_until_computed": _ASYNC_DISPATCH,
            "steps_per_execution": self.spe,
            "rounds": self.rounds,
            "fit_steps": self.fit_steps,
            "timed_steps_per_fit": self.window_execs * self.spe,
            "update_period_steps": self.period,
            "ms_per_step_median": {
                name: round(1000 * statistics.median(values), 3)
                for name, values in samples.items()
            },
            "pruned_ordinary_ms_per_step_median": round(
                statistics.median(self.ordinary_ms), 3
            ),
            "pruned_ordinary_over_dense_median": round(
                statistics.median(
                    o / (1000 * d)
                    for o, d in zip(
                        self.ordinary_ms, samples["dense"], strict=True
                    )
                ),
                4,
            ),
            "pruned_update_excess_ms_median": round(
                statistics.median(self.update_excess_ms), 1
            ),
            "window_mean_ms_per_step_median": {
                name: round(statistics.median(values), 3)
                for name, values in self.window_mean_ms.items()
            },
            "final_sparsity": {
                "min": round(float(min(sparsity)), 4),
                "max": round(float(max(sparsity)), 4),
            },
        }
        name = f"train {self.spec.name} {self.variant_name}"
        if _MASK_DTYPE.value:
            name += f" ({_MASK_DTYPE.value} masks)"
        if backend != "tensorflow":
            name += f" ({backend})"
        rows = [
            common.make_row(
                f"{name}: pruned/dense",
                _GROUP,
                pruned_ratios,
                self.variant.target,
                {**details, "ratios": [round(r, 4) for r in pruned_ratios]},
            ),
            common.make_row(
                f"{name}: A/A dense/dense",
                _GROUP,
                aa_ratios,
                None,
                {
                    "case": case,
                    "role": "aa",
                    "measure": "dense_copy/dense",
                    "model": self.spec.description,
                    "rounds": self.rounds,
                    "ratios": [round(r, 4) for r in aa_ratios],
                },
            ),
        ]
        return [{**row, "backend": backend} for row in rows]


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@functools.cache
def _auto_jit_compile() -> bool:
    """Returns what `compile(jit_compile="auto")` resolves to here: on
    TensorFlow False on a machine with only CPUs (Keras turns XLA off
    there), on JAX True, on PyTorch False."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", jit_compile="auto")
    return bool(model.jit_compile)


def run(
    model_names: list[str],
    variant_names: list[str],
    rounds: int,
    quick: bool,
    seed: int = 0,
) -> list[dict]:
    """Runs every model under every variant; returns the rows."""
    auto_jit = _auto_jit_compile()
    backend = keras.backend.backend()
    rows = []
    for model_name in model_names:
        spec = common.MODELS[model_name]
        window = spec.quick_window_steps if quick else spec.window_steps
        for variant_name in variant_names:
            if backend not in VARIANTS[variant_name].backends:
                print(
                    f"train {model_name} {variant_name}: skipped, the "
                    f"variant does not run on {backend}",
                    flush=True,
                )
                continue
            start = time.perf_counter()
            cell = _Cell(spec, variant_name, rounds, window, seed)
            cell_rows = cell.run()
            cell_rows[0]["details"]["keras_auto_jit_compile_here"] = auto_jit
            if backend == "torch":
                cell_rows[0]["details"]["torch_threads"] = _torch_threads()
            rows += cell_rows
            details = cell_rows[0]["details"]
            print(
                f"{cell_rows[0]['name']}: median "
                f"{cell_rows[0]['median']:.3f}, A/A "
                f"{cell_rows[1]['median']:.3f}; ms/step "
                f"{details['ms_per_step_median']}, update +"
                f"{details['pruned_update_excess_ms_median']:.0f} ms "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            del cell
            keras.backend.clear_session()
            gc.collect()
    return rows


def _run_backends(backends: list[str], start: float) -> None:
    """Runs this script once per backend; prints the rows side by side."""
    rows, children = common.run_per_backend(
        os.path.abspath(__file__),
        backends,
        common.present_flag_args(
            [
                "quick",
                "models",
                "variants",
                "pairs",
                "seed",
                "mask_dtype",
                "torch_threads",
            ]
        ),
    )
    print("\nTraining step time, pruned / dense, per backend:\n")
    print(common.format_backend_table(rows))
    print(f"Wall time: {time.perf_counter() - start:.0f} s")
    if _JSON.value:
        common.write_json(
            _JSON.value,
            {
                "rows": rows,
                "backends": children,
                "machine": common.machine_info(),
                "wall_seconds": round(time.perf_counter() - start, 1),
            },
        )
    if any(child["returncode"] for child in children.values()):
        raise SystemExit(1)


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    for name in _MODELS.value:
        if name not in common.MODELS:
            raise app.UsageError(f"unknown model {name!r}")
    for name in _VARIANTS.value:
        if name not in VARIANTS:
            raise app.UsageError(f"unknown variant {name!r}")
    if _BACKENDS.value:
        try:
            backends = common.check_backends(_BACKENDS.value)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
        _run_backends(backends, start)
        return
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
    common.set_torch_threads(_TORCH_THREADS.value)
    rounds = _PAIRS.value or (2 if _QUICK.value else 15)
    plan = [(m, _VARIANTS.value) for m in _MODELS.value]
    if _QUICK.value and not _MODELS.present and not _VARIANTS.present:
        plan = [(m, v if m == "mlp" else ["default"]) for m, v in plan]
    rows = []
    for model_name, variant_names in plan:
        rows += run(
            [model_name], variant_names, rounds, _QUICK.value, _SEED.value
        )
    common.finish(rows, start, _JSON.value)


if __name__ == "__main__":
    app.run(main)
