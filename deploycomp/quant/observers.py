"""Streaming activation statistics and the range methods that read them.

An :class:`Observer` sees one tensor batch by batch and keeps only a running min/max
and a fixed-size histogram (2048 bins, ~16 KB), never the activations themselves, so
peak memory does not grow with the calibration set (ONNX Runtime's calibrator keeps
every batch: onnxruntime#10503, #21979). When a batch falls outside the current
histogram range, the range is widened and the old counts re-binned into it.

Range methods (:data:`RANGE_METHODS`) turn a histogram into a clipping range:

* ``minmax``: the observed extremes.
* ``percentile``: the 0.01 % / 99.99 % quantiles (outliers clipped).
* ``mean_minmax``: each update's (a calibration sample's) extremes, averaged: NNCF's
  default for activations, where one loud sample moves the range by its share only.
* ``entropy``: TensorRT's KL-divergence calibration on ``|x|``: the threshold whose
  128-level quantization of the clipped distribution loses least information.
* ``mse``: the symmetric threshold minimising expected squared quantization error
  (rounding inside, clipping outside), estimated from the histogram.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["BINS", "Observer", "RANGE_METHODS", "compute_range", "finite_extremes"]

BINS = 2048


class Observer:
    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.lo = np.inf
        self.hi = -np.inf
        self.hist: np.ndarray | None = None
        self.edges: tuple[float, float] = (0.0, 0.0)
        self.count = 0
        self.quietest = np.inf
        """The narrowest span (max - min) of one update (a sample, as calibration streams
        them): how little of the range the quietest calibration input used."""
        self.updates = 0
        self.lo_sum = self.hi_sum = 0.0  # each update's extremes, summed (``mean_minmax``)
        self.nonfinite = False
        """Whether any update held NaN or Inf (left out of the statistics): an attention
        mask's -inf, which no int8 scale holds."""

    def update(self, x: np.ndarray) -> None:
        flat = np.asarray(x, dtype=np.float32).ravel()
        found = finite_extremes(flat)
        if flat.size and (found is None or found[0].size < flat.size):
            self.nonfinite = True
        if found is None:
            return
        x, lo, hi = found
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.quietest = min(self.quietest, hi - lo)
        self.updates += 1
        self.lo_sum, self.hi_sum = self.lo_sum + lo, self.hi_sum + hi
        self.count += x.size
        if self.hist is None:
            # a constant first batch has no width of its own; at a large magnitude even 1e-12
            # vanishes in lo + width (a float division by zero in _bin_counts), so the width
            # scales with the magnitude
            width = max(hi - lo, abs(lo) * 1e-6, 1e-12)
            self.edges = (lo, lo + width)
            self.hist = np.zeros(self.bins, np.float64)
        elif lo < self.edges[0] or hi > self.edges[1]:
            self._widen(min(lo, self.edges[0]), max(hi, self.edges[1]))
        self.hist += _bin_counts(x, self.edges, self.bins)

    def _widen(self, lo: float, hi: float) -> None:
        """Re-bin the counts into a wider range (each old bin's mass to its centre's new bin)."""
        old_lo, old_hi = self.edges
        hi = max(hi, lo + max(abs(lo), abs(hi)) * 1e-6)
        centres = old_lo + (np.arange(self.bins) + 0.5) * (old_hi - old_lo) / self.bins
        # grow by a margin so a slowly drifting range does not re-bin every batch
        span = hi - lo
        lo, hi = lo - 0.05 * span * (lo < old_lo), hi + 0.05 * span * (hi > old_hi)
        idx = np.clip(((centres - lo) / (hi - lo) * self.bins).astype(np.int64), 0, self.bins - 1)
        new = np.zeros(self.bins, np.float64)
        np.add.at(new, idx, self.hist)
        self.hist, self.edges = new, (lo, hi)

    def centres(self) -> np.ndarray:
        lo, hi = self.edges
        return lo + (np.arange(self.bins) + 0.5) * (hi - lo) / self.bins

    def abs_histogram(self) -> tuple[np.ndarray, float]:
        """Histogram of |x| over [0, amax] with ``bins`` bins, and amax."""
        amax = max(abs(self.lo), abs(self.hi), 1e-12)
        idx = np.clip((np.abs(self.centres()) / amax * self.bins).astype(np.int64), 0, self.bins - 1)
        out = np.zeros(self.bins, np.float64)
        np.add.at(out, idx, self.hist)
        return out, amax


