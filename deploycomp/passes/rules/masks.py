"""A large additive mask is added last, after a bias that does not depend on the inputs.

Attention adds two things to its scores: a bias (T5's relative positions, ALiBi's
slopes, a Swin window's table: constant once the shapes are static) and a padding mask
written as ``(1 - mask) * K`` with ``K`` float32's minimum or ``-10000`` (Hugging Face's
extended attention mask). Exported as ``scores + (bias + mask_term)``, the rule makes it
``(scores + bias) + mask_term``. Where the mask is 1 its term is exactly 0 and the two
agree bit for bit; where it is 0 the bias is lost in the rounding at ``K`` either way. In
general it is the same sum with the small term added before the large one, which rounds
no worse.

Why it matters: OpenVINO 2026.4's CPU plugin, with static shapes, folds the bias to a
constant, writes ``(1 - m) * K`` as ``m * -K + K`` and merges ``K`` into that constant:
``bias + K`` is ``K``, and the bias vanished from every unmasked score (a flan-T5 encoder
at 1 x 64: cosine 0.57 against ONNX Runtime; with the dims left dynamic it folds
nothing and holds). Added last, the mask term meets no constant to merge with.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern

from deploycomp.passes.rules._util import const

__all__ = ["MASK_SCALE", "mask_rules"]

MASK_SCALE = 1e4
"""A ``Mul`` by a scalar at least this large (in magnitude) makes a mask term: -10000 is
the smallest scale exporters write."""

_DEPTH = 8


def _input_free(value: ir.Value, depth: int = _DEPTH) -> bool:
    """True if ``value`` is computed from constants alone within ``depth`` producers (what
    a runtime folds once shapes are static)."""
    if value.const_value is not None and not value.is_graph_input():
        return True
    node = value.producer()
    if node is None or depth == 0 or node.op_type in ("If", "Loop", "Scan"):
        return False
    return all(v is None or _input_free(v, depth - 1) for v in node.inputs)


def _mask_scale(value: ir.Value) -> float | None:
    """K, if ``value`` is ``Mul(m, K)`` with K a scalar constant: None otherwise."""
    node = value.producer()
    if node is None or node.op_type != "Mul":
        return None
    scales = [c for c in (const(v) for v in node.inputs) if c is not None and c.size == 1]
    return float(scales[0].reshape(())) if len(scales) == 1 else None


class MaskAddedLast(pattern.RewriteRuleClassBase):
    def __init__(self):
        # the bias-and-mask sum is often shared (T5 computes it once for every layer): each
        # reader gets its own order, and the shared Add goes when its last reader has
        super().__init__(remove_nodes=False)

    def pattern(self, op, x, bias, mask):
        return op.Add(x, op.Add(bias, mask))

    def check(self, context, x, bias, mask, **_) -> MatchResult:
        scale = _mask_scale(mask)
        if scale is None or not np.isfinite(scale) or abs(scale) < MASK_SCALE:
            return MatchResult().fail("the last term is not a Mul by a large scalar constant", mask)
        if _input_free(mask):
            return MatchResult().fail("the mask term is constant", mask)
        if not _input_free(bias):
            return MatchResult().fail("the bias depends on the inputs: nothing to merge it with", bias)
        if _input_free(x):
            return MatchResult().fail("the scores are constant", x)
        return MatchResult()

    def rewrite(self, op, x, bias, mask, **_):
        return op.Add(op.Add(x, bias), mask)


def mask_rules() -> tuple:
    return tuple(MaskAddedLast.rule().commute())
