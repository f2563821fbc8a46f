"""fp16 that knows magnitudes: what real inputs take past fp16's range stays fp32.

A MatMul on a power spectrum (an audio front-end) reaches ~1e5; typed fp16 it becomes
Inf and the output Inf or NaN, whatever the op list says. (A Relu sits between the MatMul
and the scaling Div so that ONNX Runtime cannot fuse them into one fp32-accumulating
kernel, which would hide the overflow in this tiny model.) The build runs the float model on its
real inputs, keeps those tensors' producers and readers fp32, and says so.
"""

from __future__ import annotations

import numpy as np
import pytest

import deploycomp
from deploycomp.errors import BudgetError
from deploycomp.fp16_ranges import FP16_MAX, HEADROOM, fp32_tensors
from deploycomp.ir import load_model
from tests.passes._harness import model_from_text

SPECTRUM = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 64] x) => (float[1, 64] y) {
    power = MatMul(x, w)
    floor = Relu(power)
    y = Div(floor, k)
}
"""


@pytest.fixture
def spectrum(tmp_path):
    import onnx

    rng = np.random.default_rng(0)
    model = model_from_text(SPECTRUM, w=(rng.random((64, 64)) * 4000).astype(np.float32), k=np.float32(1e4))
    onnx.save(model, tmp_path / "spectrum.onnx")
    np.savez(tmp_path / "data.npz", x=rng.random((6, 64), dtype=np.float32))
    return tmp_path / "spectrum.onnx", tmp_path / "data.npz"


def test_the_tensors_past_fp16s_range_are_found(spectrum):
    path, data = spectrum
    model = load_model(path).model
    with np.load(data) as d:
        samples = [{"x": d["x"][i : i + 1]} for i in range(6)]
    hot = fp32_tensors(model, samples)
    assert list(hot) == ["floor", "power"] and hot["power"] > FP16_MAX  # 64 inputs ~0.5 times weights ~2000
    assert fp32_tensors(model, [{"x": np.full((1, 64), 1e-3, np.float32)}]) == {}  # small inputs: nothing to keep
    assert FP16_MAX / HEADROOM < 20000


def test_a_tensorrt_fp16_build_keeps_them_fp32_and_validates(spectrum, tmp_path):
    import onnx

    path, data = spectrum
    runner = deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16", validation_data=data)
    assert list(runner.manifest["fp16"]["fp32_tensors"]) == ["floor", "power"]
    typed = onnx.load(tmp_path / "b" / "model.onnx")
    matmul = next(n for n in typed.graph.node if n.op_type == "MatMul")
    types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
    assert types.get(matmul.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT
    out = runner.run({"x": np.random.default_rng(5).random((1, 64), dtype=np.float32)})["y"]
    assert np.isfinite(out).all()


def test_without_the_islands_the_same_build_is_nan_and_says_so(spectrum, tmp_path, monkeypatch):
    """The finiteness check is what catches an fp16 overflow; cosine alone could not."""
    from deploycomp.backends.tensorrt.adapter import TensorRTBackend

    path, data = spectrum
    monkeypatch.delattr(TensorRTBackend, "fp16_compute")  # neither the magnitude rule
    monkeypatch.delattr(TensorRTBackend, "fp16_reference")  # nor the precision search
    with pytest.raises(BudgetError, match=r"finite\[y\]: \d+ NaN/Inf values"):
        deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16", validation_data=data)
    assert not (tmp_path / "b").exists()


def test_without_the_magnitude_rule_the_search_finds_the_same_tensors_by_their_inf(spectrum, tmp_path, monkeypatch):
    """The fp16 search (deploycomp.fp16_search) judges by the whole budget, NaN included.
    This model has one layer, so no segment could stand in (its one segment fp32 is an fp32
    model); the search's first step keeps the tensor the fp16 build turns Inf, then the
    next that still does (the Relu's copy of it): the two the magnitude rule keeps."""
    from deploycomp import pipeline

    path, data = spectrum
    monkeypatch.setattr(pipeline, "fp32_tensors", lambda model, samples: {})
    runner = deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16", validation_data=data,
                              no_fail=True)
    search = runner.manifest["fp16"]["search"]
    assert search["met"] and search["segments"] == 1 and search["fp32_segments"] == []
    assert sorted(search["nonfinite_kept_fp32"]) == ["floor", "power"] and runner.manifest["validation"]["ok"]
    assert search["judged_on"].endswith("validation samples") and "not held out" in search["note"]
    assert "where the fp16 build computed NaN or Inf: " in (tmp_path / "b" / "report.html").read_text()


