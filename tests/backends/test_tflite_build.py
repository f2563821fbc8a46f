"""``deploycomp build --target <tflite profile>`` end to end on a small graph: the bundle,
the manifest, the runner, and the errors a user meets."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

import deploycomp
from deploycomp.errors import BudgetError, UnsupportedError

pytest.importorskip("ai_edge_litert", reason="TFLite tests need the tflite extra (ai-edge-litert)")


def test_tflite_bundle_runs_in_original_layout(tiny_conv, tmp_path):
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="raspberry-pi-5", precision="fp16")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    lowered = manifest["backend"]["lowered"]
    assert lowered["format"] == "tflite" and lowered["precision"] == "fp16" and lowered["transposes"] == 0
    assert lowered["ops"]["CONV_2D"] == 1 and lowered["ops"]["FULLY_CONNECTED"] == 1
    assert "RELU" not in lowered["ops"], "Relu must fold into the conv's fused activation"
    assert manifest["validation"]["ok"] and manifest["validation"]["latency_estimate"]["kind"] == "roofline estimate"
    assert manifest["measured"]["latency_here"]["median_ms"] > 0
    # fp16 weights, float32 arithmetic: the estimate's compute at the fp32 peak (a probe's
    # Pi 5 estimate had used the fp16 peak, twice it, for arithmetic it never does)
    est = manifest["validation"]["latency_estimate"]
    assert est["peak"] == "fp32: float16 weights, float32 arithmetic"
    fp32 = deploycomp.build(tiny_conv, tmp_path / "f", target="raspberry-pi-5", precision="fp32").manifest
    assert est["compute_ms"] == pytest.approx(fp32["validation"]["latency_estimate"]["compute_ms"])
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    probs = runner.run({"x": x})["probs"]
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1) < 1e-3


def test_coral_int8_build_lists_the_ops_that_would_fall_back_to_the_cpu(tiny_conv, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).random((12, 3, 16, 16), dtype=np.float32))
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="coral-edgetpu", precision="int8",
                              calibration=calib, no_fail=True)
    lowered = runner.manifest["backend"]["lowered"]
    assert runner.manifest["quantization"]["policy"] == "tflite"
    assert lowered["int8_ops"] >= 2, lowered  # the conv (Relu fused) and the fully-connected layer
    assert "SOFTMAX" not in lowered["float_ops"] or "SOFTMAX" in lowered["edgetpu_cpu_fallback"]
    assert lowered["edgetpu_cpu_fallback"].startswith(("none", "the Edge TPU compiler maps only int8 ops"))
    assert runner.info["executed_precision"].startswith("int8")
    # full integer I/O by default for the Edge TPU: int8 tensors in and out of the .tflite,
    # while the bundle runner still takes and returns float32 in ONNX layout
    assert lowered["int8_io"] is True
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "b" / "model.tflite"))
    assert [d["dtype"] for d in interpreter.get_input_details()] == [np.int8]
    # a Softmax output holds [0, 1] in TFLite's own encoding: calibrated, a classifier's
    # probabilities above 0.772 had all come back as 0.772
    scale, zero = interpreter.get_output_details()[0]["quantization"]
    assert (scale, zero) == (pytest.approx(1 / 256), -128)
    # and the manifest says what a program running the .tflite alone needs to know of it
    artifact = runner.manifest["backend"]["runtime"]["artifact_io"]
    x, probs = artifact["inputs"][0], artifact["outputs"][0]
    assert (x["dtype"], x["shape"], x["perm_from_onnx"]) == ("int8", [1, 16, 16, 3], [0, 2, 3, 1])
    assert x["quantization"]["scale"] == pytest.approx(interpreter.get_input_details()[0]["quantization"][0])
    assert (probs["dtype"], probs["quantization"]["zero_point"]) == ("int8", -128)
    assert [d["dtype"] for d in interpreter.get_output_details()] == [np.int8]
    assert [d["name"] for d in interpreter.get_output_details()] == ["probs"]
    x = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
    probs = runner.run({"x": x})["probs"]
    assert probs.dtype == np.float32 and abs(float(probs.sum()) - 1) < 0.05


def test_coral_builds_its_own_precision_and_warns_when_the_cpu_would_run_most_of_it(tmp_path, caplog):
    """Without --precision the Edge TPU builds int8, its only precision (fp32, the default,
    was refused); a model whose ops mostly stay float (a recurrent layer unrolled: here an
    LSTM) is built and warned about, as the accelerator would run little of it."""
    import logging

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal((1, 32, 8)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((1, 32, 8)) * 0.3).astype(np.float32), "R"),
             numpy_helper.from_array(np.array([12, 8], np.int64), "shape"),
             numpy_helper.from_array((rng.standard_normal((8, 4)) * 0.3).astype(np.float32), "fc")]
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["seq"], hidden_size=8),
             helper.make_node("Reshape", ["seq", "shape"], ["s"]), helper.make_node("MatMul", ["s", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [12, 1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [12, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "rnn.onnx")
    data = [{"x": rng.standard_normal((12, 1, 8)).astype(np.float32)} for _ in range(12)]
    with caplog.at_level(logging.WARNING, logger="deploycomp.pipeline"):
        runner = deploycomp.build(tmp_path / "rnn.onnx", tmp_path / "b", target="coral-edgetpu",
                                  calibration=data, no_fail=True)
    assert runner.manifest["precision"] == "int8"
    lowered = runner.manifest["backend"]["lowered"]
    assert lowered["int8_ops"] < sum(n for op, n in lowered["ops"].items() if op not in ("QUANTIZE", "DEQUANTIZE")) / 2
    assert any("would run on the host CPU, not the Edge TPU" in r.getMessage() for r in caplog.records)


def test_coral_builds_a_model_whose_tail_its_compiler_leaves_to_the_cpu(tmp_path, caplog):
    """The Edge TPU compiler runs a graph up to its first op with no Edge TPU form (here a
    Div, as in YOLOv8n's box decoding) and hands it and every op after it to the host CPU.
    Such a model had been refused whole; it builds, the split is recorded and said, and
    the latency estimate, the device's part alone, says it is a lower bound."""
    import logging

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32), "w2"),
             numpy_helper.from_array(np.full((1, 8, 1, 1), 2.5, np.float32), "d")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"), helper.make_node("Div", ["r", "d"], ["h"], name="div"),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    data = [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(12)]
    with caplog.at_level(logging.WARNING, logger="deploycomp.pipeline"):
        runner = deploycomp.build(tmp_path / "m.onnx", tmp_path / "b", target="coral-edgetpu", calibration=data,
                                  no_fail=True)
    split = runner.manifest["backend"]["lowered"]["cpu_split"]
    assert (split["op"], split["first_node"], split["cpu_nodes"]) == ("Div", "div", 2)
    assert 0.8 < split["device_mac_share"] < 1  # conv1 (216 MACs a pixel) on the device, conv2 (32) not
    assert any("hands Div node 'div' and the 1 nodes after it to the host CPU" in r.getMessage() for r in caplog.records)
    estimate = runner.manifest["validation"]["latency_estimate"]
    assert estimate["lower_bound"] and estimate["not_counted"]["nodes_on_the_host_cpu"] == 2
    # another TFLite target has no such split
    fp32 = deploycomp.build(tmp_path / "m.onnx", tmp_path / "p", target="raspberry-pi-5", precision="fp32")
    assert "cpu_split" not in fp32.manifest["backend"]["lowered"]


