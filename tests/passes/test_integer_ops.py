"""ONNX Runtime's dynamic quantization (ConvInteger / MatMulInteger) becomes float ops that
compute the same: the int8 weights' values, the input rounded per call as ONNX defines it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import deploycomp
from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes


@pytest.fixture(params=[False, True], ids=["per-tensor", "per-channel"])
def dynamic_int8(request, tmp_path):
    """A conv net through ``quantize_dynamic`` (what users download as "-quantized")."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
               numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "w2"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 4])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8,
                     per_channel=request.param, op_types_to_quantize=["Conv", "MatMul"])
    return tmp_path / "dynamic.onnx"


def test_integer_ops_become_float_ops_on_the_int8_weights(dynamic_int8, tmp_path):
    before = Counter(n.op_type for n in onnx.load(dynamic_int8).graph.node)
    assert before["ConvInteger"] == 1 and before["MatMulInteger"] == 1
    model, _ = run_passes(load_model(dynamic_int8).model, build_pipeline("default", {"x": (1, 3, 16, 16)}))
    ops = Counter(n.op_type for n in model.graph)
    assert not ops.keys() & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "Cast"}
    assert ops["Round"] == 4  # each quantized input's zero point and values, rounded as ONNX does
    assert ops["Conv"] == 1 and ops["MatMul"] == 1 and [v.name for v in model.graph.outputs] == ["logits"]
    # the weights are the int8 values less their zero points, exactly; the scales stay in the model's Mul
    proto = onnx.load(dynamic_int8)
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    conv = next(n for n in model.graph if n.op_type == "Conv")
    want = init["w_quantized"].astype(np.float64) - init["w_zero_point"].reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(conv.inputs[1].const_value.numpy(), want)
    save_model(model, tmp_path / "after.onnx")
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    integer = ort.InferenceSession(str(dynamic_int8)).run(None, {"x": x})[0]
    floats = ort.InferenceSession(str(tmp_path / "after.onnx")).run(None, {"x": x})[0]
    # the input rounded per call as DynamicQuantizeLinear does, integer products summed exactly (below 2^24):
    # the integer ops' values to the bit
    np.testing.assert_array_equal(floats, integer)


@pytest.mark.parametrize("target", ["android-arm64", "jetson-orin-nano"])
def test_targets_without_integer_ops_build_it(dynamic_int8, tmp_path, target):
    """TFLite and TensorRT refused ConvInteger; the build now says how it took the model."""
    runner = deploycomp.build(dynamic_int8, tmp_path / "out", target=target, no_fail=True)
    assert any("dynamic quantization (2 ConvInteger/MatMulInteger): 2 rewritten" in note
               for note in runner.manifest["assumptions"])
    assert runner.manifest["validation"]["outputs"]["logits"]["cosine"] > 0.999


