"""A float16 or float64 model computed in float32, its inputs and outputs still as typed.

float16: int8 QDQ starts from float32: ``QuantizeLinear`` takes float16 only from opset
19, and ONNX Runtime's CPU kernels, which calibrate and judge every candidate, have none
for it (an fp16 export built for int8 failed with an internal error on every target).
Widening is exact for every weight and constant (each float16 is a float32), and the
arithmetic then rounds less, not differently in kind.

float64: ``QuantizeLinear`` takes no float64 at all, and TFLite has float64 kernels for a
few ops only (``CAST``): a pitch tracker whose STFT casts to double stopped in LiteRT's
``MUL`` ("FLOAT64 != FLOAT32", an internal error). Narrowing rounds each weight and the
arithmetic to float32, which is what those runtimes compute in.

Either way the build is judged against the original model all the same. Inputs and
outputs keep their type through a ``Cast`` at each end, so the bundle's interface is the
model's. Rewritten: initializers, tensor attributes (``Constant``, ``ConstantOfShape``, an
``ai.onnx.ml`` ``TreeEnsemble``'s splits and leaf weights, typed as its input), ``Cast`` /
``EyeLike`` / random ops' target types and every value's type, in subgraphs too.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["Float16ToFloat32Pass", "Float64ToFloat32Pass", "ToFloat32Pass", "has_dtype", "has_float16"]

_F32 = ir.DataType.FLOAT
_TYPE_ATTRIBUTES = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                    "RandomNormalLike": "dtype", "RandomUniformLike": "dtype", "Multinomial": "dtype"}


def has_dtype(model: ir.Model, dtype: ir.DataType) -> bool:
    """Whether any value or weight of ``model`` (subgraphs included) is of ``dtype``."""
    graph = model.graph
    values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
    values += [v for n in ir.traversal.RecursiveGraphIterator(graph) for v in n.outputs]
    return any(v is not None and v.dtype == dtype for v in values)


def has_float16(model: ir.Model) -> bool:
    return has_dtype(model, ir.DataType.FLOAT16)


def _as_float32(tensor: ir.TensorProtocol, name: str | None) -> ir.Tensor:
    return ir.Tensor(np.asarray(tensor.numpy(), np.float32), name=name)


class ToFloat32Pass(ir.passes.InPlacePass):
    """Every ``source``-typed value and weight float32; the graph's inputs and outputs of
    that type keep it through a ``Cast`` (see the module docstring)."""

    source: ir.DataType

    def __init__(self, source: ir.DataType | None = None):
        super().__init__()
        if source is not None:
            self.source = source

    def _convert(self, value: ir.Value) -> None:
        if value.dtype == self.source:
            value.type = ir.TensorType(_F32)
            if value.const_value is not None:
                value.const_value = _as_float32(value.const_value, value.name)

    def _convert_graph(self, graph: ir.Graph, interface: bool) -> None:
        """Every weight, constant, type attribute and value of ``graph`` of the source type
        float32; its own inputs and outputs too when ``interface`` (a subgraph's)."""
        for value in graph.initializers.values():
            self._convert(value)
        if interface:
            for value in [*graph.inputs, *graph.outputs]:
                self._convert(value)
        for node in graph:
            attr = _TYPE_ATTRIBUTES.get(node.op_type)
            if attr and attr in node.attributes and node.attributes[attr].as_int() == self.source.value:
                node.attributes[attr] = ir.AttrInt64(attr, _F32.value)
            for name, attr in list(node.attributes.items()):  # a Constant's value, a TreeEnsemble's splits
                if attr.type == ir.AttributeType.TENSOR and attr.as_tensor().dtype == self.source:
                    node.attributes[name] = ir.AttrTensor(name, _as_float32(attr.as_tensor(), None))
            for value in node.outputs:
                self._convert(value)
            for sub in node.attributes.values():
                if sub.type == ir.AttributeType.GRAPH:
                    self._convert_graph(sub.as_graph(), True)
                elif sub.type == ir.AttributeType.GRAPHS:
                    for g in sub.as_graphs():
                        self._convert_graph(g, True)

    def _done(self, model: ir.Model) -> bool:
        """True if only the interface is of the source type, read and written through this
        pass's own Casts (it ran before: a TFLite pipeline's, then int8's)."""
        graph, source = model.graph, self.source
        inside = [*graph.initializers.values()]
        inside += [v for n in ir.traversal.RecursiveGraphIterator(graph) for v in n.outputs if not (
            n.op_type == "Cast" and v in graph.outputs and n.inputs[0].dtype == _F32)]
        inputs_cast = all(user.op_type == "Cast" and user.outputs[0].dtype == _F32
                          for v in graph.inputs if v.dtype == source for user, _ in v.uses())
        return inputs_cast and not any(v is not None and v.dtype == source for v in inside)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not has_dtype(model, self.source) or self._done(model):
            return ir.passes.PassResult(model, False)
        graph, source = model.graph, self.source
        outputs = [i for i, v in enumerate(graph.outputs) if v.dtype == source and not v.is_graph_input()]
        self._convert_graph(graph, False)
        for value in [v for v in graph.inputs if v.dtype == source]:
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
            cast = ir.node("Cast", [value], attributes={"to": source.value}, name=f"{value.name}__from_f32")
            typed = cast.outputs[0]
            typed.type, typed.shape = ir.TensorType(source), value.shape
            graph.append(cast)
            name, value.name = value.name, f"{value.name}__f32"
            typed.name = name
            graph.outputs[i] = typed
        return ir.passes.PassResult(model, True)


class Float16ToFloat32Pass(ToFloat32Pass):
    """float16 widened to float32 (exact for every weight)."""

    source = ir.DataType.FLOAT16


class Float64ToFloat32Pass(ToFloat32Pass):
    """float64 narrowed to float32 (each weight and the arithmetic rounded to float32)."""

    source = ir.DataType.DOUBLE
