"""Fold BatchNormalization into the Conv, ConvTranspose or Gemm before it.

With ``s = gamma / sqrt(var + eps)``: ``BN(W x + b) = (W * s) x + (b - mean) * s + beta``,
the weights scaled along their output-channel axis. onnxscript's rules implement
exactly this and check that the parameters are constant and unshared; we use them.
A BatchNormalization with no foldable producer stays (backends run it natively).
"""

from __future__ import annotations

from onnxscript.rewriter.rules import common as onnxscript_rules

__all__ = ["batchnorm_rules"]


def batchnorm_rules() -> tuple:
    r = onnxscript_rules
    return (r.fuse_batchnorm_into_conv_rule, r.fuse_batchnorm_into_conv_transpose_rule, r.fuse_batchnorm_into_gemm_rule)
