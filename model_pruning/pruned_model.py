"""`PrunedModel`: a model that runs one `PruneLowMagnitude` around another.

`prune_low_magnitude` rebuilds a plain `Sequential` or Functional model layer
by layer. Any other model (a KerasHub backbone or task, a Functional
subclass, a subclassed model) is copied whole, the way it serializes itself
(`from_config(get_config())` and its weights, as `.keras` loading and
KerasHub's `from_preset` do), wrapped whole, and returned in a `PrunedModel`.
Its layers are never rebuilt one by one, so layers that create sublayers in
`build()`, or whose own configs do not round-trip, are pruned in place.
"""

from typing import Any

import keras

from model_pruning.wrapper import PruneLowMagnitude


@keras.saving.register_keras_serializable(package="model_pruning")
class PrunedModel(keras.Model):
    """A model whose only layer is a `PruneLowMagnitude` around a model.

    Calling it calls the wrapped model (dict inputs, `training` and keyword
    arguments pass through). It compiles, trains with `UpdatePruningStep`,
    and saves and loads as `.keras` with `import model_pruning` (and the
    wrapped model's own package, such as `keras_hub`). `strip_pruning` gives
    back an instance of the wrapped model's class. Compile it with an
    explicit loss: a task model's `compile()` defaults belong to its class.

    Args:
        pruned: A `PruneLowMagnitude` whose inner layer is a model.
        **kwargs: Base model arguments such as `name`.

    Raises:
        ValueError: If `pruned` is not a `PruneLowMagnitude`.
    """

    def __init__(self, pruned: PruneLowMagnitude, **kwargs: Any):
        if not isinstance(pruned, PruneLowMagnitude):
            raise ValueError(
                "`pruned` must be a PruneLowMagnitude layer. "
                f"Received: pruned={pruned!r}"
            )
        super().__init__(**kwargs)
        self.pruned = pruned
        if pruned.built:
            self.built = True

    @property
    def inner(self) -> keras.Model:
        """The wrapped model (its weights masked in place)."""
        return self.pruned.layer

    def call(
        self, inputs: Any, *args: Any, training: Any = None, **kwargs: Any
    ) -> Any:
        # `training` is named so that Keras passes it: the wrapper raises
        # when it trains with nothing updating its masks.
        return self.pruned(inputs, *args, training=training, **kwargs)

    def compute_output_spec(self, inputs: Any, *args: Any, **kwargs: Any):
        return self.pruned.compute_output_spec(inputs, *args, **kwargs)

    def get_build_config(self) -> dict[str, Any] | None:
        return self.pruned.get_build_config()

    def build_from_config(self, config: dict[str, Any]) -> None:
        self.pruned.build_from_config(config)
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "pruned": keras.saving.serialize_keras_object(self.pruned),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PrunedModel":
        config = dict(config)
        pruned = keras.saving.deserialize_keras_object(config.pop("pruned"))
        return cls(pruned, **config)
