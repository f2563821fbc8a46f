"""OpenVINO's pipeline: an LSTM with peephole weights becomes a Scan of its cell per
direction, outputs unchanged (ONNX Runtime before and after); other LSTMs stay."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.passes._harness import optimize_and_compare

SEQ, BATCH, INPUT, HIDDEN = 7, 2, 5, 4


def _lstm(direction: str, peepholes: float = 1.0, **attributes) -> tuple[onnx.ModelProto, dict]:
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(4)
    inits = {"W": rng.standard_normal((dirs, 4 * HIDDEN, INPUT)), "R": rng.standard_normal((dirs, 4 * HIDDEN, HIDDEN)),
             "B": rng.standard_normal((dirs, 8 * HIDDEN)), "P": rng.standard_normal((dirs, 3 * HIDDEN)) * peepholes}
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0", "P"], ["y", "y_h", "y_c"],
                            hidden_size=HIDDEN, direction=direction, **attributes)
    state = [dirs, BATCH, HIDDEN]
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s)
         for n, s in (("x", [SEQ, BATCH, INPUT]), ("h0", state), ("c0", state))],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s)
         for n, s in (("y", [SEQ, dirs, BATCH, HIDDEN]), ("y_h", state), ("y_c", state))],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    feeds = {"x": rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32),
             "h0": rng.standard_normal(state).astype(np.float32), "c0": rng.standard_normal(state).astype(np.float32)}
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), feeds


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_a_peephole_lstm_becomes_a_scan_per_direction(tmp_path, direction):
    model, feeds = _lstm(direction)
    ops = optimize_and_compare(tmp_path, model, feeds, pipeline="openvino")
    assert "LSTM" not in ops and ops["Scan"] == (2 if direction == "bidirectional" else 1)
    onnx.checker.check_model(onnx.load(tmp_path / "after.onnx"), full_check=True)


@pytest.mark.parametrize("case", ["zero peepholes", "clip", "other activations"])
def test_what_the_scan_would_not_reproduce_stays_an_lstm(tmp_path, case):
    model, feeds = {"zero peepholes": lambda: _lstm("forward", peepholes=0.0),
                    "clip": lambda: _lstm("forward", clip=2.0),
                    "other activations": lambda: _lstm("forward", activations=["Sigmoid", "Relu", "Tanh"])}[case]()
    ops = optimize_and_compare(tmp_path, model, feeds, pipeline="openvino")
    assert ops["LSTM"] == 1 and "Scan" not in ops
