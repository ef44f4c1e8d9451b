"""Tests of the exact k-th largest selection in `model_pruning.selection`."""

import zlib

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from model_pruning import mask
from model_pruning import selection
from model_pruning.selection import kth_largest

_NP_DTYPES = {
    tf.float16: np.float16,
    tf.bfloat16: ml_dtypes.bfloat16,
    tf.float32: np.float32,
    tf.float64: np.float64,
}
_DTYPES = tuple(_NP_DTYPES)
_DATA_KINDS = ("random", "ties", "all_equal", "zeros", "signed", "pruned")

# Method variants: "host_bracket" forces the sampled-bracket path of "host"
# at small sizes, "xla_wide" the 16-bit digits of "xla".
_VARIANTS = ("sort", "host", "host_bracket", "xla", "xla_wide")


@pytest.fixture(params=_VARIANTS)
def method(request, monkeypatch):
    """A method name, with the module patched for the forced variants."""
    if request.param == "host_bracket":
        monkeypatch.setattr(selection, "_HOST_SMALL", 0)
        return "host"
    if request.param == "xla_wide":
        monkeypatch.setattr(selection, "_XLA_WIDE_DIGITS_FROM", 0)
        return "xla"
    return request.param


def _rng(*key):
    """A generator seeded from a test's parameters."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _data(kind, size, dtype, *key):
    """Non-negative magnitudes (signed for "signed") of numpy `dtype`."""
    rng = _rng(kind, size, dtype, *key)
    if kind == "random":
        values = np.abs(rng.standard_normal(size))
    elif kind == "ties":
        values = rng.integers(0, 6, size) * 0.25
    elif kind == "all_equal":
        values = np.full(size, 0.375)
    elif kind == "zeros":
        values = np.where(rng.random(size) < 0.9, 0.0, rng.random(size))
    elif kind == "signed":
        values = rng.standard_normal(size) * 3.0
    else:  # Half pruned (zeros), as in a gradual pruning update.
        values = np.abs(rng.standard_normal(size))
        flat = values.reshape(-1)
        flat[rng.permutation(flat.size)[: flat.size // 2]] = 0.0
    return values.astype(dtype)


def _next_up(value):
    """The next float of `value`'s dtype above it."""
    value = np.asarray(value)
    return np.nextafter(value, np.asarray(np.inf, value.dtype))


def _reference(arrays, k):
    """The k-th largest of the union by a NumPy sort (k = 0: above the max)."""
    flat = np.concatenate([np.ravel(a) for a in arrays])
    dtype = flat.dtype
    ordered = np.sort(flat.astype(np.float64))[::-1]
    if k == 0:
        return _next_up(np.asarray(ordered[0]).astype(dtype))
    return np.asarray(ordered[k - 1]).astype(dtype)


def _check(got, expected):
    got = np.asarray(got)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    # `==` also equates -0.0 and +0.0, which select the same entries.
    assert got == expected, (got, expected)


