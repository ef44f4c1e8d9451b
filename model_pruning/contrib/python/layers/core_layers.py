"""contrib's `core_layers.py`: `MaskedConv2D` and `MaskedFullyConnected`.

Keras 3 layers whose kernel is used through a mask:

```
masked_kernel = mask * kernel        (pruned entries +0.0)
outputs       = activation(op(inputs, masked_kernel) + bias)
```

Each layer owns `mask` (ones) and `threshold` (zero) as non-trainable Keras
weights, saved with the model, and registers (kernel, mask, threshold) in
`build` (`registry.register`: in graph mode with the `weights/masked_weight`
tensor, made once as in contrib; in TF2 mode `call` makes the product each
time). `Pruning` then updates the masks.
"""

from typing import Any

import keras
import tensorflow as tf

from model_pruning.backends import TENSORFLOW_ONLY
from model_pruning.backends import check_backend
from model_pruning.contrib.python import registry
from model_pruning.contrib.python.registry import MASK_COLLECTION
from model_pruning.contrib.python.registry import MASKED_WEIGHT_COLLECTION
from model_pruning.contrib.python.registry import MASKED_WEIGHT_NAME
from model_pruning.contrib.python.registry import THRESHOLD_COLLECTION
from model_pruning.contrib.python.registry import WEIGHT_COLLECTION

__all__ = [
    "MASK_COLLECTION",
    "MASKED_WEIGHT_COLLECTION",
    "MASKED_WEIGHT_NAME",
    "MaskedConv2D",
    "MaskedFullyConnected",
    "THRESHOLD_COLLECTION",
    "WEIGHT_COLLECTION",
]


class _Holder:
    """Keeps a graph tensor out of sight of Keras' attribute tracking."""

    def __init__(self, value: Any = None):
        self.value = value


class _MaskedKernelMixin:
    """Shared by the masked layers: pruning variables and the masked kernel."""

    _kernel_name = "kernel"
    _bias_name = "bias"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_backend(type(self).__name__, TENSORFLOW_ONLY)
        super().__init__(*args, **kwargs)

    # Keras' Dense and Conv save only kernel and bias (their quantization
    # layouts); the masked layers save every variable, mask included.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def _add_kernel(self, kernel_shape: tuple) -> None:
        self._kernel = self.add_weight(
            name=self._kernel_name,
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            dtype=self.dtype,
        )

    def _add_mask(self, kernel_shape: tuple) -> None:
        self.mask = self.add_weight(
            name="mask",
            shape=kernel_shape,
            initializer="ones",
            trainable=False,
            dtype=self.dtype,
        )

    def _add_threshold(self) -> None:
        self.threshold = self.add_weight(
            name="threshold",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype=self.dtype,
        )

    def _add_mask_and_threshold(self, kernel_shape: tuple) -> None:
        self._add_mask(kernel_shape)
        self._add_threshold()

    def _add_bias(self, units: int) -> None:
        """Adds the bias (after the kernel's variables), or sets `None`."""
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name=self._bias_name,
                shape=(units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                dtype=self.dtype,
            )

    def _register_kernel(self) -> None:
        entry = registry.register(self._kernel, self.mask, self.threshold)
        self._graph_masked_kernel = _Holder(entry.masked_weight)

    def masked_kernel(self) -> tf.Tensor:
        """Returns `mask * kernel` (pruned entries `+0.0`).

        In graph mode, the tensor registered in `'masked_weights'` when the
        layer was built (one node, which `strip_pruning_vars_fn` replaces);
        otherwise computed now.
        """
        holder = getattr(self, "_graph_masked_kernel", None)
        tensor = holder.value if holder is not None else None
        if (
            tensor is not None
            and registry.in_graph_mode()
            and _reachable(tensor.graph)
        ):
            return tensor
        return registry.masked_weight(self.mask, self._kernel)


def _reachable(graph: Any) -> bool:
    """Whether a tensor of `graph` can be used here: it is the default graph
    or encloses it (a `tf.while_loop` body captures it)."""
    current = tf.compat.v1.get_default_graph()
    while current is not None:
        if current is graph:
            return True
        current = getattr(current, "outer_graph", None)
    return False


