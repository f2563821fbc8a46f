"""TensorRT without a GPU: typed ONNX, build plan, NVIDIA's parser, the engine-builder call
sequence against a recording fake, and the errors a user meets on a machine without one."""

from __future__ import annotations

import json
import types

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

import deploycomp
from deploycomp.backends.tensorrt import parser as nvparser
from deploycomp.backends.tensorrt.engine import build_engine, gpu_info
from deploycomp.backends.tensorrt.fp16 import to_fp16
from deploycomp.backends.tensorrt.plan import BuildPlan, make_plan, read_plan, version_ok
from deploycomp.errors import BackendUnavailable, InputDataError, UnsupportedError
from deploycomp.targets import load_target
from tests.passes._harness import model_from_text

R = np.random.default_rng(0)


def _attention_block():
    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[1, 3, 8, 8] x, float[4, 3, 3, 3] k, float[64] gamma,
              float[64] beta) => (float[1, 4, 64] y)
    { c = Conv <pads = [1, 1, 1, 1]> (x, k)
      r = Reshape (c, shp)
      n = LayerNormalization <axis = -1> (r, gamma, beta)
      y = Softmax <axis = -1> (n) }"""
    text = text.replace("float[64] beta)", "float[64] beta, int64[3] shp)")
    proto = model_from_text(text, k=R.standard_normal((4, 3, 3, 3)).astype(np.float32),
                            gamma=np.ones(64, np.float32), beta=np.zeros(64, np.float32), shp=np.array([1, 4, 64]))
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto))


def test_fp16_graph_keeps_sensitive_ops_fp32_and_fp32_io():
    model = _attention_block()
    half = to_fp16(model)
    types_by_op = {n.op_type: n.outputs[0].dtype for n in half.graph}
    assert types_by_op["Conv"] == ir.DataType.FLOAT16
    assert types_by_op["LayerNormalization"] == ir.DataType.FLOAT and types_by_op["Softmax"] == ir.DataType.FLOAT
    assert [v.dtype for v in half.graph.inputs] == [ir.DataType.FLOAT] == [v.dtype for v in half.graph.outputs]
    assert half.graph.outputs[0].name == "y"
    assert all(v.dtype == ir.DataType.FLOAT16 for k, v in half.graph.initializers.items() if k.startswith("k"))
    x = R.standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = lambda m: ort.InferenceSession(ir.to_proto(m).SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    want, got = run(model), run(half)
    assert float(np.dot(want.ravel(), got.ravel()) / np.linalg.norm(want) / np.linalg.norm(got)) > 0.999


def test_a_node_reading_a_constant_past_fp16s_range_stays_fp32():
    """A BatchNormalization whose variance is 2.3e6 (a tf2onnx MEG classifier): in fp16 the
    variance is Inf and the output 0; the node stays fp32, with no overflow warning."""
    import warnings

    text = """<ir_version: 8, opset_import: ["" : 17]> g (float[1, 2, 4, 4] x, float[2] s, float[2] b, float[2] m,
              float[2] v) => (float[1, 2, 4, 4] y)
    { n = BatchNormalization (x, s, b, m, v)
      y = Relu (n) }"""
    model = ir.from_proto(onnx.shape_inference.infer_shapes(model_from_text(
        text, s=np.ones(2, np.float32), b=np.zeros(2, np.float32), m=np.zeros(2, np.float32),
        v=np.array([2.3e6, 1.0], np.float32))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflowing cast would warn
        half = to_fp16(model)
    types = {n.op_type: n.outputs[0].dtype for n in half.graph}
    assert types["BatchNormalization"] == ir.DataType.FLOAT and types["Relu"] == ir.DataType.FLOAT16
    x = (R.standard_normal((1, 2, 4, 4)) * 1000).astype(np.float32)
    got = ort.InferenceSession(ir.to_proto(half).SerializeToString()).run(None, {"x": x})[0]
    want = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3)


def test_an_output_also_read_by_an_fp32_op_is_cast_back_once():
    """``logits`` is an output and the input of a Softmax kept fp32: one Cast back to fp32
    serves both (two Casts of one name made an invalid model: the seizure detector of
    brainmaze-eeg-models failed its TensorRT fp16 build with an internal error)."""
    text = """<ir_version: 8, opset_import: ["" : 17]> g (float[1, 5, 8] x, float[8, 4] w) => (float[1, 5, 4] logits,
              float[1, 5, 4] probs)
    { logits = MatMul (x, w)
      probs = Softmax <axis = -1> (logits) }"""
    model = ir.from_proto(model_from_text(text, w=R.standard_normal((8, 4)).astype(np.float32)))
    half = to_fp16(model)
    names = [n.name for n in half.graph if n.name]
    assert len(names) == len(set(names)) and [v.name for v in half.graph.outputs] == ["logits", "probs"]
    assert [v.dtype for v in half.graph.outputs] == [ir.DataType.FLOAT] * 2
    x = R.standard_normal((1, 5, 8)).astype(np.float32)
    got = ort.InferenceSession(ir.to_proto(half).SerializeToString()).run(None, {"x": x})
    want = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2)


def test_a_float16_model_is_typed_from_its_float32_form_behind_its_float16_interface():
    """A model exported in float16 (inputs, weights, outputs): typed as an fp32 one would
    be, its interface still float16, and its fp16 reference runs (it met float16 inputs
    and float32 weights in one Conv: an internal error on every fp16 Jetson build)."""
    from deploycomp.backends.tensorrt.fp16 import simulate_fp16

    text = """<ir_version: 8, opset_import: ["" : 17]> g (float16[1, 3, 8, 8] x, float16[4, 3, 3, 3] w)
              => (float16[1, 4, 6, 6] y)
    { c = Conv (x, w)
      y = Softmax <axis = 1> (c) }"""
    model = ir.from_proto(onnx.shape_inference.infer_shapes(
        model_from_text(text, w=R.standard_normal((4, 3, 3, 3)).astype(np.float16))))  # typed, as the optimizer leaves it
    half = to_fp16(model)
    assert [v.dtype for v in (*half.graph.inputs, *half.graph.outputs)] == [ir.DataType.FLOAT16] * 2
    assert [n.op_type for n in half.graph].count("Cast") == 4  # x to f32 (the widening), to f16; back; y to f16
    assert next(n for n in half.graph if n.op_type == "Softmax").outputs[0].dtype == ir.DataType.FLOAT  # kept fp32
    x = R.standard_normal((1, 3, 8, 8)).astype(np.float16)
    want = ort.InferenceSession(ir.to_proto(model).SerializeToString()).run(None, {"x": x})[0]
    for typed in (half, simulate_fp16(half)):
        got = ort.InferenceSession(ir.to_proto(typed).SerializeToString()).run(None, {"x": x})[0]
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("passes", [True, False])
def test_fp16_graph_gives_control_flow_the_fp32_tensors_it_reads_by_name(passes):
    """An ``If`` stays fp32; its branches read main-graph tensors by name (the wake-word
    model's else branch returns the score), which the fp16 typing now holds in fp16:
    they reach the branches through a Cast to fp32, and both branches run."""
    from tests.passes.test_if_condition import wake_word_feeds, wake_word_model

    model = ir.from_proto(onnx.shape_inference.infer_shapes(wake_word_model()))
    half = to_fp16(model)
    feeds = wake_word_feeds(passes)
    run = lambda m: ort.InferenceSession(ir.to_proto(m).SerializeToString()).run(None, feeds)[0]  # noqa: E731
    np.testing.assert_allclose(run(half), run(model), rtol=2e-3)
    if nvparser.parser_module() is not None:
        assert nvparser.parse_onnx(ir.to_proto(half).SerializeToString()).ok


@pytest.mark.skipif(nvparser.parser_module() is None, reason="NVIDIA's ONNX parser (pip install tensorrt-rtx) is not installed")
def test_nvidia_parser_accepts_the_fp16_graph_and_names_a_rejected_node():
    assert nvparser.parse_onnx(ir.to_proto(to_fp16(_attention_block())).SerializeToString()).ok
    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[2, 3] x) => (float[2, 3] y)
    { y = Bernoulli (x) }"""
    bad = nvparser.parse_onnx(model_from_text(text).SerializeToString())
    assert not bad.ok and bad.unsupported[0]["op"] == "Bernoulli"
    # a check that names neither node nor op (a graph network's scatter-add read "cannot
    # run op(s) ?"): the parser's importer says which op
    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[4, 3] x, int64[2, 3] i, float[2, 3] u)
    => (float[4, 3] y) { y = ScatterElements <reduction = "add"> (x, i, u) }"""
    scatter = nvparser.parse_onnx(model_from_text(text).SerializeToString())
    if not scatter.ok:  # this parser version takes no scatter reduction
        assert scatter.unsupported[0]["op"] == "ScatterElements"


def test_a_rejection_the_parser_names_no_node_for_names_the_ops_nodes():
    """NVIDIA's parser stops at the first node it cannot import and, for a check inside an
    op's importer (a ScatterElements reduction), names none: the refusal had read "1
    node(s), first: an unnamed ScatterElements" of a graph network with 8, all named. It
    counts and names the model's nodes of that op, the first in graph order first."""
    from deploycomp.backends.tensorrt.adapter import _rejected

    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[4, 3] x, int64[2, 3] i, float[2, 3] u)
    => (float[4, 3] z) { y = ScatterElements <reduction = "add"> (x, i, u)  z = ScatterElements <reduction = "add"> (y, i, u) }"""
    model = ir.from_proto(model_from_text(text))
    for node, name in zip(model.graph, ("/interactions.0/ScatterElements", "/interactions.1/ScatterElements")):
        node.name = name
    parsed = nvparser.ParseResult("tensorrt_rtx 1.3", False, unsupported=[
        {"node": "", "op": "ScatterElements", "reason": "Unsupported reduction type"}])
    entries = _rejected(model, parsed)
    assert [e["node"] for e in entries] == ["/interactions.0/ScatterElements", "/interactions.1/ScatterElements"]
    assert all(e["op"] == "ScatterElements" for e in entries)


@pytest.mark.parametrize("op", ["GRU", "LSTM", "RNN"])
def test_a_recurrent_op_reading_sequence_lengths_stays_fp32(tmp_path, op):
    """NVIDIA's parser refuses a GRU, LSTM or RNN with fp16 tensors when it reads
    ``sequence_lens`` ("Invalid Node": an Arabic diacritiser's fp16 build for Jetson
    failed where its fp32 and int8 builds passed); with lengths it keeps fp32, and the
    fp16 bundle builds and matches ONNX Runtime."""
    gates = {"GRU": 3, "LSTM": 4, "RNN": 1}[op]
    h, i = 8, 4
    w = R.standard_normal((1, gates * h, i)).astype(np.float32) * 0.3
    r = R.standard_normal((1, gates * h, h)).astype(np.float32) * 0.3
    b = R.standard_normal((1, 2 * gates * h)).astype(np.float32) * 0.1
    text = f"""<ir_version: 8, opset_import: ["" : 17]> g (float[5, 1, {i}] x, int32[1] lens) => (float[5, 1, 1, {h}] y)
    {{ y = {op} <hidden_size = {h}> (x, w, r, b, lens) }}"""
    onnx.save(model_from_text(text, w=w, r=r, b=b), tmp_path / "m.onnx")
    typed = to_fp16(ir.load(tmp_path / "m.onnx"))
    cell = next(n for n in typed.graph if n.op_type == op)
    assert cell.inputs[0].dtype == ir.DataType.FLOAT
    if nvparser.parser_module() is not None:
        assert nvparser.parse_onnx(ir.to_proto(typed).SerializeToString()).ok
        runner = deploycomp.build(tmp_path / "m.onnx", tmp_path / "b", target="jetson-orin-nano", precision="fp16",
                                  validation_data=[{"x": R.standard_normal((5, 1, i)).astype(np.float32),
                                                    "lens": np.array([n], np.int32)} for n in (5, 3)])
        assert runner.manifest["validation"]["ok"]


@pytest.mark.skipif(nvparser.parser_module() is None, reason="NVIDIA's ONNX parser (pip install tensorrt-rtx) is not installed")
def test_an_op_of_another_domain_is_refused_without_the_parsers_assertion():
    """An op TensorRT has no layer for outside the ONNX domain (ONNX Runtime's
    DynamicQuantizeLSTM in a diacritizer): the parser's own assertion text ('creator &&
    "Plugin not found, ...') is said plainly instead."""
    text = """<ir_version: 8, opset_import: ["" : 18, "com.microsoft" : 1]> g (float[1, 4] x) => (float[1, 4] y)
    { y = com.microsoft.Unheard (x) }"""
    parsed = nvparser.parse_onnx(model_from_text(text).SerializeToString())
    assert not parsed.ok and parsed.unsupported[0]["op"] == "Unheard"
    assert "Plugin not found" not in parsed.errors[0] and "no plugin of that name" in parsed.errors[0]


