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


SHAPE_OPS = {
    # (body, output type) reading a = NHWC conv output of x (1, 4, 6, 6)
    "Expand": ("y = Expand (a, shp)", "float[2, 4, 6, 6] y"),
    "Expand of a lower-rank input": ("s = ReduceMean <keepdims = 0> (a, ax1)\n y = Expand (s, shp)", "float[2, 1, 6, 6] y"),
    "Tile": ("y = Tile (a, reps)", "float[1, 8, 6, 18] y"),
    "CumSum": ("y = CumSum (a, ax1)", "float[1, 4, 6, 6] y"),
    "CumSum exclusive reverse": ("y = CumSum <exclusive = 1, reverse = 1> (a, axm1)", "float[1, 4, 6, 6] y"),
    "TopK": ("y, i = TopK (a, k)", "float[1, 4, 6, 3] y, int64[1, 4, 6, 3] i"),
    "TopK smallest on channels": ("y, i = TopK <axis = 1, largest = 0> (a, k)", "float[1, 3, 6, 6] y, int64[1, 3, 6, 6] i"),
    "ReduceL1": ("y = ReduceL1 <keepdims = 0> (a, ax1)", "float[1, 6, 6] y"),
    "ReduceL2": ("y = ReduceL2 (a, ax1)", "float[1, 1, 6, 6] y"),
    "ReduceSumSquare": ("y = ReduceSumSquare <keepdims = 0> (a, axm1)", "float[1, 4, 6] y"),
    "ReduceLogSumExp": ("y = ReduceLogSumExp <keepdims = 0> (a, ax1)", "float[1, 6, 6] y"),
    "ReduceLogSum": ("p = Abs (a)\n y = ReduceLogSum (p, axm1)", "float[1, 4, 6, 1] y"),
    "Gather with negative tensor indices": ("y = Gather <axis = 3> (a, gi)", "float[1, 4, 6, 2, 3] y"),
    "GatherND with negative indices": ("y = GatherND (a, ndi)", "float[2, 6] y"),
    "GatherElements": ("y = GatherElements <axis = 2> (a, gei)", "float[1, 4, 2, 6] y"),
    "GatherElements with tensor indices": ("y = GatherElements <axis = -1> (a, gei2)", "float[1, 4, 6, 2] y"),
    "ScatterND (slice assignment)": ("y = ScatterND (a, sci, upd)", "float[1, 4, 6, 6] y"),
    "Trilu": ("y = Trilu <upper = 0> (a, one)", "float[1, 4, 6, 6] y"),
    "DepthToSpace DCR": ("y = DepthToSpace <blocksize = 2> (a)", "float[1, 1, 12, 12] y"),
    "DepthToSpace CRD": ("y = DepthToSpace <blocksize = 2, mode = \"CRD\"> (a)", "float[1, 1, 12, 12] y"),
    "SpaceToDepth": ("y = SpaceToDepth <blocksize = 3> (a)", "float[1, 36, 2, 2] y"),
}


INDICES_FROM_DATA = """am = ArgMax <axis = 3> (a)
       six = Constant <value_int = 6> ()
       neg = Sub (am, six)
       gei2 = Concat <axis = 3> (am, neg)
       sh = Constant <value_ints = [2, 12]> ()
       r = Reshape (neg, sh)
       gi = Slice (r, s0, s3, s1)"""
"""Indices in [-6, 5] computed from the data (ArgMax along W), for the gathers' tensor-index cases."""


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", SHAPE_OPS)
def test_shape_ops_after_a_conv(tmp_path, case, precision):
    body, out = SHAPE_OPS[case]
    computed = "tensor indices" in case
    text = f"""{G} g (float[1, 3, 6, 6] x, float[4, 3, 3, 3] kw, int64[4] shp, int64[1] ax1, int64[1] axm1, int64[4] reps,
                      int64[1] k, int64[2, 3] ndi, int64[1, 4, 2, 6] gei, int64[2, 2] sci, float[2, 6, 6] upd,
                      int64[] one, int64[1] s0, int64[1] s3, int64[1] s1) => ({out})
    {{ a = Conv <pads = [1, 1, 1, 1]> (x, kw)
       {INDICES_FROM_DATA if computed else ""}
       {body} }}"""
    weights = dict(kw=w(4, 3, 3, 3), shp=np.array([2, 1, 1, 1]), ax1=np.array([1]), axm1=np.array([-1]),
                   reps=np.array([1, 2, 1, 3]), k=np.array([3]), ndi=np.array([[0, -1, 2], [0, 1, -3]]),
                   gei=np.random.default_rng(1).integers(-6, 6, (1, 4, 2, 6)), sci=np.array([[0, 1], [0, -1]]),
                   upd=w(2, 6, 6), one=np.array(1), s0=np.array([0]), s3=np.array([3]), s1=np.array([1]))
    check(tmp_path, model_from_text(text, **weights), {"x": (1, 3, 6, 6)}, precision, passes=False)


def test_one_hot_with_negative_indices(tmp_path):
    text = f"""{G} g (float[2, 3] x, int64[] depth, float[2] values) => (float[2, 3, 5] y)
    {{ f = Floor (x)
       i = Cast <to = 7> (f)
       y = OneHot (i, depth, values) }}"""
    model = model_from_text(text, depth=np.array(5), values=np.array([-1.0, 2.0], np.float32))
    feeds = {"x": np.array([[0.5, -1.2, 4.0], [3.3, -4.5, 2.0]], np.float32)}
    check(tmp_path, model, {"x": (2, 3)}, "fp32", passes=False, feeds=feeds)
