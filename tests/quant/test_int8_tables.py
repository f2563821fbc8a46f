"""A large constant table that only ``Gather`` reads (a transformer's word embeddings) is
stored as int8 rows where the backend keeps them so (OpenVINO, TFLite): MiniLM's int8
bundles had kept its 47 MB embedding fp32, larger than its fp16 bundle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deploycomp

ROWS, WIDTH = 4096, 128  # 2 MiB of float32: over TABLE_BYTES


def _embedder(path, rows: int = ROWS, tied: bool = False):
    """ids [1, 16] -> embedding rows -> a dense layer -> [1, 16, 32]; ``tied``: the table
    is also read by a MatMul (an LM head sharing it)."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array((rng.standard_normal((rows, WIDTH)) * 0.05).astype(np.float32), "table")
    dense = numpy_helper.from_array((rng.standard_normal((WIDTH, 32)) * 0.1).astype(np.float32), "dense")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed"),
             helper.make_node("MatMul", ["rows", "dense"], ["y"], name="fc")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32])]
    if tied:
        nodes.append(helper.make_node("MatMul", ["y_in", "table"], ["logits"], name="head"))
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])]
    if tied:
        inputs.append(helper.make_tensor_value_info("y_in", TensorProto.FLOAT, [1, rows]))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, WIDTH]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [table, dense])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _calibration(path, rows: int = ROWS, tied: bool = False):
    rng = np.random.default_rng(1)
    arrays = {"ids": rng.integers(0, rows, (24, 1, 16), dtype=np.int64)}
    if tied:
        arrays["y_in"] = rng.standard_normal((24, 1, rows)).astype(np.float32)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_an_embedding_table_is_stored_as_int8_rows(tmp_path, target):
    model = _embedder(tmp_path / "m.onnx")
    runner = deploycomp.build(model, tmp_path / "b", target=target, precision="int8",
                              calibration=_calibration(tmp_path / "c.npz"))
    manifest = runner.manifest
    assert manifest["quantization"]["int8_tables"] == ["table"] and manifest["validation"]["ok"]
    size = sum(a["bytes"] for a in manifest["artifacts"])
    assert size < ROWS * WIDTH * 1.5  # (int8 rows and their scales, not 4 bytes an entry: 2 MiB)
    ids = np.arange(16, dtype=np.int64)[None] * 97
    want = onnx.numpy_helper.to_array(onnx.load(model).graph.initializer[0])[ids]
    rows = runner.run({"ids": ids})["y"]
    dense = onnx.numpy_helper.to_array(onnx.load(model).graph.initializer[1])
    np.testing.assert_allclose(rows, want @ dense, atol=0.02)


def test_tensorrt_and_small_or_shared_tables_stay_float(tmp_path):
    """TensorRT's policy does not take them (its parser takes the pattern; the engine
    builder, unseen without a GPU, might not keep it int8); a table under 1 MiB is not worth its error; a table a float MatMul reads too
    (tied weights, the head kept float) stays as it is, once: where the head runs int8 it
    reads int8 weights of its own, and the gather alone reads the table."""
    from deploycomp.quant.policy import POLICIES

    assert not POLICIES["tensorrt"].int8_tables
    small = deploycomp.build(_embedder(tmp_path / "s.onnx", rows=1024), tmp_path / "s", precision="int8",
                             calibration=_calibration(tmp_path / "s.npz", rows=1024))
    assert "int8_tables" not in small.manifest["quantization"]
    tied, calibration = _embedder(tmp_path / "t.onnx", tied=True), _calibration(tmp_path / "t.npz", tied=True)
    kept = deploycomp.build(tied, tmp_path / "t", precision="int8", calibration=calibration, keep_float=["head"])
    assert "int8_tables" not in kept.manifest["quantization"]
    both = deploycomp.build(tied, tmp_path / "t8", precision="int8", calibration=calibration)
    assert both.manifest["quantization"]["int8_tables"] == ["table"]


@pytest.mark.parametrize("target", ["host", "android-arm64"])
def test_a_table_the_model_quantized_itself_keeps_its_own_values(tmp_path, target):
    """ONNX Runtime's dynamic quantization stores an embedding as uint8 with one scale
    (``Gather`` of the uint8 table, then ``DequantizeLinear``), which the passes expand to
    float: stored as int8 rows again, each at a scale of its own, the model's levels had been
    rounded onto another grid (a T5 encoder fell from cosine 0.9990 to 0.8510 with every
    layer float). Such a table keeps its values: the rows come back exactly."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.integers(0, 256, (ROWS, WIDTH), dtype=np.uint8), "table_u8")
    scale = numpy_helper.from_array(np.asarray(1.265, np.float32), "scale")
    zero = numpy_helper.from_array(np.asarray(138, np.uint8), "zero")
    dense = numpy_helper.from_array((rng.standard_normal((WIDTH, 32)) * 0.1).astype(np.float32), "dense")
    nodes = [helper.make_node("Gather", ["table_u8", "ids"], ["rows_u8"], name="embed"),
             helper.make_node("DequantizeLinear", ["rows_u8", "scale", "zero"], ["rows"], name="dq"),
             helper.make_node("MatMul", ["rows", "dense"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32]),
                               helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, 16, WIDTH])],
                              [table, scale, zero, dense])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    runner = deploycomp.build(model, tmp_path / "b", target=target, precision="int8",
                              calibration=_calibration(tmp_path / "c.npz"))
    assert "int8_tables" not in runner.manifest["quantization"]
    ids = np.arange(16, dtype=np.int64)[None] * 97
    want = (onnx.numpy_helper.to_array(table)[ids].astype(np.float32) - np.float32(138)) * np.float32(1.265)
    np.testing.assert_array_equal(runner.run({"ids": ids})["rows"], want)


def test_a_grid_is_told_from_a_table_of_any_values():
    from deploycomp.quant.qdq import on_a_grid

    levels = np.random.default_rng(0).integers(0, 256, (512, 64)).astype(np.float32)
    assert on_a_grid((levels - np.float32(138)) * np.float32(1.265))
    # its lowest level held by one value the sample of every few skips (the T5 table's)
    rare = np.full(200_000, 100, np.float32)
    rare[::7] = np.arange(200_000)[::7] % 50 + 100
    rare[1] = 0
    assert on_a_grid((rare - np.float32(138)) * np.float32(1.265))
    assert not on_a_grid(levels * 0.5 + np.random.default_rng(1).standard_normal(levels.shape).astype(np.float32) * 1e-3)
    assert not on_a_grid(np.arange(300, dtype=np.float32) * 0.5)  # more levels than int8 has
    assert not on_a_grid(np.random.default_rng(2).standard_normal((512, 64)).astype(np.float32))
