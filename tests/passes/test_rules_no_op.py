"""Ops that compute their input unchanged disappear; near-misses stay."""

from __future__ import annotations

import numpy as np
import pytest

from tests.passes._harness import model_from_text, optimize_and_compare, rng

X = {"x": rng().standard_normal((1, 4, 6)).astype(np.float32)}


def _ops(tmp_path, body: str, out_shape="1, 4, 6"):
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 6] x) => (float[{out_shape}] y) {{
        {body}
        y = Relu(z)
    }}
    """
    return optimize_and_compare(tmp_path, model_from_text(text), X)


@pytest.mark.parametrize(
    "body",
    [
        "pads = Constant<value = int64[6] {0, 0, 0, 0, 0, 0}>()\n z = Pad(x, pads)",
        "s = Constant<value = int64[1] {0}>()\n e = Constant<value = int64[1] {9223372036854775807}>()\n"
        " a = Constant<value = int64[1] {2}>()\n z = Slice(x, s, e, a)",
        "shape = Constant<value = int64[3] {1, 4, 6}>()\n z = Reshape(x, shape)",
        "z = Cast<to = 1>(x)",
        "z = Transpose<perm = [0, 1, 2]>(x)",
        "one = Constant<value = float {1.0}>()\n z = Mul(x, one)",
        "zero = Constant<value = float {0.0}>()\n z = Add(zero, x)",
        "one = Constant<value = float {1.0}>()\n z = Div(x, one)",
        "zeros = Constant<value = float[1, 4, 1] {0.0, 0.0, 0.0, 0.0}>()\n z = Sub(x, zeros)",
        "z = Identity(x)",
        "z = Dropout(x)",
        "z = Concat<axis = 1>(x)",
    ],
    ids=["pad0", "slice-all", "reshape-same", "cast-same", "transpose-id", "mul1", "add0", "div1", "sub-zeros", "identity",
         "dropout", "concat-one"],
)
def test_no_op_removed(tmp_path, body):
    assert _ops(tmp_path, body) == {"Relu": 1}


@pytest.mark.parametrize(
    "body, out_shape, kept",
    [
        ("pads = Constant<value = int64[6] {0, 0, 1, 0, 0, 0}>()\n z = Pad(x, pads)", "1, 4, 7", "Pad"),
        ("s = Constant<value = int64[1] {1}>()\n e = Constant<value = int64[1] {6}>()\n"
         " a = Constant<value = int64[1] {2}>()\n z = Slice(x, s, e, a)", "1, 4, 5", "Slice"),
        ("two = Constant<value = float {2.0}>()\n z = Mul(x, two)", "1, 4, 6", "Mul"),
        # a guard against log(0) (basic-pitch's spectrogram): not zero, however small
        ("eps = Constant<value = float {1e-10}>()\n z = Add(x, eps)", "1, 4, 6", "Add"),
        ("eps = Constant<value = float {1e-10}>()\n z = Sub(x, eps)", "1, 4, 6", "Sub"),
        ("one = Constant<value = float {1.000001}>()\n z = Mul(one, x)", "1, 4, 6", "Mul"),
        ("one = Constant<value = float {0.999999}>()\n z = Div(x, one)", "1, 4, 6", "Div"),
        ("zero = Constant<value = float[2, 1, 1, 1] {0.0, 0.0}>()\n z = Add(x, zero)", "2, 1, 4, 6", "Add"),
    ],
    ids=["pad1", "slice-part", "mul2", "add-epsilon", "sub-epsilon", "mul-near-1", "div-near-1", "add0-broadcasts"],
)
def test_near_misses_kept(tmp_path, body, out_shape, kept):
    assert _ops(tmp_path, body, out_shape)[kept] == 1


def test_a_log_guard_keeps_silence_finite(tmp_path):
    """basic-pitch's spectrogram takes ``log(x^2 + 1e-10)``; with the epsilon matched as
    ``+ 0`` silent bins became -inf and every output NaN."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 6] x) => (float[1, 4, 6] y) {
        eps = Constant<value = float {1e-10}>()
        sq = Mul(x, x)
        guarded = Add(sq, eps)
        y = Log(guarded)
    }
    """
    silence = {"x": np.where(X["x"] > 0.5, 0.0, X["x"]).astype(np.float32)}
    assert (silence["x"] == 0).any()
    assert optimize_and_compare(tmp_path, model_from_text(text), silence)["Add"] == 1
