"""Every TFLite lowering rule against ONNX Runtime on a small graph, awkward cases included.

Each case is ONNX text; names given as weights become random initializers. The model
is shape-inferred, lowered by deploycomp, run in LiteRT's interpreter through the
runner (which takes and returns ONNX layout), and compared with ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from deploycomp.errors import UnsupportedError
from tests.passes._harness import model_from_text

pytest.importorskip("ai_edge_litert", reason="TFLite tests need the tflite extra (ai-edge-litert)")

from deploycomp.backends.tflite.adapter import TFLiteRunner  # noqa: E402
from deploycomp.backends.tflite.lowering import Lowering  # noqa: E402

R = np.random.default_rng(0)


def w(*shape, scale=0.5):
    return (R.standard_normal(shape) * scale).astype(np.float32)


def lower(tmp_path, model: onnx.ModelProto, feeds: dict, io_layout="nhwc", precision="fp32", atol=1e-4, rtol=1e-4):
    """Lower, run both, compare; returns the TFLite op histogram."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    result = Lowering(ir.from_proto(model), precision, io_layout).run()
    path = tmp_path / "m.tflite"
    path.write_bytes(result.flatbuffer)
    got = TFLiteRunner(path, result.io_layouts).run(feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for name, want in zip(names, session.run(names, feeds)):
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, atol=atol, rtol=rtol, err_msg=name)
    return result.op_counts


def image(*shape):
    return {"x": R.standard_normal(shape).astype(np.float32)}


G = "<ir_version: 8, opset_import: [\"\" : 18]>"

CONV_CASES = {
    "asymmetric pads": ("pads = [0, 1, 2, 1]", 8, (4, 3, 3, 3)),
    "stride 2, pads 1, even input (pad at the start)": ("strides = [2, 2], pads = [1, 1, 1, 1]", 8, (4, 3, 3, 3)),
    "stride 2, odd input, SAME matches": ("strides = [2, 2], pads = [1, 1, 1, 1]", 9, (4, 3, 3, 3)),
    "dilation 2": ("dilations = [2, 2], pads = [2, 2, 2, 2]", 9, (4, 3, 3, 3)),
    "auto_pad SAME_UPPER stride 2": ("auto_pad = \"SAME_UPPER\", strides = [2, 2]", 8, (4, 3, 3, 3)),
    "auto_pad SAME_LOWER stride 2": ("auto_pad = \"SAME_LOWER\", strides = [2, 2]", 8, (4, 3, 3, 3)),
    "rectangular kernel and strides": ("kernel_shape = [1, 3], strides = [1, 2], pads = [0, 1, 0, 1]", 8, (4, 3, 1, 3)),
    "1x1": ("", 8, (5, 3, 1, 1)),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_padding_strides_dilations(tmp_path, case):
    attrs, size, wshape = CONV_CASES[case]
    out = "float[1, 4, N, M]".replace("4", str(wshape[0]))
    text = f"""{G} g (float[1, 3, {size}, {size}] x, float{list(wshape)} w, float[{wshape[0]}] b) => ({out} y)
    {{ y = Conv <{attrs}> (x, w, b) }}""".replace("<>", "")
    ops = lower(tmp_path, model_from_text(text, w=w(*wshape), b=w(wshape[0])), image(1, 3, size, size))
    assert ops.get("CONV_2D") == 1 and "TRANSPOSE" not in ops


def test_depthwise_with_multiplier_and_grouped_conv(tmp_path):
    text = f"""{G} g (float[1, 4, 10, 10] x, float[8, 1, 3, 3] dw, float[6, 2, 3, 3] gw) => (float[1, 6, 10, 10] y)
    {{ d = Conv <group = 4, pads = [1, 1, 1, 1]> (x, dw)
       y = Conv <group = 2, pads = [1, 1, 1, 1]> (d, gw) }}"""
    # the grouped conv reads 8 channels in 2 groups of 4: filter input depth 4 -> weights (6, 4, 3, 3)
    text = text.replace("float[6, 2, 3, 3] gw", "float[6, 4, 3, 3] gw")
    ops = lower(tmp_path, model_from_text(text, dw=w(8, 1, 3, 3), gw=w(6, 4, 3, 3)), image(1, 4, 10, 10))
    assert ops["DEPTHWISE_CONV_2D"] == 1 and ops["CONV_2D"] == 1


@pytest.mark.parametrize("attrs,size,wshape", [
    ("strides = [2, 2]", 5, (3, 4, 2, 2)),
    ("strides = [2, 2], pads = [1, 1, 1, 1], output_padding = [1, 1]", 5, (3, 4, 3, 3)),
])
def test_conv_transpose(tmp_path, attrs, size, wshape):
    text = f"""{G} g (float[1, 3, {size}, {size}] x, float{list(wshape)} w, float[{wshape[1]}] b) => (float[1, {wshape[1]}, N, M] y)
    {{ y = ConvTranspose <{attrs}> (x, w, b) }}"""
    ops = lower(tmp_path, model_from_text(text, w=w(*wshape), b=w(wshape[1])), image(1, 3, size, size))
    assert ops["TRANSPOSE_CONV"] == 1


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", "kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]"),
    ("MaxPool", "kernel_shape = [2, 2], strides = [2, 2], ceil_mode = 1"),
    ("MaxPool", "kernel_shape = [5, 5], pads = [2, 2, 2, 2]"),
    ("AveragePool", "kernel_shape = [3, 3], pads = [1, 1, 1, 1], count_include_pad = 0"),
    ("AveragePool", "kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1], count_include_pad = 1"),
    ("AveragePool", "kernel_shape = [3, 2], strides = [3, 2]"),
])
def test_pooling(tmp_path, op, attrs):
    text = f"""{G} g (float[1, 3, 9, 9] x) => (float[1, 3, N, M] y) {{ y = {op} <{attrs}> (x) }}"""
    lower(tmp_path, model_from_text(text), image(1, 3, 9, 9))


