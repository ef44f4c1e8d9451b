"""`Pruning`: contrib's hparams-driven mask updater, over a Keras model.

It reads the global step (the optimizer's `iterations` unless given) and
updates each pruned layer's masks when due (`mask_update.update_when_due`).
`UpdatePruningStep` runs it in `fit`; custom loops call
`conditional_mask_update_op()` after applying gradients.
"""

import functools
import logging
from typing import Any

from keras import ops

from model_pruning import accessors
from model_pruning import backends
from model_pruning import mask_update
from model_pruning import schedule
from model_pruning.hparams import PruningHParams
from model_pruning.wrapper import PruneLowMagnitude


class Pruning:
    """Updates the masks of a pruned model on the global step.

    Masks of a layer update at step `t` when `schedule.should_update_masks`
    says so (contrib's rule plus a catch-up at the end step). An update keeps
    the largest-magnitude unpruned weights: pruned weights never come back.

    The layers' `pruning_scheme` (all layers must agree) decides how they
    share the schedule: `"uniform"` updates each layer on the schedule;
    `"layerwise"` delays the schedule of the `j`-th of `L` layers by
    `j * pruning_frequency // L` steps (its `last_mask_update_step` counts
    in that delayed time); `"global"` updates all layers together with one
    threshold over all their weights.

    Args:
        spec: A `PruningHParams`. Defaults to `None`: each pruned layer uses
            the hparams it was wrapped with. When given it must equal them.
        global_step: An integer variable, tensor or callable returning one.
            Defaults to `None`: `model.optimizer.iterations`, read at each
            update.
        sparsity: A float scalar (variable, tensor or number) that replaces
            the schedule's target sparsity (still scaled by
            `weight_sparsity_map`). Defaults to `None`.
        model: The pruned model, layer or list of layers (keyword only).
        xla: Whether the updates run inside an XLA-compiled function (for
            instance a custom train step with `jit_compile=True` that calls
            `conditional_mask_update_op()`), so the threshold selection must
            use TF ops only (keyword only). Defaults to `False`.
        updates_masks: Whether this object is what updates the layers'
            masks (keyword only). Training a pruned layer raises until some
            object with `updates_masks=True` manages it. `PruningSummaries`
            passes `False`: it only reads. Defaults to `True`.

    Raises:
        ValueError: If `model` has no pruned layers, `spec` differs from the
            hparams a layer was wrapped with, or the layers' hparams differ
            under a `"layerwise"` or `"global"` scheme.

    Example:

    ```python
    pruning = Pruning(model=pruned, global_step=optimizer.iterations)

    @tf.function
    def train_step(x, y):
        ...  # compute and apply gradients
        pruning.conditional_mask_update_op()
    ```
    """

    def __init__(
        self,
        spec: PruningHParams | None = None,
        global_step: Any = None,
        sparsity: Any = None,
        *,
        model: Any,
        xla: bool = False,
        updates_masks: bool = True,
    ):
        backends.check_backend("Pruning")
        layers = accessors.pruned_layers(model)
        if not layers:
            raise ValueError(
                "`model` has no layers wrapped by `prune_low_magnitude`. "
                f"Received: model={getattr(model, 'name', model)!r}"
            )
        if spec is not None:
            if not isinstance(spec, PruningHParams):
                raise TypeError(
                    f"`spec` must be a PruningHParams. Received: spec={spec!r}"
                )
            for layer in layers:
                if layer.hparams != spec:
                    raise ValueError(
                        f"Layer {layer.name!r} was wrapped with other hparams "
                        f"than `spec`. Layer: {layer.hparams.to_json()}. "
                        f"Received: spec={spec.to_json()}"
                    )
        self._scheme = _common_scheme(layers, spec)
        if updates_masks:
            for layer in layers:
                layer.has_mask_updater = True
                layer.step_source = self.global_step
        self._xla = bool(xla)
        self._delays = [
            (j * layer.hparams.pruning_frequency) // len(layers)
            if self._scheme == "layerwise"
            else 0
            for j, layer in enumerate(layers)
        ]
        self._last_steps: list[int] | None = None
        self._spec = spec
        self._model = model
        self._layers = layers
        self._global_step = global_step
        self._sparsity = sparsity
        self._conditional_update = self._update_all_layers
        if backends.is_tensorflow():
            import tensorflow as tf

            # Each Pruning traces its own graph. TF counts traces per
            # function code object and warns of "excessive retracing" after
            # a few pruned models in one process; a partial is counted per
            # object instead.
            self._conditional_update = tf.function(
                functools.partial(self._update_all_layers), autograph=False
            )

    @property
    def model(self) -> Any:
        """The model (or layers) this object updates."""
        return self._model

    @property
    def layers(self) -> list[PruneLowMagnitude]:
        """The pruned layers this object updates."""
        return list(self._layers)

    def global_step(self) -> Any:
        """Returns the current global step as an int64 tensor (int32 on JAX
        without `jax_enable_x64`).

        Raises:
            ValueError: If no `global_step` was given and the model has no
                optimizer.
        """
        step = self._global_step
        if step is None:
            optimizer = getattr(self._model, "optimizer", None)
            if optimizer is None:
                raise ValueError(
                    "Pruning needs a step: pass `global_step=` (for example "
                    "`optimizer.iterations`) or compile the model first. "
                    f"Received: global_step=None, model.optimizer={optimizer}"
                )
            step = optimizer.iterations
        elif callable(step):
            step = step()
        return ops.cast(step, backends.wide_dtype("int"))

    def sparsity_at(self, hparams: PruningHParams, step: Any) -> Any:
        """Returns the target sparsity at `step` before per-weight scaling."""
        if self._sparsity is not None:
            return ops.cast(self._sparsity, "float32")
        return schedule.target_sparsity(hparams, step)

    def any_update_due(self, step: int | None = None) -> bool:
        """Whether some layer's masks are due at `step` (eager).

        `schedule.update_is_due` in Python, on the layers' last update steps
        (read after each update this object runs), so that
        `UpdatePruningStep` runs the update only when needed and, on JAX,
        reads no variable between updates.

        Args:
            step: The global step. Defaults to `None`: `global_step()`.
        """
        if step is None:
            step = int(ops.convert_to_numpy(self.global_step()))
        if self._last_steps is None:
            self.refresh()
        if self._scheme == "global":
            hparams = self._spec or self._layers[0].hparams
            return schedule.update_is_due(hparams, step, self._last_steps[0])
        return any(
            schedule.update_is_due(
                self._spec or layer.hparams, step - delay, last
            )
            for layer, delay, last in zip(
                self._layers, self._delays, self._last_steps, strict=True
            )
        )

    def refresh(self) -> None:
        """Reads the layers' last update steps again, now (after a model
        reload or an update made by another object). Call it eagerly, where
        the variables hold the model's state (on JAX, not inside `fit`'s
        epoch unless through `Callback.model`)."""
        self._last_steps = [
            int(ops.convert_to_numpy(layer.last_mask_update_step))
            for layer in self._layers
        ]

    def mask_update_op(self, step: Any = None) -> Any:
        """Updates every mask now, whatever the schedule; returns `True`.

        Args:
            step: As in `conditional_mask_update_op`.
        """
        return self._run_update(True, step)

    def conditional_mask_update_op(self, step: Any = None) -> Any:
        """Updates the masks that are due at the global step.

        On TensorFlow it runs eagerly or inside a `tf.function` (one
        `tf.cond` per layer); on JAX and PyTorch eagerly, between steps,
        on the variables' current values (on JAX, after `model.jax_state_sync()`
        in a loop that holds the state itself).

        Args:
            step: The global step. Defaults to `None`: `global_step()`.
                `UpdatePruningStep` passes the step it counted in Python,
                which JAX's `fit` cannot read from the optimizer mid-epoch.

        Returns:
            A boolean scalar: whether any layer updated.
        """
        return self._run_update(False, step)

    def _run_update(self, force: bool, step: Any) -> Any:
        step = self.global_step() if step is None else step
        step = ops.convert_to_tensor(step, backends.wide_dtype("int"))
        if backends.is_tensorflow():
            import tensorflow as tf

            updated = self._conditional_update(tf.constant(force), step)
            if not tf.executing_eagerly():
                self._last_steps = None  # Read again after the graph ran.
                return updated
        else:
            updated = self._conditional_update(force, step)
        self.refresh()
        return updated

    @property
    def scheme(self) -> str:
        """The layers' `pruning_scheme`."""
        return self._scheme

    def layer_steps(self, step: Any) -> list[Any]:
        """Returns each layer's schedule step at global `step`: the step
        itself, minus the layer's delay under the `"layerwise"` scheme."""
        step = ops.cast(step, backends.wide_dtype("int"))
        return [step - delay for delay in self._delays]

    def _update_all_layers(self, force: Any, step: Any) -> Any:
        if self._scheme == "global":
            hparams = self._spec or self._layers[0].hparams
            return mask_update.update_when_due(
                hparams,
                accessors.pruned_weights(self._layers),
                step,
                [layer.last_mask_update_step for layer in self._layers],
                lambda: self.sparsity_at(hparams, step),
                force,
                one_threshold=True,
                xla=self._xla,
            )
        updated = []
        for layer, layer_step in zip(
            self._layers, self.layer_steps(step), strict=True
        ):
            hparams = self._spec or layer.hparams
            updated.append(
                mask_update.update_when_due(
                    hparams,
                    layer.pruned_weights,
                    layer_step,
                    [layer.last_mask_update_step],
                    functools.partial(self.sparsity_at, hparams, layer_step),
                    force,
                    xla=self._xla,
                )
            )
        return ops.any(ops.convert_to_tensor(updated))

    def target_sparsities(self) -> dict[str, Any]:
        """Returns each pruned weight's target sparsity at the current step.

        Under the `"global"` scheme this is the model's target: single
        weights end wherever the shared threshold leaves them.
        """
        steps = self.layer_steps(self.global_step())
        return {
            entry.name: entry.sparsity_scale
            * self.sparsity_at(self._spec or layer.hparams, layer_step)
            for layer, layer_step in zip(self._layers, steps, strict=True)
            for entry in layer.pruned_weights
        }

    def add_pruning_summaries(self, step: Any = None) -> None:
        """Writes contrib's scalars to the default `tf.summary` writer.

        `<name>/sparsity` (the schedule's target) and
        `<name>/last_mask_update_step` once per hparams name (from the first
        layer with that name), and
        `<weight>/sparsity`, `<weight>/target_sparsity` and
        `<weight>/threshold` per pruned weight.
        """
        import tensorflow as tf  # tf.summary, on any Keras backend

        step = self.global_step() if step is None else step
        scalars = {}
        first_by_name = {}
        for layer in self._layers:
            hparams = self._spec or layer.hparams
            first_by_name.setdefault(hparams.name, (hparams, layer))
        for name, (hparams, layer) in first_by_name.items():
            scalars[f"{name}/sparsity"] = self.sparsity_at(hparams, step)
            scalars[f"{name}/last_mask_update_step"] = (
                layer.last_mask_update_step
            )
        for name, target in self.target_sparsities().items():
            scalars[f"{name}/target_sparsity"] = target
        for entry in accessors.pruned_weights(self._layers):
            kept = ops.mean(ops.cast(entry.mask, "float32"))
            scalars[f"{entry.name}/sparsity"] = 1.0 - kept
            scalars[f"{entry.name}/threshold"] = entry.threshold
        if not backends.is_tensorflow():  # tf.summary takes NumPy values
            step = int(ops.convert_to_numpy(step))
            scalars = {k: ops.convert_to_numpy(v) for k, v in scalars.items()}
        for name, value in scalars.items():
            tf.summary.scalar(name, value, step=step)

    def print_hparams(self) -> None:
        """Logs the hparams of each pruned layer as JSON."""
        for layer in self._layers:
            hparams = self._spec or layer.hparams
            logging.info("%s: %s", layer.name, hparams.to_json())


def _common_scheme(
    layers: list[PruneLowMagnitude], spec: PruningHParams | None
) -> str:
    """Returns the layers' shared `pruning_scheme`, checking it is shared."""
    if spec is not None:
        return spec.pruning_scheme
    specs = {layer.hparams for layer in layers}
    schemes = sorted({s.pruning_scheme for s in specs})
    if len(schemes) > 1:
        raise ValueError(
            "All pruned layers of one model must use the same "
            f"pruning_scheme. Received: pruning_scheme values {schemes}"
        )
    if schemes[0] != "uniform" and len(specs) > 1:
        raise ValueError(
            f"pruning_scheme={schemes[0]!r} runs one schedule for the whole "
            "model, so every pruned layer needs the same hparams. Received: "
            f"{len(specs)} different hparams"
        )
    return schemes[0]
