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
onnxscript also skips nodes of several outputs; a ``Split`` of a constant (tf2onnx's
``SAME`` padding arithmetic in a fingerprint model: the pads of its first ``Pad`` were
never known, and TFLite refused the model) is folded here with ONNX's reference
evaluator, under the same caps.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx_ir as ir
from onnxscript.optimizer._constant_folding import FoldConstantsPass

from deploycomp.ir import add_initializer
from deploycomp.passes.rules._util import const

__all__ = ["ConstantFoldingPass", "MAX_FOLDED_ELEMENTS"]

MAX_FOLDED_ELEMENTS = 1 << 16
"""Largest tensor (in elements) folding may create; larger results stay as ops."""

MAX_INPUT_ELEMENTS = 8192
"""Constant inputs above this size are folded through only by layout ops (Transpose,
Unsqueeze, ...) and only when this node is their sole consumer: otherwise the folded
copy would sit in the file next to the original (Silero VAD's LSTM weights, read by
both an Unsqueeze and the LSTM, grew the model by 40% before this limit); and by the
:data:`SMALL_RESULT_OPS` into a result of at most this size."""


SMALL_RESULT_OPS = frozenset({"MatMul", "Gemm", "Gather", "Slice", "ReduceSum", "ReduceMean", "ReduceMax",
                              "ReduceMin", "ReduceL2"})
"""Ops (numpy-fast in the reference evaluator) folded through a large constant input when
their result is small: no copy of the large input lands in the file, and an unrolled
LSTM's first step, ``Gemm(zeros, W_hh, b)`` on its constant initial state with ``W_hh``
shared by every step, stays computed otherwise (OpenVINO 2026.4's f32 CPU compile then
failed on its int8 form: "Check 'm_element_type.is_static()' failed")."""


def _small_result_of_large_inputs(node: ir.Node) -> bool:
    out = node.outputs[0] if len(node.outputs) == 1 else None
    if out is None or out.shape is None or not out.shape.is_static():
        return False
    sizes = [v.const_value.size for v in node.inputs if v is not None and v.const_value is not None]
    return bool(sizes) and max(sizes) > MAX_INPUT_ELEMENTS >= int(np.prod(out.shape.numpy(), dtype=np.int64))


class ConstantFoldingPass(ir.passes.InPlacePass):
    def __init__(self, max_folded_elements: int = MAX_FOLDED_ELEMENTS):
        self.max_folded_elements = max_folded_elements

    def _should_fold(self, node: ir.Node) -> bool | None:
        """ConstantOfShape within the cap, and a node of :data:`SMALL_RESULT_OPS` whose
        large constant inputs give a small result (None: onnxscript's own rules)."""
        if node.domain in ("", "ai.onnx") and node.op_type in SMALL_RESULT_OPS:
            return _small_result_of_large_inputs(node) or None
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
        folding_log = logging.getLogger(FoldConstantsPass.__module__)
        level = folding_log.level
        folding_log.setLevel(logging.ERROR)  # "skipping ... multiple outputs": folded below instead
        modified = False
        # a constant's log(0) or 0/0 is what the model computes (-inf, NaN), folded or not:
        # numpy's warnings about it reached a CI log from the reference evaluator (a T5)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                while True:  # what a folded Split feeds (a Concat of pads) folds in the next round
                    modified |= folder(model).modified
                    if not _fold_multi_output(model, self.max_folded_elements):
                        break
                    modified = True
            finally:
                folding_log.setLevel(level)
        _make_contiguous(model.graph)
        return ir.passes.PassResult(model, modified)


_NOT_FOLDED = {"Dropout"}  # its mask output is random in training mode: left to the no-op rules


def _fold_multi_output(model: ir.Model, max_elements: int) -> bool:
    """Fold main-graph nodes of several outputs whose inputs are all constant (within
    :data:`MAX_INPUT_ELEMENTS` each, outputs within ``max_elements``)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph, modified = model.graph, False
    version = model.opset_imports.get("", None)
    for node in list(graph):
        if (len(node.outputs) < 2 or node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED
                or not node.inputs or version is None
                or any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values())
                or any(v.is_graph_output() for v in node.outputs)):
            continue
        arrays = [const(v) for v in node.inputs]  # None also for an absent optional input
        if any((a is None and v is not None) or (a is not None and a.size > MAX_INPUT_ELEMENTS)
               for v, a in zip(node.inputs, arrays)):
            continue
        names = [f"i{i}" if a is not None else "" for i, a in enumerate(arrays)]
        outs = [f"o{i}" for i in range(len(node.outputs))]
        proto = ir.serde.serialize_node(node)
        one = helper.make_node(node.op_type, names, outs, domain=node.domain)
        one.attribute.extend(proto.attribute)
        inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                  for n, a in zip(names, arrays) if a is not None]
        outputs = [helper.make_empty_tensor_value_info(o) for o in outs]
        try:
            results = ReferenceEvaluator(helper.make_model(
                helper.make_graph([one], "fold", inputs, outputs),
                opset_imports=[helper.make_opsetid("", version)])).run(
                None, {n: a for n, a in zip(names, arrays) if a is not None})
        except Exception:  # noqa: BLE001 - what the evaluator cannot run stays an op
            continue
        if any(np.asarray(r).size > max_elements for r in results):
            continue
        for value, result in zip(node.outputs, results):
            if not list(value.uses()):
                continue
            value.replace_all_uses_with(add_initializer(graph, f"{value.name}__folded", np.asarray(result)))
        graph.remove(node, safe=True)
        modified = True
    return modified


def _make_contiguous(graph: ir.Graph) -> None:
    """The reference evaluator can return strided views (Transpose, Unsqueeze of a
    transposed constant); serialisation and onnx-ir's initializer hashing need
    C-contiguous data, so folded results are copied once here. And a folded value keeps
    the shape the file declared for it, symbolic dims included (tf2onnx's ``unk__0``
    on a BERT's reshaped weight: its Gemm's output had no static shape, and TFLite
    refused it), so every initializer's shape is set to its tensor's."""
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and (value.shape is None or tuple(value.shape) != tuple(tensor.shape)):
            value.shape = ir.Shape(tensor.shape)
        if isinstance(tensor, ir.Tensor):
            arr = tensor.numpy()
            if not arr.flags["C_CONTIGUOUS"]:
                value.const_value = ir.Tensor(np.require(arr, requirements="C"), name=tensor.name)  # 0-d stays 0-d