def test_an_openvino_fp16_build_executes_f32_where_tensors_leave_fp16s_range(spectrum, tmp_path):
    """OpenVINO's CPU plugin applies an f16 inference precision to every node (its per-node
    fp32 mark cannot be set from Python or the IR): the bundle keeps f16 weights and runs f32."""
    path, data = spectrum
    runner = deploycomp.build(path, tmp_path / "b", target="host", precision="fp16", validation_data=data)
    manifest = runner.manifest
    assert list(manifest["fp16"]["fp32_tensors"]) == ["floor", "power"]
    assert "leave fp16's range" in manifest["fp16"]["executes_fp32"]
    assert "Executes fp32: 2 tensor(s) leave fp16" in (tmp_path / "b" / "report.html").read_text()
    assert manifest["backend"]["lowered"]["execute"] == "f32" and manifest["backend"]["lowered"]["weights"] == "f16"
    assert manifest["backend"]["runtime"]["executed_precision"] == "fp32"
    out = deploycomp.load(tmp_path / "b").run({"x": np.random.default_rng(5).random((1, 64), dtype=np.float32)})["y"]
    assert np.isfinite(out).all()


def test_an_f16_execution_that_misses_the_budget_asks_for_f32_execution():
    from deploycomp.backends.openvino.adapter import BACKEND
    from deploycomp.pipeline import _fp16_executes_fp32
    from deploycomp.targets import Fidelity

    class Ran:
        info = {"executed_precision": "fp16"}

    fidelity = Fidelity(min_cosine=0.999)
    lowered = {"precision": "fp16", "weights": "f16"}
    assert BACKEND.f32_execution(lowered) == {**lowered, "execute": "f32"}
    assert BACKEND.f32_execution({"precision": "int8"}) is None
    missed = {"y": {"cosine": 0.9985, "samples": 4}}
    info = {"fp32_tensors": {}}
    assert _fp16_executes_fp32(info, BACKEND, lowered, missed, fidelity, Ran())
    assert "cosine 0.998500" in info["executes_fp32"]
    met = {"y": {"cosine": 0.9995, "samples": 4}}
    info = {"fp32_tensors": {}}
    assert not _fp16_executes_fp32(info, BACKEND, lowered, met, fidelity, Ran())
    assert "executes_fp32" not in info

    class NoF32Mode:  # a runtime without f32 execution of f16 files (TFLite, TensorRT)
        name = "other"

    assert not _fp16_executes_fp32({}, NoF32Mode(), lowered, missed, fidelity, Ran())


class _Timed:
    """A runner that takes ``ms`` per run and says what it executes."""

    def __init__(self, ms: float, executed: str = "fp16"):
        self.ms, self.info = ms, {"executed_precision": executed}

    def run(self, sample):
        import time

        end = time.perf_counter() + self.ms / 1e3
        while time.perf_counter() < end:
            pass


class _LoadsF32:
    """A backend whose f32-execution runner takes ``ms`` per run; records what it loaded."""

    def __init__(self, ms: float):
        self.ms, self.loaded = ms, []

    @staticmethod
    def f32_execution(info):
        return {**info, "execute": "f32"}

    def load(self, stage, info):
        self.loaded.append(info)
        return _Timed(self.ms, "fp32")


@pytest.mark.parametrize("f16_ms, f32_ms, switches",
                         [(6.0, 2.0, True), (2.0, 6.0, False), (3.0, 3.0, False), (0.03, 0.01, False)])
def test_an_fp16_bundle_executes_f32_where_that_is_faster_on_the_target_cpu(f16_ms, f32_ms, switches, tmp_path):
    """On a CPU with AVX512-FP16 but no AMX-FP16, f16 convolutions run slower than f32: an
    fp16 build must not be slower than the fp32 one it replaces. A tie keeps f16 execution,
    and so do microseconds (a tiny model's noise must not flip the bundle between builds)."""
    from deploycomp.pipeline import _f32_execution_faster

    backend, info = _LoadsF32(f32_ms), {}
    assert _f32_execution_faster(info, backend, tmp_path, {"weights": "f16"}, _Timed(f16_ms), {}) is switches
    assert backend.loaded == [{"weights": "f16", "execute": "f32"}]
    if switches:
        assert info["execution_ms"]["f16"] > info["execution_ms"]["f32"]
    assert ("measured faster on this CPU" in info.get("executes_fp32", "")) is switches


def test_f16_execution_is_not_timed_where_the_runtime_does_not_execute_f16(tmp_path):
    from deploycomp.pipeline import _f32_execution_faster

    backend, info = _LoadsF32(1.0), {}
    assert not _f32_execution_faster(info, backend, tmp_path, {}, _Timed(9.0, "fp32"), {})
    assert backend.loaded == [] and info == {}


