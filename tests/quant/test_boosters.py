"""Training-free int8 boosters: equalization, searched smoothing and bias correction.

Specification:
* equalization changes no float output, and brings the per-channel ranges of a tensor
  that only depthwise convs read to one (through a Relu); it leaves tensors read by
  channel-mixing layers to smoothing;
* with a wide channel spread, the equalized model's int8 error is much smaller;
* smoothing changes no float output (shifting channels into the biases, adding a bias
  where a producer or reader has none; Conv, LayerNorm -> MatMul + Add, Gemm readers),
  never shifts through a Relu, and cuts the int8 error of channels that sit at
  different offsets; ``quantize`` keeps it only if the whole model's error falls, and
  calibrates it from runs of the original model exactly as if it ran the smoothed one;
  where the runtime takes one activation scale per tensor and fuses an element-wise op
  into the quantize (TensorRT), a mixing reader's input whose producer cannot take the
  scale is smoothed through an explicit ``Mul`` that keeps the tensor's name;
* bias correction's predicted shift equals the measured mean output shift of the
  quantized layer (padding and strides included), and applying it removes that shift;
  its per-tap input sums equal a direct sum over the positions each tap reads;
* layers kept in float keep their original bias.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploycomp.quant import POLICIES, quantize
from deploycomp.quant.bias_correction import _Layer, apply_bias_shifts, bias_shifts
from deploycomp.quant.calibrate import collect_statistics, stream_tensors
from deploycomp.quant.equalization import equalization_sites, equalize
from deploycomp.quant.qdq import quantizable_tensors
from deploycomp.quant.sensitivity import nmse, ort_outputs, quantized_copy
from deploycomp.quant.smoothing import searchable_sites, smooth

POLICY = POLICIES["openvino"]


def _model(nodes, inits, x_shape, y_shape) -> ir.Model:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return ir.from_proto(proto)


def _spread_convs(rng) -> ir.Model:
    """conv (channels scaled 0.03..10) -> relu -> depthwise conv -> mul/add affine -> 1x1 conv."""
    w1 = rng.normal(size=(8, 3, 3, 3)) * np.geomspace(0.03, 10, 8)[:, None, None, None]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8, strides=[2, 2], name="dw"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Mul", ["r2", "a"], ["m"], name="affine_mul"),
        helper.make_node("Add", ["m", "bias"], ["s"], name="affine_add"),
        helper.make_node("Conv", ["s", "w3", "b3"], ["y"], name="pw"),
    ]
    inits = {"w1": w1, "b1": rng.normal(size=8) * 0.1, "w2": rng.normal(size=(8, 1, 3, 3)),
             "b2": rng.normal(size=8) * 0.1, "a": [0.7], "bias": [0.3],
             "w3": rng.normal(size=(4, 8, 1, 1)), "b3": rng.normal(size=4)}
    return _model(nodes, inits, [1, 3, 16, 16], [1, 4, 8, 8])


def _samples(n, shape, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(n)]


def _copy(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


def _channel_spread(model: ir.Model, tensor: str, samples) -> float:
    amax = 0
    for values in stream_tensors(model, [tensor], samples):
        amax = np.maximum(amax, np.abs(values[tensor]).max(axis=(0, 2, 3)))
    return float(amax.max() / amax[amax > 0].min())


def test_equalization_keeps_float_outputs_and_levels_channel_ranges():
    model = _spread_convs(np.random.default_rng(0))
    samples = _samples(6, (1, 3, 16, 16))
    before = _channel_spread(model, "r1", samples)
    equalized = _copy(model)
    records = equalize(equalized, POLICY.compute_ops, samples)
    # through the Relu; the affine Mul/Add output ("s") is read by a 1x1 conv: smoothing's
    assert {r["tensor"] for r in records} == {"r1"}
    for ref, got in zip(ort_outputs(model, samples), ort_outputs(equalized, samples)):
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-4, atol=1e-4)
    assert before > 100
    assert _channel_spread(equalized, "r1", samples) == pytest.approx(1.0, rel=1e-3)  # read by a depthwise conv only


def test_equalization_cuts_int8_error_where_channels_spread():
    model = _spread_convs(np.random.default_rng(0))
    calib, held = _samples(8, (1, 3, 16, 16)), _samples(4, (1, 3, 16, 16), seed=7)
    refs = ort_outputs(model, held)

    def int8_error(m):  # with the spread tensor the only quantized activation
        ranges = collect_statistics(m, ["r1"], calib).ranges("minmax")
        return nmse(refs, ort_outputs(quantized_copy(m, POLICY, ranges, set()), held))

    equalized = _copy(model)
    equalize(equalized, POLICY.compute_ops, calib)
    assert int8_error(equalized) < 0.2 * int8_error(model)


def _offset_channels(rng, reader_bias: bool = True) -> ir.Model:
    """1x1 conv -> affine (per-channel offsets of +-2, spread 0.05) -> 1x1 conv with large
    weights: PP-OCR rec's worst tensor in small."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
        helper.make_node("Mul", ["c0", "a"], ["m"], name="affine_mul"),
        helper.make_node("Add", ["m", "offset"], ["s"], name="affine_add"),
        helper.make_node("Conv", ["s", "w1"] + (["b1"] if reader_bias else []), ["y"], name="pw"),
    ]
    inits = {"w0": rng.normal(size=(16, 8, 1, 1)), "a": np.full((1, 16, 1, 1), 0.02),
             "offset": rng.uniform(-2, 2, size=(1, 16, 1, 1)), "w1": rng.normal(size=(4, 16, 1, 1)) * 20,
             "b1": rng.normal(size=4)}
    return _model(nodes, inits if reader_bias else {k: v for k, v in inits.items() if k != "b1"},
                  [1, 8, 8, 8], [1, 4, 8, 8])


