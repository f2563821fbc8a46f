"""An fp16 build that misses by precision, not range, keeps the fewest segments fp32.

The specification: the graph is cut in order into segments of about as many compute
layers; segments are ranked by how much keeping each fp32 lowers the fp16 error, and the
search keeps the fewest that meet the budget, judged by the caller's check. Tested on a
model whose input carries a small signal on a large offset (fp16's step at 1000 is 0.5):
only the segment that removes the offset needs fp32.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploycomp.backends.tensorrt.fp16 import simulate_fp16, to_fp16
from deploycomp.fp16_search import float_tensors, fp16_mac_share, search_fp32_segments, segments
from deploycomp.quant.sensitivity import Verdict, ort_outputs
from deploycomp.validate import compare_outputs, fidelity_met
from deploycomp.targets import Fidelity

FP16 = Fidelity(min_cosine=0.999)


def _layers_after(name: str, nodes: list, inits: list, layers: int, seed: int) -> ir.Model:
    """``nodes`` (which write ``h0`` from ``x``) followed by ``layers`` MatMul + Tanh layers."""
    rng = np.random.default_rng(seed)
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((64, 64)) / 8).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"], name=f"tanh{i}"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, [1, 64])], inits)
    return ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def _offset_model(layers: int = 8) -> ir.Model:
    inits = [numpy_helper.from_array(np.full((1, 64), 1000.0, np.float32), "offset")]
    nodes = [helper.make_node("Sub", ["x", "offset"], ["h0"], name="centre")]
    return _layers_after("offset", nodes, inits, layers, seed=0)


def _samples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [{"x": (1000 + 0.2 * rng.standard_normal((1, 64))).astype(np.float32)} for _ in range(n)]


def _reference(model: ir.Model, fp32_tensors) -> ir.Model:
    return simulate_fp16(to_fp16(model, fp32_tensors=fp32_tensors))


def test_segments_cover_the_graph_in_order_with_even_compute():
    parts = segments(_offset_model(8), count=4)
    assert list(parts) == ["segment00", "segment01", "segment02", "segment03"]
    assert parts["segment00"] == ["h0", "m0", "h1", "m1", "h2"]  # the Sub before the first layer, two layers each
    assert sum(len(t) for t in parts.values()) == 1 + 2 * 8  # every float output, once
    forty = segments(_offset_model(40))
    assert len(forty) <= 16 and all(sum(t.startswith("m") for t in ts) <= 3 for ts in forty.values())


def test_only_the_segment_that_needs_precision_stays_fp32():
    model = _offset_model(8)
    calib = _samples(6, 0)
    refs = ort_outputs(model, calib)
    all_fp16 = compare_outputs(refs, ort_outputs(_reference(model, []), calib))
    assert not fidelity_met(all_fp16, FP16)  # x - 1000 rounded at fp16's 0.5 step: the signal is gone
    asked = []

    def meets(tensors: list[str]) -> Verdict:
        asked.append(tensors)
        return Verdict(fidelity_met(compare_outputs(refs, ort_outputs(_reference(model, tensors), calib)), FP16))

    tensors, record = search_fp32_segments(model, _reference, [], calib[:4], refs[:4], meets)
    assert record["met"] and record["fp32_segments"] == ["segment00"] and len(asked) == 1
    assert "h0" in tensors and "m7" not in tensors
    assert record["ranking"][0]["segment"] == "segment00" and record["ranking"][0]["nmse_gain"] > 0
    assert record["fp16_mac_share"] == pytest.approx(6 / 8)  # mm0 writes m0, mm1 reads h1: fp32; the rest fp16
    held = _samples(4, 100)
    assert fidelity_met(compare_outputs(ort_outputs(model, held), ort_outputs(_reference(model, tensors), held)), FP16)


def test_the_mac_share_counts_layers_touching_fp32_tensors():
    model = _offset_model(4)
    assert fp16_mac_share(model, []) == 1.0
    assert fp16_mac_share(model, ["m0", "m1", "m2", "m3"]) == 0.0
    assert fp16_mac_share(model, ["h2"]) == pytest.approx(0.75)  # Tanh writes it, mm2 reads it: one layer of four


def test_a_tensorrt_fp16_build_that_misses_by_precision_keeps_a_segment_fp32(tmp_path, capsys):
    """End to end: nothing leaves fp16's range, fp16 misses; the build keeps the offset's
    segment fp32 (chosen on the calibration samples), validates on its own samples and says
    so in the manifest."""
    import json

    import deploycomp

    path = tmp_path / "offset.onnx"
    onnx.save(ir.to_proto(_offset_model(8)), path)
    stack = lambda samples: {"x": np.concatenate([s["x"] for s in samples])}  # noqa: E731
    np.savez(tmp_path / "calib.npz", **stack(_samples(8, 0)))
    np.savez(tmp_path / "val.npz", **stack(_samples(4, 100)))
    deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16",
                     calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    search = manifest["fp16"]["search"]
    assert manifest["validation"]["ok"] and search["met"] and search["fp32_segments"] == ["segment00"]
    assert search["judged_on"] == "8 calibration samples" and manifest["fp16"]["fp32_tensors"] == {}


def test_when_no_mix_meets_the_plain_fp16_bundle_and_its_miss_stand(tmp_path):
    """Every segment fp32 is an fp32 model: shipped as 'fp16' it would hide the miss."""
    import deploycomp
    from deploycomp.errors import BudgetError

    path = tmp_path / "offset.onnx"
    onnx.save(ir.to_proto(_offset_model(8)), path)
    np.savez(tmp_path / "val.npz", x=np.concatenate([s["x"] for s in _samples(4, 100)]))
    with pytest.raises(BudgetError, match="cosine"):  # 1 - 1e-12: only every segment fp32 meets it
        deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16",
                         validation_data=tmp_path / "val.npz", min_cosine=1 - 1e-12)
    runner = deploycomp.build(path, tmp_path / "c", target="jetson-orin-nano", precision="fp16",
                              validation_data=tmp_path / "val.npz", min_cosine=1 - 1e-12, no_fail=True)
    search = runner.manifest["fp16"]["search"]
    assert not search["met"] and not runner.manifest["validation"]["ok"]
    assert runner.manifest["backend"]["lowered"]["precision"] == "fp16"


def _offset_model_int8(layers: int = 4) -> ir.Model:
    """The offset model as it would arrive from a quantizer: each MatMul reads its input
    through a symmetric int8 QuantizeLinear/DequantizeLinear and its int8 weight through a
    DequantizeLinear; the Sub and the Tanhs stay float."""
    rng = np.random.default_rng(0)
    scale = numpy_helper.from_array(np.array(0.01, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    inits = [numpy_helper.from_array(np.full((1, 64), 1000.0, np.float32), "offset"), scale, zero]
    nodes = [helper.make_node("Sub", ["x", "offset"], ["h0"], name="centre")]
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.integers(-127, 128, (64, 64)).astype(np.int8), f"wq{i}"),
                  numpy_helper.from_array(np.array(1 / 8 / 127, np.float32), f"ws{i}")]
        nodes += [helper.make_node("QuantizeLinear", [f"h{i}", "s", "z"], [f"q{i}"], name=f"q{i}"),
                  helper.make_node("DequantizeLinear", [f"q{i}", "s", "z"], [f"d{i}"], name=f"dq{i}"),
                  helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}"], [f"w{i}"], name=f"dqw{i}"),
                  helper.make_node("MatMul", [f"d{i}", f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"], name=f"tanh{i}")]
    graph = helper.make_graph(nodes, "offset_int8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, [1, 64])], inits)
    return ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])))


def test_a_model_that_arrives_int8_keeps_its_float_parts_fp32_where_fp16_misses(tmp_path):
    """Its weights are int8 already: an fp16 build halves nothing, and where its float parts
    in fp16 miss the budget and no mix of segments meets it, they stay fp32 (the model as
    written) rather than the miss standing; the manifest says why."""
    import deploycomp

    path = tmp_path / "offset_int8.onnx"
    onnx.save(ir.to_proto(_offset_model_int8()), path)
    np.savez(tmp_path / "val.npz", x=np.concatenate([s["x"] for s in _samples(4, 100)]))
    runner = deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16",
                              validation_data=tmp_path / "val.npz", min_cosine=1 - 1e-9, no_fail=True)
    fp16 = runner.manifest["fp16"]
    assert any(a.startswith("the model arrives int8") for a in runner.manifest["assumptions"])
    assert not fp16["search"]["met"]  # only every segment fp32 meets 1 - 1e-9
    assert "the model arrives int8 and its float parts in fp16 missed" in fp16["executes_fp32"]
    assert runner.manifest["validation"]["ok"]


def test_a_model_through_quantize_dynamic_keeps_its_float_parts_fp32_where_fp16_misses(tmp_path):
    """The same for ONNX Runtime's integer ops (``quantize_dynamic``): their float form
    reads int8 weights' values, which fp16 holds exactly; the float parts it rounds (here the
    offset's Sub) are what stays fp32 when fp16 misses."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import deploycomp

    source = tmp_path / "offset.onnx"
    onnx.save(ir.to_proto(_offset_model(4)), source)
    quantize_dynamic(str(source), str(tmp_path / "dynamic.onnx"), weight_type=QuantType.QInt8)
    np.savez(tmp_path / "val.npz", x=np.concatenate([s["x"] for s in _samples(4, 100)]))
    runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / "b", target="jetson-orin-nano", precision="fp16",
                              validation_data=tmp_path / "val.npz", no_fail=True)
    assert any("dynamic quantization" in a for a in runner.manifest["assumptions"])
    assert "the model arrives int8 and its float parts in fp16 missed" in runner.manifest["fp16"]["executes_fp32"]
    assert runner.manifest["validation"]["ok"]


