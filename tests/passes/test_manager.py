"""run_passes: fixed point, a log entry per pass run, and errors naming the pass."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from deploycomp.errors import ModelError
from deploycomp.ir import load_model
from deploycomp.passes import build_pipeline, run_passes


class _Boom(ir.passes.InPlacePass):
    def call(self, model):
        raise ValueError("kaboom")


def test_logs_every_pass_until_fixed_point(real_model):
    model = load_model(real_model("yolov8n")).model
    model, plog = run_passes(model, build_pipeline("default", {"images": (1, 3, 320, 320)}))
    assert [r.stage for r in plog.records[:3]] == ["prologue"] * 3
    loop = [r for r in plog.records if r.stage == "loop"]
    steps = {r.step for r in loop}
    assert len(steps) >= 2, "must run again after a modifying step to confirm the fixed point"
    assert any(r.modified for r in loop if r.step == min(steps))
    assert not any(r.modified for r in loop if r.step == max(steps))
    assert plog.records[-1].stage == "epilogue"
    first, last = plog.records[0], plog.records[-1]
    assert last.nodes_after < first.nodes_before
    assert {"FixInputShapesPass", "ConstantFoldingPass", "RemoveUnusedNodesPass"} <= {r.name for r in plog.records}


def test_failing_pass_is_named(tiny_conv):
    model = load_model(tiny_conv).model
    with pytest.raises(ModelError, match="pass _Boom failed after 0 passes: ValueError: kaboom"):
        run_passes(model, [_Boom()])


def test_explaining_the_rules_never_copies_the_weights(tiny_conv, monkeypatch):
    """``inspect --explain-passes`` asks each rule that did not fire why, on a copy of the
    optimized model that shares its tensors: a serialized copy per rule took a 194 MB tree
    ensemble past 24 GB (the machine's memory) and the kernel killed it."""
    from deploycomp.passes.pipelines import explain_rules

    def no_serializing(*args, **kwargs):
        raise AssertionError("explain serialized the model")

    monkeypatch.setattr(ir, "to_proto", no_serializing)
    rules = explain_rules(load_model(tiny_conv).model, "default", {"x": (1, 3, 16, 16)})
    assert rules and any(not r.fired and r.reason for r in rules)


def test_a_pass_that_fails_on_a_model_the_checker_accepts_is_an_internal_error(tiny_conv, tmp_path, monkeypatch):
    """A pass failing is the file's fault (exit 3) only where ONNX's checker refuses the
    file too; on a valid model it is deploycomp's (exit 1, "internal error"): a valid
    opset-22 model whose AffineGrid the inliner refused had read "bad model file"."""
    import onnx

    import deploycomp
    from deploycomp import pipeline

    monkeypatch.setattr(pipeline, "build_pipeline", lambda *a, **k: [_Boom()])
    with pytest.raises(pipeline.PassFailure, match="pass _Boom failed .*kaboom.*checker accepts"):
        deploycomp.optimize(tiny_conv, tmp_path / "a.onnx")
    bad = onnx.load(tiny_conv)
    bad.graph.node[-1].attribute[0].i = 5  # Softmax over an axis the tensor lacks: loads, the checker refuses it
    onnx.save(bad, tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="pass _Boom failed"):
        deploycomp.optimize(tmp_path / "bad.onnx", tmp_path / "b.onnx")
