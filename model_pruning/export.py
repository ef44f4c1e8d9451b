"""Export a pruned model for serving: SavedModel, or sparse TFLite/LiteRT.

Both exporters strip a pruned model first (`strip_pruning`), so the files
hold plain weights with zeros where masked and no mask, threshold or step
variables. TFLite conversion goes through a SavedModel in a temporary
directory, as Keras' own LiteRT export does, with TFLite's builtin ops only.
"""

import os
import re
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model_pruning import accessors
from model_pruning import litert
from model_pruning.backends import TENSORFLOW_ONLY
from model_pruning.backends import check_backend
from model_pruning.prune import strip_pruning


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> int:
    """Exports `model` as a TensorFlow SavedModel for inference.

    A pruned model is stripped first, so the SavedModel serves the sparse
    weights without any pruning variables. Its `serve` endpoint takes the
    model's inputs and returns its outputs.

    Args:
        model: A Keras model, pruned or not.
        path: Directory to write the SavedModel to.

    Returns:
        The total size in bytes of the files written under `path`.

    Raises:
        ValueError: If `model` is not a Keras model.

    Example:

    ```python
    size = export_saved_model(pruned, "/tmp/pruned_saved_model")
    served = tf.saved_model.load("/tmp/pruned_saved_model")
    predictions = served.serve(x)
    ```
    """
    check_backend("export_saved_model", TENSORFLOW_ONLY)
    model = _stripped(model)
    model.export(str(path), format="tf_saved_model", verbose=False)
    return _directory_size(str(path))


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    sparse: bool = True,
    select_tf_ops: bool = False,
    quantize: str | None = None,
    representative_data: Any = None,
) -> int:
    """Converts `model` to a TFLite (LiteRT) flatbuffer and writes it.

    A pruned model is stripped first. With `sparse`, the converter runs with
    `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, which stores weights that are
    mostly zeros in a sparse format: the file shrinks and the outputs stay the
    same. Run the file with `run_tflite`.

    Whether a pruned weight also *runs* faster depends on its zeros: LiteRT
    runs a fully-connected weight with its sparse kernel only when the
    zeros come in blocks it supports (a `Dense` kernel pruned with
    `block_size=(4, 1)` for float32, `(16, 1)` for int8; see
    `PruneForLatencyOnLiteRT`). Any other pruned weight is stored sparse
    and rebuilt dense when the model loads (a `DENSIFY` op), or stored
    dense. A sparse export reads the written file (`inspect_tflite`) and
    warns with a `DensifiedWeightWarning` that names each pruned weight
    that will run at dense speed and what would make it sparse.

    Args:
        model: A Keras model, pruned or not.
        path: File to write, usually ending in `.tflite`. Missing parent
            directories are created.
        sparse: Whether to encode sparse weights. Defaults to `True`.
        select_tf_ops: Whether ops LiteRT has no builtin kernel for may run
            as TensorFlow ("Flex") ops. KerasHub's Gemma and Llama need it
            (their attention masks use a strided slice with a new axis). A
            runtime then needs the Flex delegate (on Android the
            `tensorflow-lite-select-tf-ops` dependency); TensorFlow 2.21's
            pip interpreter does not link it. Defaults to `False`.
        quantize: `None` for float32 weights, or `"int8"` for full-integer
            quantization: int8 weights and activations (per-channel weight
            scales), calibrated on `representative_data`; the file's input
            and output stay float32. Defaults to `None`.
        representative_data: With `quantize="int8"`, a batch of typical
            model inputs (an array whose first axis is the batch, at least
            one sample; a few hundred is typical) to calibrate the
            activation ranges. Must be `None` otherwise.

    Returns:
        The size in bytes of the written file.

    Raises:
        ValueError: If `model` is not a Keras model, `sparse` or
            `select_tf_ops` is not a bool, `quantize` is not `None` or
            `"int8"`, `representative_data` is missing, empty or given
            without `quantize="int8"`, or the model needs TF ops and
            `select_tf_ops` is `False` (nothing is written).

    Example:

    ```python
    size = export_tflite(pruned, "/tmp/pruned.tflite")
    predictions = run_tflite("/tmp/pruned.tflite", x)
    print(inspect_tflite("/tmp/pruned.tflite", pruned))
    ```
    """
    check_backend("export_tflite", TENSORFLOW_ONLY)
    for name, value in (("sparse", sparse), ("select_tf_ops", select_tf_ops)):
        if not isinstance(value, bool):
            raise ValueError(
                f"`{name}` must be a bool. Received: {name}={value!r}"
            )
    calibration = _calibration_batch(quantize, representative_data)
    stripped = _stripped(model)
    flatbuffer = _convert_to_tflite(
        stripped, sparse, select_tf_ops, calibration
    )
    path = str(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    if sparse:
        litert.warn_if_densified(litert.inspect_tflite(flatbuffer, model))
    return len(flatbuffer)


def run_tflite(path_or_bytes: str | os.PathLike | bytes, inputs: Any) -> Any:
    """Runs a TFLite model with one input and one output on a batch.

    Uses the LiteRT interpreter of the `ai-edge-litert` package when it is
    installed (`pip install model_pruning[litert]`), else TensorFlow's own
    `tf.lite.Interpreter`. The input is resized to the batch's shape.

    Args:
        path_or_bytes: Path of a `.tflite` file, or the flatbuffer's bytes.
        inputs: The model's input, an array-like batch.

    Returns:
        The model's output as a NumPy array.

    Raises:
        ValueError: If the model does not have exactly one input and one
            output.
        ImportError: If no TFLite interpreter is available.

    Example:

    ```python
    predictions = run_tflite("/tmp/pruned.tflite", x)
    ```
    """
    interpreter = _interpreter(path_or_bytes)
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    if len(input_details) != 1 or len(output_details) != 1:
        raise ValueError(
            "run_tflite supports models with one input and one output. "
            f"Received: a model with {len(input_details)} inputs and "
            f"{len(output_details)} outputs"
        )
    index = input_details[0]["index"]
    batch = np.asarray(inputs, dtype=input_details[0]["dtype"])
    interpreter.resize_tensor_input(index, batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, batch)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(output_details[0]["index"]))