@pytest.mark.parametrize("reader_bias", [True, False])
def test_smoothing_shifts_offset_channels_exactly_and_cuts_int8_error(reader_bias):
    model = _offset_channels(np.random.default_rng(1), reader_bias)
    calib, held = _samples(8, (1, 8, 8, 8)), _samples(4, (1, 8, 8, 8), seed=9)
    smoothed = _copy(model)
    (record,) = smooth(smoothed, POLICY, calib)
    assert record["tensor"] == "s" and record["shift"] is True
    refs = ort_outputs(model, held)
    for ref, got in zip(refs, ort_outputs(smoothed, held)):
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-4, atol=1e-3)

    def int8_error(m):
        ranges = collect_statistics(m, list(quantizable_tensors(m, POLICY)), calib).ranges("minmax")
        return nmse(refs, ort_outputs(quantized_copy(m, POLICY, ranges, set()), held))

    assert int8_error(smoothed) < 0.1 * int8_error(model)


def test_smoothing_from_layernorm_into_matmul_and_gemm_keeps_outputs():
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "b"], ["h"], name="fc_bias"),
        helper.make_node("LayerNormalization", ["h", "gamma2"], ["ln2"], axis=-1, name="ln2"),
        helper.make_node("Gemm", ["ln2", "w2"], ["y"], transB=1, alpha=0.5, name="head"),
    ]
    model = _model(nodes, {"gamma": np.geomspace(0.02, 20, 16), "beta": rng.uniform(-3, 3, size=16),
                           "w": rng.normal(size=(16, 8)), "b": rng.normal(size=8),
                           "gamma2": np.geomspace(0.05, 5, 8), "w2": rng.normal(size=(3, 8))}, [10, 16], [10, 3])
    samples = _samples(6, (10, 16))
    sites = searchable_sites(model, POLICY.compute_ops)
    assert [(s.site.producer.name, s.can_shift) for s in sites] == [("ln", True), ("ln2", True)]
    smoothed = _copy(model)
    records = smooth(smoothed, POLICY, samples)
    assert records and all(r["local_error_ratio"] < 1 for r in records)
    for ref, got in zip(ort_outputs(model, samples), ort_outputs(smoothed, samples)):
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-4, atol=1e-4)


def test_no_site_needs_a_per_channel_constant_the_runtime_quantizes_per_tensor():
    """TFLite quantizes a MUL/ADD's constant operand itself, with one scale: an affine
    block's constant made per-channel (a / s_c, spread as wide as the channels were)
    would lose its small channels."""
    model = _spread_convs(np.random.default_rng(0))
    assert {s.tensor.name for s in equalization_sites(model, POLICY.compute_ops)} == {"r1", "s"}
    tflite = POLICIES["tflite"]
    assert tflite.per_tensor_constant_ops == ("Add", "Mul") and POLICY.per_tensor_constant_ops == ()
    sites = equalization_sites(model, tflite.compute_ops, tflite.per_tensor_constant_ops)
    assert {s.tensor.name for s in sites} == {"r1"}
    assert searchable_sites(model, tflite.compute_ops, tflite.per_tensor_constant_ops) == []


