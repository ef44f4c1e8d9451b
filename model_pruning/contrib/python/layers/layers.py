"""contrib's slim-style `layers.py`: `masked_conv2d`, `masked_fully_connected`.

Each call creates (or, with `reuse=True`, reuses) a masked Keras layer named
after `scope` (`"Conv"`, `"fully_connected"` by default, made unique),
whose variables are named as slim named them (`weights`, `biases`, `mask`,
`threshold`), and applies it, then `normalizer_fn` and `activation_fn`.

Meant for building a `tf.compat.v1` graph once, as slim was. In TF2 eager
code each call makes a new layer: keep and call the layers
(`MaskedConv2D`, `MaskedFullyConnected`) instead.
"""

from typing import Any

import keras
import tensorflow as tf

from model_pruning.contrib.python import registry
from model_pruning.contrib.python.layers import core_layers

__all__ = ["masked_conv2d", "masked_convolution", "masked_fully_connected"]

_LAYER_COLLECTION = "model_pruning_contrib_layers"


@keras.saving.register_keras_serializable(package="model_pruning.contrib")
class _SlimMaskedConv2D(core_layers.MaskedConv2D):
    _kernel_name = "weights"
    _bias_name = "biases"


@keras.saving.register_keras_serializable(package="model_pruning.contrib")
class _SlimMaskedFullyConnected(core_layers.MaskedFullyConnected):
    _kernel_name = "weights"
    _bias_name = "biases"


def _layer_name(scope: Any, default: str) -> str:
    if scope is None:
        if registry.in_graph_mode():
            unique = tf.compat.v1.get_default_graph().unique_name(
                default, mark_as_used=False
            )
            return unique.split("/")[-1]
        uid = keras.backend.get_uid(f"model_pruning_contrib_{default}")
        return default if uid == 1 else f"{default}_{uid - 1}"
    if isinstance(scope, tf.compat.v1.VariableScope):
        return scope.name.split("/")[-1]
    if isinstance(scope, str) and scope:
        return scope
    raise TypeError(
        "`scope` must be a non-empty string, a VariableScope or None. "
        f"Received: scope={scope!r}"
    )


def _known_layers() -> dict[str, Any]:
    if registry.in_graph_mode():
        layers = tf.compat.v1.get_collection_ref(_LAYER_COLLECTION)
        if not layers:
            layers.append({})
        return layers[0]
    return registry.get_default_registry().named_layers


def _get_layer(name: str, reuse: Any, factory: Any) -> Any:
    known = _known_layers()
    if reuse:
        if name not in known:
            raise ValueError(
                f"`reuse=True` but no masked layer was made with scope "
                f"{name!r} here. Received: scope={name!r}, reuse={reuse!r}"
            )
        return known[name]
    layer = factory(name)
    known[name] = layer
    return layer


def _collection_names(collections: Any, key: str) -> list[str]:
    if collections is None:
        return []
    if isinstance(collections, dict):
        collections = collections.get(key) or []
    if isinstance(collections, str):
        return [collections]
    return list(collections)


def _check_graph_only(**arguments: Any) -> None:
    for name, value in arguments.items():
        if value is not None and not registry.in_graph_mode():
            raise ValueError(
                f"`{name}` names graph collections, which exist only while "
                f"building a tf.compat.v1 graph. Received: {name}={value!r}"
            )


def _finish(
    layer: Any,
    outputs: Any,
    normalizer_fn: Any,
    normalizer_params: Any,
    activation_fn: Any,
    variables_collections: Any,
    outputs_collections: Any,
) -> Any:
    if normalizer_fn is not None:
        outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    if activation_fn is not None:
        outputs = activation_fn(outputs)
    if registry.in_graph_mode():
        graph_variables = {"weights": layer._kernel}
        if layer.bias is not None:
            graph_variables["biases"] = layer.bias
        for key, variable in graph_variables.items():
            for name in _collection_names(variables_collections, key):
                tf.compat.v1.add_to_collection(
                    name, registry.tf_variable(variable)
                )
            tf.compat.v1.add_to_collection(
                tf.compat.v1.GraphKeys.MODEL_VARIABLES,
                registry.tf_variable(variable),
            )
        for loss in layer.losses:
            tf.compat.v1.add_to_collection(
                tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES, loss
            )
        for name in _collection_names(outputs_collections, "outputs"):
            tf.compat.v1.add_to_collection(name, outputs)
    return outputs