@pytest.mark.skipif(nvparser.parser_module() is None, reason="NVIDIA's ONNX parser (pip install tensorrt-rtx) is not installed")
def test_a_model_quantized_by_onnxruntime_is_refused_in_one_plain_line(capfd):
    """ddddocr's older reader ships dynamically quantized (ConvInteger, MatMulInteger): the
    parser's own error is the bare condition "false", and its logger printed it to stderr
    first. The refusal says what the ops are and what to do, once."""
    from deploycomp.backends.base import SupportReport
    from deploycomp.errors import UnsupportedError

    text = """<ir_version: 8, opset_import: ["" : 18]> g (uint8[1, 4] x, uint8[4, 2] w) => (int32[1, 2] y)
    { y = MatMulInteger (x, w) }"""
    parsed = nvparser.parse_onnx(model_from_text(text).SerializeToString())
    assert not parsed.ok and parsed.unsupported[0]["op"] == "MatMulInteger"
    assert parsed.errors[0] != "false" and "MatMulInteger" in parsed.errors[0]
    assert capfd.readouterr().err == ""  # TensorRT's messages go to logging, not stderr
    report = SupportReport("tensorrt", [{"node": "mm", "op": "MatMulInteger"}])
    with pytest.raises(UnsupportedError, match="quantized already .* build its float original"):
        report.raise_if_unsupported("jetson-orin-nano")


