"""Tests of `sparsity_report` and the paper-scale size helpers."""

import gzip
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import as_numpy

import model_pruning as mp
from model_pruning.paper_sizes import overhead_mb
from model_pruning.paper_sizes import sparse_model_mb
from model_pruning.report import SizeCounts
from model_pruning.report import SparsityReport
from model_pruning.report import WeightReport
from model_pruning.report import print_sparsity_report
from model_pruning.report import sparsity_report
from model_pruning.sparse_formats import decode_csrc
from model_pruning.sparse_formats import encode_bitmask
from model_pruning.sparse_formats import encode_csrc
from model_pruning.sparse_formats import quantization_error

# Zhu & Gupta (2017), Tables 5 and 6: MobileNet, 4.21M weights.
_MOBILENET_WEIGHTS = 4_210_000
_TABLE_5 = [
    # (sparsity, NNZ, bit-mask MB, CSR(C) MB)
    (0.50, 2_130_000, 0.52, 1.06),
    (0.75, 1_090_000, 0.52, 0.54),
    (0.90, 460_000, 0.52, 0.23),
    (0.95, 250_000, 0.52, 0.13),
]
_TABLE_6_LARGE_SPARSE_MB = [9.04, 4.88, 2.07, 1.13]
_PAPER_TOLERANCE_MB = 0.01


def _model():
    """64 -> Dense 128 relu -> Dense 10, with non-zero biases."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                128, activation="relu", bias_initializer="random_normal"
            ),
            keras.layers.Dense(10, bias_initializer="random_normal"),
        ]
    )


def _pruned(sparsity=0.9):
    """A pruned `_model` whose masks are set to `sparsity` at once."""
    pruned = mp.prune_low_magnitude(
        _model(),
        pruning_schedule=mp.ConstantSparsity(
            sparsity, begin_step=0, frequency=1
        ),
    )
    mp.Pruning(
        model=pruned, global_step=tf.Variable(1, dtype=tf.int64)
    ).mask_update_op()
    return pruned


@pytest.fixture(scope="module")
def pruned():
    keras.utils.set_random_seed(7)
    return _pruned()


@pytest.fixture(scope="module")
def stripped_arrays(pruned):
    """The stripped model's weights by path, as NumPy arrays."""
    return {w.path: as_numpy(w) for w in mp.strip_pruning(pruned).weights}


@pytest.fixture(scope="module")
def report(pruned):
    return sparsity_report(pruned)


# Paper-scale counts (Tables 5 and 6).


@pytest.mark.parametrize("sparsity, nnz, bitmask_mb, csr_mb", _TABLE_5)
def test_overhead_mb_recomputes_table_5(sparsity, nnz, bitmask_mb, csr_mb):
    del sparsity  # The paper's NNZ counts more than the pruned weights.
    overheads = overhead_mb(_MOBILENET_WEIGHTS, nnz)
    assert overheads["bitmask_mb"] == pytest.approx(
        bitmask_mb, abs=_PAPER_TOLERANCE_MB
    )
    assert overheads["csr_mb"] == pytest.approx(csr_mb, abs=_PAPER_TOLERANCE_MB)


@pytest.mark.parametrize(
    "nnz, expected_mb",
    [
        (nnz, mb)
        for (_, nnz, _, _), mb in zip(
            _TABLE_5, _TABLE_6_LARGE_SPARSE_MB, strict=True
        )
    ],
)
def test_sparse_model_mb_recomputes_table_6(nnz, expected_mb):
    size = sparse_model_mb(_MOBILENET_WEIGHTS, nnz)
    assert size == pytest.approx(expected_mb, abs=_PAPER_TOLERANCE_MB)


