"""Remove ops that compute their input unchanged.

Each rule matches an op whose constant operands make it the identity and replaces it
with its input; onnxscript's own no-op rules (Dropout in inference, Cast to the same
type, identity Transpose, no-op Expand) join them in :func:`no_op_rules`. A no-op whose
output is a graph output is kept where removing it would rename that output (the
rewriter handles that case).

* ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x``, ``x / 1``: the constant exactly
  the identity element, every element of it, and not growing ``x`` by broadcasting.
  onnxscript's rules for these match their pattern's constant within ``abs_tol=1e-8``
  and ``rel_tol=1e-5``: they took ``log(x^2 + 1e-10)`` in basic-pitch's spectrogram to
  ``log(x^2)``, -inf on silent bins, and its every output to NaN.

* ``Pad(x, pads=0)``: every pad is zero, any mode.
* ``Slice(x)`` taking everything: starts at 0 (or -dim), ends at or past the end,
  steps 1, on a static input shape.
* ``Reshape(x, s)`` where the static input shape already equals the output shape.
* ``Concat(x)`` of a single input.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, pattern
from onnxscript.rewriter.rules import common as onnxscript_rules

from deploycomp.passes.rules._util import const, static_shape

__all__ = ["no_op_rules"]


class _NoOp(pattern.RewriteRuleClassBase):
    def rewrite(self, op, x, **_):
        return op.Identity(x)


class PadZero(_NoOp):
    def pattern(self, op, x):
        return op.Pad(x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, out, **_) -> MatchResult:
        node = out.producer()
        pads = const(node.inputs[1]) if len(node.inputs) > 1 else None
        if pads is None:
            return MatchResult().fail("pads are not constant")
        if np.any(pads != 0):
            return MatchResult().fail("some pads are non-zero")
        return MatchResult()


class SliceAll(_NoOp):
    def pattern(self, op, x):
        return op.Slice(x, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, out, **_) -> MatchResult:
        node = out.producer()
        shape = static_shape(x)
        if shape is None:
            return MatchResult().fail("input shape is not static")
        args = [const(v) if v is not None else None for v in node.inputs[1:]]
        if any(a is None for a in args[:2]) or any(v is not None and a is None for v, a in zip(node.inputs[3:], args[2:])):
            return MatchResult().fail("slice parameters are not constant")
        starts, ends = args[0], args[1]
        axes = args[2] if len(args) > 2 and args[2] is not None else np.arange(len(starts))
        steps = args[3] if len(args) > 3 and args[3] is not None else np.ones(len(starts), np.int64)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            dim = shape[int(axis)]
            if step != 1 or start not in (0, -dim) or end < dim:
                return MatchResult().fail(f"axis {int(axis)} is not taken whole")
        return MatchResult()


class ReshapeSame(_NoOp):
    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, shape, out, **_) -> MatchResult:
        src, dst = static_shape(x), static_shape(out)
        if src is None or dst is None:
            return MatchResult().fail("shapes are not static")
        if src != dst:
            return MatchResult().fail(f"reshape changes {list(src)} to {list(dst)}")
        return MatchResult()


class ConcatSingle(_NoOp):
    def pattern(self, op, x):
        return op.Concat(x, _allow_other_attributes=True)


class _ExactIdentityElement(_NoOp):
    """``x <op> c`` (or ``c <op> x`` where the op commutes) with ``c`` a constant whose
    every element is exactly the op's identity element."""

    op_type: str
    identity: float

    def pattern(self, op, x, c):
        return getattr(op, self.op_type)(x, c, _outputs=["out"])

    def check(self, context, x, c, out, **_) -> MatchResult:
        value = const(c)
        if value is None:
            return MatchResult().fail("the other operand is not constant")
        if value.size == 0 or np.any(value != self.identity):
            return MatchResult().fail(f"the constant is not exactly {self.identity:g}")
        src, dst = static_shape(x), static_shape(out)
        same_shape = src is not None and src == dst
        if not same_shape and not (value.ndim == 0 or (src is not None and value.size == 1 and value.ndim <= len(src))):
            return MatchResult().fail("the constant may broadcast x to another shape")
        if x.dtype is not None and out.dtype is not None and x.dtype != out.dtype:
            return MatchResult().fail("the result's type differs from x's")
        return MatchResult()


class AddZero(_ExactIdentityElement):
    op_type, identity = "Add", 0.0


class SubZero(_ExactIdentityElement):
    op_type, identity = "Sub", 0.0


class MulOne(_ExactIdentityElement):
    op_type, identity = "Mul", 1.0


class DivOne(_ExactIdentityElement):
    op_type, identity = "Div", 1.0


def no_op_rules() -> tuple:
    r = onnxscript_rules
    return (
        PadZero.rule(), SliceAll.rule(), ReshapeSame.rule(), ConcatSingle.rule(),
        *MulOne.rule().commute(), *AddZero.rule().commute(), SubZero.rule(), DivOne.rule(),
        r.dropout_inference_rule, r.dropout_zero_rule, r.no_op_cast_rule, r.no_op_transpose_rule,
        r.no_op_expand_rule, r.cast_cast_rule, r.reshape_reshape_rule, r.unsqueeze_unsqueeze_rule,
        r.squeeze_reshape_1d_rule,
    )
