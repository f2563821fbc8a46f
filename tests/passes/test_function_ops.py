"""TFLite's pipeline writes out the ops ONNX defines as functions that TFLite has no
kernel for (opset 23's Attention, RotaryEmbedding, ...): no such op is left, and the
outputs are ONNX's expected ones."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import deploycomp
from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes


def _case(name: str):
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return next(c for c in collect_testcases(None) if c.name == name)


@pytest.mark.parametrize("pipeline, name", [("tflite", "test_attention_4d_gqa_causal"),
                                            ("tflite", "test_attention_3d_attn_mask"),
                                            ("tflite", "test_attention_4d_with_qk_matmul"),
                                            ("tflite", "test_rotary_embedding"),
                                            ("tflite", "test_rotary_embedding_interleaved"),
                                            ("tensorrt", "test_affine_grid_2d"),
                                            ("tensorrt", "test_center_crop_pad_crop")])
def test_function_ops_are_written_out_with_their_expected_outputs(tmp_path, pipeline, name):
    """Attention with grouped heads and a causal mask, with a 3-D mask, with its QK product
    as a second output (its present key and value not taken); RotaryEmbedding; for
    TensorRT's parser, AffineGrid (a definition of a fixed opset: ONNX hands it over
    serialized) and CenterCropPad."""
    case = _case(name)
    inputs, expected = case.data_sets[0]
    feeds = {v.name: np.asarray(a) for v, a in zip(case.model.graph.input, inputs)}
    onnx.save(case.model, tmp_path / "case.onnx")
    model, _ = run_passes(load_model(tmp_path / "case.onnx").model,
                          build_pipeline(pipeline, {k: v.shape for k, v in feeds.items()}))
    op = case.model.graph.node[0].op_type
    assert not any(n.op_type == op for n in model.graph)
    save_model(model, tmp_path / "written.onnx")
    got = ort.InferenceSession(str(tmp_path / "written.onnx")).run(None, feeds)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_a_transformer_block_of_opset_23_builds_for_android(tmp_path):
    """PyTorch's exporter at opset 23 writes scaled dot-product attention as ``Attention``:
    TFLite refused it by name ("cannot run op(s) Attention")."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("RMSNormalization", ["x", "s"], ["n"], axis=-1),
         helper.make_node("MatMul", ["n", "w"], ["q"]),
         helper.make_node("Attention", ["q", "q", "q"], ["y"], q_num_heads=2, kv_num_heads=2, is_causal=1)], "block",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 16])],
        [numpy_helper.from_array(np.ones(16, np.float32), "s"),
         numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "block.onnx")
    x = rng.normal(size=(4, 1, 8, 16)).astype(np.float32)
    runner = deploycomp.build(tmp_path / "block.onnx", tmp_path / "b", target="android-arm64",
                              validation_data=[{"x": s} for s in x])
    assert runner.manifest["validation"]["ok"]
    (want,) = ort.InferenceSession(str(tmp_path / "block.onnx")).run(None, {"x": x[0]})
    np.testing.assert_allclose(runner.run({"x": x[0]})["y"], want, rtol=1e-4, atol=1e-5)


