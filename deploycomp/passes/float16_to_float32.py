"""A float16 model computed in float32, its inputs and outputs still float16.

int8 QDQ starts from float32: ``QuantizeLinear`` takes float16 only from opset 19, and
ONNX Runtime's CPU kernels, which calibrate and judge every candidate, have none for it
(an fp16 export built for int8 failed with an internal error on every target). Widening
is exact for every weight and constant (each float16 is a float32), and the arithmetic
then rounds less, not differently in kind; the build is judged against the original
float16 model all the same. Inputs and outputs keep their float16 type through a
``Cast`` at each end, so the bundle's interface is the model's.

Rewritten: initializers, ``Constant`` and ``ConstantOfShape`` tensors, ``Cast`` /
``EyeLike`` / random ops' target types and every value's type, in subgraphs too.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["Float16ToFloat32Pass", "has_float16"]

_F16, _F32 = ir.DataType.FLOAT16, ir.DataType.FLOAT
_TYPE_ATTRIBUTES = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                    "RandomNormalLike": "dtype", "RandomUniformLike": "dtype", "Multinomial": "dtype"}
_TENSOR_ATTRIBUTES = {"Constant": "value", "ConstantOfShape": "value"}


def has_float16(model: ir.Model) -> bool:
    """Whether any value or weight of ``model`` (subgraphs included) is float16."""
    graph = model.graph
    values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
    values += [v for n in ir.traversal.RecursiveGraphIterator(graph) for v in n.outputs]
    return any(v is not None and v.dtype == _F16 for v in values)


def _wide(tensor: ir.TensorProtocol, name: str | None) -> ir.Tensor:
    return ir.Tensor(np.asarray(tensor.numpy(), np.float32), name=name)


def _widen(value: ir.Value) -> None:
    if value.dtype == _F16:
        value.type = ir.TensorType(_F32)
        if value.const_value is not None:
            value.const_value = _wide(value.const_value, value.name)


def _widen_graph(graph: ir.Graph, interface: bool) -> None:
    """Every float16 weight, constant, type attribute and value of ``graph`` float32;
    its own inputs and outputs too when ``interface`` (a subgraph's)."""
    for value in graph.initializers.values():
        _widen(value)
    if interface:
        for value in [*graph.inputs, *graph.outputs]:
            _widen(value)
    for node in graph:
        attr = _TYPE_ATTRIBUTES.get(node.op_type)
        if attr and attr in node.attributes and node.attributes[attr].as_int() == _F16.value:
            node.attributes[attr] = ir.AttrInt64(attr, _F32.value)
        attr = _TENSOR_ATTRIBUTES.get(node.op_type)
        if attr and attr in node.attributes and node.attributes[attr].as_tensor().dtype == _F16:
            node.attributes[attr] = ir.AttrTensor(attr, _wide(node.attributes[attr].as_tensor(), None))
        for value in node.outputs:
            _widen(value)
        for sub in node.attributes.values():
            if sub.type == ir.AttributeType.GRAPH:
                _widen_graph(sub.as_graph(), True)
            elif sub.type == ir.AttributeType.GRAPHS:
                for g in sub.as_graphs():
                    _widen_graph(g, True)


class Float16ToFloat32Pass(ir.passes.InPlacePass):
    """Every float16 value and weight float32; the graph's float16 inputs and outputs
    stay float16 through a ``Cast`` (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not has_float16(model):
            return ir.passes.PassResult(model, False)
        graph = model.graph
        outputs = [i for i, v in enumerate(graph.outputs) if v.dtype == _F16 and not v.is_graph_input()]
        _widen_graph(graph, False)
        for value in [v for v in graph.inputs if v.dtype == _F16]:
            users = list(value.uses())  # subgraph readers too: the Cast is in scope for them
            cast = ir.node("Cast", [value], attributes={"to": _F32.value}, name=f"{value.name}__to_f32")
            wide = cast.outputs[0]
            wide.name, wide.type, wide.shape = f"{value.name}__f32", ir.TensorType(_F32), value.shape
            for user, index in users:
                user.replace_input_with(index, wide)
            if len(graph):
                graph.insert_before(graph[0], cast)
            else:
                graph.append(cast)
        for i in outputs:
            value = graph.outputs[i]  # float32 now; its readers inside keep reading it
            cast = ir.node("Cast", [value], attributes={"to": _F16.value}, name=f"{value.name}__to_f16")
            narrow = cast.outputs[0]
            narrow.type, narrow.shape = ir.TensorType(_F16), value.shape
            graph.append(cast)
            name, value.name = value.name, f"{value.name}__f32"
            narrow.name = name
            graph.outputs[i] = narrow
        return ir.passes.PassResult(model, True)