def _check_common(
    num_outputs: Any, activation_fn: Any, normalizer_fn: Any
) -> None:
    if (
        not isinstance(num_outputs, int)
        or isinstance(num_outputs, bool)
        or num_outputs <= 0
    ):
        raise ValueError(
            "num_outputs should be a positive int. "
            f"Received: num_outputs={num_outputs!r}"
        )
    for name, value in (
        ("activation_fn", activation_fn),
        ("normalizer_fn", normalizer_fn),
    ):
        if value is not None and not callable(value):
            raise TypeError(
                f"`{name}` must be callable or None. Received: {name}={value!r}"
            )


def masked_convolution(
    inputs: Any,
    num_outputs: int,
    kernel_size: Any,
    stride: Any = 1,
    padding: str = "SAME",
    data_format: str | None = None,
    rate: Any = 1,
    activation_fn: Any = tf.nn.relu,
    normalizer_fn: Any = None,
    normalizer_params: dict | None = None,
    weights_initializer: Any = "glorot_uniform",
    weights_regularizer: Any = None,
    biases_initializer: Any = "zeros",
    biases_regularizer: Any = None,
    reuse: bool | None = None,
    variables_collections: Any = None,
    outputs_collections: Any = None,
    trainable: bool = True,
    scope: Any = None,
) -> Any:
    """A 2D convolution with a pruning mask (contrib's slim function).

    ```
    outputs = activation_fn(normalizer_fn(conv2d(inputs, mask * weights)
                                          + biases))
    ```

    Args:
        inputs: A rank-4 tensor, `[batch, height, width, channels]` (or
            `NCHW` with `data_format="NCHW"`).
        num_outputs: Number of filters, a positive int.
        kernel_size: An int or a pair of ints.
        stride: An int or a pair. Defaults to `1`.
        padding: `"SAME"` or `"VALID"`. Defaults to `"SAME"`.
        data_format: `None`, `"NHWC"` or `"NCHW"`. Defaults to `None`
            (`NHWC`).
        rate: Dilation rate, an int or a pair. Defaults to `1`.
        activation_fn: Defaults to `tf.nn.relu`; `None` for linear.
        normalizer_fn: Applied before the activation; when given there is
            no bias. Defaults to `None`.
        normalizer_params: Keyword arguments of `normalizer_fn`. Defaults
            to `None`.
        weights_initializer: Defaults to `"glorot_uniform"` (slim's
            `xavier_initializer()`).
        weights_regularizer: Defaults to `None`.
        biases_initializer: `None` for no bias. Defaults to `"zeros"`.
        biases_regularizer: Defaults to `None`.
        reuse: Reuse the layer made earlier with the same `scope` (in this
            graph, or this registry in TF2 mode). Defaults to `None`.
        variables_collections: Graph mode: collections (a list, or a dict
            keyed `"weights"` / `"biases"`) for the variables. Defaults to
            `None`.
        outputs_collections: Graph mode: collections for the outputs.
            Defaults to `None`.
        trainable: Defaults to `True`.
        scope: The layer's name. Defaults to `None`: `"Conv"`, made unique.

    Returns:
        The output tensor.

    Raises:
        ValueError: If `inputs` is not rank 4 ("... rank ..."),
            `data_format` is unknown, `num_outputs` is not a positive int,
            `reuse=True` finds no layer, or collections are given in TF2
            mode.
        TypeError: If `activation_fn` or `normalizer_fn` is not callable.

    Example:

    ```python
    net = masked_conv2d(images, 64, 5, scope="conv1")
    ```
    """
    rank = tf.TensorShape(getattr(inputs, "shape", None)).rank
    if rank != 4:
        raise ValueError(
            "Sparse Convolution not supported for input with rank "
            f"{rank}. Received: inputs.shape="
            f"{tf.TensorShape(getattr(inputs, 'shape', None))}"
        )
    if data_format not in (None, "NHWC", "NCHW"):
        raise ValueError(
            "data_format has to be either NCHW or NHWC. "
            f"Received: data_format={data_format!r}"
        )
    if not isinstance(padding, str) or padding.upper() not in (
        "SAME",
        "VALID",
    ):
        raise ValueError(
            "`padding` must be 'SAME' or 'VALID'. "
            f"Received: padding={padding!r}"
        )
    _check_common(num_outputs, activation_fn, normalizer_fn)
    _check_graph_only(
        variables_collections=variables_collections,
        outputs_collections=outputs_collections,
    )
    use_bias = normalizer_fn is None and biases_initializer is not None

    def factory(name: str) -> core_layers.MaskedConv2D:
        return _SlimMaskedConv2D(
            filters=num_outputs,
            kernel_size=kernel_size,
            strides=stride,
            padding=padding.lower(),
            data_format=(
                "channels_first" if data_format == "NCHW" else "channels_last"
            ),
            dilation_rate=rate,
            use_bias=use_bias,
            kernel_initializer=weights_initializer,
            bias_initializer=biases_initializer or "zeros",
            kernel_regularizer=weights_regularizer,
            bias_regularizer=biases_regularizer,
            trainable=trainable,
            name=name,
        )

    layer = _get_layer(_layer_name(scope, "Conv"), reuse, factory)
    outputs = layer(inputs)
    return _finish(
        layer,
        outputs,
        normalizer_fn,
        normalizer_params,
        activation_fn,
        variables_collections,
        outputs_collections,
    )


