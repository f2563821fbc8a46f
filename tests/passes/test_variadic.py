"""Sum / Mean / Max / Min of n inputs become chains of binary ops with the same outputs."""

from __future__ import annotations

import numpy as np

from tests.passes._harness import model_from_text, optimize_and_compare

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4] a, float[1, 4] b, float[3, 1, 4] c) => (float[3, 1, 4] s, float[3, 1, 4] m, float[3, 1, 4] mx,
                                                       float[1, 4] one, float[1, 4] mn) {
    s = Sum(a, b, c)
    m = Mean(a, b, c)
    mx = Max(a, b, c)
    one = Sum(a)
    mn = Min(a, b)
}
"""


def test_variadic_ops_become_binary(tmp_path):
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((1, 4)).astype(np.float32), "b": rng.standard_normal((1, 4)).astype(np.float32),
             "c": rng.standard_normal((3, 1, 4)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model_from_text(TEXT), feeds)
    assert "Sum" not in ops and "Mean" not in ops
    # Sum and Mean share one chain a + b + c (common subexpressions merge); Mean scales it
    assert ops["Add"] == 2 and ops["Mul"] == 1 and ops["Max"] == 2 and ops["Min"] == 1
