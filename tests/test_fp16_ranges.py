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
    from deploycomp import pipeline

    path, data = spectrum
    monkeypatch.setattr(pipeline, "FP16_ISLANDS", ())  # neither the magnitude rule nor the precision search
    with pytest.raises(BudgetError, match=r"finite\[y\]: \d+ NaN/Inf values"):
        deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16", validation_data=data)
    assert not (tmp_path / "b").exists()


def test_without_the_magnitude_rule_the_precision_search_cannot_stand_in_here(spectrum, tmp_path, monkeypatch):
    """The fp16 search (deploycomp.fp16_search) judges by the whole budget, NaN included,
    but this model has one layer: keeping its one segment fp32 is an fp32 model, not an
    fp16 mix, so the NaN miss stands; the magnitude rule keeps just the hot tensors."""
    from deploycomp import pipeline

    path, data = spectrum
    monkeypatch.setattr(pipeline, "fp32_tensors", lambda model, samples: {})
    runner = deploycomp.build(path, tmp_path / "b", target="jetson-orin-nano", precision="fp16", validation_data=data,
                              no_fail=True)
    search = runner.manifest["fp16"]["search"]
    assert not search["met"] and search["segments"] == 1 and not runner.manifest["validation"]["ok"]
    assert search["judged_on"].endswith("validation samples") and "not held out" in search["note"]


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
    missed = {"y": {"cosine": 0.9985, "samples": 4}}
    info, options = {"fp32_tensors": {}}, {}
    assert _fp16_executes_fp32(info, BACKEND, options, missed, fidelity, Ran())
    assert options == {"execute_fp32": True} and "cosine 0.998500" in info["executes_fp32"]
    met = {"y": {"cosine": 0.9995, "samples": 4}}
    info, options = {"fp32_tensors": {}}, {}
    assert not _fp16_executes_fp32(info, BACKEND, options, met, fidelity, Ran()) and options == {}
    assert "executes_fp32" not in info
