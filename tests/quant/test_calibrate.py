"""Calibration runs: one run of the float model feeds every consumer, and the ranges it
fits are checked against other real inputs.

Specification:
* consumers fed by one ``stream_into`` run see the same values as separate runs;
* per-tensor consumers updated in parts side by side (one thread per part) end up exactly
  as one thread updating them whole; the parts cover every tensor once, balanced by size;
* ``range_coverage`` names the tensors that other inputs push past the calibration
  set's extremes (by more than the tolerance), worst first, and none for inputs like
  the calibration set; ``quantize`` reports it for the inputs it is given;
* it also names the inputs *quieter* than any calibration input: inside the range, but
  spanning a few int8 steps where every calibration input spanned ten times more; of the
  tensors the model quantizes only.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant import POLICIES, quantize
from deploycomp.quant.bias_correction import BiasStatistics
from deploycomp.quant.calibrate import (QUIET_STEPS, Observers, _parts, collect_statistics, range_coverage,
                                        stream_into, stream_tensors)
from deploycomp.quant.qdq import quantizable_tensors

POLICY = POLICIES["openvino"]


def _conv_relu_conv() -> ir.Model:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])))


def _samples(n, scale, seed):
    rng = np.random.default_rng(seed)
    return [{"x": (rng.normal(size=(1, 3, 8, 8)) * scale).astype(np.float32)} for _ in range(n)]


def test_consumers_of_one_run_see_what_separate_runs_see():
    model, samples = _conv_relu_conv(), _samples(4, 1.0, 1)
    a, b = Observers(["x", "r1"]), Observers(["r1"])
    assert stream_into(model, [a, b], samples) == 4
    alone = collect_statistics(model, ["r1"], samples).observers["r1"]
    for obs in (a.observers["r1"], b.observers["r1"]):
        assert (obs.lo, obs.hi) == (alone.lo, alone.hi)
        np.testing.assert_array_equal(obs.hist, alone.hist)


def test_tensors_too_large_for_one_run_come_in_parts_with_the_same_statistics(monkeypatch):
    """Past :data:`STREAM_BUDGET_BYTES` a sample's tensors come from several runs, a part
    each (an fp16 range check of a 512 x 416 U-Net held 10.9 GB in one): per-tensor
    consumers see what one run gives them, a consumer that takes the sample whole gets it
    whole once its last part is in, and the samples are counted once."""
    import deploycomp.quant.calibrate as calibrate
    from deploycomp.quant.calibrate import stream_parts

    model, samples = _conv_relu_conv(), _samples(3, 1.0, 4)
    tensors = ["x", "c1", "r1", "y"]

    class Whole:  # takes a sample's tensors together (as smoothing's sampled rows do)
        tensors = ["c1", "y"]

        def __init__(self):
            self.seen = []

        def update(self, values):
            self.seen.append({k: v.copy() for k, v in values.items()})

    one, one_whole = Observers(tensors), Whole()
    assert stream_into(model, [one, one_whole], samples) == 3
    assert len(list(stream_parts(model, tensors, samples))) == 3  # one part a sample
    monkeypatch.setattr(calibrate, "STREAM_BUDGET_BYTES", 8 * 8 * 4 * 4)  # c1 alone: a part each
    parts = list(stream_parts(model, tensors, samples))
    assert [(i, sorted(p), last) for i, p, last in parts[:3]] == [
        (0, ["c1", "x"], False), (0, ["r1"], False), (0, ["y"], True)]
    many, many_whole = Observers(tensors), Whole()
    assert stream_into(model, [many, many_whole], samples) == 3
    for name in tensors:
        a, b = one.observers[name], many.observers[name]
        assert (a.lo, a.hi, a.count) == (b.lo, b.hi, b.count)
        np.testing.assert_array_equal(a.hist, b.hist)
    assert len(many_whole.seen) == 3 and all(sorted(v) == ["c1", "y"] for v in many_whole.seen)
    for a, b in zip(one_whole.seen, many_whole.seen):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_per_tensor_consumers_updated_in_parts_equal_one_thread(monkeypatch):
    import deploycomp.quant.calibrate as calibrate

    monkeypatch.setattr(calibrate, "cores", lambda: 3)  # more parts than this model has big tensors
    model, samples = _conv_relu_conv(), _samples(5, 1.0, 2)
    tensors = ["x", "c1", "r1", "y"]
    ranges = collect_statistics(model, tensors, samples).ranges("percentile")
    parted, parted_sums = Observers(tensors), BiasStatistics(model, POLICY, [ranges])
    stream_into(model, [parted, parted_sums], samples)
    whole, whole_sums = Observers(tensors), BiasStatistics(model, POLICY, [ranges])
    for values in stream_tensors(model, tensors, samples):
        whole.update(values)
        whole_sums.update(values)
    for name in tensors:
        a, b = parted.observers[name], whole.observers[name]
        assert (a.lo, a.hi, a.edges, a.count) == (b.lo, b.hi, b.edges, b.count)
        np.testing.assert_array_equal(a.hist, b.hist)
    assert parted_sums.shifts().keys() == whole_sums.shifts().keys() == {"conv1", "conv2"}
    for layer, shift in whole_sums.shifts().items():
        np.testing.assert_array_equal(parted_sums.shifts()[layer], shift)


def test_parts_cover_each_tensor_once_balanced_by_size():
    values = {name: np.zeros(size, np.float32) for name, size in
              {"a": 100, "b": 60, "c": 50, "d": 10, "skipped": 1000}.items()}
    parts = _parts(values, ["a", "b", "c", "d", "absent"], 2)
    assert sorted(n for p in parts for n in p) == ["a", "b", "c", "d"]
    assert sorted(sum(v.size for v in p.values()) for p in parts) == [110, 110]
    assert _parts(values, ["a", "b", "c", "d"], 2) == parts  # the same split every sample
    assert len(_parts(values, ["d"], 4)) == 1  # no empty parts


def test_range_coverage_names_the_tensors_other_inputs_push_past_calibration():
    model = _conv_relu_conv()
    calib = _samples(8, 1.0, 1)
    tensors = list(quantizable_tensors(model, POLICY))
    assert sorted(tensors) == ["r1", "x"]
    extremes = collect_statistics(model, tensors, calib).ranges("minmax")

    alike = range_coverage(model, extremes, _samples(3, 1.0, 7))
    assert alike["tensors_beyond"] == 0 and alike["tensors"] == 2 and alike["samples"] == 3

    louder = range_coverage(model, extremes, _samples(3, 5.0, 7))
    assert louder["tensors_beyond"] == 2
    worst = louder["worst"][0]
    assert worst["beyond_range"] > 1.0  # five times the amplitude: well past the range
    assert worst["seen"][1] > worst["range"][1]
    assert [c["beyond_range"] for c in louder["worst"]] == sorted((c["beyond_range"] for c in louder["worst"]),
                                                                  reverse=True)


def test_quantize_reports_coverage_of_the_inputs_it_is_given():
    model = _conv_relu_conv()
    result = quantize(model, POLICY, _samples(8, 1.0, 1), [], boosters=(), coverage=_samples(2, 5.0, 3))
    assert result.info["range_coverage"]["tensors_beyond"] == 2
    quieter = quantize(model, POLICY, _samples(8, 1.0, 1), [], boosters=(), coverage=_samples(2, 1e-3, 3))
    assert [q["sample"] for q in quieter.info["range_coverage"]["quiet"]["samples"]] == [0, 1]
    assert "range_coverage" not in quantize(model, POLICY, _samples(8, 1.0, 1), [], boosters=()).info


def test_range_coverage_names_inputs_quieter_than_any_calibration_input():
    """A silent stretch of audio, a blank page: its values lie inside every range, so
    nothing is past it, yet int8 rounds them to a few levels."""
    model = _conv_relu_conv()
    stats = collect_statistics(model, ["x", "r1"], _samples(8, 1.0, 1))
    extremes, quietest = stats.ranges("minmax"), stats.quietest()
    samples = _samples(2, 1.0, 7) + _samples(1, 1e-3, 8)  # the third a thousand times quieter

    coverage = range_coverage(model, extremes, samples, quietest=quietest)
    assert coverage["tensors_beyond"] == 0
    quiet = coverage["quiet"]
    assert quiet["samples"] == [{"sample": 2, "tensors": 2}] and quiet["checked_samples"] == 3
    assert all(q["steps"] < QUIET_STEPS < q["calibration_steps"] for q in quiet["worst"])

    assert range_coverage(model, extremes, samples[:2], quietest=quietest)["quiet"]["samples"] == []
    only_x = range_coverage(model, extremes, samples, quietest=quietest, quantized={"x"})["quiet"]
    assert only_x["samples"] == [{"sample": 2, "tensors": 1}] and {q["tensor"] for q in only_x["worst"]} == {"x"}


def test_a_constant_tensor_is_never_quiet():
    """A tensor that is constant on every calibration input spans nothing to compare with."""
    model = _conv_relu_conv()
    constant = [{"x": np.full((1, 3, 8, 8), 0.5, np.float32)} for _ in range(3)]
    stats = collect_statistics(model, ["x"], constant)
    assert stats.quietest() == {"x": 0.0}
    coverage = range_coverage(model, stats.ranges("minmax"), constant, quietest=stats.quietest())
    assert coverage["quiet"]["samples"] == []


def test_a_quiet_input_whose_steps_round_to_zero_is_still_ordered():
    """A tensor whose quietest calibration span is a few ten-thousandths of a step (a
    nucleus segmenter's near-empty tiles) rounds to 0.0 steps; ordering the quiet inputs
    by those rounded numbers divided by zero, an internal error after 200 s of an int8 build."""
    from deploycomp.quant.calibrate import _quiet_inputs

    extremes = {"a": (0.0, 255.0), "b": (0.0, 255.0)}
    quietest = {"a": 1e-3, "b": 0.5}
    spans = {"a": [1e-6, 1.0], "b": [1e-3, 1.0]}
    quiet = _quiet_inputs(extremes, quietest, spans, 2, worst=5)
    assert [(q["tensor"], q["sample"]) for q in quiet["worst"]] == [("a", 0), ("b", 0)]  # 1000x, then 500x quieter
    assert quiet["worst"][0]["calibration_steps"] == 0.0 and quiet["samples"] == [{"sample": 0, "tensors": 2}]
