"""A model's local functions (a torch exporter's modules exported as functions) are inlined
first: no backend runs a call to one (OpenVINO and TFLite refused it by name), and every
later pass sees their nodes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T, helper, numpy_helper

import deploycomp
from tests.passes._harness import optimize_and_compare


def _model() -> onnx.ModelProto:
    """``y = Block(Block(conv(x)))``, ``Block`` calling ``Act`` with an attribute of its own."""
    leaky = helper.make_node("LeakyRelu", ["x"], ["y"])
    leaky.attribute.append(helper.make_attribute_ref("alpha", onnx.AttributeProto.FLOAT))
    act = helper.make_function("pkg", "Act", ["x"], ["y"], [leaky], [helper.make_opsetid("", 18)],
                               attributes=["alpha"])
    block = helper.make_function("pkg", "Block", ["x", "a", "b"], ["y"],
                                 [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
                                  helper.make_node("Act", ["s"], ["y"], domain="pkg", alpha=0.2)],
                                 [helper.make_opsetid("", 18), helper.make_opsetid("pkg", 1)])
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("Block", ["c", "a", "b"], ["r"], domain="pkg"),
         helper.make_node("Block", ["r", "a", "b"], ["y"], domain="pkg")],
        "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.float32(1.5), "a"), numpy_helper.from_array(np.float32(-0.1), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("pkg", 1)],
                              functions=[act, block])
    onnx.checker.check_model(model)
    return model


def test_nested_local_functions_are_inlined_with_their_attributes(tmp_path):
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, _model(), feeds)
    assert "Block" not in ops and "Act" not in ops and ops["LeakyRelu"] == 2
    assert not onnx.load(tmp_path / "after.onnx").functions


def test_a_model_with_local_functions_builds_for_every_backend(tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "val.npz", x=np.random.default_rng(2).random((4, 1, 3, 8, 8), dtype=np.float32))
    for target in ("host", "android-arm64", "jetson-orin-nano"):
        runner = deploycomp.build(tmp_path / "m.onnx", tmp_path / target, target=target,
                                  validation_data=tmp_path / "val.npz")
        assert runner.manifest["validation"]["ok"], target


def test_inspect_counts_the_work_inside_local_functions(tmp_path):
    """A transformer exported with its blocks as functions: inspect had counted their nodes
    as nothing (0.011 G FLOPs against 0.043 G for the same network without functions)."""
    import json

    from tests.test_cli import cli

    onnx.save(_model(), tmp_path / "m.onnx")
    code, stdout, stderr = cli("inspect", tmp_path / "m.onnx", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["op_histogram"].get("LeakyRelu") == 2 and "Block" not in data["op_histogram"]
    assert not data["uncounted_nodes"]
    assert data["flops"] == 2 * 4 * 6 * 6 * 3 * 3 * 3  # (element-wise ops count no FLOPs; the Conv's)
