"""ONNX Runtime's fused ``com.microsoft`` ops as core ops in the TFLite and TensorRT
pipelines: outputs as ONNX Runtime gives them for the fused op, and no ``com.microsoft``
node left; OpenVINO's pipeline keeps them (it runs them itself)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from tests.passes._harness import optimize_and_compare

H = 16
R = np.random.default_rng(0)


def _model(nodes, inputs, outputs, weights, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])


def ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, domain="com.microsoft", **attrs)


W = {"b": R.standard_normal(H), "gamma": R.standard_normal(H), "beta": R.standard_normal(H),
     "w": R.standard_normal((H, H)) * 0.3}
CASES = {
    "Gelu": ([ms("Gelu", ["x"], ["y"])], ["y"]),
    "BiasGelu": ([ms("BiasGelu", ["x", "b"], ["y"])], ["y"]),
    "FastGelu with bias": ([ms("FastGelu", ["x", "b"], ["y"])], ["y"]),
    "FastGelu": ([ms("FastGelu", ["x"], ["y"])], ["y"]),
    "QuickGelu": ([ms("QuickGelu", ["x"], ["y"], alpha=1.5)], ["y"]),
    "SkipLayerNormalization, beta, bias, the sum out": (
        [ms("SkipLayerNormalization", ["x", "s", "gamma", "beta", "b"], ["y", "", "", "sum"], epsilon=1e-5)],
        ["y", "sum"]),
    "SkipLayerNormalization without beta": (
        [ms("SkipLayerNormalization", ["x", "s", "gamma"], ["y"], epsilon=1e-5)], ["y"]),
    "SkipSimplifiedLayerNormalization": (
        [ms("SkipSimplifiedLayerNormalization", ["x", "s", "gamma"], ["y"], epsilon=1e-6)], ["y"]),
    "FusedMatMul transposed, alpha": ([ms("FusedMatMul", ["x", "s"], ["y"], transB=1, alpha=0.5)], ["y"]),
}


@pytest.mark.parametrize("opset", [17, 18], ids=["opset 17", "opset 18"])  # ReduceMean's axes: attribute, input
@pytest.mark.parametrize("case", CASES)
def test_a_fused_contrib_op_becomes_core_ops(tmp_path, case, opset):
    nodes, outputs = CASES[case]
    shape = [H, H] if case.startswith("FusedMatMul") else [2, 8, H]
    model = _model(nodes, [("x", shape), ("s", shape)], [(o, shape) for o in outputs], W, opset)
    feeds = {"x": R.standard_normal(shape).astype(np.float32), "s": R.standard_normal(shape).astype(np.float32)}
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline="tflite")
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_a_skip_layer_norm_whose_training_outputs_are_read_stays(tmp_path):
    model = _model([ms("SkipLayerNormalization", ["x", "s", "gamma"], ["y", "mean"], epsilon=1e-5)],
                   [("x", [2, 8, H]), ("s", [2, 8, H])], [("y", [2, 8, H]), ("mean", [2, 8, 1])], W)
    feeds = {"x": R.standard_normal((2, 8, H)).astype(np.float32), "s": R.standard_normal((2, 8, H)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model, feeds, pipeline="tflite")
    assert ops["SkipLayerNormalization"] == 1


SEQ, HEADS = 6, 4


def _attention_model(mask: str, **attrs) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(1)
    weights = {"w": rng.standard_normal((H, 3 * H)) * 0.3, "bias": rng.standard_normal(3 * H) * 0.1}
    ins = ["x", "w", "bias"] + (["mask"] if mask != "none" else [])
    node = ms("Attention", ins, ["y"], num_heads=HEADS, **attrs)
    inputs = [helper.make_tensor_value_info("x", T.FLOAT, [2, SEQ, H])]
    feeds = {"x": rng.standard_normal((2, SEQ, H)).astype(np.float32)}
    if mask == "2-D":
        inputs.append(helper.make_tensor_value_info("mask", T.INT32, [2, SEQ]))
        feeds["mask"] = np.array([[1] * SEQ, [1] * (SEQ - 2) + [0, 0]], np.int32)
    elif mask == "lengths":
        inputs.append(helper.make_tensor_value_info("mask", T.INT32, [2]))
        feeds["mask"] = np.array([SEQ, SEQ - 3], np.int32)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", T.FLOAT, [2, SEQ, H])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]), feeds


@pytest.mark.parametrize("mask, attrs", [("none", {}), ("2-D", {}), ("lengths", {}), ("none", {"unidirectional": 1}),
                                         ("2-D", {"scale": 0.2, "mask_filter_value": -1e4})],
                         ids=["no mask", "0/1 mask", "sequence lengths", "causal", "scale"])
def test_a_fused_attention_becomes_core_ops(tmp_path, mask, attrs):
    """ONNX Runtime's ``Attention`` (what its optimizer fuses a BERT layer's self-attention
    into): the QKV projection, per-head scaled softmax with the mask, and the heads joined."""
    model, feeds = _attention_model(mask, **attrs)
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline="tflite")
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_a_fused_embedding_layer_norm_becomes_core_ops(tmp_path):
    """``EmbedLayerNormalization``: word, position and segment embeddings summed and
    normalized; its ``mask_index`` (attended tokens per sequence) feeding an ``Attention``."""
    rng = np.random.default_rng(2)
    vocab, positions = 30, 16
    weights = {"words": rng.standard_normal((vocab, H)), "pos": rng.standard_normal((positions, H)),
               "segs": rng.standard_normal((2, H)), "gamma": rng.standard_normal(H), "beta": rng.standard_normal(H),
               "w": rng.standard_normal((H, 3 * H)) * 0.3, "bias": rng.standard_normal(3 * H) * 0.1}
    nodes = [ms("EmbedLayerNormalization", ["ids", "segments", "words", "pos", "segs", "gamma", "beta", "mask"],
                ["e", "index"], epsilon=1e-12),
             ms("Attention", ["e", "w", "bias", "index"], ["y"], num_heads=HEADS)]
    inputs = [helper.make_tensor_value_info(n, T.INT32, [2, SEQ]) for n in ("ids", "segments", "mask")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", T.FLOAT, [2, SEQ, H])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    feeds = {"ids": rng.integers(0, vocab, (2, SEQ)).astype(np.int32),
             "segments": np.array([[0] * 3 + [1] * 3, [0] * SEQ], np.int32),
             "mask": np.array([[1] * SEQ, [1] * 4 + [0] * 2], np.int32)}
    optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline="tflite")
    assert not [n for n in onnx.load(tmp_path / "after.onnx").graph.node if n.domain == "com.microsoft"]


def test_openvino_keeps_the_fused_ops_tensorrt_writes_them_out(tmp_path):
    model, feeds = _attention_model("2-D")
    (tmp_path / "ov").mkdir(), (tmp_path / "trt").mkdir()
    assert optimize_and_compare(tmp_path / "ov", model, feeds, pipeline="openvino")["Attention"] == 1
    assert "Attention" not in optimize_and_compare(tmp_path / "trt", model, feeds, rtol=1e-4, atol=1e-5,
                                                   pipeline="tensorrt")


def _dynamic_lstm(tmp_path, per_channel: bool):
    """A bidirectional LSTM through ``onnxruntime.quantization.quantize_dynamic``: a
    ``DynamicQuantizeLSTM`` on int8 weights stored ``[directions, input, 4 hidden]``. Also
    the float model with those weights' values (what the rewrite must equal)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(5)
    hidden, size, steps = 8, 6, 10
    w = rng.standard_normal((2, 4 * hidden, size)).astype(np.float32) * 0.4
    r = rng.standard_normal((2, 4 * hidden, hidden)).astype(np.float32) * 0.4
    b = rng.standard_normal((2, 8 * hidden)).astype(np.float32) * 0.1

    def lstm(w, r):
        graph = helper.make_graph(
            [helper.make_node("LSTM", ["x", "w", "r", "b"], ["y", "y_h", "y_c"], hidden_size=hidden,
                              direction="bidirectional")], "g",
            [helper.make_tensor_value_info("x", T.FLOAT, [steps, 1, size])],
            [helper.make_tensor_value_info(n, T.FLOAT, None) for n in ("y", "y_h", "y_c")],
            [numpy_helper.from_array(v, k) for k, v in {"w": w, "r": r, "b": b}.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    onnx.save(lstm(w, r), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", op_types_to_quantize=["LSTM"],
                     per_channel=per_channel, weight_type=QuantType.QInt8)
    quantized = onnx.load(tmp_path / "int8.onnx")
    node = next(n for n in quantized.graph.node if n.op_type == "DynamicQuantizeLSTM")
    const = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}

    def values(q, scale, zero):  # (per direction, or per direction and gate row)
        scale, zero = const[scale], const[zero]
        col = (lambda a: a.reshape(2, 1, -1)) if scale.ndim == 2 else (lambda a: a.reshape(2, 1, 1))
        return ((const[q].astype(np.float32) - col(zero.astype(np.float32))) * col(scale)).transpose(0, 2, 1)

    written = lstm(values(node.input[1], node.input[8], node.input[9]), values(node.input[2], node.input[10], node.input[11]))
    return quantized, written, rng.standard_normal((steps, 1, size)).astype(np.float32)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per direction", "per gate row"])
def test_a_dynamically_quantized_lstm_becomes_an_lstm_on_its_weights_values(tmp_path, per_channel):
    """ONNX Runtime's ``DynamicQuantizeLSTM`` (an LSTM through ``quantize_dynamic``: an
    Arabic diacritizer's two, which TFLite and TensorRT refused) is the LSTM on its int8
    weights' float values, transposed back to ONNX's layout; ONNX Runtime's kernel also
    rounds the input and the hidden state to u8 each step, which this float form does not."""
    import onnxruntime as ort

    from deploycomp.ir import load_model
    from deploycomp.passes import build_pipeline, run_passes

    quantized, written, x = _dynamic_lstm(tmp_path, per_channel)
    rewritten, _ = run_passes(load_model(tmp_path / "int8.onnx").model, build_pipeline("tensorrt", {"x": x.shape}))
    assert [n.op_type for n in rewritten.graph if n.op_type.endswith("LSTM")] == ["LSTM"]
    assert not [n for n in rewritten.graph if n.domain == "com.microsoft"]
    proto = ir.serde.serialize_model(rewritten).SerializeToString()
    got = ort.InferenceSession(proto).run(None, {"x": x})
    for a, b in zip(got, ort.InferenceSession(written.SerializeToString()).run(None, {"x": x})):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, ort.InferenceSession(quantized.SerializeToString()).run(None, {"x": x})):
        assert np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b) > 0.999  # u8 steps apart


