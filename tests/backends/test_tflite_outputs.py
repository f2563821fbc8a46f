"""Graph outputs the TFLite lowering must hand out although no op of its own writes them.

After folding, identity removal and QDQ insertion an ONNX output can be a constant, a
graph input, the same tensor as another output, an output that is also read inside, or
an int8 tensor only a scale-preserving op (Reshape, Transpose, MaxPool) wrote. Each case
is built from ONNX text, run through the ``tflite`` pass pipeline (and, for int8, the
``tflite`` QDQ policy), lowered by the backend adapter at fp32, fp16 and int8, run in
LiteRT through the bundle runner and compared with ONNX Runtime: the original model for
fp32/fp16, the same QDQ model (its arithmetic as written) for int8.

This module also holds the harness (:func:`check`) the other ``test_tflite_*`` files use.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.passes._harness import model_from_text

pytest.importorskip("ai_edge_litert", reason="TFLite tests need the tflite extra (ai-edge-litert)")

from deploycomp.backends import get_backend  # noqa: E402
from deploycomp.backends.onnxruntime import ORTRunner  # noqa: E402
from deploycomp.passes import build_pipeline, run_passes  # noqa: E402
from deploycomp.targets import load_target  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")
G = '<ir_version: 8, opset_import: ["" : 18]>'
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


def w(*shape, scale=0.5, seed=None):
    rng = np.random.default_rng(seed if seed is not None else hash(shape) % 1000)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def feeds_like(model: onnx.ModelProto, shapes: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def check(tmp_path: Path, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], precision: str, *,
          passes: bool = True, int8_io: bool = False, io_layout: str = "nhwc", atol: float | None = None,
          feeds: dict | None = None) -> dict:
    """Lower ``model`` with the tflite backend at ``precision``, run it in LiteRT and compare
    every output with ONNX Runtime; returns the lowered info (op counts in ``["ops"]``)."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    graph = ir.from_proto(model)
    if passes:
        graph, _ = run_passes(graph, build_pipeline("tflite", shapes))
    feeds = feeds or feeds_like(model, shapes, 100)
    if precision == "int8":
        from deploycomp.quant import POLICIES, quantize

        policy = replace(POLICIES["tflite"], quantize_graph_outputs=int8_io)
        calibration = [feeds_like(model, shapes, seed) for seed in range(6)] + [feeds]
        graph = quantize(graph, policy, calibration, [], method="minmax").model
        reference = ORTRunner(ir.to_proto(graph).SerializeToString(), arithmetic="exact_qdq")
    else:
        reference = ORTRunner(model.SerializeToString())
    backend = get_backend("tflite")
    out = tmp_path / precision
    out.mkdir(exist_ok=True)
    lowered = backend.lower(graph, load_target("raspberry-pi-5"), precision, out,
                            {"io_layout": io_layout, "int8_io": int8_io})
    runner = backend.load(out, lowered.info)
    got = runner.run(feeds)
    want = reference.run(feeds)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        if precision == "int8":
            step = max(float(np.ptp(expected)), 1e-3 * float(np.abs(expected).max(initial=0)), 1e-6) / 255
            tol = atol if atol is not None else 4 * step
        else:
            tol = atol if atol is not None else TOLERANCE[precision] * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got[name].astype(np.float64), expected.astype(np.float64), atol=tol, rtol=0,
                                   err_msg=f"{name} ({precision})")
    return lowered.info | {"xnnpack_partitions": runner.info.get("xnnpack_partitions")}


CONV = "a = Conv <pads = [1, 1, 1, 1]> (x, k)\n r = Relu (a)\n c = Conv <pads = [1, 1, 1, 1]> (r, k2)"
WEIGHTS = dict(k=w(4, 3, 3, 3), k2=w(4, 4, 3, 3))
HEAD = "float[1, 3, 8, 8] x, float[4, 3, 3, 3] k, float[4, 4, 3, 3] k2"

