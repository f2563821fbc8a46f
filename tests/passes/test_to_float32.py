"""A float16 model widened to float32 for int8, a float64 one narrowed for TFLite and int8:
outputs as before (to float16 rounding; to float32 rounding),
neither left inside, the interface as typed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from deploycomp.passes.to_float32 import Float16ToFloat32Pass, Float64ToFloat32Pass, has_dtype, has_float16
from tests.passes._harness import model_from_text

def _half_model() -> onnx.ModelProto:
    """float16 inputs and outputs, a float16 Constant, ConstantOfShape and initializer, a
    Cast to float16, an If whose branches give float16, an output that is an input."""
    from onnx import TensorProto as T, helper, numpy_helper

    f16 = lambda v: helper.make_tensor("v", T.FLOAT16, [1], np.array([v], np.float16).view(np.uint16).tolist())
    branch = lambda name, node: helper.make_graph([node], name, [], [helper.make_tensor_value_info(
        node.output[0], T.FLOAT16, [2, 4])])
    nodes = [helper.make_node("Constant", [], ["k"], value=f16(0.5)),
             helper.make_node("Mul", ["x", "k"], ["a"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["ones"], value=f16(1.0)),
             helper.make_node("Add", ["a", "ones"], ["b"]),
             helper.make_node("Cast", ["b"], ["f"], to=T.FLOAT),
             helper.make_node("Cast", ["f"], ["h"], to=T.FLOAT16),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("t", helper.make_node("Tanh", ["h"], ["p"])),
                              else_branch=branch("e", helper.make_node("Mul", ["h", "w"], ["q"]))),
             helper.make_node("Identity", ["x"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT16, [2, 4]), helper.make_tensor_value_info("c", T.BOOL, [])],
        [helper.make_tensor_value_info(n, t, [2, 4]) for n, t in (("y", T.FLOAT16), ("z", T.FLOAT16), ("f", T.FLOAT))],
        [numpy_helper.from_array(np.full((2, 4), 1.5, np.float16), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_a_float16_model_computes_in_float32_behind_float16_inputs_and_outputs():
    source = _half_model()
    model = ir.from_proto(source)
    assert has_float16(model)
    assert Float16ToFloat32Pass()(model).modified
    widened = ir.to_proto(model)
    onnx.checker.check_model(widened, full_check=True)
    inside = [v for n in ir.traversal.RecursiveGraphIterator(model.graph) for v in n.outputs
              if v.dtype == ir.DataType.FLOAT16]
    assert [v.name for v in inside] == ["y", "z"]  # only the two Casts back at the outputs
    assert [v.dtype for v in model.graph.inputs] == [ir.DataType.FLOAT16, ir.DataType.BOOL]
    assert [v.dtype for v in model.graph.outputs] == [ir.DataType.FLOAT16, ir.DataType.FLOAT16, ir.DataType.FLOAT]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float16)
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        for want, got in zip(_run(source, feeds), _run(widened, feeds)):
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_a_float32_model_is_left_alone():
    model = ir.from_proto(model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2] x) => (float[2] y) { y = Relu(x) }
    """))
    assert not has_float16(model) and not Float16ToFloat32Pass()(model).modified


def _double_model() -> onnx.ModelProto:
    """A float64 input and output around a float32 part, and inside a Cast to double, a
    double weight and a double ConstantOfShape (a pitch tracker's STFT casts to double)."""
    return model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (double[1, 8] a, float[1, 8] x) => (double[1, 8] y, float[1, 8] z) {
        xd = Cast<to = 11>(x)
        s = Shape(x)
        half = ConstantOfShape<value = double[1] {0.5}>(s)
        m = Mul(xd, w)
        p = Add(m, half)
        y = Mul(p, a)
        z = Cast<to = 1>(p)
    }
    """, w=np.linspace(0.5, 2.0, 8))


def test_a_float64_model_computes_in_float32_behind_its_interface_once():
    source = _double_model()
    model = ir.from_proto(source)
    assert has_dtype(model, ir.DataType.DOUBLE) and Float64ToFloat32Pass()(model).modified
    narrowed = ir.to_proto(model)
    onnx.checker.check_model(narrowed, full_check=True)
    inside = [v.name for n in model.graph for v in n.outputs if v.dtype == ir.DataType.DOUBLE]
    assert inside == ["y"]  # only the Cast back at the double output
    assert [v.dtype for v in model.graph.inputs] == [ir.DataType.DOUBLE, ir.DataType.FLOAT]
    assert not Float64ToFloat32Pass()(model).modified  # a second run (TFLite's, then int8's) finds it done
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((1, 8)), "x": rng.standard_normal((1, 8)).astype(np.float32)}
    for want, got in zip(_run(source, feeds), _run(narrowed, feeds)):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_tflite_build_of_a_model_that_casts_to_double(tmp_path):
    """LiteRT's MUL refused a float64 tensor beside a float32 one (an internal error); the
    TFLite pipeline computes float64 in float32, at fp32 and int8."""
    import deploycomp

    onnx.save(_double_model(), tmp_path / "double.onnx")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "data.npz", a=rng.standard_normal((6, 8)), x=rng.standard_normal((6, 8)).astype(np.float32))
    for precision in ("fp32", "int8"):
        runner = deploycomp.build(tmp_path / "double.onnx", tmp_path / precision, target="android-arm64",
                                  precision=precision, calibration=tmp_path / "data.npz",
                                  validation_data=tmp_path / "data.npz")
        assert runner.manifest["validation"]["ok"]
        got = runner.run({"a": np.ones((1, 8)), "x": np.ones((1, 8), np.float32)})
        np.testing.assert_allclose(got["z"][0], np.linspace(0.5, 2.0, 8) + 0.5, rtol=1e-6 if precision == "fp32" else 0.05)
        assert got["y"].dtype == np.float64  # the interface as the model types it


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_tflite_build_of_a_float16_model(tmp_path, real_model, precision):
    """PP-OCR's direction classifier converted to float16 by ONNX Runtime's own converter
    (inputs and outputs float16): LiteRT has no float16 kernel for its ops (an internal
    error in MAX_POOL_2D); the TFLite pipeline computes it in float32, behind its float16
    interface."""
    import deploycomp
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from deploycomp.sample_data import ocr_cls_samples

    half = convert_float_to_float16(onnx.load(real_model("ppocr-cls")), keep_io_types=False)
    onnx.save(half, tmp_path / "cls16.onnx")
    x = np.concatenate(ocr_cls_samples((1, 3, 48, 192))).astype(np.float16)
    np.savez(tmp_path / "val.npz", x=x)
    runner = deploycomp.build(tmp_path / "cls16.onnx", tmp_path / "b", target="android-arm64", precision=precision,
                              validation_data=tmp_path / "val.npz")
    assert runner.manifest["validation"]["ok"]
    assert any(a.startswith("a float16 model: computed in float32") for a in runner.manifest["assumptions"])
    got = runner.run({"x": x[:1]})
    assert got[next(iter(got))].dtype == np.float16