def test_a_dynamically_quantized_lstm_builds_for_android(tmp_path):
    import deploycomp

    _, _, x = _dynamic_lstm(tmp_path, per_channel=False)
    runner = deploycomp.build(tmp_path / "int8.onnx", tmp_path / "b", target="android-arm64",
                              validation_data=[{"x": x * k} for k in (0.5, 1.0, 2.0)])
    assert runner.manifest["validation"]["ok"]  # (refused before: TFLite has no DynamicQuantizeLSTM)
    got = runner.run({"x": x})
    assert set(got) == {"y", "y_h", "y_c"} and got["y"].shape == (10, 2, 1, 8)


@pytest.mark.parametrize("target", ["android-arm64", "jetson-orin-nano"])
def test_a_model_saved_by_onnx_runtimes_extended_optimizer_builds(tmp_path, real_model, target):
    """PP-OCR's direction classifier as ONNX Runtime's extended level saves it (each Conv
    and its activation one ``FusedConv``, HardSigmoid included): written back as Conv and
    the activation, its outputs ONNX Runtime's on the saved file; TFLite and TensorRT had
    refused ``FusedConv``."""
    import onnxruntime as ort

    import deploycomp
    from deploycomp.sample_data import ocr_cls_samples

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(real_model("ppocr-cls")), options, providers=["CPUExecutionProvider"])
    fused = onnx.load(tmp_path / "fused.onnx")
    activations = {a.s.decode() for n in fused.graph.node if n.op_type == "FusedConv" for a in n.attribute
                   if a.name == "activation"}
    assert {"Relu", "HardSigmoid"} <= activations
    x = np.concatenate(ocr_cls_samples((1, 3, 48, 192)))
    runner = deploycomp.build(tmp_path / "fused.onnx", tmp_path / "b", target=target, inputs=["x:1x3x48x192"],
                              precision="fp32", validation_data={"x": x[:, None]})
    assert runner.manifest["validation"]["ok"]
    want = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x[:1]})
    np.testing.assert_allclose(next(iter(runner.run({"x": x[:1]}).values())), want[0], atol=1e-4)