def test_a_smoothing_that_raises_the_model_error_is_dropped(monkeypatch):
    """Each site is chosen by its readers' error alone; ``quantize`` keeps the result only
    if the whole int8 model's error falls. Here a stand-in search scales one channel
    1000x up, which crushes every other channel of the tensor into a few int8 levels."""
    import deploycomp.quant as quant
    from deploycomp.quant.smoothing import ChannelAffine, _apply

    def harmful(model, policy, samples, centred=False, sampled=None):
        (item,) = searchable_sites(model, policy.compute_ops)
        channels = item.site.tensor.shape[1]
        scales = np.ones(channels)
        scales[0] = 1e-3
        _apply(model, item.site, np.zeros(channels), scales)
        return [{"tensor": item.site.tensor.name, "producer": item.site.producer.name,
                 "readers": [r.name for r in item.site.readers], "shift": False, "alpha": None,
                 "transform": ChannelAffine(np.zeros(channels), scales, item.site.channel_axis)}]

    monkeypatch.setattr(quant, "smooth", harmful)
    model = _offset_channels(np.random.default_rng(1))
    calib, held = _samples(8, (1, 8, 8, 8)), _samples(2, (1, 8, 8, 8), seed=4)
    result = quantize(model, POLICY, calib, held, boosters=["smooth"])
    record = result.info["smoothing"]
    assert record["kept"] is False and record["nmse_all_int8_with"] > record["nmse_all_int8_without"]
    plain = quantize(model, POLICY, calib, held, boosters=[])
    for a, b in zip(ort_outputs(result.model, held), ort_outputs(plain.model, held)):
        np.testing.assert_array_equal(a["y"], b["y"])  # as if smoothing had not run


def test_smoothing_never_shifts_through_a_relu():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1"),
             helper.make_node("Relu", ["c1"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    model = _model(nodes, {"w1": rng.normal(size=(4, 3, 1, 1)), "b1": [5.0, -1.0, 2.0, 0.5],
                           "w2": rng.normal(size=(2, 4, 1, 1))}, [1, 3, 4, 4], [1, 2, 4, 4])
    (site,) = searchable_sites(model, POLICY.compute_ops)
    assert site.can_shift is False  # relu(x - z) is not relu(x) - z


def test_no_site_through_a_non_homogeneous_activation():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="c1"),
             helper.make_node("HardSwish", ["c1"], ["h"], name="hs"),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="c2")]
    model = _model(nodes, {"w1": rng.normal(size=(4, 3, 1, 1)), "w2": rng.normal(size=(2, 4, 1, 1))},
                   [1, 3, 4, 4], [1, 2, 4, 4])
    assert equalization_sites(model, POLICY.compute_ops) == []


def _strided_conv(rng) -> ir.Model:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 2, 0, 1], strides=[2, 1], name="conv")]
    return _model(nodes, {"w": rng.normal(size=(6, 4, 3, 3)), "b": rng.normal(size=6)}, [1, 4, 9, 11], [1, 6, 4, 11])