def test_weights_stored_as_constant_nodes_are_rounded_here_and_rewritten(tmp_path, real_model):
    """A Paddle export stores its weights as ``Constant`` nodes, which ``quantize_dynamic``
    rounds at run time like any input (a ``DynamicQuantizeLinear`` per weight). PP-OCR's
    text classifier that way: every one of its 53 ConvInteger becomes a float Conv (the
    constant folder had left 4, whose weights it found too large), each weight rounded as
    ONNX Runtime rounds it, and TFLite builds the model (it refused the integer ops)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(real_model("ppocr-cls")), str(tmp_path / "dynamic.onnx"), weight_type=QuantType.QInt8)
    before = Counter(n.op_type for n in onnx.load(tmp_path / "dynamic.onnx").graph.node)
    assert before["ConvInteger"] == 53 and before["DynamicQuantizeLinear"] > 53  # weights rounded too
    model, _ = run_passes(load_model(tmp_path / "dynamic.onnx").model,
                          build_pipeline("default", {"x": (1, 3, 48, 192)}))
    ops = Counter(n.op_type for n in model.graph)
    assert not ops.keys() & {"ConvInteger", "DynamicQuantizeLinear"}
    save_model(model, tmp_path / "after.onnx")
    x = np.random.default_rng(4).random((1, 3, 48, 192), dtype=np.float32)
    integer = ort.InferenceSession(str(tmp_path / "dynamic.onnx")).run(None, {"x": x})[0]
    floats = ort.InferenceSession(str(tmp_path / "after.onnx")).run(None, {"x": x})[0]
    # not to the bit: the float passes around the integer ops (a BatchNorm folded) move a value by
    # an ulp (first at the first HardSwish, 5e-7), which a later per-call rounding can flip by a step
    np.testing.assert_allclose(floats, integer, rtol=0, atol=1e-2)
    runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / "out", target="android-arm64",
                              inputs={"x": (1, 3, 48, 192)}, no_fail=True)
    assert any("(53 ConvInteger/MatMulInteger): 53 rewritten" in note for note in runner.manifest["assumptions"])
    assert runner.manifest["validation"]["ok"]


def _wide_dynamic(tmp_path, signs: bool = False):
    """``dynamic.onnx``: one MatMul of 4096 positive inputs by positive weights, through
    ``quantize_dynamic``; returns the random generator that made it, to draw inputs from.
    ``signs``: the last 8 of its 16 output columns read negated weights, so that the output
    is not offset-dominated (all 16 near one value: then judged about its mean), each
    column's sums still of one sign."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(6)
    weights = rng.uniform(0.5, 1.0, (4096, 16)).astype(np.float32)
    if signs:
        weights[:, 8:] *= -1
    w = numpy_helper.from_array(weights, "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "wide",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4096])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8)
    return rng


def test_int8_aims_its_search_at_what_the_float_form_reaches(tmp_path):
    """The float form is the closest a build of such a model can come to ONNX Runtime's
    integer ops: exact while integer sums stay below 2^24, rounded past it (here 4096 all-
    positive products: sums near 1e8). Held to a budget it misses (cosine 1.0), the search
    aims at twice its distance (an unsearched all-int8 model ran into Inf on TFLite), and the
    error says why."""
    rng = _wide_dynamic(tmp_path)
    np.savez(tmp_path / "cal.npz", x=rng.uniform(0.5, 1.0, (8, 4096)).astype(np.float32))
    runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / "out", target="host", precision="int8",
                              calibration=tmp_path / "cal.npz", min_cosine=1.0, no_fail=True)
    quant = runner.manifest["quantization"]
    assert quant["search_relaxed"].startswith("the model's float form already misses the budget")
    assert quant["search_trials"] and not runner.manifest["validation"]["ok"]
    assert runner.manifest["validation"]["float_form_vs_onnxruntime_integer"]["y"]["cosine"] < 1.0


@pytest.mark.parametrize("backend", ["tflite", "tensorrt", "openvino"])
def test_int8_keeps_the_rounding_float_and_out_of_the_search(dynamic_int8, backend):
    """The rounding chains are the model's own int8 arithmetic: quantized in turn
    (TFLite's encoding takes every element-wise op, TensorRT's a two-input Add),
    ``round(x / s) + zp`` is no longer a rounding, and the search would rank each of
    their nodes. The layers reading the rounded input are quantized as any other."""
    from deploycomp.passes.integer_ops import is_rounding
    from deploycomp.quant.policy import policy_for
    from deploycomp.quant.qdq import quantizable_tensors, searchable_nodes

    model, _ = run_passes(load_model(dynamic_int8).model, build_pipeline("default", {"x": (1, 3, 16, 16)}))
    rounding = [n for n in model.graph if is_rounding(n)]
    # every op of the two chains (one per quantized input) is marked as such, nothing else
    assert len(rounding) == 32 and {n.op_type for n in model.graph if not is_rounding(n)} <= \
        {"Conv", "Relu", "GlobalAveragePool", "Flatten", "Reshape", "MatMul", "Mul", "Add"}
    policy = policy_for(backend)
    readers = {n.op_type for uses in quantizable_tensors(model, policy).values() for n, _ in uses}
    assert not any(is_rounding(n) for uses in quantizable_tensors(model, policy).values() for n, _ in uses)
    assert {"Conv", "MatMul"} <= readers
    assert {n.op_type for n in searchable_nodes(model, policy)} <= {"Conv", "MatMul", "Relu", "GlobalAveragePool",
                                                                      "Flatten", "Reshape", "Mul", "Add"}
    # the mark survives the file the build's later steps read
    again = load_model_from(model)
    assert sum(map(is_rounding, again.graph)) == len(rounding)


