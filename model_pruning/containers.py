"""Strip a custom model or layer that wraps its own sublayers in `__init__`.

A subclassed `keras.Model` (or custom layer) may create
`PruneLowMagnitude` wrappers itself, in `__init__`, and keep them as
attributes or in lists. Its config recreates the wrappers, so a stripped
copy cannot come from the config alone: `rebuild` makes a new instance from
the config and puts transformed copies (the stripped layers) at the same
attributes, so the container's `call` runs them unchanged. Pruning never
rebuilds containers this way: `prune_low_magnitude` copies them whole and
prunes them in place (see `pruned_model.py`).
"""

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import keras

from model_pruning import _compat
from model_pruning import prunable


def sublayer_slots(layer: keras.layers.Layer) -> Iterator[tuple[str, Any]]:
    """Yields `(attribute, value)` for each attribute holding sublayers.

    `value` is a layer, or a list or tuple whose items are all layers.
    """
    for name, value in vars(layer).items():
        if name in prunable.bookkeeping_attributes():
            continue
        if isinstance(value, keras.layers.Layer):
            yield name, value
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, keras.layers.Layer) for v in value)
        ):
            yield name, value


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Returns the sublayers held in attributes of `layer`, in order."""
    found = []
    for _, value in sublayer_slots(layer):
        found.extend(value if isinstance(value, (list, tuple)) else [value])
    return found


def is_container(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is built from sublayers and owns no variables itself.

    Such a layer can be rebuilt by `rebuild`; one with variables of its own
    cannot, because only its sublayers are copied.
    """
    held = sublayers(layer)
    if not held:
        return False
    inner = {id(v) for sub in held for v in sub.variables}
    return all(id(v) in inner for v in layer.variables)


def rebuild(
    layer: keras.layers.Layer,
    transform: Callable[[keras.layers.Layer], keras.layers.Layer],
) -> keras.layers.Layer:
    """Returns a new instance of a container holding `transform(sublayer)`.

    The new instance comes from `layer.get_config()`; each sublayer attribute
    (or list item) is replaced by `transform` of the source's sublayer at the
    same place, which must return a built layer. The container is then
    marked built with the source's build shapes.

    Args:
        layer: A built container (see `is_container`).
        transform: Maps a source sublayer to its replacement.

    Returns:
        The new container.

    Raises:
        ValueError: If the container's config does not recreate it with the
            same sublayer attributes.
    """
    try:
        copy = layer.__class__.from_config(layer.get_config())
    except TypeError as error:
        raise ValueError(
            f"{layer.__class__.__name__} cannot be recreated from its config, "
            "so its sublayers cannot be replaced: give it a get_config that "
            f"returns its constructor arguments ({error}). "
            f"Received: layer={layer.name!r}"
        ) from None
    new_slots = dict(sublayer_slots(copy))
    for name, value in sublayer_slots(layer):
        old = new_slots.get(name)
        if old is None or (
            isinstance(value, (list, tuple))
            and (not isinstance(old, (list, tuple)) or len(old) != len(value))
        ):
            raise ValueError(
                f"{layer.__class__.__name__}.from_config(get_config()) does "
                f"not recreate the sublayer attribute {name!r}, so its "
                "sublayers cannot be replaced. Give the class a get_config "
                f"that recreates it. Received: layer={layer.name!r}"
            )
        for item in old if isinstance(old, (list, tuple)) else [old]:
            # Keras keeps no public way to forget a replaced sublayer.
            _compat.untrack(copy, item)
        if isinstance(value, (list, tuple)):
            replaced = [transform(v) for v in value]
            if isinstance(value, tuple):
                replaced = tuple(replaced)
            setattr(copy, name, replaced)
        else:
            setattr(copy, name, transform(value))
    for sub in sublayers(copy):
        if not sub.built:
            sub.build()
    # Its sublayers are built, and it owns no variables, so the container
    # is built; its own `build` would build the sublayers again. Keras keeps
    # the shapes a `.keras` file needs in a private field.
    _compat.copy_build_shapes(layer, copy)
    copy.built = True
    return copy
