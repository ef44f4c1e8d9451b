"""Tests of `PruningHParams`: contrib's names, defaults, parse and checks."""

import dataclasses
import json

import pytest

from model_pruning import NO_END_STEP
from model_pruning import PruningHParams
from model_pruning import get_pruning_hparams

# contrib's PruningHParamsTest spec string.
CONTRIB_SPEC = (
    "name=test,threshold_decay=0.9,pruning_frequency=10,"
    "sparsity_function_end_step=100,target_sparsity=0.9,"
    "weight_sparsity_map=[conv1:0.8,conv2/kernel:0.8],"
    "block_dims_map=[dense1:4x4,dense2:1x4]"
)

MNIST_SPEC = (
    "name=mnist,begin_pruning_step=200,end_pruning_step=3000,"
    "pruning_frequency=50,target_sparsity=0.9,"
    "sparsity_function_begin_step=200,sparsity_function_end_step=3000,"
    "weight_sparsity_map=[dense_1/kernel:0.8]"
)


def _parse(values):
    return get_pruning_hparams().parse(values)


def test_hparams_parse_contrib_init_spec():
    hparams = _parse(CONTRIB_SPEC)
    assert hparams.name == "test"
    assert hparams.threshold_decay == pytest.approx(0.9)
    assert hparams.pruning_frequency == 10
    assert hparams.sparsity_function_end_step == 100
    assert hparams.target_sparsity == pytest.approx(0.9)
    assert hparams.weight_sparsity_map == ("conv1:0.8", "conv2/kernel:0.8")
    assert hparams.block_dims_map == ("dense1:4x4", "dense2:1x4")
    # Fields not in the string keep their defaults.
    assert hparams.begin_pruning_step == 0
    assert hparams.end_pruning_step == -1


def test_hparams_defaults_match_contrib():
    # Spec table 2.1, FINAL column.
    hparams = get_pruning_hparams()
    assert hparams.name == "model_pruning"
    assert hparams.begin_pruning_step == 0
    assert hparams.end_pruning_step == -1
    assert hparams.end_pruning_step == NO_END_STEP
    assert hparams.weight_sparsity_map == ()
    assert hparams.block_dims_map == ()
    assert hparams.threshold_decay == 0.0
    assert hparams.pruning_frequency == 10
    assert hparams.nbins == 256
    assert hparams.block_height == 1
    assert hparams.block_width == 1
    assert hparams.block_pooling_function == "AVG"
    assert hparams.initial_sparsity == 0.0
    assert hparams.target_sparsity == 0.5
    assert hparams.sparsity_function_begin_step == 0
    assert hparams.sparsity_function_end_step == 100
    assert hparams.sparsity_function_exponent == 3.0
    assert hparams.use_tpu is False
    assert hparams == PruningHParams()


def test_hparams_defaults_have_contrib_types():
    hparams = get_pruning_hparams()
    assert isinstance(hparams.threshold_decay, float)
    assert isinstance(hparams.initial_sparsity, float)
    assert isinstance(hparams.target_sparsity, float)
    assert isinstance(hparams.sparsity_function_exponent, float)
    assert isinstance(hparams.pruning_frequency, int)


def test_hparams_parse_mnist_example():
    hparams = _parse(MNIST_SPEC)
    assert hparams.name == "mnist"
    assert hparams.begin_pruning_step == 200
    assert hparams.end_pruning_step == 3000
    assert hparams.pruning_frequency == 50
    assert hparams.target_sparsity == pytest.approx(0.9)
    assert hparams.sparsity_function_begin_step == 200
    assert hparams.sparsity_function_end_step == 3000
    assert hparams.weight_sparsity_map == ("dense_1/kernel:0.8",)
    assert hparams.weight_target_sparsity("dense_1/kernel") == pytest.approx(
        0.8
    )


def test_hparams_parse_returns_copy():
    base = get_pruning_hparams()
    parsed = base.parse("pruning_frequency=7")
    assert parsed.pruning_frequency == 7
    assert base.pruning_frequency == 10