def test_tensorrt_bundle_without_a_gpu(tiny_conv, tmp_path):
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="jetson-orin-nano", precision="fp16")
    manifest = runner.manifest
    lowered = manifest["backend"]["lowered"]
    assert sorted(a["path"] for a in manifest["artifacts"]) == ["build_plan.json", "model.onnx", "reference.npz"]
    assert lowered["engine"] is None and lowered["typed_as"].startswith("fp16 tensors")
    assert "functional reference" in manifest["backend"]["runtime"]["runtime"]
    assert manifest["validation"]["ok"] and "latency_here" not in manifest["measured"]
    plan = read_plan(tmp_path / "b")
    assert plan.profiles == [{"x": {"min": [1, 3, 16, 16], "opt": [1, 3, 16, 16], "max": [8, 3, 16, 16]}}]
    assert plan.strongly_typed and plan.dla_core is None and plan.precision == "fp16"
    graph = onnx.load(tmp_path / "b" / "model.onnx").graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    if nvparser.parser_module() is not None:
        assert lowered["nvidia_parser"].startswith(("tensorrt", "tensorrt_rtx"))
        assert any("all nodes supported" in n for n in manifest["support"]["notes"])
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    assert deploycomp.load(tmp_path / "b").run({"x": x})["probs"].shape == (1, 4)


