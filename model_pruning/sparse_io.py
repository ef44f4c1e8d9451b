"""Save and load a model's weights in the sparse formats, in one file.

The file is an uncompressed `.npz` archive: a uint8 array `header` holding a
UTF-8 JSON document, and for weight `i` the arrays `w<i>_<part>` of its
encoding. The header lists, per weight in `model.weights` order, its `path`,
`shape`, `dtype`, `format` (`"dense"`, `"bitmask"` or `"csr"`) and, as they
apply, `index_bits`, `num_entries` and the int8 `scale`.
"""

import json
import os
import re
from typing import Any

import keras
import numpy as np

from model_pruning import accessors
from model_pruning.prune import strip_pruning
from model_pruning.sparse_formats import FORMAT_NAMES
from model_pruning.sparse_formats import BitMaskEncoding
from model_pruning.sparse_formats import CsrcEncoding
from model_pruning.sparse_formats import check_index_bits
from model_pruning.sparse_formats import decode_bitmask
from model_pruning.sparse_formats import decode_csrc
from model_pruning.sparse_formats import encode_all
from model_pruning.sparse_formats import is_floating_dtype
from model_pruning.sparse_formats import smallest_format

FORMATS = ("auto", "bitmask", "csr")
"""The `format` values of `save_sparse_weights`."""

_FILE_KIND = "model_pruning.sparse_weights"
_FILE_VERSION = 1
_STORED_FORMATS = FORMAT_NAMES
_ENTRY_KEYS = frozenset(
    ("path", "shape", "dtype", "format", "index_bits", "num_entries", "scale")
)


def save_sparse_weights(
    model: Any,
    path: str | os.PathLike,
    format: str = "auto",
    index_bits: int = 4,
    quantize: bool = False,
) -> int:
    """Writes every weight of `model` into one sparse weights file.

    A pruned model is stripped first (`strip_pruning`), so the file holds the
    masked weights of the plain model and no mask, threshold or step
    variables. Each weight is stored as:

    ```
    "bitmask": encode_bitmask(weight)
    "csr":     encode_csrc(weight, index_bits)
    "auto":    the smallest of dense, bitmask and csr, per weight
    ```

    Args:
        model: A Keras model or layer, pruned or not.
        path: The file to write (overwritten; no suffix is added).
        format: `"auto"`, `"bitmask"` or `"csr"`. Defaults to `"auto"`.
        index_bits: Bits per CSR(C) zero count, 4 or 5. Defaults to `4`.
        quantize: Whether to store the non-zero values of floating-point
            weights as int8 with a float32 scale per weight (lossy; other
            weights and weights stored dense stay exact). Defaults to
            `False`.

    Returns:
        The size of the file in bytes.

    Raises:
        TypeError: If `model` is not a Keras model or layer, or `quantize`
            is not a bool.
        ValueError: If `format` or `index_bits` is invalid, or `quantize` is
            `True` and a floating-point weight has NaN or Inf.

    Example:

    ```python
    size = save_sparse_weights(pruned, "model.sparse.npz")
    load_sparse_weights(strip_pruning(pruned), "model.sparse.npz")
    ```
    """
    _check_format(format)
    index_bits = check_index_bits(index_bits)
    if not isinstance(quantize, bool):
        raise TypeError(
            f"`quantize` must be a bool. Received: quantize={quantize!r}"
        )
    _check_model(model)
    if accessors.pruned_layers(model):
        model = strip_pruning(model)
    entries, arrays = [], {}
    for i, variable in enumerate(model.weights):
        entry, parts = _encode_weight(variable, format, index_bits, quantize)
        entries.append(entry)
        arrays.update({f"w{i}_{name}": part for name, part in parts.items()})
    header = {
        "kind": _FILE_KIND,
        "version": _FILE_VERSION,
        "weights": entries,
    }
    with open(path, "wb") as file:
        np.savez(file, header=_header_array(header), **arrays)
    return os.path.getsize(path)


def load_sparse_weights(model: Any, path: str | os.PathLike) -> None:
    """Assigns the weights in a sparse weights file to `model`.

    `model` must have the architecture of the saved (stripped) model: the
    same number of weights, in the same order, each with the same shape,
    dtype and name (the last path component, e.g. `kernel`, less a
    uniquifying `_<n>` suffix such as the one of `variable_3`). Everything
    is checked and decoded before the first weight is assigned, so on an
    error `model` is left as it was.

    Args:
        model: A plain (not pruned) Keras model or layer, e.g.
            `strip_pruning(pruned)` or a `keras.models.clone_model` of it.
        path: A file written by `save_sparse_weights`.

    Raises:
        TypeError: If `model` is not a Keras model or layer.
        ValueError: If `model` is pruned, the file is not a sparse weights
            file, or a weight does not match (the first mismatch is named).
    """
    _check_model(model)
    if accessors.pruned_layers(model):
        raise ValueError(
            "Load sparse weights into the plain architecture: "
            "`strip_pruning` the model (or rebuild it unpruned) first. "
            f"Received: model={model.name!r} with pruned layers"
        )
    entries, arrays = _read(path)
    variables = model.weights
    _check_matches(entries, variables, path)
    values = [_decode_weight(i, e, arrays, path) for i, e in enumerate(entries)]
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _check_format(format: Any) -> None:
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {', '.join(map(repr, FORMATS))}. "
            f"Received: format={format!r}"
        )


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras model or layer. Received: model={model!r}"
        )


