"""Layers the static int8 encoding cannot hold that still multiply in int8: dynamic range.

A TFLite int8 kernel writes int8: every statically quantized layer requantizes its
output to a scale fixed at calibration, and that is where TFLite's encoding loses what
OpenVINO's does not (OpenVINO dequantizes a conv's int32 accumulator straight to float).
Measured on PP-OCRv5 rec, all layers int8 with every other TFLite rule off: 0.851
cosine; requantizing the compute layers' outputs alone: 0.493. So the float-layer
search keeps most of such a model float (rec 103 of 187 nodes, 1% of MACs int8).

TFLite has a second int8 form for a layer, the *hybrid* (dynamic-range) kernel of
CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: float in, float out, int8 weights, the
input quantized per sample when it arrives (to its own range, not a calibrated one) and
the int32 accumulator scaled back to float. Neither fixed ranges nor requantized
outputs: what it adds to the float layer is the weights' rounding and one input
rounding fitted to that input.

So after the search has chosen its float layers, those the backend can run hybrid are
tried that way, least sensitive first (the ranking's order reversed): all of them,
and, if that misses, the longest such prefix that meets the budget, by bisection
(``log2(n)`` runtime checks). In the QDQ graph such a layer is a float layer whose
weight alone is quantized (a DequantizeLinear of int8 data), marked with
:data:`DYNAMIC` in its metadata so the lowering cannot mistake it for a static int8
layer whose neighbours happen to quantize its input and output.
"""

from __future__ import annotations

from typing import Callable, Sequence

import onnx_ir as ir

from deploycomp.quant.constants import constant

__all__ = ["DYNAMIC", "MARK", "hybrid_capable", "is_dynamic", "weights_only_layers"]

MARK, DYNAMIC = "deploycomp.int8", "dynamic"
"""Node metadata key and value of a layer that runs a dynamic-range (hybrid) kernel."""

BISECTION_STEPS = 6
"""Runtime checks after "all of them" missed: the prefix is found to 1/64 of the layers."""


def is_dynamic(node: ir.Node) -> bool:
    return node.metadata_props.get(MARK) == DYNAMIC


def hybrid_capable(node: ir.Node, dynamic_ops: Sequence[str]) -> bool:
    """Whether ``node`` has a hybrid kernel: a constant float weight, and for a Conv a 1-D
    or 2-D one that is dense or depthwise (TFLite has no hybrid grouped conv); for
    MatMul a 2-D weight (FULLY_CONNECTED); for Gemm no ``alpha`` to fold into it."""
    if node.op_type not in dynamic_ops or len(node.inputs) < 2:
        return False
    weight = constant(node.inputs[1])
    if weight is None or weight.dtype.kind != "f" or constant(node.inputs[0]) is not None:
        return False
    attrs = node.attributes
    if node.op_type == "Conv":
        group = attrs.get_int("group", 1)
        return weight.ndim in (3, 4) and (group == 1 or weight.shape[1] == 1 and weight.shape[0] % group == 0)
    if node.op_type == "MatMul":
        return weight.ndim == 2
    if node.op_type == "Gemm":
        return weight.ndim == 2 and attrs.get_float("alpha", 1.0) == 1.0
    return False


def weights_only_layers(eligible: Sequence[str], meets: Callable[[set[str]], object],
                        steps: int = BISECTION_STEPS) -> tuple[list[str], int]:
    """The longest prefix of ``eligible`` (least sensitive first) that may run hybrid
    with the budget still met, and how many checks it took: all of them first (the
    common case), else a bisection between none (the search's own choice, which met the
    budget) and all."""
    if not eligible:
        return [], 0
    checks = 1
    if meets(set(eligible)):
        return list(eligible), checks
    met, missed = 0, len(eligible)
    for _ in range(steps):
        if missed - met <= 1:
            break
        mid = (met + missed) // 2
        checks += 1
        if meets(set(eligible[:mid])):
            met = mid
        else:
            missed = mid
    return list(eligible[:met]), checks
