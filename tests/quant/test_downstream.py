"""The quantize-one ranking runs only the part of each copy its QDQ can reach, on the float
model's own tensors at the cut, and gets the same numbers as running the whole copy."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant.downstream import FloatTaps, downstream_of_changes, frontier_of, tap_groups
from deploycomp.quant.policy import POLICIES
from deploycomp.quant.sensitivity import _session, ort_outputs, quantized_copy, rank_layers


def _chain(with_loop: bool = False) -> ir.Model:
    """x -> mm1 -> relu -> mm2 -> y, and (optionally) an If after mm2 whose branches read
    relu's output from the outer scope."""
    rng = np.random.default_rng(1)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), n) for n in ("w1", "w2"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["b"], name="mm2")]
    out = "b"
    extra = []
    if with_loop:
        branch = helper.make_graph([helper.make_node("Add", ["b", "r"], ["s"], name="inner")], "br", [],
                                   [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 8])])
        extra = [numpy_helper.from_array(np.array(True), "cond")]
        nodes.append(helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch, else_branch=branch))
        out = "y"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8])], [w1, w2, *extra])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def _ranges():
    return {"x": (-3.0, 3.0), "r": (0.0, 6.0)}


def test_a_copy_is_cut_below_its_node_and_fed_the_float_tensors():
    model = _chain()
    policy = POLICIES["openvino"]
    float_proto = ir.to_proto(model)
    assert frontier_of(float_proto, "mm2") == ["r"]
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)} for i in range(2)]
    taps = FloatTaps.collect(model, {"r"}, samples, ort_outputs)
    copy = ir.to_proto(quantized_copy(model, policy, _ranges(), {"mm1"}))
    cut = downstream_of_changes({n.name: list(n.input) for n in float_proto.graph.node}, copy, ["mm2"], taps.types)
    kept = [n.op_type for n in onnx.load_from_string(cut.model).graph.node]
    assert "Relu" not in kept and kept.count("MatMul") == 1 and "QuantizeLinear" in kept
    assert cut.inputs == ["r"] and cut.outputs == ["b"]

    session = _session(cut.model)  # as the ranking runs it: single-threaded, the QDQ arithmetic as written
    whole = ort_outputs(ir.from_proto(copy), samples)
    for tapped, full in zip(taps.values, whole):
        (got,) = session.run(["b"], {"r": tapped["r"]})
        np.testing.assert_array_equal(got, full["b"])


def test_subgraphs_reading_the_outer_scope_are_never_cut():
    """An If/Loop body may read tensors from outside it that no frontier lists: such a copy
    runs whole."""
    model = _chain(with_loop=True)
    float_proto = ir.to_proto(model)
    taps = FloatTaps.collect(model, {"r"}, [{"x": np.ones((1, 8), np.float32)}], ort_outputs)
    copy = ir.to_proto(quantized_copy(model, POLICIES["openvino"], _ranges(), {"mm1"}))
    assert downstream_of_changes({n.name: list(n.input) for n in float_proto.graph.node}, copy, ["mm2"],
                                 taps.types) is None


def test_taps_that_would_not_fit_are_not_collected(monkeypatch):
    import deploycomp.quant.downstream as downstream

    model = _chain()
    monkeypatch.setattr(downstream, "TAP_BUDGET_BYTES", 8 * 4 * 2 - 1)  # "r" on 2 samples needs 64 bytes
    samples = [{"x": np.ones((1, 8), np.float32)}] * 2
    assert FloatTaps.collect(model, {"r"}, samples, ort_outputs) is None
    assert FloatTaps.collect(model, {"r"}, samples[:1], ort_outputs) is not None


def test_nodes_whose_taps_do_not_fit_together_are_tapped_in_groups():
    """Each group's taps fit the budget; a node whose own taps do not runs whole."""
    model = _chain()  # a, r: 8 floats (32 bytes) a sample; x is a graph input (the samples hold it)
    frontiers = {"mm1": ["x"], "relu": ["a"], "mm2": ["r"]}
    assert tap_groups(model, frontiers, samples=2, budget=128) == [(["mm1", "relu", "mm2"], {"x", "a", "r"})]
    assert tap_groups(model, frontiers, samples=2, budget=64) == [(["mm1", "relu"], {"x", "a"}), (["mm2"], {"r"})]
    assert tap_groups(model, frontiers, samples=2, budget=63) == [(["relu"], None), (["mm2"], None), (["mm1"], {"x"})]