def test_dla_targets_plan_dla_with_gpu_fallback():
    agx = load_target("jetson-agx-orin")
    assert make_plan("model.onnx", agx, "int8", {}).dla_core == 0
    assert make_plan("model.onnx", agx, "int8", {}).gpu_fallback
    assert make_plan("model.onnx", agx, "fp32", {}).dla_core is None  # the DLA has no fp32
    assert make_plan("model.onnx", load_target("nvidia-t4"), "int8", {}).dla_core is None
    # a family's plan says which members have the DLA it plans (an Orin Nano has none, and
    # a trtexec user reading "DLA core 0" there would have asked for it); and no precision flags
    family = make_plan("model.onnx", load_target("jetson"), "int8", {})
    assert family.dla_core == 0 and "jetson-orin-nano" not in family.dla_devices
    assert any("jetson-orin-nano, jetson-orin-nano-super have none" in n for n in family.notes)
    assert "--stronglyTyped, not --fp16/--int8" in family.precision_flags
    # and the same build as a trtexec command line, for a team that builds without deploycomp
    dynamic = make_plan("model.onnx", agx, "int8", {"x": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]},
                                                    "k": {"min": [2], "opt": [2], "max": [2]}})
    assert dynamic.to_json()["trtexec"] == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --timingCacheFile=timing.cache --stronglyTyped "
        f"--memPoolSize=workspace:{dynamic.workspace_mb}M --builderOptimizationLevel=3 --minShapes=x:1x3x8x8 "
        "--optShapes=x:4x3x8x8 --maxShapes=x:8x3x8x8 --useDLACore=0 --allowGPUFallback")


def test_version_ranges():
    assert version_ok("10.13.0.35") and version_ok("11.0.1")
    assert not version_ok("8.6.1") and not version_ok("12.0.0")


def test_engine_without_gpu_is_a_clear_error_and_leaves_the_bundle(tiny_conv, tmp_path):
    from deploycomp.engine import build_bundle_engine

    deploycomp.build(tiny_conv, tmp_path / "b", target="nvidia-t4")
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    no_gpu = types.SimpleNamespace(cudaGetDeviceCount=lambda: (100, 0))  # cudaErrorNoDevice
    with pytest.raises(BackendUnavailable, match="needs an NVIDIA GPU"):
        build_bundle_engine(tmp_path / "b", trt=object(), cudart=no_gpu)
    assert gpu_info(no_gpu) is None
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before


class _Recorder:
    """A fake ``tensorrt`` module that records every call the engine builder makes."""

    def __init__(self, version="10.13.0.35", parse_ok=True, dla_cores=2):
        self.calls: list[tuple] = []
        self.__version__ = version
        rec = self

        class Obj:
            def __init__(self, kind):
                self._kind = kind

            def __getattr__(self, name):
                if name == "num_errors":  # a property in TensorRT
                    return 0
                if name == "num_DLA_cores":
                    return dla_cores

                def call(*args, **kwargs):
                    rec.calls.append((f"{self._kind}.{name}", args, kwargs))
                    return {"create_network": Obj("network"), "create_builder_config": Obj("config"),
                            "create_optimization_profile": Obj("profile"), "create_timing_cache": Obj("cache"),
                            "get_timing_cache": Obj("cache"), "serialize": b"CACHE",
                            "build_serialized_network": b"ENGINE", "parse_from_file": parse_ok}.get(name)
                return call

            def __setattr__(self, name, value):
                if name.startswith("_"):
                    object.__setattr__(self, name, value)
                else:
                    rec.calls.append((f"{self._kind}.{name}=", (value,), {}))

        self.Logger = type("Logger", (), {"WARNING": 2, "ERROR": 1, "__init__": lambda s, level: None})
        self.Builder = lambda logger: Obj("builder")
        self.OnnxParser = lambda network, logger: Obj("parser")
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.DeviceType = types.SimpleNamespace(DLA="DLA")
        self.BuilderFlag = types.SimpleNamespace(GPU_FALLBACK="GPU_FALLBACK")

    def names(self):
        return [c[0] for c in self.calls]


