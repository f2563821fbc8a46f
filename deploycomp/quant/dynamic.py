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
tried that way, least costly first: all of them, and, if that misses, the longest such
prefix that meets the budget, by bisection, then past the layer that broke it
(:func:`weights_only_layers`). The order is each layer's own dynamic-range error
(:func:`dynamic_ranking`: the float model with that layer's weights quantized and its
input fake-quantized as the hybrid kernel does it, measured like the quantize-one
ranking) per MAC it would move into int8, not its static error: on PP-OCRv4 rec the
static order put a layer third whose dynamic error was the largest (3 layers dynamic:
cosine 0.954; 7: 0.980), and per MAC the budget buys the most compute (the TFLite
corpus, static order at 16be31d -> per MAC at 67aabc6: PP-OCRv5 rec 35% -> 67% of MACs
int8, det 67% -> 79%, the layout detector none -> 84%). In the QDQ graph such a layer
is a float layer whose weight alone is quantized (a DequantizeLinear of int8 data), marked with
:data:`DYNAMIC` in its metadata so the lowering cannot mistake it for a static int8
layer whose neighbours happen to quantize its input and output.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from deploycomp.quant.constants import add_initializer, constant

__all__ = ["DYNAMIC", "MARK", "dynamic_copy", "dynamic_ranking", "hybrid_capable", "is_dynamic",
           "weights_only_layers"]

MARK, DYNAMIC = "deploycomp.int8", "dynamic"
"""Node metadata key and value of a layer that runs a dynamic-range (hybrid) kernel."""

BISECTION_STEPS = 6
"""Runtime checks after "all of them" missed: the prefix is found to 1/64 of the layers."""

MAX_CHECKS = 14
"""Runtime checks in all, over the rounds that pass over a layer that broke the budget
(:func:`weights_only_layers`): about two rounds past the first."""


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
                        steps: int = BISECTION_STEPS, max_checks: int = MAX_CHECKS,
                        worth: Callable[[list[str]], bool] = lambda names: True,
                        stop: Callable[[], bool] = lambda: False) -> tuple[list[list[str]], int]:
    """The layers of ``eligible`` (least costly first) that may run hybrid with the budget
    still met: the choice first, then the smaller sets that also met it, largest first
    (what a validation miss falls back to); and how many checks it took.

    All of them are checked first (the common case), else the longest prefix that meets
    the budget is found by bisection; the layer right after it, which broke the budget,
    is passed over and the rest are tried after the prefix in the same way, until the
    checks run out: one layer whose input no single range holds would otherwise keep
    every layer after it in the order float. A round starts only while the layers it
    could add would make a set ``worth`` having (e.g. enough MACs to be worth a dynamic
    kernel's overhead): on PP-OCRv3 det (TFLite) the rounds past the first spent 7 of 14
    checks on sets that could not reach the share the caller keeps (build 34 -> 31 s).
    ``stop()``: true when no more checks may start (a time limit); what met so far stands."""
    chosen: list[str] = []
    remaining = list(eligible)
    held: list[list[str]] = []
    checks = 0
    while remaining and checks < max_checks and worth(chosen + remaining) and not stop():
        checks += 1
        if meets(set(chosen + remaining)):
            chosen += remaining
            held.append(list(chosen))
            break
        met, missed = 0, len(remaining)
        for _ in range(steps):
            if missed - met <= 1 or checks >= max_checks or stop():
                break
            mid = (met + missed) // 2
            checks += 1
            if meets(set(chosen + remaining[:mid])):
                met = mid
                held.append(chosen + remaining[:mid])
            else:
                missed = mid
        chosen += remaining[:met]
        if missed - met > 1:  # the layer that broke it is not pinned down: stop here
            break
        remaining = remaining[met + 1:]
    unique = {len(h): h for h in held}  # nested sets: one per size
    return [unique[k] for k in sorted(unique, reverse=True)], checks


def _pointwise(node: ir.Node) -> bool:
    shape = node.inputs[1].shape  # the weight (maybe behind its DequantizeLinear)
    attrs = node.attributes
    pads = attrs.get_ints("pads", ()) or ()
    strides = attrs.get_ints("strides", ()) or ()
    return (shape is not None and all(k == 1 for k in list(shape)[2:]) and attrs.get_int("group", 1) == 1
            and not any(pads) and all(s == 1 for s in strides))


