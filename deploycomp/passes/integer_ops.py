"""ONNX Runtime's dynamic quantization as float ops that compute the same, exactly.

``onnxruntime.quantization.quantize_dynamic`` writes each Conv or MatMul as

    DynamicQuantizeLinear(x) -> ConvInteger / MatMulInteger (int8 weights) -> Cast -> Mul(x_scale * w_scale)

integer ops which TFLite's and TensorRT's lowerings have no kernel for, and which
OpenVINO 2026.4 computes differently (a table-edge detector from rapid_table_det:
cosine 0.35 against ONNX Runtime on the same file). ONNX defines them exactly: the input
is rounded per call to u8 over ``[min(x, 0), max(x, 0)]`` (round half to even), the
integer products summed exactly, the sum scaled. So each integer op becomes the float op
on the integers themselves: ``q - zp`` with ``s`` and ``zp`` from the input's own
extremes (``s = (max(x, 0) - min(x, 0)) / 255``, ``q = clip(round(x / s) + zp, 0, 255)``;
one such chain per quantized input, shared by its readers, its ``s`` feeding the scales'
``Mul`` in place of the ``DynamicQuantizeLinear``'s) times the weights' ``w_q - w_zp``, in
ops every runtime has; the ``Cast`` goes and the model's own ``Mul`` by ``x_scale *
w_scale`` stays. Integer-valued floats multiply and add exactly while a sum stays below
2^24, so the result is ONNX Runtime's to the bit. (The first form multiplied the scales
in before the sum, which rounds each product: a T5 encoder's float form then differed
from ONNX Runtime's integer ops by cosine 0.979 on one sentence, its flipped roundings
spreading through 8 blocks; the table-edge detector reached 0.98837 on real pages.)
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import ROLE, add_initializer, replace_value
from deploycomp.passes.rules._util import const as constant

__all__ = ["INTEGER_OPS", "IntegerOpsToFloatPass", "is_rounding"]

INTEGER_OPS = {"ConvInteger": "Conv", "MatMulInteger": "MatMul"}

ROUNDING = "integer-rounding"
"""The role (:data:`deploycomp.ir.ROLE`) of the ops that round an input as
``DynamicQuantizeLinear`` does. They are the model's own int8 arithmetic, which an int8
build keeps float and out of its float-layer search (:data:`deploycomp.ir.FLOAT_ONLY`):
quantized in turn (TFLite's encoding takes every element-wise op, TensorRT's a two-input
``Add``), ``round(x / s) + zp`` is no longer a rounding, and on the 800x800 table-edge
detector the search ranked its 13 nodes per chain (its TFLite int8 build did not finish
in 900 s)."""


def is_rounding(node: ir.Node) -> bool:
    """Whether ``node`` is one of the rounding ops this pass wrote (see ``ROUNDING``)."""
    return node.metadata_props.get(ROLE) == ROUNDING


def _only_use(value: ir.Value, op_type: str) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].node.op_type != op_type:
        return None
    return uses[0].node


def _chain(node: ir.Node):
    """(input source, (weights, their zero point), Cast, scaling Mul, the input's zero point
    where the source is a Gather of a quantized table, else None) of an integer op written
    by ``quantize_dynamic``, or None where it is something else: the scaling Mul must read
    the Mul combining the input's scale with a constant one, which the rewrite keeps. The
    source is the ``DynamicQuantizeLinear`` that rounds a computed input, or a ``Gather``
    of the u8 embedding table the integer op reads directly."""
    if len(node.inputs) < 2 or node.inputs[0] is None:
        return None
    source = node.inputs[0].producer()
    if source is None:
        return None
    x_zp = None
    if source.op_type == "DynamicQuantizeLinear":
        if node.inputs[0] is not source.outputs[0]:
            return None
        if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2] is not source.outputs[2]:
            return None
    elif source.op_type == "Gather":
        table = constant(source.inputs[0])
        x_zp = constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else np.zeros((), np.uint8)
        if table is None or table.dtype.kind not in "iu" or x_zp is None or x_zp.size != 1:
            return None
    else:
        return None
    w_q = constant(node.inputs[1])
    w_zp = constant(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else np.zeros((), w_q.dtype if w_q is not None else np.int8)
    if w_q is None or w_zp is None:
        return None
    cast = _only_use(node.outputs[0], "Cast")
    if cast is None or cast.attributes.get("to") is None or cast.attributes["to"].value != ir.DataType.FLOAT:
        return None
    mul = _only_use(cast.outputs[0], "Mul")
    if mul is None:
        return None
    scales = mul.inputs[1] if mul.inputs[0] is cast.outputs[0] else mul.inputs[0]
    combine = scales.producer() if scales is not None else None
    if combine is None or combine.op_type != "Mul":
        return None
    if x_zp is None:
        if source.outputs[1] not in combine.inputs:
            return None
        if constant(combine.inputs[1] if combine.inputs[0] is source.outputs[1] else combine.inputs[0]) is None:
            return None
        return source, (w_q, w_zp), cast, mul, None
    a, b = constant(combine.inputs[0]), constant(combine.inputs[1])
    if a is None or b is None or min(a.size, b.size) != 1:  # the table's scale is one value
        return None
    return source, (w_q, w_zp), cast, mul, x_zp


def _weights(op: str, w_q: np.ndarray, w_zp: np.ndarray) -> np.ndarray | None:
    """The integers ``w_q - w_zp`` the integer op multiplies by, as float32 (exact); None
    for a layout not understood."""
    q, zp = w_q.astype(np.float64), np.asarray(w_zp, np.float64)
    if op == "Conv" and q.ndim >= 3 and zp.size in (1, q.shape[0]):  # per output channel: axis 0
        return (q - zp.reshape((-1,) + (1,) * (q.ndim - 1))).astype(np.float32)
    if op == "MatMul" and q.ndim == 2 and zp.size in (1, q.shape[1]):  # per output column: the last axis
        return (q - zp.reshape(-1)).astype(np.float32)
    return None


def _rounded_constant(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``DynamicQuantizeLinear`` of a constant, computed here as :func:`_rounded_input`
    computes it in float32: (u8 values, scale, zero point)."""
    x = x.astype(np.float32)
    low, high = np.float32(min(float(x.min()), 0.0)), np.float32(max(float(x.max()), 0.0))
    scale = np.maximum(np.float32((high - low) / np.float32(255)), np.finfo(np.float32).tiny).astype(np.float32)
    zp = np.clip(np.round((np.float32(0) - low) / scale), 0, 255).astype(np.float32)
    q = np.clip(np.round(x / scale) + zp, 0, 255)
    return q.astype(np.uint8), np.array(scale, np.float32), np.array(zp, np.uint8)