@pytest.mark.parametrize("mode,out_hw,count", [
    ('mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"', (16, 12), "D2S"),
    ('mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"', (24, 12), "NEAREST"),
    ('mode = "nearest", coordinate_transformation_mode = "half_pixel", nearest_mode = "round_prefer_ceil"', (13, 9), "NEAREST"),
    ('mode = "linear", coordinate_transformation_mode = "half_pixel"', (13, 9), "BILINEAR"),
    ('mode = "linear", coordinate_transformation_mode = "align_corners"', (13, 9), "BILINEAR"),
    ('mode = "linear", coordinate_transformation_mode = "asymmetric"', (16, 12), "BILINEAR"),
])
def test_resize_modes(tmp_path, mode, out_hw, count):
    text = f"""{G} g (float[1, 3, 8, 6] x, int64[4] sizes) => (float[1, 3, {out_hw[0]}, {out_hw[1]}] y)
    {{ y = Resize <{mode}> (x, , , sizes) }}"""
    model = model_from_text(text, sizes=np.array([1, 3, *out_hw], np.int64))
    ops = lower(tmp_path, model, image(1, 3, 8, 6))
    if count == "D2S":  # integer nearest upsampling: copies + DEPTH_TO_SPACE, which XNNPACK runs
        assert ops == {"CONCATENATION": 1, "DEPTH_TO_SPACE": 1}
    else:
        assert ops[f"RESIZE_{count}" + ("_NEIGHBOR" if count == "NEAREST" else "")] == 1


def test_resize_cubic_is_refused_by_name(tmp_path):
    text = f"""{G} g (float[1, 3, 8, 6] x, int64[4] sizes) => (float[1, 3, 16, 12] y)
    {{ y = Resize <mode = "cubic"> (x, , , sizes) }}"""
    model = onnx.shape_inference.infer_shapes(model_from_text(text, sizes=np.array([1, 3, 16, 12], np.int64)))
    with pytest.raises(UnsupportedError, match="Resize mode=cubic"):
        Lowering(ir.from_proto(model)).run()


