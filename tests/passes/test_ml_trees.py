"""Tree ensembles (scikit-learn forests and boosting through skl2onnx, LightGBM and XGBoost
through onnxmltools) become comparisons and matrix products that reach the same leaves as
ONNX Runtime's walk, on inputs that sit exactly on the thresholds too; what the tables do
not express stays and is refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import deploycomp
from deploycomp.errors import DeployError
from deploycomp.passes.ml_ops import MLOpsToCorePass
from tests.passes._harness import builds_at_fp32_and_int8, ml_rewritten

ML = helper.make_opsetid("ai.onnx.ml", 1)
LEVELS = np.asarray([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0], np.float32)
"""Thresholds and inputs share these values: every tie between them is exercised."""


def _tables(rng, trees: int, depth: int, features: int, modes: list[str], outputs: int, prefix: str,
            weights=(-1.0, 1.0)) -> dict:
    """Attributes of ``trees`` complete trees of ``depth`` (node ids in breadth-first order,
    a leaf's children none), split modes drawn from ``modes``, each leaf one weight per
    output drawn from ``weights``."""
    attrs: dict[str, list] = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                                              "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                                              f"{prefix}_treeids", f"{prefix}_nodeids", f"{prefix}_ids",
                                              f"{prefix}_weights")}
    for t in range(trees):
        for n in range(2 ** (depth + 1) - 1):
            leaf = n >= 2 ** depth - 1
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(n)
            attrs["nodes_featureids"].append(0 if leaf else int(rng.integers(features)))
            attrs["nodes_values"].append(0.0 if leaf else float(rng.choice(LEVELS)))
            attrs["nodes_modes"].append("LEAF" if leaf else str(rng.choice(modes)))
            attrs["nodes_truenodeids"].append(0 if leaf else 2 * n + 1)
            attrs["nodes_falsenodeids"].append(0 if leaf else 2 * n + 2)
            if leaf:
                for k in range(outputs):
                    attrs[f"{prefix}_treeids"].append(t)
                    attrs[f"{prefix}_nodeids"].append(n)
                    attrs[f"{prefix}_ids"].append(k)
                    attrs[f"{prefix}_weights"].append(float(rng.uniform(*weights)))
    return attrs


def _save(path, node, features: int, outputs: list) -> str:
    graph = helper.make_graph([node], "trees", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, features])],
                              outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), ML], ir_version=8), path)
    return str(path)


def _regressor(path, aggregate="SUM", modes=("BRANCH_LEQ",), base=(0.75, -2.0), **extra) -> str:
    rng = np.random.default_rng(1)
    node = helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="forest", n_targets=2,
                            aggregate_function=aggregate, base_values=list(base),
                            **_tables(rng, 5, 3, 4, list(modes), 2, "target"), **extra)
    return _save(path, node, 4, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])


def _classifier(path, labels, post="NONE", outputs=None, weights=(-1.0, 1.0)) -> str:
    rng = np.random.default_rng(2)
    columns = outputs or len(labels)
    node = helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="boost",
                            classlabels_int64s=list(labels), post_transform=post,
                            **_tables(rng, 6, 3, 4, ["BRANCH_LEQ", "BRANCH_LT"], columns, "class", weights))
    return _save(path, node, 4, [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                                 helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, len(labels)])])


def _inputs(rows: int = 400, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).choice(LEVELS, (rows, 4)).astype(np.float32)


def _rewritten(path) -> tuple[list, list, set[str]]:
    return ml_rewritten(path, _inputs())


@pytest.mark.parametrize("targets,post", [(1, "LOGISTIC"), (1, "SOFTMAX"), (2, "LOGISTIC"), (2, "SOFTMAX")])
def test_a_regressors_post_transform_applies_as_onnx_runtime_applies_it(tmp_path, targets, post):
    """ONNX Runtime transforms several targets' scores, and leaves one target's sum as it is."""
    rng = np.random.default_rng(1)
    node = helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", n_targets=targets,
                            post_transform=post, **_tables(rng, 3, 2, 4, ["BRANCH_LEQ"], targets, "target"))
    path = _save(tmp_path / "p.onnx", node, 4, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, targets])])
    want, got, _ = _rewritten(path)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("aggregate,modes", [
    ("SUM", ("BRANCH_LEQ",)),
    ("AVERAGE", ("BRANCH_LT", "BRANCH_GTE")),
    ("SUM", ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT", "BRANCH_GTE", "BRANCH_EQ", "BRANCH_NEQ")),
])
def test_a_regressor_reaches_the_leaves_onnx_runtime_reaches(tmp_path, aggregate, modes):
    want, got, ops = _rewritten(_regressor(tmp_path / "r.onnx", aggregate, modes))
    assert "TreeEnsembleRegressor" not in ops and "MatMul" in ops
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("labels,post", [((0, 1, 2), "SOFTMAX"), ((7, 3, 5, 9), "NONE"), ((0, 1, 2), "LOGISTIC")])
def test_a_classifier_gives_onnx_runtimes_labels_and_scores(tmp_path, labels, post):
    want, got, _ = _rewritten(_classifier(tmp_path / "c.onnx", labels, post))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("post,weights", [("NONE", (0.0, 1 / 6)), ("NONE", (-1.0, 1.0)), ("LOGISTIC", (-1.0, 1.0))])
def test_a_binary_classifier_with_one_score_column_is_written_as_onnx_runtime_computes_it(tmp_path, post, weights):
    """skl2onnx writes a forest's and a boosting model's binary case with one column s:
    ONNX Runtime gives [1 - s, s] (a forest's probabilities, every weight >= 0, label 1
    past 0.5), [-s, s] (a weight below 0, label 1 past 0), [1 - sigmoid(s), sigmoid(s)]."""
    want, got, _ = _rewritten(_classifier(tmp_path / "b.onnx", (0, 1), post, outputs=1, weights=weights))
    assert 0 < want[0].sum() < len(want[0])  # both labels occur
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_a_nan_goes_where_the_split_says(tmp_path):
    """LightGBM's splits send a missing value (NaN) to the true child where
    ``nodes_missing_value_tracks_true`` is set, else a NaN compares false."""
    rng = np.random.default_rng(6)
    tracks = rng.integers(0, 2, 5 * 15).tolist()  # 5 trees of depth 3: 15 nodes each (leaves ignore it)
    path = _regressor(tmp_path / "nan.onnx", modes=("BRANCH_LEQ", "BRANCH_NEQ"), nodes_missing_value_tracks_true=tracks)
    proto = onnx.load(path)
    x = _inputs()
    x[rng.random(x.shape) < 0.3] = np.nan
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    model = ir.serde.deserialize_model(proto)
    assert MLOpsToCorePass()(model).modified
    got = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_a_users_data_with_missing_values_calibrates_and_validates(tmp_path, target):
    """LightGBM's users keep missing features as NaN: a tree ensemble takes them, so the
    build takes data holding them (and its bundle says the input does); ONNX Runtime's
    labels on a row with NaN are the bundle's."""
    tracks = np.random.default_rng(7).integers(0, 2, 6 * 15).tolist()
    rng = np.random.default_rng(8)
    node = helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="gbm",
                            classlabels_int64s=[0, 1, 2], post_transform="SOFTMAX",
                            nodes_missing_value_tracks_true=tracks,
                            **_tables(rng, 6, 3, 4, ["BRANCH_LEQ", "BRANCH_LT"], 3, "class"))
    path = _save(tmp_path / "gbm.onnx", node, 4, [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                                                   helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])])
    samples = []
    for seed in range(20, 32):
        x = _inputs(16, seed)
        x[np.random.default_rng(seed).random(x.shape) < 0.25] = np.nan
        samples.append({"x": x})
    runner = deploycomp.build(path, tmp_path / "int8", target=target, precision="int8", inputs=["x:16x4"],
                              calibration=samples[6:], validation_data=samples[:6])
    assert runner.manifest["validation"]["ok"]
    assert runner.manifest["io"]["inputs"][0]["accepts_nan"] is True
    want = ort.InferenceSession(path).run(None, samples[0])
    np.testing.assert_array_equal(runner.run(samples[0])["label"], want[0])


