"""Tests of the bit-mask and CSR(C) encodings in `model_pruning.sparse_formats`.

Round trips are compared bit for bit (integer views), so NaN payloads, Inf
and signed zeros are checked exactly; `-0.0` decodes to `+0.0` by design.
"""

import functools
import zlib

import ml_dtypes
import numpy as np
import pytest

from model_pruning.sparse_formats import BitMaskEncoding
from model_pruning.sparse_formats import CsrcEncoding
from model_pruning.sparse_formats import QuantizationError
from model_pruning.sparse_formats import bitmask_index_bytes
from model_pruning.sparse_formats import csrc_index_bytes
from model_pruning.sparse_formats import decode_bitmask
from model_pruning.sparse_formats import decode_csrc
from model_pruning.sparse_formats import dequantize_int8
from model_pruning.sparse_formats import encode_bitmask
from model_pruning.sparse_formats import encode_csrc
from model_pruning.sparse_formats import quantization_error
from model_pruning.sparse_formats import quantize_int8

CODECS = {
    "bitmask": (encode_bitmask, decode_bitmask),
    "csrc4": (functools.partial(encode_csrc, index_bits=4), decode_csrc),
    "csrc5": (functools.partial(encode_csrc, index_bits=5), decode_csrc),
}
FLOATS = (np.float16, np.float32, np.float64)

# Quiet NaNs with payloads and a negative NaN, per float dtype, as raw bits.
_NAN_BITS = {
    np.float16: (0x7E01, 0xFE00),
    np.float32: (0x7FC00123, 0xFFC00001),
    np.float64: (0x7FF8000000000123, 0xFFF8000000000001),
}


