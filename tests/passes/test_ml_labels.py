"""A classifier fitted on string targets: its label output arrives in the bundle as the
label's position, and ``deploycomp.load(...).run`` gives the strings back, on every target."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

import deploycomp
from deploycomp.errors import DeployError
from deploycomp.ir import load_model
from deploycomp.passes import build_pipeline, run_passes
from deploycomp.passes.ml_labels import class_labels

ML = helper.make_opsetid("ai.onnx.ml", 1)
NAMES = ["cat", "dog", "emu"]


def _logreg(path, then_encode: bool = False) -> str:
    """LinearClassifier (3 string classes, 4 features) -> Normalizer, as skl2onnx writes a
    LogisticRegression fitted on strings with ``zipmap=False``; ``then_encode``: the label
    read by a LabelEncoder (strings -> ints) inside the graph."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml", name="logreg",
                              classlabels_strings=NAMES, coefficients=rng.standard_normal(12).tolist(),
                              intercepts=[0.2, -0.1, 0.4], multi_class=0, post_transform="LOGISTIC"),
             helper.make_node("Normalizer", ["scores"], ["probabilities"], domain="ai.onnx.ml", name="norm", norm="L1")]
    outputs = [helper.make_tensor_value_info("label", TensorProto.STRING, [8]),
               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [8, 3])]
    if then_encode:
        nodes.append(helper.make_node("LabelEncoder", ["label"], ["code"], domain="ai.onnx.ml", name="encode",
                                      keys_strings=NAMES, values_int64s=[5, 6, 7]))
        outputs[0] = helper.make_tensor_value_info("code", TensorProto.INT64, [8])
    graph = helper.make_graph(nodes, "logreg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[ML, helper.make_opsetid("", 17)], ir_version=8), path)
    return str(path)


def _samples(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((8, 4)) * 2).astype(np.float32)} for _ in range(count)]


def test_string_labels_become_their_positions_and_the_strings_stay_beside_the_model(tmp_path):
    model, _ = run_passes(load_model(_logreg(tmp_path / "m.onnx")).model, build_pipeline("default", {"x": (8, 4)}))
    assert not [n for n in model.graph if n.domain == "ai.onnx.ml"]
    label = next(v for v in model.graph.outputs if v.name == "label")
    assert label.dtype.name == "INT64"
    assert class_labels(model) == {"label": NAMES}


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_every_target_gives_the_string_labels_back(tmp_path, target):
    path = _logreg(tmp_path / "m.onnx")
    samples = _samples(12, 1)
    runner = deploycomp.build(path, tmp_path / "out", target=target, validation_data=samples[:6])
    assert runner.manifest["validation"]["ok"]
    spec = next(o for o in runner.manifest["io"]["outputs"] if o["name"] == "label")
    assert spec["labels"] == NAMES and spec["dtype"] == "str"
    session = ort.InferenceSession(path)
    for sample in samples[6:]:
        want = session.run(None, sample)
        got = deploycomp.load(tmp_path / "out").run(sample)
        assert len(set(want[0].tolist())) > 1
        assert got["label"].tolist() == want[0].tolist() and got["label"].dtype == want[0].dtype == object
        np.testing.assert_allclose(got["probabilities"], want[1], rtol=1e-4, atol=1e-5)


def test_deploycomp_run_writes_the_strings(tmp_path):
    from deploycomp.cli import main

    path = _logreg(tmp_path / "m.onnx")
    deploycomp.build(path, tmp_path / "out", target="host")
    sample = _samples(1, 3)[0]
    np.savez(tmp_path / "in.npz", **sample)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "out"), "--inputs", str(tmp_path / "in.npz"),
                                       "--outputs", str(tmp_path / "got.npz")])
    assert result.exit_code == 0, result.output
    assert "label: <U3 [8]  values" in result.output
    want = ort.InferenceSession(path).run(None, sample)[0]
    assert np.load(tmp_path / "got.npz")["label"].tolist() == want.tolist()


def test_a_string_label_read_inside_the_graph_stays_and_is_refused_by_name(tmp_path):
    path = _logreg(tmp_path / "m.onnx", then_encode=True)
    with pytest.raises(DeployError, match="LinearClassifier") as e:
        deploycomp.build(path, tmp_path / "out", target="android-arm64")
    assert "\n" not in str(e.value)


def test_a_forest_fitted_on_strings_gives_them_back(tmp_path):
    """The same for a tree ensemble (``classlabels_int64s`` takes the strings' place)."""
    tree = helper.make_node(
        "TreeEnsembleClassifier", ["x"], ["label", "probabilities"], domain="ai.onnx.ml", name="forest",
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0], nodes_values=[0.0, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        class_treeids=[0] * 6, class_nodeids=[1, 1, 1, 2, 2, 2], class_ids=[0, 1, 2, 0, 1, 2],
        class_weights=[0.7, 0.2, 0.1, 0.1, 0.3, 0.6], classlabels_strings=NAMES)
    graph = helper.make_graph([tree], "forest", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])],
                              [helper.make_tensor_value_info("label", TensorProto.STRING, [8]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [8, 3])])
    path = tmp_path / "forest.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3),
                                                      helper.make_opsetid("", 17)], ir_version=8), path)
    runner = deploycomp.build(path, tmp_path / "out", target="android-arm64", validation_data=_samples(4, 5))
    assert runner.manifest["validation"]["ok"]
    sample = _samples(1, 6)[0]
    want = ort.InferenceSession(str(path)).run(None, sample)[0]
    assert set(want.tolist()) == {"cat", "emu"}
    assert runner.run(sample)["label"].tolist() == want.tolist()