def _check_units(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="model_pruning.contrib")
class MaskedConv2D(_MaskedKernelMixin, keras.layers.Conv2D):
    """2D convolution with a pruning mask on its kernel (contrib's layer).

    ```
    outputs = activation(conv2d(inputs, mask * kernel) + bias)
    ```

    Builds `mask` (ones, `kernel_size + (in_channels, filters)`), `kernel`,
    `threshold` (zero scalar) and `bias`, in contrib's order, and registers
    the kernel for `Pruning`.

    Args:
        filters: Number of output channels, a positive int.
        kernel_size: An int or a pair of ints.
        strides: An int or a pair. Defaults to `(1, 1)`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `"channels_last"`.
        dilation_rate: An int or a pair. Defaults to `(1, 1)`.
        activation: Activation, or `None` for linear. Defaults to `None`.
        use_bias: Whether to add a bias. Defaults to `True`.
        kernel_initializer: Defaults to `None`: `"glorot_uniform"`.
        bias_initializer: Defaults to `"zeros"`.
        kernel_regularizer: Defaults to `None`.
        bias_regularizer: Defaults to `None`.
        activity_regularizer: Defaults to `None`.
        trainable: Defaults to `True`.
        name: Layer name. Defaults to `None`.
        **kwargs: Other `keras.layers.Conv2D` arguments (not `groups`).

    Raises:
        ValueError: If `filters` is not a positive int, `groups` is not 1,
            or the input has no defined channel dimension (at build).

    Example:

    ```python
    conv = MaskedConv2D(32, 3, padding="same", activation="relu")
    outputs = conv(images)  # registered: get_masks()[-1] is conv.mask
    ```
    """

    def __init__(
        self,
        filters: int,
        kernel_size: Any,
        strides: Any = (1, 1),
        padding: str = "valid",
        data_format: str = "channels_last",
        dilation_rate: Any = (1, 1),
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = None,
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        trainable: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ):
        _check_units("filters", filters)
        if kwargs.get("groups", 1) != 1:
            raise ValueError(
                "MaskedConv2D does not support grouped convolution. "
                f"Received: groups={kwargs['groups']!r}"
            )
        kwargs.pop("groups", None)
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer or "glorot_uniform",
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            trainable=trainable,
            name=name,
            **kwargs,
        )

    def build(self, input_shape: Any) -> None:
        channel_axis = -1 if self.data_format == "channels_last" else 1
        input_channel = input_shape[channel_axis]
        if input_channel is None:
            raise ValueError(
                "The channel dimension of the inputs should be defined. "
                f"Received: input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={channel_axis: input_channel}
        )
        kernel_shape = self.kernel_size + (input_channel, self.filters)
        self.compute_output_shape(input_shape)
        self._add_mask(kernel_shape)
        self._add_kernel(kernel_shape)
        self._add_threshold()
        self._register_kernel()
        self._add_bias(self.filters)
        self.built = True

    def call(self, inputs: Any) -> Any:
        outputs = self.convolution_op(inputs, self.masked_kernel())
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = keras.ops.add(
                outputs, keras.ops.reshape(self.bias, bias_shape)
            )
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package="model_pruning.contrib")
class MaskedFullyConnected(_MaskedKernelMixin, keras.layers.Dense):
    """Fully connected layer with a pruning mask on its kernel (contrib's).

    ```
    outputs = activation(inputs @ (mask * kernel) + bias)
    ```

    Inputs of rank > 2 are contracted on their last axis. Builds `kernel`
    (`[in, units]`), `mask` (ones), `threshold` (zero scalar) and `bias`, in
    contrib's order, and registers the kernel for `Pruning`.

    Args:
        units: Output size, a positive int.
        activation: Activation, or `None` for linear. Defaults to `None`.
        use_bias: Whether to add a bias. Defaults to `True`.
        kernel_initializer: Defaults to `None`: `"glorot_uniform"`.
        bias_initializer: Defaults to `"zeros"`.
        kernel_regularizer: Defaults to `None`.
        bias_regularizer: Defaults to `None`.
        activity_regularizer: Defaults to `None`.
        trainable: Defaults to `True`.
        name: Layer name. Defaults to `None`.
        **kwargs: Other `keras.layers.Dense` arguments.

    Raises:
        ValueError: If `units` is not a positive int, or the last input
            dimension is undefined (at build).

    Example:

    ```python
    dense = MaskedFullyConnected(10, activation="softmax")
    probabilities = dense(features)
    ```
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = None,
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        trainable: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ):
        _check_units("units", units)
        super().__init__(
            units=units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer or "glorot_uniform",
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            trainable=trainable,
            name=name,
            **kwargs,
        )

    def build(self, input_shape: Any) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last dimension of the inputs to `MaskedFullyConnected` "
                f"should be defined. Received: input_shape={input_shape}"
            )
        kernel_shape = (input_dim, self.units)
        self._add_kernel(kernel_shape)
        self._add_mask_and_threshold(kernel_shape)
        self._register_kernel()
        self._add_bias(self.units)
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: input_dim}
        )
        self.built = True

    def call(self, inputs: Any, training: Any = None) -> Any:
        outputs = keras.ops.matmul(inputs, self.masked_kernel())
        if self.bias is not None:
            outputs = keras.ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
