"""TFLite's pipeline: a ``Scan`` of a known length becomes its body written out step by
step, outputs unchanged; a long one stays a ``Scan``; opset 8's batch form is refused on
load, in one line with the way out."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

import deploycomp
from tests.passes._harness import model_from_text, optimize_and_compare


def _onnx_scan_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases(None) if c.name.startswith("test_scan")]


@pytest.mark.parametrize("case", [c for c in _onnx_scan_cases() if c.name != "test_scan_sum"], ids=lambda c: c.name)
def test_onnxs_own_scan_cases_give_their_expected_outputs(tmp_path, case):
    """ONNX's backend node tests for Scan (sums, several states, scalars), with their
    expected outputs."""
    from deploycomp.ir import load_model, save_model
    from deploycomp.passes import build_pipeline, run_passes

    onnx.save(case.model, tmp_path / "scan.onnx")
    for inputs, expected in case.data_sets:
        feeds = {v.name: np.asarray(a) for v, a in zip(case.model.graph.input, inputs)}
        model, _ = run_passes(load_model(tmp_path / "scan.onnx").model,
                              build_pipeline("tflite", {k: v.shape for k, v in feeds.items()}))
        assert not any(n.op_type == "Scan" for n in model.graph)
        save_model(model, tmp_path / "unrolled.onnx")
        import onnxruntime as ort

        got = ort.InferenceSession(str(tmp_path / "unrolled.onnx")).run(None, feeds)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-6)


# skl2onnx's distances from each input row to each training point (a KNN classifier's
# first step), here with the points reversed and stacked on axis 1
DISTANCES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[3, 4] x) => (float[3, 4] state, float[3, 5] dist) {
    state, dist = Scan <num_scan_inputs = 1, scan_input_directions = [1], scan_output_axes = [1],
                        body = step (float[3, 4] row, float[4] point) => (float[3, 4] same, float[3] d) {
        same = Identity(row)
        diff = Sub(row, point)
        d = ReduceSumSquare <axes = [1], keepdims = 0> (diff)
    }> (x, points)
}
"""


def _distances() -> onnx.ModelProto:
    return model_from_text(DISTANCES, points=np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))


def test_a_reversed_scan_stacked_on_another_axis_is_written_out(tmp_path):
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, _distances(), feeds, pipeline="tflite")
    assert "Scan" not in ops and ops["ReduceSumSquare"] == 5 and ops["Concat"] == 1


def test_a_scan_longer_than_the_limit_stays(tmp_path, monkeypatch):
    from deploycomp.passes import scan_unroll

    monkeypatch.setattr(scan_unroll, "MAX_STEPS", 4)
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, _distances(), feeds, pipeline="tflite")
    assert ops["Scan"] == 1


def test_tflite_builds_a_scan_of_distances(tmp_path):
    """TFLite has no Scan: the build refused such a model by name before."""
    onnx.save(_distances(), tmp_path / "dist.onnx")
    runner = deploycomp.build(tmp_path / "dist.onnx", tmp_path / "out", target="android-arm64")
    assert runner.manifest["validation"]["ok"]
    import onnxruntime as ort

    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "dist.onnx")).run(None, {"x": x})
    got = runner.run({"x": x})
    np.testing.assert_allclose(got["dist"], want[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["state"], x)


def test_opset_8s_scan_is_refused_on_load_in_one_line(tmp_path):
    from deploycomp.errors import ModelError

    case = next(c for c in _onnx_scan_cases() if c.name == "test_scan_sum")  # opset 8: a batch axis
    onnx.save(case.model, tmp_path / "scan8.onnx")
    with pytest.raises(ModelError, match="re-export the model with opset >= 9") as e:
        deploycomp.build(tmp_path / "scan8.onnx", tmp_path / "out", target="android-arm64")
    assert "\n" not in str(e.value)
