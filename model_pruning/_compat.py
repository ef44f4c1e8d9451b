"""Keras (and TensorFlow) internals this library reads or sets, gathered
here (more to move from other modules in issue 17).

Each function names the private attribute it reads and the Keras version it
was written against (3.15); `tests/test_compat.py` fails loudly, naming the
installed Keras, when a release changes one of them.
"""

import inspect
from typing import Any


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
