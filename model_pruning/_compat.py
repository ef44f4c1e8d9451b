"""Keras (and TensorFlow) internals this library reads or sets, gathered
here: no other module imports `keras.src` or touches a private Keras
attribute.

Each function names the private attribute it reads and the Keras version it
was written against (3.15); `tests/test_compat.py` fails loudly, naming the
installed Keras, when a release changes one of them.
"""

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import keras


def node_making(tensor: Any) -> tuple[Any, Any]:
    """Returns the operation and node (call) that made a symbolic tensor.

    Keras keeps this only in private attributes: the tensor's
    `_keras_history` and the operation's `_inbound_nodes` (Keras 3.15).
    """
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def set_call_signature(layer: Any, signature: inspect.Signature) -> None:
    """Makes Keras bind `layer`'s call arguments to `signature`.

    `Layer.__init__` reads `inspect.signature(self.call)` into private
    attributes (`_call_signature`, `_call_has_training_arg`,
    `_call_has_mask_arg`, `_call_has_context_arg`) and the public
    `call_signature_parameters` (Keras 3.15); `Layer.__call__` binds the
    arguments it is given to them.
    """
    names = list(signature.parameters)
    layer._call_signature = signature
    layer.call_signature_parameters = names
    layer._call_has_training_arg = "training" in names
    layer._call_has_mask_arg = "mask" in names
    layer._call_has_context_arg = {
        arg: arg in names for arg in layer._call_context_args
    }


def tflite_schema() -> Any:
    """Returns the Python classes of LiteRT's flatbuffer schema.

    TensorFlow ships them as the private module
    `tensorflow.lite.python.schema_py_generated` (TF 2.21); `litert.py`
    reads `.tflite` files through its object API (`ModelT`,
    `BuiltinOperator`, `TensorType`, sparsity parameters).
    """
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def functional_class() -> type:
    """Keras' `Functional` model class: `keras.Model(inputs, outputs)`
    makes one, and no public name exports it (`keras.src.models.Functional`,
    Keras 3.15)."""
    from keras.src.models import Functional

    return Functional


def conv_lstm_cell_class() -> type:
    """The cell class of `ConvLSTM1D/2D/3D`, which Keras does not export
    (`keras.src.layers.rnn.conv_lstm.ConvLSTMCell`, Keras 3.15)."""
    from keras.src.layers.rnn.conv_lstm import ConvLSTMCell

    return ConvLSTMCell


@contextlib.contextmanager
def autocast_off() -> Iterator[None]:
    """Turns Keras' autocasting of variables off, so that a float32
    variable reads as float32 under a mixed-precision policy
    (`keras.src.backend.AutocastScope(None)`, Keras 3.15)."""
    from keras.src.backend import AutocastScope

    with AutocastScope(None):
        yield


@contextlib.contextmanager
def uncompiled(model: keras.Model) -> Iterator[None]:
    """Makes `model` read as not compiled inside the block, then restores
    it: `keras.models.clone_model` copies a compiled model's compile
    arguments from its private state, which a pruned copy must not take
    (it sets the public `compiled` flag, Keras 3.15)."""
    compiled = model.compiled
    model.compiled = False
    try:
        yield
    finally:
        model.compiled = compiled


def untrack(layer: keras.layers.Layer, sublayer: Any) -> None:
    """Makes `layer` forget a sublayer attribute's old value before it is
    replaced (`Layer._tracker.untrack`, Keras 3.15: no public way)."""
    layer._tracker.untrack(sublayer)


def copy_build_shapes(source: keras.layers.Layer, copy: Any) -> None:
    """Gives `copy` the build shapes of `source`, which a `.keras` file
    stores (`Layer._build_shapes_dict`, Keras 3.15)."""
    copy._build_shapes_dict = source._build_shapes_dict


def in_stateless_scope() -> bool:
    """Whether a `keras.StatelessScope` is active: JAX's `fit` steps, any
    backend's `stateless_call` (`keras.src.backend.in_stateless_scope`,
    Keras 3.15)."""
    from keras.src.backend import in_stateless_scope as active

    return active()


def stateless_value(variable: Any) -> tuple[bool, Any]:
    """`(in_scope, value)`: whether a `keras.StatelessScope` is active, and
    the value it maps `variable` to (`None` when it maps none). JAX's
    `optimizer.stateless_apply` maps only trainable and optimizer variables
    (`keras.src.backend.get_stateless_scope`, Keras 3.15)."""
    from keras.src.backend import get_stateless_scope

    scope = get_stateless_scope()
    if scope is None:
        return False, None
    return True, scope.get_current_value(variable)


def add_weight_with_layout(
    layer: keras.layers.Layer, layout: Any, **kwargs: Any
) -> Any:
    """`layer.add_weight(**kwargs)`, the variable laid out by `layout`.

    `Layer.add_weight` takes no layout: the variable gets the active
    distribution's layout for its own path (Keras 3.15). Given a `layout`
    (a `keras.distribution.TensorLayout` or a JAX sharding), the variable
    is made as `add_weight` makes it, a `keras.Variable` (whose `layout`
    argument is public) in the layer's name scope, so it is created on
    its devices, and the layer tracks it with the private
    `Layer._track_variable` (Keras 3.15). With `layout=None`, plain
    `add_weight`.

    Args:
        layer: The layer that owns the variable.
        layout: Its layout, or `None`.
        **kwargs: `name`, `shape`, `dtype`, `initializer`, `trainable`.
    """
    if layout is None:
        return layer.add_weight(**kwargs)
    with keras.name_scope(layer.name, caller=layer):
        variable = keras.Variable(layout=layout, **kwargs)
    layer._track_variable(variable)
    return variable
