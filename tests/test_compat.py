"""The Keras internals `model_pruning._compat` reads still work.

Each test names the installed Keras version when it fails, so a Keras
release that moves one of them is caught here, not deep in a user's run.
"""

import keras
import tensorflow as tf

from model_pruning import _compat


def test_node_making_finds_the_layer_and_call_of_a_symbolic_tensor():
    inputs = keras.Input((4,), name="x")
    dense = keras.layers.Dense(4, name="d")
    first = dense(inputs)
    second = dense(first)
    try:
        layer, node = _compat.node_making(second)
        input_layer, _ = _compat.node_making(inputs)
    except (AttributeError, IndexError, TypeError, ValueError) as error:
        raise AssertionError(
            "Keras changed `KerasTensor._keras_history` or "
            f"`Operation._inbound_nodes` (Keras {keras.__version__}): {error}"
        ) from error
    assert layer is dense, keras.__version__
    assert node.input_tensors[0] is first, keras.__version__
    assert input_layer.name == "x", keras.__version__


def test_set_call_signature_makes_keras_bind_keywords_to_it():
    import inspect

    class Forward(keras.layers.Layer):
        def call(self, *args, **kwargs):
            return args[0] if args else kwargs["query"]

    def reference(query, value=None, training=None):
        return query

    layer = Forward()
    _compat.set_call_signature(layer, inspect.signature(reference))
    x = keras.ops.ones((2, 3))
    try:
        out = layer(query=x, value=x)
    except (TypeError, ValueError) as error:
        raise AssertionError(
            "Keras no longer binds call arguments to `_call_signature` "
            f"(Keras {keras.__version__}): {error}"
        ) from error
    assert out.shape == (2, 3), keras.__version__
    assert layer.call_signature_parameters == ["query", "value", "training"]


def test_tflite_schema_reads_densify_and_sparsity():
    schema = _compat.tflite_schema()
    try:
        densify = schema.BuiltinOperator.DENSIFY
        fields = schema.SparsityParametersT().__dict__
    except AttributeError as error:
        raise AssertionError(
            "TensorFlow moved `tensorflow.lite.python.schema_py_generated` "
            f"(TF {tf.__version__}): {error}"
        ) from error
    assert densify == 124, tf.__version__
    assert {"traversalOrder", "blockMap", "dimMetadata"} <= set(fields)