def _rng(*key):
    """A generator seeded from a test's parameters."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _bits(array):
    """The raw bits of an array, as unsigned integers of its item size."""
    array = np.ascontiguousarray(array)
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def _plus_zeros(array):
    """`array` with every zero (`-0.0` included) as `+0.0`."""
    expected = np.array(array, copy=True)
    expected[expected == 0] = 0
    return expected


def _assert_round_trip(array, decoded):
    assert decoded.shape == np.shape(array)
    assert decoded.dtype == np.asarray(array).dtype
    np.testing.assert_array_equal(_bits(decoded), _bits(_plus_zeros(array)))


def _sparse(rng, shape, dtype, sparsity, specials=True):
    """Random normal values, zeroed with probability `sparsity`."""
    array = rng.standard_normal(shape).astype(dtype)
    array[rng.random(shape) < sparsity] = 0
    if specials and array.size >= 8:
        flat = array.reshape(-1)
        spots = rng.choice(flat.size, size=6, replace=False)
        nan_bits = np.array(_NAN_BITS[dtype], dtype=_bits(flat).dtype)
        flat[spots[:2]] = nan_bits.view(dtype)
        flat[spots[2:]] = np.array([np.inf, -np.inf, -0.0, 0.0], dtype)
    return array


def _round_trip(codec, array, **kwargs):
    encode, decode = CODECS[codec]
    return decode(encode(array, **kwargs))


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (17, 33), (2, 3, 4, 5)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_round_trip_random_sparse(codec, dtype, shape, sparsity):
    array = _sparse(_rng(codec, dtype, shape, sparsity), shape, dtype, sparsity)
    _assert_round_trip(array, _round_trip(codec, array))


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values_round_trip_bit_exactly(codec, dtype):
    nans = np.array(_NAN_BITS[dtype], _bits(np.zeros(1, dtype)).dtype)
    info = np.finfo(dtype)
    array = np.concatenate(
        [
            nans.view(dtype),
            np.array(
                [np.inf, -np.inf, info.max, -info.smallest_subnormal, 0.0],
                dtype,
            ),
        ]
    )
    decoded = _round_trip(codec, array)
    np.testing.assert_array_equal(_bits(decoded), _bits(array))


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_negative_zero_decodes_to_positive_zero(codec):
    array = np.array([-0.0, 1.0, -0.0, -0.0], np.float32)
    encode, decode = CODECS[codec]
    encoding = encode(array)
    assert encoding.values.size == 1
    decoded = decode(encoding)
    np.testing.assert_array_equal(
        _bits(decoded), _bits(np.array([0.0, 1.0, 0.0, 0.0], np.float32))
    )


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize(
    "array",
    [
        np.array([], np.float32),
        np.zeros((3, 0), np.float64),
        np.float32(0.0),
        np.float32(2.5),
        np.float16(-0.0),
        np.array(np.nan, np.float64),
    ],
    ids=["empty", "empty_2d", "zero", "scalar", "negative_zero", "nan"],
)
def test_empty_and_scalar_round_trip(codec, array):
    _assert_round_trip(array, _round_trip(codec, array))


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize(
    "dtype", [np.int8, np.int32, np.uint16, np.int64, np.bool_]
)
def test_integer_and_bool_round_trip(codec, dtype):
    rng = _rng(codec, dtype)
    array = rng.integers(-3, 4, size=(9, 11)) * (rng.random((9, 11)) < 0.3)
    array = array.astype(dtype)
    _assert_round_trip(array, _round_trip(codec, array))


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_bfloat16_round_trip(codec):
    bfloat16 = ml_dtypes.bfloat16
    array = np.array([0.0, 1.5, 0.0, -2.0, np.nan, -0.0, np.inf], bfloat16)
    decoded = _round_trip(codec, array)
    assert decoded.dtype == bfloat16
    _assert_round_trip(array, decoded)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_non_contiguous_input_is_read_in_row_major_order(codec):
    base = _sparse(_rng(codec), (6, 9), np.float32, 0.7, specials=False)
    view = base.T[::2]
    assert not view.flags.c_contiguous
    _assert_round_trip(view, _round_trip(codec, view))


@pytest.mark.parametrize("dtype", FLOATS)
def test_all_zeros(dtype):
    array = np.zeros((4, 10), dtype)
    bitmask = encode_bitmask(array)
    assert bitmask.values.size == 0
    assert bitmask.nbytes == 5
    for index_bits in (4, 5):
        csrc = encode_csrc(array, index_bits=index_bits)
        # Trailing zeros need no entry: the shape implies them.
        assert csrc.num_entries == 0
        assert csrc.nbytes == 0
        _assert_round_trip(array, decode_csrc(csrc))
    _assert_round_trip(array, decode_bitmask(bitmask))


@pytest.mark.parametrize("index_bits", [4, 5])
def test_all_non_zeros(index_bits):
    array = np.arange(1, 22, dtype=np.float32).reshape(3, 7)
    csrc = encode_csrc(array, index_bits=index_bits)
    assert csrc.num_entries == 21
    assert csrc.zero_counts.tolist() == [0] * -(-21 * index_bits // 8)
    np.testing.assert_array_equal(csrc.values, array.reshape(-1))
    bitmask = encode_bitmask(array)
    assert bitmask.bitmask.tolist() == [255, 255, 0b11111000]
    assert bitmask.nbytes == 3 + 21 * 4
    _assert_round_trip(array, decode_csrc(csrc))


@pytest.mark.parametrize("index_bits", [4, 5])
@pytest.mark.parametrize(
    "run", [0, 1, 14, 15, 16, 17, 31, 32, 33, 40, 47, 48, 63, 64, 100]
)
def test_zero_runs_get_padding_entries(index_bits, run):
    array = np.zeros(run + 5, np.float32)
    array[run] = 3.0
    array[run + 2] = -1.0
    csrc = encode_csrc(array, index_bits=index_bits)
    padding = run // 2**index_bits
    assert csrc.num_entries == padding + 2
    expected_values = [0.0] * padding + [3.0, -1.0]
    np.testing.assert_array_equal(csrc.values, expected_values)
    assert csrc.zero_counts.size == -(-csrc.num_entries * index_bits // 8)
    _assert_round_trip(array, decode_csrc(csrc))


@pytest.mark.parametrize("run", [15, 16])
def test_run_of_15_fits_a_4_bit_count_and_16_does_not(run):
    array = np.zeros(run + 1, np.float32)
    array[run] = 1.0
    csrc = encode_csrc(array, index_bits=4)
    if run == 15:
        assert csrc.num_entries == 1
        assert csrc.zero_counts.tolist() == [15]
    else:
        # One padding entry (15 zeros and a stored 0), then count 0.
        assert csrc.num_entries == 2
        assert csrc.zero_counts.tolist() == [15]
        np.testing.assert_array_equal(csrc.values, [0.0, 1.0])


def test_zero_counts_are_packed_little_endian_by_hand():
    array = np.zeros(41, np.float32)
    array[40] = 2.0
    # 4 bits: counts 15, 15, 8 -> bytes 0xFF, 0x08.
    csrc4 = encode_csrc(array, index_bits=4)
    assert csrc4.num_entries == 3
    assert csrc4.zero_counts.tolist() == [0xFF, 0x08]
    # 5 bits: counts 31, 8 -> stream bits 0-4 = 11111, bits 5-9 = 00010.
    csrc5 = encode_csrc(array, index_bits=5)
    assert csrc5.num_entries == 2
    assert csrc5.zero_counts.tolist() == [0b00011111, 0b00000001]


def test_zero_runs_continue_across_rows():
    array = np.zeros((4, 10), np.float32)
    array[0, 0] = 1.0
    array[3, 9] = 2.0  # 38 zeros after (0, 0), across three row breaks.
    csrc = encode_csrc(array, index_bits=4)
    assert csrc.num_entries == 4  # 1.0, two padding entries, 2.0
    np.testing.assert_array_equal(csrc.values, [1.0, 0.0, 0.0, 2.0])
    _assert_round_trip(array, decode_csrc(csrc))


def test_nbytes_by_hand():
    array = np.zeros(41, np.float32)
    array[40] = 2.0
    # CSR(C), 4 bits: 3 entries -> 2 bytes of counts + 3 float32 values.
    assert encode_csrc(array).nbytes == 2 + 3 * 4
    # Quantized: 3 int8 values and a float32 scale.
    assert encode_csrc(array, quantize=True).nbytes == 2 + 3 + 4
    # CSR(C), 5 bits: 2 entries -> 2 bytes of counts + 2 float32 values.
    assert encode_csrc(array, index_bits=5).nbytes == 2 + 2 * 4
    # Bit-mask: ceil(41 / 8) = 6 bytes + 1 float32 value.
    assert encode_bitmask(array).nbytes == 6 + 4
    assert encode_bitmask(array, quantize=True).nbytes == 6 + 1 + 4
    small = np.array([[0, 1, 0, 2, 0], [3, 0, 0, 0, 4], [0] * 5], np.float16)
    assert encode_bitmask(small).nbytes == 2 + 4 * 2


def test_encodings_have_documented_parts():
    array = np.array([[0.0, 1.5, 0.0], [0.0, 0.0, -2.5]], np.float32)
    bitmask = encode_bitmask(array)
    assert isinstance(bitmask, BitMaskEncoding)
    assert bitmask.shape == (2, 3)
    assert bitmask.dtype == "float32"
    assert bitmask.bitmask.dtype == np.uint8
    assert bitmask.bitmask.tolist() == [0b01000100]
    np.testing.assert_array_equal(bitmask.values, [1.5, -2.5])
    assert bitmask.scale is None
    csrc = encode_csrc(array)
    assert isinstance(csrc, CsrcEncoding)
    assert (csrc.shape, csrc.dtype, csrc.index_bits) == ((2, 3), "float32", 4)
    assert csrc.zero_counts.tolist() == [0x31]  # counts 1 and 3
    assert csrc.values.dtype == np.float32
    with pytest.raises(AttributeError):
        csrc.index_bits = 5


def test_size_helpers_by_hand():
    assert bitmask_index_bytes(0) == 0
    assert bitmask_index_bytes(8) == 1
    assert bitmask_index_bytes(9) == 2
    assert csrc_index_bytes(0) == 0
    assert csrc_index_bytes(3) == 2
    assert csrc_index_bytes(3, index_bits=5) == 2
    assert csrc_index_bytes(np.int64(16), index_bits=5) == 10


@pytest.mark.parametrize(
    "nnz, bitmask_mb, csrc_mb",
    [
        (2_130_000, 0.52, 1.06),
        (1_090_000, 0.52, 0.54),
        (460_000, 0.52, 0.23),
        (250_000, 0.52, 0.13),
    ],
)
def test_size_helpers_reproduce_paper_table_5(nnz, bitmask_mb, csrc_mb):
    """Sparse-MobileNet, 4.21M parameters, 4-bit counts (Zhu & Gupta, T5)."""
    assert bitmask_index_bytes(4_210_000) / 1e6 == pytest.approx(
        bitmask_mb, abs=0.01
    )
    assert csrc_index_bytes(nnz) / 1e6 == pytest.approx(csrc_mb, abs=0.01)


def test_csrc_index_bytes_matches_encoder_without_padding():
    array = np.zeros(90, np.float32)
    array[::9] = 1.0  # runs of 8 zeros: no padding
    encoding = encode_csrc(array)
    assert encoding.zero_counts.size == csrc_index_bytes(10)


def test_quantize_int8_by_hand():
    q, scale = quantize_int8(np.array([-1.0, 0.5, 127.0, 0.0]))
    assert scale == 1.0
    assert q.dtype == np.int8
    assert q.tolist() == [-1, 0, 127, 0]  # 0.5 rounds half to even
    np.testing.assert_array_equal(dequantize_int8(q, scale), [-1, 0, 127, 0])


@pytest.mark.parametrize(
    "values", [np.zeros(5, np.float32), np.array([], np.float32)]
)
def test_quantize_int8_all_zero_or_empty_has_scale_one(values):
    q, scale = quantize_int8(values)
    assert scale == 1.0
    assert q.shape == values.shape
    assert not q.any()


@pytest.mark.parametrize("dtype", FLOATS)
def test_quantize_int8_scale_is_float32_and_bounds_error(dtype):
    values = _rng(dtype).standard_normal(1000).astype(dtype) * 3
    q, scale = quantize_int8(values)
    assert float(np.float32(scale)) == scale
    max_abs = float(np.max(np.abs(values.astype(np.float64))))
    assert scale >= max_abs / 127
    assert scale == pytest.approx(max_abs / 127, rel=1e-6)
    assert np.abs(q).max() == 127
    decoded = q.astype(np.float64) * scale
    assert np.max(np.abs(decoded - values)) <= scale / 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_int8_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="non-finite"):
        quantize_int8(np.array([1.0, bad], np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        encode_bitmask(np.array([0.0, bad]), quantize=True)


def test_quantize_int8_tiny_values_keep_a_nonzero_scale():
    tiny = np.finfo(np.float32).smallest_subnormal
    values = np.array([tiny, -3 * tiny, 0.0], np.float32)
    q, scale = quantize_int8(values)
    assert scale == float(tiny)
    assert q.tolist() == [1, -3, 0]


def test_quantize_int8_rejects_values_beyond_a_float32_scale():
    with pytest.raises(ValueError, match="float32 scale"):
        quantize_int8(np.array([1e300]))


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_quantized_round_trip_within_half_scale(codec, dtype):
    rng = _rng(codec, dtype)
    array = _sparse(rng, (31, 29), dtype, 0.8, specials=False)
    array[0, :20] = -0.0
    encode, decode = CODECS[codec]
    encoding = encode(array, quantize=True)
    assert encoding.values.dtype == np.int8
    assert float(np.float32(encoding.scale)) == encoding.scale
    decoded = decode(encoding)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    zeros = array == 0
    np.testing.assert_array_equal(_bits(decoded[zeros]), 0)
    wide = array.astype(np.float64)
    # scale / 2 from rounding to int8, plus rounding back to `dtype`.
    bound = encoding.scale / 2 + np.spacing(np.max(np.abs(array)))
    assert np.max(np.abs(decoded.astype(np.float64) - wide)) <= bound


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_quantization_error_matches_numpy(codec):
    array = _sparse(_rng(codec), (40, 25), np.float32, 0.9, specials=False)
    decoded = _round_trip(codec, array, quantize=True)
    error = quantization_error(array, decoded)
    assert isinstance(error, QuantizationError)
    diff = decoded.astype(np.float64) - array.astype(np.float64)
    assert error.max_abs_error == pytest.approx(np.abs(diff).max(), rel=1e-12)
    expected_rms = np.sqrt(np.mean(diff**2)) / np.sqrt(
        np.mean(array.astype(np.float64) ** 2)
    )
    assert error.relative_rms_error == pytest.approx(expected_rms, rel=1e-12)
    assert 0 < error.relative_rms_error < 0.01


def test_quantization_error_edge_cases():
    zeros = np.zeros(3, np.float32)
    assert quantization_error(zeros, zeros) == (0.0, 0.0)
    assert quantization_error(zeros, zeros + 1) == (1.0, float("inf"))
    empty = np.array([], np.float32)
    assert quantization_error(empty, empty) == (0.0, 0.0)
    with pytest.raises(ValueError, match="decoded.shape"):
        quantization_error(zeros, np.zeros(4))


@pytest.mark.parametrize("index_bits", [3, 6, 0, 4.0, True, "4", None])
def test_bad_index_bits(index_bits):
    with pytest.raises(ValueError, match=f"index_bits={index_bits!r}"):
        encode_csrc(np.ones(3), index_bits=index_bits)
    with pytest.raises(ValueError, match="index_bits"):
        csrc_index_bytes(3, index_bits=index_bits)


def test_bad_index_bits_message():
    with pytest.raises(ValueError, match=r"Received: index_bits=3$"):
        encode_csrc(np.ones(3), index_bits=3)


@pytest.mark.parametrize(
    "array",
    ["abc", None, [[1.0, 2.0], [3.0]], np.array([1 + 2j]), {"a": 1}],
    ids=["str", "none", "ragged", "complex", "dict"],
)
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_non_numeric_arrays_raise_type_error(codec, array):
    encode, _ = CODECS[codec]
    with pytest.raises(TypeError, match="`array`"):
        encode(array)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_bad_quantize_arguments(codec):
    encode, _ = CODECS[codec]
    with pytest.raises(TypeError, match="quantize='yes'"):
        encode(np.ones(3), quantize="yes")
    with pytest.raises(TypeError, match="dtype=int32"):
        encode(np.ones(3, np.int32), quantize=True)


def test_decoders_check_their_argument():
    with pytest.raises(TypeError, match="`encoding` must be a CsrcEncoding"):
        decode_csrc(encode_bitmask(np.ones(3)))
    with pytest.raises(TypeError, match="`encoding` must be a BitMaskEncoding"):
        decode_bitmask(encode_csrc(np.ones(3)))


def test_decoders_reject_inconsistent_encodings():
    bitmask = encode_bitmask(np.array([0.0, 1.0, 2.0]))
    short = BitMaskEncoding(
        bitmask.shape, bitmask.dtype, bitmask.bitmask, bitmask.values[:1]
    )
    with pytest.raises(ValueError, match="values"):
        decode_bitmask(short)
    csrc = encode_csrc(np.array([0.0, 1.0, 2.0]))
    overrun = CsrcEncoding(
        (2,), csrc.dtype, 4, csrc.num_entries, csrc.zero_counts, csrc.values
    )
    with pytest.raises(ValueError, match="past the end"):
        decode_csrc(overrun)
    missing = CsrcEncoding(
        csrc.shape, csrc.dtype, 4, 5, csrc.zero_counts, csrc.values
    )
    with pytest.raises(ValueError, match="zero_counts"):
        decode_csrc(missing)


def test_size_helpers_check_counts():
    with pytest.raises(ValueError, match="num_elements=-1"):
        bitmask_index_bytes(-1)
    with pytest.raises(TypeError, match="num_elements=2.5"):
        bitmask_index_bytes(2.5)
    with pytest.raises(ValueError, match="num_nonzeros=-3"):
        csrc_index_bytes(-3)


def test_dequantize_int8_checks_arguments():
    with pytest.raises(TypeError, match="`q` must be an integer array"):
        dequantize_int8(np.ones(2, np.float32), 1.0)
    with pytest.raises(ValueError, match="scale=0.0"):
        dequantize_int8(np.ones(2, np.int8), 0.0)
    with pytest.raises(ValueError, match="scale=nan"):
        dequantize_int8(np.ones(2, np.int8), float("nan"))


@pytest.fixture(scope="module")
def ten_million():
    """10M float32 at 90% sparsity, made once for the module."""
    rng = np.random.default_rng(7)
    array = rng.standard_normal((2500, 4000), dtype=np.float32)
    array[rng.random(array.shape, dtype=np.float32) < 0.9] = 0
    return array


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_ten_million_elements_round_trip(codec, ten_million):
    """One large case: the encoders are vectorized (no per-element loop)."""
    encode, decode = CODECS[codec]
    encoding = encode(ten_million)
    assert encoding.nbytes < 0.15 * ten_million.nbytes
    decoded = decode(encoding)
    assert np.array_equal(_bits(decoded), _bits(ten_million))
