"""ReduceLogSumExp from reductions OpenVINO reads right (it dropped the op's axes)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import deploycomp
from tests.passes._harness import model_from_text, optimize_and_compare

TEXT = {
    17: """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[9, 17, 16] x) => (float[9, 17] y, float[9, 1, 16] z, float[9, 17, 4] w) {
        y = ReduceLogSumExp <axes = [-1], keepdims = 0> (x)
        z = ReduceLogSumExp <axes = [1]> (x)
        s = ReduceLogSumExp <axes = [-1]> (x)
        w = Concat <axis = -1> (s, s, s, s)
    }
    """,
    18: """
    <ir_version: 8, opset_import: ["" : 18]>
    g (float[9, 17, 16] x, int64[1] last, int64[1] second) => (float[9, 17] y, float[9, 1, 16] z) {
        y = ReduceLogSumExp <keepdims = 0> (x, last)
        z = ReduceLogSumExp (x, second)
    }
    """,
}


def _model(opset: int) -> onnx.ModelProto:
    weights = {} if opset == 17 else {"last": np.array([-1], np.int64), "second": np.array([1], np.int64)}
    return model_from_text(TEXT[opset], **weights)


@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_log_sum_exp_keeps_its_axes_and_values(tmp_path, opset):
    x = (np.random.default_rng(0).standard_normal((9, 17, 16)) * 30).astype(np.float32)  # exp(x) overflows alone
    ops = optimize_and_compare(tmp_path, _model(opset), {"x": x}, pipeline="openvino")
    assert "ReduceLogSumExp" not in ops and ops["ReduceMax"] >= 2


def test_a_concat_of_log_sum_exp_statistics_builds_on_host(tmp_path):
    """A reCAPTCHA tile classifier's four [9, 17, 1] statistics: OpenVINO made them
    scalars and refused the Concat after them."""
    onnx.save(_model(17), tmp_path / "stats.onnx")
    data = [{"x": np.random.default_rng(s).standard_normal((9, 17, 16)).astype(np.float32)} for s in range(3)]
    runner = deploycomp.build(tmp_path / "stats.onnx", tmp_path / "out", target="host", validation_data=data)
    assert all(m["cosine"] >= 0.9999 for m in runner.manifest["validation"]["outputs"].values())
