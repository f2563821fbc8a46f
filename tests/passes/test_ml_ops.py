"""ONNX-ML arithmetic (skl2onnx's Scaler, LinearRegressor, Binarizer) becomes core ops that
compute the same; what has no core form (a tree ensemble) stays, and is refused by name."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import deploycomp
from deploycomp.errors import DeployError
from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes

ML = helper.make_opsetid("ai.onnx.ml", 1)


def _model(path, nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "sklearn", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), ML]), path)
    return path


@pytest.fixture
def pipeline(tmp_path):
    """StandardScaler -> LinearRegression (two targets), and a Binarizer beside them, as
    skl2onnx writes them; ``n`` an int64 column scaled on its own."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Scaler", ["x"], ["s"], domain="ai.onnx.ml", name="scaler",
                         offset=rng.standard_normal(4).tolist(), scale=rng.uniform(0.5, 2, 4).tolist()),
        helper.make_node("LinearRegressor", ["s"], ["y"], domain="ai.onnx.ml", name="linear", targets=2,
                         coefficients=rng.standard_normal(8).tolist(), intercepts=[0.5, -1.0]),
        helper.make_node("Binarizer", ["x"], ["b"], domain="ai.onnx.ml", name="binarizer", threshold=0.25),
        helper.make_node("Scaler", ["n"], ["ns"], domain="ai.onnx.ml", name="int_scaler", offset=[3.0], scale=[0.5]),
    ]
    return _model(tmp_path / "sk.onnx", nodes,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4]),
                   helper.make_tensor_value_info("n", TensorProto.INT64, [None, 1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 4]),
                   helper.make_tensor_value_info("ns", TensorProto.FLOAT, [None, 1])])


def test_ml_arithmetic_becomes_core_ops_that_compute_the_same(pipeline, tmp_path):
    model, _ = run_passes(load_model(pipeline).model, build_pipeline("default", {"x": (5, 4), "n": (5, 1)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    assert "ai.onnx.ml" not in model.opset_imports
    assert Counter(n.op_type for n in model.graph)["Gemm"] == 1
    save_model(model, tmp_path / "core.onnx")
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((5, 4)).astype(np.float32), "n": rng.integers(-5, 5, (5, 1))}
    feeds["x"][0, 0] = 0.25  # at the threshold: not above it
    want = ort.InferenceSession(str(pipeline)).run(None, feeds)
    got = ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, feeds)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_every_target_builds_a_scaled_linear_model(pipeline, tmp_path, target):
    runner = deploycomp.build(pipeline, tmp_path / "out", target=target, inputs=["x:5x4", "n:5x1"])
    assert runner.manifest["validation"]["ok"]


def test_a_tree_ensemble_is_refused_by_name(tmp_path):
    node = helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="trees", n_targets=1,
                            nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                            nodes_values=[0.5, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
                            nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
                            target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0], target_weights=[1.0, 2.0])
    path = _model(tmp_path / "trees.onnx", [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    with pytest.raises(DeployError, match="TreeEnsembleRegressor") as e:
        deploycomp.build(path, tmp_path / "out", target="android-arm64", inputs=["x:1x2"])
    assert "\n" not in str(e.value)
