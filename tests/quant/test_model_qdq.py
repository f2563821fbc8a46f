"""A model that arrives int8 (onnxruntime.quantization's QDQ): kept as its own int8, its
encodings re-written where a backend needs another, exactly where that is possible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import deploycomp
from deploycomp.quant.exact import exact_qdq_options
from deploycomp.quant.model_qdq import ConformQDQPass, model_quantization
from deploycomp.quant.policy import POLICIES


@pytest.fixture
def ort_quantized(tiny_conv, tmp_path):
    """tiny_conv through onnxruntime.quantization.quantize_static (QDQ, u8 activations,
    s8 per-channel weights, int32 bias), at batch 1: what users download as "-int8"."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    proto = onnx.load(tiny_conv)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    float_path = tmp_path / "float.onnx"
    onnx.save(proto, float_path)
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    path = tmp_path / "int8.onnx"
    quantize_static(float_path, path, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return path


def _exact(model: ir.Model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), exact_qdq_options(None))
    return session.run(None, {"x": x})[0]


def _zero_points(model: ir.Model) -> Counter:
    return Counter(str(n.inputs[2].const_value.numpy().dtype) for n in model.graph
                   if n.op_type == "QuantizeLinear" and len(n.inputs) > 2)


def test_the_model_s_own_int8_is_found(ort_quantized):
    own = model_quantization(ir.load(ort_quantized), POLICIES["tflite"].compute_ops)
    assert own["activation_encodings"] >= 2 and own["activation_dtypes"] == {"uint8": own["activation_encodings"]}
    assert own["dequantized_constants"].get("int8") and own["int8_layers"]
    assert model_quantization(ir.load(ort_quantized.parent / "float.onnx"), ("Conv", "Gemm")) is None


def test_tflite_gets_s8_encodings_of_the_same_values(ort_quantized):
    """u8 with zero point z is s8 with z - 128, value for value: the outputs do not move."""
    model = ir.load(ort_quantized)
    x = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
    before = _exact(model, x)
    conform = ConformQDQPass(POLICIES["tflite"])
    conform(model)
    assert set(_zero_points(model)) == {"int8"}
    assert conform.changes["activation encodings moved from u8 to s8 (exact)"] >= 2
    np.testing.assert_array_equal(_exact(model, x), before)


def _ranges(model: ir.Model) -> dict[str, tuple[float, float, float]]:
    """Each activation encoding's (lowest, highest, step), by its QuantizeLinear."""
    out = {}
    for n in model.graph:
        if n.op_type == "QuantizeLinear" and n.inputs[0].const_value is None:
            scale, zp = float(n.inputs[1].const_value.numpy()), n.inputs[2].const_value.numpy()
            info = np.iinfo(zp.dtype)
            out[n.name] = ((info.min - int(zp)) * scale, (info.max - int(zp)) * scale, scale)
    return out


SHIFTED = "activation encodings made symmetric on their input moved by whole steps, taken back after (exact but the top step)"
WIDENED = "activation encodings made symmetric (a coarser step)"


def test_tensorrt_gets_symmetric_encodings_and_float_biases(ort_quantized):
    """TensorRT's parser takes zero points of 0 and no int32-bias DequantizeLinear: the
    biases fold exactly; an encoding whose readers can take a shift back is moved to sit
    around 0 with the same step, the others widen around 0 to cover their range, at most
    doubling their step (a one-sided range: the cost, counted)."""
    model = ir.load(ort_quantized)
    before = _ranges(model)
    conform = ConformQDQPass(POLICIES["tensorrt"])
    conform(model)
    assert not any(n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None
                   and n.inputs[0].const_value.numpy().dtype == np.int32 for n in model.graph)
    assert conform.changes["int32 biases folded to float (exact)"] >= 1
    assert conform.changes[SHIFTED] >= 1 and conform.changes[SHIFTED] + conform.changes[WIDENED] == len(before)
    same_step = 0
    for name, (lo, hi, step) in _ranges(model).items():
        old_lo, old_hi, old_step = before[name.split("__padded")[0]]  # a padded Conv's copy: its source's
        assert lo == pytest.approx(-hi - step)  # s8, zero point 0
        if step == pytest.approx(old_step):  # shifted: the same step, the same width of range
            same_step += 1
            assert hi - lo == pytest.approx(old_hi - old_lo)
        else:
            assert lo <= old_lo + 1e-7 and hi >= old_hi - 1e-7
            assert step <= old_step * 255 / 127 * (1 + 1e-6)  # a u8 range from 0: 255 steps become 127
    assert same_step == conform.changes[SHIFTED]
    clips = [n for n in model.graph if n.op_type == "Clip" and n.outputs[0].uses()
             and all(u.node.op_type in ("QuantizeLinear", "Sub") for u in n.outputs[0].uses())]
    assert len(clips) == len(before)  # every old range still clamps