def finite_extremes(x: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """``x``'s finite values (``x`` itself when all are) and their min and max; None if it
    has none. NaN and Inf show in the extremes, so a finite tensor costs no isfinite pass."""
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        x = x[np.isfinite(x)]
        if x.size == 0:
            return None
        lo, hi = float(x.min()), float(x.max())
    return x, lo, hi


def _bin_counts(x: np.ndarray, edges: tuple[float, float], bins: int) -> np.ndarray:
    """``np.histogram(x, bins, range=edges)`` for float32 ``x`` inside ``edges``, 1.6x
    faster (float32 bin positions, then ``bincount``): histograms were a third of the
    statistics pass on PP-OCR det's 640x640 maps. Values on an inner edge may land one
    bin apart from numpy's (float32 rounding), which no range method can notice."""
    lo, hi = edges
    position = x - np.float32(lo)
    position *= np.float32(bins / (hi - lo))
    np.clip(position, 0, bins - 1, out=position)
    return np.bincount(position.astype(np.intp), minlength=bins)


def _minmax(obs: Observer) -> tuple[float, float]:
    return obs.lo, obs.hi


def _mean_minmax(obs: Observer) -> tuple[float, float]:
    return obs.lo_sum / obs.updates, obs.hi_sum / obs.updates


def _percentile(obs: Observer, q: float = 99.99) -> tuple[float, float]:
    cdf = np.cumsum(obs.hist) / obs.hist.sum()
    centres = obs.centres()
    lo = centres[min(np.searchsorted(cdf, 1 - q / 100), obs.bins - 1)]
    hi = centres[min(np.searchsorted(cdf, q / 100), obs.bins - 1)]
    return min(float(lo), obs.hi), max(float(hi), obs.lo)


def _symmetric_to_range(obs: Observer, threshold: float) -> tuple[float, float]:
    """[-threshold, threshold] cut to what was observed. A threshold that clips a one-signed
    tensor past its nearest extreme (|x| from 5 to 10, threshold 0.3) would invert the
    range; it is held at the extreme (the range then holds one value's end)."""
    lo, hi = max(obs.lo, -threshold), min(obs.hi, threshold)
    if lo > hi:
        return (hi, hi) if obs.lo > 0 else (lo, lo)
    return lo, hi


def _smooth(dist: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give empty bins a little mass (taken from the others) so KL stays finite."""
    zeros = dist == 0
    if not zeros.any() or zeros.all():
        return dist
    out = dist.astype(np.float64).copy()
    out[zeros] = eps
    out[~zeros] -= eps * zeros.sum() / (~zeros).sum()
    return np.maximum(out, eps / 10)


def _entropy(obs: Observer, levels: int = 128) -> tuple[float, float]:
    hist, amax = obs.abs_histogram()
    bins = len(hist)
    best, best_i = np.inf, bins
    for i in range(levels, bins + 1, 16):
        # reference P: the first i bins with everything beyond folded into the last
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        # candidate Q: the unclipped slice quantized into `levels` groups, each group's
        # mass spread over its non-empty bins (TensorRT's reference algorithm)
        q = np.zeros(i)
        for g in np.array_split(np.arange(i), levels):
            nonzero = hist[g] > 0
            if nonzero.any():
                q[g[nonzero]] = hist[g].sum() / nonzero.sum()
        if p.sum() == 0 or q.sum() == 0:
            continue
        pn, qn = _smooth(p / p.sum()), _smooth(q / q.sum())
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best:
            best, best_i = kl, i
    return _symmetric_to_range(obs, best_i / bins * amax)


def _mse(obs: Observer, levels: int = 127) -> tuple[float, float]:
    hist, amax = obs.abs_histogram()
    centres = (np.arange(len(hist)) + 0.5) / len(hist) * amax
    best, best_t = np.inf, amax
    for t in np.linspace(amax / 64, amax, 64):
        step = t / levels
        inside = centres <= t
        err = np.sum(hist[inside]) * step**2 / 12 + np.sum(hist[~inside] * (centres[~inside] - t) ** 2)
        if err < best:
            best, best_t = err, t
    return _symmetric_to_range(obs, float(best_t))


RANGE_METHODS: dict[str, Callable[[Observer], tuple[float, float]]] = {
    "minmax": _minmax,
    "mean_minmax": _mean_minmax,
    "percentile": _percentile,
    "entropy": _entropy,
    "mse": _mse,
}


def compute_range(obs: Observer, method: str) -> tuple[float, float]:
    if obs.hist is None:
        raise ValueError("observer saw no data")
    return RANGE_METHODS[method](obs)
