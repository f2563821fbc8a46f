"""ONNX Runtime's QOperator format (QLinearConv, com.microsoft QLinearAdd, ...) becomes the
QDQ form of the same arithmetic, and such a model builds on every target."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import deploycomp
from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes


def _saturating_add(path):
    """u8 -> QLinearAdd (a constant 200 at scale 0.05 added; output range [0, 6]) ->
    DequantizeLinear: most sums pass 6 and saturate (OpenVINO 2026.4 wrapped them)."""
    def c(name, value, dtype):
        return helper.make_tensor(name, dtype, [], [value])

    inits = [c("a_s", 0.1, TensorProto.FLOAT), c("a_zp", 128, TensorProto.UINT8), c("b", 200, TensorProto.UINT8),
             c("b_s", 0.05, TensorProto.FLOAT), c("b_zp", 0, TensorProto.UINT8), c("y_s", 6 / 255, TensorProto.FLOAT),
             c("y_zp", 0, TensorProto.UINT8)]
    nodes = [helper.make_node("QLinearAdd", ["a", "a_s", "a_zp", "b", "b_s", "b_zp", "y_s", "y_zp"], ["yq"],
                              domain="com.microsoft", name="add"),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_qlinear_add_becomes_dequantize_add_quantize_and_saturates_as_written(tmp_path):
    path = _saturating_add(tmp_path / "qadd.onnx")
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"a": (1, 256)}))
    ops = Counter(n.op_type for n in model.graph)
    assert "QLinearAdd" not in ops and ops["Add"] == 1 and ops["QuantizeLinear"] == 1
    save_model(model, tmp_path / "qdq.onnx")
    a = {"a": np.arange(256, dtype=np.uint8)[None]}
    want = ort.InferenceSession(str(path)).run(None, a)[0]
    np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "qdq.onnx")).run(None, a)[0], want)
    runner = deploycomp.build(path, tmp_path / "b", target="host", validation_data=[a, {"a": a["a"][:, ::-1].copy()}])
    np.testing.assert_allclose(runner.run(a)["y"], want, atol=1e-6)  # (OpenVINO's own QLinearAdd: 3.2 for 6.0)


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_a_model_quantized_in_qoperator_format_builds_on_every_target(tmp_path, real_model, target):
    """PP-OCR's text classifier through ``quantize_static(quant_format=QOperator)``: its
    QLinearConv, QLinearAdd and QLinearMul written as QDQ, its encodings kept and conformed
    per backend; TFLite and TensorRT refused the QLinear ops, OpenVINO ran them wrong."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from deploycomp.examples import EXAMPLES
    from deploycomp.sample_data import calibration_samples_for
    from tests.passes._harness import calibration_reader

    example = EXAMPLES["ppocr-cls"]
    samples = [{"x": np.asarray(s["x"])} for s in calibration_samples_for(example.inputs, "x", example.shape)][:8]
    proto = onnx.load(real_model("ppocr-cls"))
    for i, size in enumerate(example.shape):
        proto.graph.input[0].type.tensor_type.shape.dim[i].dim_value = size
    onnx.save(proto, tmp_path / "float.onnx")

    quantize_static(tmp_path / "float.onnx", tmp_path / "qop.onnx", calibration_reader(samples),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    ops = Counter(n.op_type for n in onnx.load(tmp_path / "qop.onnx").graph.node)
    assert ops["QLinearConv"] > 40 and ops["QLinearAdd"] > 10
    runner = deploycomp.build(tmp_path / "qop.onnx", tmp_path / "b", target=target, validation_data=samples[:4])
    assert runner.manifest["validation"]["ok"]
    assert any("arrives int8" in a for a in runner.manifest["assumptions"])


def test_a_split_on_the_integers_splits_the_dequantized_values(tmp_path):
    """QOperator leaves a Split on the quantized integers (YOLOv8n's C2f blocks): each part
    reads the dequantized values and is quantized again to the same encoding, as for the
    one-output moves; a Split left on uint8 kept the model's TFLite and TensorRT builds
    from conforming its encodings (both refused it)."""
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    z = helper.make_tensor("z", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("Split", ["xq"], ["p0", "p1"], axis=1, num_outputs=2, name="split"),
             helper.make_node("DequantizeLinear", ["p0", "s", "z"], ["y0"], name="dq0"),
             helper.make_node("DequantizeLinear", ["p1", "s", "z"], ["y1"], name="dq1"),
             helper.make_node("QLinearSigmoid", ["p1", "s", "z", "s", "z"], ["sq"], domain="com.microsoft", name="sig"),
             helper.make_node("DequantizeLinear", ["sq", "s", "z"], ["y2"], name="dq2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 8]) for n in ("y0", "y1", "y2")],
                              [s, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, tmp_path / "split.onnx")
    rewritten, _ = run_passes(load_model(tmp_path / "split.onnx").model, build_pipeline("default", {"x": (1, 4, 8)}))
    (split,) = [n for n in rewritten.graph if n.op_type == "Split"]
    assert split.inputs[0].dtype == onnx.TensorProto.FLOAT and all(o.dtype == TensorProto.FLOAT for o in split.outputs)
    save_model(rewritten, tmp_path / "qdq.onnx")
    x = {"x": np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32) * 3}
    for want, got in zip(ort.InferenceSession(str(tmp_path / "split.onnx")).run(None, x),
                         ort.InferenceSession(str(tmp_path / "qdq.onnx")).run(None, x)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_qgemm_becomes_dequantize_gemm_quantize(tmp_path, per_channel):
    """``com.microsoft`` ``QGemm`` (a MatMul + Add that ONNX Runtime fused into a Gemm,
    then quantized): its int32 bias at the inputs' scales; outputs as ONNX Runtime's own
    QGemm kernel gives them, quantized and float."""
    rng = np.random.default_rng(0)
    n, k = 6, 16
    w_scale = rng.uniform(0.01, 0.03, n if per_channel else ()).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "a_s"), numpy_helper.from_array(np.array(120, np.uint8), "a_zp"),
             numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "w"),
             numpy_helper.from_array(w_scale, "w_s"), numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zp"),
             numpy_helper.from_array(rng.integers(-2000, 2000, n).astype(np.int32), "c"),
             numpy_helper.from_array(np.array(0.1, np.float32), "y_s"), numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
    for quantized in (True, False):
        outs = ["y_s", "y_zp"] if quantized else []
        nodes = [helper.make_node("QuantizeLinear", ["x", "a_s", "a_zp"], ["xq"]),
                 helper.make_node("QGemm", ["xq", "a_s", "a_zp", "w", "w_s", "w_zp", "c", *outs], ["g"], alpha=1.0,
                                  domain="com.microsoft"),
                 *([helper.make_node("DequantizeLinear", ["g", "y_s", "y_zp"], ["y"])] if quantized else
                   [helper.make_node("Identity", ["g"], ["y"])])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        onnx.save(model, tmp_path / "qgemm.onnx")
        rewritten, _ = run_passes(load_model(tmp_path / "qgemm.onnx").model, build_pipeline("default", {"x": (3, k)}))
        assert "QGemm" not in {node.op_type for node in rewritten.graph}
        save_model(rewritten, tmp_path / "qdq.onnx")
        x = {"x": rng.standard_normal((3, k)).astype(np.float32)}
        want = ort.InferenceSession(str(tmp_path / "qgemm.onnx")).run(None, x)[0]
        got = ort.InferenceSession(str(tmp_path / "qdq.onnx")).run(None, x)[0]
        np.testing.assert_allclose(got, want, atol=1e-6 if quantized else 1e-4, rtol=1e-5)