def test_a_host_fp16_build_records_both_execution_times_and_runs_the_faster(real_model, tmp_path):
    """The real thing on whatever CPU runs the tests: where OpenVINO executes f16 natively
    the manifest carries both medians and the bundle executes the faster (within 10%)."""
    import openvino as ov

    from deploycomp.examples import EXAMPLES

    ex = EXAMPLES["yolov8n"]
    runner = deploycomp.build(real_model("yolov8n"), tmp_path / "b", target="host", precision="fp16",
                              inputs={ex.input_name: ex.shape}, sample_kind=ex.inputs)
    manifest = runner.manifest
    if "FP16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert "fp16_execution_ms" not in manifest["measured"]
        assert manifest["backend"]["runtime"]["executed_precision"] == "fp32"
        assert "no native f16" in manifest["fp16"]["executes_fp32"]  # said, not silent
        return
    f16, f32 = manifest["measured"]["fp16_execution_ms"]["f16"], manifest["measured"]["fp16_execution_ms"]["f32"]
    executed = manifest["backend"]["runtime"]["executed_precision"]
    assert executed == ("fp32" if f32 < 0.9 * f16 and f16 - f32 >= 0.05 else "fp16")
    assert ("measured faster" in manifest["fp16"].get("executes_fp32", "")) == (executed == "fp32")
    if executed == "fp32" and "bf16" in manifest["target"]["profile"]["precisions"]:
        assert manifest["fp16"]["executes_fp32"].endswith("(for speed here: --precision bf16, or auto)")


def test_the_largest_magnitude_skips_inf_and_nan_and_reads_any_float_dtype():
    from deploycomp.fp16_ranges import _largest_magnitude

    assert _largest_magnitude(np.array([1.0, -7e4, 3.0], np.float32)) == 7e4
    assert _largest_magnitude(np.array([1.0, -7e4, np.inf, np.nan], np.float32)) == 7e4  # Inf is not a magnitude seen
    assert _largest_magnitude(np.array([np.nan, np.nan], np.float32)) is None
    assert _largest_magnitude(np.zeros((0, 3), np.float32)) is None
    assert _largest_magnitude(np.array([-2.0, 1e-30], np.float64)) == 2.0
    assert _largest_magnitude(np.array([5e-8], np.float32)) == pytest.approx(5e-8)


def test_ranges_are_reduced_in_the_graph_and_an_infinite_tensor_measured_whole(monkeypatch):
    """Where streaming the tensors out takes a run per part, their extremes are reduced
    inside the model (an fp16 build of a 1280x1280 detector spent 37 s streaming, 15 s
    this way), with the streamed answer: a tensor holding Inf is measured whole, its
    largest finite magnitude counting."""
    import onnx
    import onnx_ir as ir

    from deploycomp.fp16_ranges import _streamed_peaks
    from deploycomp.quant import calibrate
    from deploycomp.quant.calibrate import extremes_in_graph, observe_inputs

    monkeypatch.setattr(calibrate, "STREAM_BUDGET_BYTES", 16)  # a part per 4-value tensor

    text = """<ir_version: 8, opset_import: ["" : 17]> g (float[1, 4] x) => (float[1, 4] y)
    { d = Div(k, x)
      y = Relu(d) }"""
    model = ir.from_proto(onnx.shape_inference.infer_shapes(model_from_text(text, k=np.float32(3e4))))
    samples = [{"x": np.array([[0.0, 0.1, 1.0, -2.0]], np.float32)}, {"x": np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)}]
    per_sample, whole = extremes_in_graph(model, ["d", "y"], samples)
    assert whole == {"d", "y"} and per_sample == {}  # 3e4 / 0 is Inf: both measured whole
    assert fp32_tensors(model, samples) == {"d": pytest.approx(3e5), "y": pytest.approx(3e5)}
    finite = [{"x": np.array([[0.5, 0.1, 1.0, -2.0]], np.float32)}, {"x": np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)}]
    per_sample, whole = extremes_in_graph(model, ["d", "y"], finite)
    assert not whole and per_sample == {"d": [(-15000.0, 300000.0), (7500.0, 30000.0)], "y": [(0.0, 300000.0), (7500.0, 30000.0)]}
    assert _streamed_peaks(model, ["d", "y"], finite) == {"d": 3e5, "y": 3e5}
    assert calibrate.streamed_in_parts(model, ["d", "y"])
    assert fp32_tensors(model, finite) == {"d": 3e5, "y": 3e5}
    seen = observe_inputs(model, ["d", "y"], finite)
    assert (seen.lo["d"], seen.hi["d"], seen.spans["d"]) == (-15000.0, 300000.0, [315000.0, 22500.0])
    seen = observe_inputs(model, ["d", "y"], samples)  # the Inf tensors streamed: their finite extremes and spans
    assert (seen.lo["d"], seen.hi["d"]) == (-15000.0, 300000.0) and seen.spans["d"] == [315000.0, 22500.0]
