"""ONNX-ML arithmetic (skl2onnx's Scaler, LinearRegressor, Binarizer, Imputer,
OneHotEncoder) becomes core ops that compute the same; what has no core form (a binary one-row LinearClassifier) stays, and is
refused by name. Tree ensembles: test_ml_trees.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

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


def _classifier(path, post_transform: str, norm: str, labels=(10, 20, 30), core_opset: int | None = None, rows=4):
    """A scikit-learn LogisticRegression as skl2onnx writes it with ``zipmap=False``:
    LinearClassifier (3 classes, 4 features) -> Normalizer; in ``ai.onnx.ml`` alone unless
    ``core_opset``."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="logreg",
                              classlabels_ints=list(labels), coefficients=rng.standard_normal(12).tolist(),
                              intercepts=[0.2, -0.1, 0.4], multi_class=0, post_transform=post_transform),
             helper.make_node("Normalizer", ["scores"], ["probabilities"], domain="ai.onnx.ml", name="norm", norm=norm)]
    graph = helper.make_graph(nodes, "logreg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [rows]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [rows, 3])])
    opsets = [ML] + ([helper.make_opsetid("", core_opset)] if core_opset else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), path)
    return path


@pytest.mark.parametrize("post_transform,norm,labels,core_opset", [
    ("LOGISTIC", "L1", (10, 20, 30), None),  # what skl2onnx writes for a LogisticRegression
    ("SOFTMAX", "L2", (0, 1, 2), 17),
    ("NONE", "MAX", (7, 3, 5), 18),  # ReduceMax's axes an input from opset 18
])
def test_a_linear_classifier_and_normalizer_become_core_ops(tmp_path, post_transform, norm, labels, core_opset):
    path = _classifier(tmp_path / "logreg.onnx", post_transform, norm, labels, core_opset)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (4, 4)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    assert model.opset_imports[""] == (core_opset or 17)
    save_model(model, tmp_path / "core.onnx")
    x = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    x[3] = 0.0  # all scores equal the intercepts; with NONE + MAX a row of negative maxima
    want = ort.InferenceSession(str(path)).run(None, {"x": x})
    got = ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_a_normalizer_passes_a_row_of_zeros_through(tmp_path):
    """ONNX Runtime's Normalizer leaves a row whose divisor is 0 as it is (no NaN)."""
    node = helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", name="norm", norm="L2")
    path = _model(tmp_path / "n.onnx", [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (2, 3)}))
    save_model(model, tmp_path / "core.onnx")
    x = np.asarray([[0, 0, 0], [3, -4, 0]], np.float32)
    got = ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, [[0, 0, 0], [0.6, -0.8, 0]], rtol=1e-6)


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_every_target_builds_a_logistic_regression_in_ml_ops_alone(tmp_path, target):
    path = _classifier(tmp_path / "logreg.onnx", "LOGISTIC", "L1")
    runner = deploycomp.build(path, tmp_path / "out", target=target)
    assert runner.manifest["validation"]["ok"]
    x = np.random.default_rng(4).standard_normal((4, 4)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})
    got = runner.run({"x": x})
    np.testing.assert_array_equal(got["label"], want[0])


