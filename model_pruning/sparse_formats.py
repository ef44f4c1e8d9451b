"""Sparse storage formats of Zhu & Gupta (2017), section 5, in pure NumPy.

Two ways to store a pruned tensor, both over its row-major (C order)
flattening:

- Bit-mask: one bit per element saying whether it is non-zero
  (`np.packbits`, most significant bit first), plus the non-zero values in
  order. The index costs `ceil(n / 8)` bytes whatever the sparsity.
- CSR(C), as in EIE and SCNN: each non-zero value with a 4-bit (or 5-bit)
  count of the zeros before it. A run of zeros longer than the count can hold
  gets padding entries: count `2**index_bits - 1` and value 0, each standing
  for that many zeros plus one stored zero. The index costs about
  `index_bits / 8` bytes per non-zero.

"Zero" means `value == 0`: `-0.0` is a zero and decodes to `+0.0` (the masked
weights of this library are `+0.0` already, see `mask.zero_pruned`). NaN and
Inf are non-zeros and round-trip bit for bit.

The non-zero values can also be stored as int8 with one float32 scale per
tensor (`quantize=True`), the combination of pruning and quantization the
paper leaves to future work.
"""

import dataclasses
from typing import Any
from typing import NamedTuple

import numpy as np

try:  # Registers bfloat16 and float8 with NumPy; TensorFlow depends on it.
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None

INDEX_BITS = (4, 5)
"""The CSR(C) zero-count widths the paper names."""

_INT8_MAX = 127
_EXTRA_FLOAT_NAMES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
_EXTRA_FLOATS = frozenset(
    np.dtype(getattr(ml_dtypes, name))
    for name in _EXTRA_FLOAT_NAMES
    if ml_dtypes is not None and hasattr(ml_dtypes, name)
)


@dataclasses.dataclass(frozen=True, eq=False)
class BitMaskEncoding:
    """A tensor in the bit-mask representation.

    Attributes:
        shape: The tensor's shape.
        dtype: The tensor's dtype name, e.g. `"float32"`.
        bitmask: uint8 array, `np.packbits(flat != 0)` of the row-major
            flattening, `ceil(size / 8)` bytes.
        values: The non-zero entries in row-major order, in `dtype`, or
            int8 when quantized.
        scale: The int8 scale (a float32 value), or `None` when not
            quantized.
    """

    shape: tuple[int, ...]
    dtype: str
    bitmask: np.ndarray
    values: np.ndarray
    scale: float | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the mask, the values and the float32 scale if any."""
        return _payload_bytes(self.bitmask, self.values, self.scale)


@dataclasses.dataclass(frozen=True, eq=False)
class CsrcEncoding:
    """A tensor in the CSR(C) representation (zero counts and values).

    Runs of zeros continue across rows of the row-major flattening, so the
    stream needs no row pointers; zeros after the last entry are implied by
    `shape`. Entry `i` stands for `zero_count[i]` zeros followed by
    `values[i]`; padding entries have count `2**index_bits - 1` and value 0.

    Attributes:
        shape: The tensor's shape.
        dtype: The tensor's dtype name, e.g. `"float32"`.
        index_bits: Bits per zero count, 4 or 5.
        num_entries: Number of entries, padding entries included.
        zero_counts: uint8 array, the counts bit-packed at `index_bits` bits
            each, little-endian (count `i` occupies stream bits
            `i * index_bits` upward, least significant bit first; stream bit
            `j` is bit `j % 8` of byte `j // 8`),
            `ceil(num_entries * index_bits / 8)` bytes.
        values: One value per entry (0 for padding entries), in `dtype`, or
            int8 when quantized.
        scale: The int8 scale (a float32 value), or `None` when not
            quantized.
    """

    shape: tuple[int, ...]
    dtype: str
    index_bits: int
    num_entries: int
    zero_counts: np.ndarray
    values: np.ndarray
    scale: float | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the counts, the values and the float32 scale if any."""
        return _payload_bytes(self.zero_counts, self.values, self.scale)


class QuantizationError(NamedTuple):
    """How far a decoded tensor is from the original.

    Attributes:
        max_abs_error: `max |decoded - original|`.
        relative_rms_error: `||decoded - original||_2 / ||original||_2`
            (the RMS error over the RMS value).
    """

    max_abs_error: float
    relative_rms_error: float


