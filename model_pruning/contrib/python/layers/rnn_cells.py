"""contrib's `rnn_cells.py`: LSTM cells whose main kernel is masked.

`MaskedBasicLSTMCell` and `MaskedLSTMCell` are Keras 3 RNN cells (usable in
`keras.layers.RNN` and `keras.layers.StackedRNNCells`, or called directly
with a state as contrib's cells were). Only the `[input + hidden,
4 * units]` kernel is masked, as in contrib: not the bias, the peepholes or
the projection. The state is `(c, h)`, contrib's order: an `LSTMStateTuple`
when one is passed, a list inside `keras.layers.RNN`, or one `[c, h]`
tensor with `state_is_tuple=False`.
"""

from typing import Any
from typing import NamedTuple

import keras
import tensorflow as tf

from model_pruning.contrib.python.layers.core_layers import _Holder
from model_pruning.contrib.python.layers.core_layers import _MaskedKernelMixin

__all__ = ["LSTMStateTuple", "MaskedBasicLSTMCell", "MaskedLSTMCell"]


class LSTMStateTuple(NamedTuple):
    """An LSTM state `(c, h)`, as `tf.nn.rnn_cell.LSTMStateTuple`."""

    c: Any
    h: Any


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )


def _check_optional_positive(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{name}` must be a number or None. Received: {name}={value!r}"
        )
    if value <= 0:
        raise ValueError(f"`{name}` must be positive. Received: {name}={value}")


class _MaskedLSTMBase(_MaskedKernelMixin, keras.layers.Layer):
    """State handling, the masked kernel and its registration."""

    def __init__(
        self,
        num_units: int,
        forget_bias: float,
        state_is_tuple: bool,
        activation: Any,
        reuse: Any,
        **kwargs: Any,
    ):
        _check_positive_int("num_units", num_units)
        if isinstance(forget_bias, bool) or not isinstance(
            forget_bias, (int, float)
        ):
            raise TypeError(
                "`forget_bias` must be a number. "
                f"Received: forget_bias={forget_bias!r}"
            )
        if not isinstance(state_is_tuple, bool):
            raise TypeError(
                "`state_is_tuple` must be a bool. "
                f"Received: state_is_tuple={state_is_tuple!r}"
            )
        del reuse  # Keras cells are reused by calling the same object.
        super().__init__(**kwargs)
        self.num_units = num_units
        self.forget_bias = float(forget_bias)
        self.state_is_tuple = state_is_tuple
        self.activation = keras.activations.get(activation or "tanh")
        self._graph_masked_kernel = _Holder()

    @property
    def _output_depth(self) -> int:
        return self.num_units

    @property
    def state_size(self) -> Any:
        """`[c size, h size]`, or their sum with `state_is_tuple=False`."""
        if self.state_is_tuple:
            return [self.num_units, self._output_depth]
        return self.num_units + self._output_depth

    @property
    def output_size(self) -> int:
        return self._output_depth

    def zero_state(self, batch_size: Any, dtype: Any = "float32") -> Any:
        """Returns a zero state: an `LSTMStateTuple`, or one tensor."""
        c = tf.zeros([batch_size, self.num_units], dtype)
        h = tf.zeros([batch_size, self._output_depth], dtype)
        if self.state_is_tuple:
            return LSTMStateTuple(c, h)
        return tf.concat([c, h], axis=1)

    def get_initial_state(self, batch_size: Any = None) -> list:
        """Keras' initial state: zeros, as a list."""
        state = self.zero_state(batch_size, self.compute_dtype)
        return list(state) if self.state_is_tuple else [state]

    def _build_kernel(self, input_shape: Any, initializer: Any) -> None:
        input_depth = input_shape[-1]
        if input_depth is None:
            raise ValueError(
                "Expected inputs.shape[-1] to be known. "
                f"Received: input_shape={input_shape}"
            )
        shape = (input_depth + self._output_depth, 4 * self.num_units)
        self._kernel = self.add_weight(
            name="kernel", shape=shape, initializer=initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(4 * self.num_units,), initializer="zeros"
        )
        self._add_mask_and_threshold(shape)
        self._register_kernel()

    @property
    def kernel(self) -> Any:
        """The raw (unmasked) kernel."""
        return self._kernel

    def _unpack(self, states: Any) -> tuple:
        if isinstance(states, (list, tuple)) and len(states) == 1:
            states = states[0]
        if isinstance(states, (list, tuple)):
            c, h = states
            return c, h
        return (
            states[:, : self.num_units],
            states[:, self.num_units :],
        )

    def _pack(self, c: Any, h: Any, like: Any) -> Any:
        if isinstance(like, LSTMStateTuple):
            return LSTMStateTuple(c, h)
        if isinstance(like, (list, tuple)) and len(like) == 2:
            return [c, h]
        state = tf.concat([c, h], axis=1)
        return [state] if isinstance(like, (list, tuple)) else state

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_units": self.num_units,
            "forget_bias": self.forget_bias,
            "state_is_tuple": self.state_is_tuple,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package="model_pruning.contrib")
class MaskedBasicLSTMCell(_MaskedLSTMBase):
    """contrib's `MaskedBasicLSTMCell`: a basic LSTM with a masked kernel.

    ```
    i, j, f, o = split([x, h] @ (mask * kernel) + bias, 4)
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * activation(j)
    h' = activation(c') * sigmoid(o)
    ```

    Args:
        num_units: Units of the cell, a positive int.
        forget_bias: Added to the forget gate. Defaults to `1.0`.
        state_is_tuple: `(c, h)` states; `False` concatenates them.
            Defaults to `True`.
        activation: Defaults to `None`: `tanh`.
        reuse: Accepted for contrib compatibility; a Keras cell is reused by
            calling the same object. Defaults to `None`.
        name: Layer name. Defaults to `None`.
        **kwargs: Base layer arguments.

    Raises:
        ValueError: If `num_units` is not a positive int.
        TypeError: If `forget_bias` is not a number or `state_is_tuple` not
            a bool.

    Example:

    ```python
    cell = MaskedBasicLSTMCell(128)
    outputs = keras.layers.RNN(cell)(sequences)
    ```
    """

    def __init__(
        self,
        num_units: int,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Any = None,
        reuse: Any = None,
        name: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            num_units,
            forget_bias,
            state_is_tuple,
            activation,
            reuse,
            name=name,
            **kwargs,
        )

    def build(self, input_shape: Any) -> None:
        self._build_kernel(input_shape, "glorot_uniform")
        self.built = True

    def call(self, inputs: Any, states: Any, training: Any = None) -> tuple:
        c, h = self._unpack(states)
        gates = tf.matmul(tf.concat([inputs, h], 1), self.masked_kernel())
        gates = tf.nn.bias_add(gates, tf.convert_to_tensor(self.bias))
        i, j, f, o = tf.split(gates, 4, axis=1)
        sigmoid = tf.sigmoid
        new_c = c * sigmoid(f + self.forget_bias) + sigmoid(
            i
        ) * self.activation(j)
        new_h = self.activation(new_c) * sigmoid(o)
        return new_h, self._pack(new_c, new_h, states)


@keras.saving.register_keras_serializable(package="model_pruning.contrib")
class MaskedLSTMCell(_MaskedLSTMBase):
    """contrib's `MaskedLSTMCell`: an LSTM (peepholes, clipping, projection)
    whose main kernel is masked.

    ```
    i, j, f, o = split([x, m] @ (mask * kernel) + bias, 4)
    c' = sigmoid(f + forget_bias + w_f * c) * c
         + sigmoid(i + w_i * c) * activation(j)         (w_* with peepholes)
    c' = clip(c', -cell_clip, cell_clip)                (if cell_clip)
    m' = sigmoid(o + w_o * c') * activation(c')
    m' = clip(m' @ projection_kernel, -proj_clip, proj_clip)  (if num_proj)
    ```

    The mask has the kernel's shape, `[input + (num_proj or num_units),
    4 * num_units]` (contrib sized it with `num_units`, which broke with a
    projection).

    Args:
        num_units: Units of the cell, a positive int.
        use_peepholes: Diagonal peephole connections. Defaults to `False`.
        cell_clip: Clip the cell state to `[-cell_clip, cell_clip]`.
            Defaults to `None`.
        initializer: Initializer of the kernels and peepholes. Defaults to
            `None`: `"glorot_uniform"`.
        num_proj: Output projection size. Defaults to `None`.
        proj_clip: Clip the projection. Defaults to `None`.
        num_unit_shards: Deprecated in TF; must be `None`.
        num_proj_shards: Deprecated in TF; must be `None`.
        forget_bias: Added to the forget gate. Defaults to `1.0`.
        state_is_tuple: `(c, m)` states. Defaults to `True`.
        activation: Defaults to `None`: `tanh`.
        reuse: Accepted for contrib compatibility. Defaults to `None`.
        name: Layer name. Defaults to `None`.
        **kwargs: Base layer arguments.

    Raises:
        ValueError: If a size is not a positive int, a clip is not
            positive, or a shard count is given.

    Example:

    ```python
    cell = MaskedLSTMCell(64, use_peepholes=True, num_proj=32)
    outputs = keras.layers.RNN(cell)(sequences)
    ```
    """

    def __init__(
        self,
        num_units: int,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        initializer: Any = None,
        num_proj: int | None = None,
        proj_clip: float | None = None,
        num_unit_shards: Any = None,
        num_proj_shards: Any = None,
        forget_bias: float = 1.0,
        state_is_tuple: bool = True,
        activation: Any = None,
        reuse: Any = None,
        name: str | None = None,
        **kwargs: Any,
    ):
        if num_proj is not None:
            _check_positive_int("num_proj", num_proj)
        _check_optional_positive("cell_clip", cell_clip)
        _check_optional_positive("proj_clip", proj_clip)
        for arg, value in (
            ("num_unit_shards", num_unit_shards),
            ("num_proj_shards", num_proj_shards),
        ):
            if value is not None:
                raise ValueError(
                    f"`{arg}` is not supported (deprecated in TensorFlow); "
                    f"partition the variables instead. Received: {arg}={value}"
                )
        if not isinstance(use_peepholes, bool):
            raise TypeError(
                "`use_peepholes` must be a bool. "
                f"Received: use_peepholes={use_peepholes!r}"
            )
        super().__init__(
            num_units,
            forget_bias,
            state_is_tuple,
            activation,
            reuse,
            name=name,
            **kwargs,
        )
        self.use_peepholes = use_peepholes
        self.cell_clip = cell_clip
        self.initializer = keras.initializers.get(
            initializer or "glorot_uniform"
        )
        self.num_proj = num_proj
        self.proj_clip = proj_clip

    @property
    def _output_depth(self) -> int:
        return self.num_proj or self.num_units

    def build(self, input_shape: Any) -> None:
        self._build_kernel(input_shape, self.initializer)
        if self.use_peepholes:
            for name in ("w_f_diag", "w_i_diag", "w_o_diag"):
                setattr(
                    self,
                    name,
                    self.add_weight(
                        name=name,
                        shape=(self.num_units,),
                        initializer=self.initializer,
                    ),
                )
        if self.num_proj is not None:
            self.projection_kernel = self.add_weight(
                name="projection_kernel",
                shape=(self.num_units, self.num_proj),
                initializer=self.initializer,
            )
        self.built = True

    def call(self, inputs: Any, states: Any, training: Any = None) -> tuple:
        c_prev, m_prev = self._unpack(states)
        gates = tf.matmul(tf.concat([inputs, m_prev], 1), self.masked_kernel())
        gates = tf.nn.bias_add(gates, tf.convert_to_tensor(self.bias))
        i, j, f, o = tf.split(gates, 4, axis=1)
        sigmoid = tf.sigmoid
        if self.use_peepholes:
            w_f, w_i, w_o = (
                tf.convert_to_tensor(self.w_f_diag),
                tf.convert_to_tensor(self.w_i_diag),
                tf.convert_to_tensor(self.w_o_diag),
            )
            c = sigmoid(f + self.forget_bias + w_f * c_prev) * c_prev + sigmoid(
                i + w_i * c_prev
            ) * self.activation(j)
        else:
            c = sigmoid(f + self.forget_bias) * c_prev + sigmoid(
                i
            ) * self.activation(j)
        if self.cell_clip is not None:
            c = tf.clip_by_value(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            m = sigmoid(o + w_o * c) * self.activation(c)
        else:
            m = sigmoid(o) * self.activation(c)
        if self.num_proj is not None:
            m = tf.matmul(m, tf.convert_to_tensor(self.projection_kernel))
            if self.proj_clip is not None:
                m = tf.clip_by_value(m, -self.proj_clip, self.proj_clip)
        return m, self._pack(c, m, states)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "use_peepholes": self.use_peepholes,
            "cell_clip": self.cell_clip,
            "initializer": keras.initializers.serialize(self.initializer),
            "num_proj": self.num_proj,
            "proj_clip": self.proj_clip,
        }
