"""An integer output (an ArgMax's ids) is measured on the scores it chooses over.

The specification: int8 noise moves scores, not ids, until an id flips; so the ranking and
the range choice measure NMSE on the scores an index op reads (through ops that only move
the ids), never on the ids, and the measured copy quantizes exactly what the real model
quantizes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant.calibrate import Observers, Statistics, stream_into
from deploycomp.quant.policy import POLICIES
from deploycomp.quant.qdq import quantizable_tensors
from deploycomp.quant.scores import measured_view, score_inputs
from deploycomp.quant.sensitivity import nmse_per_output, ort_outputs, quantized_copy, sensitivity_ranking


def _reader() -> ir.Model:
    """A toy CTC reader: 8 time steps of 16 features, two MatMuls to 12 classes, ArgMax over
    the classes, then a Transpose of the ids (as ddddocr's captcha reader ends)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32) / 4, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 12)).astype(np.float32) / 6, "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["logits"], name="mm2"),
         helper.make_node("ArgMax", ["logits"], ["ids"], name="argmax", axis=2, keepdims=0),
         helper.make_node("Transpose", ["ids"], ["output"], name="transpose", perm=[1, 0])],
        "reader", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("output", TensorProto.INT64, [8, 1])], [w1, w2])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def _samples(n: int, seed: int):
    return [{"x": np.random.default_rng(seed + i).standard_normal((1, 8, 16)).astype(np.float32)} for i in range(n)]


def test_the_scores_behind_moved_ids_are_found_and_tapped():
    model = _reader()
    assert {k: v.name for k, v in score_inputs(model).items()} == {"output": "logits"}
    view = measured_view(model)
    assert [v.name for v in view.graph.outputs] == ["output", "output__scores"]
    assert [v.name for v in model.graph.outputs] == ["output"]  # the real model is untouched
    refs = ort_outputs(view, _samples(2, 0))
    assert refs[0]["output__scores"].shape == (1, 8, 12)
    assert np.array_equal(refs[0]["output__scores"].argmax(-1).T, refs[0]["output"])


def test_a_model_without_index_outputs_is_measured_as_it_is():
    model = _reader()
    model.graph.outputs[0] = model.graph.node("mm2").outputs[0]  # the logits themselves
    assert measured_view(model) is model


def test_the_view_quantizes_what_the_real_model_quantizes():
    model = _reader()
    view = measured_view(model)
    for policy in POLICIES.values():
        real, seen = quantizable_tensors(model, policy), quantizable_tensors(view, policy)
        assert {k: sorted(n.name for n, _ in v) for k, v in real.items()} == \
            {k: sorted(n.name for n, _ in v if n.op_type != "Identity") for k, v in seen.items()}


def test_the_ranking_sees_int8_error_the_ids_hide():
    """NMSE of ids is left out (it is zero until an id flips, then thousands); NMSE of the
    scores ranks the layers."""
    model = _reader()
    policy = POLICIES["tensorrt"]
    calib, held = _samples(8, 0), _samples(3, 100)
    observers = Observers(list(quantizable_tensors(model, policy)))
    stream_into(model, [observers], calib)
    ranges = Statistics(observers.observers, len(calib)).ranges("minmax")
    ids_only = ort_outputs(model, held)
    assert nmse_per_output(ids_only, ort_outputs(quantized_copy(model, policy, ranges, set()), held)) == {}
    view = measured_view(model)
    ranking = sensitivity_ranking(view, policy, ranges, held, ort_outputs(view, held))
    assert set(ranking.base) == {"output__scores"} and ranking.base["output__scores"] > 0
    taken = ranking.take(2)
    assert sorted(taken) == ["mm1", "mm2"] and all(s.error_alone > 0 for s in ranking.measured())
