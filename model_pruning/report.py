"""How big a pruned model is in each storage format, weight by weight.

`sparsity_report` strips a pruned model and measures every weight with the
real encoders of `sparse_formats` (bit-mask, CSR(C), int8 + CSR(C)), gzip
and, optionally, the exported files (SavedModel, sparse TFLite, `.keras`).
The paper's own counts from element numbers alone are in `paper_sizes`.
"""

import dataclasses
import gzip
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from model_pruning import accessors
from model_pruning import export
from model_pruning.litert import DensifiedWeightWarning
from model_pruning.prune import strip_pruning
from model_pruning.sparse_formats import CsrcEncoding
from model_pruning.sparse_formats import check_index_bits
from model_pruning.sparse_formats import decode_csrc
from model_pruning.sparse_formats import encode_all
from model_pruning.sparse_formats import encode_csrc
from model_pruning.sparse_formats import is_floating_dtype
from model_pruning.sparse_formats import quantization_error
from model_pruning.sparse_formats import smallest_format

_TABLE_HEADER = (
    "weight shape size nnz sparsity pruned "
    "dense bitmask csr({index_bits}b) gzip int8+csr compact"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SizeCounts:
    """Element counts and sizes in bytes of one weight or of all of them.

    Attributes:
        size: Number of elements.
        nnz: Number of non-zero elements.
        sparsity: `1 - nnz / size` (0.0 when `size` is 0).
        dense_bytes: Bytes of the raw values (`array.nbytes`).
        bitmask_bytes: `encode_bitmask(array).nbytes`.
        csr_bytes: `encode_csrc(array, index_bits).nbytes`, padding entries
            included.
        gzip_bytes: Bytes of the raw values compressed by gzip at level 9.
        int8_csr_bytes: `encode_csrc(array, index_bits, quantize=True)
            .nbytes` for floating-point weights, `csr_bytes` for others.
        compact_bytes: The smallest of `dense_bytes`, `bitmask_bytes` and
            `csr_bytes` (what `save_sparse_weights(format="auto")` stores).
    """

    size: int
    nnz: int
    sparsity: float
    dense_bytes: int
    bitmask_bytes: int
    csr_bytes: int
    gzip_bytes: int
    int8_csr_bytes: int
    compact_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """Returns the counts as a dict of Python ints and floats."""
        return _fields_dict(self, SizeCounts)


_SUMMED_FIELDS = tuple(
    f.name for f in dataclasses.fields(SizeCounts) if f.name != "sparsity"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightReport(SizeCounts):
    """The sizes of one weight of a (stripped) model.

    Attributes:
        name: The variable's path in the stripped model, e.g.
            `"dense/kernel"`.
        shape: The weight's shape.
        dtype: The weight's dtype name, e.g. `"float32"`.
        pruned: Whether the model had a mask for this weight.
        compact_format: `"dense"`, `"bitmask"` or `"csr"`, whichever gives
            `compact_bytes` (the first of them on a tie).

    The counts and sizes are the attributes of `SizeCounts`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    pruned: bool
    compact_format: str

    def as_dict(self) -> dict[str, Any]:
        """Returns the report as a dict of Python types (JSON-ready)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "pruned": self.pruned,
            **super().as_dict(),
            "compact_format": self.compact_format,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparsityReport:
    """The sizes of every weight of a model, their totals and its files.

    Attributes:
        weights: One `WeightReport` per weight, in `model.weights` order of
            the stripped model.
        total: The counts summed over all weights (`sparsity` over all
            elements).
        index_bits: Bits per CSR(C) zero count used for `csr_bytes` and
            `int8_csr_bytes`.
        int8_max_abs_error: `max |decoded - original|` of the int8 + CSR(C)
            encoding over all pruned weights.
        int8_relative_rms_error: `||decoded - original||_2 /
            ||original||_2` over all pruned weights together.
        saved_model_bytes: Size of `export_saved_model`'s directory.
        tflite_bytes: Size of `export_tflite(..., sparse=True)`'s file.
        keras_bytes: Size of the stripped model's `.keras` file.

    The int8 errors are `None` with no pruned weight, the file sizes without
    `include_exports`.
    """

    weights: tuple[WeightReport, ...]
    total: SizeCounts
    index_bits: int
    int8_max_abs_error: float | None = None
    int8_relative_rms_error: float | None = None
    saved_model_bytes: int | None = None
    tflite_bytes: int | None = None
    keras_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Returns the report as nested dicts and lists of Python types.

        Returns:
            A dict that `json.dumps` accepts: `weights` (a list of dicts),
            `total` (a dict), `index_bits`, the int8 errors and the export
            sizes (`None` where not measured).
        """
        return {
            **_fields_dict(self, SparsityReport),
            "weights": [weight.as_dict() for weight in self.weights],
            "total": self.total.as_dict(),
        }

    def to_table(self) -> str:
        """Renders the report as an aligned text table.

        One row per weight and a `total` row; sizes in bytes, sparsity to 4
        decimals; then the int8 error and the export sizes when measured.

        Returns:
            A multi-line string (no trailing newline).
        """
        table = [
            _TABLE_HEADER.format(index_bits=self.index_bits).split(),
            *(_row(w.name, w.shape, w, w.pruned) for w in self.weights),
            _row("total", None, self.total, None),
        ]
        widths = [max(map(len, col)) for col in zip(*table, strict=True)]
        header, *rows, total = [_format_row(row, widths) for row in table]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        note = "Sizes in bytes. compact = smallest of dense, bit-mask and "
        note += "CSR(C) per weight."
        lines = [header, rule, *rows, rule, total, note, *self._footer()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()

    def _footer(self) -> list[str]:
        lines = []
        if self.int8_max_abs_error is not None:
            lines.append(
                "int8 error over pruned weights: max abs "
                f"{self.int8_max_abs_error:.3e}, relative RMS "
                f"{self.int8_relative_rms_error:.3e}"
            )
        exports = {
            "SavedModel": self.saved_model_bytes,
            "TFLite (sparse)": self.tflite_bytes,
            ".keras": self.keras_bytes,
        }
        measured = [f"{k} {v}" for k, v in exports.items() if v is not None]
        if measured:
            lines.append("Files (bytes): " + ", ".join(measured))
        return lines


def sparsity_report(
    model: Any, index_bits: int = 4, include_exports: bool = False
) -> SparsityReport:
    """Measures every weight of a model in each storage format.

    A pruned model is stripped first (`strip_pruning`), so the report covers
    the weights of the plain model (zeros where masked) and no mask,
    threshold or step variables; `pruned` marks the weights that had a mask.
    A model without pruned layers is reported as it is. `model` itself is
    not changed.

    Args:
        model: A Keras model or layer, pruned or not.
        index_bits: Bits per CSR(C) zero count, 4 or 5. Defaults to `4`.
        include_exports: Whether to also export the stripped model into a
            temporary directory and measure the SavedModel, the sparse TFLite
            file and the `.keras` file (takes seconds). `model` must then be
            a Keras model. Defaults to `False`.

    Returns:
        A `SparsityReport`.

    Raises:
        TypeError: If `model` is not a Keras layer (a Keras model with
            `include_exports`), or `include_exports` is not a bool.
        ValueError: If `index_bits` is not 4 or 5, a pruned layer is not
            built, or a floating-point weight has NaN or Inf (int8
            quantization).

    Example:

    ```python
    report = sparsity_report(pruned)
    print(report)  # or print_sparsity_report(pruned)
    report.total.compact_bytes / report.total.dense_bytes
    json.dumps(report.as_dict())
    ```
    """
    index_bits = check_index_bits(index_bits)
    _check_arguments(model, include_exports)
    stripped, flags = _stripped_with_flags(model)
    weights, int8_pairs = [], []
    for variable, pruned in zip(stripped.weights, flags, strict=True):
        array = np.asarray(keras.ops.convert_to_numpy(variable))
        int8 = _int8_encoding(variable.path, array, index_bits)
        weights.append(
            _weight_report(variable.path, array, pruned, index_bits, int8)
        )
        if pruned and int8 is not None:
            int8_pairs.append((array, int8))
    max_abs, relative_rms = _int8_error(int8_pairs)
    exports = _export_sizes(stripped) if include_exports else {}
    return SparsityReport(
        weights=tuple(weights),
        total=_total(weights),
        index_bits=index_bits,
        int8_max_abs_error=max_abs,
        int8_relative_rms_error=relative_rms,
        **exports,
    )


def print_sparsity_report(
    model: Any,
    index_bits: int = 4,
    include_exports: bool = False,
    print_fn: Callable[[str], Any] | None = None,
) -> None:
    """Prints `sparsity_report(model, ...)` as a table.

    Args:
        model: A Keras model or layer, pruned or not.
        index_bits: Bits per CSR(C) zero count, 4 or 5. Defaults to `4`.
        include_exports: Whether to also measure the exported files. Defaults
            to `False`.
        print_fn: Called with the table. Defaults to `None`: `print`.

    Raises:
        TypeError: As `sparsity_report`, or if `print_fn` is not callable.
        ValueError: As `sparsity_report`.
    """
    if print_fn is not None and not callable(print_fn):
        raise TypeError(
            f"`print_fn` must be callable. Received: print_fn={print_fn!r}"
        )
    report = sparsity_report(model, index_bits, include_exports)
    (print_fn or print)(report.to_table())


def _check_arguments(model: Any, include_exports: Any) -> None:
    if not isinstance(include_exports, bool):
        raise TypeError(
            "`include_exports` must be a bool. "
            f"Received: include_exports={include_exports!r}"
        )
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras model or layer. Received: model={model!r}"
        )
    if include_exports and not isinstance(model, keras.Model):
        raise TypeError(
            "`include_exports=True` needs a Keras model. "
            f"Received: model of type {type(model).__name__}"
        )


def _stripped_with_flags(model: Any) -> tuple[Any, list[bool]]:
    """Returns the stripped model and, per weight, whether it had a mask."""
    wrappers = accessors.pruned_layers(model)
    if not wrappers:
        return model, [False] * len(model.weights)
    masked = {id(entry.weight) for entry in accessors.pruned_weights(model)}
    added = set()  # What the wrappers add: masks, thresholds, steps.
    for wrapper in wrappers:
        inner = {id(w) for w in wrapper.layer.weights}
        added.update(id(w) for w in wrapper.weights if id(w) not in inner)
    kept = [w for w in model.weights if id(w) not in added]
    stripped = strip_pruning(model)
    _check_aligned(kept, stripped.weights)
    return stripped, [id(w) in masked for w in kept]


def _check_aligned(kept: list, stripped: list) -> None:
    """Raises if the weights left after stripping do not match one to one."""
    original = [(tuple(w.shape), _leaf(w.path)) for w in kept]
    copied = [(tuple(w.shape), _leaf(w.path)) for w in stripped]
    if original != copied:
        raise RuntimeError(
            "The stripped model's weights do not match the pruned model's "
            "weights less the pruning variables. Received: "
            f"{len(copied)} stripped weights {copied[:3]}..., "
            f"{len(original)} pruned-model weights {original[:3]}..."
        )


def _leaf(path: str) -> str:
    """The variable's own name, less Keras' numbering of unnamed variables
    (`variable_18` in one copy is `variable_36` in the next)."""
    return re.sub(r"_\d+$", "", path.rsplit("/", 1)[-1])


def _int8_encoding(
    name: str, array: np.ndarray, index_bits: int
) -> CsrcEncoding | None:
    """Returns the int8 CSR(C) encoding of a floating-point weight."""
    if not is_floating_dtype(array.dtype):
        return None
    try:
        return encode_csrc(array, index_bits, quantize=True)
    except ValueError as error:
        raise ValueError(f"Cannot measure weight {name!r}: {error}") from error


def _weight_report(
    name: str,
    array: np.ndarray,
    pruned: bool,
    index_bits: int,
    int8: CsrcEncoding | None,
) -> WeightReport:
    """Measures one weight in every format."""
    encodings = encode_all(array, index_bits)
    compact_format = smallest_format(encodings)
    sizes = {f"{fmt}_bytes": int(e.nbytes) for fmt, e in encodings.items()}
    size, nnz = int(array.size), int(np.count_nonzero(array))
    return WeightReport(
        name=name,
        shape=tuple(int(d) for d in array.shape),
        dtype=array.dtype.name,
        pruned=pruned,
        size=size,
        nnz=nnz,
        sparsity=_sparsity(size, nnz),
        **sizes,
        gzip_bytes=_gzip_bytes(array),
        int8_csr_bytes=sizes["csr_bytes"] if int8 is None else int(int8.nbytes),
        compact_bytes=sizes[f"{compact_format}_bytes"],
        compact_format=compact_format,
    )


def _sparsity(size: int, nnz: int) -> float:
    return 1.0 - nnz / size if size else 0.0


def _gzip_bytes(array: np.ndarray) -> int:
    data = np.ascontiguousarray(array).tobytes()
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _total(weights: list[WeightReport]) -> SizeCounts:
    sums = {f: sum(getattr(w, f) for w in weights) for f in _SUMMED_FIELDS}
    return SizeCounts(sparsity=_sparsity(sums["size"], sums["nnz"]), **sums)


def _int8_error(
    pairs: list[tuple[np.ndarray, CsrcEncoding]],
) -> tuple[float | None, float | None]:
    """Returns the int8 + CSR(C) error over all `(array, encoding)` pairs."""
    if not pairs:
        return None, None
    error = quantization_error(
        np.concatenate([a.reshape(-1).astype(np.float64) for a, _ in pairs]),
        np.concatenate(
            [decode_csrc(e).reshape(-1).astype(np.float64) for _, e in pairs]
        ),
    )
    return error.max_abs_error, error.relative_rms_error


def _export_sizes(model: keras.Model) -> dict[str, int]:
    """Exports the (stripped) model to a temporary directory; file sizes.

    Whether LiteRT runs the TFLite file sparse is `inspect_tflite`'s
    question, so its `DensifiedWeightWarning` is not repeated here.
    """
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter("ignore", DensifiedWeightWarning)
        keras_path = os.path.join(directory, "model.keras")
        model.save(keras_path)
        return {
            "saved_model_bytes": export.export_saved_model(
                model, os.path.join(directory, "saved_model")
            ),
            "tflite_bytes": export.export_tflite(
                model, os.path.join(directory, "model.tflite"), sparse=True
            ),
            "keras_bytes": os.path.getsize(keras_path),
        }


def _fields_dict(obj: Any, cls: type) -> dict[str, Any]:
    """`obj`'s values of the fields `cls` declares, in their order."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


def _row(
    name: str,
    shape: tuple[int, ...] | None,
    counts: SizeCounts,
    pruned: bool | None,
) -> list[str]:
    """One table row in `_TABLE_HEADER`'s order; `None` leaves a cell blank."""
    size, nnz, *sizes = (str(getattr(counts, f)) for f in _SUMMED_FIELDS)
    shape_cell = "" if shape is None else "x".join(map(str, shape)) or "scalar"
    pruned_cell = {True: "yes", False: "no", None: ""}[pruned]
    cells = [name, shape_cell, size, nnz, f"{counts.sparsity:.4f}"]
    return [*cells, pruned_cell, *sizes]


def _format_row(cells: list[str], widths: list[int]) -> str:
    """Left-aligns the name and shape columns, right-aligns the rest."""
    aligned = [
        cell.ljust(width) if i < 2 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(aligned).rstrip()
