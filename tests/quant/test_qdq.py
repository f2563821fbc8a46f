"""QDQ placement and encoding, per policy, on a small conv net, and its numeric effect."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from deploycomp.ir import load_model
from deploycomp.passes import build_pipeline, run_passes
from deploycomp.quant import POLICIES, quantize
from deploycomp.quant.qdq import activation_params, fake_quantize


def _model(tiny_conv):
    model, _ = run_passes(load_model(tiny_conv).model, build_pipeline("default", {"x": (1, 3, 16, 16)}))
    return model


def _run(model: ir.Model, x):
    return ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(n)]


def test_activation_encodings():
    s, zp = activation_params(-1.0, 3.0, "uint8", False)
    assert zp.dtype == np.uint8 and int(zp) == 64 and s == pytest.approx(4 / 255)
    s, zp = activation_params(0.5, 2.0, "uint8", False)  # range widened to contain 0
    assert int(zp) == 0 and s == pytest.approx(2 / 255)
    s, zp = activation_params(-1.0, 3.0, "int8", True)
    assert zp.dtype == np.int8 and int(zp) == 0 and s == pytest.approx(3 / 127)


@pytest.mark.parametrize("dtype,symmetric", [("uint8", False), ("int8", False), ("int8", True)])
def test_per_channel_encodings_are_each_channels_own(dtype, symmetric):
    lo = np.array([-1.0, 0.0, 0.5, -3e-9, -2.0], np.float32)  # one-signed, empty and tiny ranges too
    hi = np.array([3.0, 0.0, 2.0, 1e-9, -1.0], np.float32)
    scales, zps = activation_params(lo, hi, dtype, symmetric)
    assert scales.dtype == np.float32 and zps.dtype == np.dtype(dtype) and scales.shape == zps.shape == (5,)
    for c in range(5):
        s, zp = activation_params(float(lo[c]), float(hi[c]), dtype, symmetric)
        assert scales[c] == s and zps[c] == zp and zp.shape == ()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_numpy_fake_quantize_matches_onnx_per_tensor(dtype):
    x = (np.random.default_rng(5).standard_normal((1, 4, 8, 8)) * 3).astype(np.float32)
    scale, zp = activation_params(-2.0, 5.0, dtype, False)  # both ends saturate somewhere
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), numpy_helper.from_array(zp, "z")])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString())
    np.testing.assert_allclose(fake_quantize(x, scale, zp), session.run(None, {"x": x})[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("policy", ["openvino", "tensorrt", "tflite"])
def test_policy_places_qdq_on_compute_inputs(tiny_conv, policy):
    model = _model(tiny_conv)
    result = quantize(model, POLICIES[policy], _samples(6), [], boosters=())  # placement alone: no bias added
    ops = Counter(n.op_type for n in result.model.graph)
    # Conv and Gemm: one activation QDQ pair each, one weight DequantizeLinear each (+ the
    # Conv's int32 bias for TFLite; the Gemm has no bias). TFLite also quantizes their
    # outputs: the conv's after its Relu (fused there) and the logits before the Softmax.
    int32_bias = POLICIES[policy].int32_bias
    outputs = 2 if POLICIES[policy].quantize_outputs else 0
    assert ops["QuantizeLinear"] == 2 + outputs and ops["DequantizeLinear"] == 4 + int32_bias + outputs
    if outputs:
        relu = next(n for n in result.model.graph if n.op_type == "Relu")
        assert [c.op_type for c, _ in relu.outputs[0].uses()] == ["QuantizeLinear"]
    for node in result.model.graph:
        if node.op_type == "QuantizeLinear":
            zp = node.inputs[2].const_value.numpy()
            assert zp.dtype == (np.uint8 if POLICIES[policy].activation_dtype == "uint8" else np.int8)
            if POLICIES[policy].activation_symmetric:
                assert int(zp) == 0
        if node.op_type == "DequantizeLinear" and node.inputs[0].const_value is not None:
            stored = node.inputs[0].const_value.numpy().dtype
            assert stored == np.int8 or (int32_bias and stored == np.int32)  # weights int8, biases int32
            assert node.inputs[2].const_value.numpy().max() == 0  # symmetric
    assert all(v.uses() for v in result.model.graph.initializers.values()), "float copies of int8 weights remain"
    x = _samples(1, seed=9)[0]["x"]
    ref, got = _run(model, x), _run(result.model, x)
    cos = float(np.dot(ref.ravel(), got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.999


def test_keep_float_pattern_leaves_node_unquantized(tiny_conv):
    result = quantize(_model(tiny_conv), POLICIES["openvino"], _samples(4), [], keep_float=["fc*"])
    assert result.info["float_layers"] == ["fc"]
    gemm = next(n for n in result.model.graph if n.op_type == "Gemm")
    assert all(v.producer() is None or v.producer().op_type != "DequantizeLinear" for v in gemm.inputs)
    # an exact name that holds glob characters names its layer ("model/conv[0]" had matched
    # nothing, and the error listed that very name)
    model = _model(tiny_conv)
    next(n for n in model.graph if n.op_type == "Gemm").name = "model/fc[0]"
    result = quantize(model, POLICIES["openvino"], _samples(4), [], keep_float=["model/fc[0]"])
    assert result.info["float_layers"] == ["model/fc[0]"]


def test_sensitivity_keeps_the_fewest_float_layers_that_meet_the_budget(tiny_conv):
    model = _model(tiny_conv)
    calls = []

    def budget(candidate):  # pretend only a float Gemm meets the budget
        gemm = next(n for n in candidate.graph if n.op_type == "Gemm")
        calls.append(gemm.inputs[1].producer() is None)
        return calls[-1]

    result = quantize(model, POLICIES["openvino"], _samples(6), _samples(2, seed=5), budget)
    assert result.info["budget_met"] and result.info["float_layers"] == ["fc"]
    assert calls[0] is False  # all-int8 was tried first
    assert [s["node"] for s in result.info["sensitivity"]] and result.info["int8_layers"] == 1


def test_tflite_policy_stores_int32_biases_scaled_by_input_times_weight(tiny_conv):
    result = quantize(_model(tiny_conv), POLICIES["tflite"], _samples(6), [])
    graph = list(result.model.graph)
    conv = next(n for n in graph if n.op_type == "Conv")
    bias_dq = conv.inputs[2].producer()
    assert bias_dq.op_type == "DequantizeLinear" and bias_dq.inputs[0].const_value.numpy().dtype == np.int32
    act_scale = float(conv.inputs[0].producer().inputs[1].const_value.numpy())
    w_scale = conv.inputs[1].producer().inputs[1].const_value.numpy()
    np.testing.assert_allclose(bias_dq.inputs[1].const_value.numpy(), act_scale * w_scale, rtol=1e-6)
    openvino = quantize(_model(tiny_conv), POLICIES["openvino"], _samples(6), [])
    conv = next(n for n in openvino.model.graph if n.op_type == "Conv")
    assert conv.inputs[2].producer() is None  # float bias elsewhere


@pytest.mark.parametrize("bias_shape", [(1, 6), (), (6,)])
def test_tflite_int32_bias_of_a_gemm_is_one_value_per_output_channel(bias_shape):
    """A Gemm's C broadcast over the rows ((1, N) from a MatMul + Add exported as Gemm, or
    a scalar) becomes an int32 vector of N (what ONNX Runtime's per-axis DequantizeLinear
    and TFLite's FULLY_CONNECTED take): a (1, N) C crashed ONNX Runtime before (a JAX-exported
    file-type classifier)."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 6)).astype(np.float32)
    c = rng.normal(size=bias_shape).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")])
    model = ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    samples = [{"x": rng.normal(size=(1, 8)).astype(np.float32)} for _ in range(6)]
    result = quantize(model, POLICIES["tflite"], samples, [])
    gemm = next(n for n in result.model.graph if n.op_type == "Gemm")
    bias_dq = gemm.inputs[2].producer()
    assert bias_dq.op_type == "DequantizeLinear" and bias_dq.inputs[0].const_value.numpy().shape == (6,)
    assert bias_dq.inputs[0].const_value.numpy().dtype == np.int32
    got = ort.InferenceSession(ir.to_proto(result.model).SerializeToString()).run(None, samples[0])[0]
    want = samples[0]["x"] @ w + c
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_tflite_policy_shares_scales_fixes_logistic_and_quantizes_affine_ops():
    """What TFLite's int8 kernels require: MaxPool's output carries its input's scale, a
    Sigmoid writes scale 1/256 zero point -128, and x * a + b after an activation is quantized."""
    import onnx

    from tests.passes._harness import model_from_text

    rng = np.random.default_rng(0)
    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[1, 3, 8, 8] x, float[4, 3, 1, 1] k,
              float[4, 4, 1, 1] k2, float[] a, float[] b) => (float[1, 4, 4, 4] y)
    { c = Conv (x, k)
      s = Sigmoid (c)
      m = Mul (c, s)
      h = Mul (m, a)
      p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (h)
      q = Add (p, b)
      y = Conv (q, k2) }"""
    proto = model_from_text(text, k=rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
                            k2=rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
                            a=np.float32(0.5), b=np.float32(0.25))
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    qdq = quantize(model, POLICIES["tflite"], samples, []).model
    quantizers = {n.inputs[0].name: n for n in qdq.graph if n.op_type == "QuantizeLinear"}
    params = {name: (float(q.inputs[1].const_value.numpy()), int(q.inputs[2].const_value.numpy()))
              for name, q in quantizers.items()}
    assert params["s"] == (pytest.approx(1 / 256), -128)
    assert params["p"] == params["h"], "MaxPool keeps its input's scale"
    assert {"c", "m", "h", "q"} <= set(params), sorted(params)  # outputs of Conv, Mul, Mul-by-constant, Add


def test_no_ranking_when_every_layer_int8_already_meets_the_budget(tiny_conv, monkeypatch):
    import deploycomp.quant as quant

    monkeypatch.setattr(quant, "sensitivity_ranking", lambda *a, **k: pytest.fail("ranked although all-int8 met the budget"))
    result = quantize(_model(tiny_conv), POLICIES["openvino"], _samples(6), _samples(2, seed=5), lambda m: True)
    assert result.info["budget_met"] and result.info["float_layers"] == [] and result.info["sensitivity"] == []
    assert "no ranking needed" in result.info["sensitivity_note"]


@pytest.mark.parametrize("profile, qmax", [("intel-core-avx2", 63), ("intel-xeon-avx512-vnni", 127),
                                           ("intel-xeon-amx", 127), ("jetson-orin-nano", 127),
                                           ("raspberry-pi-5", 127)])
def test_weights_are_7_bit_where_the_cpu_kernel_saturates(tiny_conv, profile, qmax):
    """u8 x s8 pairs add into a saturating int16 without VNNI/AMX: 7-bit weights there."""
    from deploycomp.quant import policy_for
    from deploycomp.targets import load_target

    target = load_target(profile)
    policy = policy_for(target.backend, target.cpu_features)
    assert policy.weight_qmax == qmax
    result = quantize(_model(tiny_conv), policy, _samples(6), [])
    for node in result.model.graph:
        if node.op_type == "DequantizeLinear" and node.inputs[0].const_value is not None:
            stored = node.inputs[0].const_value.numpy()
            if stored.dtype == np.int8:
                assert np.abs(stored.astype(int)).max() == qmax  # each channel's largest weight at the edge


def test_full_integer_outputs_that_are_also_read_inside_or_are_inputs(tmp_path):
    """--int8-io quantizes graph outputs. An output that an int8 layer also reads gets two
    QDQ pairs (distinct names: ONNX Runtime refuses duplicates), and an output that is a
    graph input stays as it is (renaming it would rename the input)."""
    from dataclasses import replace

    from tests.passes._harness import model_from_text

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3, 8, 8] x) => (float[1, 4, 8, 8] c, float[1, 4, 8, 8] d, float[1, 3, 8, 8] x) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        d = Conv (c, w2)
    }
    """
    rng = np.random.default_rng(0)
    proto = model_from_text(text, w=rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                            w2=rng.standard_normal((4, 4, 1, 1)).astype(np.float32))
    model = ir.from_proto(proto)
    samples = [{"x": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(4)]
    policy = replace(POLICIES["tflite"], quantize_graph_outputs=True)
    result = quantize(model, policy, samples, [], boosters=())
    names = [n.name for n in result.model.graph if n.name]
    assert len(names) == len(set(names))
    assert [v.name for v in result.model.graph.outputs] == ["c", "d", "x"]
    assert [v.name for v in result.model.graph.inputs] == ["x"]
    session = ort.InferenceSession(ir.to_proto(result.model).SerializeToString())
    c, d, x = session.run(None, samples[0])
    np.testing.assert_array_equal(x, samples[0]["x"])
    ref = ort.InferenceSession(proto.SerializeToString()).run(None, samples[0])
    assert np.corrcoef(c.ravel(), ref[0].ravel())[0, 1] > 0.99


@pytest.mark.parametrize("full_integer", [False, True])
def test_scale_arithmetic_on_one_value_stays_float_unless_every_op_must_be_int8(full_integer):
    """A Mul whose only activation is one value (the float form of ONNX Runtime's dynamic
    quantization multiplies an input's scale by a weight's) saves nothing int8 and clips
    where an input's range is wider than the calibration inputs': TFLite's policy leaves it
    float, its full-integer form (every op int8) quantizes it."""
    from dataclasses import replace

    from deploycomp.quant.qdq import quantizable_tensors
    from tests.passes._harness import model_from_text

    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[1, 8] x, float[8, 4] w, float[] ws)
              => (float[1, 4] y)
    { top = ReduceMax <keepdims = 0> (x)
      scale = Mul (top, ws)
      m = MatMul (x, w)
      y = Mul (m, scale) }"""
    rng = np.random.default_rng(0)
    proto = model_from_text(text, w=rng.standard_normal((8, 4)).astype(np.float32), ws=np.float32(0.01))
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    policy = POLICIES["tflite"]
    policy = replace(policy, quantize_graph_outputs=True) if full_integer else policy
    readers = {node.name or node.outputs[0].name for uses in quantizable_tensors(model, policy).values()
               for node, _ in uses}
    assert ("scale" in readers) == full_integer  # the Mul of two scalars
    assert {"m", "y"} <= readers  # the MatMul and the Mul by the scale: a tensor of 4 values


def _photo_crops(n: int, size: int = 24) -> list[dict[str, np.ndarray]]:
    """Crops of a real photo, pixels 0..255 as the model reads them (one-sided)."""
    from skimage import data

    photo = data.astronaut().astype(np.float32)  # (512, 512, 3)
    corners = [(97 * i % (512 - size), 61 * i % (512 - size)) for i in range(1, n + 1)]
    crops = [photo[r:r + size, c:c + size].transpose(2, 0, 1)[None] for r, c in corners]
    return [{"x": np.ascontiguousarray(c)} for c in crops]


def _one_sided_net(tmp_path):
    """0..255 image -> 3x3 conv (pads 1) -> Relu -> 3x3 depthwise (pads 1, stride 2) -> Relu
    -> 1x1 conv: every conv reads a one-sided tensor."""
    rng = np.random.default_rng(3)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), f"w{len(s)}_{s[0]}_{s[1]}")
    inits = [w(8, 3, 3, 3), numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             w(8, 1, 3, 3), w(6, 8, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "w4_8_3", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w4_8_1"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8, name="c2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w4_6_8"], ["y"], name="c3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 24, 24])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6, 12, 12])], inits)
    path = tmp_path / "one_sided.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (1, 3, 24, 24)}))
    return model


def _without_activation_qdq(model: ir.Model) -> ir.Model:
    """``model`` with every activation QuantizeLinear -> DequantizeLinear pair bypassed: its
    int8 weights and whatever else the encoding rewrote, in float."""
    model = ir.from_proto(ir.to_proto(model))
    for dq in [n for n in model.graph if n.op_type == "DequantizeLinear"]:
        q = dq.inputs[0].producer()
        if q is not None and q.op_type == "QuantizeLinear":
            for user, index in list(dq.outputs[0].uses()):
                user.replace_input_with(index, q.inputs[0])
    return model


def _exact(model: ir.Model, x: np.ndarray) -> np.ndarray:
    """The output with the QDQ arithmetic as written (ONNX Runtime's own int8 fusions off)."""
    from deploycomp.quant.sensitivity import ort_outputs

    (out,) = ort_outputs(model, [{"x": x}])
    return next(iter(out.values()))


def _nmse(ref, got) -> float:
    return float(((ref - got) ** 2).sum() / (ref ** 2).sum())


def test_tensorrt_shifts_one_sided_conv_inputs_exactly_and_halves_their_step(tmp_path):
    """TensorRT takes zero point 0 only: an image in 0..255 or a ReLU's output would use half
    the int8 codes. Each conv instead reads its input less the middle of its range (pads made
    explicit before the shift), the shift folded into its bias: in float that is the same
    model, and the int8 step is the asymmetric one's, so the error falls about fourfold."""
    from dataclasses import replace

    model = _one_sided_net(tmp_path)
    calibration, held = _photo_crops(8), _photo_crops(14)[8:]
    policy = POLICIES["tensorrt"]
    shifted = quantize(model, policy, calibration, [], boosters=(), method="minmax").model
    plain = quantize(model, replace(policy, shift_one_sided=False), calibration, [], boosters=(), method="minmax").model

    ops = Counter(n.op_type for n in shifted.graph)
    assert ops["Sub"] == 3 and ops["Pad"] == 2  # three one-sided conv inputs, two of them padded
    assert all(not any(n.attributes["pads"].as_ints()) for n in shifted.graph
               if n.op_type == "Conv" and "pads" in n.attributes)
    def scales(m):
        return {n.inputs[0].name: float(n.inputs[1].const_value.numpy()) for n in m.graph if n.op_type == "QuantizeLinear"}

    # [0, hi] less hi / 2: the symmetric step hi / 254, not hi / 127
    assert scales(shifted)["x__shifted"] == pytest.approx(scales(plain)["x"] / 2, rel=1e-5)

    errors = []
    for sample in held:
        x = sample["x"]
        # exact in float: the shifted graph without its activation QDQ is the plain one's
        int8_weights = _exact(_without_activation_qdq(plain), x)
        assert np.allclose(_exact(_without_activation_qdq(shifted), x), int8_weights, rtol=1e-4, atol=1e-3)
        # what the activations' encoding adds (the weights' rounding is the same in both)
        errors.append((_nmse(int8_weights, _exact(shifted, x)), _nmse(int8_weights, _exact(plain, x))))
    ratios = [shifted_error / plain_error for shifted_error, plain_error in errors]
    assert max(ratios) < 1 and np.median(ratios) < 0.5, ratios  # fourfold in theory: half the step


@pytest.mark.parametrize("layer", ["MatMul", "Gemm"])
def test_tensorrt_shift_folds_into_a_linear_layers_bias(layer):
    """A ReLU's output read by a MatMul (its bias the Add after it) or by a Gemm (``C``, through
    ``alpha`` and ``beta``) is shifted too; the input, two-sided, is not."""
    from dataclasses import replace

    rng = np.random.default_rng(4)
    w1, w2 = rng.standard_normal((16, 32)).astype(np.float32), rng.standard_normal((32, 8)).astype(np.float32)
    b1, b2 = rng.standard_normal(32).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    if layer == "MatMul":
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h"]),
                 helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["m2"]),
                 helper.make_node("Add", ["m2", "b2"], ["y"])]
        inits = [w1, w2, b1, b2]
    else:  # the second layer's B stored transposed, with alpha and beta
        nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, alpha=0.5, beta=2.0)]
        inits = [w1, w2.T.copy(), b1, b2]
    names = ["w1", "w2", "b1", "b2"]
    graph = helper.make_graph([*nodes], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])],
                              [numpy_helper.from_array(a, n) for a, n in zip(inits, names)])
    model = ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    for i, node in enumerate(model.graph):
        node.name = f"n{i}"
    samples = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(10)]
    policy = POLICIES["tensorrt"]
    shifted = quantize(model, policy, samples[:8], [], boosters=(), method="minmax").model
    plain = quantize(model, replace(policy, shift_one_sided=False), samples[:8], [], boosters=(), method="minmax").model
    subs = [n for n in shifted.graph if n.op_type == "Sub"]
    assert [n.inputs[0].name for n in subs] == ["r"]  # the ReLU's output; x is two-sided
    errors = []
    for sample in samples[8:]:
        x = sample["x"]
        int8_weights = _exact(_without_activation_qdq(plain), x)
        assert np.allclose(_exact(_without_activation_qdq(shifted), x), int8_weights, rtol=1e-4, atol=1e-4)
        errors.append(_nmse(int8_weights, _exact(shifted, x)) / _nmse(int8_weights, _exact(plain, x)))
    assert max(errors) < 1, errors