def test_elementwise_broadcasting_in_nhwc(tmp_path):
    """Constants of every rank broadcast correctly once the conv output is stored NHWC."""
    text = f"""{G} g (float[1, 3, 6, 6] x, float[4, 3, 1, 1] k, float[4, 1, 1] c, float[6] row, float[1, 6, 6] plane,
                      float[] s) => (float[1, 4, 6, 6] y)
    {{ a = Conv (x, k)
       b = Add (a, c)
       d = Mul (b, row)
       e = Sub (plane, d)
       f = Div (e, s)
       g2 = Max (f, row)
       h = Pow (g2, s)
       y = Min (h, c) }}"""
    model = model_from_text(text, k=w(4, 3, 1, 1), c=w(4, 1, 1), row=w(6), plane=w(1, 6, 6),
                            s=np.array(2.0, np.float32))
    ops = lower(tmp_path, model, image(1, 3, 6, 6))
    assert "TRANSPOSE" not in ops and "POW" not in ops  # x**2 becomes MUL


def test_binary_of_two_layouts_and_a_lower_rank_dynamic_operand(tmp_path):
    text = f"""{G} g (float[1, 3, 4, 5] x, float[4, 5] t, float[3, 3, 1, 1] k) => (float[1, 3, 4, 5] y)
    {{ a = Conv (x, k)
       b = Add (a, x)
       y = Mul (b, t) }}"""
    feeds = image(1, 3, 4, 5) | {"t": w(4, 5)}
    lower(tmp_path, model_from_text(text, k=w(3, 3, 1, 1)), feeds)


@pytest.mark.parametrize("body,fused", [
    ("y = Relu (a)", True),
    ("y = Clip (a, lo, hi)", False),
    ("y = Clip (a, zero, six)", True),
    ("y = HardSigmoid <alpha = 0.2, beta = 0.5> (a)", False),
    ("y = HardSwish (a)", False),
    ("y = LeakyRelu <alpha = 0.1> (a)", False),
    ("y = Sigmoid (a)", False),
    ("y = Tanh (a)", False),
    ("y = Gelu (a)", False),
    ("y = Gelu <approximate = \"tanh\"> (a)", False),
    ("y = BatchNormalization (a, sc, bi, mu, va)", False),
])
def test_activations_and_batchnorm(tmp_path, body, fused):
    text = f"""<ir_version: 9, opset_import: ["" : 20]> g (float[1, 3, 6, 6] x, float[4, 3, 3, 3] k, float[] lo, float[] hi,
       float[] zero, float[] six, float[4] sc, float[4] bi, float[4] mu, float[4] va) => (float[1, 4, 6, 6] y)
    {{ a = Conv <pads = [1, 1, 1, 1]> (x, k)
       {body} }}"""
    model = model_from_text(text, k=w(4, 3, 3, 3, scale=2.0), lo=np.float32(-0.5), hi=np.float32(0.7),
                            zero=np.float32(0), six=np.float32(6), sc=w(4), bi=w(4), mu=w(4),
                            va=np.abs(w(4)) + 0.5)
    ops = lower(tmp_path, model, image(1, 3, 6, 6))
    assert (sum(ops.values()) == 1) == fused


@pytest.mark.parametrize("body,out", [
    ("y = Reshape (a, shp)", "float[1, 4, 36] y"),  # merges H, W: stays NHWC, no transpose
    ("y = Flatten <axis = 1> (a)", "float[1, 144] y"),  # C, H, W merged: needs ONNX order
    ("y = Transpose <perm = [0, 2, 3, 1]> (a)", "float[1, 6, 6, 4] y"),
    ("y = Unsqueeze (a, ax)", "float[1, 4, 1, 6, 6] y"),
    ("t = Transpose <perm = [0, 1, 3, 2]> (a)\n y = Softmax <axis = 1> (t)", "float[1, 4, 6, 6] y"),
    ("y = LogSoftmax <axis = -1> (a)", "float[1, 4, 6, 6] y"),
    ("y = ReduceMean <keepdims = 0> (a, axes)", "float[1, 6] y"),
    ("y = ReduceMax <keepdims = 1> (a, axes)", "float[1, 1, 6, 1] y"),
    ("y = GlobalAveragePool (a)", "float[1, 4, 1, 1] y"),
    ("y = ArgMax <axis = 1, keepdims = 1> (a)", "int64[1, 1, 6, 6] y"),
    ("y = Pad <mode = \"reflect\"> (a, pads)", "float[1, 4, 8, 9] y"),
    ("y = Pad (a, pads, pv)", "float[1, 4, 8, 9] y"),
    ("y = Gather <axis = 1> (a, idx1)", "float[1, 2, 6, 6] y"),
    ("y = Gather <axis = -1> (a, idx0)", "float[1, 4, 6] y"),
    ("y = Slice (a, st, en, sax, ssteps)", "float[1, 4, 3, 2] y"),
])
def test_layout_sensitive_ops_after_a_conv(tmp_path, body, out):
    text = f"""{G} g (float[1, 3, 6, 6] x, float[4, 3, 3, 3] k, int64[3] shp, int64[1] ax, int64[2] axes,
                      int64[8] pads, float[] pv, int64[2] idx1, int64[] idx0, int64[2] st, int64[2] en, int64[2] sax,
                      int64[2] ssteps) => ({out})
    {{ a = Conv <pads = [1, 1, 1, 1]> (x, k)
       {body} }}"""
    model = model_from_text(
        text, k=w(4, 3, 3, 3), shp=np.array([1, 4, 36]), ax=np.array([-3]), axes=np.array([1, -1]),
        pads=np.array([0, 0, 1, 2, 0, 0, 1, 1]), pv=np.float32(1.5), idx1=np.array([3, -4]), idx0=np.array(-1),
        st=np.array([-1, 0]), en=np.array([-7, 100]), sax=np.array([2, 3]), ssteps=np.array([-2, 3]))
    lower(tmp_path, model, image(1, 3, 6, 6))


