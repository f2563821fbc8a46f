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

import functools
from typing import Collection

import onnx
import onnx.inliner
import onnx.shape_inference
import onnx.version_converter
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


@functools.lru_cache(maxsize=64)  # (every node of an op asks the same: a 24-layer model's Attention 24 times)
def _at_opset(data: bytes, opset: int) -> bytes | None:
    """A serialized function body written for an earlier opset, read at ``opset`` where
    none of its ops means anything else there (None where one does): the inliner takes a
    body only at the model's opset (AffineGrid's, written at 20, had failed every build of
    an opset-22 model for Android and Jetson; Shrink's, at 18, of opset 19 on). Most ops a
    body uses only gained types between the two: ONNX's version converter is the witness,
    the body is taken where it leaves every node as it was. (Its output is not the body:
    it drops the attribute references that pass the node's attributes in.)"""
    body = onnx.FunctionProto()
    body.ParseFromString(data)
    written = next((i.version for i in body.opset_import if i.domain in ("", "ai.onnx")), opset)
    if written == opset:
        return data
    untyped = [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in body.input]
    results = [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in body.output]
    wrapper = onnx.helper.make_model(onnx.helper.make_graph(list(body.node), body.name, untyped, results),
                                     opset_imports=[onnx.helper.make_opsetid("", written)])
    try:
        converted = onnx.version_converter.convert_version(wrapper, opset)
    except Exception:  # (the converter raises a bare RuntimeError for an op it has no adapter for)
        return None
    if _signature(converted.graph.node) != _signature(body.node):
        return None
    for entry in body.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    return body.SerializeToString()


def _defaults(node: ir.Node, opset: int) -> dict[str, ir.Attr]:
    """The node's attributes it leaves at their defaults, spelled out: a body reads an
    attribute by reference, and the inliner writes a reference to one the call does not
    set as nothing (Shrink without ``bias`` became a ``Constant`` with no value)."""
    schema = defs.get_schema(node.op_type, opset, "")
    found = {}
    for name, attribute in schema.attributes.items():
        default = attribute.default_value
        if name not in node.attributes and default is not None and default.type != onnx.AttributeProto.UNDEFINED:
            found[name] = ir.serde.deserialize_attribute(default)
    return found


def _signature(nodes) -> list:
    """What a node computes, as far as the version converter could change it: op, inputs,
    outputs, attribute names, and the same of the nodes of its subgraphs."""
    return [(n.domain, n.op_type, list(n.input), list(n.output),
             sorted((a.name, _signature(a.g.node) if a.type == onnx.AttributeProto.GRAPH else None)
                    for a in n.attribute)) for n in nodes]


def _holds(node: ir.Node, body: onnx.FunctionProto, opset: int) -> bool:
    """Whether ``body`` written in for ``node`` computes what the node does, where that can
    be told: it must pass ONNX's strict shape inference on the node's input types and
    constant inputs, and where the node's other inputs have static shapes and ONNX Runtime
    runs the node, give its outputs on one input of those shapes. ONNX's own bodies do not
    all hold for every input: AffineGrid's squeezes a [N, 1, 3] slice of theta without
    axes, which at batch 1 leaves a 1-D tensor its next Split cuts on axis 1 (the expanded
    model failed to load once folding had chosen that branch). Where it does not hold, the
    node stays as it is and the backend's support check names it."""
    inputs, constants, feeds, seen = [], [], {}, set()
    for value in node.inputs:
        if value is None or value.name in seen:
            continue
        seen.add(value.name)
        if value.const_value is not None:
            constants.append(ir.serde.serialize_tensor(value.const_value))
            continue
        typed = value.type is not None
        inputs.append(onnx.helper.make_value_info(value.name, _type_proto(value) if typed else onnx.TypeProto()))
        if feeds is not None and typed and value.dtype is not None and value.shape is not None and value.shape.is_static():
            feeds[value.name] = _sample(value)
        else:
            feeds = None  # (no runtime check: a shape the model leaves open)
    original = ir.serde.serialize_node(node)
    call = onnx.NodeProto()
    call.CopyFrom(original)
    call.domain, call.op_type = body.domain, body.name
    outputs = [v.name for v in node.outputs if v is not None and v.name]
    results = [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in outputs]

    def model_of(which: onnx.NodeProto, functions: list) -> onnx.ModelProto:
        graph = onnx.helper.make_graph([which], "check", inputs, results, constants)
        imports = [onnx.helper.make_opsetid("", opset)] + ([onnx.helper.make_opsetid(DOMAIN, 1)] if functions else [])
        return onnx.helper.make_model(graph, functions=functions, opset_imports=imports)

    try:
        expanded = onnx.inliner.inline_local_functions(model_of(call, [body]))
        onnx.shape_inference.infer_shapes(expanded, strict_mode=True, data_prop=True)
    except Exception:  # (shape inference raises InferenceError, the inliner a bare RuntimeError)
        return False
    if feeds is None:
        return True
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        want = ort.InferenceSession(model_of(original, []).SerializeToString(), options,
                                    providers=["CPUExecutionProvider"]).run(outputs, feeds)
    except Exception:  # ONNX Runtime has no kernel for it, or not at these types: ONNX's definition decides
        return True
    try:
        got = ort.InferenceSession(expanded.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"]).run(outputs, feeds)
    except Exception:
        return False
    return all(np.shape(w) == np.shape(g) and np.allclose(np.asarray(g, np.float64), np.asarray(w, np.float64),
                                                           rtol=1e-3, atol=1e-4, equal_nan=True)
               for w, g in zip(want, got))


def _check_key(node: ir.Node) -> tuple:
    """What :func:`_holds`'s verdict on ``node`` depends on: its op and attributes, each
    input's type (a constant's value), and which inputs are one value. The layers of a
    transformer give one key: its Attention is checked once, not once a layer (25 ms each)."""
    names = [v.name if v is not None else None for v in node.inputs]
    inputs = tuple(None if v is None else
                   (names.index(v.name), ir.serde.serialize_tensor(v.const_value).SerializeToString()
                    if v.const_value is not None else _type_proto(v).SerializeToString() if v.type is not None else b"")
                   for v in node.inputs)
    attributes = tuple(sorted(a.SerializeToString() for a in ir.serde.serialize_node(node).attribute))
    return node.op_type, attributes, inputs


def _sample(value: ir.Value):
    """An input for the runtime check: reproducible normal values for floats, zeros for the
    rest (an index, a position, a length: zero is valid wherever any value is)."""
    import numpy as np

    dtype = value.dtype.numpy()
    shape = tuple(int(d) for d in value.shape)
    if np.issubdtype(dtype, np.floating):
        return np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return np.zeros(shape, dtype)


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
            data = _at_opset(schema.get_function_with_opset_version(max(versions)), opset)
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
        called, verdicts = 0, {}
        for node in list(model.graph):
            if node.op_type not in self.ops or node.domain not in ("", "ai.onnx") or opset is None:
                continue
            body = _body(node, opset)
            if body is None:
                continue
            body.domain, body.name = DOMAIN, f"{node.op_type}_{called}"
            defaults = _defaults(node, opset)
            node.attributes.update(defaults)
            key = _check_key(node)
            if key not in verdicts:
                verdicts[key] = _holds(node, body, opset)
            if not verdicts[key]:
                for name in defaults:
                    node.attributes.pop(name)
                continue
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
