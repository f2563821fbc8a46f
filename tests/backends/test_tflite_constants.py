"""Constants in the TFLite lowering: subgraphs of constants evaluated at conversion time,
and fp16 builds that keep in float32 the constants float16 cannot hold."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx
import pytest

from deploycomp.errors import UnsupportedError
from tests.backends.test_tflite_outputs import G, PRECISIONS, check, w
from tests.passes._harness import model_from_text

from deploycomp.backends.tflite.lowering import Lowering, fp16_holds, unsupported_nodes  # noqa: E402


@pytest.mark.parametrize("precision", PRECISIONS)
def test_constant_subgraphs_are_evaluated_not_lowered(tmp_path, precision):
    """Range, ConstantOfShape, EyeLike, NonZero and Shape of constants (left unfolded, e.g.
    because folding would grow the file) become stored constants; ops TFLite has no kernel
    for are then no obstacle."""
    text = f"""{G} g (float[1, 4, 6] x, float[6, 6] k) => (float[1, 4, 6] y)
    {{ start = Constant <value_float = 0.5> ()
       limit = Constant <value_float = 3.5> ()
       delta = Constant <value_float = 0.5> ()
       r = Range (start, limit, delta)
       shp = Constant <value_ints = [4, 6]> ()
       ones = ConstantOfShape <value = float[1] {{2.0}}> (shp)
       eye = EyeLike <k = 1> (ones)
       nz = NonZero (eye)
       cnt = Size (nz)
       cntf = Cast <to = 1> (cnt)
       a = MatMul (x, k)
       b = Mul (a, ones)
       c = Add (b, r)
       d = Add (c, eye)
       y = Mul (d, cntf) }}"""
    model = model_from_text(text, k=w(6, 6))
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model))
    assert unsupported_nodes(graph) == []
    info = check(tmp_path, model, {"x": (1, 4, 6)}, precision, passes=False)
    assert not {"RANGE", "FILL"} & set(info["ops"])


def test_non_constant_unsupported_op_is_still_named():
    text = f"""{G} g (float[2, 3] x) => (int64[2, N] y) {{ e = Relu (x)\n y = NonZero (e) }}"""
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model_from_text(text)))
    assert [n["op"] for n in unsupported_nodes(graph)] == ["NonZero"]
    with pytest.raises(UnsupportedError, match="no lowering for op.*NonZero"):
        Lowering(graph).run()


def test_fp16_holds_refuses_overflow_and_total_underflow():
    assert fp16_holds(w(64))
    assert fp16_holds(np.zeros(64, np.float32))
    assert not fp16_holds(np.full(64, 70000.0, np.float32)), "past float16's 65504: inf"
    assert not fp16_holds(np.full(64, 1e-9, np.float32)), "every value flushes to 0"
    assert not fp16_holds(np.full(64, 3e-7, np.float32)), "subnormal: a quarter of the value lost"
    mixed = w(64)
    mixed[0] = 1e-9  # one tiny weight among normal ones is only rounding
    assert fp16_holds(mixed)


@pytest.mark.parametrize("values", ["huge", "tiny"])
def test_fp16_build_keeps_constants_float16_cannot_hold(tmp_path, values):
    """y = (x * c) / c2 with |c| past 65504 (a mask value) or with every c below float16's
    smallest subnormal: stored as float16 they would give inf/NaN or 0; they stay float32
    while an ordinary weight of the same graph is still stored as float16."""
    scale = 1e5 if values == "huge" else 1e-9
    c = (np.linspace(1, 2, 32) * scale).astype(np.float32)
    text = f"""{G} g (float[1, 32] x, float[32] c, float[32] c2, float[32, 32] m) => (float[1, 32] y)
    {{ a = Mul (x, c)
       b = Div (a, c2)
       y = MatMul (b, m) }}"""
    model = model_from_text(text, c=c, c2=c.copy() * 1.5, m=w(32, 32))
    info = check(tmp_path, model, {"x": (1, 32)}, "fp16", passes=False)
    assert info["ops"]["DEQUANTIZE"] == 2, "only the matmul's weight and (zero) bias are float16"
    assert info["fp16_kept_fp32_constants"] == ["c", "c2"], "the manifest names them"


@pytest.mark.parametrize("zero_point", [0, 131])
def test_dequantizing_integer_data_that_carries_no_encoding(tmp_path, zero_point):
    """A u8 input moved by a Transpose, then dequantized: TFLite's DEQUANTIZE reads the
    encoding stored with its input tensor, and this one has none (it gave zeros: every
    output of a French spelling model). It becomes ``(float(q) - zero) * scale``."""
    text = f"""{G} g (uint8[1, 5, 6] x) => (float[1, 6, 5] y)
    {{ t = Transpose <perm = [0, 2, 1]> (x)
       s = Constant <value = float {{0.05}}> ()
       z = Constant <value = uint8 {{{zero_point}}}> ()
       d = DequantizeLinear (t, s, z)
       y = Tanh (d) }}"""
    feeds = {"x": np.random.default_rng(1).integers(0, 256, (1, 5, 6)).astype(np.uint8)}
    info = check(tmp_path, model_from_text(text), {"x": (1, 5, 6)}, "fp32", feeds=feeds, io_layout="nchw")
    assert "DEQUANTIZE" not in info["ops"] and info["ops"].get("CAST") == 1
