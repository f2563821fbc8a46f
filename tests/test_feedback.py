"""Outputs fed back as inputs (``--feedback``): validation as the application's loop runs it."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import deploycomp
from deploycomp.errors import InputDataError
from deploycomp.feedback import as_stream, parse_feedback, suggested_feedback


def _accumulator(path):
    """``stateN = state + x`` and ``total = sum(stateN)``: a running sum, the simplest
    recurrent state; its output grows step by step only where the state is fed back."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["state", "x"], ["stateN"], name="step"),
         helper.make_node("ReduceSum", ["stateN"], ["total"], keepdims=0, name="total")], "acc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_feedback_is_given_as_output_equals_input():
    assert parse_feedback(["stateN=state", "hn=h0"]) == {"stateN": "state", "hn": "h0"}
    assert parse_feedback({"stateN": "state"}) == {"stateN": "state"} and parse_feedback(None) == {}
    with pytest.raises(InputDataError, match=r"^--feedback 'stateN': expected OUTPUT=INPUT, e\.g\. stateN=state"):
        parse_feedback(["stateN"])
    with pytest.raises(InputDataError, match=r"input 'state' is fed by two outputs"):
        parse_feedback(["a=state", "b=state"])


def test_a_stream_feeds_each_step_the_output_of_the_step_before():
    steps = [{"x": np.ones(2), "state": np.zeros(2)} for _ in range(4)]
    outs = as_stream(lambda f: {"stateN": f["state"] + f["x"]}, steps, {"stateN": "state"})
    assert [float(o["stateN"][0]) for o in outs] == [1.0, 2.0, 3.0, 4.0]
    alone = as_stream(lambda f: {"stateN": f["state"] + f["x"]}, steps, {})
    assert [float(o["stateN"][0]) for o in alone] == [1.0] * 4  # each from the data's own state


@pytest.mark.parametrize("out, inp, found", [
    ("stateN", "state", True), ("hidden_out", "hidden", True), ("hn", "h0", True), ("present_key", "past_key", True),
    ("output", "input", False),  # a denoiser's output is not its input's next value
    ("xn", "x", False), ("audio_1", "audio", False),  # a normalized x, an exporter's renamed copy
])
def test_outputs_named_as_an_inputs_next_value_are_suggested(out, inp, found):
    io = {"inputs": [{"name": inp, "shape": [1, 4], "dtype": "float32"}],
          "outputs": [{"name": out, "shape": [1, 4], "dtype": "float32"}]}
    assert suggested_feedback(io) == ({out: inp} if found else {})
    io["outputs"][0]["shape"] = [1, 5]  # another shape: never fed back
    assert suggested_feedback(io) == {}


def test_a_build_with_feedback_validates_its_samples_as_one_stream(tmp_path):
    """Six steps of a running sum from zero states: judged one at a time every total is 4;
    as the loop runs them, 4, 8, ... 24 (probe 68: an int8 VAD validated at 0.9997 one step
    at a time while in its loop the state drifted to 0.956). Without ``--feedback`` the build
    names the pair it could be."""
    model = _accumulator(tmp_path / "acc.onnx")
    np.savez(tmp_path / "steps.npz", x=np.ones((6, 1, 4), np.float32), state=np.zeros((6, 1, 4), np.float32))
    looped = deploycomp.build(model, tmp_path / "loop", validation_data=tmp_path / "steps.npz",
                              feedback=["stateN=state"])
    validation = looped.manifest["validation"]
    assert validation["feedback"] == {"stateN": "state"} and validation["ok"]
    assert validation["outputs"]["total"]["scale"] == pytest.approx(24.0)  # the sixth step's sum
    assert any(a.startswith("validated as one stream: the 6 validation samples in order")
               for a in looped.manifest["assumptions"])

    alone = deploycomp.build(model, tmp_path / "alone", validation_data=tmp_path / "steps.npz")
    assert "feedback" not in alone.manifest["validation"]
    assert alone.manifest["validation"]["outputs"]["total"]["scale"] == pytest.approx(4.0)
    assert any("'stateN' look(s) like the next value of 'state'" in a and "--feedback stateN=state" in a
               for a in alone.manifest["assumptions"])


def test_a_stream_takes_its_samples_in_order_never_spread(tmp_path):
    """``--validation-samples 3`` of a 6-step stream: its first 3 steps, not 3 spread over it
    (a stream's step 5 fed step 2's state is no step of any loop)."""
    model = _accumulator(tmp_path / "acc.onnx")
    np.savez(tmp_path / "steps.npz", x=np.ones((6, 1, 4), np.float32), state=np.zeros((6, 1, 4), np.float32))
    runner = deploycomp.build(model, tmp_path / "b", validation_data=tmp_path / "steps.npz", validation_samples=3,
                              feedback={"stateN": "state"})
    assert runner.manifest["validation"]["outputs"]["total"]["scale"] == pytest.approx(12.0)
    assert runner.manifest["validation"]["inputs"].endswith("its first 3 in order")


