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


TWO_STEPS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 5, 8] x, float[1] scale, float[1] bias) => (float[1, 5, 8] y) {{
    {first}
    {second}
    y = Add(y0, y1)
}}
"""


def test_two_layer_norms_sharing_their_weights_share_the_fused_ones(tmp_path):
    """An unrolled decoder's steps normalize with the same scale and bias (broadcast from
    one value each): both become LayerNormalization over one widened weight, and the saved
    model is valid (the second rewrite's weight took the first's name, which left the
    first reading a tensor the file did not have)."""
    import onnx

    def step(i: int, source: str) -> str:
        body = LN.split("{{", 1)[1].rsplit("}}", 1)[0].format(axis=-1, square="Mul(d, d)")
        renamed = body.replace("x)", f"{source})").replace("(x,", f"({source},")
        for name in ("mean", "d", "two", "sq", "var", "eps", "ve", "sd", "n", "sc", "y"):
            renamed = renamed.replace(f" {name} =", f" {name}{i} =").replace(f"({name},", f"({name}{i},") \
                .replace(f", {name})", f", {name}{i})").replace(f"({name})", f"({name}{i})")
        return renamed

    r = rng()
    text = TWO_STEPS.format(first=step(0, "x"), second=step(1, "y0"))
    model = model_from_text(text.replace("{{", "{").replace("}}", "}"), scale=np.array([1.5], np.float32),
                            bias=np.array([0.25], np.float32))
    feeds = {"x": r.standard_normal((1, 5, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-5)["LayerNormalization"] == 2
    optimized = onnx.load(tmp_path / "after.onnx")
    onnx.checker.check_model(optimized, full_check=True)
    assert len([t for t in optimized.graph.initializer if t.dims == [8]]) == 2  # one scale, one bias