def test_the_ranking_is_the_same_whatever_fits_in_memory(monkeypatch):
    import deploycomp.quant.downstream as downstream

    model, policy = _chain(), POLICIES["openvino"]
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)} for i in range(3)]
    refs = ort_outputs(model, samples)
    ranked = {s.node: s.error_alone for s in rank_layers(model, policy, _ranges(), samples, refs)[0]}
    for budget in (8 * 4 * 3, 0):  # one tensor's taps at a time; none (every copy runs whole)
        monkeypatch.setattr(downstream, "TAP_BUDGET_BYTES", budget)
        again = {s.node: s.error_alone for s in rank_layers(model, policy, _ranges(), samples, refs)[0]}
        assert again.keys() == ranked.keys() and all(np.isclose(again[k], v, rtol=1e-6) for k, v in ranked.items())
    assert max(ranked.values()) > 0


def test_the_tap_budget_follows_the_memory_available(monkeypatch):
    """A quarter of what is free, up to the cap: a busy 8 GB runner keeps fewer taps than an
    idle 24 GB machine, which keeps a layout detector's 1.4 GB at once."""
    import deploycomp.quant.downstream as downstream

    gb = 1 << 30
    monkeypatch.setattr(downstream, "available_bytes", lambda: 20 * gb)
    assert downstream.tap_budget() == downstream.TAP_BUDGET_BYTES == 2 * gb
    monkeypatch.setattr(downstream, "available_bytes", lambda: 4 * gb)
    assert downstream.tap_budget() == gb
    monkeypatch.setattr(downstream, "available_bytes", lambda: gb // 2)
    assert downstream.tap_budget() == downstream.MIN_TAP_BUDGET_BYTES
    monkeypatch.setattr(downstream, "available_bytes", lambda: None)  # no /proc/meminfo
    assert downstream.tap_budget() == gb


def test_a_copy_in_memory_is_cut_as_its_serialized_form_is():
    """The ranking cuts the QDQ copy before serializing it: the same nodes, frontier,
    outputs and numbers as cutting the serialized copy."""
    model = _chain()
    float_proto = ir.to_proto(model)
    float_nodes = {n.name: list(n.input) for n in float_proto.graph.node}
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)} for i in range(2)]
    for unit in (["mm1"], ["mm2"], ["mm1", "mm2"]):
        taps = FloatTaps.collect(model, set(frontier_of(float_proto, unit)), samples, ort_outputs)
        copy = quantized_copy(model, POLICIES["tflite"], _ranges() | {"a": (-5.0, 5.0), "b": (-9.0, 9.0)},
                              {"mm1", "mm2"} - set(unit))
        serialized = downstream_of_changes(float_nodes, ir.to_proto(copy), unit, taps.types)
        in_memory = downstream_of_changes(float_nodes, copy, unit, taps.types)
        a, b = onnx.load_from_string(serialized.model).graph, onnx.load_from_string(in_memory.model).graph
        assert [n.name for n in a.node] == [n.name for n in b.node] and len(a.node) > 0
        assert sorted(t.name for t in a.initializer) == sorted(t.name for t in b.initializer)
        assert (serialized.inputs, serialized.outputs) == (in_memory.inputs, in_memory.outputs)
        for tapped in taps.values:
            feeds = {k: tapped[k] for k in in_memory.inputs}
            np.testing.assert_array_equal(_session(serialized.model).run(None, feeds)[0],
                                          _session(in_memory.model).run(None, feeds)[0])


def test_a_cut_hands_its_large_weights_over_in_place():
    """A cut serialized every weight its cone reads for every unit ranked (a ViT's cut near
    its input: 97 MB a unit): the large ones go to ONNX Runtime as the model's own arrays,
    referenced by name, and the cut computes the same numbers."""
    from deploycomp.quant.sessions import IN_PLACE_BYTES

    rng = np.random.default_rng(2)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), n) for n in ("w1", "w2"))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
                               helper.make_node("Relu", ["a"], ["r"], name="relu"),
                               helper.make_node("MatMul", ["r", "w2"], ["b"], name="mm2")], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 256])], [w1, w2])
    model = ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])))
    assert w2.ByteSize() > IN_PLACE_BYTES
    float_proto = ir.to_proto(model)
    samples = [{"x": rng.standard_normal((1, 256)).astype(np.float32)} for _ in range(2)]
    taps = FloatTaps.collect(model, {"r"}, samples, ort_outputs)
    copy = quantized_copy(model, POLICIES["openvino"], {"x": (-3.0, 3.0), "r": (0.0, 30.0)}, {"mm1"})
    cut = downstream_of_changes({n.name: list(n.input) for n in float_proto.graph.node}, copy, ["mm2"], taps.types)
    assert [name for name, _ in cut.weights] == ["w2__mm2_q"]  # (mm2's weight, int8: 64 kB)
    assert len(cut.model) < IN_PLACE_BYTES // 4
    session = _session(cut.model, cut.weights)
    for tapped, full in zip(taps.values, ort_outputs(copy, samples)):
        (got,) = session.run(["b"], {"r": tapped["r"]})
        np.testing.assert_array_equal(got, full["b"])