def _plan(**kw) -> BuildPlan:
    return BuildPlan(onnx="model.onnx", precision="int8", workspace_mb=512,
                     profiles=[{"images": {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}}], **kw)


def test_engine_builder_call_sequence(tmp_path):
    trt = _Recorder()
    (tmp_path / "timing.cache").write_bytes(b"OLD")
    info = build_engine(tmp_path, _plan(dla_core=0, gpu_fallback=True), trt)
    calls = trt.calls
    assert ("builder.create_network", (1,), {}) in calls  # 1 << STRONGLY_TYPED
    assert ("parser.parse_from_file", (str(tmp_path / "model.onnx"),), {}) in calls
    assert ("config.set_memory_pool_limit", ("WORKSPACE", 512 << 20), {}) in calls
    assert ("config.builder_optimization_level=", (3,), {}) in calls
    assert ("profile.set_shape", ("images", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)), {}) in calls
    assert ("config.default_device_type=", ("DLA",), {}) in calls and ("config.DLA_core=", (0,), {}) in calls
    assert ("config.set_flag", ("GPU_FALLBACK",), {}) in calls
    assert ("config.create_timing_cache", (b"OLD",), {}) in calls  # reused, then saved
    names = trt.names()
    assert names.index("config.add_optimization_profile") < names.index("builder.build_serialized_network")
    assert (tmp_path / "model.engine").read_bytes() == b"ENGINE"
    assert (tmp_path / "timing.cache").read_bytes() == b"CACHE"
    assert info["tensorrt_version"] == "10.13.0.35" and info["engine"] == "model.engine"


def test_a_planned_dla_is_used_only_where_the_device_has_one(tmp_path):
    """A family bundle (--target jetson) plans DLA core 0 for the modules that have one;
    on an Orin Nano (no DLA) the engine is built for the GPU and says so."""
    trt = _Recorder(dla_cores=0)
    info = build_engine(tmp_path, _plan(dla_core=0, gpu_fallback=True), trt)
    assert "config.default_device_type=" not in trt.names() and "config.DLA_core=" not in trt.names()
    assert info["dla_core"] is None and "this device has 0 DLA core(s)" in info["notes"][0]
    assert build_engine(tmp_path, _plan(dla_core=0, gpu_fallback=True), _Recorder(dla_cores=2))["dla_core"] == 0


def test_engine_builder_refuses_other_versions_and_parser_failures(tmp_path):
    with pytest.raises(UnsupportedError, match="TensorRT 8.6.1 here; this bundle's plan needs >=10.0,<12"):
        build_engine(tmp_path, _plan(), _Recorder(version="8.6.1"))
    with pytest.raises(UnsupportedError, match="TensorRT's parser rejects model.onnx"):
        build_engine(tmp_path, _plan(), _Recorder(parse_ok=False))
    assert not (tmp_path / "model.engine").exists()


def test_cli_engine_without_tensorrt_exits_7(tiny_conv, tmp_path):
    from tests.test_cli import cli

    assert cli("build", tiny_conv, "--out", tmp_path / "b", "--target", "jetson-orin-nano")[0] == 0
    rc, _, stderr = cli("engine", tmp_path / "b")
    assert rc == 7 and "TensorRT engine" in stderr and len(stderr.strip().splitlines()) == 1
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["backend"]["lowered"]["engine"] is None


@pytest.mark.gpu
def test_engine_on_a_real_gpu(tiny_conv, tmp_path):
    info = gpu_info()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        info = None
    if info is None:
        pytest.skip("needs an NVIDIA GPU and the tensorrt package (none on this machine)")
    from deploycomp.engine import build_bundle_engine

    deploycomp.build(tiny_conv, tmp_path / "b", target="nvidia-t4", precision="fp16")
    manifest = build_bundle_engine(tmp_path / "b")
    assert manifest["engine_validation"]["ok"]


