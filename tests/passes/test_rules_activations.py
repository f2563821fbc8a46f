"""Activation decompositions become one op; look-alikes with other constants do not."""

from __future__ import annotations

import numpy as np
import pytest

from tests.passes._harness import model_from_text, optimize_and_compare, rng

X = {"x": rng().standard_normal((2, 16)).astype(np.float32) * 4}


def _ops(tmp_path, body: str, opset: int = 17, **weights):
    text = f"""
    <ir_version: 9, opset_import: ["" : {opset}]>
    g (float[2, 16] x) => (float[2, 16] y) {{ {body} }}
    """
    return optimize_and_compare(tmp_path, model_from_text(text, **weights), X)


def test_hardswish_from_clip_form(tmp_path):
    body = """
        three = Constant<value = float {3.0}>()
        zero = Constant<value = float {0.0}>()
        six = Constant<value = float {6.0}>()
        a = Add(x, three)
        c = Clip(a, zero, six)
        m = Mul(c, x)
        y = Div(m, six)
    """
    assert _ops(tmp_path, body) == {"HardSwish": 1}


def test_hardswish_needs_the_right_constants(tmp_path):
    body = """
        three = Constant<value = float {2.0}>()
        zero = Constant<value = float {0.0}>()
        six = Constant<value = float {6.0}>()
        a = Add(x, three)
        c = Clip(a, zero, six)
        m = Mul(c, x)
        y = Div(m, six)
    """
    assert "HardSwish" not in _ops(tmp_path, body)


def test_relu_then_clip_is_one_clip(tmp_path):
    body = """
        zero = Constant<value = float {0.0}>()
        six = Constant<value = float {6.0}>()
        r = Relu(x)
        y = Clip(r, zero, six)
    """
    assert _ops(tmp_path, body) == {"Clip": 1}


def test_min_max_is_clip(tmp_path):
    body = """
        zero = Constant<value = float {0.0}>()
        six = Constant<value = float {6.0}>()
        a = Max(x, zero)
        y = Min(a, six)
    """
    assert _ops(tmp_path, body) == {"Clip": 1}


@pytest.mark.parametrize("stable", [True, False])
def test_softmax_decomposition(tmp_path, stable):
    shift = """
        mx = ReduceMax<axes = [1], keepdims = 1>(x)
        s = Sub(x, mx)
        e = Exp(s)
    """ if stable else "e = Exp(x)"
    body = f"""
        {shift}
        axes = Constant<value = int64[1] {{1}}>()
        den = ReduceSum<keepdims = 1>(e, axes)
        y = Div(e, den)
    """
    assert _ops(tmp_path, body) == {"Softmax": 1}


GELU = """
    half = Constant<value = float {0.5}>()
    one = Constant<value = float {1.0}>()
    root2 = Constant<value = float {1.4142135}>()
    d = Div(x, root2)
    e = Erf(d)
    p = Add(e, one)
    h = Mul(x, half)
    y = Mul(h, p)
"""


def test_gelu_where_the_opset_has_it(tmp_path):
    assert _ops(tmp_path, GELU, opset=20) == {"Gelu": 1}


def test_gelu_kept_below_opset_20(tmp_path):
    assert _ops(tmp_path, GELU, opset=17)["Erf"] == 1


def test_gelu_tanh_approximation(tmp_path):
    body = """
        half = Constant<value = float {0.5}>()
        one = Constant<value = float {1.0}>()
        three = Constant<value = float {3.0}>()
        c = Constant<value = float {0.044715}>()
        k = Constant<value = float {0.7978846}>()
        p = Pow(x, three)
        pc = Mul(p, c)
        s = Add(x, pc)
        sk = Mul(s, k)
        t = Tanh(sk)
        tp = Add(t, one)
        h = Mul(x, half)
        y = Mul(h, tp)
    """
    assert _ops(tmp_path, body, opset=20) == {"Gelu": 1}
