"""How LiteRT (TFLite) will run a pruned model's weights, read from the file.

`inspect_tflite` finds each pruned weight of a model in a written `.tflite`
flatbuffer and says what LiteRT does with it:

- `"sparse"`: stored with sparsity parameters and read as such by its op,
  so the op's sparse kernel runs (LiteRT's `FULLY_CONNECTED` has one for
  float32 weights in 1x4 blocks of its `[out, in]` layout and int8 weights
  in 1x16 blocks: a Keras `Dense` kernel pruned with `block_size=(4, 1)` or
  `(16, 1)`);
- `"densified"`: stored sparse, but a `DENSIFY` op rebuilds it dense when
  the model loads: a smaller file, dense speed;
- `"dense"`: stored dense;
- `"missing"`: not found as one tensor (the converter split it, or
  folded it with other constants into values that keep neither its sums
  nor its zeros).

The converter names tensors after TensorFlow's graph, not the Keras layers,
so weights are found by value: every constant tensor of the file is decoded
(sparse format, int8 scales) and matched to the weight with the same number
of elements and the nearest sums of magnitudes and of squares, which do not
depend on layout (`[out, in]` in the file, `[in, out]` in Keras). A
float32 weight the converter scaled (batch normalization folded into a
convolution kernel) keeps its zeros: when no tensor matches by value, the
unused tensor with the same zeros in the same places (up to the order of
axes) does.
"""

import dataclasses
import itertools
import math
import os
import warnings
from typing import Any

import keras
import numpy as np

from model_pruning import _compat
from model_pruning import accessors
from model_pruning import prunable

STORAGES = ("sparse", "densified", "dense", "missing")
"""The values of `LiteRTWeight.storage`."""

# Block height, in Keras' kernel layout `[in, out]`, that LiteRT's sparse
# FULLY_CONNECTED kernel runs: 1x4 blocks of `[out, in]` for float32, 1x16
# for int8.
FLOAT32_BLOCK_HEIGHT = 4
INT8_BLOCK_HEIGHT = 16

# Relative distance of the magnitude sums below which a file tensor is the
# weight: float32 sums (in float64) differ only by summation order, int8
# ones by the rounding of each value to its channel's scale.
_MATCH_TOLERANCE = {"float": 1e-9, "int8": 3e-2}
_DENSE_FORMAT = 0


