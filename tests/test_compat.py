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


def _fails_loudly(what):
    """A context that turns an internal's failure into one naming Keras."""
    import contextlib

    @contextlib.contextmanager
    def context():
        try:
            yield
        except (AttributeError, ImportError, TypeError, KeyError) as error:
            raise AssertionError(
                f"Keras changed {what} (Keras {keras.__version__}): {error}"
            ) from error

    return context()


def test_functional_class_is_what_a_graph_model_is():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with _fails_loudly("`keras.src.models.Functional`"):
        functional = _compat.functional_class()
    assert type(model) is functional, keras.__version__


def test_conv_lstm_cell_class_is_the_cell_of_conv_lstm_layers():
    with _fails_loudly("`keras.src.layers.rnn.conv_lstm.ConvLSTMCell`"):
        cell_class = _compat.conv_lstm_cell_class()
    layer = keras.layers.ConvLSTM2D(2, 3, name="compat_conv_lstm")
    assert isinstance(layer.cell, cell_class), keras.__version__


def test_autocast_off_reads_float32_variables_under_mixed_precision():
    seen = {}

    class Probe(keras.layers.Layer):
        def build(self, input_shape):
            self.v = self.add_weight(shape=(2,), initializer="ones")

        def call(self, inputs):
            seen["autocast"] = keras.ops.convert_to_tensor(self.v).dtype
            with _compat.autocast_off():
                seen["off"] = keras.ops.convert_to_tensor(self.v).dtype
            return inputs

    with _fails_loudly("`keras.src.backend.AutocastScope`"):
        Probe(dtype="mixed_float16", name="compat_probe")(
            keras.ops.ones((1, 2))
        )
    assert seen == {"autocast": "float16", "off": "float32"}, (
        keras.__version__,
        seen,
    )


def test_uncompiled_hides_and_restores_the_compiled_flag():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with _compat.uncompiled(model):
        assert not model.compiled, keras.__version__
    assert model.compiled, keras.__version__


def test_untrack_forgets_a_replaced_sublayer():
    class Holder(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(1, name="compat_old")

        def call(self, inputs):
            return self.inner(inputs)

    holder = Holder(name="compat_holder")
    old = holder.inner
    with _fails_loudly("`Layer._tracker.untrack`"):
        _compat.untrack(holder, old)
    holder.inner = keras.layers.Dense(1, name="compat_new")
    names = [layer.name for layer in holder.layers]
    assert names == ["compat_new"], (keras.__version__, names)


def test_copy_build_shapes_gives_the_copy_the_build_config():
    source = keras.layers.Dense(2, name="compat_source")
    source.build((None, 3))
    copy = keras.layers.Dense(2, name="compat_copy")
    with _fails_loudly("`Layer._build_shapes_dict`"):
        _compat.copy_build_shapes(source, copy)
    assert copy.get_build_config() == source.get_build_config(), (
        keras.__version__
    )


def test_stateless_scope_reads_what_the_scope_maps():
    mapped = keras.Variable([1.0, 2.0], name="mapped")
    unmapped = keras.Variable([3.0], name="unmapped")
    with _fails_loudly("`keras.src.backend.in_stateless_scope`"):
        outside = (
            _compat.in_stateless_scope(),
            _compat.stateless_value(mapped),
        )
    with keras.StatelessScope(state_mapping=[(mapped, mapped.value * 2)]):
        with _fails_loudly("`keras.src.backend.get_stateless_scope`"):
            inside = _compat.in_stateless_scope()
            in_scope, value = _compat.stateless_value(mapped)
            missing = _compat.stateless_value(unmapped)
    assert outside == (False, (False, None)), keras.__version__
    assert inside and in_scope, keras.__version__
    assert keras.ops.convert_to_numpy(value).tolist() == [2.0, 4.0]
    assert missing == (True, None), keras.__version__


def test_add_weight_with_layout_tracks_a_variable_with_that_layout():
    mesh = keras.distribution.DeviceMesh((1,), ("batch",), ["cpu:0"])
    layout = keras.distribution.TensorLayout((None,), mesh)
    made = {}

    class Holder(keras.layers.Layer):
        def build(self, input_shape):
            self.add_weight(shape=(1,), name="first")
            with _fails_loudly("`Layer._track_variable`"):
                made["laid"] = _compat.add_weight_with_layout(
                    self,
                    layout,
                    name="laid",
                    shape=(3,),
                    dtype="float32",
                    initializer="ones",
                    trainable=False,
                )
            made["plain"] = _compat.add_weight_with_layout(
                self,
                None,
                name="plain",
                shape=(),
                dtype="int32",
                initializer="zeros",
                trainable=False,
            )

        def call(self, inputs):
            return inputs

    holder = Holder(name="compat_layout")
    holder.build((None, 3))
    paths = [v.path for v in holder.weights]
    assert paths == [
        "compat_layout/first",
        "compat_layout/laid",
        "compat_layout/plain",
    ], (keras.__version__, paths)
    laid, plain = made["laid"], made["plain"]
    assert [id(v) for v in holder.non_trainable_weights] == [
        id(laid),
        id(plain),
    ], keras.__version__
    assert keras.ops.convert_to_numpy(laid).tolist() == [1.0, 1.0, 1.0]
    assert laid.dtype == "float32" and plain.dtype == "int32"
    # What a distribution reads as the variable's layout.
    distribution = keras.distribution.DataParallel(device_mesh=mesh)
    assert distribution.get_variable_layout(laid) is layout, keras.__version__
    assert distribution.get_variable_layout(plain) is not layout
