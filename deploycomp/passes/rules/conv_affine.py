"""Fold a per-channel affine that follows a Conv into the Conv's weights and bias.

Exporters that fold BatchNorm into "scale and shift" (PaddlePaddle's, for one) leave
``Conv -> Mul(s) -> Add(t)`` with ``s``, ``t`` constant per output channel. Since
``Conv(x, W, b) = W * x + b`` is linear in ``W`` and ``b``:

    Conv(x, W, b) * s = Conv(x, W * s[:, None, ...], b * s)
    Conv(x, W, b) + t = Conv(x, W, b + t)

valid when ``s``/``t`` broadcast over the Conv output ``N x C x ...`` along the
channel axis only (shape ``[C, 1, 1]``, ``[1, C, 1, 1]`` or a scalar) and the Conv
output feeds nothing else. A Conv without bias gets one (zeros, then shifted).
onnxscript's ``conv_affine`` rule covers scalars only; this one covers channels.
"""

from __future__ import annotations

import numpy as np
from onnxscript.rewriter import MatchResult, pattern

from deploycomp.passes.rules._util import const, exclusive_uses, initializer, static_shape

__all__ = ["ConvAddFusion", "ConvMulFusion", "conv_affine_rules"]


def _per_channel(arr: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    if arr.ndim > out_rank:
        return None
    padded = arr.reshape((1,) * (out_rank - arr.ndim) + arr.shape)
    if padded.shape[0] != 1 or any(d != 1 for d in padded.shape[2:]) or padded.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(padded.reshape(-1), (channels,))


class _ConvAffineBase(pattern.RewriteRuleClassBase):
    def check(self, context, x, w, conv_out, operand, **_) -> MatchResult:
        result = MatchResult()
        conv = conv_out.producer()
        weights = const(w)
        if weights is None:
            return result.fail("Conv weight is not constant", w)
        if len(conv.inputs) > 2 and conv.inputs[2] is not None and const(conv.inputs[2]) is None:
            return result.fail("Conv bias is not constant")
        value = const(operand)
        if value is None:
            return result.fail("the Mul/Add operand is not constant", operand)
        if self._per_channel(w, conv_out, operand) is None:
            return result.fail(f"operand shape {list(value.shape)} is not per-output-channel", operand)
        if len(conv_out.uses()) != 1 or conv_out.is_graph_output():
            return result.fail("Conv output has other consumers", conv_out)
        if not exclusive_uses(w, {conv}):
            return result.fail("Conv weight is shared with other nodes", w)
        if not np.issubdtype(value.dtype, np.floating) or value.dtype != weights.dtype:
            return result.fail("operand dtype differs from the weights'", operand)
        return result

    @staticmethod
    def _per_channel(w, conv_out, operand) -> np.ndarray | None:
        """The operand as one value per output channel (None if it varies otherwise)."""
        weights = const(w)
        rank = len(static_shape(conv_out) or weights.shape)
        return _per_channel(const(operand), rank, weights.shape[0])

    def _new_conv(self, op, x, w, conv_out, new_w: np.ndarray, new_b: np.ndarray):
        conv = conv_out.producer()
        return op.Conv(
            x,
            initializer(op, w.graph, f"{w.name}__affine", new_w),
            initializer(op, w.graph, f"{w.name}__affine_bias", new_b),
            **conv.attributes,
        )

    @staticmethod
    def _bias(conv_out, channels: int, dtype) -> np.ndarray:
        conv = conv_out.producer()
        b = const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
        return b if b is not None else np.zeros(channels, dtype)


class ConvMulFusion(_ConvAffineBase):
    def pattern(self, op, x, w, operand):
        return op.Mul(op.Conv(x, w, _allow_other_inputs=True, _outputs=["conv_out"]), operand)

    def rewrite(self, op, x, w, conv_out, operand, **_):
        weights = const(w)
        s = self._per_channel(w, conv_out, operand)
        new_w = (weights * s.reshape((-1,) + (1,) * (weights.ndim - 1))).astype(weights.dtype)
        new_b = (self._bias(conv_out, weights.shape[0], weights.dtype) * s).astype(weights.dtype)
        return self._new_conv(op, x, w, conv_out, new_w, new_b)


class ConvAddFusion(_ConvAffineBase):
    def pattern(self, op, x, w, operand):
        return op.Add(op.Conv(x, w, _allow_other_inputs=True, _outputs=["conv_out"]), operand)

    def rewrite(self, op, x, w, conv_out, operand, **_):
        weights = const(w)
        t = self._per_channel(w, conv_out, operand)
        new_b = (self._bias(conv_out, weights.shape[0], weights.dtype) + t).astype(weights.dtype)
        return self._new_conv(op, x, w, conv_out, weights, new_b)


def conv_affine_rules() -> tuple:
    return (*ConvMulFusion.rule().commute(), *ConvAddFusion.rule().commute())