def test_dynamic_batch_keeps_a_profile(tiny_conv, tmp_path):
    """tiny_conv's batch is dynamic: for TensorRT it stays dynamic in the ONNX, with a
    1 / 1 / 8 profile in the plan, and the bundle is validated at batch 1."""
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="jetson-orin-nano")
    manifest = runner.manifest
    assert any("dynamic batch kept" in a for a in manifest["assumptions"])
    assert manifest["io"]["profiles"]["x"] == {"min": [1, 3, 16, 16], "opt": [1, 3, 16, 16], "max": [8, 3, 16, 16]}
    assert read_plan(tmp_path / "b").profiles == [manifest["io"]["profiles"]]
    dim0 = onnx.load(tmp_path / "b" / "model.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    # the bundle runs any batch its profile takes (its runner had refused all but 1)
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    loaded = deploycomp.load(tmp_path / "b")
    batch = loaded.run({"x": x})
    one = [loaded.run({"x": x[i:i + 1]}) for i in range(3)]
    for name, got in batch.items():
        np.testing.assert_allclose(got, np.concatenate([o[name] for o in one]), atol=1e-5)
    with pytest.raises(InputDataError, match=r"shape \[9, 3, 16, 16\] given, the bundle was built for shapes from "
                                             r"\[1, 3, 16, 16\] to \[8, 3, 16, 16\]"):
        loaded.run({"x": np.zeros((9, 3, 16, 16), np.float32)})


def test_a_profile_validates_at_the_users_sample_shape_inside_it(tiny_conv, tmp_path):
    """Validation samples of batch 1 for a 1 / 4 / 16 profile: validated at 1 (they were
    refused for not being the OPT batch, and the hint's --input then clashed with --profile)."""
    x = np.random.default_rng(1).random((6, 1, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="nvidia-t4", validation_data=tmp_path / "val.npz",
                              profiles=["x:1x3x16x16:4x3x16x16:16x3x16x16"])
    assert runner.manifest["io"]["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert runner.manifest["io"]["profiles"]["x"]["opt"] == [4, 3, 16, 16]
    assert any("inside its --profile" in a for a in runner.manifest["assumptions"])
    assert runner.manifest["validation"]["ok"] and runner.manifest["validation"]["data"]["samples"] == 6
    # the roofline counts the layers at that shape (the batch kept dynamic had counted no FLOPs)
    assert runner.manifest["validation"]["latency_estimate"]["flops"] > 2 * 16 * 16 * 8 * 27


def test_run_takes_images_of_batch_1_whatever_batch_a_profile_bundle_was_built_at(tiny_conv, tmp_path):
    """A 1 / 2 / 4 profile validated at its OPT batch 2 (8 images): 5 images given to
    ``run`` as one array had been refused as a batch of 5, past the profile's 4, where a
    bundle of the same profile built at batch 1 took them: rows of batch 1 it takes."""
    from tests.test_cli import cli

    x = np.random.default_rng(2).random((8, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="nvidia-t4", validation_data=tmp_path / "val.npz",
                              profiles=["x:1x3x16x16:2x3x16x16:4x3x16x16"])
    assert runner.manifest["io"]["inputs"][0]["shape"] == [2, 3, 16, 16]
    np.savez(tmp_path / "five.npz", x=x[:5])
    code, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "five.npz", "--outputs", tmp_path / "o.npz")
    assert code == 0, stderr
    assert np.load(tmp_path / "o.npz")["probs"].shape == (5, 4)


def test_explicit_profile_and_its_errors(tiny_conv, tmp_path):

    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="nvidia-t4",
                              profiles=["x:1x3x16x16:4x3x16x16:16x3x16x16"])
    assert runner.manifest["io"]["inputs"][0]["shape"] == [4, 3, 16, 16]  # validated at OPT
    assert read_plan(tmp_path / "b").profiles[0]["x"]["max"] == [16, 3, 16, 16]
    with pytest.raises(InputDataError, match="MIN <= OPT <= MAX"):
        deploycomp.build(tiny_conv, tmp_path / "c", target="nvidia-t4", profiles=["x:4x3x16x16:1x3x16x16:8x3x16x16"])
    with pytest.raises(UnsupportedError, match=r"--profile applies to targets whose runtime takes dynamic shapes "
                                               r"\(TensorRT, OpenVINO\); android-arm64 \(tflite\) runs static"):
        deploycomp.build(tiny_conv, tmp_path / "c", target="android-arm64", profiles=["x:1x3x16x16:1x3x16x16:2x3x16x16"])
    with pytest.raises(InputDataError, match="--profile x: given twice, with other shapes; give one"):  # (the last won)
        deploycomp.build(tiny_conv, tmp_path / "c", target="nvidia-t4",
                         profiles=["x:1x3x16x16:4x3x16x16:16x3x16x16", "x:1x3x16x16:2x3x16x16:4x3x16x16"])
    assert not (tmp_path / "c").exists()


def test_unconstrained_dynamic_dims_ask_for_input_or_profile(dynamic_hw_relu, tmp_path):

    with pytest.raises(InputDataError, match=r"pass --input x:1x3xNxN or --profile x:MIN:OPT:MAX"):
        deploycomp.build(dynamic_hw_relu, tmp_path / "b", target="jetson-orin-nano")


def test_deploycomp_run_takes_every_shape_the_profile_takes(dynamic_hw_relu, tmp_path):
    """``deploycomp run`` on a TensorRT bundle built with a spatial profile: any shape inside
    it is one sample (it had been held to the OPT shape, which ``load().run`` was not); one
    outside names the profile."""
    from tests.test_cli import _one_line_error, cli

    deploycomp.build(dynamic_hw_relu, tmp_path / "b", target="jetson-orin-nano",
                     profiles=["x:1x3x8x8:1x3x16x16:1x3x32x32"])
    x = np.random.default_rng(0).standard_normal((1, 3, 24, 20)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, stdout, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "o.npz")
    assert code == 0, stderr
    got = np.load(tmp_path / "o.npz")
    (name,) = got.files
    np.testing.assert_allclose(got[name], np.maximum(x, 0), atol=1e-6)
    np.savez(tmp_path / "big.npz", x=np.zeros((1, 3, 40, 40), np.float32))
    code, _, stderr = cli("run", tmp_path / "b", "--inputs", tmp_path / "big.npz")
    assert code == 4
    _one_line_error(stderr, "expected shapes from [1, 3, 8, 8] to [1, 3, 32, 32] (the bundle's --profile)")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_the_engine_step_runs_nvidias_real_builder_without_a_gpu(tiny_conv, tmp_path, precision):
    """TensorRT for RTX (PyPI) builds a serialized, GPU-agnostic engine with no GPU: the
    engine step's real calls (strongly typed network, NVIDIA's ONNX parser on the bundle's
    typed fp16 or int8 QDQ ONNX, workspace, profiles, timing cache, build) run here, not
    only against the recording fake. What it cannot check without the device: the Jetson's
    own TensorRT 10 build, its tactics and the engine's run (``deploycomp engine`` there)."""
    trt = pytest.importorskip("tensorrt_rtx", reason="NVIDIA's tensorrt-rtx wheel (Linux x86_64, in the test extra)")
    kw = {}
    if precision == "int8":
        np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
        kw["calibration"] = tmp_path / "c.npz"
    deploycomp.build(tiny_conv, tmp_path / "b", target="jetson-orin-nano", precision=precision, **kw)
    plan = read_plan(tmp_path / "b")
    info = build_engine(tmp_path / "b", plan, trt)
    assert info["builder"] == "tensorrt_rtx" and info["tensorrt_version"] == trt.__version__
    assert (tmp_path / "b" / "model.engine").stat().st_size > 10_000
    assert (tmp_path / "b" / "timing.cache").stat().st_size > 0
    # the device's TensorRT 10 must match the plan's range; the RTX builder has its own
    with pytest.raises(UnsupportedError, match=r"this bundle's plan needs >=10.0,<12"):
        build_engine(tmp_path / "b", plan, _Recorder(version="1.7.1"))


def test_a_string_input_is_refused_by_name_in_one_line(tmp_path, capfd):
    """A grapheme-to-phoneme model reads letters as strings (LabelEncoder): the parser's
    answer named "Initializers, Input" as ops and printed a line of its own."""
    from onnx import TensorProto, helper

    node = helper.make_node("LabelEncoder", ["letters"], ["ids"], domain="ai.onnx.ml", keys_strings=["a", "b"],
                            values_int64s=[1, 2])
    graph = helper.make_graph([node], "g2p", [helper.make_tensor_value_info("letters", TensorProto.STRING, [1, 8])],
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])])
    path = tmp_path / "g2p.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("ai.onnx.ml", 2)]), path)
    with pytest.raises(UnsupportedError, match=r"LabelEncoder, string input 'letters' \(2 node\(s\), first: the LabelEncoder "
                                             r"writing 'ids'\); TensorRT has no string") as e:
        deploycomp.build(path, tmp_path / "out", target="jetson-orin-nano")
    assert "\n" not in str(e.value) and "Initializers" not in str(e.value)
    assert "Unsupported ONNX data type" not in capfd.readouterr().err