def test_bias_correction_predicts_and_removes_the_mean_shift():
    rng = np.random.default_rng(5)
    model = _strided_conv(rng)
    # an input with a non-zero mean and a clipped tail: the shift is not zero
    samples = [{"x": (rng.gamma(2.0, size=(1, 4, 9, 11)) - 0.5).astype(np.float32)} for _ in range(6)]
    ranges = collect_statistics(model, ["x"], samples).ranges("percentile")
    shifts = bias_shifts(model, POLICY, ranges, samples)
    plain = quantized_copy(model, POLICY, ranges, set())
    corrected = quantized_copy(model, POLICY, ranges, set(), shifts)

    def mean_error(m):
        sess = ort.InferenceSession(ir.to_proto(m).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        ref = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
        diffs = [sess.run(None, s)[0] - ref.run(None, s)[0] for s in samples]
        return np.mean(diffs, axis=(0, 1, 3, 4))

    measured = mean_error(plain)
    assert np.abs(measured).max() > 1e-3
    np.testing.assert_allclose(shifts["conv"], measured, rtol=0.02, atol=2e-4)
    assert np.abs(mean_error(corrected)).max() < 0.05 * np.abs(measured).max()


def test_float_layers_keep_their_bias():
    rng = np.random.default_rng(5)
    model = _strided_conv(rng)
    shifts = {"conv": np.ones(6, np.float32)}
    kept = _copy(model)
    assert apply_bias_shifts(kept, shifts, skip={"conv"}) == 0
    changed = _copy(model)
    assert apply_bias_shifts(changed, shifts) == 1
    bias = {n.name: n for n in changed.graph}["conv"].inputs[2].const_value.numpy()
    original = {n.name: n for n in model.graph}["conv"].inputs[2].const_value.numpy()
    np.testing.assert_allclose(bias, original - 1, rtol=1e-6)


def test_quantize_reports_boosters_and_rejects_unknown_ones():
    model = _spread_convs(np.random.default_rng(0))
    calib = _samples(6, (1, 3, 16, 16))
    result = quantize(model, POLICY, calib, [])
    assert result.info["boosters"] == ["equalize", "smooth", "bias-correction"]
    assert [e["tensor"] for e in result.info["equalized"]] == ["r1"] and result.info["bias_corrected_layers"] == 3
    assert [site["tensor"] for site in result.info["smoothing"]["sites"]] == ["s"]  # the affine block's output
    offsets = _offset_channels(np.random.default_rng(1))
    smoothed = quantize(offsets, POLICY, _samples(8, (1, 8, 8, 8)), _samples(2, (1, 8, 8, 8), seed=4),
                        boosters=["smooth"])
    record = smoothed.info["smoothing"]
    assert [s["tensor"] for s in record["sites"]] == ["s"] and record["kept"] is True
    assert record["nmse_all_int8_with"] < record["nmse_all_int8_without"]
    bare = quantize(model, POLICY, calib, [], boosters=())
    assert bare.info["equalized"] == [] and bare.info["bias_corrected_layers"] == 0 and bare.info["smoothing"] == {}
    with pytest.raises(ValueError, match="unknown int8 booster"):
        quantize(model, POLICY, calib, [], boosters=["adaround"])


def test_smoothed_model_is_calibrated_from_the_original_models_runs():
    """``quantize`` never runs the smoothed model to calibrate it: its ranges and bias
    shifts come from the original's values mapped through each site's per-channel affine.
    The QDQ model equals calibrating the smoothed model directly (up to float rounding)."""
    model = _offset_channels(np.random.default_rng(1))
    calib, held = _samples(8, (1, 8, 8, 8)), _samples(2, (1, 8, 8, 8), seed=4)
    result = quantize(model, POLICY, calib, held, boosters=["smooth", "bias-correction"])
    assert result.info["smoothing"]["kept"] is True

    direct = _copy(model)
    assert [r["tensor"] for r in smooth(direct, POLICY, calib, centred=True)] == ["s"]
    ranges = collect_statistics(direct, list(quantizable_tensors(direct, POLICY)), calib).ranges("percentile")
    expected = quantized_copy(direct, POLICY, ranges, set(), bias_shifts(direct, POLICY, ranges, calib))
    got = {v.name: v.const_value.numpy() for v in result.model.graph.initializers.values()}
    want = {v.name: v.const_value.numpy() for v in expected.graph.initializers.values()}
    assert got.keys() == want.keys()
    for name, value in want.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
        else:  # int8 weights and zero points: a rounding may land one level apart
            assert np.abs(got[name].astype(int) - value.astype(int)).max() <= 1, name


@pytest.mark.parametrize("kernel,strides,pads,dilations", [
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((5, 1), (3, 1), (2, 0, 4, 0), (1, 1)),
    ((3, 3), (1, 2), (2, 0, 2, 3), (2, 1)),
    ((1, 1), (4, 4), (0, 0, 0, 0), (1, 1)),
])
def test_bias_correction_tap_sums_are_the_sums_each_tap_reads(kernel, strides, pads, dilations):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 9, 10))
    w = rng.normal(size=(4, 3, *kernel)).astype(np.float32)
    node = ir.Node("", "Conv", [ir.Value(name="x"), ir.Value(name="w")], name="c", attributes=[
        ir.AttrInt64s("strides", strides), ir.AttrInt64s("pads", pads), ir.AttrInt64s("dilations", dilations)])
    sums, outputs = _Layer(node, w, 1).input_means(x)
    out = [(x.shape[2 + d] + pads[d] + pads[d + 2] - dilations[d] * (kernel[d] - 1) - 1) // strides[d] + 1
           for d in range(2)]
    expected = np.zeros((3, kernel[0] * kernel[1]))
    for th in range(kernel[0]):
        for tw in range(kernel[1]):
            for i in range(out[0]):
                for j in range(out[1]):
                    r = i * strides[0] - pads[0] + th * dilations[0]
                    c = j * strides[1] - pads[1] + tw * dilations[1]
                    if 0 <= r < x.shape[2] and 0 <= c < x.shape[3]:
                        expected[:, th * kernel[1] + tw] += x[:, :, r, c].sum(0)
    assert outputs == 2 * out[0] * out[1]
    np.testing.assert_allclose(sums, expected, rtol=1e-10, atol=1e-10)