def test_hparams_parse_types_and_whitespace():
    hparams = _parse(
        " initial_sparsity = 0 , sparsity_function_exponent=2 , use_tpu=true,"
        "block_pooling_function=MAX,block_height=-1,block_width=4"
    )
    assert hparams.initial_sparsity == 0.0
    assert isinstance(hparams.initial_sparsity, float)
    assert hparams.sparsity_function_exponent == 2.0
    assert isinstance(hparams.sparsity_function_exponent, float)
    assert hparams.use_tpu is True
    assert hparams.block_pooling_function == "MAX"
    assert (hparams.block_height, hparams.block_width) == (-1, 4)


@pytest.mark.parametrize(
    "values, expected",
    [
        # Unknown name.
        ("foo=1", ["foo"]),
        ("name=x,do_not_prune=[conv1]", ["do_not_prune"]),
        # Malformed values.
        ("pruning_frequency=abc", ["pruning_frequency", "abc"]),
        ("target_sparsity=x", ["target_sparsity", "'x'"]),
        ("begin_pruning_step=1.5", ["begin_pruning_step", "1.5"]),
        ("use_tpu=maybe", ["use_tpu", "maybe"]),
        # Entries without '='.
        ("target_sparsity", ["target_sparsity"]),
        ("name=a,pruning_frequency10", ["pruning_frequency10"]),
        ("=5", ["=5"]),
        # Unbalanced brackets.
        ("weight_sparsity_map=[conv1:0.8", ["weight_sparsity_map", "conv1"]),
        ("weight_sparsity_map=conv1:0.8]", ["weight_sparsity_map", "conv1"]),
        # A list without brackets.
        ("weight_sparsity_map=conv1:0.8", ["weight_sparsity_map", "conv1:0.8"]),
        ("block_dims_map=dense1:4x4", ["block_dims_map", "dense1:4x4"]),
        # Set twice.
        ("pruning_frequency=1,pruning_frequency=2", ["pruning_frequency"]),
    ],
)
def test_hparams_parse_rejects_malformed_string(values, expected):
    with pytest.raises(ValueError) as error:
        _parse(values)
    for text in expected:
        assert text in str(error.value)


@pytest.mark.parametrize(
    "field", ["initial_sparsity", "target_sparsity", "threshold_decay"]
)
@pytest.mark.parametrize("value", ["1.0", "-0.1", "1.5"])
def test_hparams_parse_rejects_sparsity_outside_unit_interval(field, value):
    with pytest.raises(ValueError, match=r"\[0,1\)") as error:
        _parse(f"{field}={value}")
    assert field in str(error.value)
    assert value in str(error.value)


@pytest.mark.parametrize(
    "field", ["initial_sparsity", "target_sparsity", "threshold_decay"]
)
@pytest.mark.parametrize("value", [0.0, 0.999])
def test_hparams_parse_accepts_unit_interval_edges(field, value):
    assert getattr(_parse(f"{field}={value}"), field) == value


@pytest.mark.parametrize("begin, end", [(10, 10), (11, 10), (0, 0)])
def test_hparams_parse_rejects_begin_not_before_end(begin, end):
    with pytest.raises(
        ValueError, match="Pruning must begin before it can end"
    ) as error:
        _parse(f"begin_pruning_step={begin},end_pruning_step={end}")
    assert f"end_pruning_step={end}" in str(error.value)


@pytest.mark.parametrize("begin", [0, 1, 100, 10**6])
def test_hparams_parse_allows_no_end_step(begin):
    hparams = _parse(f"begin_pruning_step={begin},end_pruning_step=-1")
    assert hparams.begin_pruning_step == begin
    assert hparams.end_pruning_step == NO_END_STEP


def test_hparams_parse_rejects_end_step_below_minus_one():
    with pytest.raises(ValueError, match="end_pruning_step=-2"):
        _parse("end_pruning_step=-2")