def load_model_from(model):
    import onnx_ir as ir
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


@pytest.mark.parametrize("reader", ["MatMul", "Tanh"])
def test_a_quantized_embedding_lookup_becomes_a_float_one(tmp_path, reader):
    """``quantize_dynamic`` stores an embedding table u8: an integer op reads the gathered
    rows directly (``MatMulInteger``), anything else through a ``DequantizeLinear``, whose
    u8 zero point TensorRT's parser refused (an Arabic diacritizer). Gathering from the
    dequantized table computes the same, exactly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "table"),
               numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed")]
    if reader == "Tanh":
        nodes.append(helper.make_node("Tanh", ["e"], ["t"], name="tanh"))
    nodes.append(helper.make_node("MatMul", ["t" if reader == "Tanh" else "e", "w"], ["y"], name="fc"))
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6, 4])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Gather", "MatMul"])
    before = Counter(n.op_type for n in onnx.load(tmp_path / "dynamic.onnx").graph.node)
    assert before["DequantizeLinear"] == (reader == "Tanh") and before["MatMulInteger"] == 1
    model, _ = run_passes(load_model(tmp_path / "dynamic.onnx").model, build_pipeline("default", {"ids": (1, 6)}))
    ops = Counter(n.op_type for n in model.graph)
    assert not ops.keys() & {"DequantizeLinear", "MatMulInteger"} and ops["Gather"] == 1
    assert next(n for n in model.graph if n.op_type == "Gather").inputs[0].dtype == ir.DataType.FLOAT
    save_model(model, tmp_path / "after.onnx")
    ids = rng.integers(0, 50, (1, 6))
    want = ort.InferenceSession(str(tmp_path / "dynamic.onnx")).run(None, {"ids": ids})[0]
    got = ort.InferenceSession(str(tmp_path / "after.onnx")).run(None, {"ids": ids})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / "out", target="jetson-orin-nano", no_fail=True)
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] > 0.999


def _lookup_model(tmp_path) -> str:
    """An embedding stored u8 as ``quantize_dynamic`` leaves it, read twice: dequantized
    as gathered, and transposed first (an LSTM's time-major input: the Arabic diacritizer's
    second lookup); plus a conv whose weights are a QDQ model's own per-tensor encoding."""
    rng = np.random.default_rng(5)
    table = numpy_helper.from_array(rng.integers(0, 256, (50, 8)).astype(np.uint8), "table_q")
    w_q = numpy_helper.from_array(rng.integers(-127, 128, (4, 8, 1)).astype(np.int8), "w_q")
    consts = [table, w_q, numpy_helper.from_array(np.array(0.02, np.float32), "s"),
              numpy_helper.from_array(np.array(131, np.uint8), "zp"),
              numpy_helper.from_array(np.array(0.05, np.float32), "ws")]
    nodes = [helper.make_node("Gather", ["table_q", "ids"], ["g"], name="embed"),
             helper.make_node("DequantizeLinear", ["g", "s", "zp"], ["e"], name="dq_rows"),
             helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0, 2], name="time_major"),
             helper.make_node("DequantizeLinear", ["gt", "s", "zp"], ["et"], name="dq_time_major"),
             helper.make_node("Tanh", ["e"], ["y"], name="tanh"),
             helper.make_node("DequantizeLinear", ["w_q", "ws"], ["w"], name="dq_weights"),
             helper.make_node("Transpose", ["et"], ["x"], perm=[1, 2, 0], name="channels"),
             helper.make_node("Conv", ["x", "w"], ["z"], name="conv")]
    graph = helper.make_graph(nodes, "lookup", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6, 8]),
                               helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4, 6])], consts)
    path = tmp_path / "lookup.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_a_quantized_table_moved_before_its_dequantize_becomes_a_float_one(tmp_path):
    """A per-tensor DequantizeLinear commutes with the moves between it and its table
    (Gather, Transpose, Reshape...): both lookups read one float table, exactly; a weight's
    own DequantizeLinear (a QDQ model's encoding, no lookup) stays."""
    path = _lookup_model(tmp_path)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"ids": (1, 6)}))
    dqs = [n for n in model.graph if n.op_type == "DequantizeLinear"]
    assert [n.inputs[0].name for n in dqs] == ["w_q"]
    gathers = [n for n in model.graph if n.op_type == "Gather"]
    assert len(gathers) == 1 and gathers[0].inputs[0].dtype == ir.DataType.FLOAT
    save_model(model, tmp_path / "after.onnx")
    ids = np.array([[0, 7, 49, 7, 3, 21]])
    want = ort.InferenceSession(str(path)).run(None, {"ids": ids})
    got = ort.InferenceSession(str(tmp_path / "after.onnx")).run(None, {"ids": ids})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_a_tflite_fp16_build_halves_the_int8_weights_exactly(tmp_path):
    """The float form's weights are int8 values, which float16 holds exactly; its scales and
    biases are the model's float parts and stay float32 (rounded to float16, a table
    detector's binarized map lost 0.02 of cosine), so fp16 computes what fp32 does."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(7)
    weights = [numpy_helper.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")], "c32",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32, 16, 16])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8, per_channel=True)
    x = rng.random((4, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    outs, sizes = {}, {}
    for precision in ("fp32", "fp16"):
        runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / precision, target="android-arm64",
                                  precision=precision, validation_data=tmp_path / "val.npz")
        outs[precision] = runner.run({"x": x[:1]})["y"]
        sizes[precision] = sum(a["bytes"] for a in runner.manifest["artifacts"])
        if precision == "fp16":
            assert runner.manifest["backend"]["lowered"]["fp16_kept_fp32_constants"]  # the 32 biases
    np.testing.assert_array_equal(outs["fp16"], outs["fp32"])
    assert sizes["fp16"] < sizes["fp32"] - 32 * 27  # the 864 weights went float16


def test_int8_judges_on_the_samples_the_float_form_can_meet(tmp_path):
    """Where the float form's rounding spends the budget on a few calibration samples only
    (here the dense inputs, whose integer sums pass 2^24; the sparse ones stay exact), the
    search sets those aside and judges on the rest at the budget itself, not at twice the
    worst sample's distance; the manifest says how many it set aside."""
    rng = _wide_dynamic(tmp_path, signs=True)
    x = rng.uniform(0.5, 1.0, (8, 4096)).astype(np.float32)
    x[2:, 300:] = 0.0  # six sparse samples: sums of 300 products, exact in float32
    np.savez(tmp_path / "cal.npz", x=x)
    # TensorRT's check here is ONNX Runtime on the float form: dense samples 1 - 2.4e-15,
    # sparse ones 1 - 1e-16 at most; a quarter of this budget is 1e-15
    runner = deploycomp.build(tmp_path / "dynamic.onnx", tmp_path / "out", target="jetson-orin-nano",
                              precision="int8", calibration=tmp_path / "cal.npz", validation_data=tmp_path / "cal.npz",
                              min_cosine=1 - 4e-15, no_fail=True)
    quant = runner.manifest["quantization"]
    assert quant["judged_without"]["samples"] == 2 and "search_relaxed" not in quant
    assert quant["budget_judged_on_samples"] == 6