masked_conv2d = masked_convolution


def masked_fully_connected(
    inputs: Any,
    num_outputs: int,
    activation_fn: Any = tf.nn.relu,
    normalizer_fn: Any = None,
    normalizer_params: dict | None = None,
    weights_initializer: Any = "glorot_uniform",
    weights_regularizer: Any = None,
    biases_initializer: Any = "zeros",
    biases_regularizer: Any = None,
    reuse: bool | None = None,
    variables_collections: Any = None,
    outputs_collections: Any = None,
    trainable: bool = True,
    scope: Any = None,
) -> Any:
    """A fully connected layer with a pruning mask (contrib's slim function).

    ```
    outputs = activation_fn(normalizer_fn(inputs @ (mask * weights)
                                          + biases))
    ```

    Args:
        inputs: A tensor of rank >= 2 with a defined last dimension.
        num_outputs: Output size, a positive int.
        activation_fn: Defaults to `tf.nn.relu`; `None` for linear.
        normalizer_fn: Applied before the activation; when given there is
            no bias. Defaults to `None`.
        normalizer_params: Keyword arguments of `normalizer_fn`. Defaults
            to `None`.
        weights_initializer: Defaults to `"glorot_uniform"`.
        weights_regularizer: Defaults to `None`.
        biases_initializer: `None` for no bias. Defaults to `"zeros"`.
        biases_regularizer: Defaults to `None`.
        reuse: Reuse the layer made earlier with the same `scope`. Defaults
            to `None`.
        variables_collections: Graph mode: collections for the variables.
            Defaults to `None`.
        outputs_collections: Graph mode: collections for the outputs.
            Defaults to `None`.
        trainable: Defaults to `True`.
        scope: The layer's name. Defaults to `None`: `"fully_connected"`,
            made unique.

    Returns:
        The output tensor.

    Raises:
        ValueError: If `num_outputs` is not a positive int, `inputs` has
            rank < 2, `reuse=True` finds no layer, or collections are given
            in TF2 mode.
        TypeError: If `activation_fn` or `normalizer_fn` is not callable.

    Example:

    ```python
    logits = masked_fully_connected(features, 10, activation_fn=None)
    ```
    """
    _check_common(num_outputs, activation_fn, normalizer_fn)
    rank = tf.TensorShape(getattr(inputs, "shape", None)).rank
    if rank is None or rank < 2:
        raise ValueError(
            "masked_fully_connected needs inputs of rank >= 2. Received: "
            f"inputs.shape={tf.TensorShape(getattr(inputs, 'shape', None))}"
        )
    _check_graph_only(
        variables_collections=variables_collections,
        outputs_collections=outputs_collections,
    )
    use_bias = normalizer_fn is None and biases_initializer is not None

    def factory(name: str) -> core_layers.MaskedFullyConnected:
        return _SlimMaskedFullyConnected(
            units=num_outputs,
            use_bias=use_bias,
            kernel_initializer=weights_initializer,
            bias_initializer=biases_initializer or "zeros",
            kernel_regularizer=weights_regularizer,
            bias_regularizer=biases_regularizer,
            trainable=trainable,
            name=name,
        )

    layer = _get_layer(_layer_name(scope, "fully_connected"), reuse, factory)
    outputs = layer(inputs)
    return _finish(
        layer,
        outputs,
        normalizer_fn,
        normalizer_params,
        activation_fn,
        variables_collections,
        outputs_collections,
    )