def test_int8_io_needs_an_int8_tflite_build(tiny_conv, tmp_path):
    with pytest.raises(UnsupportedError, match="--int8-io needs --precision int8 on a TFLite target"):
        deploycomp.build(tiny_conv, tmp_path / "b", target="raspberry-pi-5", int8_io=True)
    assert not (tmp_path / "b").exists()


def test_op_without_tflite_lowering_is_named_before_writing(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["y"], name="nz")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [2, None])],
    )
    path = tmp_path / "nz.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UnsupportedError, match=r"raspberry-pi-5 \(tflite\) cannot run op\(s\) NonZero"):
        deploycomp.build(path, tmp_path / "out", target="raspberry-pi-5")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep_float", [[], ["conv"]])
def test_int8_io_takes_an_int8_input_whatever_reads_it(tiny_conv, tmp_path, keep_float):
    """A tf2onnx model's NHWC input goes through a Transpose before its first Conv, and the
    search may keep that Conv float: either way the full-integer .tflite takes int8 (MTCNN's
    O-Net had kept a float32 input while its manifest said int8 I/O)."""
    import onnx
    from onnx import helper

    proto = onnx.load(tiny_conv)
    graph = proto.graph
    x = graph.input[0]
    dims = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]  # N, C, H, W
    nhwc = helper.make_tensor_value_info("x_nhwc", onnx.TensorProto.FLOAT, [dims[0], dims[2], dims[3], dims[1]])
    graph.node.insert(0, helper.make_node("Transpose", ["x_nhwc"], ["x_nchw"], perm=[0, 3, 1, 2]))
    for node in graph.node[1:]:
        node.input[:] = ["x_nchw" if i == x.name else i for i in node.input]
    graph.input.remove(x)
    graph.input.insert(0, nhwc)
    onnx.save(proto, tmp_path / "nhwc.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x_nhwc=rng.random((12, 1, dims[2], dims[3], dims[1]), dtype=np.float32))
    runner = deploycomp.build(tmp_path / "nhwc.onnx", tmp_path / "b", target="android-arm64", precision="int8",
                              calibration=tmp_path / "calib.npz", int8_io=True, keep_float=keep_float, no_fail=True)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "b" / "model.tflite"))
    assert [d["dtype"] for d in interpreter.get_input_details()] == [np.int8]
    assert runner.manifest["backend"]["lowered"]["int8_io"] is True and runner.manifest["validation"]["ok"]
    # the input arrives channels-last already: stored as given, no permutation to apply
    assert "perm_from_onnx" not in runner.manifest["backend"]["runtime"]["artifact_io"]["inputs"][0]