def test_sparse_model_mb_is_values_plus_smaller_overhead():
    overheads = overhead_mb(1000, 100, index_bits=5)
    expected = 100 * 1 / 1e6 + min(overheads.values())
    assert sparse_model_mb(1000, 100, 5, bytes_per_value=1) == expected
    assert overheads == {"bitmask_mb": 125 / 1e6, "csr_mb": 63 / 1e6}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_elements": 10, "nnz": 11}, ValueError, "nnz"),
        ({"num_elements": 10, "nnz": -1}, ValueError, r"Received: nnz=-1"),
        ({"num_elements": 10, "nnz": 1.0}, TypeError, r"Received: nnz=1.0"),
        ({"num_elements": -1, "nnz": 0}, ValueError, "num_elements"),
        ({"num_elements": 10.0, "nnz": 1}, TypeError, "num_elements"),
        ({"num_elements": 10, "nnz": 1, "index_bits": 3}, ValueError, "index"),
    ],
)
def test_overhead_mb_rejects_bad_counts(kwargs, error, match):
    with pytest.raises(error, match=match):
        overhead_mb(**kwargs)


@pytest.mark.parametrize(
    "bytes_per_value, error", [(0, ValueError), ("4", TypeError)]
)
def test_sparse_model_mb_rejects_bad_bytes_per_value(bytes_per_value, error):
    with pytest.raises(error, match="bytes_per_value"):
        sparse_model_mb(10, 1, bytes_per_value=bytes_per_value)


# Reports of a pruned model.


def test_report_lists_every_stripped_weight(report, stripped_arrays):
    assert isinstance(report, SparsityReport)
    assert [w.name for w in report.weights] == list(stripped_arrays)
    for weight in report.weights:
        array = stripped_arrays[weight.name]
        assert isinstance(weight, WeightReport)
        assert weight.shape == array.shape
        assert weight.dtype == "float32"


def test_counts_match_numpy(report, stripped_arrays):
    for weight in report.weights:
        array = stripped_arrays[weight.name]
        nnz = np.count_nonzero(array)
        assert weight.size == array.size
        assert weight.nnz == nnz
        assert weight.sparsity == pytest.approx(1 - nnz / array.size)
        assert weight.dense_bytes == array.nbytes


def test_kernels_are_90_percent_sparse_and_only_they_are_pruned(report):
    for weight in report.weights:
        is_kernel = weight.name.endswith("kernel")
        assert weight.pruned is is_kernel
        if is_kernel:
            assert weight.sparsity == pytest.approx(0.9, abs=1e-3)
        else:
            assert weight.sparsity == 0.0


def test_sizes_match_direct_encoder_calls(report, stripped_arrays):
    for weight in report.weights:
        array = stripped_arrays[weight.name]
        assert weight.bitmask_bytes == encode_bitmask(array).nbytes
        assert weight.csr_bytes == encode_csrc(array, 4).nbytes
        assert (
            weight.int8_csr_bytes == encode_csrc(array, 4, quantize=True).nbytes
        )
        assert weight.gzip_bytes == len(
            gzip.compress(array.tobytes(), compresslevel=9, mtime=0)
        )


def test_compact_is_the_smallest_format(report):
    for weight in report.weights:
        sizes = {
            "dense": weight.dense_bytes,
            "bitmask": weight.bitmask_bytes,
            "csr": weight.csr_bytes,
        }
        assert weight.compact_bytes == min(sizes.values())
        assert sizes[weight.compact_format] == weight.compact_bytes


def test_compact_kernels_are_at_most_15_percent_of_dense(report):
    kernels = [w for w in report.weights if w.pruned]
    assert len(kernels) == 2
    for kernel in kernels:
        assert kernel.compact_bytes <= 0.15 * kernel.dense_bytes


def test_totals_are_sums(report):
    total = report.total
    assert isinstance(total, SizeCounts)
    for field in (
        "size",
        "nnz",
        "dense_bytes",
        "bitmask_bytes",
        "csr_bytes",
        "gzip_bytes",
        "int8_csr_bytes",
        "compact_bytes",
    ):
        assert getattr(total, field) == sum(
            getattr(w, field) for w in report.weights
        ), field
    assert total.sparsity == pytest.approx(1 - total.nnz / total.size)


def test_int8_error_is_over_all_pruned_weights(report, stripped_arrays):
    kernels = [stripped_arrays[w.name] for w in report.weights if w.pruned]
    decoded = [decode_csrc(encode_csrc(k, quantize=True)) for k in kernels]
    expected = quantization_error(
        np.concatenate([k.ravel() for k in kernels]),
        np.concatenate([d.ravel() for d in decoded]),
    )
    assert report.int8_max_abs_error == expected.max_abs_error
    assert report.int8_relative_rms_error == expected.relative_rms_error
    assert 0 < report.int8_relative_rms_error < 0.01


