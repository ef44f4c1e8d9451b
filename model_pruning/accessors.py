"""Find the pruned layers of a model and read their state (contrib's getters).

Every list is in one stable order: the model's layers depth first, in
`model.layers` order (a custom layer's sublayers in attribute order), each
pruned weight in its layer's order; a layer shared by several calls appears
once.
"""

from typing import Any

import keras
import numpy as np

from model_pruning import prunable
from model_pruning.mask import zero_pruned
from model_pruning.wrapper import PrunedWeight
from model_pruning.wrapper import PruneLowMagnitude


def pruned_layers(model: Any) -> list[PruneLowMagnitude]:
    """Returns the `PruneLowMagnitude` layers in `model`, depth first.

    Args:
        model: A Keras model, a layer, or a list of them.

    Returns:
        A list of wrappers, each once.
    """
    found: dict[int, PruneLowMagnitude] = {}

    def visit(obj: Any) -> None:
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        elif isinstance(obj, PruneLowMagnitude):
            found.setdefault(id(obj), obj)
        elif isinstance(obj, keras.Model):
            visit(obj.layers)
        elif isinstance(obj, keras.layers.Layer):
            visit(prunable.sublayers(obj))

    visit(model)
    return list(found.values())


def pruned_weights(model: Any) -> list[PrunedWeight]:
    """Returns every `PrunedWeight` of `model`, in the stable order.

    Raises:
        ValueError: If a pruned layer is not built yet.
    """
    entries = []
    for layer in pruned_layers(model):
        if not layer.built:
            raise ValueError(
                f"Pruned layer {layer.name!r} is not built: call the model on "
                "data or build it first. Received: built=False"
            )
        entries.extend(layer.pruned_weights)
    return entries


def get_masks(model: Any) -> list:
    """Returns the mask variables of `model`."""
    return [entry.mask for entry in pruned_weights(model)]


def get_thresholds(model: Any) -> list:
    """Returns the threshold variables of `model`."""
    return [entry.threshold for entry in pruned_weights(model)]


def get_weights(model: Any) -> list:
    """Returns the pruned weight variables (unmasked) of `model`."""
    return [entry.weight for entry in pruned_weights(model)]


def get_masked_weights(model: Any) -> list:
    """Returns each pruned weight with its mask applied, as tensors."""
    return [zero_pruned(e.weight, e.mask) for e in pruned_weights(model)]


def get_weight_sparsity(model: Any) -> list[float]:
    """Returns the fraction of zeros in each mask of `model` (0.0 for a
    weight with no elements)."""
    return [_zero_fraction(entry.mask) for entry in pruned_weights(model)]


def _zero_fraction(mask: Any) -> float:
    values = keras.ops.convert_to_numpy(mask)
    return float(1.0 - np.mean(values)) if values.size else 0.0