def encode_bitmask(array: Any, quantize: bool = False) -> BitMaskEncoding:
    """Encodes a tensor as a bit-mask and its non-zero values.

    ```
    flat    = array.reshape(-1)           # row-major
    bitmask = np.packbits(flat != 0)
    values  = flat[flat != 0]
    ```

    Args:
        array: A real numeric array, or anything `np.asarray` turns into
            one (bool, integer or floating point).
        quantize: Whether to store the values as int8 with a float32 scale
            (`quantize_int8`). Floating-point arrays only. Defaults to
            `False`.

    Returns:
        A `BitMaskEncoding`.

    Raises:
        TypeError: If `array` is not numeric, or `quantize` is not a bool or
            is `True` for a non-floating-point array.
        ValueError: If `quantize` is `True` and `array` has NaN or Inf.

    Example:

    ```python
    encoding = encode_bitmask(stripped_kernel)
    assert np.array_equal(decode_bitmask(encoding), stripped_kernel)
    ```
    """
    array = _as_array(array, "array")
    _check_quantize(quantize, array.dtype)
    flat = array.reshape(-1)
    nonzero = flat != 0
    values, scale = _stored_values(flat[nonzero], quantize)
    return BitMaskEncoding(
        shape=tuple(array.shape),
        dtype=array.dtype.name,
        bitmask=np.packbits(nonzero),
        values=values,
        scale=scale,
    )


def decode_bitmask(encoding: BitMaskEncoding) -> np.ndarray:
    """Decodes a `BitMaskEncoding` back to a dense array.

    Zeros decode to `+0.0`; quantized values are dequantized to `dtype`.

    Args:
        encoding: A `BitMaskEncoding`.

    Returns:
        A new array of the encoding's shape and dtype.

    Raises:
        TypeError: If `encoding` is not a `BitMaskEncoding`.
        ValueError: If its parts do not agree with each other.
    """
    _check_type(encoding, BitMaskEncoding, "encoding")
    size = _size(encoding.shape)
    _check_length(encoding.bitmask, _ceil_div(size, 8), "bitmask")
    nonzero = np.unpackbits(encoding.bitmask, count=size).astype(bool)
    _check_length(encoding.values, int(np.count_nonzero(nonzero)), "values")
    dtype = _dtype(encoding.dtype)
    flat = np.zeros(size, dtype)
    flat[nonzero] = _restored_values(encoding.values, encoding.scale, dtype)
    return flat.reshape(encoding.shape)


def encode_csrc(
    array: Any, index_bits: int = 4, quantize: bool = False
) -> CsrcEncoding:
    """Encodes a tensor as CSR(C): zero counts and values.

    For non-zeros at row-major positions `p_0 < p_1 < ...` (`p_-1 = -1`):

    ```
    gap_i     = p_i - p_(i-1) - 1            # zeros before non-zero i
    padding_i = gap_i // 2**index_bits       # entries (count 2**b - 1, 0)
    count_i   = gap_i %  2**index_bits       # count of non-zero i's entry
    ```

    Zeros after the last non-zero need no entry.

    Args:
        array: A real numeric array, or anything `np.asarray` turns into
            one (bool, integer or floating point).
        index_bits: Bits per zero count, 4 or 5. Defaults to `4`.
        quantize: Whether to store the values as int8 with a float32 scale
            (`quantize_int8`). Floating-point arrays only. Defaults to
            `False`.

    Returns:
        A `CsrcEncoding`.

    Raises:
        TypeError: If `array` is not numeric, or `quantize` is not a bool or
            is `True` for a non-floating-point array.
        ValueError: If `index_bits` is not 4 or 5, or `quantize` is `True`
            and `array` has NaN or Inf.

    Example:

    ```python
    encoding = encode_csrc(np.array([0.0] * 40 + [1.5]))
    encoding.num_entries  # 3: two padding entries, then 1.5
    ```
    """
    index_bits = check_index_bits(index_bits)
    array = _as_array(array, "array")
    _check_quantize(quantize, array.dtype)
    flat = array.reshape(-1)
    positions = np.flatnonzero(flat != 0)
    span = 1 << index_bits  # positions one entry can cover
    gaps = np.diff(positions, prepend=-1) - 1
    padding = gaps // span
    slots = np.arange(positions.size) + np.cumsum(padding)
    num_entries = positions.size + int(padding.sum())
    counts = np.full(num_entries, span - 1, np.uint8)
    counts[slots] = gaps % span
    nonzeros, scale = _stored_values(flat[positions], quantize)
    values = np.zeros(num_entries, nonzeros.dtype)
    values[slots] = nonzeros
    return CsrcEncoding(
        shape=tuple(array.shape),
        dtype=array.dtype.name,
        index_bits=index_bits,
        num_entries=num_entries,
        zero_counts=_pack_counts(counts, index_bits),
        values=values,
        scale=scale,
    )


