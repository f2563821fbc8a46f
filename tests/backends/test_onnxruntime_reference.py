"""The fp32 reference every build is validated against computes what the model says."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

import deploycomp


def _int4_mlp(path, layers: int = 4, width: int = 128, block: int = 32):
    """x -> (MatMul by int4 weights, blocked DequantizeLinear; Relu) x layers: a
    weight-only-quantized export as LLM tools write them (opset 21)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        q = rng.integers(-8, 8, (width, width)).astype(np.int8)
        scales = (rng.random((width // block, width)) * 0.05 + 0.01).astype(np.float32)
        inits += [helper.make_tensor(f"w{i}", onnx.TensorProto.INT4, q.shape, q.ravel().tolist()),
                  numpy_helper.from_array(scales, f"s{i}")]
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}", f"s{i}"], [f"wf{i}"], axis=0, block_size=block),
                  helper.make_node("MatMul", [x, f"wf{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"h{i}"])]
        x = f"h{i}"
    nodes[-1] = helper.make_node("Relu", [f"m{layers - 1}"], ["y"])
    graph = helper.make_graph(nodes, "int4", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_an_int4_weight_only_model_is_referenced_in_fp32(tmp_path):
    """ONNX Runtime fuses a blocked int4 DequantizeLinear -> MatMul into MatMulNBits, by
    default rounding the activations to int8 (accuracy level 4): the reference of an int4
    MLP was 0.024 off the model's own arithmetic, every exact fp32 bundle was said to
    differ by that much, and a deeper stack fell under the fp32 budget."""
    import onnxruntime as ort

    from deploycomp.backends.onnxruntime import ORTRunner

    path = _int4_mlp(tmp_path / "int4.onnx")
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 128)).astype(np.float32)}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    written = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    scale = float(np.abs(written).max())
    np.testing.assert_allclose(ORTRunner(path).run(feeds)["y"], written, atol=1e-5 * scale)

    np.savez(tmp_path / "val.npz", x=np.random.default_rng(2).standard_normal((4, 1, 128)).astype(np.float32))
    deploycomp.build(path, tmp_path / "b", target="host", precision="fp32", validation_data=tmp_path / "val.npz")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["validation"]["outputs"]["y"]["max_abs_error"] < 1e-4 * scale
    # and the bundle says what became of the int4 weights (its fp32 bundle had said nothing)
    assert any(a.startswith("weights arrive quantized, weight-only (4 int4 tensors") for a in manifest["assumptions"])
