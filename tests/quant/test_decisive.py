"""Logits keep their extremes: the tensors a Softmax, ArgMax or TopK decides on.

Specification:
* the tensors found are those the deciding op reads, walked up through ops that only move
  elements or shift them by a constant (a bias Add, a Transpose), not through an op that
  changes them otherwise (a Relu), nor into a constant;
* whatever the range method, those tensors' int8 ranges hold their observed extremes,
  and the manifest record lists them (``extremes_kept``): with percentile ranges a
  classifier over 20,000 classes keeps every position's winner over its close
  runner-up; clipped at the 99.99 % quantile (what the range was before), both fall to
  one level and many positions pick the runner-up.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant import POLICIES, quantize
from deploycomp.quant.decisive import decisive_tensors
from deploycomp.quant.sensitivity import ort_outputs

POSITIONS, CLASSES = 40, 20000


def _classifier_head() -> ir.Model:
    """logits (1, T, C) -> bias Add -> Transpose (T, 1, C) -> Softmax; and a Relu side
    branch into a second output, which decides nothing."""
    bias = np.random.default_rng(0).normal(0, 0.1, CLASSES).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["logits", "bias"], ["biased"], name="bias_add"),
         helper.make_node("Transpose", ["biased"], ["moved"], perm=[1, 0, 2], name="move"),
         helper.make_node("Softmax", ["moved"], ["probs"], axis=-1, name="softmax"),
         helper.make_node("Relu", ["logits"], ["rectified"], name="side"),
         helper.make_node("Mul", ["rectified", "bias"], ["side_out"], name="side_scale")],
        "g", [helper.make_tensor_value_info("logits", TensorProto.FLOAT, (1, POSITIONS, CLASSES))],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, (POSITIONS, 1, CLASSES)),
         helper.make_tensor_value_info("side_out", TensorProto.FLOAT, (1, POSITIONS, CLASSES))],
        [numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(model))


def _logits(n: int, seed: int) -> list[dict]:
    """Each position: a winner between 6 and 12 and a runner-up 1 below it, among noise of
    unit spread. Two values in 20,000: under percentile's 0.01 % tail."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        x = rng.normal(0, 1, (1, POSITIONS, CLASSES))
        for t in range(POSITIONS):
            winner, runner = rng.choice(CLASSES, 2, replace=False)
            x[0, t, winner] = rng.uniform(6, 12)
            x[0, t, runner] = x[0, t, winner] - 1
        samples.append({"logits": x.astype(np.float32)})
    return samples


def _agreement(model: ir.Model, quantized: ir.Model, held: list[dict]) -> float:
    refs, got = ort_outputs(model, held), ort_outputs(quantized, held)
    return float(np.mean([(o["probs"].argmax(-1) == r["probs"].argmax(-1)).mean() for r, o in zip(refs, got)]))


def test_the_walk_goes_through_moves_and_bias_adds_only():
    # not into the constant bias, nor the side branch's Relu and Mul
    assert decisive_tensors(_classifier_head()) == {"moved", "biased", "logits"}


def test_percentile_ranges_keep_every_winner():
    model = _classifier_head()
    result = quantize(model, POLICIES["tflite"], _logits(8, 1), _logits(2, 2), None, method="percentile")
    assert {"logits", "biased"} <= set(result.info["extremes_kept"])
    assert _agreement(model, result.model, _logits(4, 3)) == 1.0


def test_without_the_kept_extremes_the_winners_are_clipped(monkeypatch):
    """The same build with the walk switched off: what percentile alone did."""
    import deploycomp.quant as quant

    monkeypatch.setattr(quant, "decisive_tensors", lambda model: set())
    model = _classifier_head()
    result = quant.quantize(model, POLICIES["tflite"], _logits(8, 1), _logits(2, 2), None, method="percentile")
    assert result.info["extremes_kept"] == []
    assert _agreement(model, result.model, _logits(4, 3)) < 0.8