def test_an_int8_bundle_with_every_layer_float_says_its_graph_is_fp32(tiny_conv, tmp_path):
    """No activation is quantized, so the engine computes fp32: the runtime record had said
    "executes int8 graph" (host says fp32 for the same bundle)."""
    from deploycomp.pipeline import BuildOptions, build

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.random((8, 3, 16, 16), dtype=np.float32))
    result = build(BuildOptions(model=tiny_conv, out=tmp_path / "b", target="jetson-orin-nano", precision="int8",
                                calibration=tmp_path / "calib.npz", keep_float=["*"], no_fail=True))
    runtime, lowered = result.manifest["backend"]["runtime"], result.manifest["backend"]["lowered"]
    assert runtime["executed_precision"] == "fp32 graph on the ORT CPU provider"
    assert lowered["typed_as"] == "fp32 tensors (no layer stayed int8)"


def test_an_int8_bundle_with_a_dynamic_batch_kept_counts_its_int8_macs(tiny_conv, tmp_path):
    """The batch stays dynamic for TensorRT (``x_d0`` through the graph): its MACs are
    counted at the calibration samples' batch, so the share of them that runs int8 is
    known (it had been null for every dynamic-batch TensorRT bundle)."""
    from deploycomp.pipeline import BuildOptions, build

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.random((8, 3, 16, 16), dtype=np.float32))
    result = build(BuildOptions(model=tiny_conv, out=tmp_path / "b", target="jetson-orin-nano", precision="int8",
                                calibration=tmp_path / "calib.npz", no_fail=True))
    assert "x" in result.manifest["io"]["profiles"]
    assert result.manifest["quantization"]["int8_mac_share"] == 1.0
    floated = build(BuildOptions(model=tiny_conv, out=tmp_path / "c", target="jetson-orin-nano", precision="int8",
                                 calibration=tmp_path / "calib.npz", keep_float=["conv"], no_fail=True))
    assert 0.0 < floated.manifest["quantization"]["int8_mac_share"] < 0.2  # the conv holds most of the MACs


