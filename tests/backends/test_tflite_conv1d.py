"""1-D convolutions, pools and transposed convolutions (audio front-ends, embedding CNNs), and
3-D ones 1 deep (per-frame video convs),
lowered as the 2-D TFLite ops over a unit height, at fp32, fp16 and int8 (per-channel
weights), against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.test_tflite_outputs import G, PRECISIONS, check, w
from tests.passes._harness import model_from_text

CONV1D = {
    "asymmetric pads": ("pads = [0, 2]", (6, 4, 3)),
    "stride 2, pads 1 (pad at the start)": ("strides = [2], pads = [1, 1]", (6, 4, 3)),
    "dilation 2": ("dilations = [2], pads = [2, 2]", (6, 4, 3)),
    "auto_pad SAME_UPPER stride 3": ('auto_pad = "SAME_UPPER", strides = [3]', (6, 4, 5)),
    "depthwise": ("group = 4, pads = [1, 1]", (4, 1, 3)),
    "depthwise, multiplier 2": ("group = 4, pads = [2, 2]", (8, 1, 5)),
    "grouped": ("group = 2, pads = [1, 1]", (6, 2, 3)),
    "pointwise": ("", (6, 4, 1)),
    "STFT-like: kernel 16, stride 8": ("strides = [8]", (6, 4, 16)),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CONV1D)
def test_conv1d(tmp_path, case, precision):
    attrs, wshape = CONV1D[case]
    text = f"""{G} g (float[1, 4, 40] x, float{list(wshape)} k, float[{wshape[0]}] b) => (float[1, {wshape[0]}, N] y)
    {{ c = Conv <{attrs}> (x, k, b)
       r = Relu (c)
       y = Sigmoid (r) }}""".replace("<>", "")
    info = check(tmp_path, model_from_text(text, k=w(*wshape), b=w(wshape[0])), {"x": (1, 4, 40)}, precision)
    ops = info["ops"]
    assert ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0) == 1 and not {"TRANSPOSE", "RELU"} & set(ops)
    if precision == "int8":
        assert info["int8_ops"] >= 1 and "CONV_2D" not in info["float_ops"] and "DEPTHWISE_CONV_2D" not in info["float_ops"]


AUDIO = f"""{G} g (float[1, 8, 64] x, float[16, 8, 5] k1, float[16] b1, float[16] sc, float[16] bi, float[16] mu,
                   float[16] va, float[16, 1, 3] dw, float[16, 16, 1] pw, float[16, 8, 4] up)
                   => (float[1, 16] emb, float[1, 8, N] rec)
{{ p = Pad <mode = "reflect"> (x, pads)
   c1 = Conv (p, k1, b1)
   n1 = BatchNormalization (c1, sc, bi, mu, va)
   r1 = Relu (n1)
   m1 = MaxPool <kernel_shape = [3], strides = [2], pads = [1, 1]> (r1)
   d = Conv <group = 16, pads = [1, 1]> (m1, dw)
   r2 = Relu (d)
   c2 = Conv (r2, pw)
   s = Add (c2, m1)
   a1 = AveragePool <kernel_shape = [2], strides = [2]> (s)
   g = GlobalAveragePool (a1)
   emb = Flatten (g)
   rec = ConvTranspose <strides = [2], pads = [1, 1]> (s, up) }}"""
AUDIO = AUDIO.replace("float[16, 8, 4] up)", "float[16, 8, 4] up, int64[6] pads)")


@pytest.mark.parametrize("passes", [True, False], ids=["optimized", "as-is"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_audio_cnn_of_1d_ops(tmp_path, precision, passes):
    """Reflect pad, Conv1D + BatchNorm (folded by the passes, or lowered as-is) + Relu,
    1-D max/average pools, depthwise and pointwise 1-D convs, a residual, global pooling
    and a 1-D ConvTranspose: no TRANSPOSE anywhere, every Relu fused."""
    model = model_from_text(AUDIO, k1=w(16, 8, 5), b1=w(16), sc=w(16), bi=w(16), mu=w(16),
                            va=np.abs(w(16)) + 0.5, dw=w(16, 1, 3), pw=w(16, 16, 1), up=w(16, 8, 4),
                            pads=np.array([0, 0, 2, 0, 0, 2]))
    info = check(tmp_path, model, {"x": (1, 8, 64)}, precision, passes=passes)
    ops = info["ops"]
    assert "TRANSPOSE" not in ops and "RELU" not in ops, ops
    assert ops["MAX_POOL_2D"] == 1 and ops["AVERAGE_POOL_2D"] == 1 and ops["TRANSPOSE_CONV"] == 1
    if precision == "int8":
        assert info["int8_ops"] >= 4


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("attrs,x,k", [
    ("strides = [2], pads = [1, 1], output_padding = [1]", (1, 4, 9), (4, 3, 3)),
    ("strides = [2]", (1, 4, 9), (4, 3, 4)),
    ("strides = [2, 2], pads = [1, 1, 1, 1]", (1, 4, 5, 6), (4, 3, 4, 4)),
    ("strides = [2, 2], output_shape = [9, 11]", (1, 4, 5, 6), (4, 3, 3, 3)),
    ('strides = [2, 2], auto_pad = "SAME_UPPER"', (1, 4, 5, 6), (4, 3, 3, 3)),
    ('strides = [3], auto_pad = "SAME_LOWER"', (1, 4, 9), (4, 3, 4)),
    ("strides = [2, 2], pads = [1, 1, 1, 1], group = 4", (1, 4, 5, 6), (4, 1, 4, 4)),
    ("strides = [2], group = 2", (1, 4, 9), (4, 2, 3)),
], ids=["1-D cropped", "1-D exact", "2-D cropped", "2-D output_shape", "2-D SAME_UPPER", "1-D SAME_LOWER",
        "2-D depthwise upsampling", "1-D grouped"])
def test_conv_transpose_runs_int8(tmp_path, precision, attrs, x, k):
    """1-D and 2-D ConvTranspose, a Relu after it fused; at int8 the TRANSPOSE_CONV itself
    is int8 (per-channel weights, int32 bias)."""
    spatial = ", ".join("N" for _ in x[2:])
    cout = k[1] * (4 // k[0] if "group" not in attrs else int(attrs.split("group = ")[1]))
    text = f"""{G} g (float{list(x)} x, float{list(k)} k, float[{cout}] b) => (float[1, {cout}, {spatial}] y)
    {{ c = ConvTranspose <{attrs}> (x, k, b)
       r = Relu (c)
       y = Sigmoid (r) }}"""
    info = check(tmp_path, model_from_text(text, k=w(*k), b=w(cout)), {"x": x}, precision)
    assert "RELU" not in info["ops"]
    if precision == "int8":
        assert "TRANSPOSE_CONV" not in info["float_ops"], info["float_ops"]


CONV3D_ONE_DEEP = {
    "one frame, 3x3, pads 1 (a watermarking GAN's per-frame conv)": ((1, 3, 1, 12, 12), (4, 3, 1, 3, 3), "pads = [0, 1, 1, 0, 1, 1]"),
    "four frames, 1x3x3, stride 2": ((1, 3, 4, 12, 12), (4, 3, 1, 3, 3), "strides = [1, 2, 2]"),
    "four frames, depthwise": ((1, 3, 4, 12, 12), (3, 1, 1, 3, 3), "group = 3, pads = [0, 1, 1, 0, 1, 1]"),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CONV3D_ONE_DEEP)
def test_conv3d_one_deep_is_a_2d_conv_over_each_frame(tmp_path, case, precision):
    """A 3-D convolution whose kernel is 1 deep (stride 1, no depth padding) is the 2-D one
    over every frame: its (N, D, H, W, C) tensor is (N * D, H, W, C), the same bytes, so a
    chain of them with element-wise ops between needs no TRANSPOSE."""
    xshape, wshape, attrs = CONV3D_ONE_DEEP[case]
    out = wshape[0]
    text = f"""{G} g (float{list(xshape)} x, float{list(wshape)} k, float[{out}] b, float[{out}, {out}, 1, 1, 1] k2)
                => (float[1, {out}, N, H, W] y)
    {{ c = Conv <{attrs}> (x, k, b)
       r = Relu (c)
       c2 = Conv (r, k2)
       y = Sigmoid (c2) }}"""
    info = check(tmp_path, model_from_text(text, k=w(*wshape), b=w(out), k2=w(out, out, 1, 1, 1)), {"x": xshape},
                 precision)
    ops = info["ops"]
    assert ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0) == 2 and "TRANSPOSE" not in ops, ops
    if precision == "int8":
        assert info["int8_ops"] >= 2 and "CONV_2D" not in info["float_ops"] and "DEPTHWISE_CONV_2D" not in info["float_ops"]


def test_a_deeper_conv3d_is_refused_by_name(tmp_path):
    from deploycomp.errors import UnsupportedError

    text = f"""{G} g (float[1, 2, 4, 4, 4] x, float[3, 2, 3, 1, 1] k) => (float[1, 3, 2, 4, 4] y) {{ y = Conv (x, k) }}"""
    with pytest.raises(UnsupportedError, match=r"3-D Conv with a kernel 3 deep.*\(the Conv writing 'y'\)"):
        check(tmp_path, model_from_text(text, k=w(3, 2, 3, 1, 1)), {"x": (1, 2, 4, 4, 4)}, "fp32")