def decode_csrc(encoding: CsrcEncoding) -> np.ndarray:
    """Decodes a `CsrcEncoding` back to a dense array.

    ```
    position_i = cumsum(count + 1)_i - 1
    ```

    Zeros decode to `+0.0`; quantized values are dequantized to `dtype`.

    Args:
        encoding: A `CsrcEncoding`.

    Returns:
        A new array of the encoding's shape and dtype.

    Raises:
        TypeError: If `encoding` is not a `CsrcEncoding`.
        ValueError: If its parts do not agree with each other or run past
            the end of the tensor.
    """
    _check_type(encoding, CsrcEncoding, "encoding")
    index_bits = check_index_bits(encoding.index_bits)
    num_entries = check_count(encoding.num_entries, "num_entries")
    _check_length(
        encoding.zero_counts,
        _ceil_div(num_entries * index_bits, 8),
        "zero_counts",
    )
    _check_length(encoding.values, num_entries, "values")
    counts = _unpack_counts(encoding.zero_counts, num_entries, index_bits)
    positions = np.cumsum(counts.astype(np.int64) + 1) - 1
    size = _size(encoding.shape)
    if positions.size and positions[-1] >= size:
        raise ValueError(
            "The zero counts run past the end of the tensor. Received: "
            f"last position {positions[-1]} for shape={encoding.shape}"
        )
    dtype = _dtype(encoding.dtype)
    flat = np.zeros(size, dtype)
    flat[positions] = _restored_values(encoding.values, encoding.scale, dtype)
    return flat.reshape(encoding.shape)


def quantize_int8(values: Any) -> tuple[np.ndarray, float]:
    """Quantizes values to int8 with one symmetric scale.

    ```
    scale = max(|values|) / 127      # rounded up to a float32; 1.0 if all 0
    q     = clip(round(values / scale), -127, 127)
    ```

    Rounding the scale up keeps `|q| <= 127` and makes the 4-byte float32
    scale exact. Zeros stay zeros and `|q * scale - values| <= scale / 2`.

    Args:
        values: Real numeric values (any shape).

    Returns:
        `(q, scale)`: an int8 array of the shape of `values` and a Python
        float.

    Raises:
        TypeError: If `values` is not numeric.
        ValueError: If `values` has NaN or Inf, or is too large for a float32
            scale.

    Example:

    ```python
    q, scale = quantize_int8(np.array([-1.0, 0.5, 127.0]))  # scale 1.0
    ```
    """
    values = _as_array(values, "values").astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(
            "Cannot quantize non-finite values to int8. Received: "
            f"{values.size - np.count_nonzero(finite)} NaN or Inf value(s), "
            f"e.g. {values[~finite].flat[0]}"
        )
    max_abs = float(np.max(np.abs(values))) if values.size else 0.0
    scale = _int8_scale(max_abs)
    q = np.clip(np.rint(values / scale), -_INT8_MAX, _INT8_MAX)
    return q.astype(np.int8), scale


def dequantize_int8(q: Any, scale: float, dtype: Any = "float32") -> np.ndarray:
    """Returns `q * scale` in `dtype`.

    Args:
        q: Integer array, e.g. from `quantize_int8`.
        scale: A positive finite float.
        dtype: The dtype of the result. Defaults to `"float32"`.

    Returns:
        A new array of the shape of `q`.

    Raises:
        TypeError: If `q` is not an integer array.
        ValueError: If `scale` is not positive and finite.
    """
    q = _as_array(q, "q")
    if q.dtype.kind not in "iu":
        raise TypeError(
            f"`q` must be an integer array. Received: q with dtype={q.dtype}"
        )
    if not (
        isinstance(scale, (int, float, np.floating)) and 0 < scale < np.inf
    ):
        raise ValueError(
            "`scale` must be a positive finite float. "
            f"Received: scale={scale!r}"
        )
    return (q.astype(np.float64) * float(scale)).astype(_dtype(dtype))