def _stripped(model: Any) -> keras.Model:
    """Returns `model` with its masks folded in, or as it is if unpruned."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Keras model. Received: model={model!r}"
        )
    if accessors.pruned_layers(model):
        return strip_pruning(model)
    return model


_QUANTIZE_OPTIONS = (None, "int8")


def _calibration_batch(
    quantize: Any, representative_data: Any
) -> np.ndarray | None:
    """Checks `quantize` and returns the calibration batch it needs."""
    if quantize not in _QUANTIZE_OPTIONS:
        raise ValueError(
            f"`quantize` must be one of {_QUANTIZE_OPTIONS}. "
            f"Received: quantize={quantize!r}"
        )
    if quantize is None:
        if representative_data is not None:
            raise ValueError(
                "`representative_data` calibrates int8 quantization; pass "
                "it with `quantize='int8'`. Received: quantize=None and "
                "representative_data of type "
                f"{type(representative_data).__name__}"
            )
        return None
    if representative_data is None:
        raise ValueError(
            "`quantize='int8'` needs `representative_data`, a batch of "
            "typical model inputs to calibrate activation ranges. "
            "Received: representative_data=None"
        )
    batch = np.asarray(representative_data, dtype=np.float32)
    if batch.ndim == 0 or batch.shape[0] == 0:
        raise ValueError(
            "`representative_data` must be a batch with at least one "
            f"sample. Received: representative_data of shape {batch.shape}"
        )
    return batch


def _convert_to_tflite(
    model: keras.Model,
    sparse: bool,
    select_tf_ops: bool = False,
    calibration: np.ndarray | None = None,
) -> bytes:
    with tempfile.TemporaryDirectory() as saved_model_dir:
        model.export(saved_model_dir, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        optimizations = []
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        if calibration is not None:
            optimizations.append(tf.lite.Optimize.DEFAULT)
            converter.representative_dataset = lambda: (
                [sample[None]] for sample in calibration
            )
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        converter.optimizations = optimizations
        builtins = (
            tf.lite.OpsSet.TFLITE_BUILTINS
            if calibration is None
            else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        )
        converter.target_spec.supported_ops = [builtins] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if select_tf_ops else []
        )
        try:
            return converter.convert()
        # TF 2.21 has no public name for the converter's error class.
        except Exception as error:
            needed = _flex_ops_needed(str(error))
            if select_tf_ops or not needed:
                raise
            raise ValueError(
                f"Model {model.name!r} uses TensorFlow ops that LiteRT has no "
                f"builtin kernel for: {', '.join(needed)}. Pass "
                "`select_tf_ops=True` to export them as TF (Flex) ops; the "
                "runtime then needs the Flex delegate. "
                "Received: select_tf_ops=False"
            ) from None


def _flex_ops_needed(message: str) -> list[str]:
    """The TF ops a converter error says need TF Select (Flex), if any."""
    listed = re.search(r"TF Select ops: ([\w, ]+)", message)
    names = (
        set(listed.group(1).replace(" ", "").split(",")) if listed else set()
    )
    names.update(re.findall(r"'tf\.(\w+)' op is neither a custom op", message))
    return sorted(name for name in names if name)


def _directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _interpreter(path_or_bytes: Any) -> Any:
    """Returns an interpreter for a `.tflite` path or flatbuffer bytes."""
    interpreter_class = _interpreter_class()
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return interpreter_class(model_content=bytes(path_or_bytes))
    return interpreter_class(model_path=os.fspath(path_or_bytes))


def _interpreter_class() -> Callable[..., Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    interpreter_class = getattr(tf.lite, "Interpreter", None)
    if interpreter_class is None:
        raise ImportError(
            "Running a TFLite model needs the `ai-edge-litert` package: "
            "pip install model_pruning[litert]"
        )

    def make(**kwargs: Any) -> Any:
        # TF 2.21 still ships tf.lite.Interpreter but warns that it is
        # deprecated in favour of ai-edge-litert.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*tf.lite.Interpreter is deprecated"
            )
            return interpreter_class(**kwargs)

    return make