def _one_node(path, node, inputs, output_shape, initializers, opset):
    graph = helper.make_graph([node], "one", inputs, [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                                                    output_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("opset", [19, 21, 22])
def test_a_body_written_for_an_earlier_opset_is_read_at_the_models(tmp_path, opset):
    """ONNX keeps Shrink's body at opset 18: in a model of a later opset the inliner had
    refused it ("domain '' has version 21 in the model but version 18 in the function"),
    failing the build as a bad model file. Its ops only gained types since, so it is
    read at the model's opset; ``bias``, left at its default, is spelled out for the
    body's reference to it (written in as a Constant with no value, it had not loaded)."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    path = _one_node(tmp_path / "shrink.onnx", helper.make_node("Shrink", ["x"], ["y"], lambd=0.5), [x],
                     [1, 3, 8, 8], [], opset)
    model, _ = run_passes(load_model(path).model, build_pipeline("tflite", {"x": (1, 3, 8, 8)}))
    assert not any(n.op_type == "Shrink" for n in model.graph)
    save_model(model, tmp_path / "written.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    want = ort.InferenceSession(str(path)).run(None, feeds)[0]
    np.testing.assert_allclose(ort.InferenceSession(str(tmp_path / "written.onnx")).run(None, feeds)[0], want,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch, written", [(2, True), (1, False)])
def test_a_body_that_does_not_compute_the_op_is_not_written_in(tmp_path, batch, written):
    """ONNX's own body of AffineGrid squeezes a [N, 1, 3] slice of theta without axes: at
    batch 1 that leaves a 1-D tensor its next Split cuts on axis 1, and the written-out
    model of an opset-22 spatial transformer did not load. A body is written in only where
    it passes ONNX's shape inference and, where ONNX Runtime runs the op, gives its outputs;
    otherwise the op stays for the backend's support check to name."""
    theta = helper.make_tensor_value_info("theta", onnx.TensorProto.FLOAT, [batch, 2, 3])
    size = numpy_helper.from_array(np.array([batch, 3, 8, 8], np.int64), "size")
    path = _one_node(tmp_path / "grid.onnx", helper.make_node("AffineGrid", ["theta", "size"], ["y"]), [theta],
                     [batch, 8, 8, 2], [size], 22)
    model, _ = run_passes(load_model(path).model, build_pipeline("tensorrt", {"theta": (batch, 2, 3)}))
    assert any(n.op_type == "AffineGrid" for n in model.graph) is not written
    save_model(model, tmp_path / "written.onnx")
    feeds = {"theta": np.random.default_rng(0).standard_normal((batch, 2, 3)).astype(np.float32)}
    want = ort.InferenceSession(str(path)).run(None, feeds)[0]
    np.testing.assert_allclose(ort.InferenceSession(str(tmp_path / "written.onnx")).run(None, feeds)[0], want,
                               rtol=1e-5, atol=1e-6)


def test_a_body_over_inputs_of_open_shapes_is_written_in_unchecked_at_run_time():
    """Attention over a sequence the model leaves open: no input to run the check on, so
    the body is taken on ONNX's strict shape inference alone (the check had raised a
    TypeError for the second input once the first had no runnable shape)."""
    import onnx_ir as ir

    from deploycomp.passes.function_ops import ExpandFunctionOpsPass

    qkv = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 2, "S", 8]) for n in "qkv"]
    graph = helper.make_graph([helper.make_node("Attention", ["q", "k", "v"], ["y"])], "attention", qkv,
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, "S", 8])])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]))
    model = ir.from_proto(proto)
    assert ExpandFunctionOpsPass({"Attention"})(model).modified
    assert not any(n.op_type == "Attention" for n in model.graph)


def test_layers_alike_are_checked_once(monkeypatch):
    """Every layer of a transformer asks the same question of its Attention's body: it is
    checked once for them all (25 ms a check: a 24-layer model's 72 function ops had been
    checked one by one), and each layer still gets its body."""
    import onnx_ir as ir

    from deploycomp.passes import function_ops

    checked = []
    real = function_ops._holds
    monkeypatch.setattr(function_ops, "_holds", lambda *a: checked.append(a[0].name) or real(*a))
    nodes = [helper.make_node("Attention", [f"h{i}"] * 3, [f"h{i + 1}"], name=f"attention{i}") for i in range(3)]
    graph = helper.make_graph(nodes, "layers", [helper.make_tensor_value_info("h0", onnx.TensorProto.FLOAT,
                                                                               [1, 2, 16, 8])],
                              [helper.make_tensor_value_info("h3", onnx.TensorProto.FLOAT, [1, 2, 16, 8])])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]))
    model = ir.from_proto(proto)
    assert function_ops.ExpandFunctionOpsPass({"Attention"})(model).modified
    assert checked == ["attention0"] and not any(n.op_type == "Attention" for n in model.graph)