@pytest.mark.parametrize("feedback, needle", [
    ("nope=state", "the model has no output 'nope'"),
    ("stateN=x2", "the built model has no input 'x2'"),
    ("total=state", "output 'total' is float32 scalar, input 'state' float32 1x4: a value fed back must fit"),
])
def test_a_pair_that_cannot_be_fed_back_is_refused_by_name(tmp_path, feedback, needle):
    model = _accumulator(tmp_path / "acc.onnx")
    with pytest.raises(InputDataError, match=f"^--feedback {feedback}: .*{needle}".replace("(", r"\(")):
        deploycomp.build(model, tmp_path / "b", feedback=[feedback])
    assert not (tmp_path / "b").exists()


def test_the_cli_takes_feedback_and_says_it(tmp_path):
    from deploycomp.cli import main
    from click.testing import CliRunner

    model = _accumulator(tmp_path / "acc.onnx")
    np.savez(tmp_path / "steps.npz", x=np.ones((6, 1, 4), np.float32), state=np.zeros((6, 1, 4), np.float32))
    result = CliRunner().invoke(main, ["build", str(model), "--out", str(tmp_path / "b"), "--validation-data",
                                       str(tmp_path / "steps.npz"), "--feedback", "stateN=state"])
    assert result.exit_code == 0, result.output
    assert "validated as one stream" in result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["validation"]["feedback"] == {"stateN": "state"}


def test_the_built_in_vad_samples_are_one_stream_as_silero_feeds_it():
    """Each chunk holds the last 64 samples of the chunk before and 512 new ones, as
    ``silero_vad.OnnxWrapper`` feeds the model at 16 kHz (the example had been built at
    1x512, where the model finds no speech), from silence into three vowels."""
    from deploycomp.sample_data import vad_samples

    steps = vad_samples({"input": (1, 576), "state": (2, 1, 128)})
    assert all(s["input"].shape == (1, 576) and int(s["sr"]) == 16000 for s in steps)
    for before, after in zip(steps, steps[1:]):
        np.testing.assert_array_equal(after["input"][0, :64], before["input"][0, -64:])
    loud = [float(np.abs(s["input"]).max()) for s in steps]
    assert loud[0] == 0.0 and max(loud) > 0.2


def test_a_state_fed_back_is_not_judged_by_its_top1():
    """The largest entry of a hidden state is no answer: no top-1 agreement is taken of an
    output fed back (a GRU's hidden state had read 0.188 on an int8 bundle whose decoded
    names held, and ``--min-top1`` kept layers float for it)."""
    from deploycomp.validate import compare_outputs

    rng = np.random.default_rng(0)
    refs = [{"hidden_out": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(4)]
    gots = [{"hidden_out": r["hidden_out"] + 0.05 * rng.standard_normal((1, 16)).astype(np.float32)} for r in refs]
    assert "top1_agreement" in compare_outputs(refs, gots)["hidden_out"]
    assert "top1_agreement" not in compare_outputs(refs, gots, states={"hidden_out"})["hidden_out"]


def test_a_growing_cache_is_fed_back_inside_its_profile(tmp_path):
    """A decoder's cache grows a step each step: its next value is one longer than the
    input it feeds, which a ``--profile`` on that input takes (a pair of two shapes is
    refused without one)."""
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Concat", ["past", "x"], ["present"], axis=1, name="append"),
         helper.make_node("ReduceMean", ["present"], ["y"], axes=[1], keepdims=0, name="mean")], "kv",
        [helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, "P", 4]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4])],
        [helper.make_tensor_value_info("present", TensorProto.FLOAT, [1, "T", 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "kv.onnx")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((6, 1, 1, 4)).astype(np.float32)
    np.savez(tmp_path / "steps.npz", x=xs, past=np.zeros((6, 1, 2, 4), np.float32))
    runner = deploycomp.build(tmp_path / "kv.onnx", tmp_path / "b", validation_data=tmp_path / "steps.npz",
                              profiles=["past:1x0x4:1x2x4:1x16x4"], feedback=["present=past"])
    assert runner.manifest["validation"]["ok"]
    session, past, want = ort.InferenceSession(str(tmp_path / "kv.onnx")), np.zeros((1, 2, 4), np.float32), []
    for x in xs:  # the loop an application runs: the cache one longer each step
        past, y = session.run(None, {"past": past, "x": x})
        want.append(y)
    assert past.shape == (1, 8, 4)
    loaded, cache = deploycomp.load(tmp_path / "b"), np.zeros((1, 2, 4), np.float32)
    for x, y in zip(xs, want):  # the bundle in the same loop
        got = loaded.run({"past": cache, "x": x})
        cache = got["present"]
        np.testing.assert_allclose(got["y"], y, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputDataError, match=r"output 'present' is float32 1x3x4, input 'past' float32 1x2x4"):
        deploycomp.build(tmp_path / "kv.onnx", tmp_path / "c", validation_data=tmp_path / "steps.npz",
                         inputs=["past:1x2x4"], feedback=["present=past"])