def _ks(size):
    return sorted({0, 1, 2, size // 10, size // 2, size - 1, size})


# Every kind of data in float32; the other dtypes on three of them.
_DTYPE_KINDS = [(tf.float32, kind) for kind in _DATA_KINDS] + [
    (dtype, kind)
    for dtype in (tf.float16, tf.bfloat16, tf.float64)
    for kind in ("random", "ties", "pruned")
]


@pytest.mark.parametrize(
    ("dtype", "kind"), _DTYPE_KINDS, ids=lambda x: getattr(x, "name", x)
)
def test_matches_numpy_sort(method, dtype, kind):
    values = _data(kind, 3001, _NP_DTYPES[dtype])
    tensor = tf.constant(values, dtype)
    for k in _ks(values.size):
        got = kth_largest(tensor, k, method=method)
        assert got.dtype == dtype
        _check(got.numpy(), _reference([values], k))


@pytest.mark.parametrize("dtype", (tf.float32, tf.float64), ids=str)
@pytest.mark.parametrize("kind", ("random", "ties", "zeros"))
def test_matches_numpy_sort_2d(method, dtype, kind):
    values = _data(kind, (37, 29), _NP_DTYPES[dtype])
    for k in _ks(37 * 29):
        got = kth_largest(tf.constant(values, dtype), k, method=method)
        _check(got.numpy(), _reference([values], k))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(1, 400),
    sparsity=st.floats(0.0, 0.999),
    distinct=st.integers(1, 1000),
    seed=st.integers(0, 2**16),
)
def test_every_sparsity_small_sizes(method, size, sparsity, distinct, seed):
    rng = np.random.default_rng(seed)
    # `distinct` values at most: from all ties to (almost) all distinct.
    values = (rng.integers(0, distinct, size) * 0.125).astype(np.float32)
    k = int(mask.num_kept(size, tf.constant(sparsity, tf.float32)))
    got = kth_largest(tf.constant(values), k, method=method)
    _check(got.numpy(), _reference([values], k))


@pytest.mark.parametrize("kind", ("random", "ties", "pruned", "signed"))
def test_large_input(kind):
    # Above both size cut-offs (host bracket, 16-bit xla digits).
    values = _data(kind, 300_007, np.float32)
    tensor = tf.constant(values)
    for sparsity in (0.0, 0.5, 0.5 + 1e-4, 0.9, 0.999):
        k = round(values.size * (1 - sparsity))
        expected = _reference([values], k)
        for method in ("host", "xla"):
            _check(kth_largest(tensor, k, method=method).numpy(), expected)


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: d.name)
def test_list_matches_concatenation(method, dtype):
    shapes = [(40, 30), (0,), (7,), (3, 5, 11), (1,), (2000,)]
    arrays = [
        _data("ties" if i % 2 else "random", s, _NP_DTYPES[dtype], i)
        for i, s in enumerate(shapes)
    ]
    tensors = [tf.constant(a, dtype) for a in arrays]
    total = sum(a.size for a in arrays)
    for k in _ks(total):
        _check(
            kth_largest(tensors, k, method=method).numpy(),
            _reference(arrays, k),
        )


def test_list_large_matches_concatenation():
    arrays = [_data("random", n, np.float32, n) for n in (200_000, 7, 90_000)]
    tensors = [tf.constant(a) for a in arrays]
    for k in (1, 145_000, 290_007):
        for method in ("host", "xla"):
            _check(
                kth_largest(tensors, k, method=method).numpy(),
                _reference(arrays, k),
            )


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: d.name)
def test_xla_path_under_jit_compile(dtype):
    values = _data("ties", (50, 70), _NP_DTYPES[dtype])

    @tf.function(jit_compile=True)
    def select(x, k):
        return kth_largest(x, k, xla=True)

    for k in (0, 1, 1750, 3500):
        got = select(tf.constant(values, dtype), tf.constant(k))
        _check(got.numpy(), _reference([values], k))


def test_xla_list_under_jit_compile():
    arrays = [_data("random", s, np.float32, s) for s in ((50, 70), (9,))]

    @tf.function(jit_compile=True)
    def select(x, y, k):
        return kth_largest([x, y], k, method="xla")

    for k in (0, 1, 1750, 3509):
        got = select(*[tf.constant(a) for a in arrays], tf.constant(k))
        _check(got.numpy(), _reference(arrays, k))


def test_xla_path_under_jit_compile_wide_digits():
    values = _data("pruned", 70_001, np.float32)

    @tf.function(jit_compile=True)
    def select(x, k):
        return kth_largest(x, k, xla=True)

    for k in (0, 1, 35_000, 70_001):
        _check(
            select(tf.constant(values), tf.constant(k)).numpy(),
            _reference([values], k),
        )


@pytest.mark.parametrize("variant", ("small", "bracket"))
def test_host_path_in_tf_function_and_eagerly(variant, monkeypatch):
    if variant == "bracket":
        monkeypatch.setattr(selection, "_HOST_SMALL", 0)
    values = _data("pruned", (60, 50), np.float32)

    @tf.function
    def select(x, k):
        return kth_largest(x, k)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def select_dynamic(x):
        return kth_largest([x, x], tf.shape(x)[0])

    for k in (0, 1, 1500, 3000):
        expected = _reference([values], k)
        _check(kth_largest(tf.constant(values), k).numpy(), expected)
        _check(select(tf.constant(values), tf.constant(k)).numpy(), expected)
    _check(
        select_dynamic(tf.constant(values)).numpy(),
        _reference([values, values], 60),
    )