def _fold_rounded_constants(graph: ir.Graph) -> bool:
    """Each ``DynamicQuantizeLinear`` of a constant as its three constant outputs: where the
    model's weights are ``Constant`` nodes (a Paddle export), ``quantize_dynamic`` rounds
    them at run time like an input, and the rewrite needs them constant. The constant
    folder leaves the larger ones (PP-OCR's classifier through ``quantize_dynamic``: 53
    ``ConvInteger``, 4 left; OpenVINO ran the integer ops 3.9x slower than ONNX Runtime
    and TFLite refused them)."""
    folded = False
    for node in list(graph):
        if node.op_type != "DynamicQuantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        x = constant(node.inputs[0])
        if x is None or x.dtype.kind != "f":
            continue
        for value, array, suffix in zip(node.outputs, _rounded_constant(x), ("q", "scale", "zp")):
            replace_value(value, add_initializer(graph, f"{node.inputs[0].name}__{suffix}", array), "__rounded")
        graph.remove(node, safe=True)
        folded = True
    return folded


def _rounded_input(graph: ir.Graph, dql: ir.Node) -> tuple[ir.Value, ir.Value]:
    """``x`` as ``DynamicQuantizeLinear`` rounds it, less its zero point, and its scale, in
    float ops inserted before it: ``s = (max(x, 0) - min(x, 0)) / 255`` (kept above 0: an
    all-zero input stays zero), ``zp = clip(round(-min / s), 0, 255)``, ``clip(round(x / s)
    + zp, 0, 255) - zp``."""
    x = dql.inputs[0]
    base = x.name or dql.name
    made: list[ir.Node] = []

    def const(name: str, value: float) -> ir.Value:
        return add_initializer(graph, f"{base}__{name}", np.array(value, np.float32))

    def op(op_type: str, *args: ir.Value, **attributes) -> ir.Value:
        node = ir.node(op_type, list(args), attributes=attributes, name=f"{base}__u8_{len(made)}")
        node.outputs[0].name = f"{base}__u8_{len(made)}"
        node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        node.metadata_props[ROLE] = ROUNDING
        made.append(node)
        return node.outputs[0]

    zero, top, tiny = const("zero", 0.0), const("u8_max", 255.0), const("tiny", np.finfo(np.float32).tiny)
    low = op("Min", op("ReduceMin", x, keepdims=0), zero)
    high = op("Max", op("ReduceMax", x, keepdims=0), zero)
    scale = op("Max", op("Div", op("Sub", high, low), top), tiny)
    zp = op("Clip", op("Round", op("Div", op("Sub", zero, low), scale)), zero, top)
    q = op("Clip", op("Add", op("Round", op("Div", x, scale)), zp), zero, top)
    out = op("Sub", q, zp)
    out.shape = x.shape
    graph.insert_before(dql, made)
    return out, scale


MOVES = frozenset({"Gather", "GatherElements", "GatherND", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
                   "Slice", "Identity", "Expand", "Tile"})
"""Ops that only move or copy the values of their data input (input 0), with which a
per-tensor DequantizeLinear commutes."""


def _integer_source(value: ir.Value) -> tuple[list[ir.Node], np.ndarray] | None:
    """The data-movement ops (last first) between an integer constant and ``value``, and
    the constant; None where ``value`` is computed otherwise."""
    chain: list[ir.Node] = []
    while (table := constant(value)) is None:
        node = value.producer()
        if node is None or node.op_type not in MOVES or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            return None
        chain.append(node)
        value = node.inputs[0]
        if value is None:
            return None
    return (chain, table) if table.dtype.kind in "iu" else None


