"""Where a mask update's time goes: each stage over one elementwise pass.

One float32 weight variable (`N(0, 1)`, `--size` entries, 37M by default)
and its all-ones mask, updated to sparsity 0.9. Each stage is timed alone
in a `tf.function` (median of `--repeats` calls after two warm-ups; the
weight and mask are reset, untimed, where a stage assigns them):

- the general path (TF ops, which the element-wise update ran before the
  fused one and blocks, N:M and XLA callers still run): the masked
  magnitudes, `check_numerics`, the finiteness reduction, the host
  selection, the compare / cast / AND with the old mask, and the masked
  weight with its assign;
- the fused path (`model_pruning.fused_update`): pass 1 (magnitudes,
  finiteness and the selection's count in NumPy chunks), pass 2 (compare,
  mask and weight in one loop, XLA from 4M entries) and both together, as
  `Pruning.mask_update_op()` runs them.

The unit is `reduce_sum(abs(w))` on the same variable. The table is the
per-stage profile in `docs/design.md`.

    python benchmarks/mask_update_stages.py [--size=37000000] [--repeats=9]
"""

import statistics
import time

import common

common.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import model_pruning as mp  # noqa: E402
from model_pruning import fused_update  # noqa: E402
from model_pruning import mask  # noqa: E402
from model_pruning import selection  # noqa: E402

_SIZE = flags.DEFINE_integer("size", 37_000_000, "Entries of the weight.")
_REPEATS = flags.DEFINE_integer("repeats", 9, "Timed calls per stage.")
_SPARSITY = 0.9


def _time(function, reset=None) -> float:
    """Median milliseconds of `function()` (after two warm-up calls)."""
    samples = []
    for index in range(_REPEATS.value + 2):
        if reset is not None:
            reset()
        start = time.perf_counter()
        function()
        if index >= 2:
            samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main(argv: list[str]) -> None:
    del argv
    size = _SIZE.value
    values = np.random.default_rng(0).standard_normal(size, dtype=np.float32)
    weight = tf.Variable(values)
    ones = tf.ones([size])
    mask_variable = tf.Variable(ones)

    def reset():
        weight.assign(values)
        mask_variable.assign(ones)

    k = mask.num_kept(size, tf.constant(_SPARSITY))
    one_pass = tf.function(lambda: tf.reduce_sum(tf.abs(weight)))
    unit = _time(lambda: one_pass().numpy())
    magnitudes = tf.abs(mask.zero_pruned(weight, mask_variable))
    threshold = selection.kth_largest(magnitudes, k)
    new_mask = tf.cast(magnitudes >= threshold, tf.float32)

    def stage(function):
        compiled = tf.function(function)
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), compiled())

    rows = [
        ("one pass: reduce_sum(abs(w))", unit),
        (
            "general: masked |w| (where, abs)",
            _time(
                stage(
                    lambda: tf.abs(mask.zero_pruned(weight, mask_variable))[:1]
                )
            ),
        ),
        (
            "general: check_numerics",
            _time(
                stage(lambda: tf.debugging.check_numerics(magnitudes, "m")[:1])
            ),
        ),
        (
            "general: is_finite, reduce_all",
            _time(stage(lambda: tf.reduce_all(tf.math.is_finite(magnitudes)))),
        ),
        (
            "general: host selection",
            _time(stage(lambda: selection.kth_largest(magnitudes, k))),
        ),
        (
            "general: compare, cast, AND old mask",
            _time(
                stage(
                    lambda: (
                        tf.cast(magnitudes >= threshold, tf.float32)
                        * mask_variable
                    )[:1]
                )
            ),
        ),
        (
            "general: weight * mask, assign",
            _time(
                stage(
                    lambda: weight.assign(weight * new_mask).read_value()[:1]
                ),
                reset,
            ),
        ),
        (
            "fused: pass 1 (NumPy: |w|, finite, count)",
            _time(
                stage(
                    lambda: fused_update.kth_largest_magnitude(
                        [tf.convert_to_tensor(weight)],
                        [tf.convert_to_tensor(mask_variable)],
                        k,
                    )
                ),
                reset,
            ),
        ),
        (
            "fused: pass 2 (compare, mask, weight, assigns)",
            _time(
                stage(
                    lambda: (
                        fused_update.assign_at_threshold(
                            [weight], [mask_variable], threshold
                        )
                        or tf.constant(0)
                    )
                ),
                reset,
            ),
        ),
    ]
    keras.utils.set_random_seed(0)
    side = int(size**0.5)
    pruned = mp.prune_low_magnitude(
        keras.Sequential(
            [keras.Input((side,)), keras.layers.Dense(side, use_bias=False)]
        ),
        pruning_schedule=mp.ConstantSparsity(_SPARSITY, 0, frequency=1),
    )
    (entry,) = mp.pruned_weights(pruned)
    kernel = np.random.default_rng(1).standard_normal(
        entry.weight.shape, dtype=np.float32
    )
    pruning = mp.Pruning(model=pruned, global_step=tf.Variable(1, tf.int64))

    def reset_kernel():
        entry.weight.assign(kernel)
        entry.mask.assign(np.ones(kernel.shape, np.float32))

    rows.append(
        (
            f"fused: whole Pruning.mask_update_op() ({side}x{side})",
            _time(lambda: pruning.mask_update_op().numpy(), reset_kernel),
        )
    )
    print(f"| stage ({size / 1e6:g}M entries, s={_SPARSITY}) | ms | passes |")
    print("|---|---:|---:|")
    for name, milliseconds in rows:
        print(f"| {name} | {milliseconds:.1f} | {milliseconds / unit:.2f} |")


if __name__ == "__main__":
    app.run(main)