def test_a_search_that_misses_with_every_layer_float_says_so():
    """A budget that even the float model misses (on OpenVINO: the runtime computing the
    model otherwise than ONNX Runtime) is recorded as such, for the build to diagnose."""
    model = _spread_convs(np.random.default_rng(0))
    result = quantize(model, POLICY, _samples(6, (1, 3, 16, 16)), _samples(2, (1, 3, 16, 16), seed=5),
                      lambda candidate: False, method="percentile", boosters=())
    assert result.info["every_layer_float_missed"] and not result.info["budget_met"]
    assert len(result.info["float_layers"]) == 3
    met = quantize(model, POLICY, _samples(6, (1, 3, 16, 16)), _samples(2, (1, 3, 16, 16), seed=5),
                   lambda candidate: True, method="percentile", boosters=())
    assert "every_layer_float_missed" not in met.info


def _outlier_channels_after_hardswish(rng) -> ir.Model:
    """conv (3 of 16 channels 100x louder) -> HardSwish -> 1x1 conv: activation outliers in a
    tensor whose producer cannot take a channel scale, read by a pointwise conv."""
    w0 = rng.normal(size=(16, 8, 1, 1)) * np.where(np.arange(16) % 6 == 0, 100.0, 1.0)[:, None, None, None]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
             helper.make_node("HardSwish", ["c0"], ["h"], name="hs"),
             helper.make_node("Conv", ["h", "w1", "b1"], ["y"], name="pw")]
    return _model(nodes, {"w0": w0, "w1": rng.normal(size=(4, 16, 1, 1)), "b1": rng.normal(size=4)},
                  [1, 8, 8, 8], [1, 4, 8, 8])


def test_tensorrt_smooths_through_an_explicit_mul_where_the_producer_cannot_take_the_scale():
    """Where the runtime fuses an element-wise op into the quantize after it (TensorRT), a
    channel-mixing reader's input whose producer cannot take a scale is smoothed through a
    ``Mul`` of its own, which keeps the tensor's name (the producer's result is renamed):
    exact in float, calibrated from the original model's runs, and the int8 error falls."""
    from dataclasses import replace

    from deploycomp.quant.equalization import EXPLICIT_SCALE_LIMIT

    model = _outlier_channels_after_hardswish(np.random.default_rng(2))
    calib, held = _samples(8, (1, 8, 8, 8)), _samples(4, (1, 8, 8, 8), seed=5)
    # HardSwish's output is one-sided: TensorRT's encoding would shift it for the conv
    # (tested in test_qdq), which renames what the quantize reads; left out here
    trt = replace(POLICIES["tensorrt"], shift_one_sided=False)
    assert searchable_sites(model, trt.compute_ops) == []  # HardSwish takes no scale
    (item,) = searchable_sites(model, trt.compute_ops, explicit=True)
    assert item.site.explicit and item.site.tensor.name == "h" and item.can_shift is False
    assert searchable_sites(model, POLICY.compute_ops, explicit=POLICY.explicit_equalization) == []

    smoothed = _copy(model)
    (record,) = smooth(smoothed, trt, calib)
    assert record["tensor"] == "h" and record["explicit_mul"] is True and record["local_error_ratio"] < 0.9
    mul = next(n for n in smoothed.graph if n.op_type == "Mul")
    assert mul.inputs[0].name == "h__unscaled" and mul.outputs[0].name == "h"
    assert [c.name for c, _ in mul.outputs[0].uses()] == ["pw"]
    factors = mul.inputs[1].const_value.numpy().ravel()
    assert 1 / EXPLICIT_SCALE_LIMIT * (1 - 1e-6) <= factors.min() and factors.max() <= EXPLICIT_SCALE_LIMIT * (1 + 1e-6)
    refs = ort_outputs(model, held)
    for ref, got in zip(refs, ort_outputs(smoothed, held)):
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-4, atol=1e-3)

    result = quantize(model, trt, calib, held, method="minmax", boosters=["smooth"])
    assert result.info["smoothing"]["kept"] is True
    # the range the readers' input is quantized with is the smoothed values' (from the
    # original's run mapped through the site's affine), as calibrating the rewrite directly gives
    direct = collect_statistics(smoothed, ["h"], calib).ranges("minmax")["h"]
    scale = next(n for n in result.model.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "h")
    expected = max(abs(direct[0]), abs(direct[1])) / 127
    assert scale.inputs[1].const_value.numpy().item() == pytest.approx(expected, rel=1e-4)
    plain = quantize(model, replace(trt, explicit_equalization=False), calib, held, method="minmax",
                     boosters=["smooth"])
    assert nmse(refs, ort_outputs(result.model, held)) < 0.75 * nmse(refs, ort_outputs(plain.model, held))  # 0.54