@pytest.mark.parametrize("pipeline", ["default", "openvino", "tflite"])
@pytest.mark.parametrize("opset,axis", [(12, -1), (18, 1)], ids=["opset 12, last axis", "opset 18, axes 1.."])
def test_onnx_runtimes_rms_norm_in_the_default_domain_becomes_core_ops(tmp_path, pipeline, opset, axis):
    """ONNX Runtime's extended optimizer writes its RMS norm as ``SimplifiedLayerNormalization``
    in the *default* domain, which ONNX does not define: a file it saved had been refused
    on every target ("unknown op"), and in the default pipeline would have been written
    out as an op no runtime reads (the loader takes it as a ``com.microsoft`` op)."""
    gamma = R.standard_normal([H] if axis == -1 else [8, H])
    node = helper.make_node("SimplifiedLayerNormalization", ["x", "gamma"], ["y"], axis=axis, epsilon=1e-5,
                            stash_type=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", T.FLOAT, [2, 8, H])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2, 8, H])],
                              [numpy_helper.from_array(gamma.astype(np.float32), "gamma")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {"x": (R.standard_normal([2, 8, H]) * 3).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5, pipeline=pipeline)
    assert "SimplifiedLayerNormalization" not in ops and ops["Sqrt"] == 1


def test_openvino_writes_out_the_fused_convs_its_int8_quantizes(tmp_path):
    """A ``FusedConv`` (ONNX Runtime's extended level) is a Conv its activation after it:
    OpenVINO reads it, but int8 quantizes only ``Conv``: an ORT-optimized PP-OCR cls had
    built "int8" on host with 24 of its 54 convolutions float, unsaid."""
    w = R.standard_normal((4, 3, 3, 3)) * 0.3
    nodes = [ms("FusedConv", ["x", "w"], ["y"], activation="Relu", pads=[1, 1, 1, 1], kernel_shape=[3, 3])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    ops = optimize_and_compare(tmp_path, model, {"x": R.standard_normal((1, 3, 8, 8)).astype(np.float32)},
                               pipeline="openvino")
    assert ops["Conv"] == 1 and "FusedConv" not in ops
