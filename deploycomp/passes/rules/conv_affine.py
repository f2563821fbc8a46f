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

An affine *before* a Conv folds too, per input channel (PP-LCNetV3's "learnable affine
blocks", ``HardSwish -> Mul(a) -> Add(b) -> Conv``, in PP-OCRv5 det and rec):

    Conv(x * s, W, b) = Conv(x, W * s[in], b)                 any padding: pad(s x) = s pad(x)
    Conv(x + t, W, b) = Conv(x, W, b + sum(W * t[in]))        no padding: a padded border adds 0, not t
    Conv((x * s) + t) = Conv(x + t / s, W * s[in], b)         padded, s nonzero: the scale still folds

Each removes element-wise ops that an int8 encoding requantizes one by one (TFLite's:
an int8 MUL and ADD per block) and leaves the Conv reading the producer's tensor. They
run in TFLite's pipeline only (:func:`affine_into_conv_rules`): elsewhere the int8
boosters use that affine as the place for a per-channel shift and scale, and without
it PP-OCRv5 rec on host kept 29 of 51 layers int8 instead of 49 (TensorRT 20 instead
of 33); on TFLite, whose encoding requantizes the MUL and the ADD and whose policy runs
no boosters, PP-OCRv5 det went from 19 to 28 layers int8 (heavy layers int8, static or
dynamic, 62% -> 73%) and rec from 8 to 15 (35% -> 65%).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, pattern

from deploycomp.passes.rules._util import const, exclusive_uses, initializer, padded, per_channel, static_shape

__all__ = ["AddIntoConvFusion", "ConvAddFusion", "ConvMulFusion", "MulAddIntoPaddedConvFusion", "MulIntoConvFusion",
           "affine_into_conv_rules", "conv_affine_rules"]


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
        return per_channel(const(operand), rank, weights.shape[0])

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


def _per_input_channel(operand: np.ndarray, x: ir.Value, channels: int) -> np.ndarray | None:
    """``operand`` as one value per input channel of a Conv reading ``x * operand`` (None
    if it varies otherwise or would broadcast ``x`` to another shape)."""
    rank = len(x.shape) if x.shape is not None else None
    if rank is None or operand.ndim > rank:
        return None
    return per_channel(operand, rank, channels)


def _group(conv: ir.Node) -> int:
    return int(conv.attributes["group"].value) if "group" in conv.attributes else 1


def _group_map(weights: np.ndarray, group: int) -> np.ndarray:
    """For each weight entry's (output channel, input-slot) the input channel it reads:
    shape ``(C_out, C_in / group)``."""
    per_group_out = weights.shape[0] // group
    slots = weights.shape[1]
    return (np.arange(weights.shape[0])[:, None] // per_group_out) * slots + np.arange(slots)[None, :]


class _AffineIntoConvBase(pattern.RewriteRuleClassBase):
    """A Mul or Add by a per-input-channel constant right before a Conv, folded into it."""

    def _check(self, x, operand, conv_in, w, conv_out) -> MatchResult:
        result = MatchResult()
        conv = conv_out.producer()
        weights, value = const(w), const(operand)
        if weights is None or value is None:
            return result.fail("weight or operand not constant")
        if len(conv.inputs) > 2 and conv.inputs[2] is not None and const(conv.inputs[2]) is None:
            return result.fail("Conv bias is not constant")
        if not np.issubdtype(value.dtype, np.floating) or value.dtype != weights.dtype:
            return result.fail("operand dtype differs from the weights'", operand)
        group = _group(conv)
        if self._per_input(x, operand, weights, group) is None:
            return result.fail("operand is not one value per input channel", operand)
        if static_shape(conv_in) is None or static_shape(conv_in) != static_shape(x):
            return result.fail("the operand would broadcast the input", conv_in)
        if not exclusive_uses(conv_in, {conv}) or not exclusive_uses(w, {conv}):
            return result.fail("the affine's output or the weight has other readers")
        return result

    @staticmethod
    def _per_input(x, operand, weights: np.ndarray, group: int) -> np.ndarray | None:
        return _per_input_channel(const(operand), x, weights.shape[1] * group)

    def _new_conv(self, op, x, w, conv_out, new_w, new_b):
        conv = conv_out.producer()
        return op.Conv(x, initializer(op, w.graph, f"{w.name}__in_affine", new_w),
                       initializer(op, w.graph, f"{w.name}__in_affine_bias", new_b), **conv.attributes)


SCALE_SPREAD = 8.0
"""A per-input-channel scale folds into a Conv's weights only while its factors are at
most this far apart. Folded, each output channel's int8 weight scale is set by its
largest ``W * s``: a Keras BatchNorm after a ReLU has factors near 30 on channels the
ReLU never opens and 1e-3 on the others, and every live weight rounded to 0 (all-int8
cosine 0.0 on a four-layer repro; 0.35 on an MRZ U-Net). Left standing, the affine
becomes a depthwise Conv with a weight scale per channel
(:mod:`deploycomp.passes.affine_depthwise`)."""


def _spread_too_wide(s: np.ndarray) -> bool:
    magnitude = np.abs(s.astype(np.float64))
    return bool(magnitude.min() == 0 or magnitude.max() / magnitude.min() > SCALE_SPREAD)


class MulIntoConvFusion(_AffineIntoConvBase):
    """``Conv(x * s) -> Conv(x)`` with ``W * s`` per input channel: exact with any padding
    (factors at most :data:`SCALE_SPREAD` apart)."""

    def pattern(self, op, x, operand, w):
        return op.Conv(op.Mul(x, operand, _outputs=["conv_in"]), w, _allow_other_inputs=True, _outputs=["conv_out"])

    def check(self, context, x, operand, conv_in, w, conv_out, **_) -> MatchResult:
        result = self._check(x, operand, conv_in, w, conv_out)
        if result and _spread_too_wide(self._per_input(x, operand, const(w), _group(conv_out.producer()))):
            return result.fail("the per-channel factors are too far apart for one int8 weight scale", operand)
        return result

    def rewrite(self, op, x, operand, conv_in, w, conv_out, **_):
        conv = conv_out.producer()
        weights = const(w)
        group = _group(conv)
        s = self._per_input(x, operand, weights, group)[_group_map(weights, group)]
        new_w = (weights * s.reshape(s.shape + (1,) * (weights.ndim - 2))).astype(weights.dtype)
        return self._new_conv(op, x, w, conv_out, new_w, _ConvAffineBase._bias(conv_out, weights.shape[0],
                                                                                weights.dtype))


class AddIntoConvFusion(_AffineIntoConvBase):
    """``Conv(x + t) -> Conv(x)`` with ``b + sum(W * t)``: exact without padding only."""

    def pattern(self, op, x, operand, w):
        return op.Conv(op.Add(x, operand, _outputs=["conv_in"]), w, _allow_other_inputs=True, _outputs=["conv_out"])

    def check(self, context, x, operand, conv_in, w, conv_out, **_) -> MatchResult:
        result = self._check(x, operand, conv_in, w, conv_out)
        if result and padded(conv_out.producer()):
            return result.fail("a padded border would add 0 where x + t adds t")
        return result

    def rewrite(self, op, x, operand, conv_in, w, conv_out, **_):
        conv = conv_out.producer()
        weights = const(w)
        group = _group(conv)
        t = self._per_input(x, operand, weights, group)[_group_map(weights, group)]
        shift = (weights.astype(np.float64) * t.reshape(t.shape + (1,) * (weights.ndim - 2))).reshape(
            weights.shape[0], -1).sum(axis=1)
        bias = _ConvAffineBase._bias(conv_out, weights.shape[0], weights.dtype)
        return self._new_conv(op, x, w, conv_out, weights, (bias + shift).astype(weights.dtype))


class MulAddIntoPaddedConvFusion(_AffineIntoConvBase):
    """``Conv((x * s) + t)`` with padding: ``Conv(x + t / s)`` with ``W * s`` (s nonzero);
    the Add stays, the scale folds."""

    def pattern(self, op, x, scale, shift, w):
        return op.Conv(op.Add(op.Mul(x, scale, _outputs=["scaled"]), shift, _outputs=["conv_in"]), w,
                       _allow_other_inputs=True, _outputs=["conv_out"])

    def check(self, context, x, scale, scaled, shift, conv_in, w, conv_out, **_) -> MatchResult:
        result = self._check(x, scale, conv_in, w, conv_out)
        if not result:
            return result
        if not padded(conv_out.producer()):
            return result.fail("without padding the Add folds into the bias instead")
        value = const(shift)
        if value is None or value.dtype != const(w).dtype or not exclusive_uses(scaled, {conv_in.producer()}):
            return result.fail("the shift is not constant, or the scaled tensor has other readers")
        group = _group(conv_out.producer())
        s = self._per_input(x, scale, const(w), group)
        t = _per_input_channel(value, x, const(w).shape[1] * group)
        if t is None or not np.all(s != 0) or not np.all(np.isfinite(t / s)):
            return result.fail("the shift is not per input channel, or a scale is 0")
        if _spread_too_wide(s):
            return result.fail("the per-channel factors are too far apart for one int8 weight scale", scale)
        return result

    def rewrite(self, op, x, scale, scaled, shift, conv_in, w, conv_out, **_):
        conv = conv_out.producer()
        weights = const(w)
        group = _group(conv)
        channels = weights.shape[1] * group
        s = self._per_input(x, scale, weights, group)
        t = _per_input_channel(const(shift), x, channels)
        rank = len(x.shape)
        moved = op.Add(x, initializer(op, w.graph, f"{shift.name}__over_scale",
                                      (t / s).astype(weights.dtype).reshape((1, channels) + (1,) * (rank - 2))))
        gathered = s[_group_map(weights, group)]
        new_w = (weights * gathered.reshape(gathered.shape + (1,) * (weights.ndim - 2))).astype(weights.dtype)
        return self._new_conv(op, moved, w, conv_out, new_w, _ConvAffineBase._bias(conv_out, weights.shape[0],
                                                                                    weights.dtype))


def conv_affine_rules() -> tuple:
    """A per-channel affine after a Conv, into it (every pipeline)."""
    return (*ConvMulFusion.rule().commute(), *ConvAddFusion.rule().commute())


def affine_into_conv_rules() -> tuple:
    """A per-input-channel affine before a Conv, into it (TFLite's pipeline: see the module
    docstring)."""
    return (*AddIntoConvFusion.rule().commute(), *MulAddIntoPaddedConvFusion.rule().commute(),
            *MulIntoConvFusion.rule().commute())
