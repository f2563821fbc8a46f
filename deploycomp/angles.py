"""Outputs that hold angles, compared as angles.

An ``Atan``'s result (tf2onnx's atan2: an ``Atan`` and a ``Where`` adding pi) wraps: a
direction just past +pi comes out just past -pi. Where an output element lies near the
cut, int8 or fp16 (or another runtime) can put it on the other side, and a comparison of
numbers counts 2 pi of error where the direction moved by a hair (a fingerprint model's
direction map: 19-27 of 213k pixels, on which its int8 and fp16 searches spent minutes
and kept 42 of 78 layers float). Judged as angles, each element's difference is taken to
the nearest turn (:func:`unwrap`) before cosine and the error bounds see it.

Which elements hold an angle, and at what scale, is measured rather than read off the
graph: an angle often reaches the output through a ``Concat`` with other maps, a
``Reshape`` or a ``Transpose`` (the fingerprint model's 4-channel head holds it in one
channel), or scaled to degrees. :func:`angle_periods` runs the optimized model twice on
one sample, the second time with every ``Atan``'s result moved by a small amount: the
elements that move hold an angle, and how far they move is its scale. The turn is 2 pi
(times that scale) when the sample's angles span more than a half-turn, as atan2's do,
and pi otherwise: a bare ``Atan`` of a quotient jumps by pi where the divisor crosses
zero (then a half-turn error cannot be told from the wrap).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import onnx_ir as ir

from deploycomp.analysis import angle_outputs

__all__ = ["NUDGE", "angle_periods", "turns_in_words", "unwrap"]

NUDGE = 0.25
"""How far every ``Atan``'s result is moved to find the elements that hold it (radians):
well above float32's rounding of an angle, and the same for every element."""

_MOVED = 0.01
"""An element moved by less than this share of the nudge does not hold the angle."""

_SAME_SCALE = 0.02
"""Elements whose scales are all within this share of their median hold the angle at that
one scale (a float16 output reads the nudge to about 1%)."""


def _nudged(model: ir.Model) -> ir.Model | None:
    """A copy of ``model`` with ``NUDGE`` added to every top-level ``Atan``'s result; None
    without one."""
    copy = model.clone()
    atans = [n for n in copy.graph if n.op_type == "Atan" and n.domain in ("", "ai.onnx")]
    if not atans:
        return None
    nudges: dict[ir.DataType, ir.Value] = {}
    for atan in atans:
        value = atan.outputs[0]
        dtype = value.dtype or ir.DataType.FLOAT  # an Atan of float16 or double adds its own type
        if dtype not in nudges:
            nudges[dtype] = ir.Value(name=f"deploycomp_angle_nudge_{dtype.name.lower()}",
                                     const_value=ir.tensor(np.asarray(NUDGE, dtype.numpy())))
            copy.graph.register_initializer(nudges[dtype])
        add = ir.node("Add", [value, nudges[dtype]], name=f"{atan.name}_nudged")
        moved = add.outputs[0]  # takes the name: an Atan's result may be a graph output
        moved.name, moved.type, moved.shape = value.name, value.type, value.shape
        value.name = f"{value.name}_before_nudge"
        copy.graph.insert_after(atan, add)
        value.replace_all_uses_with(moved, replace_graph_outputs=True)
        add.replace_input_with(0, value)  # the nudge reads the Atan, not itself
    return copy


def angle_periods(model: ir.Model, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each output of ``model`` that holds an ``Atan``'s result
    (:func:`deploycomp.analysis.angle_outputs`), the turn of each of its elements on
    ``sample`` (0 where an element does not hold an angle); outputs with no such element
    are left out. See the module docstring for how the elements and turns are found."""
    import onnxruntime as ort

    from deploycomp.quant.sessions import session

    names = angle_outputs(model.graph)
    nudged = _nudged(model) if names else None
    if nudged is None:
        return {}
    def quiet():
        options = ort.SessionOptions()
        options.log_severity_level = 4  # (errors are raised and said in one line; printed, they had added a red ANSI line)
        return options

    feeds = {v.name: sample[v.name] for v in model.graph.inputs if v.name in sample}
    base = session(model, quiet()).run(names, feeds)
    moved = session(nudged, quiet()).run(names, feeds)
    periods: dict[str, np.ndarray] = {}
    for name, before, after in zip(names, base, moved):
        if not np.issubdtype(np.asarray(before).dtype, np.floating):
            continue
        before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
        gain = (after - before) / NUDGE
        holds = np.isfinite(gain) & np.isfinite(before) & (np.abs(gain) > _MOVED)
        if not holds.any():
            continue
        scale = np.abs(gain[holds])
        median = float(np.median(scale))
        if np.all(np.abs(scale - median) <= _SAME_SCALE * median):  # one scale, read through rounding (float16)
            scale = np.full_like(scale, median)
        span = float(np.ptp(before[holds] / median))
        turn = 2 * math.pi if span > math.pi + 1e-3 else math.pi
        period = np.zeros(before.shape, np.float64)
        period[holds] = turn * scale
        periods[name] = period
    return periods


def unwrap(ref: np.ndarray, got: np.ndarray, period: np.ndarray) -> np.ndarray:
    """``got`` with each element that holds an angle (``period`` > 0) moved by whole turns
    to the one nearest ``ref``'s (``got`` as given where the shapes differ, and where either
    is not finite: a NaN stays the NaN the comparison counts)."""
    if ref.shape != got.shape or period.shape != got.shape or not np.issubdtype(got.dtype, np.floating):
        return got
    turns = np.zeros(period.shape, np.float64)
    holds = (period > 0) & np.isfinite(got) & np.isfinite(ref)
    turns[holds] = np.round((got[holds].astype(np.float64) - ref[holds]) / period[holds])
    if not turns.any():
        return got
    return (got - turns * period).astype(got.dtype)


def turns_in_words(periods: Mapping[str, np.ndarray]) -> str:
    """How each output's angles turn, for the manifest's assumptions: "2 pi on 212992 of
    851968 elements", "360 on 64 of 64 elements" (degrees); a range of turns where they
    differ (angles in degrees and in radians concatenated)."""
    said = []
    for period in periods.values():
        held = period[period > 0]
        turns = np.round(held, 3)
        if np.all(turns == turns.flat[0]):
            what = {round(np.pi, 3): "pi", round(2 * np.pi, 3): "2 pi"}.get(float(turns.flat[0]), f"{turns.flat[0]:g}")
        else:
            what = f"{held.min():.4g}..{held.max():.4g}"
        said.append(f"{what} on {held.size} of {period.size} elements")
    return ", ".join(said)