def test_a_recurrent_layer_counts_in_the_mac_share_but_never_as_an_int8_layer():
    """No QDQ enters an LSTM: its MACs stay float (the share says so) and the count of int8
    layers holds only the MatMul after it (it said 2 here, a French spelling model's 6 of 4
    heavy layers)."""
    rng = np.random.default_rng(0)
    hidden, inputs = 8, 4
    w = rng.standard_normal((1, 4 * hidden, inputs)).astype(np.float32)
    r = rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32)
    m = rng.standard_normal((hidden, 3)).astype(np.float32)
    nodes = [helper.make_node("LSTM", ["x", "w", "r"], ["seq"], hidden_size=hidden, name="lstm"),
             helper.make_node("Squeeze", ["seq", "axis"], ["h"]),
             helper.make_node("MatMul", ["h", "m"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5, 1, inputs])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [5, 1, 3])],
                              [numpy_helper.from_array(a, n) for a, n in
                               [(w, "w"), (r, "r"), (m, "m"), (np.array([1], np.int64), "axis")]])
    model = ir.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    samples = [{"x": rng.standard_normal((5, 1, inputs)).astype(np.float32)} for _ in range(4)]
    info = quantize(model, POLICIES["openvino"], samples, [], boosters=()).info
    assert info["int8_layers"] == 1
    assert 0 < info["int8_mac_share"] < 0.2  # the LSTM's 5 x 4 x (32 x 4 + 32 x 8) MACs stay float