@pytest.mark.parametrize("begin, end", [(100, 100), (101, 100), (5, 0)])
def test_hparams_parse_rejects_sparsity_function_begin_not_before_end(
    begin, end
):
    with pytest.raises(
        ValueError, match="Sparsity function requires begin_step < end_step"
    ) as error:
        _parse(
            f"sparsity_function_begin_step={begin},"
            f"sparsity_function_end_step={end}"
        )
    assert f"sparsity_function_end_step={end}" in str(error.value)


@pytest.mark.parametrize(
    "field", ["begin_pruning_step", "sparsity_function_begin_step"]
)
def test_hparams_parse_rejects_negative_begin_step(field):
    with pytest.raises(ValueError, match=f"{field}=-1"):
        _parse(f"{field}=-1")


@pytest.mark.parametrize("value", [0, -1, -10])
def test_hparams_parse_rejects_pruning_frequency_below_one(value):
    with pytest.raises(ValueError, match=f"pruning_frequency={value}"):
        _parse(f"pruning_frequency={value}")


@pytest.mark.parametrize("value", ["MIN", "avg", "SUM", ""])
def test_hparams_parse_rejects_bad_pooling_function(value):
    with pytest.raises(ValueError) as error:
        _parse(f"block_pooling_function={value}")
    assert "block_pooling_function" in str(error.value)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("field", ["block_height", "block_width"])
@pytest.mark.parametrize("value", [0, -2])
def test_hparams_parse_rejects_bad_block_size(field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        _parse(f"{field}={value}")


@pytest.mark.parametrize(
    "entry",
    [
        "conv1",
        "conv1:",
        ":0.8",
        "conv1:abc",
        "conv1:1.0",
        "conv1:1.5",
        "c:-0.1",
    ],
)
def test_hparams_parse_rejects_bad_weight_sparsity_map_entry(entry):
    with pytest.raises(ValueError) as error:
        _parse(f"weight_sparsity_map=[{entry}]")
    assert "weight_sparsity_map" in str(error.value)
    assert entry in str(error.value)


def test_hparams_parse_rejects_weight_sparsity_at_one_with_contrib_text():
    with pytest.raises(ValueError, match="Weight sparsity can not exceed 1.0"):
        _parse("weight_sparsity_map=[conv1:0.5,conv2:1.0]")


@pytest.mark.parametrize(
    "entry", ["dense1:4", "dense1:4x4x4", "dense1:ax4", "dense1:4x"]
)
def test_hparams_parse_rejects_bad_block_dims_map_value(entry):
    with pytest.raises(
        ValueError, match="Expected 2 values for block dim"
    ) as error:
        _parse(f"block_dims_map=[{entry}]")
    message = str(error.value)
    assert "block_dims_map" in message
    assert entry.rpartition(":")[2] in message


@pytest.mark.parametrize("entry", ["dense1", ":4x4"])
def test_hparams_parse_rejects_block_dims_map_entry_without_regex(entry):
    with pytest.raises(ValueError) as error:
        _parse(f"block_dims_map=[{entry}]")
    assert "block_dims_map" in str(error.value)
    assert entry in str(error.value)


@pytest.mark.parametrize("entry", ["dense1:0x4", "dense1:4x-2"])
def test_hparams_parse_rejects_nonpositive_block_dims(entry):
    with pytest.raises(ValueError) as error:
        _parse(f"block_dims_map=[{entry}]")
    assert "block_dims_map" in str(error.value)
    assert entry in str(error.value)


@pytest.mark.parametrize(
    "values, field, pattern",
    [
        ("weight_sparsity_map=[conv(1:0.8]", "weight_sparsity_map", "conv(1"),
        ("weight_sparsity_map=[*conv:0.8]", "weight_sparsity_map", "*conv"),
        ("block_dims_map=[dense(:4x4]", "block_dims_map", "dense("),
    ],
)
def test_hparams_parse_rejects_invalid_regex(values, field, pattern):
    with pytest.raises(ValueError, match="regex") as error:
        _parse(values)
    assert field in str(error.value)
    assert pattern in str(error.value)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"target_sparsity": 1.0}, "target_sparsity"),
        ({"initial_sparsity": -0.1}, "initial_sparsity"),
        ({"threshold_decay": 1.0}, "threshold_decay"),
        ({"pruning_frequency": 0}, "pruning_frequency"),
        ({"begin_pruning_step": -1}, "begin_pruning_step"),
        ({"begin_pruning_step": 5, "end_pruning_step": 5}, "end_pruning_step"),
        ({"end_pruning_step": -3}, "end_pruning_step"),
        (
            {"sparsity_function_begin_step": 100},
            "sparsity_function_begin_step",
        ),
        ({"sparsity_function_exponent": 0.0}, "sparsity_function_exponent"),
        ({"block_height": 0}, "block_height"),
        ({"block_pooling_function": "avg"}, "block_pooling_function"),
        ({"pruning_frequency": "10"}, "pruning_frequency"),
        ({"pruning_frequency": 2.0}, "pruning_frequency"),
        ({"begin_pruning_step": True}, "begin_pruning_step"),
        ({"weight_sparsity_map": "conv1:0.8"}, "weight_sparsity_map"),
        ({"weight_sparsity_map": ["conv1:1.0"]}, "weight_sparsity_map"),
        ({"block_dims_map": ["dense1:4"]}, "block_dims_map"),
    ],
)
def test_hparams_constructor_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError) as error:
        PruningHParams(**kwargs)
    assert field in str(error.value)