def quantization_error(original: Any, decoded: Any) -> QuantizationError:
    """Measures how far `decoded` is from `original`, in float64.

    ```
    max_abs_error      = max |decoded - original|
    relative_rms_error = ||decoded - original||_2 / ||original||_2
    ```

    The relative error is 0.0 when both norms are 0 and `inf` when only the
    original's is.

    Args:
        original: The array before encoding.
        decoded: The decoded array, of the same shape.

    Returns:
        A `QuantizationError`.

    Raises:
        TypeError: If an argument is not numeric.
        ValueError: If the shapes differ.
    """
    original = _as_array(original, "original").astype(np.float64)
    decoded = _as_array(decoded, "decoded").astype(np.float64)
    if original.shape != decoded.shape:
        raise ValueError(
            "`decoded` must have the shape of `original`. Received: "
            f"original.shape={original.shape}, decoded.shape={decoded.shape}"
        )
    error = decoded - original
    max_abs = float(np.max(np.abs(error))) if error.size else 0.0
    error_norm = float(np.sqrt(np.sum(np.square(error))))
    norm = float(np.sqrt(np.sum(np.square(original))))
    if norm > 0:
        relative = error_norm / norm
    else:
        relative = 0.0 if error_norm == 0 else float("inf")
    return QuantizationError(max_abs, relative)


FORMAT_NAMES = ("dense", "bitmask", "csr")
"""The ways to store one array: as it is, as a bit-mask, as CSR(C)."""


def encode_all(
    array: np.ndarray,
    index_bits: int = 4,
    quantize: bool = False,
    formats: tuple[str, ...] = FORMAT_NAMES,
) -> dict[str, Any]:
    """Returns `array` encoded in each of `formats`, in `FORMAT_NAMES` order.

    `"dense"` is the array itself (never quantized); `"bitmask"` and `"csr"`
    are `encode_bitmask` and `encode_csrc` results. Each value has `nbytes`.

    Args:
        array: A NumPy array.
        index_bits: Bits per CSR(C) zero count, 4 or 5. Defaults to `4`.
        quantize: Whether the sparse encodings store int8 values. Defaults
            to `False`.
        formats: Names from `FORMAT_NAMES`. Defaults to all of them.

    Returns:
        A dict from format name to encoding.
    """
    encoders = {
        "dense": lambda: array,
        "bitmask": lambda: encode_bitmask(array, quantize=quantize),
        "csr": lambda: encode_csrc(array, index_bits, quantize=quantize),
    }
    return {name: encoders[name]() for name in FORMAT_NAMES if name in formats}


def smallest_format(encodings: dict[str, Any]) -> str:
    """Returns the name of the encoding with the fewest bytes.

    The first of them, in `encodings`' order, on a tie. This is the rule of
    `save_sparse_weights(format="auto")` and of `sparsity_report`'s
    `compact_bytes`.
    """
    return min(encodings, key=lambda name: int(encodings[name].nbytes))


def bitmask_index_bytes(num_elements: int) -> int:
    """Returns the bytes of a bit-mask index: `ceil(num_elements / 8)`.

    Args:
        num_elements: Elements of the tensor, a non-negative integer.

    Returns:
        An int.

    Raises:
        TypeError: If `num_elements` is not an integer.
        ValueError: If it is negative.
    """
    return _ceil_div(check_count(num_elements, "num_elements"), 8)


def csrc_index_bytes(num_nonzeros: int, index_bits: int = 4) -> int:
    """Returns the ideal bytes of CSR(C) zero counts, as the paper counts.

    ```
    ceil(num_nonzeros * index_bits / 8)
    ```

    Padding entries for long zero runs are not counted (their number depends
    on where the non-zeros are); `encode_csrc` stores them.

    Args:
        num_nonzeros: Non-zero elements, a non-negative integer.
        index_bits: Bits per zero count, 4 or 5. Defaults to `4`.

    Returns:
        An int.

    Raises:
        TypeError: If `num_nonzeros` is not an integer.
        ValueError: If it is negative or `index_bits` is not 4 or 5.
    """
    index_bits = check_index_bits(index_bits)
    count = check_count(num_nonzeros, "num_nonzeros")
    return _ceil_div(count * index_bits, 8)