def test_concat_split_and_slice_keep_nhwc(tmp_path):
    text = f"""{G} g (float[1, 3, 6, 6] x, float[4, 3, 1, 1] k, float[1, 2, 6, 6] c) => (float[1, 3, 6, 6] y, float[1, 3, 6, 6] z)
    {{ a = Conv (x, k)
       b = Concat <axis = -3> (a, c)
       p, q = Split <axis = 1, num_outputs = 2> (b)
       y = Relu (p)
       z = Sigmoid (q) }}"""
    ops = lower(tmp_path, model_from_text(text, k=w(4, 3, 1, 1), c=w(1, 2, 6, 6)), image(1, 3, 6, 6))
    assert "TRANSPOSE" not in ops


def test_matmul_gemm_and_layer_norm(tmp_path):
    text = f"""{G} g (float[1, 5, 8] x, float[8, 6] m, float[6] gamma, float[6] beta, float[2, 6] gw, float[2] gb,
                      float[1, 5, 6] r) => (float[1, 5, 5] att, float[5, 2] logits)
    {{ a = MatMul (x, m)
       n = LayerNormalization <axis = -1, epsilon = 0.001> (a, gamma, beta)
       t = Transpose <perm = [0, 2, 1]> (r)
       att = MatMul (n, t)
       f = Reshape (n, shp)
       logits = Gemm <transB = 1, alpha = 0.5, beta = 2.0> (f, gw, gb) }}"""
    text = text.replace("float[1, 5, 6] r)", "float[1, 5, 6] r, int64[2] shp)")
    model = model_from_text(text, m=w(8, 6), gamma=w(6), beta=w(6), gw=w(2, 6), gb=w(2), shp=np.array([5, 6]))
    ops = lower(tmp_path, model, {"x": w(1, 5, 8), "r": w(1, 5, 6)})
    assert ops["FULLY_CONNECTED"] == 2 and ops["BATCH_MATMUL"] == 1 and "TRANSPOSE" not in ops


def test_gemm_trans_a(tmp_path):
    text = f"""{G} g (float[6, 3] x, float[6, 4] b) => (float[3, 4] y) {{ y = Gemm <transA = 1> (x, b) }}"""
    lower(tmp_path, model_from_text(text, b=w(6, 4)), {"x": w(6, 3)})


def test_nchw_io_layout_puts_transposes_only_at_the_boundary(tmp_path):
    text = f"""{G} g (float[1, 3, 8, 8] x, float[4, 3, 3, 3] k) => (float[1, 4, 8, 8] y)
    {{ a = Conv <pads = [1, 1, 1, 1]> (x, k)
       y = Relu (a) }}"""
    model = model_from_text(text, k=w(4, 3, 3, 3))
    assert "TRANSPOSE" not in lower(tmp_path, model, image(1, 3, 8, 8), io_layout="nhwc")
    assert lower(tmp_path, model, image(1, 3, 8, 8), io_layout="nchw")["TRANSPOSE"] == 2


