"""Fold the constant subgraphs that compute a layer's weights, whatever their size.

General constant folding (:mod:`deploycomp.passes.constant_folding`) caps what it
creates, so that ``Expand`` of a scalar to a feature map does not bloat the file. A
weight is different: a Conv, Gemm or BatchNormalization whose weight is computed at run
time from constants (``ConstantOfShape`` fills in ONNX's own IR 3 test models, weights
dequantized or reshaped by an exporter, ``Unsqueeze`` of a norm's scale) cannot be
quantized per channel, cannot be lowered to a TFLite CONV_2D (its filter must be a
constant buffer) and is not fused by any rule. So the cone of constant-computable nodes
feeding a weight input is folded here without a size cap, even where the file grows.

A node is constant-computable when every input is an initializer or the output of such
a node, and it draws no random numbers. Only the main graph is folded.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.optimizer._constant_folding import FoldConstantsPass

__all__ = ["WEIGHT_INPUTS", "WeightFoldingPass"]

WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2, 3, 4),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "PRelu": (1,),
    "LSTM": (1, 2, 3, 5, 6, 7),
    "GRU": (1, 2, 3, 5),
    "RNN": (1, 2, 3, 5),
}
"""Op -> the inputs that are weights (a computed one there is folded whatever its size)."""

_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                               "Bernoulli"})

_UNLIMITED = 1 << 62


def _weight_cone(graph: ir.Graph) -> set[ir.Node]:
    """The nodes of ``graph`` whose outputs flow, through constant-computable nodes only,
    into a weight input."""
    computable: dict[ir.Value, bool] = {}

    def leaf(value: ir.Value) -> bool | None:
        """Decided without looking upstream, or None."""
        node = value.producer()
        if value.const_value is not None:
            return True
        if node is None or node.graph is not graph or node.op_type in _NONDETERMINISTIC or node.domain not in ("", "ai.onnx"):
            return False
        return None

    def is_computable(value: ir.Value) -> bool:
        # iterative, depth first: a MatMul's input 0 is a weight slot, and where it is an
        # activation the walk goes up the whole network (PP-OCRv5 rec: past Python's
        # recursion limit)
        stack = [value]
        while stack:
            top = stack[-1]
            if top in computable:
                stack.pop()
                continue
            decided = leaf(top)
            if decided is not None:
                computable[top] = decided
                stack.pop()
                continue
            inputs = [v for v in top.producer().inputs if v is not None]
            if any(v in computable and not computable[v] for v in inputs):
                computable[top] = False
                stack.pop()
                continue
            pending = [v for v in inputs if v not in computable]
            if pending:
                stack.extend(pending)
            else:
                computable[top] = True
                stack.pop()
        return computable[value]

    cone: set[ir.Node] = set()
    stack: list[ir.Node] = []
    for node in graph:
        for idx in WEIGHT_INPUTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ():
            value = node.inputs[idx] if idx < len(node.inputs) else None
            if value is not None and value.const_value is None and is_computable(value):
                stack.append(value.producer())
    while stack:
        node = stack.pop()
        if node in cone:
            continue
        cone.add(node)
        stack.extend(v.producer() for v in node.inputs if v is not None and v.const_value is None)
    return cone


class WeightFoldingPass(ir.passes.InPlacePass):
    """Fold every computed weight of the main graph to a constant (no size cap)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        cone = _weight_cone(model.graph)
        if not cone:
            return ir.passes.PassResult(model, False)
        folder = FoldConstantsPass(shape_inference=False, input_size_limit=_UNLIMITED, output_size_limit=_UNLIMITED,
                                   should_fold=lambda node: node in cone)
        result = folder(model)
        return ir.passes.PassResult(model, result.modified)
