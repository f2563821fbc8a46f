"""TFLite's pipeline: an ``If`` becomes both branches and a ``Where``, outputs unchanged,
and the branches' layers are the graph's (for the optimizer and for int8)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import deploycomp
from tests.passes._harness import model_from_text, optimize_and_compare
from tests.passes.test_if_condition import wake_word_feeds, wake_word_model


@pytest.mark.parametrize("passes", [True, False])
def test_a_wake_word_verifier_becomes_both_branches_and_a_where(tmp_path, passes):
    ops = optimize_and_compare(tmp_path, wake_word_model(), wake_word_feeds(passes), pipeline="tflite")
    assert "If" not in ops and ops["Where"] == 1 and ops["MatMul"] == 2


# nested: the then branch holds an If of its own; both branches name a value ``h`` and
# hold a constant (an initializer once lifted), as sibling scopes may
NESTED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x, float[1] s) => (float[2, 4] y, float[2, 4] z) {
    zero = Constant <value = float[1] {0.0}> ()
    c = Greater(s, zero)
    y, z = If(c) <then_branch = then_g () => (float[2, 4] a, float[2, 4] b) {
        k = Constant <value = float[1] {2.0}> ()
        h = Mul(x, k)
        d = Less(s, k)
        a = If(d) <then_branch = inner_then () => (float[2, 4] i) {
            i = Tanh(h)
        }, else_branch = inner_else () => (float[2, 4] j) {
            j = Neg(h)
        }>
        b = Identity(x)
    }, else_branch = else_g () => (float[2, 4] e, float[2, 4] f) {
        k = Constant <value = float[1] {3.0}> ()
        h = Add(x, k)
        e = Relu(h)
        f = Sub(h, x)
    }>
}
"""


@pytest.mark.parametrize("s", [-1.0, 1.0, 5.0])
def test_nested_ifs_and_names_both_branches_share_come_out_exact(tmp_path, s):
    model = model_from_text(NESTED)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32),
             "s": np.array([s], np.float32)}
    ops = optimize_and_compare(tmp_path, model, feeds, pipeline="tflite")
    assert "If" not in ops and ops["Where"] == 3  # two outputs of the outer If, one of the inner
    onnx.checker.check_model(onnx.load(tmp_path / "after.onnx"), full_check=True)  # names unique, in order


def test_branches_of_different_shapes_stay_an_if(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4] x, bool c) => (float[N] y) {
        y = If(c) <then_branch = t () => (float[4] a) { a = Relu(x) },
                   else_branch = e () => (float[2] b) { b = Slice(x, st, en) }>
    }
    """
    model = model_from_text(text, st=np.array([0], np.int64), en=np.array([2], np.int64))
    ops = optimize_and_compare(tmp_path, model, {"x": np.ones(4, np.float32), "c": np.array(True)},
                               pipeline="tflite")
    assert ops["If"] == 1 and "Where" not in ops


def test_a_tflite_int8_build_quantizes_the_layers_of_a_branch(tmp_path):
    """The verifier's MatMul, inside the ``If``, is an int8 layer like the score's."""
    onnx.save(wake_word_model(), tmp_path / "wake.onnx")
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((16, 1, 8)).astype(np.float32))
    val = [wake_word_feeds(passes)["x"] for passes in (True, False)]
    np.savez(tmp_path / "val.npz", x=np.stack(val))
    result = deploycomp.build(tmp_path / "wake.onnx", tmp_path / "out", target="android-arm64", precision="int8",
                              calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")
    quant = result.manifest["quantization"]
    assert quant["int8_layers"] == 2 and quant["float_layers"] == []
    assert result.manifest["validation"]["ok"]


def test_a_known_condition_leaves_only_the_branch_taken(tmp_path):
    """Constant folding inlines it first: no ``Where``, nothing of the other branch."""
    model = model_from_text(NESTED, s=np.array([5.0], np.float32))  # s declared an input, given a value
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model, feeds, pipeline="tflite")
    assert "If" not in ops and "Where" not in ops and "Tanh" not in ops and "Relu" not in ops


def test_branches_that_give_sequences_stay_an_if(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x, bool c) => (seq(float[2]) y) {
        y = If(c) <then_branch = t () => (seq(float[2]) a) { a = SequenceConstruct(x) },
                   else_branch = e () => (seq(float[2]) b) { n = Neg(x)  b = SequenceConstruct(n) }>
    }
    """
    ops = optimize_and_compare(tmp_path, model_from_text(text), {"x": np.ones(2, np.float32), "c": np.array(False)},
                               pipeline="tflite")
    assert ops["If"] == 1 and "Where" not in ops