def test_an_openvino_fp16_build_of_a_model_that_arrives_int8_keeps_its_float_weights_where_fp16_misses(tmp_path):
    """OpenVINO compresses every float constant of an fp16 bundle or none: a phase near 1500
    whose fractions carry the signal (float16's step there is 1) rounded away; such a
    model's weights are int8 already, so the bundle keeps its float weights f32 and says so."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import deploycomp

    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array((rng.standard_normal((64, 64)) / 8).astype(np.float32), "w"),
             numpy_helper.from_array((1500 + rng.uniform(-3, 3, (1, 64))).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Sin", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "biased", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "float.onnx")
    quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "dynamic.onnx"), weight_type=QuantType.QInt8)
    np.savez(tmp_path / "val.npz", x=(0.01 * rng.standard_normal((4, 64))).astype(np.float32))
    runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / "b", target="host", precision="fp16",
                              validation_data=tmp_path / "val.npz", no_fail=True)
    assert runner.manifest["fp16"]["executes_fp32"].endswith("they stay fp32, weights and execution")
    assert runner.manifest["validation"]["ok"]


def _table_model(layers: int = 8) -> ir.Model:
    """The offset model with a weight that needs float32: the offset is a table of values
    near 1000 with fractions float16 cannot hold (its step there is 0.5), which the input
    carries a small signal on."""
    model = _offset_model(layers)
    table = model.graph.initializers["offset"]
    table.const_value = ir.tensor(_table(), name="offset")
    return model


def _table() -> np.ndarray:
    return (1000 + np.random.default_rng(5).uniform(-0.2, 0.2, (1, 64))).astype(np.float32)


def _table_samples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [{"x": (_table() + 0.05 * rng.standard_normal((1, 64))).astype(np.float32)} for _ in range(n)]


def test_weights_rounded_keeps_the_weights_of_the_nodes_touching_fp32_tensors():
    """The fp16 reference of a backend that stores weights float16 and computes float32."""
    from deploycomp.fp16_search import nodes_keeping_fp32, weights_rounded

    model = _table_model(2)
    assert {n.name for n in model.graph if id(n) in nodes_keeping_fp32(model, ["h0"])} == {"centre", "mm0"}
    rounded = weights_rounded(model, [], lambda data: True)
    table = rounded.graph.initializers["offset"].const_value.numpy()
    assert np.array_equal(table, _table().astype(np.float16).astype(np.float32)) and not np.array_equal(table, _table())
    kept = weights_rounded(model, ["h0"], lambda data: True)  # the Sub writes h0: its table stays exact
    assert np.array_equal(kept.graph.initializers["offset"].const_value.numpy(), _table())
    w1 = model.graph.initializers["w1"].const_value.numpy()
    assert np.array_equal(kept.graph.initializers["w1"].const_value.numpy(), w1.astype(np.float16).astype(np.float32))
    assert np.array_equal(model.graph.initializers["offset"].const_value.numpy(), _table())  # a copy: the model as it was


def test_a_comparison_joins_a_segment_by_its_boolean_output():
    """A float table compared with an input (pitch bins against a requested range) needs
    float32 as much as a layer's weights: the comparison's output keeps it so."""
    model = _offset_model(2)
    bins = ir.Value(name="bins", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 64]),
                    const_value=ir.tensor(_table(), name="bins"))
    model.graph.register_initializer(bins)
    above = ir.node("GreaterOrEqual", [model.graph.node("mm0").outputs[0], bins], name="above")
    above.outputs[0].name, above.outputs[0].dtype = "above_bins", ir.DataType.BOOL
    model.graph.append(above)
    model.graph.outputs.append(above.outputs[0])
    parts = segments(model)
    assert any("above_bins" in tensors for tensors in parts.values())
    assert "above_bins" not in float_tensors(model)  # (what an fp16 build of a model that arrives int8 keeps)


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_an_fp16_build_whose_float16_weights_miss_keeps_a_segments_weights_float32(tmp_path, target):
    """OpenVINO (f16 weights, f32 execution on a CPU without native f16) and TFLite (f16
    weights, f32 arithmetic): nothing leaves fp16's range, the table's rounding alone
    misses the budget; the build keeps the table's segment's weights float32, the rest
    float16, and validates."""
    import json

    import deploycomp

    path = tmp_path / "table.onnx"
    onnx.save(ir.to_proto(_table_model(8)), path)
    stack = lambda samples: {"x": np.concatenate([s["x"] for s in samples])}  # noqa: E731
    np.savez(tmp_path / "calib.npz", **stack(_table_samples(8, 0)))
    np.savez(tmp_path / "val.npz", **stack(_table_samples(4, 100)))
    deploycomp.build(path, tmp_path / "b", target=target, precision="fp16",
                     calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    search, lowered = manifest["fp16"]["search"], manifest["backend"]["lowered"]
    assert manifest["validation"]["ok"] and search["met"] and search["fp32_segments"] == ["segment00"]
    # the segment's nodes and the readers of its last tensor keep their weights: mm0 and mm1
    assert search["trials"][0]["met"] and search["fp16_mac_share"] == pytest.approx(6 / 8)
    assert lowered["precision"] == "fp16"
    if target == "host":  # the table, w0 and w1 f32 in the .bin, the other six f16; executed f32
        assert lowered["fp32_weights"] == 3 and lowered["execute"] == "f32"
        assert "cannot keep single nodes fp32" in manifest["fp16"]["executes_fp32"]
    else:  # the Sub, mm0, its Tanh and mm1 keep their constants float32; float16: six layers' weights and
        # the zero bias they share (the plain fp16 build: 10, the table and the other two too)
        assert lowered["fp32_weight_nodes"] == 4 and lowered["ops"]["DEQUANTIZE"] == 7


def _cancelling_model(layers: int = 4) -> ir.Model:
    """A ratio over a difference of two nearly equal sums: in float32 the difference is
    0.2, well inside fp16's range; in fp16 both sums round to the same value near 1000, the
    difference to 0 and the ratio to Inf."""
    inits = [numpy_helper.from_array(np.array(1000.2, np.float32), "big"),
             numpy_helper.from_array(np.array(1000.0, np.float32), "base")]
    nodes = [helper.make_node("Add", ["x", "big"], ["c"], name="plus_big"),
             helper.make_node("Add", ["x", "base"], ["d"], name="plus_base"),
             helper.make_node("Sub", ["c", "d"], ["gap"], name="gap"),
             helper.make_node("Div", ["x", "gap"], ["h0"], name="ratio")]
    return _layers_after("cancel", nodes, inits, layers, seed=1)


def test_where_fp16_computes_inf_the_search_keeps_its_sources_fp32_first():
    """Nothing leaves fp16's range in float32, yet the fp16 build's outputs are NaN: the
    tensor that turns non-finite first stays fp32, then, as that is not enough (what it
    reads was rounded to 0 already), the tensors it reads, until the outputs are finite;
    here that alone meets the budget, with every MatMul still fp16."""
    from deploycomp.fp16_ranges import fp32_tensors as out_of_range
    from deploycomp.fp16_search import nonfinite_sources

    model = _cancelling_model()
    rng = np.random.default_rng(3)
    calib = [{"x": rng.uniform(0.2, 0.3, (1, 64)).astype(np.float32)} for _ in range(6)]
    assert out_of_range(model, calib) == {}
    refs = ort_outputs(model, calib)
    assert not np.isfinite(ort_outputs(_reference(model, []), calib)[0]["h4"]).all()
    sources, gots = nonfinite_sources(model, _reference, [], calib)
    assert sources[0] == "h0" and {"gap", "c", "d"} <= set(sources) and not any(s.startswith("m") for s in sources)
    # the last, finite run's outputs come with them: those of the fp16 reference with them fp32
    again = ort_outputs(_reference(model, sources), calib)
    assert len(gots) == len(calib) and all(np.allclose(g["h4"], a["h4"]) for g, a in zip(gots, again))

    def meets(tensors: list[str]) -> Verdict:
        return Verdict(fidelity_met(compare_outputs(refs, ort_outputs(_reference(model, tensors), calib)), FP16))

    tensors, record = search_fp32_segments(model, _reference, [], calib, refs, meets)
    assert record["met"] and record["fp32_segments"] == [] and record["nonfinite_kept_fp32"] == sources
    assert record["fp16_mac_share"] == pytest.approx(3 / 4)  # mm0 reads h0: fp32; the other three fp16
