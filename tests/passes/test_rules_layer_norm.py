"""A decomposed layer norm (as PP-OCRv4 rec exports it) becomes LayerNormalization."""

from __future__ import annotations

import numpy as np
import pytest

from tests.passes._harness import model_from_text, optimize_and_compare, rng

LN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 5, 8] x, float[8] scale, float[8] bias) => (float[1, 5, 8] y) {{
    mean = ReduceMean<axes = [{axis}]>(x)
    d = Sub(x, mean)
    two = Constant<value = float {{2.0}}>()
    sq = {square}
    var = ReduceMean<axes = [{axis}]>(sq)
    eps = Constant<value = float {{1e-6}}>()
    ve = Add(var, eps)
    sd = Sqrt(ve)
    n = Div(d, sd)
    sc = Mul(n, scale)
    y = Add(sc, bias)
}}
"""


@pytest.mark.parametrize("square", ["Pow(d, two)", "Mul(d, d)"])
def test_layer_norm_fused(tmp_path, square):
    r = rng()
    model = model_from_text(LN.format(axis=-1, square=square), scale=r.standard_normal(8).astype(np.float32),
                            bias=r.standard_normal(8).astype(np.float32))
    feeds = {"x": r.standard_normal((1, 5, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5) == {"LayerNormalization": 1}


def test_normalising_a_middle_axis_is_not_layer_norm(tmp_path):
    r = rng()
    text = LN.format(axis=1, square="Pow(d, two)").replace("float[8] scale, float[8] bias", "float[5, 1] scale, float[5, 1] bias")
    model = model_from_text(text, scale=r.standard_normal((5, 1)).astype(np.float32),
                            bias=r.standard_normal((5, 1)).astype(np.float32))
    feeds = {"x": r.standard_normal((1, 5, 8)).astype(np.float32)}
    assert "LayerNormalization" not in optimize_and_compare(tmp_path, model, feeds)
