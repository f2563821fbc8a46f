"""Canonical activation forms, so each backend sees one op instead of a decomposition.

* HardSwish: ``x * Clip(x + 3, 0, 6) / 6`` and ``x * HardSigmoid(x, 1/6, 0.5)``
  (MobileNetV3 / PP-LCNet, all over PP-OCR) -> ``HardSwish(x)``; ``Clip(x + 3, 0, 6) / 6``
  -> ``HardSigmoid(x)``. onnxscript's rules.
* Clip: ``Min(Max(x, a), b)`` -> ``Clip(x, a, b)``; ``Relu`` before/after ``Clip(0, 6)``
  collapses into one ``Clip(0, 6)`` (the Relu6 form every backend maps to one op);
  successive Clips merge. onnxscript's rules.
* Softmax: ``Exp(x - ReduceMax(x, a)) / ReduceSum(Exp(..), a)`` (and without the max)
  -> ``Softmax(x, axis=a)``, for a single reduced axis, dims kept. Ours.
* GELU: ``0.5 * x * (1 + Erf(x / sqrt 2))`` in its common operand orders -> ``Gelu(x)``,
  and the tanh approximation -> ``Gelu(x, approximate="tanh")``, where the model's
  opset has Gelu (>= 20). Ours.

``x * Sigmoid(x)`` (SiLU, YOLOv8's activation) is left as two ops: ONNX has no SiLU
below opset 24, and OpenVINO, TensorRT and XNNPACK each fuse the pair themselves.
"""

from __future__ import annotations

import math

from onnxscript.rewriter import MatchResult, pattern
from onnxscript.rewriter.rules import common as onnxscript_rules

from deploycomp.passes.rules._util import const, keepdims, opset, reduce_axes

__all__ = ["activation_rules"]


def _scalar(value, expected: float, rtol: float = 1e-4) -> bool:
    arr = const(value)
    return arr is not None and arr.size == 1 and math.isclose(float(arr.reshape(-1)[0]), expected, rel_tol=rtol)


class SoftmaxFusion(pattern.RewriteRuleClassBase):
    def __init__(self, stable: bool):
        super().__init__(name=f"SoftmaxFusion[{'max-subtracted' if stable else 'plain'}]")
        self.stable = stable

    def pattern(self, op, x):
        shifted = op.Sub(x, op.ReduceMax(x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["rmax"])) if self.stable else x
        e = op.Exp(shifted)
        return op.Div(e, op.ReduceSum(e, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["rsum"]))

    def check(self, context, x, rsum, rmax=None, **_) -> MatchResult:
        reductions = [rsum.producer()] + ([rmax.producer()] if rmax is not None else [])
        axes = [reduce_axes(n) for n in reductions]
        if any(a is None or len(a) != 1 for a in axes):
            return MatchResult().fail("reductions are not over one constant axis")
        rank = len(x.shape) if x.shape is not None else None
        if rank is None:
            return MatchResult().fail("input rank unknown", x)
        if len({a[0] % rank for a in axes}) != 1:
            return MatchResult().fail("ReduceMax and ReduceSum reduce different axes")
        if not all(keepdims(n) for n in reductions):
            return MatchResult().fail("reductions do not keep dims")
        self._axis = axes[0][0]
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.Softmax(x, axis=self._axis)


class GeluErfFusion(pattern.RewriteRuleClassBase):
    """0.5 * x * (1 + Erf(x / sqrt2)); ``order`` picks where the 0.5 is applied."""

    def __init__(self, order: str):
        super().__init__(name=f"GeluErfFusion[{order}]")
        self.order = order

    def pattern(self, op, x, half, one, root2):
        inner = op.Add(op.Erf(op.Div(x, root2)), one)
        if self.order == "half-x-first":
            return op.Mul(op.Mul(x, half), inner)
        if self.order == "half-last":
            return op.Mul(op.Mul(x, inner), half)
        return op.Mul(x, op.Mul(inner, half))

    def check(self, context, half, one, root2, **_) -> MatchResult:
        if opset(context) < 20:
            return MatchResult().fail("the model's opset has no Gelu (needs >= 20)")
        if not (_scalar(half, 0.5) and _scalar(one, 1.0) and _scalar(root2, math.sqrt(2.0))):
            return MatchResult().fail("constants are not 0.5, 1 and sqrt(2)")
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.Gelu(x)


class GeluTanhFusion(pattern.RewriteRuleClassBase):
    """0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x**3))) -> Gelu(x, approximate="tanh")."""

    def pattern(self, op, x, half, one, k, c, three):
        cube = op.Mul(op.Pow(x, three), c)
        inner = op.Add(op.Tanh(op.Mul(op.Add(x, cube), k)), one)
        return op.Mul(op.Mul(x, half), inner)

    def check(self, context, half, one, k, c, three, **_) -> MatchResult:
        if opset(context) < 20:
            return MatchResult().fail("the model's opset has no Gelu (needs >= 20)")
        if not (_scalar(half, 0.5) and _scalar(one, 1.0) and _scalar(three, 3.0) and _scalar(c, 0.044715, 1e-3)
                and _scalar(k, math.sqrt(2 / math.pi), 1e-3)):
            return MatchResult().fail("constants are not those of the tanh approximation")
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.Gelu(x, approximate="tanh")


def activation_rules() -> tuple:
    r = onnxscript_rules
    commuted = [rule for base in (GeluErfFusion.rule(o) for o in ("half-x-first", "half-last", "half-inner")) for rule in base.commute()]
    return (
        *r.fuse_hardswish_rules().rules,
        r.max_min_rule, r.min_max_rule, r.max_max_rule, r.min_min_rule,
        r.successive_relu_rule, r.successive_clip_rule, r.successive_relu_clip_rule, r.successive_clip_relu_rule,
        SoftmaxFusion.rule(True), SoftmaxFusion.rule(False),
        *commuted,
        *GeluTanhFusion.rule().commute(),
    )


