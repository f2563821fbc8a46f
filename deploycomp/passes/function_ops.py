"""ONNX ops defined as functions, written out as their definition where a backend has no
kernel for them.

Many newer ONNX ops are functions of older ones in the standard itself: opset 23's
``Attention`` (the scaled dot-product attention PyTorch's exporter writes) and
``RotaryEmbedding``, ``Shrink``, ``CenterCropPad``, the window functions. ONNX keeps each
one's body (for some it depends on the node's attributes and input types: a
*context-dependent* function); a backend without a kernel for the op runs the body's
ops instead, which is exactly what the op means. The body becomes a function of the
model, the node a call of it, and onnx-ir's inliner writes it in; constant folding and
the rest of the pipeline then see ordinary ops. A node whose body ONNX cannot give (an
input type it cannot infer, an attribute it does not take) stays as it is, and the
backend's support check names it.
"""

from __future__ import annotations

from typing import Collection

import onnx
import onnx_ir as ir
from onnx import defs

__all__ = ["ExpandFunctionOpsPass"]

DOMAIN = "deploycomp.expanded"
"""Where the bodies are kept until the inliner writes them in."""


def _type_proto(value: ir.Value) -> onnx.TypeProto:
    proto = ir.serde.serialize_type(value.type)
    if value.shape is not None and proto.HasField("tensor_type"):
        proto.tensor_type.shape.CopyFrom(onnx.helper.make_tensor_type_proto(
            1, [d if isinstance(d, int) else None for d in value.shape]).tensor_type.shape)
    return proto


def _body(node: ir.Node, opset: int) -> onnx.FunctionProto | None:
    """ONNX's definition of ``node`` at ``opset``, or None."""
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        return None
    proto = ir.serde.serialize_node(node)
    try:
        if schema.has_context_dependent_function:
            if any(v is not None and v.type is None for v in node.inputs):
                return None
            # each input's type with its shape (RotaryEmbedding's body depends on the rank)
            types = [_type_proto(v).SerializeToString() if v is not None else onnx.TypeProto().SerializeToString()
                     for v in node.inputs]
            data = schema.get_context_dependent_function_with_opset_version(opset, proto.SerializeToString(), types)
        elif schema.has_function and (versions := [v for v in schema.function_opset_versions if v <= opset]):
            # (a body written for a later opset would read its ops at the model's: not taken)
            data = schema.get_function_with_opset_version(max(versions))  # (serialized, as the other)
        else:
            return None
    except Exception:  # (ONNX raises a bare RuntimeError for what its builder does not take)
        return None
    if not data:
        return None
    body = onnx.FunctionProto()
    body.ParseFromString(data)
    # a context-dependent body computes only the outputs the node has: its formal list
    # still names every output the op can have (Attention's present_key, ...)
    written = {o for n in body.node for o in n.output} | set(body.input)
    outputs = list(body.output)[:len(node.outputs)]
    if any(o not in written and out is not None and (out.uses() or out.is_graph_output())
           for o, out in zip(outputs, node.outputs)):
        return None
    for name in outputs:  # an output the node does not take: a placeholder the cleanup removes
        if name not in written:
            body.node.append(onnx.helper.make_node("Constant", [], [name],
                                                   value=onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [0])))
    del body.output[:]
    body.output.extend(outputs)
    return body


class ExpandFunctionOpsPass(ir.passes.InPlacePass):
    """Each node of the main graph whose op is in ``ops`` (default domain) and has an ONNX
    function definition is replaced by that definition's nodes (see the module docstring)."""

    def __init__(self, ops: Collection[str]):
        super().__init__()
        self.ops = frozenset(ops)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
        called = 0
        for node in list(model.graph):
            if node.op_type not in self.ops or node.domain not in ("", "ai.onnx") or opset is None:
                continue
            body = _body(node, opset)
            if body is None:
                continue
            body.domain, body.name = DOMAIN, f"{node.op_type}_{called}"
            function = ir.serde.deserialize_function(body)
            model.functions[function.identifier()] = function
            node.domain, node.op_type = DOMAIN, body.name
            called += 1
        if not called:
            return ir.passes.PassResult(model, False)
        model.opset_imports.setdefault(DOMAIN, 1)
        ir.passes.common.InlinePass()(model)
        ir.passes.common.RemoveUnusedNodesPass()(model)  # (the placeholders of outputs no node takes)
        model.opset_imports.pop(DOMAIN, None)
        return ir.passes.PassResult(model, True)
