"""The whole optimizer against ONNX's own backend node tests (shipped in ``onnx``).

Every case ``onnx.backend.test.case.node.collect_testcases(None)`` generates goes through
``load -> default pipeline -> save`` with its inputs' static shapes, and the result must
reproduce the case's expected outputs in ONNX Runtime within the case's own rtol/atol.

Cases are excluded only for reasons outside the optimizer, each counted and reported:
ONNX Runtime cannot run the *original* model or disagrees with the expected outputs
itself (nothing to compare against), or the case has sequence/optional I/O (our
runner feeds tensors). A model our loader refuses is checked to be refused with a
one-line ModelError (opset outside our range, or a version-converter failure), and
counted as such, never as a pass.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deploycomp.errors import ModelError
from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes

pytestmark = pytest.mark.slow

MIN_PASSING = 1400
"""Cases that must run through the optimizer and match (1440 on onnx 1.23 + ORT 1.32)."""


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases(None)


def _session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _matches(got: list, expected: list, rtol: float, atol: float) -> bool:
    try:
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=rtol, atol=atol)
    except (AssertionError, TypeError, ValueError):
        return False
    return True


def _run_case(case, tmp_path, pipeline: str = "default") -> str:
    """Outcome category for one case: pass / fail:... / excluded:... / refused."""
    model = case.model
    inputs, expected = case.data_sets[0]
    if not all(isinstance(a, (np.ndarray, np.generic)) for a in list(inputs) + list(expected)):
        return "excluded: sequence/optional I/O"
    inputs = [np.asarray(a) for a in inputs]
    init_names = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init_names]
    if len(names) != len(inputs):
        return "excluded: optional inputs omitted"
    feeds = dict(zip(names, inputs))
    try:
        if not _matches(_session(model.SerializeToString()).run(None, feeds), expected, case.rtol, case.atol):
            return "excluded: ORT disagrees with the expected outputs on the original"
    except Exception:
        return "excluded: ORT cannot run the original"
    src = tmp_path / f"{case.name}.onnx"
    onnx.save(model, src)
    try:
        loaded = load_model(src)
    except ModelError as e:
        assert "\n" not in str(e)
        return "refused by the loader (one-line ModelError)"
    try:
        optimized, _ = run_passes(loaded.model, build_pipeline(pipeline, {k: v.shape for k, v in feeds.items()}))
        dst = tmp_path / f"{case.name}.opt.onnx"
        save_model(optimized, dst)
        got = _session(dst.read_bytes()).run(None, feeds)
    except Exception as e:  # an optimizer bug: report it, keep going
        return f"fail: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return "pass" if _matches(got, expected, case.rtol, case.atol) else "fail: outputs differ"


def test_optimizer_preserves_onnx_node_test_outputs(tmp_path_factory):
    outcomes: dict[str, str] = {}
    for case in _cases():
        outcomes[case.name] = _run_case(case, tmp_path_factory.mktemp("case"))
    counts = collections.Counter(o if not o.startswith("fail") else "fail" for o in outcomes.values())
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    print(f"\nONNX node tests through the optimizer: {summary}")
    failures = {k: v for k, v in outcomes.items() if v.startswith("fail")}
    assert not failures, f"{len(failures)} case(s) changed outputs: " + "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:25])
    assert counts["pass"] >= MIN_PASSING, summary


def _has(graph: onnx.GraphProto, op: str) -> bool:
    return any(n.op_type == op or any(_has(a.g, op) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
               for n in graph.node)


@pytest.mark.parametrize("pipeline, op", [("tflite", "If"), ("tflite", "Conv"), ("tflite", "Scan"),
                                          ("tflite", "Pad"), ("tflite", "Loop"), ("tflite", "Attention"),
                                          ("tflite", "RotaryEmbedding"), ("tflite", "Shrink"),
                                          ("tflite", "AffineGrid"), ("tflite", "CenterCropPad"),
                                          ("tensorrt", "AffineGrid"), ("tensorrt", "CenterCropPad"),
                                          ("openvino", "LSTM"), ("openvino", "ReduceLogSumExp")])
def test_backend_pipelines_preserve_the_cases_of_the_op_they_rewrite(tmp_path_factory, pipeline, op):
    """What a backend's pipeline adds (TFLite: each ``If`` as both branches and a
    ``Where``, an affine before a ``Conv`` folded into it, a ``Scan`` and a ``Loop``
    written out step by step, ops ONNX defines as functions written out as their
    definition, negative or edge pads as crops and concatenated edges (ONNX's DFT and STFT
    cases are excluded: ONNX Runtime misses their expected outputs); OpenVINO: a peephole
    LSTM as a ``Scan``, ``ReduceLogSumExp`` from other reductions) on the node tests with
    that op: every one that runs matches, and at least one passes."""
    outcomes = {case.name: _run_case(case, tmp_path_factory.mktemp("case"), pipeline)
                for case in _cases() if _has(case.model.graph, op)}
    failures = {k: v for k, v in outcomes.items() if v.startswith("fail")}
    assert not failures, failures
    assert sum(o == "pass" for o in outcomes.values()) >= 1, outcomes
