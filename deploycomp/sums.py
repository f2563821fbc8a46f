"""float64 sums over float32 outputs without float64 copies of them.

Every budget check compares each output of each judged sample with the reference: a
cosine, the largest error, an NMSE. Done on float64 copies, that was most of a check on a
model with large outputs: LORE's two 256 x 192 x 192 maps (19 M values a sample) spent 7 s
of an 80 s build converting and re-reading copies. Here the products are accumulated in
float64 by ``einsum`` (it casts in buffers: the same value as a float64 dot to 1e-15)
and the differences are taken a block at a time in the arrays' own precision (at least
float32), so nothing the size of an output is allocated.
"""

from __future__ import annotations

import numpy as np

__all__ = ["all_finite", "dot64", "max_abs_diff", "squared_error64", "sum64"]

BLOCK = 1 << 18
"""Values per block of a difference (1 MB in float32): small enough to stay in cache."""


def _flat(a) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def dot64(a, b) -> float:
    """sum(a * b), accumulated in float64."""
    return float(np.einsum("i,i->", _flat(a), _flat(b), dtype=np.float64))


def sum64(a) -> float:
    """sum(a), accumulated in float64."""
    return float(np.einsum("i->", _flat(a), dtype=np.float64))


def all_finite(a) -> bool:
    """No NaN or Inf in ``a``: a float64 sum of float32 (or float16) values cannot overflow,
    and a NaN or Inf anywhere makes it non-finite. One pass, no mask."""
    a = np.asarray(a)
    if a.dtype.itemsize > 4 or not np.issubdtype(a.dtype, np.floating):
        return bool(np.isfinite(a).all())
    return bool(np.isfinite(np.einsum("i->", _flat(a), dtype=np.float64)))


def _diff_blocks(a, b):
    a, b = _flat(a), _flat(b)
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    buf = np.empty(min(BLOCK, a.size), dtype)
    for i in range(0, a.size, BLOCK):
        part = buf[: min(BLOCK, a.size - i)]
        np.subtract(a[i:i + BLOCK], b[i:i + BLOCK], out=part, dtype=dtype)
        yield part


def max_abs_diff(a, b) -> float:
    """max |a - b| (0 for empty arrays)."""
    best = 0.0
    for part in _diff_blocks(a, b):
        best = max(best, float(np.abs(part, out=part).max()))
    return best


def squared_error64(a, b) -> float:
    """sum((a - b)^2), the squares accumulated in float64."""
    return sum(float(np.einsum("i,i->", part, part, dtype=np.float64)) for part in _diff_blocks(a, b))
