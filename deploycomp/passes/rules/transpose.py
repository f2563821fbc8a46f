"""Transpose chains: merge, cancel, and move Transposes so that they meet and cancel.

* ``Transpose(Transpose(x, p), q) = Transpose(x, p∘q)``; an identity permutation is
  dropped (onnxscript's rules).
* Elementwise unary ops commute with a permutation:
  ``Transpose(f(Transpose(x, p)), q) = f(Transpose(x, p∘q))``, which then merges and,
  when ``p∘q`` is the identity, cancels. Ours.
* Binary elementwise ops on two inputs permuted alike:
  ``g(Transpose(a, p), Transpose(b, p)) = Transpose(g(a, b), p)``: one Transpose
  instead of two, pushed towards the next one. Ours.

These are the moves the NHWC layout pass (TFLite) builds on.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern
from onnxscript.rewriter.rules import common as onnxscript_rules

__all__ = ["ELEMENTWISE_BINARY", "ELEMENTWISE_UNARY", "transpose_rules"]

ELEMENTWISE_UNARY = ("Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Abs", "Neg",
                     "Exp", "Log", "Sqrt", "Erf", "Clip", "Cast", "Softplus", "Gelu")
ELEMENTWISE_BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")


def _perm(value: ir.Value) -> list[int] | None:
    node = value.producer()
    attr = node.attributes.get("perm") if node is not None else None
    return list(attr.as_ints()) if attr is not None else None


class UnaryBetweenTransposes(pattern.RewriteRuleClassBase):
    def __init__(self, op_type: str):
        super().__init__(name=f"UnaryBetweenTransposes[{op_type}]")
        self.op_type = op_type

    def pattern(self, op, x):
        inner = op.Transpose(x, _allow_other_attributes=True, _outputs=["t1"])
        mid = getattr(op, self.op_type)(inner, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["u"])
        return op.Transpose(mid, _allow_other_attributes=True, _outputs=["t2"])

    def check(self, context, x, t1, u, t2, **_) -> MatchResult:
        if _perm(t1) is None or _perm(t2) is None:
            return MatchResult().fail("a Transpose has no explicit perm")
        unary = u.producer()
        if any(v is not None and v.const_value is None for v in unary.inputs[1:]):
            return MatchResult().fail(f"{self.op_type} has non-constant extra inputs")
        return MatchResult()

    def rewrite(self, op, x, t1, u, t2, **_):
        p, q = _perm(t1), _perm(t2)
        composed = [p[i] for i in q]
        unary = u.producer()
        moved = op.Transpose(x, perm=composed)
        return op.op(self.op_type, moved, *unary.inputs[1:], **unary.attributes)


class BinaryOfTransposes(pattern.RewriteRuleClassBase):
    def __init__(self, op_type: str):
        super().__init__(name=f"BinaryOfTransposes[{op_type}]")
        self.op_type = op_type

    def pattern(self, op, a, b):
        ta = op.Transpose(a, _allow_other_attributes=True, _outputs=["ta"])
        tb = op.Transpose(b, _allow_other_attributes=True, _outputs=["tb"])
        return getattr(op, self.op_type)(ta, tb)

    def check(self, context, a, b, ta, tb, **_) -> MatchResult:
        pa, pb = _perm(ta), _perm(tb)
        if pa is None or pa != pb:
            return MatchResult().fail("the two Transposes differ")
        if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
            return MatchResult().fail("operand ranks differ or are unknown")
        return MatchResult()

    def rewrite(self, op, a, b, ta, **_):
        return op.Transpose(op.op(self.op_type, a, b), perm=_perm(ta))


def transpose_rules() -> tuple:
    r = onnxscript_rules
    return (
        r.transpose_transpose_rule,
        r.no_op_transpose_rule,
        *(UnaryBetweenTransposes.rule(t) for t in ELEMENTWISE_UNARY),
        *(BinaryOfTransposes.rule(t) for t in ELEMENTWISE_BINARY),
    )