def test_a_binary_classifier_stays_and_is_refused_by_name(tmp_path):
    """ONNX Runtime's binary scores ([1 - s, s]) are not the ONNX reference's ([-s, s]):
    no core form is written for them."""
    node = helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="binary",
                            classlabels_ints=[0, 1], coefficients=[0.5, -0.25], intercepts=[0.1])
    path = _model(tmp_path / "b.onnx", [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                  [helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
                   helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(DeployError, match="LinearClassifier") as e:
        deploycomp.build(path, tmp_path / "out", target="android-arm64")
    assert "\n" not in str(e.value)


def _linear_svc(path):
    """A scikit-learn LinearSVC as skl2onnx 1.x writes it: a two-row LinearClassifier
    (``-w`` and ``w``) whose positive-class column an ArrayFeatureExtractor picks with a
    scalar index (its ``probabilities``, shape ``[N, 1]``)."""
    w = np.asarray([-1.52, -1.89, -0.20, 0.15], np.float32)
    nodes = [helper.make_node("LinearClassifier", ["X"], ["label", "raw"], domain="ai.onnx.ml", name="svc",
                              classlabels_ints=[0, 1], coefficients=np.concatenate([w, -w]).tolist(),
                              intercepts=[0.005, -0.005], multi_class=0, post_transform="NONE"),
             helper.make_node("ArrayFeatureExtractor", ["raw", "positive"], ["probabilities"], domain="ai.onnx.ml",
                              name="pick")]
    graph = helper.make_graph(nodes, "svc", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 1])],
                              [numpy_helper.from_array(np.asarray(1, np.int64), "positive")])
    onnx.save(helper.make_model(graph, opset_imports=[ML, helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.mark.parametrize("indices", [np.asarray(1, np.int64), np.asarray([[2, 0]], np.int64)])
def test_an_array_feature_extractor_is_a_gather_on_the_last_axis(tmp_path, indices):
    """ONNX Runtime flattens the indices and keeps the last axis: a scalar index gives
    ``[N, 1]``, a ``[1, 2]`` index ``[N, 2]``."""
    node = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml", name="pick")
    graph = helper.make_graph([node], "afe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(indices, "i")])
    path = tmp_path / "afe.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[ML, helper.make_opsetid("", 17)], ir_version=8), path)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (3, 4)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    save_model(model, tmp_path / "core.onnx")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, {"x": x})[0]
    assert got.shape == want.shape == (3, indices.size)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_every_target_builds_a_linear_svc(tmp_path, target):
    path = _linear_svc(tmp_path / "svc.onnx")
    runner = deploycomp.build(path, tmp_path / "out", target=target, inputs=["X:4x4"])
    assert runner.manifest["validation"]["ok"]
    x = np.random.default_rng(5).standard_normal((4, 4)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"X": x})
    got = runner.run({"X": x})
    np.testing.assert_array_equal(got["label"], want[0])
    np.testing.assert_allclose(got["probabilities"], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("replaced,imputed", [(float("nan"), [0.5, -1.0, 2.0]), (0.0, [7.0]), (-1, [3, 4, 5])])
def test_an_imputer_fills_what_onnx_runtime_fills(tmp_path, replaced, imputed):
    """scikit-learn's SimpleImputer: NaN (or ``replaced_value``) filled per column or with
    one value; an int64 column with its own attributes."""
    ints = isinstance(replaced, int)
    kind = TensorProto.INT64 if ints else TensorProto.FLOAT
    attrs = ({"imputed_value_int64s": imputed, "replaced_value_int64": replaced} if ints
             else {"imputed_value_floats": imputed, "replaced_value_float": replaced})
    node = helper.make_node("Imputer", ["x"], ["y"], domain="ai.onnx.ml", name="impute", **attrs)
    path = _model(tmp_path / "i.onnx", [node], [helper.make_tensor_value_info("x", kind, [None, 3])],
                  [helper.make_tensor_value_info("y", kind, [None, 3])])
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, (6, 3)) if ints else rng.standard_normal((6, 3)).astype(np.float32)
    if not ints:
        x[rng.random(x.shape) < 0.3] = np.nan
        x[0, 1] = 0.0
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (6, 3)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    save_model(model, tmp_path / "core.onnx")
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, {"x": x})[0], want)


@pytest.mark.parametrize("kind", [TensorProto.INT64, TensorProto.FLOAT])
def test_a_one_hot_encoder_of_integer_categories_is_an_equal(tmp_path, kind):
    """A ColumnTransformer's categorical column: one float column per category, a row of
    zeros for an unknown one; a float input is truncated to its integer as ONNX Runtime does."""
    node = helper.make_node("OneHotEncoder", ["c"], ["y"], domain="ai.onnx.ml", name="onehot",
                            cats_int64s=[0, 3, 1, 7], zeros=1)
    path = _model(tmp_path / "o.onnx", [node], [helper.make_tensor_value_info("c", kind, [None, 1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 4])])
    c = np.asarray([[0], [1], [2], [3], [7], [-1]], np.int64)
    c = c if kind == TensorProto.INT64 else (c + 0.4).astype(np.float32)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"c": (6, 1)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    save_model(model, tmp_path / "core.onnx")
    want = ort.InferenceSession(str(path)).run(None, {"c": c})[0]
    np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, {"c": c})[0], want)


