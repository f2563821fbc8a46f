"""ConstantFoldingPass: shape subgraphs fold once inputs are static; outputs unchanged."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnxruntime as ort
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

from deploycomp.ir import load_model, save_model
from deploycomp.passes.constant_folding import ConstantFoldingPass
from deploycomp.passes.fix_input_shapes import FixInputShapesPass
from tests.conftest import write_text_model

SHAPE_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, C, 4, 4] x) => (float[N, C, 16] y) {
    s = Shape(x)
    i01 = Constant<value = int64[2] {0, 1}>()
    nc = Gather(s, i01)
    sixteen = Constant<value = int64[1] {16}>()
    target = Concat<axis = 0>(nc, sixteen)
    y = Reshape(x, target)
}
"""


def _ops(model: ir.Model) -> Counter:
    return Counter(n.op_type for n in model.graph)


def test_folds_shape_chain_when_input_static(tmp_path):
    path = write_text_model(tmp_path / "m.onnx", SHAPE_CHAIN)
    model = load_model(path).model
    for p in (FixInputShapesPass({"x": (2, 3, 4, 4)}), ShapeInferencePass(), ConstantFoldingPass(), RemoveUnusedNodesPass()):
        p(model)
    assert _ops(model) == Counter({"Reshape": 1})
    save_model(model, tmp_path / "out.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "out.onnx")).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, ref)


def test_keeps_shape_chain_while_dynamic(tmp_path):
    model = load_model(write_text_model(tmp_path / "m.onnx", SHAPE_CHAIN)).model
    ConstantFoldingPass()(model)
    assert _ops(model)["Shape"] == 1


def test_size_cap_stops_bloating_folds(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1] x) => (float[512, 512] y) {
        one = Constant<value = float[1, 1] {1.0}>()
        reps = Constant<value = int64[2] {512, 512}>()
        big = Tile(one, reps)
        y = Add(big, x)
    }
    """
    model = load_model(write_text_model(tmp_path / "m.onnx", text)).model
    ConstantFoldingPass(max_folded_elements=1024)(model)
    assert _ops(model)["Tile"] == 1
    model = load_model(tmp_path / "m.onnx").model
    ConstantFoldingPass(max_folded_elements=1 << 20)(model)
    assert _ops(model)["Tile"] == 0


SPLIT_PADS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 2, 5, 5] x) => (float[1, 2, 7, 8] y) {
    sizes = Constant<value = int64[4] {0, 1, 1, 2}>()
    halves = Constant<value = int64[2] {2, 2}>()
    a, b = Split(sizes, halves)
    zeros = Constant<value = int64[2] {0, 0}>()
    pads = Concat<axis = 0>(zeros, a, zeros, b)
    y = Pad(x, pads)
}
"""


def test_a_split_of_constants_folds_and_what_it_feeds_after_it(tmp_path):
    """onnxscript's folder skips nodes of several outputs: tf2onnx's SAME-padding arithmetic
    (a Split of constant sizes, then a Concat of pads) left a Pad whose output shape nobody
    knew, and TFLite refused a fingerprint model."""
    path = write_text_model(tmp_path / "m.onnx", SPLIT_PADS)
    model = load_model(path).model
    for p in (ConstantFoldingPass(), RemoveUnusedNodesPass(), ShapeInferencePass()):
        p(model)
    assert _ops(model) == Counter({"Pad": 1})
    assert list(next(iter(model.graph)).outputs[0].shape) == [1, 2, 7, 8]
    save_model(model, tmp_path / "out.onnx")
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "out.onnx")).run(None, {"x": x})[0], ref)


UNROLLED_FIRST_STEP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 100] x) => (float[1, 400] y) {
    shape = Constant<value = int64[2] {1, 100}>()
    h0 = ConstantOfShape(shape)
    g0 = Gemm<transB = 1>(h0, w, b)
    g1 = Gemm<transB = 1>(x, w, b)
    y = Add(g0, g1)
}
"""


def test_a_large_constant_folds_into_a_small_result_without_a_copy(tmp_path):
    """An unrolled LSTM's first step reads its zero initial state with the recurrent weight
    every step shares (40 000 elements, above the input cap): the step folds to its
    400-element result, the weight stays once for the other steps, outputs unchanged."""
    from tests.passes._harness import model_from_text, optimize_and_compare

    rng = np.random.default_rng(0)
    model = model_from_text(UNROLLED_FIRST_STEP, w=rng.standard_normal((400, 100)).astype(np.float32),
                            b=rng.standard_normal(400).astype(np.float32))
    ops = optimize_and_compare(tmp_path, model, {"x": rng.standard_normal((1, 100)).astype(np.float32)})
    assert ops["Gemm"] == 1
    sizes = sorted(v.const_value.size for v in load_model(tmp_path / "after.onnx").model.graph.initializers.values())
    assert sizes[-1] == 40000 and sizes.count(40000) == 1 and sum(sizes) <= 40000 + 2 * 400


def test_a_folded_value_takes_its_tensor_s_shape_over_a_symbolic_inferred_one(tmp_path):
    """tf2onnx reshapes a weight to a shape it computes from the weight's own ``Shape``:
    shape inference can only say ``unk__0 x unk__1`` before folding; folded, the weight
    is a 128 x 128 initializer, and so are the shapes downstream (a BERT's Gemm output
    had none, and TFLite refused the model)."""
    import onnx
    from onnx import helper, numpy_helper

    from deploycomp.passes import build_pipeline, run_passes

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Shape", ["w5"], ["s"]),
         helper.make_node("Gather", ["s", "axes"], ["tail"]),
         helper.make_node("ReduceProd", ["tail"], ["cols"], keepdims=1),
         helper.make_node("Concat", ["minus_one", "cols"], ["shape"], axis=0),
         helper.make_node("Reshape", ["w5", "shape"], ["w"]),
         helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", 1, ["n", 128])], [helper.make_tensor_value_info("y", 1, ["n", "m"])],
        [numpy_helper.from_array(rng.standard_normal((1, 1, 128, 8, 16)).astype(np.float32), "w5"),
         numpy_helper.from_array(np.array([3, 4], np.int64), "axes"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (2, 128)}))
    gemm = next(n for n in model.graph if n.op_type == "Gemm")
    assert tuple(gemm.inputs[1].shape) == (128, 128) and tuple(gemm.outputs[0].shape) == (2, 128)


def test_folding_a_log_of_zero_is_quiet(tmp_path, recwarn):
    """A constant's ``log(0)`` folds to -inf as the model would compute it, without numpy's
    divide-by-zero warning reaching the log (a T5's position buckets)."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) {
        z = Constant<value = float[2] {0.0, 1.0}>()
        l = Log(z)
        y = Max(x, l)
    }
    """
    model = load_model(write_text_model(tmp_path / "m.onnx", text)).model
    ConstantFoldingPass()(model)
    assert "Log" not in _ops(model)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