CASES = {
    # the int8 ones that stopped two real models: a scale-preserving op writes the output
    "reshape of an int8 conv": ("float[1, 4, 64] y", "s = Constant <value_ints = [1, 4, 64]> ()\n y = Reshape (c, s)"),
    "transpose of an int8 conv": ("float[1, 8, 8, 4] y", "y = Transpose <perm = [0, 2, 3, 1]> (c)"),
    "flatten of an int8 conv": ("float[1, 256] y", "y = Flatten (c)"),
    "max pool of an int8 conv": ("float[1, 4, 4, 4] y", "y = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (c)"),
    "two outputs of one split": ("float[1, 2, 8, 8] y, float[1, 2, 8, 8] z", "y, z = Split <num_outputs = 2, axis = 1> (c)"),
    # outputs that are constants, inputs, or each other
    "a constant": ("float[1, 4, 8, 8] y, float[2, 3] cst", "y = Identity (c)\n cst = Constant <value = float[2, 3] {1, 2, 3, 4, 5, 6}> ()"),
    "a large float constant (fp16 stores it as float16)": (
        "float[1, 4, 8, 8] y, float[32] cst", "y = Identity (c)\n one = Constant <value_float = 1.5> ()\n"
        " shp = Constant <value_ints = [32]> ()\n cst = Expand (one, shp)"),
    "a shape": ("float[1, 4, 8, 8] y, int64[4] s", "y = Identity (c)\n s = Shape (c)"),
    "an input through an Identity": ("float[1, 4, 8, 8] y, float[1, 3, 8, 8] z", "y = Identity (c)\n z = Identity (x)"),
    "the same tensor twice": ("float[1, 4, 8, 8] y, float[1, 4, 8, 8] z", "y = Identity (c)\n z = Identity (c)"),
    "read inside too": ("float[1, 4, 8, 8] y, float[1, 4, 8, 8] z", "y = Relu (c)\n z = Conv <pads = [1, 1, 1, 1]> (y, k3)"),
    "a relu's input and output": ("float[1, 4, 8, 8] c, float[1, 4, 8, 8] y", "y = Relu (c)"),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CASES)
def test_graph_outputs_no_op_writes(tmp_path, case, precision):
    outputs, body = CASES[case]
    text = f"{G} g ({HEAD}, float[4, 4, 3, 3] k3) => ({outputs}) {{ {CONV}\n {body} }}"
    model = model_from_text(text, **WEIGHTS, k3=w(4, 4, 3, 3))
    info = check(tmp_path, model, {"x": (1, 3, 8, 8)}, precision)
    if precision == "int8":
        assert info["ops"].get("CONV_2D", 0) >= 1 and info["int8_ops"] >= 1


@pytest.mark.parametrize("case", ["reshape of an int8 conv", "max pool of an int8 conv", "the same tensor twice",
                                  "a shape"])
def test_graph_outputs_with_int8_io(tmp_path, case):
    """Full-integer I/O (``--int8-io``): the output is the int8 tensor, named as in ONNX."""
    outputs, body = CASES[case]
    text = f"{G} g ({HEAD}) => ({outputs}) {{ {CONV}\n {body} }}"
    check(tmp_path, model_from_text(text, **WEIGHTS), {"x": (1, 3, 8, 8)}, "int8", int8_io=True)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_graph_input_that_is_also_an_output_keeps_its_name(tmp_path, precision):
    text = f"{G} g ({HEAD}) => (float[1, 4, 8, 8] y) {{ {CONV}\n y = Identity (c) }}"
    model = model_from_text(text, **WEIGHTS)
    model.graph.output.append(onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8]))
    check(tmp_path, model, {"x": (1, 3, 8, 8)}, precision, io_layout="nchw" if precision == "fp16" else "nhwc")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_output_that_is_a_dequantized_constant(tmp_path, precision):
    """An output that is a DequantizeLinear of a constant (folded by the int8 lowering):
    the lowering emits the dequantized values, in float32."""
    text = f"""{G} g ({HEAD}, int8[6] q, float[] qs, int8[] qz) => (float[1, 4, 8, 8] y, float[6] d)
    {{ {CONV}
       y = Identity (c)
       d = DequantizeLinear (q, qs, qz) }}"""
    model = model_from_text(text, **WEIGHTS, q=np.array([-128, -3, 0, 5, 90, 127], np.int8),
                            qs=np.float32(0.05), qz=np.int8(3))
    check(tmp_path, model, {"x": (1, 3, 8, 8)}, precision, passes=False)


def test_nodes_out_of_order_are_lowered_in_dependency_order(tmp_path):
    """A rewrite can leave a node after its readers (ONNX Runtime sorts for itself); TFLite
    runs operators in the order they are written, so the lowering sorts them."""
    text = f"{G} g ({HEAD}) => (float[1, 4, 8, 8] y) {{ {CONV}\n y = Relu (c) }}"
    model = onnx.shape_inference.infer_shapes(model_from_text(text, **WEIGHTS))
    graph = ir.from_proto(model)
    first = graph.graph.node(0)
    graph.graph.remove(first)
    graph.graph.append(first)  # the first conv now comes after everything that reads it
    backend = get_backend("tflite")
    lowered = backend.lower(graph, load_target("raspberry-pi-5"), "fp32", tmp_path, {})
    feeds = feeds_like(model, {"x": (1, 3, 8, 8)}, 1)
    want = ORTRunner(model.SerializeToString()).run(feeds)["y"]
    np.testing.assert_allclose(backend.load(tmp_path, lowered.info).run(feeds)["y"], want, atol=1e-4)