def test_ml_ops_whose_outputs_onnx_cannot_type_still_feed_a_tree_ensemble(tmp_path):
    """Imputer -> Scaler -> gradient boosting, as skl2onnx writes a scikit-learn pipeline:
    ONNX's shape inference leaves the Imputer's output untyped, and the trees need their
    input's width; once the Imputer is core ops it is typed and the trees follow."""
    rng = np.random.default_rng(3)
    trees = {"nodes_treeids": [0, 0, 0], "nodes_nodeids": [0, 1, 2], "nodes_featureids": [1, 0, 0],
             "nodes_values": [0.1, 0.0, 0.0], "nodes_modes": ["BRANCH_LEQ", "LEAF", "LEAF"],
             "nodes_truenodeids": [1, 0, 0], "nodes_falsenodeids": [2, 0, 0], "target_treeids": [0, 0],
             "target_nodeids": [1, 2], "target_ids": [0, 0], "target_weights": [-1.5, 2.5]}
    nodes = [helper.make_node("Imputer", ["x"], ["filled"], domain="ai.onnx.ml", imputed_value_floats=[0.0, 0.2],
                              replaced_value_float=float("nan")),
             helper.make_node("Scaler", ["filled"], ["s"], domain="ai.onnx.ml", offset=[0.1, -0.1], scale=[2.0, 0.5]),
             helper.make_node("TreeEnsembleRegressor", ["s"], ["y"], domain="ai.onnx.ml", n_targets=1, **trees)]
    path = _model(tmp_path / "p.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    x = rng.standard_normal((8, 2)).astype(np.float32)
    x[::3, 1] = np.nan
    runner = deploycomp.build(path, tmp_path / "out", target="android-arm64", inputs=["x:8x2"],
                              validation_data=[{"x": x}])
    np.testing.assert_allclose(runner.run({"x": x})["y"], ort.InferenceSession(str(path)).run(None, {"x": x})[0],
                               rtol=1e-6)


@pytest.mark.parametrize("keys,values,default", [
    ("keys_int64s", "values_floats", {}),                       # an IsolationForest's leaf -> path length
    ("keys_int64s", "values_int64s", {"default_int64": 99}),
    ("keys_floats", "values_int64s", {}),
])
def test_a_numeric_label_encoder_is_a_lookup(tmp_path, keys, values, default):
    """Each input equal to a key becomes its value, any other the default, as ONNX Runtime maps it."""
    key_list = [4, 5, 7, 8, 12]
    value_list = [1.5, 2.0, -3.0, 0.25, 9.0] if values.endswith("floats") else [10, 20, 30, 40, 50]
    node = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", name="encode",
                            **{keys: [float(k) for k in key_list] if keys.endswith("floats") else key_list,
                               values: value_list}, **default)
    kind = TensorProto.FLOAT if keys.endswith("floats") else TensorProto.INT64
    out = TensorProto.FLOAT if values.endswith("floats") else TensorProto.INT64
    graph = helper.make_graph([node], "encode", [helper.make_tensor_value_info("x", kind, [3, 4])],
                              [helper.make_tensor_value_info("y", out, [3, 4])])
    path = tmp_path / "e.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]),
              path)
    x = np.asarray([[4, 5, 6, 7], [8, 12, 0, 4], [13, 12, 5, -1]], np.float32 if kind == TensorProto.FLOAT else np.int64)
    model, _ = run_passes(load_model(path).model, build_pipeline("default", {"x": (3, 4)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    save_model(model, tmp_path / "core.onnx")
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "core.onnx")).run(None, {"x": x})[0], want)
