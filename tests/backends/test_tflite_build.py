"""``deploycomp build --target <tflite profile>`` end to end on a small graph: the bundle,
the manifest, the runner, and the errors a user meets."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

import deploycomp
from deploycomp.errors import UnsupportedError

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
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    probs = runner.run({"x": x})["probs"]
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1) < 1e-3


def test_tflite_int8_is_refused_before_any_work_until_it_exists(tiny_conv, tmp_path):
    with pytest.raises(UnsupportedError, match="tflite lowering does not do int8"):
        deploycomp.build(tiny_conv, tmp_path / "b", target="coral-edgetpu", precision="int8")
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