def test_hparams_override_rejects_unknown_name():
    with pytest.raises(ValueError, match="gradient_decay_rate"):
        get_pruning_hparams().override(gradient_decay_rate=0.9)


def test_hparams_override_validates():
    with pytest.raises(ValueError, match="target_sparsity"):
        get_pruning_hparams().override(target_sparsity=1.0)


def test_hparams_is_frozen():
    hparams = get_pruning_hparams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        hparams.target_sparsity = 0.9


@pytest.mark.parametrize(
    "hparams",
    [
        PruningHParams(),
        PruningHParams().parse(CONTRIB_SPEC),
        PruningHParams().parse(MNIST_SPEC),
        PruningHParams(
            block_height=-1,
            block_width=4,
            block_pooling_function="MAX",
            initial_sparsity=0.1,
            sparsity_function_exponent=2.0,
            use_tpu=True,
            nbins=100,
        ),
    ],
)
def test_hparams_config_round_trip(hparams):
    values = hparams.values()
    assert set(values) == {f.name for f in dataclasses.fields(hparams)}
    assert isinstance(values["weight_sparsity_map"], list)
    assert isinstance(values["block_dims_map"], list)
    assert values["weight_sparsity_map"] == list(hparams.weight_sparsity_map)
    assert values["block_dims_map"] == list(hparams.block_dims_map)
    assert hparams.get_config() == values

    assert PruningHParams.from_config(values) == hparams
    assert PruningHParams.from_config(hparams.get_config()) == hparams
    from_json = PruningHParams.from_config(json.loads(hparams.to_json()))
    assert from_json == hparams
    # Exact types survive JSON (ints stay ints, floats stay floats).
    for field in dataclasses.fields(hparams):
        assert type(getattr(from_json, field.name)) is type(
            getattr(hparams, field.name)
        )


def test_hparams_values_are_a_copy():
    hparams = PruningHParams().parse(CONTRIB_SPEC)
    values = hparams.values()
    values["weight_sparsity_map"].append("conv3:0.5")
    values["target_sparsity"] = 0.1
    assert hparams.weight_sparsity_map == ("conv1:0.8", "conv2/kernel:0.8")
    assert hparams.target_sparsity == pytest.approx(0.9)


def test_hparams_contrib_empty_list_spelling():
    assert PruningHParams(weight_sparsity_map=[""]).weight_sparsity_map == ()
    assert PruningHParams(block_dims_map=[""]).block_dims_map == ()
    assert PruningHParams(weight_sparsity_map=[""]) == PruningHParams()
    parsed = _parse("weight_sparsity_map=[],block_dims_map=[]")
    assert parsed.weight_sparsity_map == ()
    assert parsed.block_dims_map == ()
    assert parsed == PruningHParams()