def _encode_weight(
    variable: Any, format: str, index_bits: int, quantize: bool
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Returns the header entry and the arrays of one weight."""
    array = np.asarray(keras.ops.convert_to_numpy(variable))
    quantize = quantize and is_floating_dtype(array.dtype)
    try:
        candidates = _candidates(array, format, index_bits, quantize)
    except ValueError as error:
        raise ValueError(
            f"Cannot encode weight {variable.path!r}: {error}"
        ) from error
    name = smallest_format(candidates)
    encoding = candidates[name]
    entry = {
        "path": variable.path,
        "shape": list(array.shape),
        "dtype": array.dtype.name,
        "format": name,
        "index_bits": getattr(encoding, "index_bits", None),
        "num_entries": getattr(encoding, "num_entries", None),
        "scale": getattr(encoding, "scale", None),
    }
    return entry, _parts(name, encoding)


def _candidates(
    array: np.ndarray, format: str, index_bits: int, quantize: bool
) -> dict[str, Any]:
    """Returns the encodings of `array` that `format` chooses among."""
    formats = FORMAT_NAMES if format == "auto" else (format,)
    return encode_all(array, index_bits, quantize, formats)


def _parts(name: str, encoding: Any) -> dict[str, np.ndarray]:
    """Returns the arrays the file stores for one encoded weight."""
    if name == "dense":
        return {"values": encoding}
    if name == "bitmask":
        return {"bitmask": encoding.bitmask, "values": encoding.values}
    return {"zero_counts": encoding.zero_counts, "values": encoding.values}


def _read(path: str | os.PathLike) -> tuple[list[dict], dict]:
    """Returns the header entries and all arrays of a sparse weights file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes().decode("utf-8"))
            arrays = {
                name: archive[name]
                for name in archive.files
                if name != "header"
            }
        if header["kind"] != _FILE_KIND:
            raise ValueError(f"kind {header['kind']!r}")
        if header["version"] != _FILE_VERSION:
            raise ValueError(f"unsupported version {header['version']!r}")
        entries = header["weights"]
        for entry in entries:
            _check_entry(entry)
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise ValueError(
            "`path` is not a file written by `save_sparse_weights`. "
            f"Received: path={os.fspath(path)!r} ({error})"
        ) from error
    return entries, arrays


def _header_array(header: dict[str, Any]) -> np.ndarray:
    """Returns the header as a uint8 array of UTF-8 JSON."""
    return np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)


def _check_entry(entry: Any) -> None:
    missing = _ENTRY_KEYS.difference(entry)
    if missing:
        raise KeyError(f"header entry without {sorted(missing)}")
    if entry["format"] not in _STORED_FORMATS:
        raise ValueError(f"unknown format {entry['format']!r}")


def _check_matches(entries: list[dict], variables: list, path: Any) -> None:
    """Raises ValueError naming the first weight that does not match."""
    for i, (entry, variable) in enumerate(
        zip(entries, variables, strict=False)
    ):
        saved = (_leaf(entry["path"]), tuple(entry["shape"]), entry["dtype"])
        target = (
            _leaf(variable.path),
            tuple(variable.shape),
            np.dtype(variable.dtype).name,
        )
        if saved != target:
            raise ValueError(
                f"Weight {i} of the file does not match `model`: the file "
                f"has {entry['path']!r} (name, shape, dtype {saved}), the "
                f"model has {variable.path!r} (name, shape, dtype {target}). "
                f"Received: path={os.fspath(path)!r}"
            )
    if len(entries) != len(variables):
        raise ValueError(
            f"The file holds {len(entries)} weights but `model` has "
            f"{len(variables)}. Received: path={os.fspath(path)!r}"
        )


def _leaf(path: str) -> str:
    """The variable's name without Keras' uniquifying `_<n>` suffix."""
    return re.sub(r"_\d+$", "", path.rsplit("/", 1)[-1])


def _decode_weight(
    index: int, entry: dict, arrays: dict, path: Any
) -> np.ndarray:
    """Decodes weight `index` of the file from its header entry."""
    try:
        return _decode_entry(index, entry, arrays)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"Cannot decode weight {index} ({entry['path']!r}) of the file: "
            f"{error!r}. Received: path={os.fspath(path)!r}"
        ) from error


def _decode_entry(index: int, entry: dict, arrays: dict) -> np.ndarray:
    dtype = np.dtype(entry["dtype"])
    scale = entry["scale"]
    values_dtype = dtype if scale is None else np.dtype(np.int8)
    values = _as_dtype(arrays[f"w{index}_values"], values_dtype)
    shape = tuple(entry["shape"])
    if entry["format"] == "dense":
        return values.reshape(shape)
    if entry["format"] == "bitmask":
        encoding = BitMaskEncoding(
            shape=shape,
            dtype=dtype.name,
            bitmask=arrays[f"w{index}_bitmask"],
            values=values,
            scale=scale,
        )
        return decode_bitmask(encoding)
    encoding = CsrcEncoding(
        shape=shape,
        dtype=dtype.name,
        index_bits=entry["index_bits"],
        num_entries=entry["num_entries"],
        zero_counts=arrays[f"w{index}_zero_counts"],
        values=values,
        scale=scale,
    )
    return decode_csrc(encoding)


def _as_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Views a stored array as `dtype` (`.npy` keeps bfloat16 as raw V2)."""
    if array.dtype.kind == "V" and array.dtype.itemsize == dtype.itemsize:
        return array.view(dtype)
    return array