def test_the_engine_check_judges_outputs_as_the_build_did(tmp_path):
    """The device's engine check compared whole outputs: a detector's regression map the
    build judged only where its heatmap finds something (``--judge-where``) would fail it
    on background noise the build never judged, and channels judged apart
    (``--judge-channels``) went unjudged; together, the build failed on an output both
    masked and split. The manifest records both rules, and the check
    (:func:`deploycomp.engine.judged_as_built`) reads them. GPU-free: the engine's output
    is the reference's with noise where the heatmap is empty."""
    import onnx
    from onnx import TensorProto as T, helper, numpy_helper

    from deploycomp.engine import _reference_parts, judged_as_built

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 1, (3, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["heat"]),
         helper.make_node("Relu", ["c"], ["boxes"])], "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("heat", T.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info("boxes", T.FLOAT, [1, 3, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    val = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    manifest = deploycomp.build(tmp_path / "m.onnx", tmp_path / "b", target="jetson-orin-nano", validation_data=val,
                                judge_where=["boxes:heat>0.9"], judge_channels=True).manifest
    assert manifest["validation"]["judge_where"] == {"boxes": ["heat", 0.9]}
    assert manifest["validation"]["judge_channels"] == {"heat": 1}  # (boxes is judged where, not split)
    parts = _reference_parts(tmp_path / "b" / manifest["backend"]["lowered"]["reference"])
    want = parts["output"]
    noisy = {**want, "boxes": np.where(want["heat"] > 0.9, want["boxes"], want["boxes"] + 0.5)}
    metrics = judged_as_built(manifest, want, noisy, parts["angle"])
    assert metrics["boxes"]["judged_where"] == "heat > 0.9" and metrics["boxes"]["cosine"] > 0.9999
    assert "heat[channel 2 of axis 1]" in metrics


def test_a_profile_builds_latency_estimate_counts_the_convolutions(tmp_path):
    """With ``--profile`` the inputs' dims stay symbolic, and a convolution over a symbolic
    length has no inferred output shape: a speech enhancer's estimate counted 0 FLOPs
    (0.41 ms against 40.8 ms static, and a 10 ms latency budget passed). It is counted at
    the profile's opt shape, as the static build at that shape is."""
    from onnx import numpy_helper

    w = numpy_helper.from_array(R.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), onnx.helper.make_node("Relu", ["c"], ["y"])],
        "g", [onnx.helper.make_tensor_value_info("x", 1, ["N", 3, "T", 16])],
        [onnx.helper.make_tensor_value_info("y", 1, ["N", 8, "T", 16])], [w])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    profiled = deploycomp.build(tmp_path / "m.onnx", tmp_path / "p", target="jetson-orin-nano", precision="fp16",
                                profiles=["x:1x3x8x16:1x3x16x16:1x3x32x16"])
    static = deploycomp.build(tmp_path / "m.onnx", tmp_path / "s", target="jetson-orin-nano", precision="fp16",
                              inputs={"x": (1, 3, 16, 16)})
    estimate = profiled.manifest["validation"]["latency_estimate"]
    assert estimate["flops"] == static.manifest["validation"]["latency_estimate"]["flops"] == 2 * 8 * 27 * 16 * 16
