"""deploycomp.sums: the float64 sums a budget check takes, without float64 copies, equal
the float64 arithmetic they replace."""

import numpy as np
import pytest

from deploycomp.sums import BLOCK, all_finite, dot64, max_abs_diff, squared_error64


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    a = (rng.standard_normal(2 * BLOCK + 123) * 50 + 3).astype(np.float32)  # blocks that do not divide it
    b = (a + rng.standard_normal(a.shape) * 1e-3).astype(np.float32)
    return a, b


def test_sums_equal_float64_arithmetic(pair):
    a, b = pair
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert dot64(a, b) == pytest.approx(float(np.dot(a64, b64)), rel=1e-12)
    assert squared_error64(a, b) == pytest.approx(float(np.sum((a64 - b64) ** 2)), rel=1e-6)
    assert max_abs_diff(a, b) == pytest.approx(float(np.abs(a64 - b64).max()), rel=1e-6)
    # float32 accumulation would not do: its dot of these is off by far more
    assert abs(float(np.dot(a, b)) - float(np.dot(a64, b64))) > 1e-12 * abs(float(np.dot(a64, b64)))


def test_shapes_layouts_and_dtypes(pair):
    a, b = pair
    a2 = a[: 256 * 1024].reshape(256, 256, 1, 4).transpose(3, 1, 0, 2)  # not contiguous
    b2 = b[: 256 * 1024].reshape(256, 256, 1, 4).transpose(3, 1, 0, 2)
    assert dot64(a2, b2) == pytest.approx(float(np.dot(a2.astype(np.float64).ravel(), b2.astype(np.float64).ravel())),
                                          rel=1e-12)
    h = a[:1000].astype(np.float16)
    assert max_abs_diff(h, a[:1000]) == pytest.approx(float(np.abs(h.astype(np.float64) - a[:1000]).max()), rel=1e-6)
    empty = np.zeros((0, 3), np.float32)
    assert (dot64(empty, empty), max_abs_diff(empty, empty), squared_error64(empty, empty)) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_finds_one_bad_value(bad, dtype):
    a = np.full(BLOCK + 5, np.finfo(dtype).max, dtype)  # the largest finite values: their sum must not overflow
    assert all_finite(a)
    a[BLOCK + 2] = bad
    assert not all_finite(a)
