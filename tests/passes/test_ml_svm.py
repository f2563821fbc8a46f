"""Support vector machines (scikit-learn's SVR, OneClassSVM, SVC through skl2onnx) become
a kernel and matrix products that give ONNX Runtime's outputs: the regressor's value, a
one-class model's sign, a classifier's one-against-one votes and decisions, and its
probabilities by libsvm's pairwise coupling."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import deploycomp
from tests.passes._harness import builds_at_fp32_and_int8, ml_rewritten

ML = helper.make_opsetid("ai.onnx.ml", 1)
FEATURES = 5
PARAMS = {"LINEAR": [0.0, 0.0, 0.0], "POLY": [0.3, 1.0, 3.0], "RBF": [0.4, 0.0, 0.0], "SIGMOID": [0.1, -0.2, 0.0]}


def _save(path, node, outputs) -> str:
    graph = helper.make_graph([node], "svm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, FEATURES])],
                              outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), ML], ir_version=8), path)
    return str(path)


def _vectors(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, FEATURES)).astype(np.float32)


def _regressor(path, kernel: str, one_class: int = 0) -> str:
    vectors = _vectors(7, 1)
    node = helper.make_node("SVMRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="svr", kernel_type=kernel,
                            kernel_params=PARAMS[kernel], support_vectors=vectors.ravel().tolist(), n_supports=7,
                            coefficients=np.random.default_rng(2).normal(size=7).tolist(), rho=[0.25],
                            one_class=one_class)
    return _save(path, node, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])


def _classifier(path, kernel: str, per_class: list[int], labels: list[int], **extra) -> str:
    count, classes = sum(per_class), len(per_class)
    pairs = classes * (classes - 1) // 2
    rng = np.random.default_rng(3)
    node = helper.make_node("SVMClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="svc",
                            kernel_type=kernel, kernel_params=PARAMS[kernel],
                            support_vectors=_vectors(count, 4).ravel().tolist(), vectors_per_class=per_class,
                            coefficients=rng.normal(size=(classes - 1) * count).tolist(),
                            rho=rng.normal(size=pairs).tolist(), classlabels_ints=labels, **extra)
    columns = 2 if classes == 2 else pairs
    return _save(path, node, [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, columns])])


def _inputs(rows: int = 300, seed: int = 5) -> np.ndarray:
    """Spread inputs, and inputs a hair from a support vector (where an expanded distance
    would cancel)."""
    x = np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)
    near = _vectors(7, 1)[np.arange(rows // 4) % 7] + np.float32(1e-3)
    return np.concatenate([x, near]).astype(np.float32)


def _rewritten(path) -> tuple[list, list, set[str]]:
    return ml_rewritten(path, _inputs())


@pytest.mark.parametrize("kernel", list(PARAMS))
def test_a_regressor_gives_onnx_runtimes_values_for_every_kernel(tmp_path, kernel):
    want, got, ops = _rewritten(_regressor(tmp_path / "r.onnx", kernel))
    assert "SVMRegressor" not in ops
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_a_one_class_model_gives_the_sign(tmp_path):
    want, got, _ = _rewritten(_regressor(tmp_path / "o.onnx", "RBF", one_class=1))
    assert set(np.unique(want[0])) == {-1.0, 1.0}
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("kernel", list(PARAMS))
def test_a_multiclass_classifier_votes_as_onnx_runtime(tmp_path, kernel):
    """Four classes of 3, 1, 2 and 4 support vectors, labels not 0..n-1."""
    want, got, ops = _rewritten(_classifier(tmp_path / "c.onnx", kernel, [3, 1, 2, 4], [7, 2, 9, 4]))
    assert "SVMClassifier" not in ops and len(set(want[0].tolist())) > 1
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_a_binary_classifier_gives_both_columns(tmp_path):
    """Two classes: ONNX Runtime writes the one decision d as [-d, d]; d > 0 votes for the first."""
    want, got, _ = _rewritten(_classifier(tmp_path / "b.onnx", "RBF", [4, 3], [0, 1]))
    assert 0 < want[0].sum() < len(want[0])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def _with_probabilities(path, per_class: list[int], labels: list[int]) -> str:
    """scikit-learn's ``SVC(probability=True)``: Platt coefficients per pair, and a score
    column per class (the probabilities)."""
    pairs = len(labels) * (len(labels) - 1) // 2
    rng = np.random.default_rng(len(labels))
    model = onnx.load(_classifier(path, "RBF", per_class, labels, prob_a=(rng.normal(size=pairs) * 2).tolist(),
                                  prob_b=(rng.normal(size=pairs) * 0.3).tolist()))
    model.graph.output[1].type.tensor_type.shape.dim[1].dim_value = len(labels)
    onnx.save(model, path)
    return str(path)


@pytest.mark.parametrize("per_class, labels", [([4, 3], [0, 1]), ([2, 2, 2], [0, 1, 2]), ([3, 1, 2, 4], [7, 2, 9, 4])],
                         ids=["2 classes", "3 classes", "4 classes"])
def test_probabilities_are_libsvm_pairwise_coupling_as_onnx_runtime_computes_it(tmp_path, per_class, labels):
    """Each pair's Platt probability, then libsvm's fixed-point iteration over the classes,
    each row stopping where ONNX Runtime stops it (they had stayed, refused by name)."""
    want, got, ops = _rewritten(_with_probabilities(tmp_path / "p.onnx", per_class, labels))
    assert "SVMClassifier" not in ops
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=2e-6)
    assert np.allclose(want[1].sum(axis=1), 1, atol=1e-5) and want[1].std(axis=0).max() > 0.01  # (probabilities that move)


@pytest.mark.parametrize("target", ["android-arm64", "jetson-orin-nano"])
def test_a_classifier_with_probabilities_builds(tmp_path, target):
    path = _with_probabilities(tmp_path / "p.onnx", [2, 2, 2], [0, 1, 2])
    runner = deploycomp.build(path, tmp_path / "b", target=target, inputs=["x:16x5"],
                              validation_data=[{"x": _inputs(16, seed)[:16]} for seed in range(10, 14)])
    assert runner.manifest["validation"]["outputs"]["scores"]["cosine"] > 0.99999


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_every_target_builds_a_classifier_at_fp32_and_int8(tmp_path, target):
    path = _classifier(tmp_path / "c.onnx", "RBF", [3, 1, 2, 4], [7, 2, 9, 4])
    builds_at_fp32_and_int8(tmp_path, path, target, "x:16x5", [{"x": _inputs(16, seed)[:16]} for seed in range(10, 22)])


def test_a_linear_kernel_over_unscaled_features_decides_as_in_float64(tmp_path):
    """Features near 1000 (data a user did not scale): each dot product with a support vector
    is ~5e6 and the decision a few units, so summing the dot products in float32 leaves
    noise larger than the decision. The support vectors fold into the weights in float64
    first; the decisions then match a float64 computation, closer than ONNX Runtime's own
    float32 kernel does."""
    per_class, count = [6, 5], 11
    rng = np.random.default_rng(7)
    vectors = (1000 + rng.normal(size=(count, FEATURES))).astype(np.float32)
    coefficients = rng.normal(size=count).astype(np.float32)
    node = helper.make_node("SVMClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="svc",
                            kernel_type="LINEAR", kernel_params=PARAMS["LINEAR"],
                            support_vectors=vectors.ravel().tolist(), vectors_per_class=per_class,
                            coefficients=coefficients.tolist(), rho=[0.5], classlabels_ints=[0, 1])
    path = _save(tmp_path / "l.onnx", node, [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                                             helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])])
    x = (1000 + rng.normal(size=(200, FEATURES))).astype(np.float32)
    exact = (x.astype(np.float64) @ vectors.astype(np.float64).T) @ coefficients.astype(np.float64) + 0.5
    want, got, _ = ml_rewritten(path, x)
    assert np.abs(got[1][:, 1] - exact).max() < 1e-2 * np.abs(exact).max()
    assert np.abs(got[1][:, 1] - exact).max() <= np.abs(want[1][:, 1] - exact).max()
    np.testing.assert_array_equal(got[0], np.where(exact > 0, 0, 1))


def test_the_coupling_stays_float_and_out_of_an_int8_search(tmp_path):
    """Quantized, the pairwise coupling is no solve, and ranking its 300 batched MatMuls
    for the search took an iris SVC's TensorRT build minutes: its nodes have a float-only
    role, and the int8 record counts the SVM's own layers (the kernel and the decisions)."""
    from deploycomp.ir import float_only
    from deploycomp.pipeline import prepare
    from deploycomp.shapes import parse_input_spec
    from deploycomp.targets import load_target

    path = _with_probabilities(tmp_path / "p.onnx", [2, 2, 2], [0, 1, 2])
    model = prepare(path, load_target("android-arm64"), [parse_input_spec("x:16x5")]).model
    assert sum(1 for n in model.graph if n.op_type == "MatMul" and float_only(n)) >= 100  # (Q p, each round)
    runner = deploycomp.build(path, tmp_path / "b", target="android-arm64", precision="int8", inputs=["x:16x5"],
                              calibration=[{"x": _inputs(16, seed)[:16]} for seed in range(10, 22)])
    q = runner.manifest["quantization"]
    assert q["int8_layers"] + len(q["float_layers"]) < 10 and runner.manifest["validation"]["ok"]
