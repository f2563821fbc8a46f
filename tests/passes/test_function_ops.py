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
