"""Variadic element-wise ops as chains of binary ones: ``Sum``, ``Max``, ``Min``, ``Mean``.

``Sum(a, b)`` is ``Add(a, b)`` (Caffe2-era ResNets join residuals with ``Sum``);
``Sum(a, b, c)`` is ``Add(Add(a, b), c)``; ``Mean`` of n inputs is their sum times
``1/n``; any of them with one input is that input. Backends and fusion rules know the
binary forms (TFLite has ADD/MAXIMUM/MINIMUM but no SUM of n tensors; the int8 policy
places QDQ around ``Add``). Broadcasting is the same in both forms (multidirectional),
and left-to-right float addition is what ONNX Runtime's Sum computes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import replace_node

__all__ = ["VariadicOpsPass"]

BINARY = {"Sum": "Add", "Mean": "Add", "Max": "Max", "Min": "Min"}


class VariadicOpsPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.op_type not in BINARY or node.domain not in ("", "ai.onnx") or not node.inputs:
                continue
            if node.op_type in ("Max", "Min") and len(node.inputs) == 2:
                continue  # already binary
            _expand(node)
            modified = True
        return ir.passes.PassResult(model, modified)


def _expand(node: ir.Node) -> None:
    graph, out = node.graph, node.outputs[0]
    base = node.name or out.name or node.op_type  # names must stay unique: IR 3 models leave nodes unnamed
    inputs = list(node.inputs)
    new: list[ir.Node] = []
    acc = inputs[0]
    for i, x in enumerate(inputs[1:]):
        step = ir.node(BINARY[node.op_type], [acc, x], name=f"{base}_{i}")
        new.append(step)
        acc = step.outputs[0]
    if node.op_type == "Mean" and len(inputs) > 1:
        dtype = out.dtype or inputs[0].dtype
        scale = ir.Value(name=f"{base}_inv_n", const_value=ir.tensor(np.array(1 / len(inputs), dtype.numpy())))
        graph.register_initializer(scale)
        step = ir.node("Mul", [acc, scale], name=f"{base}_mean")
        new.append(step)
        acc = step.outputs[0]
    if not new:  # one input: the op is that input
        step = ir.node("Identity", [acc], name=f"{base}_single")
        new.append(step)
        acc = step.outputs[0]
    replace_node(node, new, "__variadic")
