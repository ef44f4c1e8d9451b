"""Model sizes the way Zhu & Gupta (2017) count them, from element counts.

`overhead_mb` gives the index overheads of Table 5 and `sparse_model_mb` a
sparse model's size as in Table 6 (1 MB = 10**6 bytes). `report` measures
real encodings instead.
"""

import math
from typing import Any

import numpy as np

from model_pruning.sparse_formats import bitmask_index_bytes
from model_pruning.sparse_formats import check_count
from model_pruning.sparse_formats import csrc_index_bytes

BYTES_PER_MB = 10**6


def overhead_mb(
    num_elements: int, nnz: int, index_bits: int = 4
) -> dict[str, float]:
    """Returns the index overheads of both sparse formats, as in Table 5.

    Ideal counts, as the paper makes them (no CSR(C) padding entries):

    ```
    bitmask_mb = ceil(num_elements / 8) / 10**6
    csr_mb     = ceil(nnz * index_bits / 8) / 10**6
    ```

    Args:
        num_elements: Elements of the weights, a non-negative integer.
        nnz: Non-zero elements among them, from 0 to `num_elements`.
        index_bits: Bits per CSR(C) zero count, 4 or 5. Defaults to `4`.

    Returns:
        `{"bitmask_mb": float, "csr_mb": float}`.

    Raises:
        TypeError: If `num_elements` or `nnz` is not an integer.
        ValueError: If a count is negative, `nnz > num_elements`, or
            `index_bits` is not 4 or 5.

    Example:

    ```python
    overhead_mb(4_210_000, 460_000)  # MobileNet at 90%: 0.526, 0.23
    ```
    """
    bitmask, csr = _index_bytes(num_elements, nnz, index_bits)
    return {"bitmask_mb": bitmask / BYTES_PER_MB, "csr_mb": csr / BYTES_PER_MB}


def sparse_model_mb(
    num_elements: int,
    nnz: int,
    index_bits: int = 4,
    bytes_per_value: float = 4,
) -> float:
    """Returns a sparse model's size in MB as Table 6 counts it.

    ```
    (nnz * bytes_per_value + min(bitmask bytes, CSR(C) bytes)) / 10**6
    ```

    with the index bytes of `overhead_mb`.

    Args:
        num_elements: Elements of the weights, a non-negative integer.
        nnz: Non-zero elements among them, from 0 to `num_elements`.
        index_bits: Bits per CSR(C) zero count, 4 or 5. Defaults to `4`.
        bytes_per_value: Bytes per stored non-zero, e.g. 4 for float32 or 1
            for int8. Defaults to `4`.

    Returns:
        A float.

    Raises:
        TypeError: If a count is not an integer or `bytes_per_value` is not
            a number.
        ValueError: If a count is negative, `nnz > num_elements`,
            `index_bits` is not 4 or 5, or `bytes_per_value` is not positive
            and finite.

    Example:

    ```python
    sparse_model_mb(4_210_000, 2_130_000)  # MobileNet at 50%: 9.046
    ```
    """
    _check_bytes_per_value(bytes_per_value)
    bitmask, csr = _index_bytes(num_elements, nnz, index_bits)
    return (nnz * bytes_per_value + min(bitmask, csr)) / BYTES_PER_MB


def _check_bytes_per_value(bytes_per_value: Any) -> None:
    if isinstance(bytes_per_value, (bool, np.bool_)) or not isinstance(
        bytes_per_value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            "`bytes_per_value` must be a number. "
            f"Received: bytes_per_value={bytes_per_value!r}"
        )
    if not 0 < bytes_per_value < math.inf:
        raise ValueError(
            "`bytes_per_value` must be positive and finite. "
            f"Received: bytes_per_value={bytes_per_value!r}"
        )


def _index_bytes(
    num_elements: int, nnz: int, index_bits: int
) -> tuple[int, int]:
    """Returns the ideal `(bitmask, csr)` index bytes, checking counts."""
    bitmask = bitmask_index_bytes(num_elements)
    csr = csrc_index_bytes(check_count(nnz, "nnz"), index_bits)
    if nnz > num_elements:
        raise ValueError(
            "`nnz` cannot exceed `num_elements`. "
            f"Received: nnz={nnz!r}, num_elements={num_elements!r}"
        )
    return bitmask, csr
