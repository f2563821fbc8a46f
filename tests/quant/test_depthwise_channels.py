"""Depthwise inputs whose channels spread: a scale per channel (OpenVINO's policy), or an
explicit per-channel Mul before one scale per tensor (TensorRT's).

After HardSwish the channels of a tensor differ by orders of magnitude (PP-OCRv3 rec:
per-channel maxima 0.07 to 118), and one scale per tensor rounds the small channels to
zero. A depthwise convolution reads each channel on its own, so a scale per channel is
exact to move past it, and OpenVINO still runs it in int8. TensorRT's activations take
one scale per tensor; HardSwish cannot take a channel scale from the conv before it, so
a Mul of its own does, and the depthwise weights take the inverse.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant import POLICIES, quantize
from deploycomp.quant.calibrate import ChannelExtremes
from deploycomp.quant.qdq import activation_params, fake_quantize, per_channel_tensors
from deploycomp.quant.sensitivity import nmse, ort_outputs

CHANNELS = 16


def _skewed_depthwise(path, also_pointwise: bool = False, activation: str = "HardSwish"):
    """Conv (channel c's weights scaled by 10**(3c/15 - 1.5)) -> HardSwish -> depthwise 3x3
    -> Relu -> pointwise conv. ``also_pointwise``: the HardSwish output is also read by a
    pointwise conv (a reader that mixes channels). ``activation``: another in its place."""
    rng = np.random.default_rng(0)
    gains = 10 ** np.linspace(-1.5, 1.5, CHANNELS).astype(np.float32)
    w1 = (rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.3).astype(np.float32) * gains[:, None, None, None]
    dw = rng.standard_normal((CHANNELS, 1, 3, 3)).astype(np.float32) / gains[:, None, None, None]
    pw = (rng.standard_normal((4, CHANNELS, 1, 1)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node(activation, ["a"], ["h"], name="hswish"),
             helper.make_node("Conv", ["h", "dw"], ["d"], group=CHANNELS, pads=[1, 1, 1, 1], name="depthwise"),
             helper.make_node("Relu", ["d"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "pw"], ["y"], name="pointwise")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(dw, "dw"), numpy_helper.from_array(pw, "pw")]
    if also_pointwise:
        nodes.append(helper.make_node("Conv", ["h", "pw"], ["z"], name="mixer"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "skewed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              outputs, inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.save(model, path)
    return ir.load(path)


def _samples(n, seed):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(n)]


def test_only_tensors_that_only_depthwise_convs_read_and_only_for_openvino(tmp_path):
    model = _skewed_depthwise(tmp_path / "m.onnx")
    assert per_channel_tensors(model, POLICIES["openvino"]) == {"h"}
    assert per_channel_tensors(model, POLICIES["tensorrt"]) == set()  # one activation scale per tensor
    assert per_channel_tensors(model, POLICIES["tflite"]) == set()
    mixed = _skewed_depthwise(tmp_path / "mixed.onnx", also_pointwise=True)
    assert per_channel_tensors(mixed, POLICIES["openvino"]) == set()  # the mixer cannot take a scale per channel


def test_a_scale_per_channel_cuts_the_error_of_skewed_channels(tmp_path):
    model = _skewed_depthwise(tmp_path / "m.onnx")
    calibration, held = _samples(8, 0), _samples(4, 1)
    per_channel = quantize(model, POLICIES["openvino"], calibration, [], boosters=())
    one_scale = quantize(model, replace(POLICIES["openvino"], per_channel_depthwise_inputs=False), calibration, [],
                         boosters=())
    q = next(n for n in per_channel.model.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "h")
    assert q.attributes["axis"].value == 1 and q.inputs[1].const_value.numpy().shape == (CHANNELS,)
    assert per_channel.info["per_channel_activations"] == 1 and one_scale.info["per_channel_activations"] == 0
    refs = ort_outputs(model, held)
    error, error_one_scale = nmse(refs, ort_outputs(per_channel.model, held)), nmse(refs, ort_outputs(one_scale.model, held))
    assert error < error_one_scale / 10, (error, error_one_scale)


def test_numpy_fake_quantize_matches_onnx_per_channel():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 5, 4, 4)) * np.arange(1, 6)[None, :, None, None]).astype(np.float32)
    lo, hi = x.min(axis=(0, 2, 3)) * 0.8, x.max(axis=(0, 2, 3)) * 0.8  # some values saturate
    scale, zp = activation_params(lo, hi, "uint8", False)
    assert scale.shape == zp.shape == (5,) and zp.dtype == np.uint8
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString())
    np.testing.assert_allclose(fake_quantize(x, scale, zp), session.run(None, {"x": x})[0], rtol=0, atol=1e-6)


def test_channel_ranges_stay_inside_the_tensor_range_and_one_step_wide():
    channels = ChannelExtremes(["t"])
    x = np.zeros((1, 3, 2, 2), np.float32)
    x[0, 0] = [[0.0, 1.0], [2.0, 50.0]]  # an outlier a percentile range clips
    x[0, 1] = [[-0.5, 0.1], [0.2, 0.3]]
    x[0, 2, 0, 0] = np.inf  # non-finite values are not a range
    channels.update({"t": x})
    lo, hi = channels.within({"t": (-0.5, 10.0), "other": (0.0, 1.0)})["t"]
    np.testing.assert_allclose(hi[:2], [10.0, 0.3])
    np.testing.assert_allclose(lo, [0.0, -0.5, 0.0])
    assert hi[2] == pytest.approx(10.5 / 255)  # a channel all zero keeps one of the tensor's steps


def test_channel_extremes_take_each_tensors_own_channel_axis_and_list_non_finite_ones():
    """Equalization reads a channels-last tensor (a MatMul's input) along its last axis;
    a tensor that had Inf or NaN has no magnitudes to level (equalization skips it)."""
    channels = ChannelExtremes({"rows": -1, "maps": 1})
    rows = np.array([[1.0, -4.0, 0.5], [-2.0, 3.0, 0.25]], np.float32)  # (tokens, channels)
    maps = np.ones((1, 2, 2, 2), np.float32)
    maps[0, 1, 0, 0] = np.nan
    channels.update({"rows": rows, "maps": maps})
    np.testing.assert_allclose(channels.amax("rows"), [2.0, 4.0, 0.5])
    np.testing.assert_allclose(channels.hi["maps"], [1.0, 1.0])  # the NaN left out of the extremes
    assert channels.nonfinite == {"maps"} and channels.amax("maps") is None and channels.amax("other") is None


def test_openvino_runs_the_depthwise_conv_in_int8_with_a_scale_per_channel(tmp_path):
    """The bundle executes every compute layer in int8 (``u8`` activations in OpenVINO's
    runtime model), and the per-channel encoding reaches it."""
    import deploycomp

    _skewed_depthwise(tmp_path / "m.onnx")
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, x=np.concatenate([s["x"] for s in _samples(16, 0)]))
    runner = deploycomp.build(tmp_path / "m.onnx", tmp_path / "b", precision="int8", calibration=calibration,
                              no_fail=True, int8_boosters=())
    quant = runner.manifest["quantization"]
    assert quant["per_channel_activations"] == 1
    runtime = runner.manifest["backend"]["runtime"]
    assert runtime["executed_precision"] == "int8", runtime["compute_layer_precisions"]


def test_a_concat_output_keeps_one_scale_openvino_can_compile(tmp_path):
    """OpenVINO moves a quantizer after a Concat onto its inputs, and 2026.4 left a
    per-channel one's 16 channel constants against an input of 8: compiling failed (a
    fingerprint model's int8 build stopped with an internal error)."""
    import deploycomp

    rng = np.random.default_rng(1)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "k1"], ["a"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Conv", ["x", "k2"], ["b"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Relu", ["b"], ["br"], name="relu"),
             helper.make_node("Concat", ["a", "br"], ["cat"], axis=1, name="cat"),
             helper.make_node("Conv", ["cat", "kd"], ["d"], pads=[1, 1, 1, 1], group=16, name="dw"),
             helper.make_node("Conv", ["d", "k3"], ["y"], name="pw")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [weight("k1", 8, 4, 3, 3), weight("k2", 8, 4, 3, 3), weight("kd", 16, 1, 3, 3),
                               weight("k3", 4, 16, 1, 1)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert not per_channel_tensors(ir.load(tmp_path / "m.onnx"), POLICIES["openvino"])
    x = rng.standard_normal((16, 4, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    runner = deploycomp.build(tmp_path / "m.onnx", tmp_path / "b", precision="int8", calibration=tmp_path / "calib.npz",
                              no_fail=True)
    assert runner.manifest["quantization"]["int8_layers"] == 4 and runner.manifest["validation"]["ok"]


def test_tensorrt_equalizes_through_an_explicit_mul_where_the_producer_cannot_take_the_scale(tmp_path):
    """TensorRT takes one activation scale per tensor, and HardSwish cannot take a channel
    scale from the conv before it: a ``Mul`` of its own scales the channels (by at most
    EXPLICIT_SCALE_LIMIT) and the depthwise weights take the inverse. Exact in float; the
    int8 error in TensorRT's encoding falls."""
    from deploycomp.quant.equalization import EXPLICIT_SCALE_LIMIT, equalize

    model = _skewed_depthwise(tmp_path / "m.onnx")
    calibration, held = _samples(8, 0), _samples(4, 1)
    refs = ort_outputs(model, held)
    policy = POLICIES["tensorrt"]
    assert policy.explicit_equalization and not POLICIES["openvino"].explicit_equalization
    equalized = ir.load(tmp_path / "m.onnx")
    records = equalize(equalized, policy.compute_ops, calibration, explicit=True)
    assert [(r["tensor"], r.get("explicit_mul")) for r in records] == [("h", True)]
    mul = next(n for n in equalized.graph if n.op_type == "Mul")
    assert mul.inputs[0].name == "h" and [c.name for c, _ in mul.outputs[0].uses()] == ["depthwise"]
    factors = mul.inputs[1].const_value.numpy().ravel()
    assert factors.min() >= 1.0 and factors.max() <= EXPLICIT_SCALE_LIMIT * (1 + 1e-6) and factors.max() > 2
    np.testing.assert_allclose(ort_outputs(equalized, held)[0]["y"], refs[0]["y"], rtol=1e-4, atol=1e-4)
    assert equalize(ir.load(tmp_path / "m.onnx"), policy.compute_ops, calibration) == []  # only when asked

    def error(p):
        return nmse(refs, ort_outputs(quantize(ir.load(tmp_path / "m.onnx"), p, calibration, [],
                                               boosters=("equalize",)).model, held))

    assert error(policy) < 0.5 * error(replace(policy, explicit_equalization=False))


def test_tflite_equalizes_a_depthwise_input_its_conv_can_rescale(tmp_path):
    """TFLite's default boosters equalize (cross-layer, into the depthwise weights; exact
    in float): with a ReLU between (``relu(x / s) = relu(x) / s``) the conv before takes
    each channel's scale, and one activation scale per tensor then serves every channel.
    Measured on the corpus's face detector (17 such sites) on Android: all 63 layers int8
    within the budget (validation 0.9949), where without it the search kept 5 float."""
    model = _skewed_depthwise(tmp_path / "m.onnx", activation="Relu")
    calibration, held = _samples(16, 1), _samples(4, 2)
    equalized = quantize(model, POLICIES["tflite"], calibration, [])
    plain = quantize(model, POLICIES["tflite"], calibration, [], boosters=())
    assert POLICIES["tflite"].boosters == ("equalize",)
    assert [e["tensor"] for e in equalized.info["equalized"]] == ["h"] and not plain.info["equalized"]
    refs = ort_outputs(model, held)
    error, error_plain = nmse(refs, ort_outputs(equalized.model, held)), nmse(refs, ort_outputs(plain.model, held))
    assert error < error_plain / 10, (error, error_plain)
