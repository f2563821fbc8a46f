"""Computed weights fold whatever their size; the rest of the graph is left alone."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tests.passes._harness import model_from_text, optimize_and_compare

BIG_FILL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 64, 16, 16] x, int64[4] wshape, int64[4] eshape) => (float[1, 64, 16, 16] y, float[1, 64, 16, 16] z) {
    w = ConstantOfShape <value = float[1] {0.01}> (wshape)
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    y = Relu(c)
    e = ConstantOfShape <value = float[1] {2.0}> (eshape)
    z = Mul(x, e)
}
"""


def test_a_fill_feeding_a_conv_weight_folds_even_when_large(tmp_path):
    """A 128x128x3x3 weight (147456 elements) is past the general folder's cap; it folds
    here because it is a weight. The same-sized fill read by Mul (an activation-sized
    broadcast) is the general folder's business and stays capped there."""
    text = BIG_FILL.replace("64, 16, 16", "128, 32, 32")
    model = model_from_text(text, wshape=np.array([128, 128, 3, 3], np.int64),
                            eshape=np.array([1, 128, 32, 32], np.int64))
    x = np.random.default_rng(0).random((1, 128, 32, 32), dtype=np.float32)
    ops = optimize_and_compare(tmp_path, model, {"x": x})
    assert ops["Conv"] == 1 and ops["ConstantOfShape"] == 1  # the weight's fill is gone; z's stays