def test_a_smoothing_the_budget_rejects_all_int8_gives_way_to_the_plain_model():
    """Smoothing is kept by the judged error, a mean over a few samples; the budget is
    every sample's worst output. When the smoothed all-int8 model misses the budget, the
    same method unsmoothed is checked next, and the search starts from the one that met
    it or came closer (PP-OCRv3 det on TensorRT: smoothed judged 3x better, its worst
    page 0.975 against 0.984)."""
    from deploycomp.quant.sensitivity import Verdict

    model = _offset_channels(np.random.default_rng(1))
    calib, held = _samples(8, (1, 8, 8, 8)), _samples(2, (1, 8, 8, 8), seed=4)
    checked = []

    def rejects_smoothing(candidate: ir.Model) -> Verdict:
        smoothed = any("__shift" in name or "__eq" in name for name in candidate.graph.initializers)
        checked.append(smoothed)
        return Verdict(not smoothed, None, 0.97 if smoothed else 0.99)

    result = quantize(model, POLICY, calib, held, rejects_smoothing, method="percentile", boosters=["smooth"])
    record = result.info["smoothing"]
    assert record["nmse_all_int8_with"] < record["nmse_all_int8_without"]  # judged better ...
    assert checked[:2] == [True, False] and record["kept"] is False  # ... missed, and gave way
    assert [(c["smoothed"], c["met"]) for c in record["all_int8_checks"]] == [(True, False), (False, True)]
    assert "percentile smoothed had the least judged error" in record["budget_fallback"]
    assert result.info["budget_met"] is True and not result.info["float_layers"]
    assert "range_choice" not in result.info  # a fixed method chose no range
    auto = quantize(model, POLICY, calib, held, rejects_smoothing, method="auto", boosters=["smooth"])
    assert auto.info["smoothing"]["kept"] is False and auto.info["budget_met"] is True
    assert [c["smoothed"] for c in auto.info["range_choice"]["all_int8_checks"]][:2] == [True, False]


def test_explicit_smoothing_of_a_matmul_input_scales_its_last_axis():
    """A channels-last reader (MatMul) takes the explicit ``Mul`` along the last axis, and
    the float outputs stay."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="fc0"),
             helper.make_node("Tanh", ["h0"], ["t"], name="tanh"),
             helper.make_node("Mul", ["t", "loud"], ["u"], name="loud_mul"),
             helper.make_node("Tanh", ["u"], ["v"], name="tanh2"),
             helper.make_node("MatMul", ["v", "w1"], ["y"], name="fc1")]
    loud = np.where(np.arange(16) % 5 == 0, 1.0, 0.02)  # a few loud channels after the second Tanh
    model = _model(nodes, {"w0": rng.normal(size=(8, 16)) * 3, "loud": loud * 4, "w1": rng.normal(size=(16, 4))},
                   [10, 8], [10, 4])
    trt = POLICIES["tensorrt"]
    sites = searchable_sites(model, trt.compute_ops, explicit=True)
    assert [(s.site.tensor.name, s.site.channel_axis) for s in sites if s.site.explicit] == [("v", -1)]
    samples = _samples(6, (10, 8))
    smoothed = _copy(model)
    records = smooth(smoothed, trt, samples)
    assert [(r["tensor"], r.get("explicit_mul")) for r in records] == [("v", True)]
    mul = next(n for n in smoothed.graph if n.op_type == "Mul" and n.outputs[0].name == "v")
    assert mul.inputs[1].const_value.numpy().shape == (1, 16)
    for ref, got in zip(ort_outputs(model, samples), ort_outputs(smoothed, samples)):
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-4, atol=1e-4)
