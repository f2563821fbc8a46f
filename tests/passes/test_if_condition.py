"""``If`` conditions become scalars (OpenVINO takes rank 0 or 1 only), outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import deploycomp
from tests.passes._harness import model_from_text, optimize_and_compare

# a wake-word model's shape: a score, and a second opinion only when it passes a threshold
WAKE_WORD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8] x) => (float[1, 1] y) {
    s = MatMul(x, w)
    p = Sigmoid(s)
    c = GreaterOrEqual(p, t)
    y = If(c) <then_branch = then_g () => (float[1, 1] p2) {
        h = MatMul(x, w2)
        p2 = Sigmoid(h)
    }, else_branch = else_g () => (float[1, 1] p1) {
        p1 = Identity(p)
    }>
}
"""


def wake_word_model():
    rng = np.random.default_rng(0)
    return model_from_text(WAKE_WORD, w=rng.standard_normal((8, 1)).astype(np.float32),
                           w2=rng.standard_normal((8, 1)).astype(np.float32), t=np.array([[0.5]], np.float32))


def wake_word_feeds(passes: bool) -> dict:
    """An input whose score passes the threshold (the then branch runs) or not."""
    rng = np.random.default_rng(1)
    w = np.random.default_rng(0).standard_normal((8, 1)).astype(np.float32)
    while True:
        x = rng.standard_normal((1, 8)).astype(np.float32)
        if (float((x @ w).item()) >= 0) == passes:
            return {"x": x}


@pytest.mark.parametrize("passes", [True, False])
def test_a_one_by_one_condition_becomes_a_scalar_with_the_same_outputs(tmp_path, passes):
    ops = optimize_and_compare(tmp_path, wake_word_model(), wake_word_feeds(passes))
    assert ops["If"] == 1 and ops["Reshape"] == 1
    cond = next(n for n in ir.load(tmp_path / "after.onnx").graph if n.op_type == "If").inputs[0]
    assert cond.shape is not None and len(cond.shape) == 0


def test_openvino_builds_the_model_it_refused_for_its_condition(tmp_path):
    import onnx

    onnx.save(wake_word_model(), tmp_path / "wake.onnx")
    for passes in (True, False):
        feeds = wake_word_feeds(passes)
        np.savez(tmp_path / "val.npz", **feeds)
        runner = deploycomp.build(tmp_path / "wake.onnx", tmp_path / "out", target="host",
                                  validation_data=tmp_path / "val.npz", force=True)
        assert runner.manifest["validation"]["ok"]
