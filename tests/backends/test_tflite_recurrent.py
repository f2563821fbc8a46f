"""LSTM, GRU and RNN unrolled over their static sequence length (wake-word and VAD models
use them), against ONNX Runtime at fp32, fp16 and int8 (the layers around them int8)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.backends.test_tflite_outputs import PRECISIONS, check, w

SEQ, BATCH, INPUT, HIDDEN = 9, 2, 6, 4  # more steps than XNNPACK's 4-way concat


def _model(op: str, direction: str = "forward", layout: int = 0, initial: bool = False, extra=None,
           outputs=("y", "y_h"), peepholes: bool = False) -> onnx.ModelProto:
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(5)
    inits = {"W": rng.standard_normal((dirs, gates * HIDDEN, INPUT)) * 0.5,
             "R": rng.standard_normal((dirs, gates * HIDDEN, HIDDEN)) * 0.5,
             "B": rng.standard_normal((dirs, 2 * gates * HIDDEN)) * 0.5,
             "proj": rng.standard_normal((INPUT, INPUT)) * 0.5}
    x_shape = [SEQ, BATCH, INPUT] if layout == 0 else [BATCH, SEQ, INPUT]
    state = [dirs, BATCH, HIDDEN] if layout == 0 else [BATCH, dirs, HIDDEN]
    ins = ["xp", "W", "R", "B", "", "h0" if initial else ""]
    if op == "LSTM":
        ins.append("c0" if initial else "")
    if peepholes:
        inits["P"] = rng.standard_normal((dirs, 3 * HIDDEN)) * 0.5
        ins.append("P")
    while ins and ins[-1] == "":
        ins.pop()
    outs = [o if o in outputs else "" for o in ("y", "y_h", "y_c")[:3 if op == "LSTM" else 2]]
    while outs[-1] == "":
        outs.pop()
    attrs = dict(hidden_size=HIDDEN, direction=direction, layout=layout, **(extra or {}))
    nodes = [helper.make_node("MatMul", ["x", "proj"], ["xp"]), helper.make_node(op, ins, outs, **attrs)]
    y_shape = [SEQ, dirs, BATCH, HIDDEN] if layout == 0 else [BATCH, SEQ, dirs, HIDDEN]
    graph_inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)]
    if initial:
        graph_inputs += [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, state)
                         for n in (["h0", "c0"] if op == "LSTM" else ["h0"])]
    graph_outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, y_shape if o == "y" else state)
                     for o in outs if o]
    graph = helper.make_graph(nodes, "g", graph_inputs, graph_outputs,
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


CASES = {
    "LSTM forward": ("LSTM", {}),
    "LSTM bidirectional, initial state, all outputs": ("LSTM", dict(direction="bidirectional", initial=True,
                                                                     outputs=("y", "y_h", "y_c"))),
    "LSTM reverse": ("LSTM", dict(direction="reverse")),
    "LSTM peepholes, bidirectional, all outputs": ("LSTM", dict(direction="bidirectional", peepholes=True,
                                                                 outputs=("y", "y_h", "y_c"))),
    "GRU forward": ("GRU", {}),
    "GRU linear_before_reset, bidirectional": ("GRU", dict(direction="bidirectional",
                                                           extra=dict(linear_before_reset=1))),
    "GRU initial state": ("GRU", dict(initial=True)),
    "RNN relu": ("RNN", dict(extra=dict(activations=["Relu"]))),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CASES)
def test_recurrent_layers_unrolled(tmp_path, case, precision):
    op, kwargs = CASES[case]
    model = _model(op, **kwargs)
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    info = check(tmp_path, model, shapes, precision, passes=False,
                 atol={"fp32": 1e-5, "fp16": 5e-3, "int8": None}[precision])
    assert "FULLY_CONNECTED" in info["ops"] and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in info["ops"]
    if precision == "fp32":
        assert info["xnnpack_partitions"] == 1, "every op of the unrolled layer runs in XNNPACK"


def test_clip_is_refused_by_name(tmp_path):
    import onnx_ir as ir

    from deploycomp.backends.tflite.lowering import Lowering
    from deploycomp.errors import UnsupportedError

    model = _model("LSTM", extra=dict(clip=3.0))
    model.graph.node[1].name = "lstm1"
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model))
    with pytest.raises(UnsupportedError, match=r"LSTM with clip \(node 'lstm1'\)"):
        Lowering(graph).run()


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_batch_first_layout_against_onnx_reference(tmp_path, op):
    """``layout=1`` (batch first), which ONNX Runtime refuses: checked against ONNX's own
    reference implementation."""
    from onnx.reference import ReferenceEvaluator

    from deploycomp.backends import get_backend
    from deploycomp.targets import load_target
    import onnx_ir as ir

    model = onnx.shape_inference.infer_shapes(_model(op, direction="bidirectional", layout=1, initial=True))
    rng = np.random.default_rng(9)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    try:
        want = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)))
    except NotImplementedError as e:  # (onnx before 1.23: no bidirectional LSTM/GRU in its reference)
        pytest.skip(f"onnx {onnx.__version__}'s reference evaluator cannot compute it: {e}")
    backend = get_backend("tflite")
    lowered = backend.lower(ir.from_proto(model), load_target("raspberry-pi-5"), "fp32", tmp_path, {})
    got = backend.load(tmp_path, lowered.info).run(feeds)
    for name, expected in want.items():
        np.testing.assert_allclose(got[name], expected, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gru_without_bias_and_only_its_last_state(tmp_path, precision):
    from tests.passes._harness import model_from_text

    text = """<ir_version: 8, opset_import: ["" : 18]> g (float[5, 1, 4] x, float[1, 9, 4] wt, float[1, 9, 3] r)
              => (float[1, 1, 3] h) { y, h = GRU <hidden_size = 3> (x, wt, r) }"""
    check(tmp_path, model_from_text(text, wt=w(1, 9, 4), r=w(1, 9, 3)), {"x": (5, 1, 4)}, precision, passes=False,
          atol={"fp32": 1e-5, "fp16": 5e-3, "int8": None}[precision])


def test_a_weight_every_step_reads_is_one_runtime_copy_once_its_packed_copies_grow(tmp_path):
    """XNNPACK packs a static weight once per FULLY_CONNECTED reading it: a speaker
    embedder's three 80-step LSTMs, written out step by step, took 2.2 GB in LiteRT (48 MB
    of weights; its memory budget refused it). Past
    :data:`~deploycomp.backends.tflite.lowering.REPEATED_WEIGHT_COPIES` of copies the
    steps read one runtime copy (a RESHAPE of the weight): an 80-step chain of 512-wide
    products runs in a fraction of the memory, with ONNX Runtime's outputs; a narrow one
    keeps its static weights."""
    import onnxruntime as ort

    import deploycomp
    from deploycomp.backends.tflite.lowering import REPEATED_WEIGHT_COPIES

    def chain(width: int, steps: int = 80):
        weight = np.random.default_rng(0).normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32)
        nodes, h = [], "x"
        for t in range(steps):
            nodes += [helper.make_node("MatMul", [h, "w"], [f"m{t}"]), helper.make_node("Tanh", [f"m{t}"], [f"h{t}"])]
            h = f"h{t}"
        graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", 1, [1, width])],
                                  [helper.make_tensor_value_info(h, 1, [1, width])], [numpy_helper.from_array(weight, "w")])
        path = tmp_path / f"chain{width}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path, 79 * weight.nbytes

    wide, copies = chain(512)
    assert copies > REPEATED_WEIGHT_COPIES
    x = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
    runner = deploycomp.build(wide, tmp_path / "wide", target="android-arm64", validation_data=[{"x": x}])
    assert runner.manifest["backend"]["lowered"]["ops"].get("RESHAPE") == 1
    memory = next(b["value"] for b in runner.manifest["measured"]["budgets"] if b["budget"] == "peak_memory")
    assert memory < copies / 2**20 / 2  # (the copies alone: 79 MB; measured 12 MB shared, 91 MB not)
    (want,) = ort.InferenceSession(str(wide)).run(None, {"x": x})
    np.testing.assert_allclose(runner.run({"x": x})["h79"], want, rtol=1e-4, atol=1e-5)
    narrow, copies = chain(64)
    assert copies < REPEATED_WEIGHT_COPIES
    runner = deploycomp.build(narrow, tmp_path / "narrow", target="android-arm64")
    assert "RESHAPE" not in runner.manifest["backend"]["lowered"]["ops"]
