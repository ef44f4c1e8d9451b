"""tfmot's pruning arguments (or contrib's hparams) as one `PruningHParams`.

`prune_low_magnitude`, `PruneLowMagnitude` and per-layer arguments all take
a schedule either tfmot's way (`pruning_schedule`, `block_size`,
`block_pooling_type`, `sparsity_m_by_n`) or contrib's way (`hparams`);
`resolve_hparams` turns either into the library's one representation.
"""

from typing import Any

from model_pruning.hparams import PruningHParams
from model_pruning.schedule import ConstantSparsity
from model_pruning.schedule import PruningSchedule


def resolve_hparams(
    pruning_schedule: Any,
    block_size: Any,
    block_pooling_type: str,
    hparams: Any,
    sparsity_m_by_n: Any = None,
    pruning_scheme: str | None = None,
    mask_dtype: str | None = None,
) -> PruningHParams:
    """Returns the one `PruningHParams` that tfmot's or contrib's arguments
    describe.

    Args:
        pruning_schedule: A `PruningSchedule`, or `None` for
            `ConstantSparsity(0.5, begin_step=0)` when `hparams` is `None`.
        block_size: `(height, width)` of pruning blocks.
        block_pooling_type: `"AVG"` or `"MAX"`.
        hparams: A `PruningHParams` (contrib's way), or `None`.
        sparsity_m_by_n: `(M, N)` or `None`.
        pruning_scheme: `"uniform"`, `"layerwise"`, `"global"` or `None`.
        mask_dtype: `""` (the weight's dtype), `"uint8"` or `None`.

    Returns:
        A validated `PruningHParams`.

    Raises:
        ValueError: If both ways are mixed or an argument is invalid.
        TypeError: If `hparams` is not a `PruningHParams`.
    """
    if hparams is not None:
        if pruning_schedule is not None:
            raise ValueError(
                "Pass either `pruning_schedule` or `hparams`, not both. "
                f"Received: pruning_schedule={pruning_schedule!r}"
            )
        if (
            tuple(block_size) != (1, 1)
            or block_pooling_type != "AVG"
            or sparsity_m_by_n is not None
            or pruning_scheme is not None
            or mask_dtype is not None
        ):
            raise ValueError(
                "With `hparams`, set block_height, block_width, "
                "block_pooling_function, sparsity_m_by_n, pruning_scheme "
                "and mask_dtype in the hparams. Received: "
                f"block_size={block_size!r}, "
                f"block_pooling_type={block_pooling_type!r}, "
                f"sparsity_m_by_n={sparsity_m_by_n!r}, "
                f"pruning_scheme={pruning_scheme!r}, "
                f"mask_dtype={mask_dtype!r}"
            )
        if not isinstance(hparams, PruningHParams):
            raise TypeError(
                "`hparams` must be a PruningHParams. "
                f"Received: hparams={hparams!r}"
            )
        return hparams
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    if isinstance(pruning_schedule, PruningHParams):
        raise ValueError(
            "Contrib's hparams go by keyword: `hparams=...`. Received: "
            f"pruning_schedule={pruning_schedule!r}"
        )
    if not isinstance(pruning_schedule, PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a PruningSchedule such as "
            "PolynomialDecay or ConstantSparsity. "
            f"Received: pruning_schedule={pruning_schedule!r}"
        )
    _check_int_pair("block_size", block_size, "")
    m_by_n = ""
    if sparsity_m_by_n is not None:
        _check_int_pair("sparsity_m_by_n", sparsity_m_by_n, " (M, N)")
        m_by_n = f"{sparsity_m_by_n[0]}:{sparsity_m_by_n[1]}"
    return pruning_schedule.to_hparams().override(
        block_height=block_size[0],
        block_width=block_size[1],
        block_pooling_function=block_pooling_type,
        sparsity_m_by_n=m_by_n,
        pruning_scheme=pruning_scheme or "uniform",
        mask_dtype=mask_dtype or "",
    )


def _check_int_pair(name: str, value: Any, meaning: str) -> None:
    """Raises a `ValueError` naming `name` unless `value` is two ints."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(d, int) for d in value)
    ):
        raise ValueError(
            f"`{name}` must be a pair of integers{meaning}. "
            f"Received: {name}={value!r}"
        )