def test_a_shifted_encoding_computes_what_the_model_wrote():
    """u8 from 0 read by a MatMul with constant weights and by a Relu: moved by 127 steps
    and taken back (the MatMul's in a bias, the Relu's by an Add), the outputs are the
    model's own to float rounding; widened instead (a MatMul of two activations reads
    it), they move by up to a whole old step."""
    import onnxruntime as ort
    from onnx import TensorProto as T, helper, numpy_helper

    rng = np.random.default_rng(0)
    scale = np.float32(0.01)
    w = rng.standard_normal((16, 8)).astype(np.float32)

    def model(second_reader: str):
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
                 helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], name="dq"),
                 helper.make_node("MatMul", ["d", "w"], ["y"], name="mm")]
        if second_reader == "Relu":
            nodes.append(helper.make_node("Relu", ["d"], ["z"], name="relu"))
        else:  # d @ d^T: no constant takes a shift back
            nodes += [helper.make_node("Transpose", ["d"], ["dt"], perm=[1, 0]),
                      helper.make_node("MatMul", ["d", "dt"], ["z"], name="mm2")]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [4, 16])],
            [helper.make_tensor_value_info("y", T.FLOAT, None), helper.make_tensor_value_info("z", T.FLOAT, None)],
            [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(0, np.uint8), "zp"),
             numpy_helper.from_array(w, "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = rng.uniform(-0.5, 2.5, (4, 16)).astype(np.float32)  # below the range, and up to its top step
    run = lambda m: ort.InferenceSession(m.SerializeToString(), exact_qdq_options()).run(None, {"x": x})  # noqa: E731
    for second, change in (("Relu", SHIFTED), ("MatMul", WIDENED)):
        source = model(second)
        conformed = ir.from_proto(source)
        conform = ConformQDQPass(POLICIES["tensorrt"])
        conform(conformed)
        assert conform.changes == Counter({change: 1, **({"activation clamps kept as a Clip before them (exact)": 1}
                                                         if change == WIDENED else {})})
        (want_y, want_z), (got_y, got_z) = run(source), run(ir.to_proto(conformed))
        if change == SHIFTED:
            np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got_z, want_z, rtol=1e-6, atol=1e-6)
        else:
            assert np.abs(got_y - want_y).max() > 1e-3  # the coarser step shows


@pytest.mark.parametrize("target,precision", [("android-arm64", "int8"), ("host", "fp32"), ("host", "fp16"),
                                              ("jetson-orin-nano", "int8")])
def test_an_int8_model_builds_without_calibration_keeping_its_encodings(ort_quantized, tmp_path, target, precision):
    runner = deploycomp.build(ort_quantized, tmp_path / "out", target=target, precision=precision, no_fail=True)
    manifest = runner.manifest
    assert any("the model arrives int8" in note for note in manifest["assumptions"])
    assert "onnxruntime_own_int8_vs_written" in manifest["validation"]
    if precision == "int8":
        quant = manifest["quantization"]
        assert quant["source"].startswith("the model's own") and quant["int8_layers"] >= 1
    if precision == "fp16":  # no float weights to halve; OpenVINO ran Smart Turn 333x slower at f16
        assert manifest["fp16"]["executes_fp32"].startswith("the model arrives int8")
    if target != "jetson-orin-nano":  # the others run the same encodings (TFLite's exactly re-written)
        assert manifest["validation"]["outputs"]["probs"]["cosine"] > 0.99


