"""Constant folding, shape subgraphs included, with a size cap.

Delegates to onnxscript's folder, which evaluates any node whose inputs are all
constant (with ONNX's reference evaluator) and, with per-node shape inference on,
also folds ``Shape``/``Size`` of tensors whose shape is static. With static inputs
that collapses ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains.

The cap keeps folding from bloating the file: a node whose folded output would exceed
:data:`MAX_FOLDED_ELEMENTS` elements (e.g. ``Expand`` of a small constant to a feature
map) stays computed at run time. onnxscript never folds ``ConstantOfShape``, to be
safe about size; we fold it when its output is within the same cap, which removes
YOLOv8's anchor-stride subgraph (``ConstantOfShape -> Add -> Concat -> Transpose``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.optimizer._constant_folding import FoldConstantsPass

__all__ = ["ConstantFoldingPass", "MAX_FOLDED_ELEMENTS"]

MAX_FOLDED_ELEMENTS = 1 << 16
"""Largest tensor (in elements) folding may create; larger results stay as ops."""

MAX_INPUT_ELEMENTS = 8192
"""Constant inputs above this size are folded through only by layout ops (Transpose,
Unsqueeze, ...) and only when this node is their sole consumer: otherwise the folded
copy would sit in the file next to the original (Silero VAD's LSTM weights, read by
both an Unsqueeze and the LSTM, grew the model by 40% before this limit)."""


class ConstantFoldingPass(ir.passes.InPlacePass):
    def __init__(self, max_folded_elements: int = MAX_FOLDED_ELEMENTS):
        self.max_folded_elements = max_folded_elements

    def _should_fold(self, node: ir.Node) -> bool | None:
        if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
            return None
        shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
        if shape is None:
            return None
        return int(np.prod(shape.numpy())) <= self.max_folded_elements

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folder = FoldConstantsPass(
            shape_inference=True,
            input_size_limit=MAX_INPUT_ELEMENTS,
            output_size_limit=self.max_folded_elements,
            should_fold=self._should_fold,
        )
        result = folder(model)
        _make_contiguous(model.graph)
        return result


def _make_contiguous(graph: ir.Graph) -> None:
    """The reference evaluator can return strided views (Transpose, Unsqueeze of a
    transposed constant); serialisation and onnx-ir's initializer hashing need
    C-contiguous data, so folded results are copied once here."""
    for value in graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.Tensor):
            arr = tensor.numpy()
            if not arr.flags["C_CONTIGUOUS"]:
                value.const_value = ir.Tensor(np.ascontiguousarray(arr), name=tensor.name)