def is_floating_dtype(dtype: Any) -> bool:
    """Returns whether `dtype` is a floating-point dtype (bfloat16 too)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype in _EXTRA_FLOATS


def _is_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "biu" or is_floating_dtype(dtype)


def _as_array(value: Any, name: str) -> np.ndarray:
    """Returns `value` as a native-byte-order real numeric array."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be convertible to a numeric NumPy array. "
            f"Received: {name} of type {type(value).__name__}"
        ) from error
    if not _is_numeric(array.dtype):
        raise TypeError(
            f"`{name}` must be a bool, integer or floating-point array. "
            f"Received: {name} with dtype={array.dtype}"
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _dtype(name: Any) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError as error:
        raise TypeError(
            f"`dtype` must name a NumPy dtype. Received: dtype={name!r}"
        ) from error
    if not _is_numeric(dtype):
        raise TypeError(
            "`dtype` must be a bool, integer or floating-point dtype. "
            f"Received: dtype={name!r}"
        )
    return dtype


def _check_quantize(quantize: Any, dtype: np.dtype) -> None:
    if not isinstance(quantize, (bool, np.bool_)):
        raise TypeError(
            f"`quantize` must be a bool. Received: quantize={quantize!r}"
        )
    if quantize and not is_floating_dtype(dtype):
        raise TypeError(
            "`quantize=True` needs a floating-point array. "
            f"Received: array with dtype={dtype}"
        )


def check_index_bits(index_bits: Any) -> int:
    """Returns `index_bits` if it is 4 or 5; raises a `ValueError` if not."""
    if (
        isinstance(index_bits, (bool, np.bool_))
        or not isinstance(index_bits, (int, np.integer))
        or index_bits not in INDEX_BITS
    ):
        raise ValueError(
            f"`index_bits` must be 4 or 5. Received: index_bits={index_bits!r}"
        )
    return int(index_bits)


def check_count(value: Any, name: str) -> int:
    """Returns `value` as an int; raises naming `name` unless it is a
    non-negative integer (`TypeError` for a non-integer)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer)
    ):
        raise TypeError(
            f"`{name}` must be an integer. Received: {name}={value!r}"
        )
    if value < 0:
        raise ValueError(
            f"`{name}` must be non-negative. Received: {name}={value!r}"
        )
    return int(value)


def _check_type(value: Any, cls: type, name: str) -> None:
    if not isinstance(value, cls):
        raise TypeError(
            f"`{name}` must be a {cls.__name__}. "
            f"Received: {name} of type {type(value).__name__}"
        )


def _check_length(array: np.ndarray, expected: int, name: str) -> None:
    if np.ndim(array) != 1 or len(array) != expected:
        raise ValueError(
            f"`{name}` must be a 1-D array of {expected} entries to match "
            f"the rest of the encoding. Received: {name} of shape "
            f"{np.shape(array)}"
        )


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _payload_bytes(
    index: np.ndarray, values: np.ndarray, scale: float | None
) -> int:
    scale_bytes = 0 if scale is None else np.dtype(np.float32).itemsize
    return int(index.nbytes + values.nbytes + scale_bytes)


def _int8_scale(max_abs: float) -> float:
    """Returns the smallest float32 at or above `max_abs / 127` (1.0 for 0)."""
    if max_abs == 0.0:
        return 1.0
    exact = max_abs / _INT8_MAX
    with np.errstate(over="ignore"):
        scale = np.float32(exact)
    if float(scale) < exact:
        scale = np.nextafter(scale, np.float32(np.inf))
    if not np.isfinite(scale):
        raise ValueError(
            "Values are too large for int8 quantization with a float32 "
            f"scale. Received: max |value| = {max_abs}"
        )
    return float(scale)


def _stored_values(
    nonzeros: np.ndarray, quantize: bool
) -> tuple[np.ndarray, float | None]:
    if not quantize:
        return nonzeros, None
    return quantize_int8(nonzeros)


def _restored_values(
    values: np.ndarray, scale: float | None, dtype: np.dtype
) -> np.ndarray:
    if scale is None:
        return values
    return dequantize_int8(values, scale, dtype)


def _pack_counts(counts: np.ndarray, index_bits: int) -> np.ndarray:
    """Packs uint8 counts at `index_bits` bits each, little-endian."""
    shifts = np.arange(index_bits, dtype=np.uint8)
    bits = (counts[:, np.newaxis] >> shifts) & 1
    return np.packbits(bits.reshape(-1), bitorder="little")


def _unpack_counts(
    packed: np.ndarray, num_entries: int, index_bits: int
) -> np.ndarray:
    """Inverse of `_pack_counts`: returns `num_entries` uint8 counts."""
    bits = np.unpackbits(
        packed, count=num_entries * index_bits, bitorder="little"
    ).reshape(num_entries, index_bits)
    return np.packbits(bits, axis=1, bitorder="little")[:, 0]