def test_index_bits_5(pruned, stripped_arrays):
    report = sparsity_report(pruned, index_bits=5)
    assert report.index_bits == 5
    for weight in report.weights:
        array = stripped_arrays[weight.name]
        assert weight.csr_bytes == encode_csrc(array, 5).nbytes


def test_as_dict_is_json_serializable(report):
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["total"]["nnz"] == report.total.nnz
    assert data["weights"][0]["shape"] == list(report.weights[0].shape)
    assert data["weights"][0]["pruned"] is True
    assert data["saved_model_bytes"] is None


def test_table_has_a_row_per_weight_and_a_total(report):
    table = str(report)
    assert table == report.to_table()
    lines = table.splitlines()
    for weight in report.weights:
        (row,) = [line for line in lines if line.startswith(weight.name + " ")]
        assert f"{weight.sparsity:.4f}" in row
        assert str(weight.compact_bytes) in row
    (total,) = [line for line in lines if line.startswith("total")]
    assert str(report.total.dense_bytes) in total
    rows = lines[: lines.index(total) + 1]
    assert len(rows) == len(report.weights) + 4  # header, 2 rules, total
    assert {len(row) for row in rows} == {len(lines[0])}  # right-aligned


def test_print_sparsity_report(pruned, capsys):
    print_sparsity_report(pruned)
    printed = capsys.readouterr().out
    assert "total" in printed and "dense/kernel" in printed
    lines = []
    print_sparsity_report(pruned, print_fn=lines.append)
    assert lines == [str(sparsity_report(pruned))]


def test_report_leaves_the_pruned_model_unchanged(pruned):
    before = [as_numpy(w).copy() for w in pruned.weights]
    sparsity_report(pruned)
    after = [as_numpy(w) for w in pruned.weights]
    for b, a in zip(before, after, strict=True):
        assert np.array_equal(a, b)


def test_include_exports_measures_the_files(pruned):
    report = sparsity_report(pruned, include_exports=True)
    assert report.saved_model_bytes > 0
    assert report.keras_bytes > 0
    assert 0 < report.tflite_bytes < report.keras_bytes
    data = json.loads(json.dumps(report.as_dict()))
    assert data["tflite_bytes"] == report.tflite_bytes
    assert "TFLite (sparse)" in report.to_table()


# Other models and bad input.


def test_unpruned_model_is_reported_as_it_is():
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = sparsity_report(model)
    assert not [w for w in caught if "no pruned layers" in str(w.message)]
    arrays = [as_numpy(w) for w in model.weights]
    assert [w.name for w in report.weights] == [w.path for w in model.weights]
    for weight, array in zip(report.weights, arrays, strict=True):
        assert weight.pruned is False
        assert weight.nnz == np.count_nonzero(array)
        assert weight.compact_bytes <= weight.dense_bytes
    assert report.int8_max_abs_error is None
    assert report.int8_relative_rms_error is None
    json.dumps(report.as_dict())


def test_single_pruned_layer():
    layer = mp.prune_low_magnitude(
        keras.layers.Dense(8),
        pruning_schedule=mp.ConstantSparsity(0.5, begin_step=0, frequency=1),
    )
    layer.build((None, 4))
    mp.Pruning(
        model=layer, global_step=tf.Variable(1, dtype=tf.int64)
    ).mask_update_op()
    report = sparsity_report(layer)
    assert [w.pruned for w in report.weights] == [True, False]
    assert report.weights[0].nnz == 16
    with pytest.raises(TypeError, match="include_exports"):
        sparsity_report(layer, include_exports=True)


@pytest.mark.parametrize("index_bits", [3, 8, 4.0, True, "4"])
def test_bad_index_bits(pruned, index_bits):
    with pytest.raises(ValueError, match="index_bits"):
        sparsity_report(pruned, index_bits=index_bits)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": "model"}, "model"),
        ({"model": None}, "model"),
        ({"include_exports": 1}, "include_exports"),
    ],
)
def test_bad_arguments(pruned, kwargs, match):
    kwargs = {"model": pruned, **kwargs}
    with pytest.raises(TypeError, match=match):
        sparsity_report(**kwargs)
