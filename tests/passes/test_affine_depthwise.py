"""TFLite's pipeline: a per-channel affine no Conv absorbed becomes a 1x1 depthwise Conv,
outputs unchanged; an affine the same on every channel stays as it is."""

from __future__ import annotations

import numpy as np
import pytest

import deploycomp
from tests.passes._harness import model_from_text, optimize_and_compare, rng

# a Keras BatchNorm after the ReLU, as tf2onnx leaves it: nothing before it can take it
# (the ReLU), nothing after it either (a MaxPool)
NORM_AFTER_RELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 16, 16] x) => (float[1, 8, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    r = Relu(c)
    m = Mul(r, s)
    a = Add(m, t)
    y = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (a)
}
"""


def _weights(scale_shape=(8, 1, 1), scale=None, shift=None):
    g = rng()
    return dict(w=g.standard_normal((8, 3, 3, 3)).astype(np.float32),
                s=(g.uniform(0.01, 3.0, scale_shape) if scale is None else np.full(scale_shape, scale)).astype(np.float32),
                t=(g.standard_normal(scale_shape) if shift is None else np.full(scale_shape, shift)).astype(np.float32))


def test_a_norm_after_a_relu_becomes_one_depthwise_conv(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model_from_text(NORM_AFTER_RELU, **_weights()), feeds, pipeline="tflite")
    assert ops["Conv"] == 2 and "Mul" not in ops and "Add" not in ops
    # the default pipeline leaves it for the backends that keep such ops float
    ops = optimize_and_compare(tmp_path, model_from_text(NORM_AFTER_RELU, **_weights()), feeds)
    assert ops["Mul"] == 1 and ops["Add"] == 1


@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (8, 1, 1)])
def test_a_scale_alone_becomes_a_depthwise_conv_a_shift_alone_does_not(tmp_path, shape):
    feeds = {"x": rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    scale_only = NORM_AFTER_RELU.replace("a = Add(m, t)", "a = Add(m, m)")
    weights = _weights(shape)
    ops = optimize_and_compare(tmp_path, model_from_text(scale_only, w=weights["w"], s=weights["s"]), feeds,
                               pipeline="tflite")
    assert ops["Conv"] == 2 and "Mul" not in ops and ops["Add"] == 1  # the sum of two activations stays
    shift_only = NORM_AFTER_RELU.replace("m = Mul(r, s)", "m = Identity(r)")
    ops = optimize_and_compare(tmp_path, model_from_text(shift_only, w=weights["w"], t=weights["t"]), feeds,
                               pipeline="tflite")
    assert ops["Conv"] == 1 and ops["Add"] == 1


def test_an_affine_the_same_on_every_channel_is_left_alone(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model_from_text(NORM_AFTER_RELU, **_weights(scale=0.5, shift=0.1)), feeds,
                               pipeline="tflite")
    assert ops["Conv"] == 1 and ops["Mul"] == 1 and ops["Add"] == 1


def test_the_depthwise_conv_runs_int8_on_tflite_and_holds_the_budget(tmp_path):
    """Per-channel factors 300x apart: TFLite's int8 MUL would take them with one scale
    (the small channels to a level or two); as a depthwise Conv each has its own."""
    from tests.passes._harness import model_from_text as text_model

    weights = _weights()
    weights["s"] = np.geomspace(0.01, 3.0, 8).astype(np.float32).reshape(8, 1, 1)
    path = tmp_path / "m.onnx"
    path.write_bytes(text_model(NORM_AFTER_RELU, **weights).SerializeToString())
    data = rng(2).standard_normal((12, 1, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=data[:8])
    np.savez(tmp_path / "val.npz", x=data[8:])
    result = deploycomp.build(path, tmp_path / "out", target="android-arm64", precision="int8",
                              calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")
    quant = result.manifest["quantization"]
    assert quant["int8_layers"] == 2 and not quant["float_layers"]
    assert result.manifest["validation"]["outputs"]["y"]["cosine"] >= 0.995