def test_an_input_the_model_takes_channels_last_stays_as_it_is(tmp_path):
    """A Keras export takes NHWC and turns it to NCHW itself (``Transpose(0, 3, 1, 2)``).
    That input is NHWC already: the .tflite takes it unpermuted and runs no TRANSPOSE (it
    had taken ``[N, W, C, H]``, a layout no camera gives)."""
    text = f"""{G} g (float[1, 8, 10, 3] x, float[4, 3, 3, 3] k) => (float[1, 4, 8, 10] y)
    {{ t = Transpose <perm = [0, 3, 1, 2]> (x)
       y = Conv <pads = [1, 1, 1, 1]> (t, k) }}"""
    model = model_from_text(text, k=w(4, 3, 3, 3))
    assert "TRANSPOSE" not in lower(tmp_path, model, image(1, 8, 10, 3))
    result = Lowering(ir.from_proto(onnx.shape_inference.infer_shapes(model))).run()
    assert result.io_layouts["x"] == [0, 1, 2, 3]


def test_fp16_stores_weights_as_float16_with_dequantize(tmp_path):
    text = f"""{G} g (float[1, 3, 8, 8] x, float[16, 3, 3, 3] k) => (float[1, 16, 8, 8] y)
    {{ y = Conv <pads = [1, 1, 1, 1]> (x, k) }}"""
    model = model_from_text(text, k=w(16, 3, 3, 3))
    ops = lower(tmp_path, model, image(1, 3, 8, 8), precision="fp16", atol=2e-2, rtol=2e-2)
    assert ops["DEQUANTIZE"] == 2  # filter and bias; activations stay float32


def test_an_op_without_a_lowering_is_named(tmp_path):
    text = f"""{G} g (float[2, 3] x) => (int64[2, N] y) {{ y = NonZero (x) }}"""
    model = onnx.shape_inference.infer_shapes(model_from_text(text))
    with pytest.raises(UnsupportedError, match="no lowering for op.*NonZero"):
        Lowering(ir.from_proto(model)).run()


def test_int8_qdq_graph_maps_onto_int8_kernels(tmp_path):
    """The tflite policy's QDQ graph lowers to int8 CONV/DEPTHWISE/ADD/MUL/LOGISTIC/CONCAT with
    int8 MAX_POOL and RESIZE in between, and matches ORT running the same QDQ graph to within
    a few quantization steps, most values exactly: LiteRT's int8 kernels compute the QDQ
    arithmetic as written (ORT with its QDQ fusion off); a rounding tie in one layer moves
    a value by a step, and that spreads a little through the layers after it."""
    from deploycomp.backends.onnxruntime import ORTRunner
    from deploycomp.quant import POLICIES, quantize

    text = f"""{G} g (float[1, 3, 16, 16] x, float[8, 3, 3, 3] k1, float[8] b1, float[8, 1, 3, 3] dw,
                      float[8, 8, 1, 1] k2, float[16, 16, 1, 1] k3) => (float[1, 16, 16, 16] y)
    {{ a = Conv <pads = [1, 1, 1, 1]> (x, k1, b1)
       r = Relu (a)
       d = Conv <group = 8, pads = [1, 1, 1, 1]> (r, dw)
       s = Sigmoid (d)
       m = Mul (d, s)
       c = Conv (m, k2)
       e = Add (c, r)
       p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (e)
       u = Resize <mode = "nearest", coordinate_transformation_mode = "asymmetric", nearest_mode = "floor"> (p, , scales)
       cat = Concat <axis = 1> (u, e)
       y = Conv (cat, k3) }}"""
    text = text.replace("float[16, 16, 1, 1] k3)", "float[16, 16, 1, 1] k3, float[4] scales)")
    proto = model_from_text(text, k1=w(8, 3, 3, 3), b1=w(8), dw=w(8, 1, 3, 3), k2=w(8, 8, 1, 1),
                            k3=w(16, 16, 1, 1), scales=np.array([1, 1, 2, 2], np.float32))
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    rng = np.random.default_rng(7)  # its own stream: the result must not depend on test order
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    qdq = quantize(model, POLICIES["tflite"], calib, []).model
    result = Lowering(qdq, "int8").run()
    ops = result.op_counts
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "LOGISTIC", "CONCATENATION", "MAX_POOL_2D",
               "DEPTH_TO_SPACE"):
        assert op in ops, op
    assert ops.get("DEQUANTIZE") == 1 and "RELU" not in ops  # only the float output; Relu fused
    path = tmp_path / "q.tflite"
    path.write_bytes(result.flatbuffer)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    kernels = {d["name"]: d["dtype"] for d in interpreter.get_tensor_details()}
    assert kernels["m__q"] == np.int8 and kernels["cat__q"] == np.int8
    assert TFLiteRunner(path, result.io_layouts).info["xnnpack_partitions"] == 1, "one delegate subgraph"

    feeds = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    want = ORTRunner(ir.to_proto(qdq).SerializeToString(), arithmetic="exact_qdq").run(feeds)["y"]
    got = TFLiteRunner(path, result.io_layouts).run(feeds)["y"]
    step = float(np.ptp(want)) / 255
    assert np.abs(got - want).max() < 4 * step
    assert np.mean(np.abs(got - want) < 1e-4) > 0.5, "most outputs bit-exact to the QDQ arithmetic"
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