@pytest.mark.parametrize(
    "bracket",
    [
        (5.0, 6.0),  # Above every entry: the answer is below lo.
        (-2.0, -1.0),  # Below every entry: the answer is above hi.
        (0.0, 0.0),  # A tie at lo == hi.
        (0.0, 0.5),  # lo at the pruned zeros.
        (-np.inf, np.inf),  # Unbounded: everything is extracted.
        (0.7, 0.7),  # lo == hi at a value that is not an entry.
    ],
)
def test_host_bracket_misses_are_exact(bracket, monkeypatch):
    monkeypatch.setattr(selection, "_HOST_SMALL", 0)
    monkeypatch.setattr(
        selection,
        "_sample_bracket",
        lambda arrays, k, n: tuple(np.float32(b) for b in bracket),
    )
    values = _data("pruned", 4001, np.float32)
    tensor = tf.constant(values)
    for k in range(1, values.size + 1, 97):
        got = kth_largest(tensor, k, method="host").numpy()
        _check(got, _reference([values], k))


def test_k_zero_selects_nothing(method):
    for dtype in _DTYPES:
        values = tf.constant([0.0, 3.0, 3.0, 1.0], dtype)
        result = kth_largest(values, 0, method=method)
        assert not tf.reduce_any(values >= result)
        largest = np.asarray(3.0, _NP_DTYPES[dtype])
        _check(result.numpy(), _next_up(largest))


def test_single_entry_and_ties_keep_all(method):
    got = kth_largest(tf.constant([2.5]), 1, method=method)
    _check(got.numpy(), np.float32(2.5))
    values = tf.constant([1.0, 2.0, 2.0, 2.0, 3.0])
    threshold = kth_largest(values, 2, method=method)
    assert threshold.numpy() == 2.0
    assert int(tf.reduce_sum(tf.cast(values >= threshold, tf.int32))) == 4


def test_dynamic_k_is_clamped(method):
    values = tf.constant([4.0, 1.0, 3.0])

    @tf.function
    def select(k):
        return kth_largest(values, k, method=method)

    assert select(tf.constant(7)).numpy() == 1.0
    assert select(tf.constant(-2)).numpy() == _next_up(np.float32(4.0))


def test_int64_k():
    values = tf.constant([4.0, 1.0, 3.0])
    for method in ("sort", "host", "xla"):
        got = kth_largest(values, tf.constant(2, tf.int64), method=method)
        assert got.numpy() == 3.0


@pytest.mark.parametrize("bad", ["foo", "", "SORT", None, 1])
def test_bad_method_raises(bad):
    with pytest.raises(ValueError, match=f"Received: method={bad!r}"):
        kth_largest(tf.constant([1.0]), 1, method=bad)


def test_bad_arguments_raise():
    one = tf.constant([1.0, 2.0])
    with pytest.raises(ValueError, match="Received: xla=1"):
        kth_largest(one, 1, xla=1)
    with pytest.raises(ValueError, match="method='host', xla=True"):
        kth_largest(one, 1, method="host", xla=True)
    with pytest.raises(ValueError, match=r"Received: values=\[\]"):
        kth_largest([], 1)
    with pytest.raises(ValueError, match="at least one entry"):
        kth_largest(tf.zeros([0, 3]), 0)
    with pytest.raises(ValueError, match="dtypes"):
        kth_largest([one, tf.constant([1.0], tf.float64)], 1)
    with pytest.raises(ValueError, match="dtypes"):
        kth_largest(tf.constant([1, 2]), 1)
    with pytest.raises(ValueError, match=r"Received: k=3"):
        kth_largest(one, 3)
    with pytest.raises(ValueError, match=r"Received: k=-1"):
        kth_largest([one, one], -1)
    with pytest.raises(ValueError, match="integer scalar"):
        kth_largest(one, 1.0)
    with pytest.raises(ValueError, match="integer scalar"):
        kth_largest(one, [1])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def dynamic(x):
        return kth_largest(x, 1, method="xla")

    with pytest.raises(ValueError, match="static shapes"):
        dynamic.get_concrete_function()


def test_nan_in_host_path_raises_or_returns():
    # Documented as unspecified; the host path must not hang or crash badly.
    values = np.abs(_rng("nan").standard_normal(300_000)).astype(np.float32)
    values[::7] = np.nan

    @tf.function
    def select(x, k):
        return kth_largest(x, k, method="host")

    for k in (1, 150_000, 300_000):
        try:
            select(tf.constant(values), tf.constant(k)).numpy()
        except tf.errors.InvalidArgumentError as error:
            assert "NaN" in str(error)