def test_a_model_that_arrives_int8_is_judged_against_every_node_unfused(ort_quantized, tmp_path, monkeypatch):
    """Its QDQ as ONNX defines it: ONNX Runtime with no fusion at all. Its float fusions
    (LayerNorm, GELU, attention) sum in another order, which int8 rounding downstream
    amplifies: Smart Turn's probability moved by 0.14 of its scale between them."""
    import onnxruntime as ort

    import deploycomp.backends.onnxruntime.adapter as adapter
    import deploycomp.pipeline as pipeline
    from deploycomp.backends.onnxruntime import ORTRunner

    made = []

    class Spy(ORTRunner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.session.get_session_options().graph_optimization_level)

    monkeypatch.setattr(pipeline, "ORTRunner", Spy)
    monkeypatch.setattr(adapter, "ORTRunner", Spy)  # the reference: source_runner's
    runner = deploycomp.build(ort_quantized, tmp_path / "out", target="host", precision="int8", no_fail=True)
    assert made[0] == ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the reference, made first
    assert any("every node unfused" in note for note in runner.manifest["assumptions"])
    first = len(made)
    deploycomp.build(tmp_path / "float.onnx", tmp_path / "float-out", target="host", precision="fp32", no_fail=True)
    assert made[first] != ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # a float model's: ORT as users run it


def test_the_budget_is_no_stricter_than_the_model_s_own_runtime(ort_quantized, tmp_path):
    """Held to a budget ONNX Runtime's own fused int8 kernels miss against the model's QDQ
    as written (here: exact agreement), a build is held to what those kernels reach, and
    the manifest keeps the budget's own limit beside it."""
    runner = deploycomp.build(ort_quantized, tmp_path / "out", target="host", precision="int8",
                              min_cosine=1.0, no_fail=True)
    validation = runner.manifest["validation"]
    own = validation["onnxruntime_own_int8_vs_written"]["probs"]["cosine"]
    assert own < 1.0  # ONNX Runtime's kernels round otherwise than the QDQ as ONNX writes it
    assert any("ONNX Runtime's own int8 kernels" in note for note in runner.manifest["assumptions"])
    (check,) = [c for c in validation["budgets"] if c["budget"] == "cosine[probs]"]
    assert check["budget_limit"] == 1.0 and check["limit"] == pytest.approx(own)
    assert check["ok"] == (validation["outputs"]["probs"]["cosine"] >= own) == validation["ok"]


def test_a_relu_that_lives_on_as_a_zero_point_survives_symmetric_encodings():
    """ONNX Runtime's quantizer folds a ReLU into the conv before it: the s8 encoding with
    zero point -128 is what clamps the negatives. Made symmetric for TensorRT, the wider
    range let them through (an ArcFace ResNet50: cosine 0.02); the old range is kept as a
    Clip before the new QuantizeLinear."""
    import onnxruntime as ort
    from onnx import TensorProto as T, helper, numpy_helper

    scale = np.float32(0.05)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
         helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")],
        "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 64])], [helper.make_tensor_value_info("y", T.FLOAT, [1, 64])],
        [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(-128, np.int8), "zp")])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = ir.from_proto(source)
    conform = ConformQDQPass(POLICIES["tensorrt"])
    conform(model)
    assert conform.changes["activation clamps kept as a Clip before them (exact)"] == 1
    x = np.linspace(-3, 10, 64, dtype=np.float32)[None]
    run = lambda m: ort.InferenceSession(m.SerializeToString(), exact_qdq_options()).run(None, {"x": x})[0]
    want, got = run(source), run(ir.to_proto(model))
    assert want.min() == 0.0 and got.min() == 0.0  # the negatives clamped, as before
    np.testing.assert_allclose(got, want, atol=2 * scale)  # within the coarser step


