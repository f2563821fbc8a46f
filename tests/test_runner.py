"""``deploycomp.load(DIR).run``: a bundle takes inputs in the original model's names,
dtypes and shapes, and refuses what the original model would refuse."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import deploycomp
from deploycomp.errors import InputDataError


@pytest.mark.parametrize("target", ["host", "android-arm64", "jetson-orin-nano"])
def test_ids_past_a_tables_rows_are_refused_by_every_bundle(tmp_path, target):
    """ONNX Runtime refuses a token id past an embedding's vocabulary; OpenVINO's and
    TFLite's bundles of a Khmer segmenter computed outputs for it (exit 0). The manifest
    records the table's rows for the ids (``index_range``), and the runner checks them."""
    from onnx import TensorProto as T, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).random((10, 4), dtype=np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["e"], name="embedding"),
                               helper.make_node("Relu", ["e"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", T.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3, 4])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    runner = deploycomp.build(tmp_path / "e.onnx", tmp_path / "b", target=target,
                              validation_data=[{"ids": np.array([[1, 2, 9]], np.int64)}])
    assert runner.manifest["io"]["inputs"][0]["index_range"] == [-10, 10]
    assert runner.run({"ids": np.array([[0, -10, 9]], np.int64)})["y"].shape == (1, 3, 4)
    with pytest.raises(InputDataError, match=r"input 'ids': values 1\.\.12 given; they index a table of 10 rows "
                                             r"\(node 'embedding'\): -10\.\.9"):
        deploycomp.load(tmp_path / "b").run({"ids": np.array([[1, 12, 3]], np.int64)})


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_ids_past_a_tables_rows_after_an_exporters_wrap_are_refused(tmp_path, target):
    """tf2onnx computes a Keras embedding's index as ``ids + rows * (ids < 0)`` before
    the ``Gather``: a Russian morpheme segmenter's OpenVINO and TFLite bundles took ids
    past its vocabulary (exit 0). The ids the wrap maps into the table are recorded and
    checked; the negative ids it wraps still run."""
    from onnx import TensorProto as T, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).random((10, 4), dtype=np.float32), "table")
    rows, zero = numpy_helper.from_array(np.array(10, np.int64), "rows"), numpy_helper.from_array(np.array(0, np.int64), "zero")
    nodes = [helper.make_node("Less", ["ids", "zero"], ["neg"]), helper.make_node("Cast", ["neg"], ["neg_i"], to=T.INT64),
             helper.make_node("Mul", ["neg_i", "rows"], ["shift"]), helper.make_node("Add", ["ids", "shift"], ["index"]),
             helper.make_node("Gather", ["table", "index"], ["e"], name="embedding"),
             helper.make_node("Relu", ["e"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", T.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3, 4])], [table, rows, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    runner = deploycomp.build(tmp_path / "e.onnx", tmp_path / "b", target=target,
                              validation_data=[{"ids": np.array([[1, 2, 9]], np.int64)}])
    spec = runner.manifest["io"]["inputs"][0]
    assert (spec["index_range"], spec["index_rows"]) == ([-20, 10], 10)
    wrapped = runner.run({"ids": np.array([[-1, 0, 3]], np.int64)})["y"]
    np.testing.assert_allclose(wrapped[0, 0], np.maximum(numpy_helper.to_array(table)[9], 0), rtol=1e-6)
    with pytest.raises(InputDataError, match=r"input 'ids': values 1\.\.12 given; they index a table of 10 rows "
                                             r"\(node 'embedding'\): -20\.\.9"):
        deploycomp.load(tmp_path / "b").run({"ids": np.array([[1, 12, 3]], np.int64)})
