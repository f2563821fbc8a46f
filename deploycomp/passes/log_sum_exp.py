"""``ReduceLogSumExp`` as ``m + Log(ReduceSum(Exp(x - m)))``, ``m = ReduceMax(x)``.

OpenVINO 2026.4's ONNX frontend drops the ``axes`` attribute of ``ReduceLogSumExp``
(opset 13-17) and reduces over every axis: a reCAPTCHA tile classifier's four ``[9, 17,
1, 1]`` statistics came out as scalars, and the ``Concat`` after them refused to convert
(the model was refused on ``host``, naming the ``Concat``). Written with the reductions
OpenVINO reads right, it is the same function, computed as every careful implementation
computes it (the maximum taken out first: no ``Exp`` overflows). Where a slice is ``-inf``
throughout, the maximum is ``-inf`` and the difference NaN (ONNX Runtime gives ``-inf``
there). OpenVINO's pipeline only: the others run the op.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from deploycomp.ir import add_initializer, replace_node
from deploycomp.passes.op_rewrite import OpRewritePass
from deploycomp.passes.rules._util import keepdims, reduce_axes

__all__ = ["ReduceLogSumExpPass"]


def _rewrite(node: ir.Node, opset: int) -> bool:
    x = node.inputs[0]
    axes = reduce_axes(node)
    explicit_axes = "axes" in node.attributes or (len(node.inputs) > 1 and node.inputs[1] is not None)
    if x is None or (explicit_axes and axes is None):
        return False  # axes computed at run time
    graph, name, keep = node.graph, node.name or "reduce_log_sum_exp", keepdims(node)
    axes_value = add_initializer(graph, f"{name}_axes", np.array(axes, np.int64)) if axes is not None else None

    def reduce(op: str, value: ir.Value, keep_dims: bool, suffix: str) -> ir.Node:
        as_input = op == "ReduceSum" and opset >= 13 or opset >= 18  # ReduceSum took axes as an input first
        attributes = {"keepdims": int(keep_dims)}
        inputs = [value]
        if axes is not None:
            if as_input:
                inputs.append(axes_value)
            else:
                attributes["axes"] = list(axes)
        return ir.node(op, inputs, attributes=attributes, name=f"{name}_{suffix}")

    peak = reduce("ReduceMax", x, True, "max")
    shifted = ir.node("Sub", [x, peak.outputs[0]], name=f"{name}_shift")
    exp = ir.node("Exp", [shifted.outputs[0]], name=f"{name}_exp")
    total = reduce("ReduceSum", exp.outputs[0], keep, "sum")
    log = ir.node("Log", [total.outputs[0]], name=f"{name}_log")
    new = [peak, shifted, exp, total, log]
    offset = peak.outputs[0]
    if not keep:  # the same maximum without its reduced axes: the kept one reduced again (size 1 there)
        peak_flat = reduce("ReduceMax", peak.outputs[0], False, "max_flat")
        new.insert(1, peak_flat)
        offset = peak_flat.outputs[0]
    new.append(ir.node("Add", [log.outputs[0], offset], name=f"{name}_add"))
    replace_node(node, new, "__log_sum_exp")
    return True


class ReduceLogSumExpPass(OpRewritePass):
    op_types = frozenset({"ReduceLogSumExp"})

    def rewrite(self, node: ir.Node, model: ir.Model) -> bool:
        return _rewrite(node, model.opset_imports.get("", 0))
