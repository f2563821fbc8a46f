"""The TensorRT QDQ policy's encoding, proven by NVIDIA's own ONNX parser (no GPU needed).

``tensorrt-rtx`` ships TensorRT's ONNX parser and parses without a GPU. The TensorRT
policy's graph (s8 symmetric activations, per-channel s8 weights, float bias) must
parse with every node supported; the OpenVINO policy's graph (u8 activations with a
zero point) must be rejected for exactly that reason, which is why the policies differ.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from deploycomp.examples import EXAMPLES
from deploycomp.ir import load_model
from deploycomp.passes import build_pipeline, run_passes
from deploycomp.quant import POLICIES, quantize
from deploycomp.sample_data import calibration_samples_for

trt = pytest.importorskip("tensorrt_rtx", reason="NVIDIA's ONNX parser (pip install tensorrt-rtx) is not installed")


def _parse(model: ir.Model) -> tuple[bool, list[str]]:
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(ir.to_proto(model).SerializeToString())
    return ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]


def _quantized(path, shapes, policy, samples):
    model, _ = run_passes(load_model(path).model, build_pipeline("tensorrt", shapes))
    return quantize(model, POLICIES[policy], samples, []).model


def test_tiny_graph_encodings(tiny_conv):
    rng = np.random.default_rng(0)  # signed inputs: an asymmetric u8 range gets a non-zero zero point
    samples = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    ok, errors = _parse(_quantized(tiny_conv, {"x": (1, 3, 16, 16)}, "tensorrt", samples))
    assert ok, errors
    ok, errors = _parse(_quantized(tiny_conv, {"x": (1, 3, 16, 16)}, "openvino", samples))
    assert not ok and "Non-zero zero point is not supported" in errors[0]


def test_shifted_one_sided_inputs_parse(tiny_conv):
    """An image in 0..255 reaches the first conv shifted to two-sided (``Sub``, an explicit
    ``Pad``; see :func:`deploycomp.quant.qdq.shift_one_sided`): NVIDIA's parser takes it."""
    rng = np.random.default_rng(0)
    samples = [{"x": np.round(rng.random((1, 3, 16, 16)) * 255).astype(np.float32)} for _ in range(4)]
    model = _quantized(tiny_conv, {"x": (1, 3, 16, 16)}, "tensorrt", samples)
    assert any(n.op_type == "Sub" for n in model.graph)
    ok, errors = _parse(model)
    assert ok, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n", "ppocr-rec"])
def test_real_models_parse_fully(real_model, name):
    ex = EXAMPLES[name]
    samples = calibration_samples_for(ex.inputs, ex.input_name, ex.shape)[:4]
    model = _quantized(real_model(name), {ex.input_name: ex.shape}, "tensorrt", samples)
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph) > 10
    ok, errors = _parse(model)
    assert ok, errors[:3]
