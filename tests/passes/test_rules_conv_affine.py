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


AFFINE_CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4, 8, 8] x, float[{w}] w, float[{s}] s, float[{t}] t) => (float[1, 4, {o}, {o}] y) {{
    h = HardSwish(x)
    m = Mul(s, h)
    a = Add(m, t)
    y = Conv<pads = [{p}, {p}, {p}, {p}], group = {g}>(a, w)
}}
"""


def _affine_conv(pad: int, group: int, s_shape=(1, 4, 1, 1), t_shape=(4, 1, 1), kernel: int = 3, s_values=None):
    text = AFFINE_CONV.format(w=f"4, {4 // group}, {kernel}, {kernel}", s=", ".join(map(str, s_shape)),
                              t=", ".join(map(str, t_shape)), o=8 + 2 * pad - kernel + 1, p=pad, g=group)
    r = rng(2)
    s = (r.uniform(0.5, 2.0, s_shape) * r.choice([-1.0, 1.0], s_shape) if s_values is None  # 4x apart at most
         else np.asarray(s_values, np.float32)).astype(np.float32)
    return model_from_text(text, w=r.standard_normal((4, 4 // group, kernel, kernel)).astype(np.float32),
                           s=s.reshape(s_shape), t=r.standard_normal(t_shape).astype(np.float32))


def test_an_affine_before_an_unpadded_conv_folds_whole():
    """PP-LCNetV3's learnable affine block before a pointwise (or any unpadded) conv:
    the scale goes into the weights per input channel, the shift into the bias."""
    import tempfile
    from pathlib import Path

    feeds = {"x": rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32) * 4}
    for group, kernel in ((1, 1), (1, 3), (4, 3), (2, 1)):
        with tempfile.TemporaryDirectory() as tmp:
            ops = optimize_and_compare(Path(tmp), _affine_conv(0, group, kernel=kernel), feeds, pipeline="tflite")
        assert ops == {"HardSwish": 1, "Conv": 1}, (group, kernel, ops)


def test_before_a_padded_conv_only_the_scale_folds(tmp_path):
    """A padded border reads 0 where ``x + t`` would read ``t``: the shift stays an Add
    (moved before the scale, as ``t / s``), the scale folds."""
    feeds = {"x": rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32) * 4}
    ops = optimize_and_compare(tmp_path, _affine_conv(1, 4), feeds, pipeline="tflite")  # depthwise 3x3, pad 1
    assert ops == {"HardSwish": 1, "Add": 1, "Conv": 1}


def test_a_zero_scale_before_a_padded_conv_stays_a_depthwise_conv_of_its_own(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, _affine_conv(1, 1, s_values=[1.0, 0.0, 2.0, -1.0]), feeds, pipeline="tflite")
    assert ops == {"HardSwish": 1, "Conv": 2}


def test_factors_too_far_apart_for_one_weight_scale_do_not_fold(tmp_path):
    """A Keras BatchNorm after a ReLU: factors near 30 on channels the ReLU never opens,
    1e-3 on the others. Folded, each output channel's int8 weight scale would follow the
    30s and round the rest to 0; the affine stays, as a depthwise Conv of its own."""
    feeds = {"x": rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    for pad in (0, 1):
        ops = optimize_and_compare(tmp_path, _affine_conv(pad, 1, s_values=[30.0, 1e-3, 30.0, 2e-3]), feeds,
                                   pipeline="tflite")
        assert ops["Conv"] == 2 and "Mul" not in ops, (pad, ops)


def test_an_affine_that_varies_over_space_does_not_fold(tmp_path):
    feeds = {"x": rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, _affine_conv(0, 1, s_shape=(1, 1, 8, 8), kernel=1), feeds, pipeline="tflite")
    assert ops["Mul"] == 1


def test_other_pipelines_keep_the_affine_for_the_int8_boosters(tmp_path):
    """OpenVINO's and TensorRT's int8 boosters put per-channel shifts and scales into that
    affine: their pipelines leave it where it is."""
    feeds = {"x": rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    for pipeline in ("default", "openvino", "tensorrt"):
        ops = optimize_and_compare(tmp_path, _affine_conv(0, 1, kernel=1), feeds, pipeline=pipeline)
        assert ops["Mul"] == 1 and ops["Add"] == 1, pipeline
