"""The TensorRT issue's acceptance without a GPU: real models become TensorRT-ready bundles
whose ONNX NVIDIA's own parser takes whole, and whose typed graph keeps the outputs."""

from __future__ import annotations

import onnx
import pytest

import deploycomp
from deploycomp.backends.tensorrt import parser as nvparser

pytestmark = pytest.mark.slow
needs_parser = pytest.mark.skipif(nvparser.parser_module() is None,
                                  reason="NVIDIA's ONNX parser (pip install tensorrt-rtx) is not installed")


@needs_parser
def test_fp16_bundle_parses_and_keeps_outputs(real_model, image_example, tmp_path):
    ex = image_example
    runner = deploycomp.build(real_model(ex.name), tmp_path / "b", target="jetson-orin-nano", precision="fp16",
                              inputs={ex.input_name: ex.shape}, sample_kind=ex.inputs)
    manifest = runner.manifest
    assert manifest["backend"]["lowered"]["nvidia_parser"]  # lower() raises if the parser rejects a node
    assert manifest["validation"]["ok"]
    assert all(m["cosine"] >= 0.999 for m in manifest["validation"]["outputs"].values())
    model = onnx.load(tmp_path / "b" / "model.onnx")
    size = {t: sum(len(i.raw_data) for i in model.graph.initializer if i.data_type == t)
            for t in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)}
    assert size[onnx.TensorProto.FLOAT16] >= 0.9 * sum(size.values()), size  # weights are fp16; LN params fp32
    assert (tmp_path / "b" / "model.onnx").stat().st_size < 0.6 * real_model(ex.name).stat().st_size


@needs_parser
@pytest.mark.parametrize("target", ["nvidia-t4", "jetson-agx-orin"])
def test_yolo_int8_bundle_is_explicitly_quantized_and_parses(real_model, target, tmp_path):
    runner = deploycomp.build(real_model("yolov8n"), tmp_path / "b", target=target, precision="int8",
                              inputs={"images": (1, 3, 320, 320)}, sample_kind="yolo", no_fail=True)
    manifest = runner.manifest
    assert manifest["quantization"]["policy"] == "tensorrt" and manifest["quantization"]["activation_symmetric"]
    model = onnx.load(tmp_path / "b" / "model.onnx")
    zero_points = [i for i in model.graph.initializer if i.name.endswith("__zp")]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)
    assert nvparser.parse_onnx(model.SerializeToString()).ok
    assert (tmp_path / "b" / "model.onnx").stat().st_size < 0.35 * real_model("yolov8n").stat().st_size
    assert manifest["validation"]["outputs"]["output0"]["cosine"] >= 0.98
    plan = (tmp_path / "b" / "build_plan.json").read_text()
    assert ('"dla_core": 0' in plan) == (target == "jetson-agx-orin")
