"""TFLite's pipeline: a ``Loop`` whose constants decide its trip count becomes its body
written out step by step, outputs unchanged; one that stops on its data stays a ``Loop``."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import deploycomp
from deploycomp.ir import load_model, save_model
from deploycomp.passes import build_pipeline, run_passes
from tests.passes._harness import model_from_text


def _case(name: str):
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return next(c for c in collect_testcases(None) if c.name == name)


def _frozen(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with the inputs in ``values`` as constants (what ``--freeze`` makes of them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [i for i in out.graph.input if i.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    out.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in values.items())
    return out


def _tflite_pipeline(tmp_path, model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
    onnx.save(model, tmp_path / "loop.onnx")
    optimized, _ = run_passes(load_model(tmp_path / "loop.onnx").model,
                              build_pipeline("tflite", {k: np.shape(v) for k, v in feeds.items()}))
    save_model(optimized, tmp_path / "unrolled.onnx")
    return optimized, ort.InferenceSession(str(tmp_path / "unrolled.onnx")).run(None, feeds)


@pytest.mark.parametrize("name, frozen", [("test_loop11", ("trip_count", "cond")),
                                          ("test_range_float_type_positive_delta_expanded", ("start", "limit", "delta")),
                                          ("test_range_int32_type_negative_delta_expanded", ("start", "limit", "delta"))])
def test_onnxs_own_loop_cases_give_their_expected_outputs(tmp_path, name, frozen):
    """ONNX's backend node tests for Loop (a sum over slices with its scan output) and
    Range's expanded form (a Loop counting to a trip count computed from its inputs),
    with the inputs that decide the trip count frozen: no Loop is left, and the outputs
    are the expected ones."""
    case = _case(name)
    inputs, expected = case.data_sets[0]
    given = {v.name: np.asarray(a) for v, a in zip(case.model.graph.input, inputs)}
    feeds = {k: v for k, v in given.items() if k not in frozen}
    model, got = _tflite_pipeline(tmp_path, _frozen(case.model, {k: given[k] for k in frozen}), feeds)
    assert not any(n.op_type == "Loop" for n in model.graph)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6)


# tf2onnx's Keras RNN: a Loop to a huge M that counts its own steps in two carried
# integers and stops when the time step reaches the sequence length; the state is a
# tanh cell over the input row the step gathers, and each step's state is scanned out
KERAS_RNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[6, 1, 3] x) => (float[1, 4] h_last, float[6, 1, 4] hs) {
    h0 = Constant <value = float[1, 4] {0, 0, 0, 0}> ()
    big = Constant <value = int64 {2147483647}> ()
    zero = Constant <value = int64 {0}> ()
    go = Constant <value = bool {1}> ()
    shape = Shape(x)
    steps = Gather <axis = 0> (shape, zero)
    counter, t, h_last, hs = Loop (big, go, zero, zero, h0) <body = step (int64 i, bool cond_in, int64 c_in, int64 t_in, float[1, 4] h_in) => (bool cond_out, int64 c_out, int64 t_out, float[1, 4] h_out, float[1, 4] h_scan) {
        one = Constant <value = int64 {1}> ()
        c_out = Add(c_in, one)
        t_out = Add(t_in, one)
        more = Less(c_out, big)
        within = Less(t_out, steps)
        cond_out = And(more, within)
        row = Gather <axis = 0> (x, t_in)
        a = MatMul(row, w)
        b = MatMul(h_in, r)
        s = Add(a, b)
        h_out = Tanh(s)
        h_scan = Identity(h_out)
    }>
}
"""


def _keras_rnn(data_dependent: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    text = KERAS_RNN
    if data_dependent:  # stops where the state's first element turns negative (an end token, say)
        text = text.replace("cond_out = And(more, within)", "first = ReduceMax <keepdims = 0> (h_out)\n"
                            "        positive = Greater(first, zero_f)\n        cond_out = And(within, positive)")
        text = text.replace("go = Constant", "zero_f = Constant <value = float {0}> ()\n    go = Constant")
    return model_from_text(text, check=False, w=rng.normal(0, 0.5, (3, 4)).astype(np.float32),
                           r=rng.normal(0, 0.5, (4, 4)).astype(np.float32))


def test_a_keras_rnn_loop_that_counts_its_steps_is_written_out(tmp_path):
    """The trip count is found by running the counters alone (6 steps, for the 6 rows of
    the input); every output equals ONNX Runtime's on the Loop itself."""
    model = _keras_rnn()
    x = np.random.default_rng(1).normal(size=(6, 1, 3)).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    optimized, got = _tflite_pipeline(tmp_path, model, {"x": x})
    assert not any(n.op_type == "Loop" for n in optimized.graph)
    assert sum(n.op_type == "Tanh" for n in optimized.graph) == 6  # a cell per step
    for g, r in zip(got, reference):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)


def test_a_loop_that_stops_on_its_data_stays_a_loop(tmp_path):
    """Its trip count is the data's to say: nothing constant decides it."""
    model = _keras_rnn(data_dependent=True)
    x = np.random.default_rng(1).normal(size=(6, 1, 3)).astype(np.float32)
    optimized, _ = _tflite_pipeline(tmp_path, model, {"x": x})
    assert sum(n.op_type == "Loop" for n in optimized.graph) == 1


def test_a_keras_rnn_builds_for_android(tmp_path):
    """chars2vec (two Keras LSTMs as Loops) was refused on Android: "cannot run op(s) Loop".
    Written out, it builds, validates and runs as ONNX Runtime does."""
    path = tmp_path / "rnn.onnx"
    onnx.save(_keras_rnn(), path)
    x = np.random.default_rng(2).normal(size=(4, 6, 1, 3)).astype(np.float32)
    runner = deploycomp.build(path, tmp_path / "b", target="android-arm64", validation_data=[{"x": s} for s in x])
    assert runner.manifest["validation"]["ok"]
    reference = ort.InferenceSession(path.read_bytes()).run(None, {"x": x[0]})
    np.testing.assert_allclose(runner.run({"x": x[0]})["hs"], reference[1], rtol=1e-5, atol=1e-6)