def test_a_mask_of_minus_infinity_stays_float_and_no_int8_constant_holds_it(monkeypatch):
    """A causal mask of -inf (what ONNX's own Attention body folds to) added to the scores:
    calibration left the infinities out of the statistics, the mask's Add was quantized,
    and the lowering stored the -inf constant as int8 at an infinite scale (NaN data): LiteRT
    aborted the process (exit 134). A tensor holding infinities stays float, like one of
    sentinel magnitude; and where such an Add were int8 all the same, its constant is not."""
    from deploycomp.quant import POLICIES, quantize
    from deploycomp.quant.calibrate import Statistics

    text = f"""{G} g (float[1, 16, 32] x, float[32, 32] wq, float[16, 16] mask, float[32, 32] wv)
                     => (float[1, 16, 32] y)
    {{ q = MatMul (x, wq)
       k = Transpose <perm = [0, 2, 1]> (q)
       s = MatMul (q, k)
       sm = Add (s, mask)
       p = Softmax <axis = -1> (sm)
       v = MatMul (x, wv)
       y = MatMul (p, v) }}"""
    causal = np.triu(np.full((16, 16), -np.inf, np.float32), 1)
    proto = model_from_text(text, wq=w(32, 32, scale=0.2), mask=causal, wv=w(32, 32, scale=0.2))
    model = ir.from_proto(onnx.shape_inference.infer_shapes(proto))
    rng = np.random.default_rng(3)
    calib = [{"x": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(8)]
    result = quantize(model, POLICIES["tflite"], calib, [])
    assert "sm" in result.info["left_float_sentinel"]

    monkeypatch.setattr(Statistics, "sentinels", lambda self: [])  # (as calibration had it)
    forced = quantize(model, POLICIES["tflite"], calib, []).model
    assert any(n.op_type == "QuantizeLinear" and n.inputs[0].name == "sm" for n in forced.graph)
    flatbuffer = Lowering(forced, "int8").run().flatbuffer
    from ai_edge_litert.interpreter import Interpreter

    for tensor in Interpreter(model_content=flatbuffer).get_tensor_details():
        assert np.isfinite(tensor["quantization_parameters"]["scales"]).all(), tensor["name"]


def test_cast_comparison_and_where(tmp_path):
    text = f"""{G} g (float[1, 3, 6, 6] x, float[4, 3, 1, 1] k, float[] t) => (float[1, 4, 6, 6] y, float[1, 4, 6, 6] z)
    {{ a = Conv (x, k)
       m = Greater (a, t)
       y = Where (m, a, t)
       i = Cast <to = 6> (a)
       z = Cast <to = 1> (i) }}"""
    model = model_from_text(text, k=w(4, 3, 1, 1, scale=3.0), t=np.float32(0.25))
    ops = lower(tmp_path, model, image(1, 3, 6, 6))
    assert ops["CAST"] == 2 and ops["SELECT_V2"] == 1 and "TRANSPOSE" not in ops
