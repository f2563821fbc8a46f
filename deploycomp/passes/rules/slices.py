"""Slices that partition a tensor become one Split.

Two ``Slice`` nodes reading the same tensor along the same axis, with step 1, whose
ranges are adjacent and together cover the whole axis ``[0, d)`` compute exactly the
two outputs of ``Split(x, [k, d - k], axis)``: one node instead of two, one pass over
the memory (YOLOv8's box decoding slices ``xy`` and ``wh`` this way). onnxscript's
rule handles the last axis only; this one takes any axis of a static shape.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern

from deploycomp.passes.rules._util import const, initializer, static_shape

__all__ = ["slice_rules"]


def _range(node: ir.Node, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(axis, start, end) of a single-axis, step-1 Slice with constant arguments."""
    args = [const(v) if v is not None else None for v in node.inputs[1:]]
    if len(args) < 2 or args[0] is None or args[1] is None or args[0].size != 1:
        return None
    axis = int(args[2].reshape(-1)[0]) if len(args) > 2 and args[2] is not None else 0
    if len(args) > 3 and node.inputs[4] is not None and (args[3] is None or int(args[3].reshape(-1)[0]) != 1):
        return None
    axis %= len(shape)
    dim = shape[axis]
    start, end = (int(a.reshape(-1)[0]) for a in args[:2])
    start = min(max(start + dim if start < 0 else start, 0), dim)
    end = min(max(end + dim if end < 0 else end, 0), dim)
    return axis, start, end


class SlicePairToSplit(pattern.RewriteRuleClassBase):
    def pattern(self, op, x):
        a = op.Slice(x, _allow_other_inputs=True, _outputs=["a"])
        b = op.Slice(x, _allow_other_inputs=True, _outputs=["b"])
        return a, b

    def check(self, context, x, a, b, **_) -> MatchResult:
        shape = static_shape(x)
        if shape is None:
            return MatchResult().fail("input shape is not static", x)
        ra, rb = _range(a.producer(), shape), _range(b.producer(), shape)
        if ra is None or rb is None:
            return MatchResult().fail("a Slice is not single-axis, step 1, with constant bounds")
        if ra[0] != rb[0]:
            return MatchResult().fail("the Slices cut different axes")
        first, second = sorted((ra, rb), key=lambda r: r[1])
        if first[1] != 0 or first[2] != second[1] or second[2] != shape[ra[0]] or first[2] in (0, shape[ra[0]]):
            return MatchResult().fail("the ranges do not partition the axis")
        self._axis, self._sizes, self._swapped = ra[0], [first[2], second[2] - second[1]], ra[1] != 0
        return MatchResult()

    def rewrite(self, op, x, **_):
        sizes = initializer(op, x.graph, f"{x.name}__split_sizes", np.array(self._sizes, np.int64))
        lo, hi = op.Split(x, sizes, axis=self._axis, _outputs=2)
        return (hi, lo) if self._swapped else (lo, hi)


def slice_rules() -> tuple:
    return (SlicePairToSplit.rule(),)