def test_hparams_list_fields_become_tuples():
    hparams = PruningHParams(
        weight_sparsity_map=["conv1:0.8"], block_dims_map=["dense1:2x2"]
    )
    assert hparams.weight_sparsity_map == ("conv1:0.8",)
    assert hparams.block_dims_map == ("dense1:2x2",)
    assert hparams == PruningHParams(
        weight_sparsity_map=("conv1:0.8",), block_dims_map=("dense1:2x2",)
    )
    hash(hparams)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("conv1", 0.8),
        ("model/conv1/kernel", 0.8),  # search, not match
        ("conv2/kernel", 0.7),
        ("conv2/kernel:0", 0.7),
        ("block/conv2/kernel", 0.7),
        ("conv2/bias", None),
        ("dense/kernel", None),
        ("conv", None),
    ],
)
def test_hparams_weight_target_sparsity_regex_search(path, expected):
    hparams = _parse("weight_sparsity_map=[conv1:0.8,conv2/kernel:0.7]")
    result = hparams.weight_target_sparsity(path)
    if expected is None:
        assert result is None
    else:
        assert isinstance(result, float)
        assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("layer1/kernel", 0.6),
        ("layer12/kernel", 0.6),
        ("xlayer1/kernel", None),  # anchored by ^
        ("layer1/kernel/extra", None),  # anchored by $
        ("layerA/kernel", None),
    ],
)
def test_hparams_weight_target_sparsity_uses_regex_syntax(path, expected):
    hparams = PruningHParams(weight_sparsity_map=[r"^layer\d+/kernel$:0.6"])
    result = hparams.weight_target_sparsity(path)
    assert result == (None if expected is None else pytest.approx(expected))


def test_hparams_weight_target_sparsity_pattern_may_contain_colon():
    # The value is after the last ':'; the regex may contain ':'.
    hparams = PruningHParams(weight_sparsity_map=["kernel:0$:0.3"])
    assert hparams.weight_target_sparsity("dense/kernel:0") == pytest.approx(
        0.3
    )
    assert hparams.weight_target_sparsity("dense/kernel") is None


def test_hparams_weight_target_sparsity_multiple_matches():
    hparams = _parse("weight_sparsity_map=[conv:0.8,kernel:0.7]")
    with pytest.raises(ValueError, match="Multiple matches") as error:
        hparams.weight_target_sparsity("conv1/kernel")
    assert "conv1/kernel" in str(error.value)
    # One match is fine.
    assert hparams.weight_target_sparsity("conv1/bias") == pytest.approx(0.8)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("dense1/kernel", (4, 4)),
        ("model/dense1/kernel", (4, 4)),
        ("dense2/kernel", (1, 4)),
        ("dense3/kernel", (2, 3)),
        ("conv/kernel", (2, 3)),
    ],
)
def test_hparams_block_dims_regex_search_and_default(path, expected):
    hparams = _parse(
        "block_height=2,block_width=3,block_dims_map=[dense1:4x4,dense2:1x4]"
    )
    assert hparams.block_dims(path) == expected


def test_hparams_block_dims_default_is_one_by_one():
    assert get_pruning_hparams().block_dims("dense/kernel") == (1, 1)


def test_hparams_block_dims_accepts_minus_one():
    hparams = PruningHParams(block_dims_map=["rows:1x-1", "cols:-1x1"])
    assert hparams.block_dims("rows/kernel") == (1, -1)
    assert hparams.block_dims("cols/kernel") == (-1, 1)


def test_hparams_block_dims_multiple_matches():
    hparams = _parse("block_dims_map=[dense:4x4,kernel:1x4]")
    with pytest.raises(ValueError, match="Multiple matches") as error:
        hparams.block_dims("dense1/kernel")
    assert "dense1/kernel" in str(error.value)
    assert hparams.block_dims("dense1/bias") == (4, 4)