def test_int8_inputs_that_the_model_casts_to_ids_are_named_in_the_miss(tmp_path):
    """A Thai segmenter's character ids come as floats and are cast to int64 for its
    embedding: --int8-io rounds them to int8 steps (cosine 0.197), and the miss had
    advised calibrating on inputs like them. It names the inputs and the flag."""
    from onnx import TensorProto as T, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.random((40, 8), dtype=np.float32), "table")
    nodes = [helper.make_node("Cast", ["x"], ["ids"], to=T.INT64),
             helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Relu", ["e"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 6, 8])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ids.onnx")
    data = [{"x": rng.integers(1, 40, (1, 6)).astype(np.float32)} for _ in range(12)]
    with pytest.raises(BudgetError, match=r"input\(s\) x are cast to integers in the model \(ids\?\), and --int8-io "
                                          r"rounds them to int8 steps: build without --int8-io"):
        deploycomp.build(tmp_path / "ids.onnx", tmp_path / "b", target="android-arm64", precision="int8",
                         int8_io=True, calibration=data)


def test_an_int8_output_whose_entries_span_different_ranges_is_said(real_model):
    """YOLOv8n's output0 holds boxes in pixels (0..320) beside class scores in [0, 1]: one
    int8 encoding steps by 1.25 there, every score read 0 in an Edge TPU build, and its box
    budget missed with every layer float and no word of why. A missed build with int8
    outputs names the output and --float-io; a classifier's probabilities, one range, do
    not get the clause, nor does a build with float outputs."""
    import onnxruntime as ort

    from deploycomp.examples import EXAMPLES
    from deploycomp.ir import load_model
    from deploycomp.pipeline import BuildOptions, _int8_io_hint
    from deploycomp.sample_data import yolo_samples
    from deploycomp.targets import load_target

    coral = load_target("coral-edgetpu")
    path = real_model("yolov8n")
    session = ort.InferenceSession(str(path))
    refs = [{"output0": session.run(None, {"images": x})[0]} for x in yolo_samples(EXAMPLES["yolov8n"].shape)[:3]]
    model = load_model(path).model
    opts = BuildOptions(model=path, out=path.parent / "unused", target="coral-edgetpu", precision="int8")
    said = _int8_io_hint(opts, coral, model, refs)
    assert "output output0's entries span ranges one int8 encoding cannot hold" in said and "--float-io" in said
    opts.int8_io = False
    assert _int8_io_hint(opts, coral, model, refs) == ""
    probs = [{"p": np.array([[0.9, 0.05, 0.05]], np.float32)}, {"p": np.array([[0.1, 0.8, 0.1]], np.float32)}]
    assert _int8_io_hint(BuildOptions(model=path, out=path, target="coral-edgetpu", precision="int8"), coral, model,
                         probs) == ""
