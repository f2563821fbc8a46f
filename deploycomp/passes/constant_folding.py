"""Constant folding, shape subgraphs included, with a size cap.

Delegates to onnxscript's folder, which evaluates any node whose inputs are all
constant (with ONNX's reference evaluator) and, with per-node shape inference on,
also folds ``Shape``/``Size`` of tensors whose shape is static. With static inputs
that collapses ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains.

The cap keeps folding from bloating the file: a node whose folded output would exceed
:data:`MAX_FOLDED_ELEMENTS` elements (e.g. ``ConstantOfShape`` to a large buffer, or
``Expand`` of a small constant to a feature map) stays computed at run time.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.optimizer._constant_folding import FoldConstantsPass

__all__ = ["ConstantFoldingPass", "MAX_FOLDED_ELEMENTS"]

MAX_FOLDED_ELEMENTS = 1 << 16
"""Largest tensor (in elements) folding may create; larger results stay as ops."""

MAX_INPUT_ELEMENTS = 1 << 22
"""Largest constant input the folder evaluates through (bigger weights are skipped)."""


class ConstantFoldingPass(ir.passes.InPlacePass):
    def __init__(self, max_folded_elements: int = MAX_FOLDED_ELEMENTS):
        self.max_folded_elements = max_folded_elements

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        folder = FoldConstantsPass(
            shape_inference=True,
            input_size_limit=MAX_INPUT_ELEMENTS,
            output_size_limit=self.max_folded_elements,
        )
        return folder(model)