def _fake_quantized_input(graph: ir.Graph, node: ir.Node, opset: int) -> None:
    """Make ``node`` read its input as the hybrid kernel does: asymmetric int8 to its own
    range (``[min(x, 0), max(x, 0)]`` over the sample for a conv, over each row for a
    matrix product), ``q = clip(round(x / s) + zp)``, ``x' = (q - zp) s``."""
    x = node.inputs[0]
    tag = f"{node.name}__dyn"
    c = {k: add_initializer(graph, f"{tag}_{k}", np.array(v, np.float32))
         for k, v in (("zero", 0.0), ("steps", 255.0), ("tiny", 1e-12), ("low", -128.0), ("high", 127.0))}
    reduce_attrs: dict = {"keepdims": 1}
    reduce_inputs: list = [x]
    axis = -1 if node.op_type != "Conv" else 1 if _pointwise(node) else None
    if axis is not None:  # per row (XNNPACK runs a 1x1 conv as a matrix product: per pixel)
        if opset >= 18:
            reduce_inputs.append(add_initializer(graph, f"{tag}_axes", np.array([axis], np.int64)))
        else:
            reduce_attrs["axes"] = [axis]
    nodes = []

    def op(kind: str, *inputs, **attrs) -> ir.Value:
        n = ir.node(kind, list(inputs), attributes=attrs or None, name=f"{tag}_{kind.lower()}{len(nodes)}")
        n.outputs[0].name = n.name
        nodes.append(n)
        return n.outputs[0]

    lo = op("Min", op("ReduceMin", *reduce_inputs, **reduce_attrs), c["zero"])
    hi = op("Max", op("ReduceMax", *reduce_inputs, **reduce_attrs), c["zero"])
    scale = op("Max", op("Div", op("Sub", hi, lo), c["steps"]), c["tiny"])
    zero_point = op("Round", op("Sub", c["low"], op("Div", lo, scale)))
    q = op("Max", op("Min", op("Add", op("Round", op("Div", x, scale)), zero_point), c["high"]), c["low"])
    dequantized = op("Mul", op("Sub", q, zero_point), scale)
    graph.insert_before(node, nodes)
    node.replace_input_with(0, dequantized)


def dynamic_copy(model: ir.Model, policy, layer: str) -> ir.Model | None:
    """The float model with only ``layer`` as a dynamic-range layer would compute it: its
    weights int8 per channel and its input fake-quantized per sample (or row); None where
    the model's opset has no ``Round`` (before 11)."""
    from deploycomp.quant.sensitivity import quantized_copy

    opset = model.opset_imports.get("", 0)
    if opset < 11:
        return None
    everything = {n.name for n in model.graph}
    copy = quantized_copy(model, policy, {}, everything, weights_only={layer})
    node = next(n for n in copy.graph if n.name == layer)
    _fake_quantized_input(copy.graph, node, opset)
    return copy


def dynamic_ranking(view: ir.Model, policy, layers: Sequence[str], samples: Sequence[Mapping[str, np.ndarray]],
                    refs: Sequence[Mapping[str, np.ndarray]],
                    angles: Mapping[str, np.ndarray] | None = None) -> dict[str, float] | None:
    """Each layer's output NMSE (summed over outputs) with it alone dynamic-range and the
    rest float, on ``samples`` (``refs``: the float model's outputs there), measured like
    the quantize-one ranking (each copy run from its cut down on the float model's
    tensors; ``angles`` as there); None where it cannot be measured."""
    from deploycomp.quant.sensitivity import _measurer

    if not layers or view.opset_imports.get("", 0) < 11:
        return None
    measure = _measurer(view, policy, {}, samples, refs, None,
                        copy_for=lambda unit: dynamic_copy(view, policy, unit[0]), angles=angles)
    try:
        errors = measure([[layer] for layer in layers])
    finally:
        measure.release()
    return {layer: sum(e.values()) for layer, e in zip(layers, errors)}