def _dequantized_moves(graph: ir.Graph, chain: list[ir.Node], table: np.ndarray, zero: float, scale: float,
                       made: dict) -> ir.Value:
    """The values of ``chain`` (data-movement ops, last first, the first reading the integer
    ``table``) dequantized: the same moves, copied onto the table's float values (exact:
    the table is static). ``made``: the copies so far, shared by every reader of the same
    values (a lookup's DequantizeLinear, an integer op reading the rows directly)."""
    key = (id(chain[-1].inputs[0]), zero, scale)
    value = made.get(key)
    if value is None:
        values = ((table.astype(np.float64) - zero) * scale).astype(np.float32)
        value = made[key] = add_initializer(graph, f"{chain[-1].inputs[0].name}__dequantized", values)
    for move in reversed(chain):  # from the table out
        copied = made.get((id(move), zero, scale))
        if copied is None:
            inputs = list(move.inputs)
            inputs[0] = value
            new = ir.node(move.op_type, inputs, attributes={a.name: a for a in move.attributes.values()},
                          name=f"{move.name}__dequantized")
            new.outputs[0].name = f"{move.outputs[0].name}__dequantized"
            new.outputs[0].type, new.outputs[0].shape = ir.TensorType(ir.DataType.FLOAT), move.outputs[0].shape
            graph.insert_before(move, new)
            copied = made[(id(move), zero, scale)] = new.outputs[0]
        value = copied
    return value


def _dequantized_lookup(graph: ir.Graph, node: ir.Node, made: dict) -> bool:
    """``DequantizeLinear`` of an integer table moved by data-movement ops (an embedding's
    ``Gather``, then a ``Transpose``: what ``quantize_dynamic`` makes of an embedding), with
    one scale and zero point, as the same moves of the table's dequantized values
    (:func:`_dequantized_moves`): exact, and TensorRT's parser refused the u8 zero point.
    The integer moves go when nothing else reads them."""
    if node.op_type != "DequantizeLinear" or node.inputs[0] is None:
        return False
    source = _integer_source(node.inputs[0])
    scale = constant(node.inputs[1])
    zp = constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else np.zeros((), np.uint8)
    if source is None or scale is None or zp is None or scale.size != 1 or zp.size != 1 or scale.dtype != np.float32:
        return False  # (a float16 scale makes a float16 output)
    chain, table = source
    if not any(move.op_type.startswith("Gather") for move in chain):
        return False  # a weight's own DequantizeLinear (a QDQ model's encoding), not a lookup
    value = _dequantized_moves(graph, chain, table, float(zp.reshape(())), float(scale.reshape(())), made)
    replace_value(node.outputs[0], value, "__integer")
    graph.remove(node, safe=True)
    for move in chain:  # the integer moves nothing reads any more
        if not list(move.outputs[0].uses()) and not move.outputs[0].is_graph_output():
            graph.remove(move, safe=True)
    return True


class IntegerOpsToFloatPass(ir.passes.InPlacePass):
    """Rewrite every ``quantize_dynamic`` chain of the main graph, and its dequantized
    embedding lookups (see the module docstring and :func:`_dequantized_lookup`)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified, made = _fold_rounded_constants(graph), {}
        for node in list(graph):
            modified |= node.domain in ("", "ai.onnx") and _dequantized_lookup(graph, node, made)
        inputs: dict[int, ir.Value] = {}  # a DynamicQuantizeLinear -> its input as it rounds it
        # every chain read before any is rewritten: a DynamicQuantizeLinear's readers share its
        # scale, which the first rewrite replaces for all of them
        chains = [(node, INTEGER_OPS[node.op_type], _chain(node)) for node in list(graph)
                  if node.op_type in INTEGER_OPS and node.domain in ("", "ai.onnx")]
        for node, op, chain in chains:
            if chain is None:
                continue
            dql, (w_q, w_zp), cast, mul, table_zp = chain
            weights = _weights(op, w_q, w_zp)
            if weights is None:
                continue
            if table_zp is None:
                if id(dql) not in inputs:
                    inputs[id(dql)], scale = _rounded_input(graph, dql)
                    replace_value(dql.outputs[1], scale, "__integer")  # the scales' Mul reads it now
                rounded = inputs[id(dql)]
            else:  # an integer op reading a quantized table's rows: the rows' integers less the zero point
                rounded = _dequantized_moves(graph, [dql], constant(dql.inputs[0]), float(table_zp.reshape(())), 1.0,
                                             made)
            w = add_initializer(graph, f"{node.inputs[1].name}__float", weights)
            attrs = [a for a in node.attributes.values()] if op == "Conv" else []
            new = ir.node(op, [rounded, w], attributes={a.name: a for a in attrs}, name=node.name or mul.name)
            graph.insert_before(cast, new)
            out = cast.outputs[0]  # the integer sum as float: the same value, exactly
            new.outputs[0].shape, new.outputs[0].type = out.shape, out.type
            replace_value(out, new.outputs[0], "__integer")
            graph.remove([cast, node], safe=True)
            if not any(list(v.uses()) for v in dql.outputs):
                graph.remove(dql, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
