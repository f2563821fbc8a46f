"""What the int8 error is measured on where an output is an integer.

The ranking and the range choice measure int8 error as each output's NMSE against fp32.
An ArgMax output (a classifier's class, a CTC recognizer's characters) is a step
function of the model: int8 noise changes nothing until an id flips, so its NMSE is zero
for almost every layer and the ranking is blind (ddddocr's captcha reader: every layer
0, the search took them in graph order and kept 50 of 51 float). The scores the ArgMax
reads are what int8 moves, so the measured copy of the model gets them as extra outputs,
through an ``Identity`` so that the QDQ placement stays that of the real model (a graph
output is never quantized where it is read, and the ArgMax reads its scores
dequantized). The integer outputs themselves are left out of the NMSE
(:func:`deploycomp.quant.sensitivity.nmse_per_output`); the budget still judges them, by
the share of ids equal (:func:`deploycomp.validate.compare_outputs`).
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["INDEX_OPS", "MOVES", "measured_view", "score_inputs"]

INDEX_OPS = {"ArgMax": 0, "ArgMin": 0, "TopK": 1}
"""Ops whose integer output (the index given) is a choice over their float input 0."""

_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


MOVES = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast"}
"""Ops that only move or retype the ids an index op chose (ddddocr: ArgMax, then Transpose)."""


def score_inputs(model: ir.Model) -> dict[str, ir.Value]:
    """Integer graph output name -> the float tensor it chooses over (through ops that
    only move the ids: :data:`MOVES`)."""
    out: dict[str, ir.Value] = {}
    for output in model.graph.outputs:
        value, node = output, output.producer()
        while (node is not None and node.domain in ("", "ai.onnx") and node.op_type in MOVES
               and node.inputs and node.inputs[0] is not None and node.inputs[0].dtype not in _FLOATS):
            value = node.inputs[0]
            node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx") or INDEX_OPS.get(node.op_type) is None:
            continue
        if node.outputs[INDEX_OPS[node.op_type]] is not value or not node.inputs or node.inputs[0] is None:
            continue
        scores = node.inputs[0]
        if scores.dtype in _FLOATS:
            out[output.name] = scores
    return out


def measured_view(model: ir.Model) -> ir.Model:
    """``model`` itself when no output is an index over scores; otherwise a copy with each
    such output's scores as an extra output named ``<output>__scores``."""
    if not score_inputs(model):
        return model
    view = model.clone()
    for name, scores in score_inputs(view).items():
        tap = ir.node("Identity", [scores], name=f"{name}__scores")
        tap.outputs[0].name = f"{name}__scores"
        tap.outputs[0].type, tap.outputs[0].shape = scores.type, scores.shape
        view.graph.append(tap)
        view.graph.outputs.append(tap.outputs[0])
    return view
