"""Dynamic-range (hybrid) layers on TFLite: what the int8 search gives a layer the static
encoding cannot hold, instead of float (:mod:`deploycomp.quant.dynamic`).

Specification: a compute layer marked dynamic lowers to a TFLite op with float input and
output and int8 per-channel weights, and LiteRT computes exactly the float layer on
dequantized weights with the input quantized, asymmetric int8, to each sample's own
range (per row for FULLY_CONNECTED); its neighbours' QDQ never turns it into a static
int8 op.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from tests.passes._harness import model_from_text

pytest.importorskip("ai_edge_litert", reason="TFLite tests need the tflite extra (ai-edge-litert)")

from deploycomp.backends import get_backend  # noqa: E402
from deploycomp.backends.onnxruntime import ORTRunner  # noqa: E402
from deploycomp.quant.dynamic import dynamic_copy, hybrid_capable, is_dynamic, weights_only_layers  # noqa: E402
from deploycomp.quant.policy import POLICIES  # noqa: E402
from deploycomp.quant.qdq import quantize_weight  # noqa: E402
from deploycomp.quant.sensitivity import quantized_copy  # noqa: E402
from deploycomp.targets import load_target  # noqa: E402

G = '<ir_version: 8, opset_import: ["" : 18]>'
TFLITE = POLICIES["tflite"]


def _w(*shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(np.float32)


def _asymmetric(x: np.ndarray, axis=None) -> np.ndarray:
    """int8 asymmetric fake quantization to the range of ``x`` (over ``axis``), zero included."""
    lo = np.minimum(x.min(axis=axis, keepdims=True), 0)
    hi = np.maximum(x.max(axis=axis, keepdims=True), 0)
    scale = np.maximum(hi - lo, 1e-12) / 255
    zero = np.round(-128 - lo / scale)
    return (np.clip(np.round(x / scale) + zero, -128, 127) - zero) * scale


def _dequantized(weight: np.ndarray, axis: int) -> np.ndarray:
    q, scale = quantize_weight(weight, axis)
    return q * scale


def _lower_and_run(tmp_path, model: ir.Model, feeds: dict) -> tuple[dict, dict]:
    backend = get_backend("tflite")
    lowered = backend.lower(model, load_target("raspberry-pi-5"), "int8", tmp_path, {"io_layout": "nchw"})
    return lowered.info, backend.load(tmp_path, lowered.info).run(feeds)


def _model(text: str, **weights) -> ir.Model:
    proto = onnx.shape_inference.infer_shapes(model_from_text(text, **weights), strict_mode=True)
    model = ir.from_proto(proto)
    for i, node in enumerate(model.graph):  # the build's passes name every node; the search goes by name
        node.name = node.name or f"{node.op_type.lower()}{i}"
    return model


CONVS = {
    "dense 3x3": ("pads = [1, 1, 1, 1]", (6, 4, 3, 3), 1),
    "depthwise": ("group = 4, pads = [1, 1, 1, 1]", (4, 1, 3, 3), 4),
    "depthwise, multiplier 2": ("group = 4, pads = [1, 1, 1, 1]", (8, 1, 3, 3), 4),
    "pointwise": ("", (6, 4, 1, 1), 1),
}


@pytest.mark.parametrize("case", CONVS)
def test_a_dynamic_conv_quantizes_its_input_per_sample(tmp_path, case):
    attrs, wshape, group = CONVS[case]
    text = f"""{G} g (float[1, 4, 12, 12] x, float{list(wshape)} k, float[{wshape[0]}] b) => (float[1, {wshape[0]}, 12, 12] y)
    {{ y = Conv <{attrs}> (x, k, b) }}""".replace("<>", "")
    k, b = _w(*wshape), _w(wshape[0], seed=1)
    model = _model(text, k=k, b=b)
    conv = next(iter(model.graph))
    assert hybrid_capable(conv, TFLITE.dynamic_ops)
    q = quantized_copy(model, TFLITE, {}, {conv.name}, weights_only={conv.name})
    assert is_dynamic(next(n for n in q.graph if n.op_type == "Conv"))
    x = np.random.default_rng(2).standard_normal((1, 4, 12, 12)).astype(np.float32) * 3 + 1
    info, got = _lower_and_run(tmp_path, q, {"x": x})
    assert info["int8_ops"] == 0 and info["dynamic_range_ops"] == 1 and "CONV_2D" not in info["float_ops"]
    assert "executed_precision" in info and "dynamic-range" in info["executed_precision"]
    float_conv = ORTRunner(ir.to_proto(_model(text, k=_dequantized(k, 0), b=b)).SerializeToString())
    # the input to the whole sample's range, or (XNNPACK runs a 1x1 conv as a dynamically
    # quantized matrix product) to each pixel's
    error = min(np.abs(got["y"] - float_conv.run({"x": _asymmetric(x, axis)})["y"]).max() for axis in (None, 1))
    assert error < 2e-5 * np.abs(got["y"]).max()
    exact = ORTRunner(ir.to_proto(_model(text, k=k, b=b)).SerializeToString()).run({"x": x})["y"]
    assert np.abs(got["y"] - exact).max() > 1e-4 * np.abs(exact).max()  # it is quantized, not float
    # what the search ranks layers by computes the same in ONNX Runtime
    simulated = ORTRunner(ir.to_proto(dynamic_copy(model, TFLITE, conv.name)).SerializeToString(),
                          arithmetic="exact_qdq").run({"x": x})["y"]
    np.testing.assert_allclose(simulated, got["y"], rtol=0, atol=2e-5 * np.abs(got["y"]).max())


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_a_dynamic_fully_connected_layer_quantizes_each_row(tmp_path, op):
    if op == "MatMul":
        text = f"""{G} g (float[1, 5, 16] x, float[16, 8] k) => (float[1, 5, 8] y) {{ y = MatMul (x, k) }}"""
        k, axis = _w(16, 8), 1
    else:
        text = f"""{G} g (float[5, 16] x, float[8, 16] k, float[8] b) => (float[5, 8] y)
        {{ y = Gemm <transB = 1> (x, k, b) }}"""
        k, axis = _w(8, 16), 0
    weights = {"k": k} | ({"b": _w(8, seed=3)} if op == "Gemm" else {})
    model = _model(text, **weights)
    node = next(iter(model.graph))
    q = quantized_copy(model, TFLITE, {}, {node.name}, weights_only={node.name})
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((5, 16)) * np.logspace(-2, 1, 5)[:, None]).astype(np.float32)  # rows of unlike scale
    x = x[None] if op == "MatMul" else x
    info, got = _lower_and_run(tmp_path, q, {"x": x})
    assert info["dynamic_range_ops"] == 1 and info["float_ops"] == {} and info["int8_ops"] == 0
    dequantized = weights | {"k": _dequantized(k, axis)}
    want = ORTRunner(ir.to_proto(_model(text, **dequantized)).SerializeToString()).run({"x": _asymmetric(x, -1)})["y"]
    np.testing.assert_allclose(got["y"], want, rtol=0, atol=2e-5 * np.abs(want).max())
    simulated = ORTRunner(ir.to_proto(dynamic_copy(model, TFLITE, node.name)).SerializeToString(),
                          arithmetic="exact_qdq").run({"x": x})["y"]
    np.testing.assert_allclose(simulated, got["y"], rtol=0, atol=2e-5 * np.abs(got["y"]).max())


def test_a_dynamic_layer_between_int8_layers_stays_dynamic(tmp_path):
    """Its input and output are quantized for its int8 neighbours; it still runs hybrid."""
    text = f"""{G} g (float[1, 4, 8, 8] x, float[4, 4, 1, 1] k1, float[4, 4, 3, 3] k2, float[4, 4, 1, 1] k3)
    => (float[1, 4, 8, 8] y)
    {{ a = Conv (x, k1)
       b = Conv <pads = [1, 1, 1, 1]> (a, k2)
       c = Conv (b, k3)
       y = Sigmoid (c) }}"""
    model = _model(text, k1=_w(4, 4, 1, 1), k2=_w(4, 4, 3, 3, seed=1), k3=_w(4, 4, 1, 1, seed=2))
    middle = list(model.graph)[1].name
    x = np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32)
    ranges = {name: (-4.0, 4.0) for name in ("x", "a", "b", "c")}
    q = quantized_copy(model, TFLITE, ranges, {middle}, weights_only={middle})
    info, got = _lower_and_run(tmp_path, q, {"x": x})
    assert info["int8_ops"] >= 2 and info["dynamic_range_ops"] == 1
    assert "CONV_2D" not in info["float_ops"]  # two static int8, one dynamic-range: none float


def test_which_layers_have_a_hybrid_kernel():
    text = f"""{G} g (float[1, 4, 8, 8] x, float[4, 2, 3, 3] kg, float[4, 4, 3, 3] k, float[1, 16] v,
                       float[16, 4] m, float[2, 16, 4] m3, float[4, 16] gw, float[4, 1, 3, 3] kd,
                       float[8, 1, 3, 3] km, float[1, 4, 8] s, float[4, 4, 3] k1) => (float[1, 4, 6, 6] a,
                       float[1, 4, 6, 6] c, float[1, 4] d, float[2, 1, 4] e, float[1, 4] f, float[1, 4] h,
                       float[1, 4, 6, 6] dw, float[1, 8, 6, 6] dm, float[1, 4, 6] one)
    {{ a = Conv <group = 2> (x, kg)
       c = Conv (x, k)
       d = MatMul (v, m)
       e = MatMul (v, m3)
       f = Gemm <transB = 1, alpha = 0.5> (v, gw)
       h = Gemm <transB = 1> (v, gw)
       dw = Conv <group = 4> (x, kd)
       dm = Conv <group = 4> (x, km)
       one = Conv (s, k1) }}"""
    model = _model(text, kg=_w(4, 2, 3, 3), k=_w(4, 4, 3, 3), m=_w(16, 4), m3=_w(2, 16, 4), gw=_w(4, 16),
                   kd=_w(4, 1, 3, 3), km=_w(8, 1, 3, 3), k1=_w(4, 4, 3))
    capable = {n.outputs[0].name: hybrid_capable(n, TFLITE.dynamic_ops) for n in model.graph}
    # grouped (not depthwise) conv, a batched weight and a Gemm alpha have no hybrid kernel;
    # depthwise convs (with a channel multiplier too) and 1-D convs do
    assert capable == {"a": False, "c": True, "d": True, "e": False, "f": False, "h": True,
                       "dw": True, "dm": True, "one": True}
    assert not any(hybrid_capable(n, POLICIES["openvino"].dynamic_ops) for n in model.graph)


def test_the_longest_prefix_that_holds_is_made_dynamic():
    layers = [f"l{i}" for i in range(40)]
    asked = []

    def holds(first: int):
        return lambda dynamic: asked.append(len(dynamic)) or len(dynamic) <= first

    assert weights_only_layers(layers, holds(40)) == ([layers], 1)  # all of them, one check
    asked.clear()
    choices, checks = weights_only_layers(layers, holds(23))
    assert choices[0] == layers[:23] and checks == len(asked) <= 14
    # the smaller sets that held too, largest first: what a validation miss falls back to
    sizes = [len(c) for c in choices]
    assert sizes == sorted(sizes, reverse=True) and all(0 < k <= 23 for k in sizes) and len(sizes) >= 2
    assert weights_only_layers(layers, holds(0))[0] == []
    assert weights_only_layers([], holds(5)) == ([], 0)


def test_a_layer_that_breaks_the_budget_is_passed_over():
    """One layer no single range per sample holds (its place in the order is a guess)
    does not keep every layer after it float."""
    layers = [f"l{i}" for i in range(40)]
    bad = {"l9", "l30"}
    choices, checks = weights_only_layers(layers, lambda dynamic: not dynamic & bad)
    assert choices[0] == [n for n in layers if n not in bad] and checks <= 14
    assert all(not set(c) & bad for c in choices)


def test_no_round_starts_that_cannot_reach_a_set_worth_having():
    """After a layer breaks the budget, the next round runs only while the layers left
    could still make a set worth its dynamic kernels (here: at least 11 of 12 layers)."""
    layers = [f"l{i}" for i in range(12)]
    asked: list[set[str]] = []

    def meets(dynamic):
        asked.append(set(dynamic))
        return not {"l3", "l5"} & dynamic

    everything_but_breakers = set(layers) - {"l3", "l5"}
    choices, checks = weights_only_layers(layers, meets)
    assert choices[0] == sorted(everything_but_breakers, key=layers.index)  # no limit: found
    asked.clear()
    choices, checks = weights_only_layers(layers, meets, worth=lambda names: len(names) >= 11)
    # round 1 passes over l3 (11 layers could be left: worth a round), round 2 over l5;
    # 10 at most are left then, so the third round is never started
    assert set(layers) - {"l3"} in asked and everything_but_breakers not in asked
    assert checks == len(asked) and all(len(c) < 11 for c in choices)