class DensifiedWeightWarning(UserWarning):
    """A pruned weight that LiteRT will run at dense speed."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LiteRTWeight:
    """One pruned weight of a model, as a `.tflite` file holds it.

    Attributes:
        layer: Name of the layer the weight belongs to (the pruned layer).
        weight: Its path inside that layer, e.g. `"kernel"`.
        layer_class: Class name of the layer that owns the variable.
        shape: The weight's shape in Keras.
        sparsity: Fraction of zeros in the weight.
        storage: One of `STORAGES`.
        op: The op that computes with it (`"FULLY_CONNECTED"`), or `None`
            when `storage` is `"missing"`.
        dtype: The file's type for it (`"float32"`, `"int8"`, ...), or
            `None` when missing.
        block: Block shape of the file's sparse encoding, in the file's
            layout (`(1, 4)` for 1x4 blocks of `[out, in]`); `None` when it
            is stored dense or missing, `(1, 1)` for no blocks.
        fix: What would make it run sparse; empty when it does.
    """

    layer: str
    weight: str
    layer_class: str
    shape: tuple[int, ...]
    sparsity: float
    storage: str
    op: str | None
    dtype: str | None
    block: tuple[int, ...] | None
    fix: str

    @property
    def name(self) -> str:
        """`<layer>/<weight>`, as `PrunedWeight.name`."""
        return f"{self.layer}/{self.weight}"


@dataclasses.dataclass(frozen=True)
class LiteRTReport:
    """Per pruned weight, how LiteRT will run it (see `inspect_tflite`).

    Attributes:
        weights: One `LiteRTWeight` per pruned weight, in the model's order.
    """

    weights: tuple[LiteRTWeight, ...]

    def with_storage(self, storage: str) -> tuple[LiteRTWeight, ...]:
        """The weights whose `storage` is `storage` (one of `STORAGES`)."""
        if storage not in STORAGES:
            raise ValueError(
                f"`storage` must be one of {STORAGES}. "
                f"Received: storage={storage!r}"
            )
        return tuple(w for w in self.weights if w.storage == storage)

    @property
    def sparse(self) -> tuple[LiteRTWeight, ...]:
        """Weights that run on a sparse kernel."""
        return self.with_storage("sparse")

    @property
    def densified(self) -> tuple[LiteRTWeight, ...]:
        """Weights stored sparse and rebuilt dense at load time."""
        return self.with_storage("densified")

    def as_dict(self) -> dict[str, Any]:
        return {"weights": [dataclasses.asdict(w) for w in self.weights]}

    def __str__(self) -> str:
        header = ["weight", "class", "shape", "sparsity", "file", "LiteRT"]
        rows = [
            [
                w.name,
                w.layer_class,
                "x".join(map(str, w.shape)),
                f"{w.sparsity:.1%}",
                _file_cell(w),
                _storage_cell(w),
            ]
            for w in self.weights
        ]
        widths = [
            max(len(row[i]) for row in [header, *rows])
            for i in range(len(header))
        ]
        lines = [
            "  ".join(
                cell.ljust(width)
                for cell, width in zip(row, widths, strict=True)
            )
            for row in [header, *rows]
        ]
        counts = ", ".join(
            f"{len(self.with_storage(s))} {s}"
            for s in STORAGES
            if self.with_storage(s)
        )
        lines.append(f"{len(self.weights)} pruned weights: {counts or 'none'}")
        lines.extend(f"  {w.name}: {w.fix}" for w in self.weights if w.fix)
        return "\n".join(lines)


def inspect_tflite(
    path_or_bytes: str | os.PathLike | bytes, model: keras.Model
) -> LiteRTReport:
    """Reads a `.tflite` file and says how LiteRT runs each pruned weight.

    Args:
        path_or_bytes: Path of a `.tflite` file, or the flatbuffer's bytes,
            as written by `export_tflite` (or any converter) from `model`.
        model: The model the file was converted from: pruned (its masked
            weights are reported) or stripped (its weights of rank 2 or
            more that hold zeros are).

    Returns:
        A `LiteRTReport`.

    Raises:
        ValueError: If `model` is not a Keras model, or the bytes are not a
            TFLite flatbuffer.

    Example:

    ```python
    export_tflite(pruned, "/tmp/pruned.tflite")
    report = inspect_tflite("/tmp/pruned.tflite", pruned)
    print(report)
    assert not report.densified
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Keras model. Received: model={model!r}"
        )
    flatbuffer = _read(path_or_bytes)
    file_tensors = _constant_tensors(flatbuffer)
    targets = _reported_weights(model)
    matches = _match(targets, file_tensors)
    owners = prunable.owners(model)
    weights = []
    for index, (layer, path, array, variable) in enumerate(targets):
        owner = owners.get(id(variable))
        found = matches.get(index)
        storage = "missing" if found is None else found.storage
        weights.append(
            LiteRTWeight(
                layer=layer,
                weight=path,
                layer_class=type(owner).__name__ if owner else "",
                shape=tuple(array.shape),
                sparsity=float(np.mean(array == 0)) if array.size else 0.0,
                storage=storage,
                op=None if found is None else found.op,
                dtype=None if found is None else found.dtype,
                block=None if found is None else found.block,
                fix=_fix(owner, variable, array, storage, found),
            )
        )
    return LiteRTReport(tuple(weights))


def warn_if_densified(report: LiteRTReport) -> None:
    """Warns, naming each weight and its fix, when pruned weights will run
    at dense speed (densified, or stored dense)."""
    slow = [w for w in report.weights if w.storage in ("densified", "dense")]
    if not slow:
        return
    details = "; ".join(f"{w.name} ({w.storage}): {w.fix}" for w in slow)
    if any(w.storage == "densified" and w.dtype == "int8" for w in slow):
        details += (
            ". Note: ai-edge-litert 2.3.0's default XNNPACK delegate fails "
            "to prepare int8 ops behind DENSIFY (TensorFlow's "
            "tf.lite.Interpreter runs them); export such a model with "
            "sparse=False"
        )
    warnings.warn(
        f"{len(slow)} of {len(report.weights)} pruned weights will run at "
        f"dense speed on LiteRT: {details}",
        DensifiedWeightWarning,
        stacklevel=3,
    )


@dataclasses.dataclass(frozen=True)
class _FileTensor:
    """A constant tensor of the flatbuffer, decoded, and how it is used."""

    size: int
    sums: tuple[float, float]
    # Where the values are 0, in the file's layout.
    zeros: np.ndarray = dataclasses.field(compare=False)
    storage: str
    op: str | None
    dtype: str
    block: tuple[int, ...] | None


def _read(path_or_bytes: Any) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return bytes(path_or_bytes)
    with open(os.fspath(path_or_bytes), "rb") as f:
        return f.read()


def _constant_tensors(flatbuffer: bytes) -> list[_FileTensor]:
    """Every constant tensor of rank 2 or more in the file, decoded."""
    schema = _compat.tflite_schema()
    try:
        model = schema.ModelT.InitFromObj(
            schema.Model.GetRootAsModel(flatbuffer, 0)
        )
    except Exception as error:  # flatbuffers raises plain errors
        raise ValueError(
            "`path_or_bytes` is not a TFLite flatbuffer. Received: "
            f"{len(flatbuffer)} bytes starting {flatbuffer[:8]!r} ({error})"
        ) from None
    op_names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    type_names = {
        value: name.lower()
        for name, value in vars(schema.TensorType).items()
        if not name.startswith("_")
    }
    found = []
    for subgraph in model.subgraphs or []:
        ops = []
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            ops.append((op_names.get(builtin, str(builtin)), op))
        consumers: dict[int, list[tuple[str, Any]]] = {}
        for name, op in ops:
            for index in _indices(op.inputs):
                consumers.setdefault(index, []).append((name, op))
        for index, tensor in enumerate(subgraph.tensors or []):
            buffer = model.buffers[tensor.buffer]
            shape = _indices(tensor.shape)
            if buffer.data is None or len(shape) < 2:
                continue
            dtype = type_names.get(tensor.type, str(tensor.type))
            values = _decoded(tensor, np.asarray(buffer.data), shape, dtype)
            if values is None:
                continue
            storage, op = _use(index, tensor, consumers)
            found.append(
                _FileTensor(
                    size=values.size,
                    sums=_sums(values),
                    zeros=values == 0,
                    storage=storage,
                    op=op,
                    dtype=dtype,
                    block=_block(tensor, shape),
                )
            )
    return found


def _indices(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


_NUMPY_TYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
}


def _decoded(
    tensor: Any, raw: np.ndarray, shape: list[int], dtype: str
) -> np.ndarray | None:
    """The tensor's values as a dense float64 array (dequantized), or
    `None` for types no Keras weight converts to."""
    numpy_type = _NUMPY_TYPES.get(dtype)
    if numpy_type is None:
        return None
    values = np.frombuffer(raw.astype(np.uint8).tobytes(), numpy_type)
    values = values.astype(np.float64)
    if tensor.sparsity is None:
        dense = values.reshape(shape)
    else:
        dense = _densify(tensor.sparsity, values, shape)
    quantization = tensor.quantization
    if (
        dtype == "int8"
        and quantization is not None
        and (quantization.scale is not None and len(quantization.scale))
    ):
        scale = np.asarray(quantization.scale, np.float64)
        zero_point = np.asarray(
            quantization.zeroPoint
            if quantization.zeroPoint is not None
            else [0],
            np.float64,
        )
        if scale.size > 1:
            axis = quantization.quantizedDimension
            view = [1] * len(shape)
            view[axis] = scale.size
            scale = scale.reshape(view)
            zero_point = np.broadcast_to(zero_point, scale.size).reshape(view)
        dense = (dense - zero_point) * scale
    return dense


def _densify(sparsity: Any, values: np.ndarray, shape: list[int]) -> Any:
    """Decodes TFLite's sparse tensor format (traversal order, block map,
    one dense or CSR dimension per traversed dimension) into a dense array."""
    order = _indices(sparsity.traversalOrder)
    block_map = _indices(sparsity.blockMap)
    metadata = sparsity.dimMetadata
    rank = len(shape)
    positions = np.zeros(1, np.int64)
    coords = np.zeros((1, len(order)), np.int64)
    for level, dimension in enumerate(order):
        meta = metadata[level]
        if meta.format == _DENSE_FORMAT:
            size = int(meta.denseSize)
            count = positions.size
            positions = (positions[:, None] * size + np.arange(size)).ravel()
            coords = np.repeat(coords, size, axis=0)
            coords[:, dimension] = np.tile(np.arange(size), count)
        else:
            segments = np.asarray(meta.arraySegments.values, np.int64)
            indices = np.asarray(meta.arrayIndices.values, np.int64)
            starts = segments[positions]
            counts = segments[positions + 1] - starts
            coords = np.repeat(coords, counts, axis=0)
            offsets = np.arange(counts.sum()) - np.repeat(
                np.cumsum(counts) - counts, counts
            )
            positions = np.repeat(starts, counts) + offsets
            coords[:, dimension] = indices[positions]
    dense = np.zeros(shape, np.float64)
    index = []
    for dimension in range(rank):
        if dimension in block_map:
            block_level = rank + block_map.index(dimension)
            block_size = int(metadata[order.index(block_level)].denseSize)
            index.append(
                coords[:, dimension] * block_size + coords[:, block_level]
            )
        else:
            index.append(coords[:, dimension])
    dense[tuple(index)] = values[positions]
    return dense


def _block(tensor: Any, shape: list[int]) -> tuple[int, ...] | None:
    """Block shape of a sparse tensor in the file's layout."""
    if tensor.sparsity is None:
        return None
    order = _indices(tensor.sparsity.traversalOrder)
    block_map = _indices(tensor.sparsity.blockMap)
    block = [1] * len(shape)
    for j, dimension in enumerate(block_map):
        level = order.index(len(shape) + j)
        block[dimension] = int(tensor.sparsity.dimMetadata[level].denseSize)
    return tuple(block)


def _use(
    index: int, tensor: Any, consumers: dict[int, list[tuple[str, Any]]]
) -> tuple[str, str | None]:
    """How the file uses a constant: storage and the op computing with it."""
    densified = False
    current = index
    for _ in range(4):  # through DENSIFY and DEQUANTIZE, at most twice each
        users = consumers.get(current, [])
        if not users:
            return _storage(tensor, densified), None
        name, op = users[0]
        if name not in ("DENSIFY", "DEQUANTIZE"):
            return _storage(tensor, densified), name
        densified = densified or name == "DENSIFY"
        current = _indices(op.outputs)[0]
    return _storage(tensor, densified), None


def _storage(tensor: Any, densified: bool) -> str:
    if densified:
        return "densified"
    return "dense" if tensor.sparsity is None else "sparse"


def _sums(values: np.ndarray) -> tuple[float, float]:
    return float(np.abs(values).sum()), float(math.sqrt((values**2).sum()))


def _reported_weights(
    model: keras.Model,
) -> list[tuple[str, str, np.ndarray, Any]]:
    """`(layer, path, masked values, variable)` of each weight to report."""
    wrappers = accessors.pruned_layers(model)
    if wrappers:
        reported = []
        for wrapper in wrappers:
            if not wrapper.built:
                continue
            prefix = f"{wrapper.layer.name}/"
            for entry in wrapper.pruned_weights:
                values = np.asarray(
                    keras.ops.convert_to_numpy(entry.weight)
                ) * np.asarray(keras.ops.convert_to_numpy(entry.mask))
                path = entry.name.removeprefix(prefix)
                reported.append(
                    (wrapper.layer.name, path, values, entry.weight)
                )
        return reported
    reported = []
    for variable in model.weights:
        values = np.asarray(keras.ops.convert_to_numpy(variable))
        if values.ndim < 2 or not np.issubdtype(values.dtype, np.floating):
            continue
        if np.any(values == 0):
            layer, _, path = variable.path.partition("/")
            reported.append((layer, path or variable.name, values, variable))
    return reported


def _match(
    targets: list[tuple[str, str, np.ndarray, Any]],
    tensors: list[_FileTensor],
) -> dict[int, _FileTensor]:
    """Pairs each weight with the nearest unused file tensor of its size."""
    pairs = []
    for t_index, (_, _, array, _) in enumerate(targets):
        wanted = _sums(array.astype(np.float64))
        for f_index, tensor in enumerate(tensors):
            if tensor.size != array.size:
                continue
            distance = max(
                abs(a - b) / max(abs(b), 1e-12)
                for a, b in zip(tensor.sums, wanted, strict=True)
            )
            tolerance = _MATCH_TOLERANCE[
                "int8" if tensor.dtype == "int8" else "float"
            ]
            if distance <= tolerance:
                pairs.append((distance, t_index, f_index))
    matches: dict[int, _FileTensor] = {}
    used: set[int] = set()
    for _, t_index, f_index in sorted(pairs):
        if t_index not in matches and f_index not in used:
            matches[t_index] = tensors[f_index]
            used.add(f_index)
    # Scaled by the converter (a folded batch normalization): same zeros.
    for t_index, (_, _, array, _) in enumerate(targets):
        if t_index in matches or not np.issubdtype(array.dtype, np.floating):
            continue
        zeros = array == 0
        if not zeros.any():
            continue
        for f_index, tensor in enumerate(tensors):
            if (
                f_index not in used
                and tensor.dtype != "int8"
                and _same_zeros(zeros, tensor.zeros)
            ):
                matches[t_index] = tensor
                used.add(f_index)
                break
    return matches


def _same_zeros(keras_zeros: np.ndarray, file_zeros: np.ndarray) -> bool:
    """Whether two zero patterns are one, up to the order of axes (the file
    holds `[out, h, w, in]` for Keras' `[h, w, in, out]`) and axes of 1."""
    if keras_zeros.size != file_zeros.size:
        return False
    if np.count_nonzero(keras_zeros) != np.count_nonzero(file_zeros):
        return False
    ours = np.squeeze(keras_zeros)
    theirs = np.squeeze(file_zeros)
    if ours.ndim != theirs.ndim:
        return False
    return any(
        np.array_equal(ours.transpose(order), theirs)
        for order in itertools.permutations(range(ours.ndim))
        if tuple(ours.shape[a] for a in order) == theirs.shape
    )


def _fix(
    owner: Any,
    variable: Any,
    array: np.ndarray,
    storage: str,
    found: _FileTensor | None,
) -> str:
    """What would make a weight run on LiteRT's sparse kernel."""
    if storage == "sparse":
        return ""
    int8 = found is not None and found.dtype == "int8"
    height = INT8_BLOCK_HEIGHT if int8 else FLOAT32_BLOCK_HEIGHT
    kind = "int8" if int8 else "float32"
    if storage == "missing":
        return (
            "not found as one tensor in the file (the converter split or "
            "folded it); LiteRT has no sparse kernel for it"
        )
    if fully_connected_rows(owner, variable) is not None:
        return (
            f"prune it with block_size=({height}, 1) or "
            f"pruning_policy=PruneForLatencyOnLiteRT(): LiteRT's sparse "
            f"fully-connected kernel runs {kind} weights in blocks of "
            f"{height} inputs of one output"
        )
    if isinstance(owner, keras.layers.EinsumDense):
        return (
            f"its rank-{array.ndim} kernel's equation {owner.equation!r} "
            "does not sum over its leading axes, so model_pruning cannot "
            "tile it in the blocks LiteRT's sparse kernel needs"
        )
    if isinstance(owner, keras.layers.Embedding):
        return (
            "LiteRT stores lookup tables dense (GATHER has no sparse "
            "input); pruning it does not shrink the file or the time"
        )
    if "Conv" in type(owner).__name__:
        return (
            "LiteRT's builtin convolution kernels are dense: no block size "
            "makes it run sparse (the file is smaller)"
        )
    return "LiteRT has no sparse kernel for it (the file is smaller)"


def fully_connected_rows(owner: Any, variable: Any) -> int | None:
    """Inputs of the `FULLY_CONNECTED` weight a Keras weight converts to.

    The rows of the matrix `[in, out]` that model_pruning's blocks tile and
    LiteRT's sparse kernel needs in blocks of 4 (float32) or 16 (int8):
    a `Dense` kernel, an `EinsumDense` kernel (of rank 2, or of higher rank
    read as `[prod(summed axes), prod(rest)]`), and the kernel and
    recurrent kernel of an `LSTMCell`, `GRUCell` or `SimpleRNNCell`.

    Args:
        owner: The layer that holds `variable`.
        variable: One of its weights.

    Returns:
        The number of rows, or `None` for any other weight.
    """
    shape = [int(d) for d in variable.shape]
    if isinstance(owner, _RECURRENT_CELLS):
        if variable.name in ("kernel", "recurrent_kernel") and len(shape) == 2:
            return shape[0]
        return None
    if not isinstance(owner, (keras.layers.Dense, keras.layers.EinsumDense)):
        return None
    if variable.name != "kernel":
        return None
    axes = prunable.input_axes(owner, variable)
    if axes is not None:
        return math.prod(shape[:axes])
    squeezed = [d for d in shape if d != 1]
    return squeezed[0] if len(squeezed) == 2 else None


_RECURRENT_CELLS = (
    keras.layers.LSTMCell,
    keras.layers.GRUCell,
    keras.layers.SimpleRNNCell,
)


def _file_cell(weight: LiteRTWeight) -> str:
    if weight.storage == "missing":
        return "-"
    if weight.block is None:
        return f"{weight.dtype} dense"
    if set(weight.block) == {1}:
        return f"{weight.dtype} sparse"
    return f"{weight.dtype} sparse, {'x'.join(map(str, weight.block))} blocks"


def _storage_cell(weight: LiteRTWeight) -> str:
    return {
        "sparse": f"sparse kernel ({weight.op})",
        "densified": f"densified at load ({weight.op})",
        "dense": f"dense ({weight.op})",
        "missing": "not found",
    }[weight.storage]
