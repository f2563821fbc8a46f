"""fp32 ONNX -> fp16 ONNX for a strongly typed TensorRT network.

TensorRT 10+ networks are strongly typed: a tensor's precision is the ONNX tensor's
element type, so "build in fp16" means handing over a graph whose tensors *are* fp16.
Everything float becomes fp16 except ops whose fp16 arithmetic overflows or loses too
much (reductions over many elements, exponentials, normalizations: the fp16 trap that
turns LayerNorm variance or Softmax sums into inf): those stay fp32 behind Casts. The
op list covers what is risky by nature; what is risky by magnitude comes from data:
``fp32_tensors`` (:func:`deploycomp.fp16_ranges.fp32_tensors`, the tensors the build's
real inputs take past fp16's range) keeps their producers and readers fp32 too. Model
inputs and outputs stay fp32 at the interface, with one Cast each way, so callers and
the runner do not change.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp import analysis
from deploycomp.analysis import ELEMENTWISE, compared
from deploycomp.fp16_ranges import FP16_MAX
from deploycomp.passes.to_float32 import Float16ToFloat32Pass
from deploycomp.passes.unused_initializers import RemoveUnusedInitializersPass

__all__ = ["KEEP_FP32", "simulate_fp16", "to_fp16"]

KEEP_FP32 = frozenset({
    "LayerNormalization", "Softmax", "LogSoftmax", "Pow", "ReduceMean", "ReduceSum", "ReduceSumSquare",
    "ReduceL2", "ReduceLogSumExp", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "GroupNormalization",
    "InstanceNormalization", "Cast", "CastLike", "ConstantOfShape", "RandomNormal", "RandomUniform",
    "EyeLike", "QuantizeLinear", "DequantizeLinear", "If", "Loop", "Scan", "Range", "Shape", "Size",
    "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal",
})
"""Op types that keep fp32 tensors: numerically sensitive ops, ops whose output type is an
attribute (Cast, generators), quantization ops, control flow, and comparisons (a value
within fp16's rounding of a threshold takes the other branch; they cost no MACs)."""

MOVES = analysis.MOVES | analysis.SELECTIONS
"""Ops that only move or select values: one whose every reader keeps fp32 keeps fp32 too, so
that what a comparison reads (a tree ensemble's ``Gather`` of the input's columns) is never
rounded through fp16 on its way there."""


def _float_readers(node: ir.Node) -> list[ir.Node]:
    return [user for out in node.outputs if out is not None and out.dtype == FLOAT for user, _ in out.uses()]


def _moves_kept_fp32(graph: ir.Graph, keeps) -> set[int]:
    """The ids of the :data:`MOVES` nodes whose float outputs only nodes keeping fp32 read
    (``keeps(node)``, or such a move itself), from the last node up."""
    kept: set[int] = set()
    for node in reversed(list(graph)):
        if node.op_type not in MOVES or node.domain not in ("", "ai.onnx"):
            continue
        readers = _float_readers(node)
        if readers and all(id(r) in kept or keeps(r) for r in readers):
            kept.add(id(node))
    return kept


def _computing_a_comparison(graph: ir.Graph) -> set[int]:
    """The ids of the element-wise nodes whose every float reader leads to a comparison
    element for element (:func:`deploycomp.analysis.compared`): a scikit-learn pipeline's
    scaled features, split by a tree ensemble. In fp16 they would move a value within
    fp16's rounding of a threshold across it, whatever the comparison computes in."""
    decided = compared(graph)
    kept = set()
    for node in graph:
        if node.op_type not in ELEMENTWISE or node.op_type == "Cast" or node.domain not in ("", "ai.onnx"):
            continue
        readers = _float_readers(node)
        if readers and all(id(r) in decided for r in readers):
            kept.add(id(node))
    return kept


_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
"""(op, input index) that the ONNX spec types as float32 whatever the data type."""

FLOAT, HALF = ir.DataType.FLOAT, ir.DataType.FLOAT16


def _is_initializer(value: ir.Value) -> bool:
    return value.const_value is not None and not value.is_graph_input()


RECURRENT_WITH_LENGTHS = ("GRU", "LSTM", "RNN")
"""Recurrent ops NVIDIA's parser (tensorrt-rtx 1.7) refuses in fp16 when they read
``sequence_lens`` ("Invalid Node", an Arabic diacritiser's 9 GRUs; fp32, and fp16 without
lengths, parse): with lengths they keep fp32."""


def _refused_in_half(graph: ir.Graph) -> set[int]:
    """The ids of the nodes NVIDIA's parser refuses with fp16 tensors (:data:`RECURRENT_WITH_LENGTHS`)."""
    return {id(n) for n in graph if n.op_type in RECURRENT_WITH_LENGTHS and n.domain in ("", "ai.onnx")
            and len(n.inputs) > 4 and n.inputs[4] is not None}


def _reading_constants_past_fp16(graph: ir.Graph) -> set[int]:
    """The ids of the nodes that read a float constant with a finite value past fp16's
    range (65504): in fp16 the constant would be infinite. A tf2onnx MEG classifier kept a
    BatchNormalization whose variance reached 2.3e6 (an fp16 candidate computed with Inf;
    numpy warned of the overflow mid-build)."""
    found = set()
    for node in graph:
        for value in node.inputs:
            if value is None or not _is_initializer(value) or value.dtype != FLOAT:
                continue
            data = value.const_value.numpy()
            if data.size and float(np.max(np.abs(data), where=np.isfinite(data), initial=0.0)) > FP16_MAX:
                found.add(id(node))
                break
    return found


def _captures_fp32(node: ir.Node, graph: ir.Graph, cast) -> None:
    """Control flow keeps fp32 (:data:`KEEP_FP32`): its branches and bodies are typed for
    fp32, so the main-graph tensors they read by name (outer scope, not node inputs) are
    given to them fp32, through the same Casts. A wake-word model's ``If`` returned a
    tensor the main graph now held in fp16 as its fp32 output: every runtime refused it."""
    for attr in node.attributes.values():
        graphs = attr.value if attr.type == ir.AttributeType.GRAPHS else [attr.value] if attr.type == ir.AttributeType.GRAPH else []
        for sub in graphs:
            for inner in ir.traversal.RecursiveGraphIterator(sub):
                for i, value in enumerate(inner.inputs):
                    if (value is not None and value.dtype == HALF and value.producer() is not None
                            and value.producer().graph is graph):
                        inner.replace_input_with(i, cast(value, FLOAT, node))


def to_fp16(model: ir.Model, keep_fp32: frozenset[str] = KEEP_FP32, fp32_tensors=()) -> ir.Model:
    """A converted copy of ``model`` (the argument is not modified); the producers and
    readers of ``fp32_tensors`` stay fp32."""
    model = ir.from_proto(ir.to_proto(model))
    # a float16 model (inputs, weights, outputs) is typed from its float32 form, its
    # interface still float16: the conversion below assumes float32 everywhere, and its
    # fp16 reference then met float16 inputs and float32 weights in one Conv
    Float16ToFloat32Pass()(model)
    graph = model.graph
    interface_half = {i for i, v in enumerate(graph.outputs) if v.dtype == HALF}  # the model's own float16 outputs
    hot = set(fp32_tensors)
    fp32_nodes = {id(n) for n in graph if any(v is not None and v.name in hot for v in (*n.inputs, *n.outputs))}
    fp32_nodes |= _computing_a_comparison(graph)
    fp32_nodes |= _reading_constants_past_fp16(graph)
    fp32_nodes |= _refused_in_half(graph)
    fp32_nodes |= _moves_kept_fp32(graph, lambda n: n.op_type in keep_fp32 or id(n) in fp32_nodes)
    casts: dict[tuple[str, ir.DataType], ir.Value] = {}
    halves: dict[str, ir.Value] = {}

    def cast(value: ir.Value, to: ir.DataType, before: ir.Node) -> ir.Value:
        key = (value.name, to)
        if key not in casts:
            node = ir.node("Cast", [value], attributes={"to": to}, name=f"{value.name}__to_{to.name.lower()}")
            node.outputs[0].name = f"{value.name}__{to.name.lower()}"
            node.outputs[0].shape, node.outputs[0].type = value.shape, ir.TensorType(to)
            graph.insert_before(before, node)
            casts[key] = node.outputs[0]
        return casts[key]

    def half_initializer(value: ir.Value) -> ir.Value:
        if value.name not in halves:
            data = value.const_value.numpy().astype(np.float16)
            half = ir.Value(name=f"{value.name}__fp16", const_value=ir.tensor(data, name=f"{value.name}__fp16"))
            half.shape, half.type = value.shape, ir.TensorType(HALF)
            graph.register_initializer(half)
            halves[value.name] = half
        return halves[value.name]

    for node in list(graph):
        runs_half = node.op_type not in keep_fp32 and node.domain in ("", "ai.onnx") and id(node) not in fp32_nodes
        if node.op_type == "Cast":  # reads any type: a Cast in front would only add one
            continue
        for i, value in enumerate(node.inputs):
            if value is None or value.dtype not in (FLOAT, HALF):
                continue
            want = HALF if runs_half and (node.op_type, i) not in _FP32_INPUTS else FLOAT
            if _is_initializer(value) and value.dtype == FLOAT:
                if want == HALF:
                    node.replace_input_with(i, half_initializer(value))
            elif value.dtype != want:
                node.replace_input_with(i, cast(value, want, node))
        if runs_half:
            for out in node.outputs:
                if out.dtype == FLOAT:
                    out.type = ir.TensorType(HALF)
    for node in list(graph):
        _captures_fp32(node, graph, cast)
    for i, value in enumerate(list(graph.outputs)):
        if value.dtype == HALF and i not in interface_half:
            name = value.name
            value.name = f"{name}__fp16"
            if (name, FLOAT) in casts:  # a reader kept fp32 has it cast back already: that Cast's is the output
                up = casts[(name, FLOAT)]
                up.name = name
                graph.outputs[i] = up
                continue
            node = ir.node("Cast", [value], attributes={"to": FLOAT}, name=f"{name}__to_float")
            node.outputs[0].name = name
            node.outputs[0].shape, node.outputs[0].type = value.shape, ir.TensorType(FLOAT)
            graph.append(node)
            graph.outputs[i] = node.outputs[0]
    RemoveUnusedInitializersPass()(model)  # the fp32 originals of weights now read as fp16
    return model


def simulate_fp16(typed: ir.Model) -> ir.Model:
    """An fp32 model that rounds every tensor the typed model holds in fp16 to fp16: the
    functional reference of an fp16 bundle where no GPU is.

    ONNX Runtime's CPU provider has no fp16 kernels for most ops: it computes an fp16 graph
    in fp32 and drops the casts between its own inserted ones, so an fp16 tensor that
    overflows on the GPU (a MatMul past 65504) stays finite there and validation cannot see
    it. Explicit fp32 -> fp16 -> fp32 casts it keeps: every fp16 value here is computed in
    fp32 and rounded through fp16 (storage precision, as TensorRT keeps activations; its
    accumulation in fp32 is what the fp32 arithmetic does)."""
    model = ir.from_proto(ir.to_proto(typed))
    graph = model.graph
    for value in list(graph.initializers.values()):
        if value.dtype == HALF:
            value.const_value = ir.tensor(value.const_value.numpy().astype(np.float32), name=value.name)
            value.type = ir.TensorType(FLOAT)
    for node in list(graph):
        if node.op_type == "Cast" and node.outputs[0].is_graph_output() and node.outputs[0].dtype == HALF:
            continue  # a float16 model's own float16 output (its interface, not a rounding)
        if node.op_type == "Cast" and node.attributes.get("to") is not None and node.attributes["to"].value == HALF:
            node.attributes["to"] = ir.AttrInt64("to", FLOAT)
        for out in node.outputs:
            if out.dtype != HALF:
                continue
            out.type = ir.TensorType(FLOAT)
            uses = list(out.uses())  # before the rounding Cast becomes one of them
            down = ir.node("Cast", [out], attributes={"to": HALF}, name=f"{out.name}__round16")
            up = ir.node("Cast", [down.outputs[0]], attributes={"to": FLOAT}, name=f"{out.name}__round32")
            down.outputs[0].name, up.outputs[0].name = f"{out.name}__r16", f"{out.name}__r32"
            graph.insert_after(node, [down, up])
            for use in uses:
                use.node.replace_input_with(use.idx, up.outputs[0])
            if out.is_graph_output():
                graph.outputs[graph.outputs.index(out)] = up.outputs[0]
                name = out.name
                out.name = f"{name}__unrounded"
                up.outputs[0].name = name
    return model
