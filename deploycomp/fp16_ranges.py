"""Which tensors leave fp16's range on real data, so an fp16 build keeps them fp32.

fp16 holds magnitudes up to 65504, and nothing below 2^-24 (6e-8) that is not zero. Which
ops overflow is not a property of the op type: a MatMul on an audio power spectrum or a
Conv whose weights are large fills reaches 1e5-1e9 where the same ops elsewhere stay
small, and in fp16 those tensors become Inf and then NaN (measured: an audio front-end's
TensorRT fp16 bundle validated to NaN; SqueezeNet from ONNX's IR 3 tests likewise). So
the float model is run on the build's real inputs (calibration and validation samples)
and every float tensor whose largest magnitude comes within :data:`HEADROOM` of fp16's
limit, or that is non-zero but entirely below fp16's smallest subnormal (all precision
lost), is reported. The backends keep those tensors' producers and readers in fp32
(TensorRT: the typed ONNX; OpenVINO: nodes marked ``disable_fp16_compression``).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import onnx_ir as ir

__all__ = ["COMPARISONS", "FP16_MAX", "HEADROOM", "MAX_RANGE_SAMPLES", "decision_tensors", "fp32_tensors"]

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24
HEADROOM = 4.0
"""A tensor is kept fp32 when its largest magnitude on the samples exceeds FP16_MAX / HEADROOM:
inputs beyond the samples reach further, and a sum inside a kernel further still."""

MAX_RANGE_SAMPLES = 16
"""fp16 ranges are taken on at most this many of the build's real inputs."""

_FLOATS = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE}


def fp32_tensors(model: ir.Model, samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Tensor name -> largest magnitude seen, for the float tensors of ``model``'s main graph
    that fp16 cannot hold (see the module docstring).

    The extremes are those the range-coverage run measures
    (:func:`deploycomp.quant.calibrate.observe_inputs`: reduced inside the graph where
    streaming every tensor takes several runs per sample, finite values only); tensors of
    no known type are streamed here, and only their float values count."""
    from deploycomp.quant.calibrate import observe_inputs

    samples = list(samples)
    names = [v.name for node in model.graph for v in node.outputs if v.name and (v.dtype is None or v.dtype in _FLOATS)]
    if not names:
        return {}
    typed = {v.name for node in model.graph for v in node.outputs if v.dtype in _FLOATS}
    seen = observe_inputs(model, [n for n in names if n in typed], samples)
    peak = {n: max(abs(seen.lo[n]), abs(seen.hi[n])) for n in seen.lo}
    untyped = [n for n in names if n not in typed]
    if untyped:
        peak |= _streamed_peaks(model, untyped, samples)
    return {name: round(m, 6) for name, m in sorted(peak.items())
            if m > FP16_MAX / HEADROOM or 0.0 < m < FP16_TINY}


def _streamed_peaks(model: ir.Model, names: list[str], samples: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """The largest finite magnitude of each of ``names`` over ``samples``, the tensors
    streamed out of the float model (:func:`deploycomp.quant.calibrate.stream_parts`)."""
    from deploycomp.quant.calibrate import stream_parts

    peak: dict[str, float] = {}
    for _, values, _ in stream_parts(model, names, samples):  # in parts where they are large
        for name, arr in values.items():
            if not np.issubdtype(np.asarray(arr).dtype, np.floating):
                continue
            m = _largest_magnitude(np.asarray(arr))
            if m is not None:
                peak[name] = max(peak.get(name, 0.0), m)
    return peak


COMPARISONS = ("Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal")


def decision_tensors(model: ir.Model) -> dict[str, int]:
    """Tensor name -> how many of a comparison's constant values fp16 would move, for both
    sides of every comparison of the main graph against a float constant fp16 does not hold
    exactly: an fp16 build keeps them fp32 whatever their range. A threshold moved by
    float16's rounding moves the decision for every input between the two values, and
    nothing in a tensor's range shows it: a LightGBM ensemble's split at 1707.5 on an
    integer hash feature became 1708.0, its ±1e-35 splits ±0, and a word whose feature was
    1708 took the other branch (class probability 0.217 -> 0.124, cosine 0.978, while the
    8 validation samples met 0.999)."""
    found: dict[str, int] = {}
    for node in model.graph:
        if node.op_type not in COMPARISONS or node.domain not in ("", "ai.onnx"):
            continue
        moved = 0
        for v in node.inputs:
            data = v.const_value.numpy() if v is not None and v.const_value is not None else None
            if data is not None and data.dtype.kind == "f":
                with np.errstate(over="ignore"):
                    moved += int(np.count_nonzero(data.astype(np.float16).astype(data.dtype) != data))
        if moved:
            for v in (*node.inputs, *node.outputs):
                if v is not None and v.const_value is None and v.name:
                    found[v.name] = moved
    return found


def _largest_magnitude(arr: np.ndarray) -> float | None:
    """The largest finite magnitude in ``arr`` (None if it has none), from its min and max in
    its own dtype (the calibration observers' :func:`finite_extremes`): no float64 copy of
    every activation (an fp16 build of a 640x640 detector spent 4.5 of 7 s of its range
    check copying), and only an array holding Inf or NaN is filtered."""
    from deploycomp.quant.observers import finite_extremes

    found = finite_extremes(arr.ravel())
    return None if found is None else max(abs(found[1]), abs(found[2]))
