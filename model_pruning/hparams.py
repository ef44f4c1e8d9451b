"""Pruning hyperparameters: contrib's names, defaults, parse syntax and checks.

`PruningHParams` is the one internal description of how a weight is pruned.
The tfmot-style schedules (`PolynomialDecay`, `ConstantSparsity`) and the
`block_size` arguments of `prune_low_magnitude` are converted to it, and it is
what a pruned layer stores in its config.
"""

import dataclasses
import json
import re
from typing import Any

NO_END_STEP = -1
"""`end_pruning_step` meaning "update masks until training stops"."""

POOLING_FUNCTIONS = ("AVG", "MAX")

PRUNING_SCHEMES = ("uniform", "layerwise", "global")
"""Section 4.3 of the paper: every weight on one schedule; one layer at a
time within each pruning interval; one threshold across all weights."""

MASK_DTYPES = ("", "uint8")
"""`""`: each mask has its weight's dtype (contrib's and tfmot's); `"uint8"`:
one byte per entry (a quarter of a float32 mask's memory)."""

_LIST_FIELDS = ("weight_sparsity_map", "block_dims_map")


@dataclasses.dataclass(frozen=True)
class PruningHParams:
    """Hyperparameters of gradual magnitude pruning (contrib's `HParams`).

    The target sparsity at global step `t` is the continuous form of eq. (1)
    of Zhu & Gupta (2017), arXiv:1710.01878, from `initial_sparsity` at
    `sparsity_function_begin_step` to `target_sparsity` at
    `sparsity_function_end_step` (`schedule.target_sparsity` states it).

    Masks are updated at step `t` when `begin_pruning_step <= t`,
    `last_mask_update_step + pruning_frequency <= t` and `t` is not after
    `end_pruning_step`; one more update happens at the first step at or after
    `end_pruning_step` so the final target is always reached.

    Args:
        name: Name of the pruning spec, used for summaries. Defaults to
            `"model_pruning"`.
        begin_pruning_step: First global step at which masks may update.
            Defaults to `0`.
        end_pruning_step: Last global step at which masks update;
            `NO_END_STEP` (`-1`) keeps updating until training stops.
            Defaults to `-1`.
        weight_sparsity_map: Entries `"regex:sparsity"`. A weight whose path
            matches `regex` (`re.search`) is pruned to `sparsity` instead of
            `target_sparsity`: its schedule is scaled by
            `sparsity / target_sparsity`. Defaults to `()`.
        block_dims_map: Entries `"regex:HxW"` giving per-weight block
            dimensions. Defaults to `()`.
        threshold_decay: Exponential-moving-average factor of the threshold,
            in `[0, 1)`. Defaults to `0.0`.
        pruning_frequency: Minimum number of global steps between two mask
            updates, at least 1. Defaults to `10`.
        nbins: Histogram bins of contrib's early threshold rule; kept for
            hparams-string compatibility, unused. Defaults to `256`.
        block_height: Rows of a pruning block of a rank-2 weight, `-1` for the
            whole dimension. Defaults to `1`.
        block_width: Columns of a pruning block, `-1` for the whole
            dimension. Defaults to `1`.
        block_pooling_function: `"AVG"` or `"MAX"` of `|w|` over a block.
            Defaults to `"AVG"`.
        initial_sparsity: Sparsity `s_i` at the schedule's begin step, in
            `[0, 1)`. Defaults to `0.0`.
        target_sparsity: Sparsity `s_f` reached at the schedule's end step, in
            `[0, 1)`. Defaults to `0.5`.
        sparsity_function_begin_step: Step `t0` where the schedule starts.
            Defaults to `0`.
        sparsity_function_end_step: Step where the schedule reaches
            `target_sparsity`. Defaults to `100`.
        sparsity_function_exponent: Power of the schedule. Defaults to `3.0`.
        use_tpu: Accepted for hparams-string compatibility; no effect.
            Defaults to `False`.
        pruning_scheme: How the weights of a model share the schedule (the
            paper's section 4.3). `"uniform"`: every weight reaches the
            schedule's sparsity at every update. `"layerwise"` ("layerwise
            constant"): each pruning interval is split among the `L` pruned
            layers, and layer `j` runs the schedule delayed by
            `j * pruning_frequency // L` steps, so within an interval one
            layer at a time reaches that interval's sparsity.
            `"global"`: one magnitude threshold across all pruned weights, so
            the model's total reaches the target while layers end at
            different sparsities. Defaults to `"uniform"`.
        sparsity_m_by_n: `"M:N"` (for instance `"2:4"`): at every update,
            keep the `N - M` largest magnitudes of each group of `N`
            consecutive weights along the input dimension (axis -2), so every
            group has at least `M` zeros; the schedule then says only when
            masks update. `""` turns it off. Defaults to `""`.
        mask_dtype: `""`: each mask variable has its weight's dtype, as in
            contrib and tfmot. `"uint8"`: masks of 0 and 1 in one byte per
            entry, which saves three quarters of a float32 mask's memory
            and of its read in every optimizer step; the masks chosen are
            the same. For `PruneLowMagnitude` (contrib's masked layers keep
            their masks in the weight's dtype). Defaults to `""`.

    Raises:
        ValueError: If a value is out of range; the message names the field
            and the value received.
    """

    name: str = "model_pruning"
    begin_pruning_step: int = 0
    end_pruning_step: int = NO_END_STEP
    weight_sparsity_map: tuple[str, ...] = ()
    block_dims_map: tuple[str, ...] = ()
    threshold_decay: float = 0.0
    pruning_frequency: int = 10
    nbins: int = 256
    block_height: int = 1
    block_width: int = 1
    block_pooling_function: str = "AVG"
    initial_sparsity: float = 0.0
    target_sparsity: float = 0.5
    sparsity_function_begin_step: int = 0
    sparsity_function_end_step: int = 100
    sparsity_function_exponent: float = 3.0
    use_tpu: bool = False
    pruning_scheme: str = "uniform"
    sparsity_m_by_n: str = ""
    mask_dtype: str = ""

    def __post_init__(self) -> None:
        for field in _LIST_FIELDS:
            value = getattr(self, field)
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise ValueError(
                    f"`{field}` must be a list of strings. "
                    f"Received: {field}={value!r}"
                )
            # An empty entry is contrib's spelling of an empty list (`['']`).
            entries = tuple(str(v) for v in value if str(v) != "")
            object.__setattr__(self, field, entries)
        _validate(self)

    def parse(self, values: str) -> "PruningHParams":
        """Returns a copy with the fields set in `values`, validated.

        Args:
            values: Comma-separated `name=value` pairs; list values are written
                in brackets, as `weight_sparsity_map=[conv1:0.8,fc/kernel:0.9]`.

        Returns:
            A new `PruningHParams`.

        Raises:
            ValueError: If a name is unknown, a value is malformed or the result
                fails validation.
        """
        return self.override(**_parse_assignments(values))

    def override(self, **changes: Any) -> "PruningHParams":
        """Returns a validated copy with `changes` applied."""
        unknown = sorted(set(changes) - set(_FIELD_TYPES))
        if unknown:
            raise ValueError(
                f"Unknown pruning hyperparameter: {unknown[0]!r}. "
                f"Known names: {', '.join(_FIELD_TYPES)}."
            )
        return dataclasses.replace(self, **changes)

    def values(self) -> dict[str, Any]:
        """Returns the fields as a dict (lists as Python lists)."""
        return {
            k: list(v) if k in _LIST_FIELDS else v
            for k, v in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        """Returns the fields as a JSON string, as contrib's `HParams`."""
        return json.dumps(self.values(), sort_keys=True)

    get_config = values

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PruningHParams":
        """Builds hparams from `values()` / `get_config()` output."""
        return cls().override(**config)

    @property
    def m_by_n(self) -> tuple[int, int] | None:
        """`sparsity_m_by_n` as `(M, N)`, or `None` when it is off."""
        if not self.sparsity_m_by_n:
            return None
        return _parse_m_by_n(self.sparsity_m_by_n)

    def weight_target_sparsity(self, weight_path: str) -> float | None:
        """Returns the `weight_sparsity_map` value for a weight, or `None`.

        Raises:
            ValueError: If more than one entry matches `weight_path`.
        """
        value = _single_match(
            "weight_sparsity_map", self.weight_sparsity_map, weight_path
        )
        return None if value is None else float(value)

    def sparsity_scale(self, weight_path: str) -> float:
        """The factor `weight_sparsity_map` puts on the schedule for this
        weight: `sparsity / target_sparsity`, or 1.0 when no entry matches.
        """
        mapped = self.weight_target_sparsity(weight_path)
        return 1.0 if mapped is None else mapped / self.target_sparsity

    def block_dims(self, weight_path: str) -> tuple[int, int]:
        """Returns the block dimensions `(height, width)` for a weight.

        Raises:
            ValueError: If more than one `block_dims_map` entry matches.
        """
        value = _single_match(
            "block_dims_map", self.block_dims_map, weight_path
        )
        if value is None:
            return (self.block_height, self.block_width)
        return _parse_block_dims(value)


def unmatched_map_entries(
    hparams: PruningHParams, weight_names: list[str]
) -> list[str]:
    """Returns the `weight_sparsity_map` / `block_dims_map` entries whose
    regex matches none of `weight_names`, as `"field entry"` strings."""
    unmatched = []
    for field in _LIST_FIELDS:
        for entry in getattr(hparams, field):
            pattern = entry.rpartition(":")[0]
            if not any(re.search(pattern, name) for name in weight_names):
                unmatched.append(f"{field} entry {entry!r}")
    return unmatched


def get_pruning_hparams() -> PruningHParams:
    """Returns the default pruning hyperparameters (contrib's defaults).

    Example:

    >>> hparams = get_pruning_hparams().parse(
    ...     "target_sparsity=0.9,sparsity_function_end_step=3000")
    >>> hparams.target_sparsity
    0.9
    """
    return PruningHParams()


_FIELD_TYPES = {
    f.name: type(f.default) for f in dataclasses.fields(PruningHParams)
}


def _split_top_level(text: str) -> list[str]:
    """Splits `text` on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced ']' in hparams string: {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"Unbalanced '[' in hparams string: {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_assignments(text: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ValueError(
            f"`values` must be a string of name=value pairs. Received: {text!r}"
        )
    result: dict[str, Any] = {}
    for part in _split_top_level(text):
        name, sep, raw = part.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name:
            raise ValueError(
                f"Malformed hparams entry {part!r}: expected name=value."
            )
        if name not in _FIELD_TYPES:
            raise ValueError(
                f"Unknown pruning hyperparameter: {name!r}. "
                f"Known names: {', '.join(_FIELD_TYPES)}."
            )
        if name in result:
            raise ValueError(f"Pruning hyperparameter {name!r} is set twice.")
        result[name] = _parse_value(name, raw)
    return result


def _parse_value(name: str, raw: str) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind is tuple:
            if not (raw.startswith("[") and raw.endswith("]")):
                raise ValueError("a list must be written in brackets")
            inner = raw[1:-1].strip()
            return tuple(s.strip() for s in inner.split(",")) if inner else ()
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return raw.lower() in ("true", "1")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError as error:
        raise ValueError(
            f"Could not parse pruning hyperparameter {name!r} as "
            f"{kind.__name__}: {error}. Received: {name}={raw!r}"
        ) from None


def _parse_block_dims(value: str) -> tuple[int, int]:
    parts = value.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"Expected 2 values for block dim, written HxW. Received: {value!r}"
        ) from None
    return height, width


def _parse_m_by_n(value: str) -> tuple[int, int]:
    parts = value.split(":")
    try:
        zeros, group = (int(p) for p in parts)
    except ValueError:
        raise ValueError(
            "sparsity_m_by_n must be written 'M:N' with integers, for "
            f"instance '2:4'. Received: sparsity_m_by_n={value!r}"
        ) from None
    if not 0 < zeros < group:
        raise ValueError(
            "sparsity_m_by_n 'M:N' needs 0 < M < N. "
            f"Received: sparsity_m_by_n={value!r}"
        )
    return zeros, group


def _single_match(
    field: str, entries: tuple[str, ...], path: str
) -> str | None:
    matches = []
    for entry in entries:
        pattern, _, value = entry.rpartition(":")
        if re.search(pattern, path):
            matches.append(value)
    if len(matches) > 1:
        raise ValueError(
            f"Multiple matches in {field} for weight {path}. "
            f"Received: {field}={list(entries)}"
        )
    return matches[0] if matches else None


def _check_unit_interval(spec: PruningHParams, field: str) -> None:
    value = getattr(spec, field)
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{field} must be in range [0,1). Received: {field}={value}"
        )


def _validate(spec: PruningHParams) -> None:
    for field, kind in _FIELD_TYPES.items():
        value = getattr(spec, field)
        ok = isinstance(value, kind) or (
            kind is float and isinstance(value, int)
        )
        if kind in (int, float) and isinstance(value, bool):
            ok = False
        if not ok:
            raise ValueError(
                f"`{field}` must be of type {kind.__name__}. "
                f"Received: {field}={value!r}"
            )
    if spec.begin_pruning_step < 0:
        raise ValueError(
            "Illegal value for begin_pruning_step. "
            f"Received: begin_pruning_step={spec.begin_pruning_step}"
        )
    if (
        spec.end_pruning_step != NO_END_STEP
        and spec.begin_pruning_step >= spec.end_pruning_step
    ):
        raise ValueError(
            "Pruning must begin before it can end. Set end_pruning_step to -1 "
            "if pruning is required till training stops. Received: "
            f"begin_pruning_step={spec.begin_pruning_step}, "
            f"end_pruning_step={spec.end_pruning_step}"
        )
    if spec.end_pruning_step < NO_END_STEP:
        raise ValueError(
            "end_pruning_step must be -1 (no end) or a step >= 0. "
            f"Received: end_pruning_step={spec.end_pruning_step}"
        )
    if spec.sparsity_function_begin_step < 0:
        raise ValueError(
            "Illegal value for sparsity_function_begin_step. Received: "
            f"sparsity_function_begin_step={spec.sparsity_function_begin_step}"
        )
    if spec.sparsity_function_begin_step >= spec.sparsity_function_end_step:
        raise ValueError(
            "Sparsity function requires begin_step < end_step. Received: "
            f"sparsity_function_begin_step={spec.sparsity_function_begin_step}"
            f", sparsity_function_end_step={spec.sparsity_function_end_step}"
        )
    for field in ("threshold_decay", "initial_sparsity", "target_sparsity"):
        _check_unit_interval(spec, field)
    if spec.pruning_frequency < 1:
        raise ValueError(
            "pruning_frequency must be at least 1. "
            f"Received: pruning_frequency={spec.pruning_frequency}"
        )
    if spec.sparsity_function_exponent <= 0:
        raise ValueError(
            "sparsity_function_exponent must be positive. Received: "
            f"sparsity_function_exponent={spec.sparsity_function_exponent}"
        )
    for field in ("block_height", "block_width"):
        value = getattr(spec, field)
        if value == 0 or value < -1:
            raise ValueError(
                f"{field} must be a positive integer or -1 (whole dimension)."
                f" Received: {field}={value}"
            )
    if spec.block_pooling_function not in POOLING_FUNCTIONS:
        raise ValueError(
            "Unknown pooling function for block sparsity: expected AVG or "
            "MAX. Received: "
            f"block_pooling_function={spec.block_pooling_function!r}"
        )
    if spec.pruning_scheme not in PRUNING_SCHEMES:
        raise ValueError(
            f"pruning_scheme must be one of {', '.join(PRUNING_SCHEMES)}. "
            f"Received: pruning_scheme={spec.pruning_scheme!r}"
        )
    if spec.sparsity_m_by_n:
        _parse_m_by_n(spec.sparsity_m_by_n)
    if spec.mask_dtype not in MASK_DTYPES:
        raise ValueError(
            "mask_dtype must be '' (the weight's dtype) or 'uint8'. "
            f"Received: mask_dtype={spec.mask_dtype!r}"
        )
    if spec.pruning_scheme == "global":
        conflicts = {
            "weight_sparsity_map": spec.weight_sparsity_map,
            "block_dims_map": spec.block_dims_map,
            "sparsity_m_by_n": spec.sparsity_m_by_n,
        }
        if (spec.block_height, spec.block_width) != (1, 1):
            conflicts["block_height/block_width"] = (
                f"{spec.block_height}x{spec.block_width}"
            )
        for field, value in conflicts.items():
            if value:
                raise ValueError(
                    "pruning_scheme='global' uses one threshold for all "
                    f"weights, so {field} cannot be set with it. "
                    f"Received: {field}={value!r}"
                )
    for entry in spec.weight_sparsity_map:
        pattern, sep, value = entry.rpartition(":")
        try:
            sparsity = float(value)
        except ValueError:
            sparsity = None
        if not sep or not pattern or sparsity is None:
            raise ValueError(
                "weight_sparsity_map entries must be 'regex:sparsity'. "
                f"Received: {entry!r}"
            )
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(
                "Weight sparsity can not exceed 1.0: weight_sparsity_map "
                f"values must be in [0,1). Received: {entry!r}"
            )
        if spec.target_sparsity == 0.0:
            raise ValueError(
                "weight_sparsity_map scales the schedule by "
                "sparsity / target_sparsity and needs target_sparsity > 0. "
                f"Received: target_sparsity={spec.target_sparsity}"
            )
        _compile(pattern, "weight_sparsity_map")
    for entry in spec.block_dims_map:
        pattern, sep, value = entry.rpartition(":")
        if not sep or not pattern:
            raise ValueError(
                "block_dims_map entries must be 'regex:HxW'. "
                f"Received: {entry!r}"
            )
        try:
            height, width = _parse_block_dims(value)
        except ValueError as error:
            raise ValueError(
                f"Invalid block_dims_map entry: {error}. "
                f"Received: block_dims_map entry {entry!r}"
            ) from None
        if height == 0 or width == 0 or height < -1 or width < -1:
            raise ValueError(
                "block_dims_map dimensions must be positive or -1. "
                f"Received: {entry!r}"
            )
        _compile(pattern, "block_dims_map")


def _compile(pattern: str, field: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"Invalid regex in {field}: {error}. Received: {pattern!r}"
        ) from None