def test_a_nan_where_the_model_does_not_test_for_it_is_refused_by_name(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.ones((2, 4), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(DeployError, match="input 'x' sample 0 contains NaN"):
        deploycomp.build(path, tmp_path / "out", target="host", validation_data=[{"x": x}])
    assert not (tmp_path / "out").exists()


def test_what_the_tables_do_not_express_stays_and_is_refused_by_name(tmp_path):
    path = _regressor(tmp_path / "m.onnx", aggregate="MAX")
    with pytest.raises(DeployError, match="TreeEnsembleRegressor") as e:
        deploycomp.build(path, tmp_path / "out", target="android-arm64", inputs=["x:8x4"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_an_ensemble_too_large_for_its_tables_is_refused_saying_so(tmp_path, target, monkeypatch):
    """A LightGBM classifier of 9988 trees (a Ukrainian stress model through onnxmltools)
    would take 5e9 table values: the refusal names the node as the file does on every
    target (host had named it after its output) and says why it was left."""
    from deploycomp.passes import ml_trees

    monkeypatch.setattr(ml_trees, "MAX_TABLE_VALUES", 8)
    path = _classifier(tmp_path / "c.onnx", (0, 1, 2), "SOFTMAX")
    name = onnx.load(path).graph.node[0].name
    with pytest.raises(DeployError, match=r"TreeEnsembleClassifier.*left as it is: its \d+ trees, padded to .* "
                                          r"table values .*\(at most 8\)") as e:
        deploycomp.build(path, tmp_path / "out", target=target, inputs=["x:8x4"])
    assert "\n" not in str(e.value)
    if target != "jetson-orin-nano":  # (TensorRT names the domain it has none of)
        assert f"first: node '{name}'" in str(e.value)


@pytest.mark.parametrize("target", ["host", "jetson-orin-nano"])
def test_an_int8_build_walks_the_trees_exactly_and_searches_nothing(tmp_path, target):
    """A tree ensemble written out is an exact procedure (decisions times path tables,
    leaves reached times leaf values): a 100-tree IsolationForest's int8 build searched
    193 s over its 200 MatMuls to keep 125 float, quantized the rest's weights, and its
    scores came out 11% off and 2.7x slower than ONNX Runtime. Its layers now stay float
    by role: the scores are ONNX Runtime's, with no search."""
    path = _regressor(tmp_path / "r.onnx")
    samples = [{"x": _inputs(16, seed)} for seed in range(50, 62)]
    runner = deploycomp.build(path, tmp_path / "int8", target=target, precision="int8", inputs=["x:16x4"],
                              calibration=samples[6:], validation_data=samples[:6])
    quant = runner.manifest["quantization"]
    assert quant["exact_float_layers"] == 2 and quant["int8_layers"] == 0 and not quant.get("sensitivity")
    assert len(quant["search_trials"]) == 1 and quant["search_trials"][0]["met"]  # the one check, no search
    assert all(m["max_abs_error"] < 1e-5 for m in runner.manifest["validation"]["outputs"].values())


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_every_target_builds_a_forest_at_fp32_and_int8(tmp_path, target):
    path = _classifier(tmp_path / "c.onnx", (0, 1, 2), "SOFTMAX")
    builds_at_fp32_and_int8(tmp_path, path, target, "x:16x4", [{"x": _inputs(16, seed)} for seed in range(10, 22)])


def test_an_int8_bundle_splits_the_float_values_a_pipeline_computes(tmp_path):
    """A Scaler in front of the trees (scikit-learn's StandardScaler): TFLite's encoding
    quantizes element-wise ops, and scaled features rounded to int8 steps crossed the
    thresholds (a real pipeline's labels 87.5% equal; here the search had to keep the
    Scaler's Mul float to find out). What leads to a comparison is computed float: no
    layer needs to be kept float."""
    rng = np.random.default_rng(9)
    node = helper.make_node("TreeEnsembleClassifier", ["xs"], ["label", "scores"], domain="ai.onnx.ml", name="gbm",
                            classlabels_int64s=[0, 1, 2], **_tables(rng, 6, 3, 4, ["BRANCH_LEQ"], 3, "class"))
    scaler = helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[0.3], scale=[1.7])
    graph = helper.make_graph([scaler, node], "pipeline", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                         [None, 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])])
    path = str(tmp_path / "pipeline.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), ML], ir_version=8), path)
    hair = [np.random.default_rng(seed).choice([-1, 1], (16, 4)) * np.random.default_rng(seed).uniform(1e-3, 3e-3, (16, 4))
            for seed in range(30, 42)]  # each feature a hair from a threshold once scaled, under an int8 step
    near = [{"x": ((_inputs(16, seed) + h) / np.float32(1.7) + np.float32(0.3)).astype(np.float32)}
            for seed, h in zip(range(30, 42), hair)]
    runner = deploycomp.build(path, tmp_path / "int8", target="android-arm64", precision="int8", inputs=["x:16x4"],
                              calibration=near[6:], validation_data=near[:6])
    assert runner.manifest["validation"]["ok"] and runner.manifest["quantization"]["float_layers"] == []
    # the walk's products (path agreement, the leaves' sums) are an exact procedure: float,
    # no QDQ placed there (TFLite had run them float behind their QDQ anyway)
    quant = runner.manifest["quantization"]
    assert quant["exact_float_layers"] == 2 and "executed_float_behind_qdq" not in quant
    for sample in near[:6]:
        np.testing.assert_array_equal(runner.run(sample)["label"], ort.InferenceSession(path).run(None, sample)[0])


@pytest.mark.parametrize("scaled", [False, True])
def test_an_fp16_tensorrt_bundle_compares_in_fp32(tmp_path, scaled):
    """Inputs within fp16's rounding of the thresholds: typed fp16, the comparisons, the
    Gather that feeds them and (``scaled``) a pipeline's Scaler in front of the trees stay
    fp32, so every split goes ONNX Runtime's way."""
    from deploycomp.backends.tensorrt.fp16 import simulate_fp16, to_fp16

    rng = np.random.default_rng(5)
    attrs = _tables(rng, 4, 3, 4, ["BRANCH_LEQ"], 3, "class")
    attrs["nodes_values"] = [v + 0.1001 if m != "LEAF" else v for v, m in zip(attrs["nodes_values"],
                                                                                attrs["nodes_modes"])]
    node = helper.make_node("TreeEnsembleClassifier", ["xs" if scaled else "x"], ["label", "scores"],
                            domain="ai.onnx.ml", name="f16", classlabels_int64s=[0, 1, 2], **attrs)
    offset, scale = np.float32(0.3), np.float32(1.7)
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])]
    if scaled:
        scaler = helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[float(offset)],
                                  scale=[float(scale)])
        graph = helper.make_graph([scaler, node], "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                           [None, 4])], outputs)
        path = str(tmp_path / "t.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), ML], ir_version=8), path)
    else:
        path = _save(tmp_path / "t.onnx", node, 4, outputs)
    thresholds = np.asarray(sorted({v for v, m in zip(attrs["nodes_values"], attrs["nodes_modes"]) if m != "LEAF"}),
                            np.float32)
    x = (rng.choice(thresholds, (400, 4)) + rng.choice([-2e-5, 0.0, 2e-5], (400, 4))).astype(np.float32)
    if scaled:
        x = (x / scale + offset).astype(np.float32)  # scaled back onto the thresholds
    assert (x.astype(np.float16).astype(np.float32) != x).any()  # fp16 would move them across
    want = ort.InferenceSession(path).run(None, {"x": x})[0]
    model = ir.serde.deserialize_model(onnx.load(path))
    MLOpsToCorePass()(model)
    model = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(ir.to_proto(model)))  # typed, as built
    typed = simulate_fp16(to_fp16(model))
    got = ort.InferenceSession(ir.to_proto(typed).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


def _unified(path, dtype=np.float32, aggregate=1, post=0, missing=None) -> str:
    """ai.onnx.ml opset 5's TreeEnsemble (LightGBM 4's own exporter writes it): 3 complete
    trees of depth 3 over 4 features, interior nodes and leaves indexed apart, its splits
    and leaf weights typed as its input."""
    rng = np.random.default_rng(11)
    depth, trees = 3, 3
    interior, leaves = 2 ** depth - 1, 2 ** depth
    attrs: dict[str, list] = {k: [] for k in ("nodes_featureids", "nodes_truenodeids", "nodes_falsenodeids",
                                              "nodes_trueleafs", "nodes_falseleafs", "tree_roots", "leaf_targetids")}
    splits, modes, weights = [], [], []
    for t in range(trees):
        attrs["tree_roots"].append(t * interior)
        for n in range(interior):
            attrs["nodes_featureids"].append(int(rng.integers(4)))
            splits.append(float(rng.choice(LEVELS)))
            modes.append(int(rng.choice([0, 1, 2, 3, 4, 5])))
            for side, child in (("true", 2 * n + 1), ("false", 2 * n + 2)):
                leaf = child >= interior
                attrs[f"nodes_{side}leafs"].append(int(leaf))
                attrs[f"nodes_{side}nodeids"].append(t * leaves + child - interior if leaf else t * interior + child)
        for _ in range(leaves):
            attrs["leaf_targetids"].append(0)
            weights.append(float(rng.uniform(-1, 1)))
    kind = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    extra = {} if missing is None else {"nodes_missing_value_tracks_true": missing}
    node = helper.make_node("TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", name="lgbm", n_targets=1,
                            aggregate_function=aggregate, post_transform=post,
                            nodes_splits=helper.make_tensor("splits", kind, [len(splits)], splits),
                            nodes_modes=helper.make_tensor("modes", TensorProto.UINT8, [len(modes)], modes),
                            leaf_weights=helper.make_tensor("weights", kind, [len(weights)], weights), **attrs, **extra)
    graph = helper.make_graph([node], "unified", [helper.make_tensor_value_info("x", kind, [None, 4])],
                              [helper.make_tensor_value_info("y", kind, [None, 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
                                ir_version=10), path)
    return str(path)


@pytest.mark.parametrize("aggregate,post", [(1, 0), (0, 2)])
def test_the_unified_tree_ensemble_reaches_the_leaves_onnx_runtime_reaches(tmp_path, aggregate, post):
    """Every split mode, SUM and AVERAGE, NONE and LOGISTIC; a NaN where the split says."""
    path = _unified(tmp_path / "u.onnx", aggregate=aggregate, post=post,
                    missing=np.random.default_rng(12).integers(0, 2, 21).tolist())
    x = _inputs()
    x[np.random.default_rng(13).random(x.shape) < 0.2] = np.nan
    want = ort.InferenceSession(path).run(None, {"x": x})[0]
    model = ir.serde.deserialize_model(onnx.load(path))
    assert MLOpsToCorePass()(model).modified
    assert "TreeEnsemble" not in {n.op_type for n in model.graph}
    got = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_float64_unified_tree_ensemble_builds_on_tflite(tmp_path):
    """A float64 model (LightGBM exports float64 inputs) computed in float32 on TFLite: the
    ensemble's splits and weights narrowed with its input (its shapes were left
    uninferable and the trees refused)."""
    path = _unified(tmp_path / "d.onnx", dtype=np.float64)
    samples = [{"x": _inputs(16, seed).astype(np.float64)} for seed in range(40, 44)]
    runner = deploycomp.build(path, tmp_path / "out", target="android-arm64", inputs=["x:16x4"],
                              validation_data=samples)
    assert runner.manifest["validation"]["ok"]
    want = ort.InferenceSession(path).run(None, samples[0])[0]
    np.testing.assert_allclose(runner.run(samples[0])["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_fp16_keeps_the_thresholds_fp16_would_move(tmp_path, target):
    """A split at 1707.5 on an integer feature is 1708.0 in float16 (its step there is 1):
    an fp16 bundle that stored the thresholds float16 sent every input of 1708 down the
    other branch, while validation inputs away from the splits all met the budget (a
    LightGBM word-stress model: cosine 0.978 on one real word of 106). The comparisons stay
    fp32 and say so; the bundle is ONNX Runtime's on inputs at the splits."""
    rng = np.random.default_rng(5)
    splits = np.asarray([1707.5, 4017.5, 1e-35, -1e-35, 0.5], np.float32)
    tables = _tables(rng, 6, 3, 4, ["BRANCH_LEQ", "BRANCH_LT"], 3, "class")
    tables["nodes_values"] = [float(rng.choice(splits)) if mode != "LEAF" else 0.0
                              for mode in tables["nodes_modes"]]
    node = helper.make_node("TreeEnsembleClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="gbm",
                            classlabels_int64s=[0, 1, 2], post_transform="SOFTMAX", **tables)
    path = _save(tmp_path / "gbm.onnx", node, 4, [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                                                   helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])])
    away = [{"x": rng.choice([1.0, 1000.0, 3000.0, 5000.0, -1.0], (8, 4)).astype(np.float32)} for _ in range(6)]
    runner = deploycomp.build(path, tmp_path / "fp16", target=target, precision="fp16", inputs=["x:8x4"],
                              validation_data=away)
    assert runner.manifest["fp16"]["decision_tensors"]
    at = {"x": rng.choice([1708.0, 4018.0, 0.0, 1.0], (8, 4)).astype(np.float32)}
    want = ort.InferenceSession(path).run(None, at)
    np.testing.assert_array_equal(runner.run(at)["label"], want[0])
    np.testing.assert_allclose(runner.run(at)["scores"], want[1], atol=2e-3)  # leaf weights in fp16: 5e-4 apart
