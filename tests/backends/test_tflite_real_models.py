"""The TFLite issue's acceptance on real models: YOLOv8n and PP-OCRv4 det/rec/cls lowered by
deploycomp, run in LiteRT, against ONNX Runtime fp32 on real inputs.

Conv nets (YOLOv8n, det, cls) must keep no TRANSPOSE at all in the NHWC ``.tflite``; the
recogniser's two attention blocks keep the head transposes BATCH_MATMUL needs.
"""

from __future__ import annotations

import numpy as np
import pytest

import deploycomp
from deploycomp.backends.onnxruntime import ORTRunner
from deploycomp.sample_data import samples_for
from deploycomp.validate import compare_outputs

pytest.importorskip("ai_edge_litert", reason="TFLite tests need the tflite extra (ai-edge-litert)")
pytestmark = pytest.mark.slow

MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999}
MAX_TRANSPOSES = {"yolov8n": 0, "ppocr-det": 0, "ppocr-cls": 0, "ppocr-rec": 8}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_model_lowers_to_tflite_and_runs_in_litert(real_model, image_example, precision, tmp_path):
    ex = image_example
    path = real_model(ex.name)
    out = tmp_path / f"{ex.name}-{precision}"
    runner = deploycomp.build(path, out, target="raspberry-pi-5", precision=precision,
                              inputs={ex.input_name: ex.shape}, sample_kind=ex.inputs)
    manifest = runner.manifest
    lowered = manifest["backend"]["lowered"]
    assert [a["path"] for a in manifest["artifacts"]] == ["model.tflite"]
    assert manifest["backend"]["runtime"]["runtime"] == "litert"
    assert lowered["transposes"] <= MAX_TRANSPOSES[ex.name], lowered["ops"]
    assert manifest["backend"]["runtime"]["xnnpack_partitions"] == 1, "every op must run inside XNNPACK"
    assert lowered["io_layouts"][ex.input_name] == [0, 2, 3, 1]
    assert manifest["validation"]["ok"]

    samples = samples_for(ex.inputs, ex.input_name, ex.shape)[:3]
    ref = ORTRunner(path)
    gots = [deploycomp.load(out).run(s) for s in samples]
    assert list(gots[0]) == ref.output_names
    for name, m in compare_outputs([ref.run(s) for s in samples], gots).items():
        assert m["cosine"] >= MIN_COSINE[precision], (name, m)
    if precision == "fp16":
        assert (out / "model.tflite").stat().st_size < 0.6 * path.stat().st_size


def test_nchw_io_layout_keeps_onnx_order_at_the_boundary(real_model, tmp_path):
    path = real_model("ppocr-cls")
    runner = deploycomp.build(path, tmp_path / "b", target="android-arm64", inputs={"x": (1, 3, 48, 192)},
                              sample_kind="ocr-cls", io_layout="nchw")
    lowered = runner.manifest["backend"]["lowered"]
    assert lowered["io_layouts"]["x"] == [0, 1, 2, 3] and lowered["transposes"] == 1
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "b" / "model.tflite"))
    (detail,) = interpreter.get_input_details()
    assert detail["name"] == "x" and list(detail["shape"]) == [1, 3, 48, 192]
    assert interpreter.get_signature_list()["serving_default"]["inputs"] == ["x"]
    sample = samples_for("ocr-cls", "x", (1, 3, 48, 192))[0]
    np.testing.assert_allclose(runner.run(sample)["save_infer_model/scale_0.tmp_1"],
                               ORTRunner(path).run(sample)["save_infer_model/scale_0.tmp_1"], atol=1e-4)


def test_yolo_int8_tflite_keeps_the_detections(real_model, tmp_path):
    """int8 on the Raspberry Pi profile with the built-in calibration photos: one XNNPACK
    partition, int8 convolutions, and the fp32 detections (score > 0.25) found again."""
    path = real_model("yolov8n")
    runner = deploycomp.build(path, tmp_path / "b", target="raspberry-pi-5", precision="int8",
                              inputs={"images": (1, 3, 320, 320)}, sample_kind="yolo")
    lowered, runtime = runner.manifest["backend"]["lowered"], runner.manifest["backend"]["runtime"]
    assert runtime["xnnpack_partitions"] == 1 and runtime["executed_precision"].startswith("int8")
    assert lowered["int8_ops"] >= 60 and lowered["transposes"] == 0
    assert (tmp_path / "b" / "model.tflite").stat().st_size < 0.35 * path.stat().st_size
    ref = ORTRunner(path)
    found = wanted = 0
    for sample in samples_for("yolo", "images", (1, 3, 320, 320)):
        want, got = ref.run(sample)["output0"][0], runner.run(sample)["output0"][0]
        keep = want[4:].max(0) > 0.25
        wanted += int(keep.sum())
        found += int(((got[4:].argmax(0) == want[4:].argmax(0)) & (got[4:].max(0) > 0.2) & keep).sum())
    assert wanted > 0 and found >= 0.9 * wanted, (found, wanted)
