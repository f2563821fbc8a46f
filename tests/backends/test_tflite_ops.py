"""ONNX ops unseen models use, lowered to TFLite (or refused by name), against ONNX Runtime
at fp32, fp16 and int8."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.test_tflite_outputs import G, PRECISIONS, check, w
from tests.passes._harness import model_from_text


@pytest.mark.parametrize("precision", PRECISIONS)
def test_clip_with_tensor_bounds(tmp_path, precision):
    """A log-mel spectrogram floored at its own maximum minus 80 dB: Clip's min is a tensor."""
    text = f"""{G} g (float[1, 1, 20, 16] x, float[16, 16] m) => (float[1, 1, 20, 16] y)
    {{ s = MatMul (x, m)
       mx = ReduceMax <keepdims = 0> (s)
       top = Constant <value_float = 8.0> ()
       floor = Sub (mx, top)
       y = Clip (s, floor, ) }}"""
    check(tmp_path, model_from_text(text, m=w(16, 16, scale=2.0)), {"x": (1, 1, 20, 16)}, precision)


UNARY = {
    "Erf": "y = Erf (a)",
    "GELU written with Erf": "h = Div (a, sq2)\n e = Erf (h)\n e1 = Add (e, one)\n m = Mul (a, e1)\n y = Mul (m, half)",
    "Softplus": "y = Softplus (a)",
    "Mish": "y = Mish (a)",
    "Elu alpha 0.5": "y = Elu <alpha = 0.5> (a)",
    "Elu": "y = Elu (a)",
    "Selu": "y = Selu (a)",
    "Celu": "y = Celu <alpha = 2.0> (a)",
    "Softsign": "y = Softsign (a)",
    "Reciprocal": "p = Abs (a)\n q = Max (p, one)\n y = Reciprocal (q)",
    "ThresholdedRelu": "y = ThresholdedRelu <alpha = 0.3> (a)",
    "Sum of three": "y = Sum (a, x, a)",
    "Mean of three": "y = Mean (a, x, half)",
    "Max of three": "y = Max (a, x, half)",
    "Min of one": "y = Min (a)",
    "Mod fmod=1": "y = Mod <fmod = 1> (a, half)",
    "PRelu per channel": "y = PRelu (a, slope)",
    "Dropout": "y = Dropout (a)",
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", UNARY)
def test_elementwise_after_a_conv(tmp_path, case, precision):
    """Each op reads an NHWC conv output (constants broadcast into that layout)."""
    text = f"""<ir_version: 9, opset_import: ["" : 19]> g (float[1, 3, 6, 6] x, float[3, 3, 3, 3] k, float[] sq2,
                 float[] one, float[] half, float[3, 1, 1] slope) => (float[1, 3, 6, 6] y)
    {{ a = Conv <pads = [1, 1, 1, 1]> (x, k)
       {UNARY[case]} }}"""
    model = model_from_text(text, k=w(3, 3, 3, 3, scale=1.5), sq2=np.float32(np.sqrt(2)), one=np.float32(1),
                            half=np.float32(0.5), slope=np.array([0.1, -0.2, 0.3], np.float32).reshape(3, 1, 1))
    info = check(tmp_path, model, {"x": (1, 3, 6, 6)}, precision, passes=False)
    assert "TRANSPOSE" not in info["ops"]


PREDICATES = {
    "IsNaN": "y = IsNaN (x)",
    "IsInf": "y = IsInf (x)",
    "IsInf positive": "y = IsInf <detect_negative = 0> (x)",
    "Xor": "p = Greater (x, zero)\n q = Less (x, half)\n y = Xor (p, q)",
    "CastLike": "i = Cast <to = 6> (x)\n f = CastLike (i, x)\n y = Greater (f, zero)",
    "integer Mod (sign of the divisor)": "i = Cast <to = 6> (x)\n j = Cast <to = 6> (three)\n m = Mod (i, j)\n"
                                         " y = Greater (m, one)",
}


@pytest.mark.parametrize("case", PREDICATES)
def test_predicates_and_integers(tmp_path, case):
    text = f"""{G} g (float[2, 5] x, float[] zero, float[] half, float[] three, int32[] one) => (bool[2, 5] y)
    {{ {PREDICATES[case]} }}"""
    model = model_from_text(text, zero=np.float32(0), half=np.float32(0.5), three=np.float32(-3), one=np.int32(-2))
    special = case.startswith("Is") or case == "Xor"
    x = [[np.nan, np.inf, -np.inf, 0.0, 1.5], [-2.5, 0.25, 7.0, -0.0, np.nan]] if special else \
        [[-7.0, -5.0, -4.0, 0.0, 1.5], [-2.5, 2.0, 7.0, -0.0, 8.0]]
    check(tmp_path, model, {"x": (2, 5)}, "fp32", passes=False, feeds={"x": np.array(x, np.float32)})
