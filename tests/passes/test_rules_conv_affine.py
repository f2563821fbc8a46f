"""Per-channel Mul/Add after Conv fold into its weights and bias; other shapes do not."""

from __future__ import annotations

import numpy as np

from tests.passes._harness import model_from_text, optimize_and_compare, rng

CONV_MUL_ADD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 8, 8] x, float[4, 3, 3, 3] w, float[{s}] s, float[{t}] t) => (float[1, 4, 8, 8] y) {{
    c = Conv<pads = [1, 1, 1, 1]>(x, w)
    m = Mul(c, s)
    y = Add(t, m)
}}
"""


def _model(s_shape, t_shape):
    text = CONV_MUL_ADD.format(s=", ".join(map(str, s_shape)), t=", ".join(map(str, t_shape)))
    r = rng()
    return model_from_text(
        text, w=r.standard_normal((4, 3, 3, 3)).astype(np.float32),
        s=r.standard_normal(s_shape).astype(np.float32), t=r.standard_normal(t_shape).astype(np.float32),
    )


def test_per_channel_scale_and_shift_fold_into_conv(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, _model((4, 1, 1), (1, 4, 1, 1)), feeds) == {"Conv": 1}


def test_scalar_scale_folds_too(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, _model((1,), (4, 1, 1)), feeds) == {"Conv": 1}


def test_spatial_scale_does_not_fold(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, _model((1, 1, 8, 8), (4, 1, 1)), feeds)
    assert ops["Mul"] == 1 and ops["Conv"] == 1