def test_a_padded_conv_takes_the_shift_back_once_its_pads_come_first():
    """A ReLU's u8 (zero point 0) read by a 3x3 Conv with pads and by a 1x1 Conv without,
    as a ResNet bottleneck's convs read it. TensorRT's symmetric s8: the padded Conv
    gets its zero pads as a Pad before a copy of the encoding, so both take the shift
    back and neither widens; the outputs are the model's own QDQ arithmetic."""
    import onnxruntime as ort
    from onnx import TensorProto as T, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 8
    w3, w1 = (rng.standard_normal((c, c, k, k)).astype(np.float32) * 0.1 for k in (3, 1))
    inits = [numpy_helper.from_array(np.array(4.0 / 255, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "zp"),
             numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(w1, "w1")]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], name="dq"),
             helper.make_node("Conv", ["d", "w3"], ["y3"], pads=[1, 1, 1, 1], name="conv3"),
             helper.make_node("Conv", ["d", "w1"], ["y1"], name="conv1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, c, 12, 12])],
                              [helper.make_tensor_value_info(n, T.FLOAT, [1, c, 12, 12]) for n in ("y3", "y1")], inits)
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    conformed = ir.from_proto(source)
    conform = ConformQDQPass(POLICIES["tensorrt"])
    conform(conformed)
    assert conform.changes[SHIFTED] == 2 and not conform.changes[WIDENED]
    assert conform.changes["padded Convs given their zero pads before their input's encoding (exact)"] == 1
    conv3 = next(n for n in conformed.graph if n.name == "conv3")
    assert list(conv3.attributes["pads"].value) == [0, 0, 0, 0]
    x = rng.uniform(-1, 3.98, (1, c, 12, 12)).astype(np.float32)  # below the range, up to its top step
    run = lambda m: ort.InferenceSession(m.SerializeToString(), exact_qdq_options()).run(None, {"x": x})  # noqa: E731
    for want, got in zip(run(source), run(ir.to_proto(conformed))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _paddle_like_quantized(tmp_path, nodes, op_types=None) -> list[dict]:
    """``quantize_static`` (u8 activations, s8 per-channel weights) of a model reading
    ``x`` [1, 3, 16, 16] through ``nodes`` to ``y`` [1, 8, 14, 14] with a Constant-node
    weight ``w`` (a Paddle export's) as ``int8.onnx``; its calibration samples."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from tests.passes._harness import calibration_reader

    rng = np.random.default_rng(2)
    weight = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(
        rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2 + 0.05, "w"))
    graph = helper.make_graph([weight, *nodes], "paddle_like",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 14, 14])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "float.onnx")
    samples = [{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(8)]
    quantize_static(tmp_path / "float.onnx", tmp_path / "int8.onnx", calibration_reader(samples),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=op_types)
    return samples


@pytest.mark.parametrize("target", ["jetson-orin-nano", "host", "android-arm64"])
def test_constant_node_weights_and_constants_quantize_static_encoded_build_everywhere(tmp_path, target):
    """``quantize_static`` on a model whose weights are Constant nodes (a Paddle export)
    and that adds a constant (a detector's anchors): it encodes both like activations, u8
    with a zero point, as QuantizeLinear -> DequantizeLinear pairs around the constants.
    TensorRT's parser refused every one of those zero points; each pair is computed here,
    the weights made symmetric, the other constants float, and every target builds it."""
    from onnx import helper, numpy_helper

    anchors = helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(
        np.linspace(0.5, 40.0, 8 * 14 * 14, dtype=np.float32).reshape(1, 8, 14, 14), "a"))
    samples = _paddle_like_quantized(tmp_path, [anchors, helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                                                helper.make_node("Add", ["c", "a"], ["y"], name="place")])
    pairs = Counter(n.op_type for n in onnx.load(tmp_path / "int8.onnx").graph.node)
    assert pairs["QuantizeLinear"] >= 3  # the input, the weight and the anchors, each encoded as an activation
    runner = deploycomp.build(tmp_path / "int8.onnx", tmp_path / "b", target=target, validation_data=samples[:4])
    assert runner.manifest["validation"]["ok"]
    if target == "jetson-orin-nano":
        notes = next(a for a in runner.manifest["assumptions"] if "arrives int8" in a)
        assert "quantized constants computed (exact)" in notes and "weights made symmetric" in notes


def test_a_weight_that_something_else_reads_too_is_split_for_tensorrt(tmp_path):
    """A Constant-node weight that ``quantize_static`` encoded once (u8, a zero point)
    and that a Conv reads as its weight and a ``Mul`` reads as data (a weight norm): the
    weight could not be made symmetric for its other reader, and TensorRT's parser refused
    the zero point. The other reader gets the float values (exact) and the weight the
    symmetric encoding."""
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Mul", ["w", "w"], ["w2"], name="square"),
             helper.make_node("ReduceSum", ["w2"], ["n"], name="norm", keepdims=0),
             helper.make_node("Add", ["c", "n"], ["y"], name="place")]
    samples = _paddle_like_quantized(tmp_path, nodes, ["Conv", "Mul", "Add"])
    shared = next(n for n in onnx.load(tmp_path / "int8.onnx").graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0].startswith("w_"))
    assert shared.input[2] == "w_zero_point"  # one u8 encoding, read by the Conv and the Mul
    runner = deploycomp.build(tmp_path / "int8.onnx", tmp_path / "b", target="jetson-orin-nano",
                              validation_data=samples[:4])
    assert runner.manifest["validation"]["ok"]
    notes = next(a for a in runner.manifest["assumptions"] if "arrives int8" in a)
    assert "a weight's other readers given its float values (exact)" in notes and "weights made symmetric" in notes


def test_a_model_that_arrives_int8_validates_on_all_of_its_calibration_data(ort_quantized, tmp_path):
    """Nothing is calibrated on a model that carries its own encodings, so none of the
    user's --calibration data is held out of it: all of it validates (a quarter had, and
    the summary called it held out of calibration)."""
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(5).random((8, 1, 3, 16, 16), dtype=np.float32))
    runner = deploycomp.build(ort_quantized, tmp_path / "b", precision="int8", calibration=tmp_path / "c.npz")
    data = runner.manifest["validation"]["data"]
    assert data["samples"] == 8 and data["source"] == "user" and "nothing is calibrated" in data["label"]


def test_a_model_that_arrives_int8_is_timed_as_it_ships(ort_quantized, tmp_path, monkeypatch):
    """Its reference runs every node unfused, as nobody runs it: a PP-OCR cls quantized by
    ONNX Runtime read "7.45x faster than ONNX Runtime fp32" (0.83 ms against 6.2 ms, where
    ORT runs the file in 1.95 ms). The latency is said against ORT's default session on the
    original int8 file, and named so."""
    import onnxruntime as ort

    import deploycomp.backends.onnxruntime.adapter as adapter
    import deploycomp.pipeline as pipeline
    from deploycomp.backends.onnxruntime import ORTRunner

    runs: dict = {}

    class Spy(ORTRunner):
        def run(self, feeds):
            level = self.session.get_session_options().graph_optimization_level
            runs[level] = runs.get(level, 0) + 1
            return super().run(feeds)

    monkeypatch.setattr(pipeline, "ORTRunner", Spy)
    monkeypatch.setattr(adapter, "ORTRunner", Spy)
    runner = deploycomp.build(ort_quantized, tmp_path / "out", target="host", precision="fp32", no_fail=True)
    measured, validation = runner.manifest["measured"], runner.manifest["validation"]
    assert measured["reference_latency"]["against"] == "ONNX Runtime on the original int8 model"
    # the unfused reference runs the validation inputs once each (and one for the bundle's
    # input/output record), and is not timed again
    assert runs[ort.GraphOptimizationLevel.ORT_DISABLE_ALL] <= validation["data"]["samples"] + 1
    shipped = sum(n for level, n in runs.items() if level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert shipped >= max(measured["reference_latency"].get("runs", 1), validation["data"]["samples"])
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Fidelity vs ONNX Runtime on the original int8 model" in report


def test_a_model_that_arrives_int8_is_estimated_as_what_its_file_executes(ort_quantized, tmp_path):
    """TensorRT runs a QDQ file's own int8 whatever precision the build asks for: its fp32
    and int8 builds write the same file and had been estimated 4x apart (the fp32 one said
    "executes fp32"); a QDQ pair is no pass over memory of its own (every int8 runtime
    folds it), so the int8 file is not estimated slower than its float twin either."""
    from deploycomp import analysis
    from deploycomp.ir import load_model

    runs = {p: deploycomp.build(ort_quantized, tmp_path / p, target="jetson-orin-nano", precision=p, no_fail=True)
            for p in ("fp32", "int8")}
    estimates = {p: r.manifest["validation"]["latency_estimate"] for p, r in runs.items()}
    assert estimates["fp32"]["estimate_ms"] == estimates["int8"]["estimate_ms"]
    assert estimates["fp32"]["estimated_as"].startswith("int8: the model arrives int8")
    assert runs["fp32"].manifest["backend"]["runtime"]["executed_precision"].startswith("int8 graph")
    float_cost = analysis.analyze(load_model(tmp_path / "float.onnx").model, {"N": 1})
    int8_cost = analysis.analyze(load_model(ort_quantized).model)
    assert int8_cost.activation_elements <= float_cost.activation_elements  # (its Relu went into the Conv)


def test_a_tflite_fp16_build_of_a_model_that_arrives_int8_says_it_is_its_fp32_build(ort_quantized, tmp_path):
    """TFLite's fp16 is float16 weights; an int8 model's are int8: its fp16 build wrote its
    fp32 build's file, estimated 2x faster, without a word."""
    runs = {p: deploycomp.build(ort_quantized, tmp_path / p, target="android-arm64", precision=p, no_fail=True)
            for p in ("fp32", "fp16")}
    assert (runs["fp16"].manifest["validation"]["latency_estimate"]["estimate_ms"]
            == runs["fp32"].manifest["validation"]["latency_estimate"]["estimate_ms"])
    assert runs["fp16"].manifest["fp16"]["executes_fp32"].startswith("the model arrives int8: its weights stay int8")


def test_an_int8_models_host_bundle_says_its_weights_are_int8_at_any_precision(ort_quantized, tmp_path):
    runner = deploycomp.build(ort_quantized, tmp_path / "out", target="host", precision="fp32", no_fail=True)
    assert runner.manifest["backend"]["lowered"]["weights"] == "i8 (QDQ)"  # ("f32" over a model.bin of int8)


def test_own_encodings_tflite_cannot_run_int8_are_said(tmp_path, caplog):
    """NNCF quantizes a layer's input and weights, not its output: TFLite's int8 kernels
    need both ends, and an NNCF-quantized PP-OCR rec ran every convolution float on
    Android (0% of its MACs int8) in a bundle that said "[ok]" and nothing else."""
    import logging

    from onnx import TensorProto as T, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(2):
        w = rng.integers(-100, 100, (4, 4 if i else 3, 3, 3)).astype(np.int8)
        inits += [numpy_helper.from_array(w, f"w{i}q"), numpy_helper.from_array(np.float32(0.01), f"w{i}s"),
                  numpy_helper.from_array(np.int8(0), f"w{i}z"), numpy_helper.from_array(np.float32(0.05), f"a{i}s"),
                  numpy_helper.from_array(np.uint8(128), f"a{i}z")]
        nodes += [helper.make_node("QuantizeLinear", [x, f"a{i}s", f"a{i}z"], [f"q{i}"]),
                  helper.make_node("DequantizeLinear", [f"q{i}", f"a{i}s", f"a{i}z"], [f"d{i}"]),
                  helper.make_node("DequantizeLinear", [f"w{i}q", f"w{i}s", f"w{i}z"], [f"w{i}"]),
                  helper.make_node("Conv", [f"d{i}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "nncf_like", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(x, T.FLOAT, [1, 4, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING, logger="deploycomp.pipeline"):
        runner = deploycomp.build(tmp_path / "m.onnx", tmp_path / "out", target="android-arm64", precision="int8",
                                  no_fail=True)
    assert runner.manifest["quantization"]["executed_int8_mac_share"] < 0.5
    assert "runs 1 of the model's 2 own int8 layers float" in caplog.text  # (the last: nothing after it encoded)


def test_a_float_build_of_a_model_that_arrives_int8_records_its_encodings(ort_quantized, tmp_path):
    """Its fp32 build's manifest had said the model arrives int8 only in prose."""
    runner = deploycomp.build(ort_quantized, tmp_path / "out", target="host", precision="fp32", no_fail=True)
    own = runner.manifest["source"]["int8"]
    assert runner.manifest["quantization"] is None
    assert own["source"] == "the model's own QuantizeLinear/DequantizeLinear" and own["int8_layers"] == 2
